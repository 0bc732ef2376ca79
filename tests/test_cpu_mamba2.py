"""Mamba2's C++ CPU kernels (networks/ssm/cpu_mamba2.py) against the PyTorch reference paths.

The SSD recurrence against ``ssd_reference`` (the step loop): values, the final state and every
gradient (x, dt, A, B, C, D, the initial state), with resets at t=0, inside rows, back to back and
at the last step, over head sizes that take each of the forward's lane-block widths and with
several groups. The gated RMSNorm against its eager form. Mamba2Mixer's CPU sequence path against its ``scan="reference"`` path (parameters'
and inputs' gradients too). The fused acting step against the eager step and against sequence
mode. The fallback when the extension cannot be built. The first test pays the one-off build
(~35 s, cached in TORCH_EXTENSIONS_DIR afterwards).
"""
import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torchrl.modules import set_recurrent_mode

import networks.ssm.cpu_mamba2 as cpu_mamba2
from networks import make_memory
from networks.ssm.mamba2 import Mamba2Mixer, ssd_reference

# the tolerances, reset patterns and value-and-gradients harness of the Mamba1 C++ scan tests
from test_cpu_scan import TOL, reset_patterns, value_and_grads  # rootdir-relative, as pytest runs tests/


@pytest.fixture(scope="module")
def ext():
    # A machine with a compiler must build it: a broken build fails here instead of skipping.
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the fallback test below covers this machine")
    assert cpu_mamba2.available(), f"the extension did not build: {cpu_mamba2._WHY_NOT}"
    return cpu_mamba2._EXT


def inputs(Bt, T, H, P, G, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(x=r(Bt, T, H, P), dt=F.softplus(r(Bt, T, H)) * 0.5, A=-torch.exp(r(H) * 0.5),
                B=r(Bt, T, G, N), C=r(Bt, T, G, N), D=r(H), h0=r(Bt, H, P, N))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("pattern", ["none", "t0", "mixed"])
@pytest.mark.parametrize("T,chunk", [(13, 4), (13, 1), (5, 16)])
@pytest.mark.parametrize("H,P,G,N", [(4, 32, 1, 16), (4, 6, 2, 5), (3, 3, 3, 8), (2, 16, 1, 3)],
                         ids=["P32", "P6-G2", "P3-G3", "P16"])
def test_ssd_matches_reference_values_and_every_gradient(ext, dtype, pattern, T, chunk, H, P, G, N):
    x = inputs(3, T, H, P, G, N, dtype)
    is_init = reset_patterns(3, T)[pattern]
    y0, h0, g0 = value_and_grads(ssd_reference, x, is_init)
    y1, h1, g1 = value_and_grads(lambda *a: cpu_mamba2.ssd(*a, chunk_size=chunk), x, is_init)
    torch.testing.assert_close(y1, y0, **TOL[dtype])
    torch.testing.assert_close(h1, h0, **TOL[dtype])
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], **TOL[dtype], msg=lambda m: f"d{k}: {m}")
    if pattern == "t0":  # every row resets at t=0: the initial state gets no gradient at all
        assert g1["h0"].abs().max() == 0
    else:
        assert g1["h0"].abs().max() > 0


def test_only_one_output_used_threads_and_no_grad(ext):
    """Backward with no gradient into y, or none into the final state, at 1 and 2 threads;
    the no-grad forward (no checkpoints kept)."""
    x = inputs(3, 9, 4, 8, 2, 4, torch.float64)
    is_init = reset_patterns(3, 9)["mixed"]
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for use in (0, 1):
                leaves0 = {k: v.clone().requires_grad_() for k, v in x.items()}
                leaves1 = {k: v.clone().requires_grad_() for k, v in x.items()}
                (ssd_reference(*leaves0.values(), is_init)[use] ** 2).sum().backward()
                (cpu_mamba2.ssd(*leaves1.values(), is_init, chunk_size=4)[use] ** 2).sum().backward()
                for k in x:  # the loop leaves dD as None when only h is used: D does not reach h
                    want = leaves0[k].grad if leaves0[k].grad is not None else torch.zeros_like(x[k])
                    torch.testing.assert_close(leaves1[k].grad, want, **TOL[torch.float64])
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        got = cpu_mamba2.ssd(*x.values(), is_init, chunk_size=4)
    torch.testing.assert_close(got, ssd_reference(*x.values(), is_init), **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("groups,rows", [(1, 7), (2, 130), (4, 1)])
def test_gated_rms_norm_matches_eager_values_and_gradients(ext, dtype, groups, rows):
    """RMSNorm(y * SiLU(z)) * w per group, z a strided slice of a wider tensor (as in_proj's)."""
    g = torch.Generator().manual_seed(0)
    D = 24
    y = torch.randn(rows, D, generator=g, dtype=dtype)
    zw = torch.randn(rows, D + 5, generator=g, dtype=dtype) * 3     # z = zw[:, 2:2+D], row stride D+5
    w = torch.rand(D, generator=g, dtype=dtype) + 0.5
    gout = torch.randn(rows, D, generator=g, dtype=dtype)

    def eager(y, zw, w):
        u = (y * F.silu(zw[:, 2:2 + D])).reshape(rows, groups, -1)
        return F.rms_norm(u, u.shape[-1:], eps=cpu_mamba2.GATE_EPS).reshape(rows, D) * w

    outs, grads = [], []
    for fn in (eager, lambda y, zw, w: cpu_mamba2.gated_rms_norm(y, zw[:, 2:2 + D], w, groups)):
        leaves = [t.clone().requires_grad_() for t in (y, zw, w)]
        out = fn(*leaves)
        (out * gout).sum().backward()
        outs.append(out.detach())
        grads.append([t.grad for t in leaves])
    torch.testing.assert_close(outs[1], outs[0], **TOL[dtype])
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, **TOL[dtype])


