"""The fused C++ CPU selective scan (networks/ssm/cpu_scan.py) against the reference step loop.

Values, the final state and every gradient (u, delta, A, B, C, D, the initial state), with
resets at t=0, inside rows, back to back and at the last step; the grouped (SS2D) form; the
dispatch from the Mamba1/SS2D scans; and the fallback to the chunked PyTorch scan when the
extension cannot be built (no compiler, or MAMBAZOO_CPU_SCAN=0). Shapes are small: the
first test pays the one-off build (~30 s, cached in TORCH_EXTENSIONS_DIR afterwards).
"""
import logging
import shutil

import pytest
import torch
import torch.nn.functional as F

import networks.ssm.cpu_scan as cpu_scan
import networks.ssm.mamba1 as m1
from networks.ssm.ss2d import SS2D, selective_scan_grouped, selective_scan_grouped_reference

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=2e-5, rtol=2e-5)}


@pytest.fixture(scope="module")
def ext():
    # A machine with a compiler must build it: a broken build fails here instead of skipping.
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the fallback tests below cover this machine")
    assert cpu_scan.available(), f"the extension did not build: {cpu_scan._WHY_NOT}"
    return cpu_scan._EXT


def reset_patterns(Bt, T):
    pats = {"none": torch.zeros(Bt, T, dtype=torch.bool)}
    p = torch.zeros(Bt, T, dtype=torch.bool)
    p[:, 0] = True
    pats["t0"] = p                                            # every row starts an episode
    p = torch.zeros(Bt, T, dtype=torch.bool)
    p[0, T // 2] = True                                       # inside a row
    p[1, 1:4] = True                                          # back to back (T >= 5)
    p[2, T - 1] = True                                        # at the last step
    p[0, 0] = True                                            # t=0 in one row, carried in others
    pats["mixed"] = p
    return pats


def inputs(Bt, T, Di, N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(Bt, T, Di), delta=F.softplus(r(Bt, T, Di)) * 0.5, A=-torch.exp(r(Di, N) * 0.5),
                B=r(Bt, T, N), C=r(Bt, T, N), D=r(Di), h0=r(Bt, Di, N))


def value_and_grads(fn, x, is_init, seed=1):
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    y, h = fn(*leaves.values(), is_init)
    g = torch.Generator().manual_seed(seed)
    # Weights on both outputs, so the final-state gradient path is exercised too.
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum() \
        + (h * torch.randn(h.shape, generator=g, dtype=h.dtype)).sum()
    loss.backward()
    return y.detach(), h.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("pattern", ["none", "t0", "mixed"])
@pytest.mark.parametrize("T,chunk", [(13, 4), (13, 1), (5, 16)])
def test_fused_matches_reference_values_and_every_gradient(ext, dtype, pattern, T, chunk):
    x = inputs(3, T, 64, 8, dtype)
    is_init = reset_patterns(3, T)[pattern]
    y0, h0, g0 = value_and_grads(m1.selective_scan_reference, x, is_init)
    y1, h1, g1 = value_and_grads(lambda *a: cpu_scan.selective_scan(*a, chunk_size=chunk), x, is_init)
    torch.testing.assert_close(y1, y0, **TOL[dtype])
    torch.testing.assert_close(h1, h0, **TOL[dtype])
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], **TOL[dtype], msg=lambda m: f"d{k}: {m}")
    if pattern == "t0":  # every row resets at t=0: the initial state gets no gradient at all
        assert g1["h0"].abs().max() == 0
    else:
        assert g1["h0"].abs().max() > 0


@pytest.mark.parametrize("nblk", [1, 2, 4])
def test_channel_blocks_and_threads_do_not_change_the_result(ext, nblk, monkeypatch):
    """Work is split over (row, channel block) units; the split must not matter."""
    x = inputs(2, 9, 128, 16, torch.float64)
    is_init = reset_patterns(3, 9)["mixed"][:2]
    ref = value_and_grads(m1.selective_scan_reference, x, is_init)
    monkeypatch.setattr(cpu_scan, "_blocks", lambda Bt, G, Di: nblk)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got = value_and_grads(lambda *a: cpu_scan.selective_scan(*a, chunk_size=4), x, is_init)
            torch.testing.assert_close(got[:2], ref[:2], **TOL[torch.float64])
            for k in ref[2]:
                torch.testing.assert_close(got[2][k], ref[2][k], **TOL[torch.float64])
    finally:
        torch.set_num_threads(threads)


