"""GPU path: mamba-ssm kernels == our pure-PyTorch Mamba, and graphed acting == eager.

Marked ``cuda``: skipped on machines without CUDA or without mamba-ssm built. On the
GPU machine: ``python -m pytest -m cuda tests/test_cuda_kernels.py -v`` (the output of
the runs on the H200 are kept in benchmarks/results/gpu_tests.txt).

Tolerances (float32): outputs and states atol 2e-4 / rtol 2e-3, gradients atol 2e-3 /
rtol 1e-2 relative to the largest entry. The kernels sum in other orders (chunked SSD,
a parallel scan, fused softplus), and over T=256 steps with 2 layers the differences
grow to ~1e-4 of the output scale; a wrong reset or state is off by O(1).
"""
import copy

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules import set_recurrent_mode

from networks import make_memory

from networks.ssm import kernels

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
KINDS = ["mamba1", "mamba2"]
B, T, H = 4, 256, 64


def need_kernels():
    if not kernels.available():
        pytest.skip(f"mamba-ssm kernels do not import ({kernels._WHY_NOT})")


def pair(kind, layers=2):
    """The same weights twice: kernel path and pure-PyTorch path."""
    torch.manual_seed(0)
    fast = make_memory(kind, H, H, num_layers=layers, use_kernels=True).cuda()
    slow = copy.deepcopy(fast)
    for m in slow.core.mixers:
        m.use_kernels = False
    return fast, slow


def sequence_td(mem, seed, carry=True):
    g = torch.Generator(device="cuda").manual_seed(seed)
    td = TensorDict({"embed": torch.randn(B, T, H, device="cuda", generator=g),
                     "is_init": torch.zeros(B, T, 1, dtype=torch.bool, device="cuda")}, [B, T])
    is_init = td["is_init"]
    is_init[0, 0] = True                     # row 0: a fresh episode, then a reset inside
    is_init[0, 100] = True
    is_init[1, [17, 18, 200]] = True         # row 1: carried state, back-to-back resets
    is_init[3, 255] = True                   # row 3: a reset at the last step
    shapes = {k: tuple(v.shape) for k, v in mem.make_tensordict_primer().primers.items()}
    for key, shape in shapes.items():
        s = torch.randn(B, T, *shape, device="cuda", generator=g) * 0.5 if carry else \
            torch.zeros(B, T, *shape, device="cuda")
        td.set(key, s)                       # only t=0 is read in sequence mode
    return td


def close(a, b, atol, rtol, what):
    scale = b.abs().max().clamp(min=1.0)
    err = (a - b).abs().max()
    assert err <= atol + rtol * scale, f"{what}: max abs diff {err:.3e} (scale {scale:.3e})"


@pytest.mark.parametrize("carry", [True, False], ids=["carried_state", "zero_state"])
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_kernels_match_pytorch(kind, carry):
    need_kernels()
    fast, slow = pair(kind)
    td = sequence_td(fast, seed=1, carry=carry)
    outs = {}
    for name, mem in (("kernel", fast), ("torch", slow)):
        x = td["embed"].clone().requires_grad_()
        state0 = {k: td[k].clone().requires_grad_() for k in mem.state_keys}
        inp = td.clone().set("embed", x).update(state0)
        with set_recurrent_mode(True):
            out = mem(inp)
        y = out["memory"]
        w = torch.randn(y.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
        (y * w).sum().backward()
        outs[name] = dict(y=y.detach(), x_grad=x.grad,
                          finals={k: out["next", k][:, -1].detach() for k in mem.state_keys},
                          grads={n: p.grad for n, p in mem.named_parameters()},
                          state_grads={k: state0[k].grad for k in mem.state_keys})
    k, t = outs["kernel"], outs["torch"]
    close(k["y"], t["y"], 2e-4, 2e-3, f"{kind} output")
    for key in k["finals"]:
        close(k["finals"][key], t["finals"][key], 2e-4, 2e-3, f"{kind} final {key}")
    close(k["x_grad"], t["x_grad"], 2e-3, 1e-2, f"{kind} input grad")
    for n in t["grads"]:
        close(k["grads"][n], t["grads"][n], 2e-3, 1e-2, f"{kind} grad {n}")
    if carry:  # the initial state's gradient (the conv state's always flows through our conv)
        for key in k["state_grads"]:
            close(k["state_grads"][key][:, 0], t["state_grads"][key][:, 0], 2e-3, 1e-2,
                  f"{kind} grad of initial {key}")


@pytest.mark.parametrize("step_path", ["mamba_ssm", "triton"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_kernels_match_pytorch_and_sequence(kind, step_path, monkeypatch):
    """Kernel steps (mamba-ssm's selective_state_update, and the fused Triton step, the default on
    CUDA since 2026-12-04: MAMBAZOO_MAMBA_STEP forces each) == PyTorch steps == the kernel sequence call."""
    need_kernels()
    monkeypatch.setenv("MAMBAZOO_MAMBA_STEP", step_path)
    fast, slow = pair(kind)
    td = sequence_td(fast, seed=3)
    with torch.no_grad(), set_recurrent_mode(True):
        seq = fast(td.clone())["memory"]
    ys = {}
    for name, mem in (("kernel", fast), ("torch", slow)):
        state = {k: td[k][:, 0].clone() for k in mem.state_keys}
        out = []
        with torch.no_grad():
            for t in range(T):
                step = TensorDict({"embed": td["embed"][:, t], "is_init": td["is_init"][:, t],
                                   **state}, [B])
                step = mem(step)
                out.append(step["memory"])
                state = {k: step["next", k] for k in mem.state_keys}
        ys[name] = torch.stack(out, 1)
    close(ys["kernel"], ys["torch"], 2e-4, 2e-3, f"{kind} kernel step vs torch step")
    close(ys["kernel"], seq, 2e-4, 2e-3, f"{kind} kernel step vs kernel sequence")


@pytest.mark.parametrize("kernel_path", [True, False], ids=["kernels", "pytorch"])
@pytest.mark.parametrize("kind", KINDS)
def test_graphed_step_equals_eager_step(kind, kernel_path):
    # Not "gru": TorchRL's GRUModule step invalidates stream capture (seen on the H100).
    from networks.cuda_graph import CudaGraphStep

    if kernel_path:
        need_kernels()
    mem, slow = pair(kind)
    mem = mem if kernel_path else slow
    td = sequence_td(mem, seed=4, carry=False)
    state = {k: td[k][:, 0].clone() for k in mem.state_keys}
    example = TensorDict({"embed": td["embed"][:, 0], "is_init": td["is_init"][:, 0], **state}, [B])
    graphed = CudaGraphStep(mem, example, feed_keys=["embed", "is_init"])
    assert sorted(graphed.state_keys) == sorted(mem.state_keys)
    with torch.no_grad():
        for t in range(40):
            step = TensorDict({"embed": td["embed"][:, t], "is_init": td["is_init"][:, t],
                               **state}, [B])
            eager = mem(step)
            state = {k: eager["next", k] for k in mem.state_keys}
            out = graphed(step)
            torch.testing.assert_close(out["memory"], eager["memory"], atol=1e-5, rtol=1e-4)
        for k in mem.state_keys:  # the resident state advanced in place, step by step
            torch.testing.assert_close(graphed.state()[k], state[k], atol=1e-5, rtol=1e-4)
    graphed.reset_state()
    assert all(float(v.abs().max()) == 0 for v in graphed.state().values())
