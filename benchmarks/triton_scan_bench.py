"""Mamba1 selective scan alone, forward+backward: our Triton scan vs our previous GPU path vs
mamba-ssm's bare ``selective_scan_fn`` (issue 19, item 1).

Rows, B=8, d_inner=512, d_state=16, fp32, T = 1024..16384, ~4 resets per row and a carried
initial state for ours (the bare kernel has neither: it is the speed to match):
  triton       networks.ssm.triton_scan.selective_scan_fn, "tile" kernels: resets, h0, final
               state (with its gradient), delta_bias + softplus + z fused;
  triton-loop  the same with the "loop" kernels (networks/ssm/triton_scan_loop.py: mamba-ssm's
               loop over the states, [BD, BT] tiles). The environment's tilings
               (MAMBAZOO_TRITON_SCAN[_BWD]) apply to the environment's kind
               (MAMBAZOO_TRITON_SCAN_KIND, triton_scan.DEFAULT_KIND if unset); the other kind runs its
               defaults;
  ssm+rewrite  our previous CUDA path: mamba-ssm's kernel behind kernels.scan_with_resets
               (extra state-load/reset steps, scatter/gather), softplus in torch;
  torch        our pure-PyTorch chunked scan (the path without mamba-ssm; T <= --torch-max-len);
  bare         mamba-ssm's selective_scan_fn, delta_bias/softplus/z fused, no resets, no h0.
Then tiling sweeps of the Triton scan at one T (BD channels per program, BT steps per chunk,
warps, stages), per kind (loop first, then tile: the budget cuts the tail): the forward alone,
then the backward alone (its own BD/warps/stages, the forward's BT), so the defaults in
networks/ssm/triton_scan.py (kind included) can be set from a measurement.

It starts with a correctness check of the Triton scan against the float64 PyTorch loop
(outputs, final state, every gradient; resets and h0) and exits 1 if it fails.
Timing: warm-up calls (Triton compiles on the first), then CUDA-event medians of --repeats
calls; peak is max_memory_allocated above the inputs during the timed calls.

    python benchmarks/triton_scan_bench.py                 # H100/H200: ~2 minutes (~90 tilings timed)
    python benchmarks/triton_scan_bench.py --layout channels --out benchmarks/results/triton_scan_channels.md
    TRITON_INTERPRET=1 python benchmarks/triton_scan_bench.py --smoke   # CPU: the script runs
Writes benchmarks/results/triton_scan.md (--out).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from networks.ssm import kernels
from networks.ssm import triton_scan  # noqa: E402
from networks.ssm.mamba1 import selective_scan_chunked, selective_scan_reference  # noqa: E402

from benchmarks.gpu_speed import time_calls  # noqa: E402  (one timing method for the GPU tables)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-inner", type=int, default=512)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--resets", type=int, default=4, help="resets per row (random steps)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--torch-max-len", type=int, default=4096)
    p.add_argument("--sweep-len", type=int, default=4096, help="T of the tiling sweep (0: no sweep)")
    p.add_argument("--budget-s", type=float, default=300.0, help="skip what is left after this long")
    p.add_argument("--best-env", default=None, metavar="FILE",
                   help="write the fastest kind and its forward/backward tilings as "
                        "MAMBAZOO_TRITON_SCAN_KIND / MAMBAZOO_TRITON_SCAN[_BWD]=... export lines")
    p.add_argument("--layout", choices=["time", "channels"], default="time",
                   help="time: u/delta/z/B/C contiguous along T (mamba-ssm's layout); channels: contiguous "
                        "along the channels, [Bt, T, C] transposed, as the Mamba1 mixer and SS2D pass them")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script (CPU interpreter)")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "triton_scan.md"))
    a = p.parse_args(argv)
    if a.smoke:
        a.lengths, a.batch, a.d_inner, a.d_state, a.repeats, a.sweep_len = [40, 64], 2, 8, 4, 2, 40
        a.out = os.path.join("/tmp", "triton_scan_smoke.md")
    return a


# (BD, BT, warps, stages): sm_90 registers fwd/bwd from cuobjdump, no spills unless noted:
# (4,32,4,*) 128-139/249-255; (2,32,4,*) 96/188-238; (8,32,8,1) 128/255; (4,64,8,1) 170/246;
# (4,64,4,1) 255/255 + 312 B stack (spills). The first H200 sweep (both directions on one tiling,
# benchmarks/results/triton_scan_gpu_h200.txt) spanned 8.3-15.5 ms at T=4096; the profile then
# put the backward at 7x the forward, so the sweeps below time each direction alone, and add
# one-warp programs (a warp's lanes along the chunk's steps, d_state in each thread's registers:
# the reductions over d_state need no shared memory). Registers per tiling, from ptxas for sm_90
# without a GPU: benchmarks/triton_scan_resources.py (benchmarks/results/triton_scan_resources.md).
FWD_SWEEP = [(bd, bt, w, 1) for bt in (16, 32, 64) for bd, w in ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4))] \
    + [(4, 32, 4, 2)]
BWD_SWEEP = [(bd, w, 1) for bd, w in ((1, 1), (1, 2), (1, 4), (1, 8), (2, 2), (2, 4), (2, 8), (4, 2), (4, 4), (8, 4), (8, 8))] \
    + [(4, 4, 2)]
# The loop kind's tiles are [BD, BT]: long chunks, few channels. ptxas for sm_90 at d_state=16
# (benchmarks/results/triton_scan_resources.md): BD=1 with BT/threads = 1..4 steps a thread stays
# at 48-157 registers without spills (1024 steps on 4 warps: 203 fwd, 255 + spills bwd), BD=2
# ~1.5-2x that but half the dB/dC atomics (one add per program and element, as mamba-ssm's one per
# channel). 15 forward tilings, 3 backward ones per BT (12): ~1 minute on an H200.
LOOP_FWD_SWEEP = [(bd, bt, w, 1) for bt, bws in ((128, ((1, 1), (1, 2), (1, 4), (2, 4))),
                                                 (256, ((1, 2), (1, 4), (1, 8), (2, 4))),
                                                 (512, ((1, 4), (1, 8), (2, 8))),
                                                 (1024, ((1, 4), (1, 8), (2, 8))))
                  for bd, w in bws] + [(1, 256, 4, 2)]
LOOP_BWD_SWEEP = [(1, 4, 1), (1, 8, 1), (2, 4, 1)]
SWEEPS = {"loop": (LOOP_FWD_SWEEP, LOOP_BWD_SWEEP), "tile": (FWD_SWEEP, BWD_SWEEP)}
# --layout channels: a [BD, BT] tile reads BD adjacent channels per step, so coalescing needs BD
# wide (32 fp32 = one 128-byte line); Triton orders a tile's lanes along the unit-stride axis.
# 18 forward, 6 backward tilings (the tile kind keeps its sweep).
LOOP_FWD_SWEEP_CHANNELS = [(bd, bt, w, 1) for bd in (8, 16, 32) for bt in (64, 256) for w in (2, 4, 8)]
LOOP_BWD_SWEEP_CHANNELS = [(bd, w, 1) for bd in (8, 16, 32) for w in (4, 8)]
SWEEPS_BY_LAYOUT = {"time": SWEEPS, "channels": {"loop": (LOOP_FWD_SWEEP_CHANNELS, LOOP_BWD_SWEEP_CHANNELS),
                                                 "tile": (FWD_SWEEP, BWD_SWEEP)}}
DEFAULTS = triton_scan.DEFAULT_TILINGS
ROW_NAME = {"tile": "triton", "loop": "triton-loop"}


def make_inputs(Bt, Di, N, T, n_resets, device, gen, dtype=torch.float32, layout="time"):
    r = lambda *s: torch.randn(*s, device=device, generator=gen, dtype=dtype)  # noqa: E731
    # [Bt, C, T] contiguous along T, or (channels) a [Bt, T, C] tensor seen as [Bt, C, T]
    seq = (lambda C: r(Bt, C, T)) if layout == "time" else (lambda C: r(Bt, T, C).transpose(1, 2))  # noqa: E731
    x = dict(u=seq(Di), delta=seq(Di) * 0.5 - 1.0, A=-torch.exp(r(Di, N) * 0.5 + 1.0),
             B=seq(N), C=seq(N), D=r(Di), z=seq(Di), delta_bias=r(Di) * 0.5,
             h0=r(Bt, Di, N))
    reset = torch.zeros(Bt, T, dtype=torch.bool, device=device)
    for b in range(Bt):  # ~n_resets per row at random steps (t=0 possible: an episode start)
        reset[b, torch.randint(0, T, (n_resets,), device=device, generator=gen)] = True
    return x, reset


# ------------------------------------------------------------------------ the candidates
def leaves(x, keys):
    return {k: x[k].detach().clone().requires_grad_() for k in keys}


def use_kind(kind):
    """A table row's kind: the environment's tilings if it is the environment's kind (as the
    training runs would), else that kind's defaults."""
    if kind == triton_scan._kind():
        triton_scan.set_config(None, None, kind=kind)
    else:
        triton_scan.set_config(*DEFAULTS[kind], kind=kind)


