"""GPU speed, measured side by side in one process: memory kinds for training and acting.

Training: forward+backward of one layer at B=8, d_model=256 vs sequence length, for
  - mamba-ssm's own layers (``Mamba``, ``Mamba2``): the raw upstream baseline;
  - our memory modules (``make_memory``) on the kernel path, with episode resets inside
    rows and a carried-in state, and on the pure-PyTorch path;
  - cuDNN GRU and LSTM of equal width, an SDPA causal transformer layer, and RMT when
    ``make_memory`` offers it; fp32, plus bf16 autocast for the attention/Mamba rows.
Acting: one policy step (the memory at batch 1 and 256): eager vs CUDA-graphed
(``networks.cuda_graph.CudaGraphStep``), beside cuDNN GRU and mamba-ssm's ``step``.

    python benchmarks/gpu_speed.py                       # the full table (~5 min on an H100)
    python benchmarks/gpu_speed.py --section acting      # only acting latency
    python benchmarks/gpu_speed.py --device cpu --quick  # smoke run anywhere

Each point: warm-up calls, then CUDA-event timing of ``--repeats`` calls, median ms; peak
memory is ``max_memory_allocated`` during the timed calls. Outputs (``--out``):
gpu_speed.csv, gpu_speed.md (tables + ratios for the issue's targets), gpu_speed_train.png,
gpu_speed_acting.png; ``--profile`` adds a kernel-time table for ours vs raw at T=1024.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from networks import MEMORY_KINDS, make_memory  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--torch-max-len", type=int, default=4096,
                   help="skip the pure-PyTorch Mamba rows above this T (a Python loop per chunk)")
    p.add_argument("--acting-batches", type=int, nargs="+", default=[1, 256])
    p.add_argument("--acting-steps", type=int, default=300)
    p.add_argument("--section", choices=["all", "train", "acting"], default="all")
    p.add_argument("--rows", default=None, metavar="REGEX",
                   help="train rows whose name matches REGEX only (a spot check; the targets table needs all)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="T=64,256; 3 repeats; 30 acting steps")
    p.add_argument("--profile", action="store_true", help="kernel-time tables, ours vs raw, T=1024")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--from-csv", nargs="+", default=None, metavar="CSV",
                   help="measure nothing: rebuild the report from earlier runs' gpu_speed.csv files "
                        "(e.g. a training run and an acting run on separate machines)")
    p.add_argument("--info", nargs="*", default=[], metavar="KEY=VALUE",
                   help="lines for the report's header (the host, which run is which; with --from-csv the versions too)")
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats, args.acting_steps = [64, 256], 3, 30
    return args


# ----------------------------------------------------------------------------- models
class SDPALayer(nn.Module):
    """Pre-norm causal transformer layer (attention + 4x MLP) on PyTorch's SDPA."""

    def __init__(self, d, heads=4):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):  # [B, T, d]
        B, T, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.n2(x))


def mamba_ssm_layer(kind, d):
    if kind == "mamba1":
        from mamba_ssm import Mamba
        return Mamba(d_model=d, d_state=16, d_conv=4, expand=2)
    from mamba_ssm import Mamba2
    return Mamba2(d_model=d, d_state=64, d_conv=4, expand=2, headdim=32, chunk_size=64)


def episode_inputs(mem, B, T, d, device, gen):
    """A sequence-mode TensorDict with resets inside rows (~4 episodes per row) and a carried state."""
    from tensordict import TensorDict

    is_init = torch.rand(B, T, 1, generator=gen, device=device) < 4.0 / T
    td = TensorDict({"embed": torch.randn(B, T, d, device=device, generator=gen),
                     "is_init": is_init}, [B, T], device=device)
    for key, spec in mem.make_tensordict_primer().primers.items():
        td.set(key, 0.1 * torch.randn(B, T, *spec.shape, device=device, generator=gen))
    return td


def triton_scan_module():
    """networks.ssm.triton_scan, imported only when a row runs (it needs no triton to import)."""
    from networks.ssm import triton_scan
    return triton_scan