def test_only_one_output_used_and_no_grad(ext):
    """Backward with no gradient into y, or none into the final state; no_grad forward."""
    x = inputs(2, 7, 32, 4, torch.float64)
    is_init = reset_patterns(3, 7)["mixed"][1:]
    for use in ("y", "h"):
        leaves0 = {k: v.clone().requires_grad_() for k, v in x.items()}
        leaves1 = {k: v.clone().requires_grad_() for k, v in x.items()}
        out0 = m1.selective_scan_reference(*leaves0.values(), is_init)
        out1 = cpu_scan.selective_scan(*leaves1.values(), is_init, chunk_size=3)
        i = 0 if use == "y" else 1
        (out0[i] ** 2).sum().backward()
        (out1[i] ** 2).sum().backward()
        for k in x:  # the loop leaves dD as None when only h is used: D does not reach h
            want = leaves0[k].grad if leaves0[k].grad is not None else torch.zeros_like(x[k])
            torch.testing.assert_close(leaves1[k].grad, want, **TOL[torch.float64])
    with torch.no_grad():
        y, h = cpu_scan.selective_scan(*x.values(), is_init, chunk_size=3)
    y0, h0 = m1.selective_scan_reference(*x.values(), is_init)
    torch.testing.assert_close((y, h), (y0, h0), **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_grouped_scan_matches_reference(ext, dtype):
    """SS2D's four directions as groups: each its own A, D and B/C."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    Bt, T, G, Di, N = 2, 11, 4, 32, 8
    x = [r(Bt, T, G, Di), F.softplus(r(Bt, T, G, Di)) * 0.5, -torch.exp(r(G, Di, N) * 0.5),
         r(Bt, T, G, N), r(Bt, T, G, N), r(G, Di)]
    a = [t.clone().requires_grad_() for t in x]
    b = [t.clone().requires_grad_() for t in x]
    y0 = selective_scan_grouped_reference(*a)
    y1 = cpu_scan.selective_scan_grouped(*b, chunk_size=4)
    w = r(*y0.shape)
    (y0 * w).sum().backward()
    (y1 * w).sum().backward()
    torch.testing.assert_close(y1, y0, **TOL[dtype])
    for p, q in zip(a, b):
        torch.testing.assert_close(q.grad, p.grad, **TOL[dtype])


def test_mamba1_and_ss2d_scans_dispatch_to_it_on_cpu(ext, monkeypatch):
    calls = []
    for name in ("selective_scan", "selective_scan_grouped"):
        real = getattr(cpu_scan, name)
        monkeypatch.setattr(cpu_scan, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    x = inputs(2, 6, 16, 4, torch.float32)
    m1.selective_scan_chunked(*x.values(), torch.zeros(2, 6, dtype=torch.bool), 4)
    SS2D(8, d_state=4)(torch.randn(1, 3, 3, 8))
    assert calls == ["selective_scan", "selective_scan_grouped"]


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tried the extension yet (monkeypatch restores the real one)."""
    monkeypatch.setattr(cpu_scan, "_EXT", None)
    monkeypatch.setattr(cpu_scan, "_WHY_NOT", "")
    return monkeypatch


def mambazoo_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "mambazoo"]


@pytest.mark.parametrize("how", ["no_compiler", "build_fails", "env_off"])
def test_fallback_to_the_chunked_scan_with_one_log_line(fresh, caplog, how):
    if how == "no_compiler":
        fresh.setenv("CXX", "/nonexistent/c++")
    elif how == "build_fails":
        def broken():
            raise RuntimeError("Error building extension 'mambazoo_selective_scan_cpu'")
        fresh.setattr(cpu_scan, "_build", broken)
    else:
        fresh.setenv(cpu_scan.ENV, "0")
    x = inputs(3, 13, 16, 4, torch.float64)
    is_init = reset_patterns(3, 13)["mixed"]
    with caplog.at_level(logging.WARNING, logger="mambazoo"):
        # The chunked PyTorch scan (the fallback) is still exact against the loop.
        y0, h0, g0 = value_and_grads(m1.selective_scan_reference, x, is_init)
        y1, h1, g1 = value_and_grads(lambda *a: m1.selective_scan_chunked(*a, chunk_size=4), x, is_init)
        m1.selective_scan_chunked(*x.values(), is_init, 4)
    assert cpu_scan._EXT is False and not cpu_scan.available()
    lines = mambazoo_lines(caplog)
    assert len(lines) == 1 and "using the chunked PyTorch scan" in lines[0], lines
    torch.testing.assert_close((y1, h1), (y0, h0), **TOL[torch.float64])
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], **TOL[torch.float64])


