"""networks.ssm.triton_scan (the Triton Mamba1 scan) == the pure-PyTorch reference loop.

Two modes, same test bodies (the ``device`` parameter):
- ``cuda``: marked ``cuda`` (``python -m pytest -m cuda tests/test_triton_scan.py``); needs
  a CUDA device and triton.
- ``cpu``: Triton's interpreter on CPU tensors. The interpreter is chosen when triton is
  first imported (older triton) or when a kernel is decorated (newer), and torchrl /
  tensordict import triton as soon as ``networks`` is imported, so these cases only run in
  a child process started with TRITON_INTERPRET=1 (``test_interpreter_mode``). The parent
  skips that when triton is not installed (CI) or when a small interpreter run is slow.

Every comparison is against ``selective_scan_reference`` run in float64 on the same
inputs, so the error measured is the kernel's own. Tolerances, relative to the largest
entry of the reference (``close``):
- float32 kernel: outputs and final states 1e-5, gradients 5e-5. Observed here (interpreter,
  T<=300) ~1e-7..1e-6; a wrong reset, carry or gradient term is off by O(1e-2..1).
- float64 kernel: 1e-10 everything (observed ~1e-15).
"""
import importlib.util
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from networks.ssm.mamba1 import selective_scan_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERP = os.environ.get("TRITON_INTERPRET") == "1"


def _has_triton():
    # find_spec, not import: importing triton here would fix the interpreter choice too early.
    try:
        return importlib.util.find_spec("triton") is not None
    except (ValueError, ImportError):  # e.g. sys.modules["triton"] = None (import blocked)
        return False


HAS_TRITON = _has_triton()
F32 = dict(out=1e-5, grad=5e-5)
F64 = dict(out=1e-10, grad=1e-10)

DEVICES = [
    pytest.param("cuda", marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed"),
        pytest.mark.skipif(INTERP, reason="TRITON_INTERPRET=1 runs triton on CPU, not CUDA"),
    ]),
    pytest.param("cpu", marks=pytest.mark.skipif(
        not INTERP, reason="runs in the TRITON_INTERPRET=1 child process of test_interpreter_mode")),
]
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"]
KINDS = ["tile", "loop"]   # the two kernel pairs (triton_scan.KINDS): every numeric test runs both


def sizes(device):
    """Interpreter: tiny (it runs every tile in numpy), with T spanning 3 chunks of 16 and
    Di/N not multiples of the tile (masking). CUDA: the default tiling at a realistic width."""
    if device == "cpu":
        return dict(Bt=3, Di=6, N=3, T=37, config=(4, 16, 1, 2))
    return dict(Bt=4, Di=40, N=16, T=300, config=None)


@pytest.fixture(autouse=True)
def _reset_config():
    yield
    if "networks.ssm.triton_scan" in sys.modules:
        sys.modules["networks.ssm.triton_scan"].set_config(None)