def _mixer_run(mixer, x, is_init, conv, ssm, scan, seed=2):
    leaves = [t.clone().requires_grad_() for t in (x, conv, ssm)]
    y, c, s = mixer(leaves[0], is_init, leaves[1], leaves[2], scan=scan)
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (y, c, s))
    mixer.zero_grad(set_to_none=True)
    loss.backward()
    return [t.detach() for t in (y, c, s)], [t.grad for t in leaves], \
        {n: p.grad.clone() for n, p in mixer.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_mixer_cpu_sequence_path_matches_the_reference_path(ext, monkeypatch, dtype, ngroups):
    """Mamba2Mixer on the CPU: the C++ SSD on the conv output in place (chunked) against the
    reference loop; outputs, new states, and the gradients of x, both states and every parameter."""
    torch.manual_seed(0)
    mixer = Mamba2Mixer(16, d_state=8, headdim=8, ngroups=ngroups).to(dtype)
    g = torch.Generator().manual_seed(1)
    Bt, T = 3, 11
    x = torch.randn(Bt, T, 16, generator=g, dtype=dtype)
    conv = torch.randn(Bt, *mixer.state_shapes()["conv"], generator=g, dtype=dtype)
    ssm = torch.randn(Bt, *mixer.state_shapes()["ssm"], generator=g, dtype=dtype)
    is_init = reset_patterns(Bt, T)["mixed"]
    calls = []
    real = cpu_mamba2.ssd_xbc
    monkeypatch.setattr(cpu_mamba2, "ssd_xbc", lambda *a: calls.append(1) or real(*a))
    ref = _mixer_run(mixer, x, is_init, conv, ssm, "reference")
    assert not calls
    got = _mixer_run(mixer, x, is_init, conv, ssm, "chunked")
    assert calls == [1], "the CPU sequence path must take the C++ SSD"
    for a, b in zip(got[0] + got[1], ref[0] + ref[1]):
        torch.testing.assert_close(a, b, **TOL[dtype])
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], **TOL[dtype], msg=lambda m: f"d{name}: {m}")


def _memory_td(memory, batch, input_size, dtype, seed=0):
    shapes = {k: tuple(s.shape) for k, s in memory.make_tensordict_primer().primers.items()}
    g = torch.Generator().manual_seed(seed)
    is_init = torch.rand(*batch, 1, generator=g) < 0.4
    is_init.view(-1)[0] = True                                # at least one reset row
    return TensorDict({"embed": torch.randn(*batch, input_size, generator=g, dtype=dtype), "is_init": is_init,
                       **{k: torch.randn(*batch, *s, generator=g, dtype=dtype) for k, s in shapes.items()}},
                      list(batch))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("input_size,layers,batch,ngroups", [(5, 2, (3,), 1), (16, 1, (1,), 2), (16, 1, (2, 3), 1)])
def test_fused_acting_step_matches_the_eager_step(ext, monkeypatch, dtype, input_size, layers, batch, ngroups):
    """make_memory("mamba2") step mode without autograd (acting) runs MambaStack.step in one
    extension call; with autograd it runs the eager mixers. Both from the same random states,
    with resets in some rows (their incoming state must be ignored)."""
    torch.manual_seed(0)
    memory = make_memory("mamba2", input_size, 16, layers, d_state=8, headdim=4, ngroups=ngroups).to(dtype)
    td = _memory_td(memory, batch, input_size, dtype)
    calls = []
    real = cpu_mamba2.stack_step
    monkeypatch.setattr(cpu_mamba2, "stack_step", lambda *a: calls.append(1) or real(*a))
    eager = memory(td.clone())                                # parameters require grad: eager
    assert not calls
    with torch.no_grad():
        fused = memory(td.clone())
    assert calls, "the no-grad CPU step must take the fused kernel"
    for key in ["memory", *[("next", k) for k in memory.state_keys]]:
        torch.testing.assert_close(fused[key], eager[key].detach(), **TOL[dtype])


