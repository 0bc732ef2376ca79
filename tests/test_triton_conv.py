"""networks.ssm.triton_conv (the Triton reset-aware causal conv + SiLU) == the PyTorch conv.

Same two modes as test_triton_scan.py: ``cuda`` (marked cuda) and ``cpu`` (Triton's interpreter,
run by test_triton_scan.test_interpreter_mode in a child process with TRITON_INTERPRET=1).
The oracle is ``SiLU(causal_conv1d(...))`` and its new state, in float64 on the same inputs;
the kernel computes in float32, so the tolerance is 1e-5 of the largest reference entry for
values and gradients (a wrong tap mask, carry or gradient term is off by O(0.1)).
"""
import pytest
import torch
import torch.nn.functional as F

from networks.ssm.causal_conv import causal_conv1d
from test_triton_scan import DEVICES, INTERP  # same two modes (rootdir-relative import, as pytest runs tests/)

TOL = 1e-5


def reference(x, w, b, s, is_init):
    y, state = causal_conv1d(x, w, b, s, is_init)
    return F.silu(y), state


def inputs(device, B, T, C, K, bias=True, strided=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    # x as the in_proj half it is in the mixers: a strided view of a wider tensor
    full = r(B, T, 2 * C)
    x = full[..., :C] if strided else full[..., :C].contiguous()
    vals = dict(x=x, w=r(C, K), b=r(C) if bias else None, s=r(B, C, K - 1))
    is_init = torch.zeros(B, T, dtype=torch.bool)
    is_init[0, 0] = True                                   # row 0: fresh start (carried state unused)
    if T > 3:
        is_init[1, 2] = is_init[1, 3] = True               # back to back inside a row
        is_init[2 % B, T - 1] = True                      # at the last step
        is_init[0, T // 2] = True
    return vals, is_init


def run(vals, is_init, device, dtype):
    from networks.ssm.triton_conv import causal_conv1d_silu

    leaves = {k: (v.to(device, dtype).detach().requires_grad_() if v is not None else None) for k, v in vals.items()}
    x = leaves["x"]
    y, state = causal_conv1d_silu(x, leaves["w"], leaves["b"], leaves["s"], is_init.to(device))
    return leaves, y, state


def check(device, B, T, C, K, **kw):
    vals, is_init = inputs(device, B, T, C, K, **kw)
    ref_leaves = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in vals.items()}
    y_ref, s_ref = reference(ref_leaves["x"], ref_leaves["w"], ref_leaves["b"], ref_leaves["s"], is_init)
    leaves, y, s = run(vals, is_init, device, torch.float32)
    g = torch.Generator().manual_seed(1)
    wy, ws = torch.randn(y_ref.shape, generator=g, dtype=torch.float64), torch.randn(s_ref.shape, generator=g,
                                                                                        dtype=torch.float64)
    ((y_ref * wy).sum() + (s_ref * ws).sum()).backward()
    ((y * wy.to(device, y.dtype)).sum() + (s * ws.to(device, s.dtype)).sum()).backward()

    def close(a, b, what):
        a, b = a.detach().double().cpu(), b.detach().double()
        err = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)
        assert err < TOL, f"{what}: relative error {err:.2e}"

    close(y, y_ref, "output")
    close(s, s_ref, "new conv state")
    for k, leaf in leaves.items():
        if leaf is not None:
            close(leaf.grad, ref_leaves[k].grad, f"d{k}")


def size(device):
    # interpreter: small (numpy runs every tile); C=40 and T=37 are not multiples of the tiles
    return dict(B=3, C=40) if device == "cpu" else dict(B=4, C=384)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T", [37, 70])