def make_inputs(device, Bt, Di, N, T, G=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    bc = (Bt, G, N, T) if G > 1 else (Bt, N, T)
    x = dict(u=r(Bt, Di, T), delta=r(Bt, Di, T) * 0.5 - 1.0,
             A=-torch.exp(r(Di, N) * 0.5 + 1.0),      # |A| ~0.5..15, as the S4D init and after training
             B=r(*bc), C=r(*bc), D=r(Di), z=r(Bt, Di, T),
             delta_bias=r(Di) * 0.5, h0=r(Bt, Di, N))
    return {k: v.to(device=device, dtype=dtype) for k, v in x.items()}


def resets(Bt, T, device, kind="mixed"):
    """mixed: t=0 and inside (row 0), inside and at the last step (row 1), back to back on
    both sides of each chunk boundary (row 2); rows >= 3 carry their state through."""
    rs = torch.zeros(Bt, T, dtype=torch.bool)
    if kind == "mixed":
        rs[0, [0, 9]] = True
        rs[1, [5, T - 1]] = True
        for c in (16, 32, 64):      # chunk boundaries of the tilings tested (BT = 16, 32, 64)
            if c < T:
                rs[2, [c - 1, c]] = True
    return rs.to(device)


def reference(x, used, softplus, reset):
    """float64 oracle: selective_scan_reference per group, mamba-ssm's delta/z conventions."""
    x = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    u, B, C = x["u"], x["B"], x["C"]
    Bt, Di, T = u.shape
    delta = x["delta"] + (x["delta_bias"][:, None] if "delta_bias" in used else 0)
    delta = F.softplus(delta) if softplus else delta
    D = x["D"] if "D" in used else u.new_zeros(Di)
    h0 = x["h0"] if "h0" in used else u.new_zeros(Bt, Di, x["A"].shape[1])
    rs = reset if reset is not None else torch.zeros(Bt, T, dtype=torch.bool, device=u.device)
    G = B.shape[1] if B.dim() == 4 else 1
    Bg, Cg = (B, C) if G > 1 else (B[:, None], C[:, None])
    Dg = Di // G
    ys, hs = [], []
    for g in range(G):
        c = slice(g * Dg, (g + 1) * Dg)
        y, h = selective_scan_reference(u[:, c].transpose(1, 2), delta[:, c].transpose(1, 2), x["A"][c],
                                        Bg[:, g].transpose(1, 2), Cg[:, g].transpose(1, 2), D[c], h0[:, c], rs)
        ys.append(y.transpose(1, 2))
        hs.append(h)
    y, h = torch.cat(ys, 1), torch.cat(hs, 1)
    if "z" in used:
        y = y * F.silu(x["z"])
    return x, y, h


def run_triton(x, used, softplus, reset, return_last=True):
    from networks.ssm.triton_scan import selective_scan_fn

    x = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    opt = lambda k: x[k] if k in used else None  # noqa: E731
    res = selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], opt("D"), opt("z"),
                            opt("delta_bias"), softplus, return_last, initial_state=opt("h0"), reset=reset)
    y, h = res if return_last else (res, None)
    return x, y, h


def close(a, b, tol, what):
    scale = b.abs().max().clamp(min=1.0)
    err = (a.double() - b.double()).abs().max()
    assert err <= tol * scale, f"{what}: max abs diff {err:.3e} (scale {scale:.3e}, tol {tol:g} x scale)"
    return err.item() / scale.item()


def check(device, used, softplus, reset_kind, dtype=torch.float32, G=1, return_last=True, seed=0,
          config="default", bwd=None, kind="tile"):
    from networks.ssm import triton_scan

    s = sizes(device)
    triton_scan.set_config(s["config"] if config == "default" else config, bwd, kind=kind)
    tol = F32 if dtype == torch.float32 else F64
    x = make_inputs(device, s["Bt"], s["Di"], s["N"], s["T"], G=G, seed=seed, dtype=dtype)
    if not softplus:  # a negative step would make exp(delta * A) grow: give it positive steps
        x["delta"] = F.softplus(x["delta"])
    reset = None if reset_kind == "none" else resets(s["Bt"], s["T"], device, reset_kind)
    xr, y_ref, h_ref = reference(x, used, softplus, reset)
    xt, y, h = run_triton(x, used, softplus, reset, return_last)
    assert y.dtype == dtype and y.shape == y_ref.shape
    errs = {"out": close(y, y_ref, tol["out"], "out")}
    if return_last:
        errs["last"] = close(h, h_ref, tol["out"], "final state")
    g = torch.Generator().manual_seed(seed + 1)
    w = torch.randn(y_ref.shape, generator=g, dtype=torch.float64).to(device)
    w_h = torch.randn(h_ref.shape, generator=g, dtype=torch.float64).to(device)
    loss_ref = (y_ref * w).sum() + ((h_ref * w_h).sum() if return_last else 0)
    loss_ref.backward()
    loss = (y.double() * w).sum() + ((h.double() * w_h).sum() if return_last else 0)
    loss.backward()
    for k in NAMES:
        if k in used or k in ("u", "delta", "A", "B", "C"):
            assert xt[k].grad is not None, f"no gradient for {k}"
            errs["d" + k] = close(xt[k].grad, xr[k].grad, tol["grad"], f"d{k}")
        else:
            assert xt[k].grad is None
    print({k: f"{v:.1e}" for k, v in errs.items()})  # shown with -s: the observed errors
    return errs