def run_triton(x, reset, kind=None):
    """The Triton scan, of ``kind`` (None: as set_config left it)."""
    if kind is not None:
        use_kind(kind)
    y, h = triton_scan.selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                         x["delta_bias"], True, True, initial_state=x["h0"], reset=reset)
    return y, h


def run_rewrite(x, reset, scan_fn):
    """kernels.mamba1_forward's scan: softplus in torch, mamba-ssm kernel behind the rewrite."""
    delta = F.softplus(x["delta"] + x["delta_bias"][:, None])
    return kernels.scan_with_resets(scan_fn, x["u"], delta, x["A"], x["B"], x["C"], x["D"], x["z"],
                                    x["h0"], reset)


def run_torch(x, reset):
    """The pure-PyTorch chunked scan (time-major inside; this layout is what it is given)."""
    delta = F.softplus(x["delta"] + x["delta_bias"][:, None])
    tr = lambda t: t.transpose(1, 2)  # noqa: E731
    y, h = selective_scan_chunked(tr(x["u"]), tr(delta), x["A"], tr(x["B"]), tr(x["C"]), x["D"], x["h0"], reset)
    return tr(y) * F.silu(x["z"]), h


def run_bare(x, scan_fn):
    return scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                   delta_softplus=True), None


def fwd_bwd(run, x, keys, gen):
    """A closure doing forward + backward with fixed random output gradients."""
    inp = leaves(x, keys)
    y, h = run(inp)
    gy = torch.randn(y.shape, device=y.device, generator=gen)
    # mamba-ssm's final state carries no gradient (the rewrite returns it as is): only ours get one.
    with_h = h is not None and h.requires_grad
    gh = torch.randn(h.shape, device=y.device, generator=gen) if with_h else None

    def step():
        for t in inp.values():
            t.grad = None
        y, h = run(inp)
        outs, grads = ([y, h], [gy, gh]) if with_h else ([y], [gy])
        torch.autograd.backward(outs, grads)
    return step