def train_candidates(args, device):
    """name -> (build() -> step callable running fwd+bwd, dtype label, family)."""
    d = args.d_model
    C = {}

    def plain(make, bf16=False):
        def build(B, T, gen):
            model = make().to(device)
            x = torch.randn(B, T, d, device=device, generator=gen, requires_grad=True)

            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    y = model(x)
                    y = y[0] if isinstance(y, tuple) else y
                y.float().square().mean().backward()
            return step
        return build

    def ours(kind, use_kernels, bf16=False, scan=None, scan_inputs=None, **opts):
        """``scan`` forces the Mamba1 scan path (MAMBAZOO_MAMBA1_SCAN) while the row runs;
        ``scan_inputs`` the layout the Triton Mamba1 path hands its scan (triton_scan.SCAN_INPUTS;
        None: the default)."""
        def build(B, T, gen):
            from torchrl.modules import set_recurrent_mode
            kw = dict(opts, use_kernels=use_kernels) if kind in ("mamba1", "mamba2") else opts
            mem = make_memory(kind, d, d, num_layers=1, **kw).to(device)
            td = episode_inputs(mem, B, T, d, device, gen)
            x = td["embed"].requires_grad_()

            def step():
                # patch.dict puts the environment back as it was (the variable unset or its value)
                forced = (mock.patch.object(triton_scan_module(), "SCAN_INPUTS", scan_inputs) if scan_inputs
                          else contextlib.nullcontext())       # the default rows run as they are
                with mock.patch.dict(os.environ, {"MAMBAZOO_MAMBA1_SCAN": scan} if scan else {}), forced:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), set_recurrent_mode(True):
                        y = mem(td.copy())["memory"]
                    y.float().square().mean().backward()
                x.grad = None
            return step
        return build

    C["gru cuDNN"] = (plain(lambda: nn.GRU(d, d, batch_first=True)), "fp32", "rnn")
    C["lstm cuDNN"] = (plain(lambda: nn.LSTM(d, d, batch_first=True)), "fp32", "rnn")
    C["sdpa layer"] = (plain(lambda: SDPALayer(d)), "fp32", "attention")
    C["sdpa layer bf16"] = (plain(lambda: SDPALayer(d), bf16=True), "bf16", "attention")
    if device.type == "cuda":
        for kind in ("mamba1", "mamba2"):
            C[f"{kind} mamba-ssm"] = (plain(lambda k=kind: mamba_ssm_layer(k, d)), "fp32", "raw")
        for kind in ("mamba1", "mamba2"):
            C[f"{kind} mamba-ssm bf16"] = (plain(lambda k=kind: mamba_ssm_layer(k, d), bf16=True), "bf16", "raw")
        for kind in ("mamba1", "mamba2"):
            C[f"{kind} ours kernels"] = (ours(kind, True), "fp32", "ours")
            C[f"{kind} ours kernels bf16"] = (ours(kind, True, bf16=True), "bf16", "ours")
        # the default path's two layouts forced at every T (triton_scan.SCAN_INPUTS; "auto", the default,
        # switches from views to time-contiguous at CONTIGUOUS_FROM_T steps), timed beside it in one run
        for layout, name in (("contiguous", "time-contiguous"), ("views", "strided views")):
            C[f"mamba1 ours kernels, {name}"] = (ours("mamba1", True, scan_inputs=layout), "fp32", "ours")
            C[f"mamba1 ours kernels bf16, {name}"] = (ours("mamba1", True, bf16=True, scan_inputs=layout), "bf16", "ours")
        # "ours kernels" is the default path (Triton scan + conv when triton imports); this row
        # is ours on mamba-ssm's scan (with scan_with_resets), where mamba-ssm is installed
        from networks.ssm import kernels
        if kernels.available():
            C["mamba1 ours on mamba-ssm scan"] = (ours("mamba1", True, scan="mamba_ssm"), "fp32", "ours")
    for kind in ("mamba1", "mamba2"):
        C[f"{kind} ours pytorch"] = (ours(kind, False), "fp32", "ours-torch")
    if "rmt" in MEMORY_KINDS:
        C["rmt"] = (ours("rmt", None), "fp32", "attention")
    return C