ALL = set(NAMES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["full", "resets_no_h0", "h0_no_resets", "plain_no_last"])
def test_matches_reference_float32(device, kind, case):
    """Outputs, final state and every gradient (the final state's included)."""
    if case == "full":              # Mamba1 in RL: everything fused, carried state and resets
        check(device, ALL, True, "mixed", kind=kind)
    elif case == "resets_no_h0":
        check(device, ALL - {"h0"}, True, "mixed", kind=kind)
    elif case == "h0_no_resets":
        check(device, ALL - {"z", "delta_bias"}, False, "none", kind=kind)
    else:                           # mamba-ssm's defaults, and no final-state gradient
        check(device, {"D"}, False, "none", return_last=False, kind=kind)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference_float64(device, kind):
    check(device, ALL, True, "mixed", dtype=torch.float64, kind=kind)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_four_step_window_at_the_default_tiling(device, kind):
    """The drone's TemporalMamba: K=4 steps, one fresh sequence per window (no state, no resets), at
    the tiling CUDA runs (config=None: the chunk is far longer than the sequence), every gradient."""
    from networks.ssm import triton_scan

    triton_scan.set_config(None, None, kind=kind)
    used = {"D", "z", "delta_bias"}
    x = make_inputs(device, 2, 8, 16, 4)
    xr, y_ref, _ = reference(x, used, True, None)
    xt, y, _ = run_triton(x, used, True, None, return_last=False)
    close(y, y_ref, F32["out"], "out")
    w = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    (y_ref * w).sum().backward()
    (y.double() * w).sum().backward()
    for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"):
        close(xt[k].grad, xr[k].grad, F32["grad"], f"d{k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_groups_as_in_ss2d(device, kind):
    """Variable B/C with groups (VMamba's four directions): channel d reads group d // (Di/G)."""
    check(device, ALL, True, "mixed", G=2, seed=3, kind=kind)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config,bwd", [((1, 16, 1, 1), None), ((2, 64, 2, 3), (8, 4, 1)), ((8, 16, 4, 1), (1, 1, 2))],
                         ids=lambda c: "x".join(map(str, c)) if c else "same")
def test_tilings_agree(device, config, bwd):
    """The result must not depend on the tiling: one channel per program (BD=1), a chunk
    longer than the sequence (BT=64 > T in the interpreter), more channels than Di/G, and a
    backward tiled differently from its forward (more / fewer channels a program)."""
    check(device, ALL, True, "mixed", dtype=torch.float64, seed=5, config=config, bwd=bwd)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config,bwd", [((1, 64, 1, 1), None), ((4, 16, 2, 2), (4, 1, 1)), ((8, 32, 4, 1), (1, 2, 2)),
                                        ((2, 256, 4, 1), (2, 4, 1)), ((32, 64, 4, 1), (32, 4, 1))],
                         ids=lambda c: "x".join(map(str, c)) if c else "same")
def test_loop_tilings_agree(device, config, bwd):
    """The loop kind, tiling-independent too (interpreter: T=37, Di=6, N=3 not a power of 2): a
    chunk longer than the sequence (BT=64, 256 > T), T not a multiple of BT (16, 32), BD not
    dividing Di (4, 8 > 6), one channel per program, backwards tiled unlike their forward, and
    the wide-BD tiling tried for channel-contiguous inputs (32: benchmarks/triton_scan_bench.py --layout channels)."""
    check(device, ALL, True, "mixed", dtype=torch.float64, seed=5, config=config, bwd=bwd, kind="loop")


def test_tiling_overrides_are_validated():
    from networks.ssm import triton_scan

    with pytest.raises(ValueError, match="backward tiling"):
        triton_scan.set_config(None, (3, 4, 1))
    with pytest.raises(ValueError, match="tiling must be"):
        triton_scan.set_config((4, 24, 4, 1))
    with pytest.raises(ValueError, match="'tile', 'loop'"):
        triton_scan.set_config(None, None, kind="fast")


def test_bad_kernel_kind_in_the_environment_is_refused(monkeypatch):
    """A MAMBAZOO_TRITON_SCAN_KIND typo fails at the first scan with a ValueError naming the
    variable and the allowed kinds, before any kernel (so this runs without triton)."""
    from networks.ssm import triton_scan

    monkeypatch.setenv("MAMBAZOO_TRITON_SCAN_KIND", "loops")
    u = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=r"MAMBAZOO_TRITON_SCAN_KIND must be one of 'tile', 'loop', got 'loops'"):
        triton_scan.selective_scan_fn(u, u, torch.zeros(2, 4), torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))
    for kind in triton_scan.KINDS:
        monkeypatch.setenv("MAMBAZOO_TRITON_SCAN_KIND", kind)
        assert triton_scan._kind() == kind
    monkeypatch.delenv("MAMBAZOO_TRITON_SCAN_KIND")
    assert triton_scan._kind() == triton_scan.DEFAULT_KIND == "loop"