# ------------------------------------------------------------------------ correctness
def check(device, gen, kind):
    """Triton (``kind``) vs the float64 PyTorch loop: outputs, final state, all gradients."""
    Bt, Di, N, T = (2, 16, 8, 300) if device.type == "cuda" else (2, 4, 3, 40)
    x, reset = make_inputs(Bt, Di, N, T, 4, device, gen)
    reset[0, 0] = reset[1, T - 1] = True
    keys = list(x)
    xt = leaves(x, keys)
    y, h = run_triton(xt, reset, kind)
    xr = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    delta = F.softplus(xr["delta"] + xr["delta_bias"][:, None])
    tr = lambda t: t.transpose(1, 2)  # noqa: E731
    yr, hr = selective_scan_reference(tr(xr["u"]), tr(delta), xr["A"], tr(xr["B"]), tr(xr["C"]), xr["D"],
                                      xr["h0"], reset)
    yr = tr(yr) * F.silu(xr["z"])
    gy, gh = torch.randn_like(yr), torch.randn_like(hr)
    torch.autograd.backward([yr, hr], [gy, gh])
    torch.autograd.backward([y, h], [gy.float(), gh.float()])
    errs, ok = {}, True
    for name, a, b, tol in [("out", y, yr, 1e-5), ("last", h, hr, 1e-5)] + \
            [("d" + k, xt[k].grad, xr[k].grad, 5e-5) for k in keys]:
        scale = b.abs().max().clamp(min=1.0).item()
        errs[name] = (a.double() - b).abs().max().item() / scale
        ok &= errs[name] <= tol
    return ok, errs