def test_matches_the_pytorch_conv_with_resets_and_carried_state(device, T):
    check(device, T=T, K=4, **size(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,K", [(1, 4), (2, 4), (3, 4), (9, 2), (9, 3)])
def test_short_sequences_and_other_widths(device, T, K):
    """T < K-1: the new state is partly the old one; K = 2, 3 unroll other tap counts."""
    check(device, T=T, K=K, **size(device))


@pytest.mark.parametrize("device", DEVICES)
def test_no_bias_and_contiguous_input(device):
    check(device, T=20, K=4, bias=False, strided=False, **size(device))


@pytest.mark.parametrize("device", DEVICES)
def test_mamba1_triton_path_uses_the_fused_conv_and_matches_pytorch(device, monkeypatch):
    """The Mamba1 mixer's Triton path (triton_scan.mamba1_forward) runs this conv and still
    matches the mixer's PyTorch path (outputs, states, parameter gradients)."""
    from networks.ssm import triton_conv, triton_scan
    from networks.ssm.mamba1 import Mamba1Mixer

    calls = []
    real = triton_conv.causal_conv1d_silu
    monkeypatch.setattr(triton_conv, "causal_conv1d_silu", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    m = Mamba1Mixer(d_model=8, d_state=4, d_conv=4, expand=2).to(device)
    B, T = 2, 21
    x = torch.randn(B, T, 8, device=device)
    is_init = torch.zeros(B, T, dtype=torch.bool, device=device)
    is_init[0, 0] = is_init[1, 5] = True
    conv = torch.randn(B, m.d_inner, 3, device=device)
    ssm = torch.randn(B, m.d_inner, 4, device=device)
    if device == "cpu":
        triton_scan.set_config((4, 16, 1, 2))
    y, c1, s1 = triton_scan.mamba1_forward(m, x, is_init, conv, ssm)
    y.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    y_ref, c_ref, s_ref = m.forward(x, is_init, conv, ssm, scan="reference")
    y_ref.square().mean().backward()
    assert calls, "the Triton path did not run the fused conv"
    for a, b, what in ((y, y_ref, "y"), (c1, c_ref, "conv state"), (s1, s_ref, "ssm state")):
        assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), what
    for n, p in m.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=5e-5, rtol=1e-3), n


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(INTERP, reason="TRITON_INTERPRET=1 runs triton on CPU, not CUDA")
@pytest.mark.parametrize("ssd", ["pytorch", "mamba_ssm"])
def test_mamba2_mixer_on_cuda_takes_the_triton_conv_and_matches_pytorch(monkeypatch, ssd):
    """Mamba2's sequence conv on CUDA is the Triton kernel, under our PyTorch SSD and under
    mamba-ssm's; the mixer with kernels off (the PyTorch conv and SSD) is the oracle: outputs,
    states, parameter gradients. Under the PyTorch SSD only the conv differs: elementwise 1e-4/1e-3.
    mamba-ssm's SSD multiplies in TF32 (Triton's tl.dot default for float32), ~1e-3 relative per
    product, so there the tolerance is test_cuda_kernels' (relative to the largest entry)."""
    import copy

    from networks.ssm import kernels, triton_conv
    from networks.ssm.mamba2 import Mamba2Mixer

    if ssd == "mamba_ssm" and not kernels.available():
        pytest.skip("mamba-ssm kernels do not import")
    if ssd == "pytorch":   # the mixer's chunked PyTorch SSD, whatever is installed
        monkeypatch.setattr(kernels, "wanted", lambda use_kernels, x: False)
    calls = []
    real = triton_conv.causal_conv1d_silu
    monkeypatch.setattr(triton_conv, "causal_conv1d_silu", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    fast = Mamba2Mixer(d_model=64, d_state=16, headdim=16, use_kernels="auto").cuda()
    slow = copy.deepcopy(fast)
    slow.use_kernels = False
    B, T = 3, 150
    x = torch.randn(B, T, 64, device="cuda")
    is_init = torch.zeros(B, T, dtype=torch.bool, device="cuda")
    is_init[0, 0] = is_init[1, 40] = is_init[2, 149] = True
    conv = torch.randn(B, fast.conv_weight.shape[0], 3, device="cuda")
    ssm = torch.randn(B, fast.nheads, fast.headdim, fast.d_state, device="cuda")
    outs = []
    for m in (fast, slow):
        y, c, s = m(x, is_init, conv, ssm)
        y.square().mean().backward()
        outs.append((y, c, s, {n: p.grad for n, p in m.named_parameters()}))
    assert calls, "the CUDA path did not take the Triton conv"
    (y1, c1, s1, g1), (y2, c2, s2, g2) = outs

    def close(a, b, what, grad=False):
        if ssd == "pytorch":
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3, msg=what)
        else:
            atol, rtol = (2e-3, 1e-2) if grad else (2e-4, 2e-3)
            err, scale = (a - b).abs().max(), b.abs().max().clamp(min=1.0)
            assert err <= atol + rtol * scale, f"{what}: max abs diff {err:.3e} (scale {scale:.3e})"

    for a, b, what in ((y1, y2, "y"), (c1, c2, "conv state"), (s1, s2, "ssm state")):
        close(a, b, what)
    for n in g1:
        close(g1[n], g2[n], n, grad=True)


def test_triton_conv_dispatch_is_cuda_only_and_logs_once(monkeypatch, caplog):
    from networks.ssm import kernels

    class FakeCuda:
        is_cuda = True

    monkeypatch.setattr(kernels, "_PATH_LOGGED", set())
    for ok in (True, False):
        monkeypatch.setattr(kernels, "_triton_available", lambda mod, ok=ok: ok)
        kernels._PATH_LOGGED.clear()
        caplog.clear()
        with caplog.at_level("WARNING", logger="mambazoo"):
            assert kernels.wants_triton_conv("auto", FakeCuda(), "Mamba2 conv + SiLU") is ok
            assert kernels.wants_triton_conv(True, FakeCuda(), "Mamba2 conv + SiLU") is ok
        lines = [r.getMessage() for r in caplog.records if "Mamba2 conv" in r.getMessage()]
        assert len(lines) == 1 and ("Triton" if ok else "pure PyTorch") in lines[0], lines
        assert kernels.wants_triton_conv(False, FakeCuda(), "Mamba2 conv + SiLU") is False   # kernels off
        assert kernels.wants_triton_conv("auto", torch.zeros(1), "Mamba2 conv + SiLU") is False  # CPU tensor