@pytest.mark.parametrize("device", DEVICES[:1])  # CUDA only: far too slow in the interpreter
@pytest.mark.parametrize("kind", KINDS)
def test_long_sequence_float32(device, kind):
    """T=4096 (128 chunks of the tile kind's default tiling, 16 of the loop kind's), 4 random
    resets per row: the carries across chunks, in both directions, do not drift."""
    from networks.ssm import triton_scan

    triton_scan.set_config(None, kind=kind)
    Bt, Di, N, T = 2, 64, 16, 4096
    x = make_inputs(device, Bt, Di, N, T, seed=21)
    g = torch.Generator().manual_seed(22)
    reset = torch.zeros(Bt, T, dtype=torch.bool)
    reset[torch.arange(Bt).repeat_interleave(4), torch.randint(0, T, (4 * Bt,), generator=g)] = True
    reset = reset.to(device)
    xr, y_ref, h_ref = reference(x, ALL, True, reset)
    xt, y, h = run_triton(x, ALL, True, reset)
    close(y, y_ref, F32["out"], "out")
    close(h, h_ref, F32["out"], "final state")
    w = torch.randn(y_ref.shape, generator=g, dtype=torch.float64).to(device)
    w_h = torch.randn(h_ref.shape, generator=g, dtype=torch.float64).to(device)
    ((y_ref * w).sum() + (h_ref * w_h).sum()).backward()
    ((y.double() * w).sum() + (h.double() * w_h).sum()).backward()
    for k in NAMES:
        close(xt[k].grad, xr[k].grad, F32["grad"], f"d{k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_inputs(device, kind):
    """Under autocast the projections hand the scan bf16 u/delta/z/B/C: it computes in fp32
    and returns bf16 outputs and gradients. Tolerance 2e-2 of the largest entry (bf16 keeps
    8 bits; the oracle sees the same bf16-rounded inputs in float64)."""
    from networks.ssm import triton_scan

    s = sizes(device)
    triton_scan.set_config(s["config"], kind=kind)
    x = make_inputs(device, s["Bt"], s["Di"], s["N"], s["T"], seed=31)
    for k in ("u", "delta", "B", "C", "z"):
        x[k] = x[k].bfloat16()
    reset = resets(s["Bt"], s["T"], device)
    xr, y_ref, h_ref = reference(x, ALL, True, reset)
    xt, y, h = run_triton(x, ALL, True, reset)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    close(y, y_ref, 2e-2, "out")
    close(h, h_ref, 1e-4, "final state")   # the state itself is fp32 throughout
    g = torch.Generator().manual_seed(32)
    w = torch.randn(y_ref.shape, generator=g, dtype=torch.float64).to(device)
    (y_ref * w).sum().backward()
    (y.double() * w).sum().backward()
    for k in NAMES:
        assert xt[k].grad.dtype == x[k].dtype, k
        close(xt[k].grad, xr[k].grad, 2e-2, f"d{k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_reset_cuts_the_past_exactly(device, kind):
    """After a reset nothing before it may matter, bit for bit: the reset step's decay is
    exactly 0 in every combination of the parallel scan."""
    from networks.ssm import triton_scan
    from networks.ssm.triton_scan import selective_scan_fn

    s = sizes(device)
    triton_scan.set_config(s["config"], kind=kind)
    x = make_inputs(device, s["Bt"], s["Di"], s["N"], s["T"], seed=7)
    rs = torch.zeros(s["Bt"], s["T"], dtype=torch.bool, device=device)
    cut = 20
    rs[:, cut] = True
    args = lambda x: (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True)  # noqa: E731
    y1, h1 = selective_scan_fn(*args(x), initial_state=x["h0"], reset=rs)
    x2 = dict(x)
    for k in ("u", "delta", "B", "C", "z"):
        x2[k] = x[k].clone()
        x2[k][..., :cut] += 3.0
    y2, h2 = selective_scan_fn(*args(x2), initial_state=x["h0"] + 3.0, reset=rs)
    assert torch.equal(y1[..., cut:], y2[..., cut:]) and torch.equal(h1, h2)
    assert not torch.allclose(y1[..., :cut], y2[..., :cut])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_skips_saving_and_matches(device, kind):
    """Under no_grad (rollouts, evaluation) the forward runs without storing chunk states
    (nor, loop kind, the pre-gate output: the SAVE=False kernel) and gives bit for bit what
    the training forward gives."""
    from networks.ssm import triton_scan

    s = sizes(device)
    triton_scan.set_config(s["config"], kind=kind)
    x = make_inputs(device, s["Bt"], s["Di"], s["N"], s["T"], seed=41)
    reset = resets(s["Bt"], s["T"], device)
    _, y, h = run_triton(x, ALL, True, reset)
    with torch.no_grad():
        _, y0, h0 = run_triton(x, ALL, True, reset)
    assert not y0.requires_grad and y.grad_fn is not None
    assert torch.equal(y0, y.detach()) and torch.equal(h0, h.detach())


def mixer_and_mamba1_forward(m, x, is_init, conv0, ssm0, seed):
    """The mixer's PyTorch forward and ``triton_scan.mamba1_forward`` from the same inputs, each
    backpropagated from the same random weighting of (y, conv, ssm): dicts of the outputs and the
    gradients of the input, the carried states and every parameter, (PyTorch, mamba1_forward)."""
    from networks.ssm import triton_scan

    outs = []
    for fn in (lambda *a: m(*a), lambda *a: triton_scan.mamba1_forward(m, *a)):
        m.zero_grad()
        leaves = [t.clone().requires_grad_() for t in (x, conv0, ssm0)]
        y, conv, ssm = fn(leaves[0], is_init, leaves[1], leaves[2])
        g = torch.Generator().manual_seed(seed)
        sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in (y, conv, ssm)).backward()
        outs.append(dict(y=y, conv=conv, ssm=ssm, dx=leaves[0].grad, dconv0=leaves[1].grad,
                         dssm0=leaves[2].grad, **{"d" + n: p.grad.clone() for n, p in m.named_parameters()}))
    return outs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scan_inputs", ["views", "contiguous"])
def test_mamba1_mixer_on_triton_matches_pytorch_path(device, kind, scan_inputs, monkeypatch):
    """``triton_scan.mamba1_forward`` (bias + softplus fused into the kernel) == the mixer's
    pure-PyTorch forward: output, conv and ssm states, and gradients of the input, the
    carried states and every parameter; in both layouts of SCAN_INPUTS, forced: the scan's inputs as
    strided views of the [B, T, .] projections, and time-contiguous from channel-first projections."""
    from networks.ssm import triton_scan
    from networks.ssm.mamba1 import Mamba1Mixer

    monkeypatch.setattr(triton_scan, "SCAN_INPUTS", scan_inputs)
    s = sizes(device)
    triton_scan.set_config(s["config"], kind=kind)
    torch.manual_seed(11)
    d_model = 8 if device == "cpu" else 32
    m = Mamba1Mixer(d_model, d_state=4 if device == "cpu" else 16, use_kernels=False).to(device)
    Bt, T = 3, s["T"]
    x = torch.randn(Bt, T, d_model, device=device)
    is_init = resets(Bt, T, device)
    conv0 = torch.randn(Bt, m.d_inner, m.d_conv - 1, device=device)
    ssm0 = torch.randn(Bt, m.d_inner, m.d_state, device=device)
    ref, tri = mixer_and_mamba1_forward(m, x, is_init, conv0, ssm0, seed=12)
    for k in ref:  # the PyTorch path is itself float32 here: tolerances x4
        close(tri[k], ref[k], 4 * (F32["out"] if k in ("y", "conv", "ssm") else F32["grad"]), k)


class _FakeCuda:
    is_cuda = True  # all the dispatch reads of a tensor


@pytest.mark.parametrize("triton_ok, ssm_ok, forced, use_kernels, expect", [
    (True, True, None, "auto", "triton"),          # Triton first: native resets, no build step
    (True, False, None, True, "triton"),
    (False, True, None, "auto", "mamba_ssm"),
    (False, False, None, "auto", "torch"),
    (True, True, None, False, "torch"),
    (True, True, "mamba_ssm", "auto", "mamba_ssm"),  # MAMBAZOO_MAMBA1_SCAN forces a path
    (True, True, "torch", True, "torch"),
    (False, False, None, True, RuntimeError),      # use_kernels=True: some kernel is required
])
def test_mamba1_scan_dispatch_order(monkeypatch, caplog, triton_ok, ssm_ok, forced, use_kernels, expect):
    from networks.ssm import kernels

    monkeypatch.setattr(kernels, "_triton_available", lambda mod: triton_ok)
    monkeypatch.setattr(kernels, "_KERNELS", {"scan": None} if ssm_ok else False)
    monkeypatch.setattr(kernels, "_PATH_LOGGED", set())
    if forced:
        monkeypatch.setenv("MAMBAZOO_MAMBA1_SCAN", forced)
    else:
        monkeypatch.delenv("MAMBAZOO_MAMBA1_SCAN", raising=False)
    if expect is RuntimeError:
        with pytest.raises(RuntimeError, match="use_kernels=True"):
            kernels.mamba1_scan_path(use_kernels, _FakeCuda())
        return
    with caplog.at_level("WARNING", logger="mambazoo"):
        assert kernels.mamba1_scan_path(use_kernels, _FakeCuda()) == expect
        assert kernels.mamba1_scan_path(use_kernels, _FakeCuda()) == expect
        assert kernels.mamba1_scan_path("auto", torch.zeros(1)) == "torch"   # CPU tensors: never CUDA kernels
    lines = [r.getMessage() for r in caplog.records if "Mamba1 sequence scan" in r.getMessage()]
    if use_kernels is not False:
        name = {"triton": "Triton", "mamba_ssm": "mamba-ssm", "torch": "pure PyTorch"}[expect]
        assert len(lines) == 1 and name in lines[0], lines   # one line per process, naming the path
        if expect == "triton":                                # and, for Triton, the kernel kind and tilings
            from networks.ssm import triton_scan
            assert triton_scan.describe() in lines[0] and " kernels, forward (BD, BT, warps, stages) = (" in lines[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scan_inputs", ["views", "contiguous"])
def test_ss2d_triton_scan_matches_the_grouped_reference(device, kind, scan_inputs, monkeypatch):
    """SS2D's four directions on the Triton scan (networks/ssm/ss2d._triton_scan): outputs and
    the gradients of every input equal the step-by-step grouped reference (float64), with the
    inputs as strided views and copied time-contiguous (triton_scan.SCAN_INPUTS, forced)."""
    from networks.ssm import triton_scan
    from networks.ssm.ss2d import _triton_scan, selective_scan_grouped_reference

    monkeypatch.setattr(triton_scan, "SCAN_INPUTS", scan_inputs)

    triton_scan.set_config(None, kind=kind)   # each kind's default tiling
    g = torch.Generator().manual_seed(11)
    Bt, T, G, Di, N = (2, 19, 4, 3, 2) if device == "cpu" else (2, 256, 4, 48, 8)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x = dict(u=r(Bt, T, G, Di), delta=F.softplus(r(Bt, T, G, Di) - 1.0), A=-torch.exp(r(G, Di, N) * 0.5),
             B=r(Bt, T, G, N), C=r(Bt, T, G, N), D=r(G, Di))
    xr = {k: v.clone().requires_grad_() for k, v in x.items()}
    xt = {k: v.to(device).clone().requires_grad_() for k, v in x.items()}
    y_ref = selective_scan_grouped_reference(*xr.values())
    y = _triton_scan(*xt.values())
    close(y.cpu(), y_ref, F64["out"], "out")
    w = r(*y_ref.shape)
    (y_ref * w).sum().backward()
    (y * w.to(device)).sum().backward()
    for k in x:
        close(xt[k].grad.cpu(), xr[k].grad, F64["grad"], f"d{k}")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not HAS_TRITON or INTERP, reason="needs triton compiling for CUDA")
def test_ss2d_auto_dispatch_runs_triton_on_cuda(monkeypatch):
    """SS2D with use_kernels="auto" on CUDA takes the Triton scan and computes what PyTorch does."""
    from networks.ssm import ss2d

    monkeypatch.delenv("MAMBAZOO_MAMBA1_SCAN", raising=False)
    calls = []
    real = ss2d._triton_scan
    monkeypatch.setattr(ss2d, "_triton_scan", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    m = ss2d.SS2D(32, d_state=8).cuda()
    x = torch.randn(2, 8, 8, 32, device="cuda")
    y = m(x)
    assert calls, "SS2D did not take the Triton scan"
    m.use_kernels = False
    close(y, m(x), 1e-4, "SS2D out (Triton vs PyTorch)")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not HAS_TRITON or INTERP, reason="needs triton compiling for CUDA")
def test_auto_dispatch_runs_triton_on_cuda(monkeypatch):
    """make_memory("mamba1") with use_kernels="auto" on CUDA runs the Triton scan."""
    from networks import make_memory
    from networks.ssm import kernels
    from networks.ssm import triton_scan

    monkeypatch.delenv("MAMBAZOO_MAMBA1_SCAN", raising=False)
    assert kernels.mamba1_scan_path("auto", torch.zeros(1, device="cuda")) == "triton"
    calls = []
    real = triton_scan.mamba1_forward
    monkeypatch.setattr(triton_scan, "mamba1_forward", lambda *a: calls.append(1) or real(*a))
    mem = make_memory("mamba1", 32, 32, use_kernels="auto").cuda()
    m = mem.core.mixers[0]
    x = torch.randn(2, 50, 32, device="cuda")
    is_init = torch.zeros(2, 50, dtype=torch.bool, device="cuda")
    conv = torch.zeros(2, m.d_inner, m.d_conv - 1, device="cuda")
    ssm = torch.zeros(2, m.d_inner, m.d_state, device="cuda")
    m(x, is_init, conv, ssm)
    assert calls, "the Mamba1 mixer did not take the Triton scan"


def test_import_needs_no_triton():
    """``import networks`` (and this module) must work where triton is absent: CI does not
    install it. Simulated by blocking the import in a fresh interpreter."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import networks, networks.ssm.kernels, networks.ssm.triton_scan as ts, networks.ssm.mamba1\n"
            "assert not ts.available()\n"
            "import torch\n"
            "try:\n"
            "    ts.selective_scan_fn(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(2, 4),\n"
            "                         torch.zeros(1, 5, 3), torch.zeros(1, 5, 3))\n"
            "except ValueError as e:\n"
            "    assert 'B must be' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('a wrong B shape must be refused before any kernel')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


# The probe: a small forward+backward in the interpreter, timed end to end (python start,
# torch + triton import, one scan). The full interpreter suite is run only if this is fast.
PROBE = """
import torch
from networks.ssm.triton_scan import selective_scan_fn, set_config
set_config((4, 16, 1))
u, d, z = (torch.randn(2, 4, 20, requires_grad=True) for _ in range(3))
A = -torch.rand(4, 3).add(0.5).requires_grad_()
B, C = (torch.randn(2, 3, 20, requires_grad=True) for _ in range(2))
h0 = torch.randn(2, 4, 3, requires_grad=True)
rs = torch.zeros(2, 20, dtype=torch.bool); rs[0, 7] = True
y, h = selective_scan_fn(u, d, A, B, C, None, z, None, True, True, initial_state=h0, reset=rs)
(y.sum() + h.sum()).backward()
"""
PROBE_BUDGET_S = 20.0


@pytest.mark.skipif(INTERP, reason="this test starts the interpreter run; it is not part of it")
def test_interpreter_mode():
    """Every ``cpu`` case above and in test_triton_conv.py, in a child process with TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (CI does not install it): no interpreter to run")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=PROBE_BUDGET_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"a small Triton-interpreter scan took > {PROBE_BUDGET_S:.0f} s here: too slow to run the suite")
    took = time.monotonic() - t0
    # A probe that runs but fails is a broken kernel (or an incompatible triton): fail, never skip.
    assert r.returncode == 0, f"interpreter probe failed:\n{r.stderr[-4000:]}"
    if took > PROBE_BUDGET_S:
        pytest.skip(f"a small Triton-interpreter scan took {took:.1f} s here (> {PROBE_BUDGET_S:.0f} s)")
    # this file's cases and those of the Triton conv and step (tests/test_triton_{conv,step}.py), same modes
    here = os.path.dirname(os.path.abspath(__file__))
    conv_tests, step_tests = os.path.join(here, "test_triton_conv.py"), os.path.join(here, "test_triton_step.py")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                        os.path.abspath(__file__), conv_tests, step_tests, "-k", "cpu"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    tail = r.stdout[-6000:] + r.stderr[-2000:]
    assert r.returncode == 0, f"interpreter cases failed:\n{tail}"
    summary = r.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, tail


def test_scan_layout_follows_scan_inputs(monkeypatch):
    """triton_scan.scan_inputs / scan_layout, the one switch both layers (Mamba1, SS2D) take their
    layout from: under "auto" contiguous for Mamba1 from CONTIGUOUS_FROM_T steps, views below it and
    for SS2D (untimed); forced either way; or an error naming the variable and its values."""
    from networks.ssm import triton_scan

    x = torch.arange(6.0).reshape(2, 3).t()                   # a transposed view
    n = triton_scan.CONTIGUOUS_FROM_T
    assert triton_scan.scan_layout(x)[0] is x
    assert (triton_scan.scan_inputs(n - 1), triton_scan.scan_inputs(n), triton_scan.scan_inputs()) == \
        ("views", "contiguous", "views")
    monkeypatch.setattr(triton_scan, "SCAN_INPUTS", "contiguous")
    (y,) = triton_scan.scan_layout(x)
    assert y.is_contiguous() and torch.equal(y, x) and triton_scan.scan_inputs(1) == "contiguous"
    monkeypatch.setattr(triton_scan, "SCAN_INPUTS", "views")
    assert triton_scan.scan_layout(x)[0] is x and triton_scan.scan_inputs(10 ** 6) == "views"
    monkeypatch.setattr(triton_scan, "SCAN_INPUTS", "time")
    msg = "SCAN_INPUTS must be 'auto', 'views' or 'contiguous', got 'time'"
    with pytest.raises(ValueError, match=msg):
        triton_scan.scan_layout(x)
    with pytest.raises(ValueError, match=msg):
        triton_scan.mamba1_forward(None, x, None, None, None)


@pytest.mark.parametrize("scan_inputs,from_t", [("views", 4096), ("contiguous", 4096), ("auto", 4096), ("auto", 17)])
def test_mamba1_forward_projections_on_the_cpu(scan_inputs, from_t, monkeypatch):
    """mamba1_forward's own arithmetic (the projections, in both SCAN_INPUTS layouts: "contiguous"
    computes them channel-first, as mamba-ssm's mamba_inner_fn) == the mixer's PyTorch forward, on
    machines without triton: its two kernels are replaced by the PyTorch conv and the reference
    loop with selective_scan_fn's conventions. The stand-in scan also checks the layout it is
    handed: unit stride along time for "contiguous" (and "auto" from CONTIGUOUS_FROM_T steps), the
    strided transposes for "views" (and "auto" below it)."""
    from networks.ssm import triton_conv, triton_scan
    from networks.ssm.causal_conv import causal_conv1d
    from networks.ssm.mamba1 import Mamba1Mixer

    def conv_silu(xi, weight, bias, conv_state, is_init):
        y, state = causal_conv1d(xi, weight, bias, conv_state, is_init)
        return F.silu(y), state

    strides = []

    def scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state, reset):
        strides.append([t.stride(-1) for t in (u, delta, B, C, z)])
        delta = F.softplus(delta + delta_bias[:, None]) if delta_softplus else delta + delta_bias[:, None]
        y, last = selective_scan_reference(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2),
                                           C.transpose(1, 2), D, initial_state, reset)
        return (y.transpose(1, 2) * F.silu(z)), last

    monkeypatch.setattr(triton_scan, "SCAN_INPUTS", scan_inputs)
    monkeypatch.setattr(triton_scan, "CONTIGUOUS_FROM_T", from_t)
    monkeypatch.setattr(triton_conv, "causal_conv1d_silu", conv_silu)
    monkeypatch.setattr(triton_scan, "selective_scan_fn", scan)
    torch.manual_seed(3)
    m = Mamba1Mixer(12, d_state=5, use_kernels=False).double()
    Bt, T = 3, 17
    x = torch.randn(Bt, T, 12, dtype=torch.float64)
    is_init = resets(Bt, T, "cpu")
    conv0 = torch.randn(Bt, m.d_inner, m.d_conv - 1, dtype=torch.float64)
    ssm0 = torch.randn(Bt, m.d_inner, m.d_state, dtype=torch.float64)
    ref, tri = mixer_and_mamba1_forward(m, x, is_init, conv0, ssm0, seed=4)
    for k in ref:  # float64 but for A, D and dt's bias, which mamba1_forward hands over as float32
        close(tri[k], ref[k], 1e-6, k)
    unit = [1] * 5
    assert (strides[0] == unit) == (scan_inputs == "contiguous" or from_t <= T), strides