def _steps_vs_sequence(memory, B, T, dtype, seed=3):
    """Step T times as a collector does (state through ("next", key)) and run the same data in
    sequence mode; returns (step outputs, sequence outputs, step final states, sequence finals)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 16, generator=g, dtype=dtype)
    is_init = torch.rand(B, T, 1, generator=g) < 0.25
    is_init[:, 0] = True
    is_init[0, 1:3] = True                                    # back to back
    shapes = {k: tuple(s.shape) for k, s in memory.make_tensordict_primer().primers.items()}
    state = {k: torch.randn(B, *s, generator=g, dtype=dtype) for k, s in shapes.items()}  # reset away at t=0
    ys = []
    with torch.no_grad():
        for t in range(T):
            td = TensorDict({"embed": x[:, t], "is_init": is_init[:, t], **state}, [B])
            memory(td)
            ys.append(td["memory"])
            state = {k: td["next", k] for k in shapes}
        seq = TensorDict({"embed": x, "is_init": is_init,
                          **{k: torch.zeros(B, T, *s, dtype=dtype) for k, s in shapes.items()}}, [B, T])
        with set_recurrent_mode(True):
            memory(seq)
    return torch.stack(ys, 1), seq["memory"], state, {k: seq["next", k][:, -1] for k in shapes}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_fused_steps_match_sequence_mode_with_resets(ext, monkeypatch, dtype):
    torch.manual_seed(0)
    memory = make_memory("mamba2", 16, 16, 2, d_state=8, headdim=4, scan="reference").to(dtype)
    calls = []
    real = cpu_mamba2.stack_step
    monkeypatch.setattr(cpu_mamba2, "stack_step", lambda *a: calls.append(1) or real(*a))
    y_step, y_seq, s_step, s_seq = _steps_vs_sequence(memory, 3, 9, dtype)
    assert len(calls) == 9
    torch.testing.assert_close(y_step, y_seq, **TOL[dtype])
    for k in s_seq:
        torch.testing.assert_close(s_step[k], s_seq[k], **TOL[dtype])


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tried the extension yet (monkeypatch restores the real one)."""
    monkeypatch.setattr(cpu_mamba2, "_EXT", None)
    monkeypatch.setattr(cpu_mamba2, "_WHY_NOT", "")
    return monkeypatch


@pytest.mark.parametrize("how", ["no_compiler", "build_fails", "env_off"])
def test_fallback_to_the_pytorch_paths_with_one_log_line(fresh, caplog, how):
    if how == "no_compiler":
        fresh.setenv("CXX", "/nonexistent/c++")
    elif how == "build_fails":
        def broken():
            raise RuntimeError("Error building extension 'mambazoo_mamba2_cpu'")
        fresh.setattr(cpu_mamba2, "_build", broken)
    else:
        fresh.setenv("MAMBAZOO_CPU_SCAN", "0")
    calls = []
    fresh.setattr(cpu_mamba2, "ssd_xbc", lambda *a: calls.append("ssd"))
    fresh.setattr(cpu_mamba2, "stack_step", lambda *a: calls.append("step"))
    torch.manual_seed(0)
    dtype = torch.float64
    with caplog.at_level(logging.WARNING, logger="mambazoo"):
        # The PyTorch paths (chunked SSD, eager step) still match the reference loop.
        chunked = make_memory("mamba2", 16, 16, 2, d_state=8, headdim=4, chunk_size=4).to(dtype)
        reference = make_memory("mamba2", 16, 16, 2, d_state=8, headdim=4, scan="reference").to(dtype)
        reference.load_state_dict(chunked.state_dict())
        y_step, y_seq, s_step, s_seq = _steps_vs_sequence(chunked, 3, 9, dtype)
        y_ref = _steps_vs_sequence(reference, 3, 9, dtype)[1]
    assert not calls and cpu_mamba2._EXT is False and not cpu_mamba2.available()
    lines = [r.getMessage() for r in caplog.records if r.name == "mambazoo" and "Mamba2" in r.getMessage()]
    assert len(lines) == 1 and "using the PyTorch SSD and step" in lines[0], lines
    torch.testing.assert_close(y_seq, y_ref, **TOL[dtype])
    torch.testing.assert_close(y_step, y_seq, **TOL[dtype])
    for k in s_seq:
        torch.testing.assert_close(s_step[k], s_seq[k], **TOL[dtype])


def test_loading_logs_one_line_naming_the_build(ext, fresh, caplog):
    with caplog.at_level(logging.WARNING, logger="mambazoo"):
        assert cpu_mamba2.available() and cpu_mamba2.available()
    lines = [r.getMessage() for r in caplog.records if r.name == "mambazoo"]
    assert len(lines) == 1 and str(cpu_mamba2.build_directory()) in lines[0], lines