# ----------------------------------------------------------------------------- timing
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, repeats, device, warmup=3):
    """Median ms of ``repeats`` calls (CUDA events on GPU), and peak MB during them."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else math.nan
    return statistics.median(times), peak


def run_train(args, device, rows):
    gen = torch.Generator(device=device).manual_seed(0)
    for name, (build, dtype, family) in train_candidates(args, device).items():
        if args.rows and not re.search(args.rows, name):
            continue
        for T in args.lengths:
            if family == "ours-torch" and T > args.torch_max_len:
                continue
            try:
                torch.manual_seed(0)
                ms, peak = time_calls(build(args.batch, T, gen), args.repeats, device)
                note = ""
            except Exception as exc:  # OOM, a kernel missing: recorded, the sweep goes on
                ms, peak, note = math.nan, math.nan, f"{type(exc).__name__}: {str(exc)[:120]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(dict(section="train", name=name, dtype=dtype, T=T, batch=args.batch,
                             ms=ms, peak_mb=peak, note=note))
            print(f"train {name:>26} T={T:<6} {ms:9.3f} ms  peak {peak:8.1f} MB {note}", flush=True)


def acting_candidates(args, device, B, layers):
    """name -> callable doing one policy step (memory only), returning something to sync on."""
    from tensordict import TensorDict

    d = args.d_model
    C = {}
    gru = nn.GRU(d, d, num_layers=layers).to(device)
    x1, h = torch.randn(1, B, d, device=device), torch.zeros(layers, B, d, device=device)
    C["gru cuDNN eager"] = lambda: gru(x1, h)[0]
    for kind in ("mamba1", "mamba2"):
        for path in ("kernels", "pytorch") if device.type == "cuda" else ("pytorch",):
            mem = make_memory(kind, d, d, num_layers=layers, use_kernels=path == "kernels").to(device)
            td = TensorDict({"embed": torch.randn(B, d, device=device),
                             "is_init": torch.zeros(B, 1, dtype=torch.bool, device=device)}, [B], device=device)
            for key, spec in mem.make_tensordict_primer().primers.items():
                td.set(key, torch.zeros(B, *spec.shape, device=device))
            C[f"{kind} ours {path} eager"] = lambda m=mem, t=td: m(t.copy())["memory"]
            if device.type == "cuda":
                from networks.cuda_graph import CudaGraphStep
                from networks.ssm import kernels
                try:
                    g = CudaGraphStep(mem, td, feed_keys=["embed", "is_init"])
                    C[f"{kind} ours {path} graphed"] = lambda g=g, t=td: g(t)["memory"]
                except Exception as exc:
                    print(f"{kind} {path}: capture failed: {type(exc).__name__}: {exc}")
                if path == "kernels" and kernels.available():
                    # "kernels" is the default step (networks/ssm/triton_step.py where triton imports,
                    # since 2026-12-04); this row is the step on mamba-ssm's selective_state_update (the
                    # default before), where it is built. The capture bakes in the path its step took,
                    # so the variable is set around the capture only.
                    try:
                        with mock.patch.dict(os.environ, {"MAMBAZOO_MAMBA_STEP": "mamba_ssm"}):
                            g3 = CudaGraphStep(mem, td, feed_keys=["embed", "is_init"])
                        C[f"{kind} ours mamba-ssm update graphed"] = lambda g=g3, t=td: g(t)["memory"]
                    except Exception as exc:
                        print(f"{kind} mamba-ssm update: capture failed: {type(exc).__name__}: {exc}")
                if path == "kernels" and layers == 1:
                    try:
                        from tensordict.nn import CudaGraphModule
                        cgm = CudaGraphModule(copy.deepcopy(mem), warmup=3)
                        C[f"{kind} ours kernels tensordict.CudaGraphModule"] = lambda c=cgm, t=td: c(t.copy())["memory"]
                    except Exception as exc:
                        print(f"CudaGraphModule unavailable: {exc}")
    if device.type == "cuda" and layers == 1:
        for kind in ("mamba1", "mamba2"):
            raw = mamba_ssm_layer(kind, d).to(device)
            conv, ssm = raw.allocate_inference_cache(B, 1)
            xs = torch.randn(B, 1, d, device=device)
            C[f"{kind} mamba-ssm step eager"] = lambda r=raw, c=conv, s=ssm, x=xs: r.step(x, c, s)[0]
    return C


def run_acting(args, device, rows):
    torch.manual_seed(0)
    for layers in (1, 4):
        for B in args.acting_batches:
            with torch.no_grad():
                try:
                    cands = acting_candidates(args, device, B, layers)
                except Exception as exc:
                    print(f"acting B={B} layers={layers}: {type(exc).__name__}: {exc}")
                    continue
                for name, fn in cands.items():
                    times = []
                    try:
                        for i in range(args.acting_steps + 10):
                            t0 = time.perf_counter()
                            fn()
                            sync(device)  # an actor needs the action now: latency includes the sync
                            if i >= 10:
                                times.append((time.perf_counter() - t0) * 1e3)
                        ms, note = statistics.median(times), ""
                    except Exception as exc:
                        ms, note = math.nan, f"{type(exc).__name__}: {str(exc)[:120]}"
                    rows.append(dict(section="acting", name=name, dtype="fp32", T=1, batch=B,
                                     layers=layers, ms=ms, peak_mb=math.nan, note=note))
                    print(f"act  {name:>44} B={B:<4} L={layers} {ms:8.4f} ms/step {note}", flush=True)


# ----------------------------------------------------------------------------- report
def versions(device):
    v = {"torch": torch.__version__, "cuda": torch.version.cuda or "-"}
    for pkg in ("mamba_ssm", "causal_conv1d", "triton", "torchrl", "tensordict"):
        try:
            v[pkg] = __import__(pkg).__version__
        except Exception as exc:
            v[pkg] = f"absent ({type(exc).__name__})"
    if device.type == "cuda":
        v["gpu"] = torch.cuda.get_device_name()
        try:
            v["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            v["driver"] = "unknown"
    return v


def lookup(rows, section, name, field="ms", **where):
    for r in rows:
        if r["section"] == section and r["name"] == name and all(r.get(k) == v for k, v in where.items()):
            return r[field]
    return math.nan


def targets(rows, lengths):
    """The issue's target ratios, from this run's rows (NaN where a row is missing)."""
    t = lambda name, T: lookup(rows, "train", name, T=T)  # noqa: E731
    a = lambda name, B=1, L=1: lookup(rows, "acting", name, batch=B, layers=L)  # noqa: E731
    out = [("ours mamba1 (resets+state) / mamba-ssm Mamba, T=1024 (target <= 1.1)",
            t("mamba1 ours kernels", 1024) / t("mamba1 mamba-ssm", 1024)),
           ("ours mamba2 (resets+state) / mamba-ssm Mamba2, T=1024 (target <= 1.1)",
            t("mamba2 ours kernels", 1024) / t("mamba2 mamba-ssm", 1024)),
           ("cuDNN GRU / ours mamba1, T=1024 (target >= 15)",
            t("gru cuDNN", 1024) / t("mamba1 ours kernels", 1024))]
    mem = lambda name, T: lookup(rows, "train", name, field="peak_mb", T=T)  # noqa: E731
    for T in (T for T in lengths if T >= 1024):   # the range: T=1024..16384, time and peak memory
        for ours_name, raw_name in (("mamba1 ours kernels", "mamba1 mamba-ssm"), ("mamba2 ours kernels", "mamba2 mamba-ssm"),
                                    ("mamba1 ours kernels bf16", "mamba1 mamba-ssm bf16"),
                                    ("mamba2 ours kernels bf16", "mamba2 mamba-ssm bf16")):
            out.append((f"{ours_name} / {raw_name} time, T={T} (target <= 1.1)", t(ours_name, T) / t(raw_name, T)))
            out.append((f"{ours_name} / {raw_name} peak memory, T={T} (target <= 1.3)",
                        mem(ours_name, T) / mem(raw_name, T)))
    for T in lengths:
        out.append((f"sdpa fp32 / ours mamba1 fp32, T={T} (target > 1 from T>=1024)",
                    t("sdpa layer", T) / t("mamba1 ours kernels", T)))
        out.append((f"sdpa bf16 / ours mamba1 bf16, T={T} (target > 1 from T>=4096)",
                    t("sdpa layer bf16", T) / t("mamba1 ours kernels bf16", T)))
        out.append((f"ours mamba1 / ours mamba2, T={T} (target >= 1 from T>=1024)",
                    t("mamba1 ours kernels", T) / t("mamba2 ours kernels", T)))
    for kind in ("mamba1", "mamba2"):
        per_layer = a(f"{kind} ours kernels graphed", 1, 4) / 4
        out += [(f"{kind} graphed step per layer at B=1 (4 layers / 4), ms (target <= 0.05)", per_layer),
                (f"cuDNN GRU eager / {kind} graphed, B=1, 1 layer (target >= 3)",
                 a("gru cuDNN eager") / a(f"{kind} ours kernels graphed")),
                (f"mamba-ssm {kind} eager step / ours graphed, B=1 (target >= 10)",
                 a(f"{kind} mamba-ssm step eager") / a(f"{kind} ours kernels graphed"))]
    for kind in ("mamba1", "mamba2"):   # the step on mamba-ssm's update (MAMBAZOO_MAMBA_STEP=mamba_ssm)
        out.append((f"{kind} graphed step / the same on mamba-ssm's update, B=1, 1 layer (< 1: the default is faster)",
                    a(f"{kind} ours kernels graphed") / a(f"{kind} ours mamba-ssm update graphed")))
    return out


def write_report(args, rows, info, elapsed):
    os.makedirs(args.out, exist_ok=True)
    keys = ["section", "name", "dtype", "T", "batch", "layers", "ms", "peak_mb", "note"]
    with open(os.path.join(args.out, "gpu_speed.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4f}" if isinstance(r.get(k), float) else r.get(k, "")) for k in keys})
    fmt = lambda v, s=".2f": "-" if v != v else format(v, s)  # noqa: E731
    train_names = list(dict.fromkeys(r["name"] for r in rows if r["section"] == "train"))
    lines = ["| model | dtype | " + " | ".join(f"T={T}" for T in args.lengths) + " | peak MB at max T |",
             "|---|---|" + "---:|" * (len(args.lengths) + 1)]
    for n in train_names:
        rs = [r for r in rows if r["section"] == "train" and r["name"] == n]
        peaks = [r["peak_mb"] for r in rs if r["ms"] == r["ms"]]
        lines.append(f"| {n} | {rs[0]['dtype']} | " + " | ".join(fmt(lookup(rows, 'train', n, T=T)) for T in args.lengths)
                     + f" | {fmt(peaks[-1] if peaks else math.nan, '.0f')} |")
    act_names = list(dict.fromkeys(r["name"] for r in rows if r["section"] == "acting"))
    cols = [(B, L) for L in (1, 4) for B in args.acting_batches]
    alines = ["| step | " + " | ".join(f"B={B}, {L} layer{'s' * (L > 1)}" for B, L in cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for n in act_names:
        alines.append(f"| {n} | " + " | ".join(fmt(lookup(rows, 'acting', n, batch=B, layers=L), '.4f') for B, L in cols) + " |")
    tlines = ["| target | measured |", "|---|---:|"] + [f"| {k} | {fmt(v, '.3f')} |" for k, v in targets(rows, args.lengths)]
    errors = [f"- {r['name']} T={r['T']} B={r['batch']}: {r['note']}" for r in rows if r["note"]]
    command = "python benchmarks/gpu_speed.py " + shlex.join(sys.argv[1:])
    with open(os.path.join(args.out, "gpu_speed.md"), "w") as f:
        f.write(f"# GPU speed: training (fwd+bwd) and acting\n\nCommand: `{command.strip()}` ({elapsed:.0f} s)\n\n"
                + "".join(f"- {k}: {v}\n" for k, v in info.items())
                + f"\n## Forward+backward, one layer, B={args.batch}, d_model={args.d_model}: median ms of {args.repeats}\n\n"
                "Ours = `make_memory(kind, 256, 256, num_layers=1)` in sequence mode with ~4 episode resets per "
                "row and a carried-in state (RMSNorm + residual around the mixer); mamba-ssm = the bare upstream "
                "layer, no resets, no state.\n\n" + "\n".join(lines)
                + f"\n\n![train](gpu_speed_train.png)\n\n## Acting: one memory step, median ms per step of {args.acting_steps}, "
                "synchronised every step (an actor needs its action)\n\n" + "\n".join(alines)
                + "\n\n![acting](gpu_speed_acting.png)\n\n## Targets\n\n" + "\n".join(tlines) + "\n"
                + ("\n## Errors\n\n" + "\n".join(errors) + "\n" if errors else ""))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if train_names:
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for n in train_names:
            pts = [(r["T"], r["ms"]) for r in rows if r["section"] == "train" and r["name"] == n and r["ms"] == r["ms"]]
            if pts:
                ax.plot(*zip(*pts), marker="o", ls="--" if "bf16" in n else "-", label=n)
        ax.set(xscale="log", yscale="log", xlabel="T", ylabel="fwd+bwd ms (median)",
               title=f"{info.get('gpu', args.device)}: B={args.batch}, d={args.d_model}, 1 layer")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "gpu_speed_train.png"), dpi=120)
    if act_names:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(act_names) + 1.5))
        vals = [lookup(rows, "acting", n, batch=1, layers=1) for n in act_names]
        ax.barh(act_names, vals)
        ax.set(xlabel="ms per step (B=1, 1 layer)", xscale="log")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "gpu_speed_acting.png"), dpi=120)
    print(f"wrote {args.out}/gpu_speed.{{csv,md}} and plots")


def read_rows(paths):
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                for k in ("T", "batch", "layers"):
                    r[k] = int(r[k]) if r.get(k) else None
                for k in ("ms", "peak_mb"):
                    r[k] = float(r[k]) if r.get(k) else math.nan
                rows.append(r)
    return rows


def profile(args, device):
    """Kernel-time tables for ours vs raw mamba-ssm at T=1024: where any gap comes from."""
    from torch.profiler import ProfilerActivity, profile as prof
    gen = torch.Generator(device=device).manual_seed(0)
    cands = train_candidates(args, device)
    with open(os.path.join(args.out, "gpu_speed_profile.txt"), "w") as f:
        for name in ("mamba1 mamba-ssm", "mamba1 ours kernels", "mamba2 mamba-ssm", "mamba2 ours kernels"):
            step = cands[name][0](args.batch, 1024, gen)
            for _ in range(3):
                step()
            sync(device)
            with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
                for _ in range(5):
                    step()
                sync(device)
            f.write(f"\n===== {name}, T=1024, 5 fwd+bwd calls =====\n")
            f.write(p.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    print(f"wrote {args.out}/gpu_speed_profile.txt")


def main(argv=None):
    args = parse_args(argv)
    if args.from_csv:
        rows = read_rows(args.from_csv)
        args.lengths = sorted({r["T"] for r in rows if r["section"] == "train"}) or args.lengths
        args.acting_batches = sorted({r["batch"] for r in rows if r["section"] == "acting"}) or args.acting_batches
        info = dict(kv.split("=", 1) for kv in args.info)
        info["rebuilt from"] = ", ".join(args.from_csv)
        write_report(args, rows, info, elapsed=0.0)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device; use --device cpu for a smoke run")
    info = versions(device)
    info.update(dict(kv.split("=", 1) for kv in args.info))
    print(info, flush=True)
    rows, t0 = [], time.perf_counter()
    if args.section in ("all", "train"):
        run_train(args, device, rows)
    if args.section in ("all", "acting"):
        run_acting(args, device, rows)
    write_report(args, rows, info, time.perf_counter() - t0)
    if args.profile and device.type == "cuda":
        profile(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