# ------------------------------------------------------------------------ main
def versions(device):
    v = {"torch": torch.__version__}
    try:
        import triton
        v["triton"] = triton.__version__
    except Exception as exc:
        v["triton"] = f"not importable ({type(exc).__name__})"
    try:
        import mamba_ssm
        v["mamba-ssm"] = mamba_ssm.__version__
    except Exception as exc:
        v["mamba-ssm"] = f"not importable ({type(exc).__name__})"
    v["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (Triton interpreter)"
    return v


def main(argv=None):
    args = parse_args(argv)
    t_start = time.monotonic()
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    if not torch.cuda.is_available() and not interp:
        sys.exit("needs a CUDA device (or TRITON_INTERPRET=1 with --smoke to check the script on CPU)")
    device = torch.device("cpu" if interp else "cuda")
    if not triton_scan.available():
        sys.exit("triton does not import")
    gen = torch.Generator(device=device).manual_seed(0)
    v = versions(device)
    print(" | ".join(f"{k} {val}" for k, val in v.items()))
    errs = {}
    for kind in triton_scan.KINDS:
        ok, errs[kind] = check(device, gen, kind)
        print(f"correctness of {kind} (max |err| / max |ref|, vs float64 loop):",
              " ".join(f"{k} {e:.1e}" for k, e in errs[kind].items()), "OK" if ok else "FAILED")
        if not ok:
            sys.exit(1)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as ssm_scan
    except Exception:
        ssm_scan = None
    Bt, Di, N = args.batch, args.d_inner, args.d_state
    all_keys = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"]
    cands = {ROW_NAME[k]: (lambda x, r, k=k: run_triton(x, r, k), all_keys) for k in ("tile", "loop")}
    if ssm_scan is not None:
        cands["ssm+rewrite"] = (lambda x, r: run_rewrite(x, r, ssm_scan), all_keys)
    cands["torch"] = (run_torch, all_keys)
    if ssm_scan is not None:
        cands["bare"] = (lambda x, r: run_bare(x, ssm_scan), all_keys[:-1])
    rows, skipped = [], []
    for T in args.lengths:
        x, reset = make_inputs(Bt, Di, N, T, args.resets, device, gen, layout=args.layout)
        row = {"T": T}
        for name, (run, keys) in cands.items():
            if name == "torch" and T > args.torch_max_len:
                continue
            if time.monotonic() - t_start > args.budget_s:
                skipped.append(f"{name}@{T}")
                continue
            step = fwd_bwd(lambda inp: run(inp, reset), x, keys, gen)
            reps = args.repeats if name != "torch" else max(2, args.repeats // 3)
            row[name], row[name + "_mb"] = time_calls(step, reps, device)
            del step
        rows.append(row)
        print(fmt_row(row, cands))
        del x, reset
        if device.type == "cuda":
            torch.cuda.empty_cache()
    sweep = {kind: {"fwd": [], "bwd": []} for kind in SWEEPS}
    if args.sweep_len:
        x, reset = make_inputs(Bt, Di, N, args.sweep_len, args.resets, device, gen, layout=args.layout)
        inp = leaves(x, all_keys)                                # requires grad: the forward saves
        # --smoke: the first few tilings of each sweep (the interpreter takes seconds a call)
        by_kind = SWEEPS_BY_LAYOUT[args.layout]
        sweeps = {k: (f[:3], b[:2]) for k, (f, b) in by_kind.items()} if args.smoke else by_kind
        for kind, (fwd_sweep, bwd_sweep) in sweeps.items():
            sweep_kind(args, kind, fwd_sweep, bwd_sweep, inp, reset, device, sweep[kind], skipped, t_start)
        triton_scan.set_config(None)
    write_md(args, v, errs, rows, cands, sweep, skipped, time.monotonic() - t_start)
    print(f"wrote {args.out} ({time.monotonic() - t_start:.0f} s)")


def sweep_kind(args, kind, fwd_sweep, bwd_sweep, inp, reset, device, out, skipped, t_start):
    """One kind's sweeps into out["fwd"] / out["bwd"]: (cfg (BD, BT, warps, stages), ms, MB)."""
    for cfg in fwd_sweep:                                        # forward alone, as in training
        if time.monotonic() - t_start > args.budget_s:
            skipped.append(f"{kind} fwd {cfg}")
            continue
        triton_scan.set_config(cfg, None, kind=kind)
        ms, mb = time_calls(lambda: run_triton(inp, reset), args.repeats, device)
        out["fwd"].append((cfg, ms, mb))
        print(f"{kind} forward  BD={cfg[0]} BT={cfg[1]} warps={cfg[2]} stages={cfg[3]}: {ms:.3f} ms", flush=True)
    for bt in sorted({c[1] for c, _, _ in out["fwd"]}):          # backward alone, after the best forward of each BT
        fcfg = min((r for r in out["fwd"] if r[0][1] == bt), key=lambda r: r[1])[0]
        triton_scan.set_config(fcfg, None, kind=kind)
        y, h = run_triton(inp, reset)
        gy, gh = torch.randn_like(y), torch.randn_like(h)
        for bcfg in bwd_sweep:
            if time.monotonic() - t_start > args.budget_s:
                skipped.append(f"{kind} bwd BT={bt} {bcfg}")
                continue
            triton_scan.set_config(fcfg, bcfg, kind=kind)
            ms, mb = time_calls(lambda: torch.autograd.backward([y, h], [gy, gh], retain_graph=True),
                                args.repeats, device)
            out["bwd"].append(((bcfg[0], bt, bcfg[1], bcfg[2]), ms, mb))
            print(f"{kind} backward BD={bcfg[0]} BT={bt} warps={bcfg[1]} stages={bcfg[2]}: {ms:.3f} ms", flush=True)
        del y, h


def fmt_row(row, cands):
    parts = [f"T={row['T']:>6}"]
    for name in cands:
        if name in row:
            parts.append(f"{name} {row[name]:8.3f} ms {row[name + '_mb']:7.0f} MB")
    if "bare" in row:
        parts += [f"{n}/bare {row[n] / row['bare']:.2f}x" for n in ROW_NAME.values() if n in row]
    return " | ".join(parts)


def best_pair(sw):
    """The fastest forward + backward of one kind: ((total ms, fwd cfg, bwd (BD, BT, warps,
    stages)) or None when no backward was timed, {BT: the same per BT})."""
    best = {}
    for bt in sorted({c[1] for c, _, _ in sw["bwd"]}):
        f = min((r for r in sw["fwd"] if r[0][1] == bt), key=lambda r: r[1])
        b = min((r for r in sw["bwd"] if r[0][1] == bt), key=lambda r: r[1])
        best[bt] = (f[1] + b[1], f[0], b[0])
    return (min(best.values()), best) if best else (None, best)


def write_md(args, v, errs, rows, cands, sweep, skipped, took):
    names = list(cands)
    tri = [n for n in ROW_NAME.values() if n in names]
    env = [f"{k}={os.environ[k]}" for k in ("MAMBAZOO_TRITON_SCAN_KIND", "MAMBAZOO_TRITON_SCAN",
                                            "MAMBAZOO_TRITON_SCAN_BWD") if os.environ.get(k)]
    lines = ["# Mamba1 selective scan, forward+backward (benchmarks/triton_scan_bench.py)", "",
             f"B={args.batch}, d_inner={args.d_inner}, d_state={args.d_state}, fp32, inputs contiguous along "
             f"{'T' if args.layout == 'time' else 'the channels (the mixers layout)'}, ~{args.resets} resets "
             "per row + carried state for ours; median of "
             f"{args.repeats} calls after warm-up (CUDA events); peak = max_memory_allocated above the inputs.",
             "", "Command: `python benchmarks/triton_scan_bench.py " + " ".join(sys.argv[1:]) + f"` ({took:.0f} s)",
             "", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             "Triton tilings, forward (BD, BT, warps, stages) / backward (BD, warps, stages): "
             + "; ".join(f"{ROW_NAME[k]} default {f} / {b}" for k, (f, b) in DEFAULTS.items())
             + (", environment " + " ".join(env) + f" (applies to {triton_scan._kind()})" if env else "") + ".", "",
             "Correctness vs the float64 PyTorch loop (max |err| / max |ref|): "
             + "; ".join(f"{k}: " + ", ".join(f"{n} {e:.1e}" for n, e in es.items()) for k, es in errs.items()), "",
             "| T | " + " | ".join(f"{n} ms" for n in names) + " | " + " | ".join(f"{n} MB" for n in names)
             + ("".join(f" | {n} / bare" for n in tri) + " | triton / ssm+rewrite |" if "bare" in names else " |"),
             "|" + "---|" * (1 + 2 * len(names) + (len(tri) + 1 if "bare" in names else 0))]
    for r in rows:
        ms = lambda n: f"{r[n]:.3f}" if n in r else "-"  # noqa: E731
        mb = lambda n: f"{r[n + '_mb']:.0f}" if n in r else "-"  # noqa: E731
        line = f"| {r['T']} | " + " | ".join(map(ms, names)) + " | " + " | ".join(map(mb, names))
        if "bare" in names:
            ratio = lambda a, n: f"{r[a] / r[n]:.2f}x" if n in r and a in r else "-"  # noqa: E731
            line += "".join(f" | {ratio(n, 'bare')}" for n in tri) + f" | {ratio('triton', 'ssm+rewrite')}"
        lines.append(line + " |")
    overall = None
    for kind, sw in sweep.items():
        if not sw["fwd"]:
            continue
        for d, rs in sw.items():
            lines += ["", f"Triton {kind} {'forward' if d == 'fwd' else 'backward'} alone at T={args.sweep_len}, by tiling"
                      + (" (after the fastest forward of the same BT)" if d == "bwd" else "") + ":", "",
                      "| BD | BT | warps | stages | ms |", "|---|---|---|---|---|"]
            lines += [f"| {c[0]} | {c[1]} | {c[2]} | {c[3]} | {ms:.3f} |" for c, ms, _ in sorted(rs, key=lambda r: r[1])]
        top, best = best_pair(sw)
        if top is None:
            continue
        total, f, b = top
        lines += ["", f"{kind}: fastest pair per BT (forward + backward ms): "
                  + ", ".join(f"BT={bt}: {v[0]:.3f}" for bt, v in best.items()),
                  f"{kind}: fastest forward {f}, backward {(b[0], b[2], b[3])} ({total:.3f} ms)."]
        if overall is None or total < overall[0]:
            overall = (total, kind, f, b)
    if overall is not None:
        total, kind, f, b = overall
        exports = (f"MAMBAZOO_TRITON_SCAN_KIND={kind} MAMBAZOO_TRITON_SCAN={','.join(map(str, f))} "
                   f"MAMBAZOO_TRITON_SCAN_BWD={b[0]},{b[2]},{b[3]}")
        if args.best_env:
            with open(args.best_env, "w") as fh:
                fh.write("".join(f"export {e}\n" for e in exports.split()))
        lines += ["", f"Fastest overall: {kind}, forward {f}, backward {(b[0], b[2], b[3])} ({total:.3f} ms); set "
                  f"them with {exports} or DEFAULT_KIND and the kind's default tilings in networks/ssm/triton_scan.py."]
    if skipped:
        lines += ["", f"Skipped (time budget {args.budget_s:.0f} s): " + ", ".join(skipped)]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
