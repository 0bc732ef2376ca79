"""CPU forward+backward time of the memory kinds vs sequence length T.

One call = sequence-mode forward over [B, T, F] with random episode resets, then
loss = y.square().mean() and backward: what a PPO/BC update pays per minibatch.
Mamba runs twice: its chunked scan and the one-step-at-a-time reference loop
(scan="reference"), so the table shows what the chunked scan buys.

    python benchmarks/memory_speed.py                  # T = 64 .. 4096 (slow: minutes)
    python benchmarks/memory_speed.py --quick          # T = 64, 256, 1024
    python benchmarks/memory_speed.py --lengths 128 512 --repeats 5 --out /tmp/bench
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import time

import torch
from torch import nn

# Measure the networks/ next to this script, never another installed copy (an editable
# install of a different checkout would otherwise win and be timed instead).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import networks  # noqa: E402
from networks.attention_memory import WindowedTransformer  # noqa: E402
from networks.mamba_memory import MambaStack  # noqa: E402

METHODS = ["mamba1-chunked", "mamba1-loop", "mamba2-chunked", "mamba2-loop", "gru", "lstm", "transformer"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=128, help="hidden size (= input size)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per point; the median is reported")
    p.add_argument("--loop-max-len", type=int, default=1024, help="skip the *-loop methods above this T")
    p.add_argument("--reset-prob", type=float, default=0.01, help="per-step episode reset probability")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--quick", action="store_true", help="T = 64, 256, 1024; 2 repeats (a couple of minutes)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results; "
                   "runs/memory_speed_quick with --quick, so a quick run never overwrites the results)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.lengths, args.repeats, args.loop_max_len = [64, 256, 1024], 2, 1024
    if args.out is None:
        args.out = "runs/memory_speed_quick" if args.quick else "benchmarks/results"
    return args


class RNN(nn.Module):
    """nn.GRU/nn.LSTM behind the same .sequence() call as the other cores.

    nn.GRU has no reset input, so resets are ignored here: this is the cuDNN-style
    lower bound. TorchRL's GRUModule instead splits rows at resets and pads them
    (recurrent_backend="pad"), which costs more at long T.
    """

    def __init__(self, cls, hidden):
        super().__init__()
        self.rnn = cls(hidden, hidden, batch_first=True)

    def state_shapes(self):
        return {}

    def sequence(self, x, is_init, states):
        return self.rnn(x)[0], {}


def build(method: str, hidden: int) -> nn.Module:
    if method.startswith("mamba"):
        kind, scan = method.split("-")
        return MambaStack(kind, hidden, hidden, 1, scan="reference" if scan == "loop" else "chunked")
    if method == "transformer":
        return WindowedTransformer(hidden, hidden, num_layers=1, num_heads=4, context=32)
    return RNN({"gru": nn.GRU, "lstm": nn.LSTM}[method], hidden)


def time_one(core, B, T, F, repeats, reset_prob, gen) -> float:
    """Median ms of forward+backward; inputs are fixed so only the call is timed."""
    x = torch.randn(B, T, F, generator=gen)
    is_init = torch.rand(B, T, generator=gen) < reset_prob
    is_init[:, 0] = True
    states = {k: torch.zeros(B, *s) for k, s in core.state_shapes().items()}
    times = []
    for i in range(repeats + 1):  # call 0 is the warm-up (allocator, lazy init)
        core.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        y, _ = core.sequence(x, is_init, states)
        y.square().mean().backward()
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ratio(num, den):
    return num / den if num == num and den == den else math.nan  # NaN-safe (skipped points)


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    B, H = args.batch, args.hidden
    machine = (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"machine: {machine}")
    print(f"networks from: {os.path.dirname(networks.__file__)}")
    # With the default thread count, any other busy process makes OpenMP threads spin
    # against it and times blow up ~100x: check the load before trusting a run.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"1-min load average at start: {load:.2f}")
    ms = {}  # (method, T) -> median ms, NaN when skipped
    for method in args.methods:
        core = build(method, H)
        for T in args.lengths:
            if method.endswith("-loop") and T > args.loop_max_len:
                ms[method, T] = math.nan
                print(f"{method:>15} T={T:<5} skipped (> --loop-max-len {args.loop_max_len})", flush=True)
                continue
            ms[method, T] = time_one(core, B, T, H, args.repeats, args.reset_prob, gen)
            print(f"{method:>15} T={T:<5} {ms[method, T]:10.1f} ms", flush=True)

    # Ratio columns: chunked speedup over its own loop, and each method's speed vs GRU.
    ratio_cols = {}
    for kind in ("mamba1", "mamba2"):
        if f"{kind}-chunked" in args.methods and f"{kind}-loop" in args.methods:
            ratio_cols[f"{kind} loop/chunked"] = lambda T, k=kind: ratio(ms[f"{k}-loop", T], ms[f"{k}-chunked", T])
    if "gru" in args.methods:
        for m in args.methods:
            if m != "gru":
                ratio_cols[f"gru/{m}"] = lambda T, m=m: ratio(ms["gru", T], ms[m, T])

    fmt = lambda v, spec: "skipped" if v != v else format(v, spec)  # noqa: E731
    header = ["T", *[f"{m} ms" for m in args.methods], *ratio_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for T in args.lengths:
        cells = [str(T), *[fmt(ms[m, T], ".1f") for m in args.methods],
                 *[fmt(f(T), ".2f") for f in ratio_cols.values()]]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table + "\n")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "memory_speed.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "T", "batch", "hidden", "ms_median", "chunked_speedup_over_loop", "speed_vs_gru"])
        for m in args.methods:
            for T in args.lengths:
                kind = m.split("-")[0]
                speedup = ratio(ms[f"{kind}-loop", T], ms[m, T]) if m.endswith("-chunked") and \
                    f"{kind}-loop" in args.methods else ""
                vs_gru = ratio(ms["gru", T], ms[m, T]) if "gru" in args.methods else ""
                w.writerow([m, T, B, H, f"{ms[m, T]:.3f}",
                            *[f"{v:.4f}" if isinstance(v, float) else v for v in (speedup, vs_gru)]])

    import matplotlib
    matplotlib.use("Agg")  # no display on CI / remote machines
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    for m in args.methods:
        pts = [(T, ms[m, T]) for T in args.lengths if ms[m, T] == ms[m, T]]
        if pts:
            ax.plot(*zip(*pts), marker="o", ls="--" if m.endswith("-loop") else "-", label=m)
    ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="fwd+bwd ms (median)",
           title=f"CPU fwd+bwd, B={B}, hidden={H}, 1 layer, {torch.get_num_threads()} threads")
    ax.set_xticks(args.lengths, [str(T) for T in args.lengths])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "memory_speed.png"), dpi=120)

    command = "python benchmarks/memory_speed.py " + shlex.join(sys.argv[1:])
    with open(os.path.join(args.out, "memory_speed.md"), "w") as f:
        f.write(f"# Memory speed: CPU forward+backward vs sequence length\n\n"
                f"Command: `{command.strip()}`\n\n"
                f"Machine: {machine}; 1-min load average at start {load:.2f}\n\nDate: {datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
                f"B={B}, input=hidden={H}, 1 layer, loss = y.square().mean(), resets with p={args.reset_prob} "
                f"per step plus t=0; median of {args.repeats} calls after 1 warm-up. Ratios > 1 mean the "
                f"denominator method is faster (loop/chunked = chunked speedup; gru/m = m's speed vs GRU). "
                f"GRU/LSTM are plain nn.GRU/nn.LSTM without resets.\n\n{table}\n\n"
                f"![memory speed](memory_speed.png)\n")
    print(f"wrote {args.out}/memory_speed.{{csv,png,md}}")


if __name__ == "__main__":
    main()