def test_loading_logs_one_line_naming_the_build(ext, fresh, caplog):
    with caplog.at_level(logging.WARNING, logger="mambazoo"):
        assert cpu_scan.available() and cpu_scan.available()
    lines = mambazoo_lines(caplog)
    assert len(lines) == 1 and str(cpu_scan.build_directory()) in lines[0], lines


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("input_size,layers,batch", [(5, 2, (3,)), (16, 1, (1,)), (16, 1, (2, 3))])
def test_fused_acting_step_matches_the_eager_step(ext, monkeypatch, dtype, input_size, layers, batch):
    """make_memory("mamba1") step mode without autograd (acting) runs MambaStack.step in one
    extension call; with autograd it runs the eager mixers. Both from the same random states,
    with resets in some rows (their incoming state must be ignored)."""
    from tensordict import TensorDict

    from networks import make_memory
    torch.manual_seed(0)
    memory = make_memory("mamba1", input_size, 16, layers, d_state=8).to(dtype)
    shapes = {k: tuple(s.shape) for k, s in memory.make_tensordict_primer().primers.items()}
    g = torch.Generator().manual_seed(0)
    is_init = torch.rand(*batch, 1, generator=g) < 0.4
    is_init.view(-1)[0] = True                                # at least one reset row
    td = TensorDict({"embed": torch.randn(*batch, input_size, generator=g, dtype=dtype), "is_init": is_init,
                     **{k: torch.randn(*batch, *s, generator=g, dtype=dtype) for k, s in shapes.items()}},
                    list(batch))
    calls = []
    real = cpu_scan.mamba1_stack_step
    monkeypatch.setattr(cpu_scan, "mamba1_stack_step", lambda *a: calls.append(1) or real(*a))
    eager = memory(td.clone())                                # parameters require grad: eager
    assert not calls
    with torch.no_grad():
        fused = memory(td.clone())
    assert calls, "the no-grad CPU step must take the fused kernel"
    for key in ["memory", *[("next", k) for k in memory.state_keys]]:
        torch.testing.assert_close(fused[key], eager[key].detach(), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("T,K", [(13, 4), (2, 4), (1, 3), (9, 2)])
def test_fused_conv_matches_causal_conv1d_and_silu(ext, dtype, T, K):
    """Conv taps masked at resets (t=0, inside, back to back, last step), the carried state
    (also when T < K-1: the new state then still holds carried inputs), bias, SiLU; values,
    new state and every gradient; x a strided view as in_proj's x half."""
    from networks.ssm.causal_conv import causal_conv1d
    g = torch.Generator().manual_seed(0)
    Bt, C = 3, 8
    xz = torch.randn(Bt, T, 2 * C, generator=g, dtype=dtype)
    w, b = torch.randn(C, K, generator=g, dtype=dtype), torch.randn(C, generator=g, dtype=dtype)
    s = torch.randn(Bt, C, K - 1, generator=g, dtype=dtype)
    is_init = torch.zeros(Bt, T, dtype=torch.bool)
    is_init[0, 0] = True
    if T >= 5:
        is_init[1, 1:4] = True
        is_init[2, T - 1] = True
    results = []
    for fused in (False, True):
        leaves = [t.clone().requires_grad_() for t in (xz, w, b, s)]
        x = leaves[0][..., :C]
        if fused:
            out, ns = cpu_scan.causal_conv1d_silu(x, *leaves[1:], is_init)
        else:
            out, ns = causal_conv1d(x, *leaves[1:], is_init)
            out = F.silu(out)
        gen = torch.Generator().manual_seed(1)
        ((out * torch.randn(out.shape, generator=gen, dtype=dtype)).sum()
         + (ns * torch.randn(ns.shape, generator=gen, dtype=dtype)).sum()).backward()
        results.append((out.detach(), ns.detach(), [t.grad for t in leaves]))
    (o0, n0, g0), (o1, n1, g1) = results
    torch.testing.assert_close(o1, o0, **TOL[dtype])
    torch.testing.assert_close(n1, n0, **TOL[dtype])
    for a, c in zip(g1, g0):
        torch.testing.assert_close(a, c, **TOL[dtype])


def test_mamba1_sequence_uses_the_fused_conv(ext, monkeypatch):
    from networks.ssm.mamba1 import Mamba1Mixer
    calls = []
    real = cpu_scan.causal_conv1d_silu
    monkeypatch.setattr(cpu_scan, "causal_conv1d_silu", lambda *a: calls.append(1) or real(*a))
    m = Mamba1Mixer(8, d_state=4)
    m(torch.randn(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool), torch.zeros(2, 16, 3), torch.zeros(2, 16, 4))
    assert calls == [1]
