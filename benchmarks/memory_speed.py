"""CPU speed of the memory kinds: sequence mode fwd+bwd vs T, sequence vs stepping, acting latency.

Every figure of one run comes from one process, at 1 and then 2 threads (torch.set_num_threads),
so ratios between methods are measured under the same load. Reported per point: the median wall
time and the median process CPU time (all threads; at 2 threads it is ~2x wall when both are
busy) of ``--repeats`` calls after one warm-up. The 1-minute load average is printed before and
after each block: on a shared machine treat the ratios, not the milliseconds, as the figures.

1. Sequence mode, forward+backward, [B, T, hidden] with random resets (p=--reset-prob plus t=0),
   loss = y.square().mean(): what a PPO/BC update pays per minibatch. Memory kinds go through
   ``make_memory`` and the TensorDict contract (sequence mode), as the agents use them:
     mamba1           fused C++ scan (networks/ssm/cpu_scan.py)
     mamba1-pytorch   the chunked PyTorch scan (the fallback without a compiler)
     mamba1-loop      the step-by-step reference scan (autograd through the loop)
     mamba2           the C++ SSD recurrence (networks/ssm/cpu_mamba2.py)
     mamba2-pytorch   the chunked PyTorch SSD (the fallback without a compiler)
     gru-torchrl      make_memory("gru"): TorchRL's GRUModule, resets by split-and-pad
     transformer      make_memory("transformer")
     gru, lstm        plain nn.GRU / nn.LSTM without resets (the cuDNN-style lower bound)
     mambapy          mambapy's Mamba (pscan; no resets, no initial state), when installed
2. Forward only at T = max(--lengths): one sequence-mode call vs T step-mode calls (no grad),
   through make_memory (TensorDict per step, as a collector) and through the core alone;
   nn.GRU/nn.LSTM vs a loop of nn.GRUCell/nn.LSTMCell.
3. One acting step at batch 1 (no grad), median microseconds.
4. The issue-22 targets, each from the figures above.

    python benchmarks/memory_speed.py                       # T = 64, 256, 1024, 4096
    python benchmarks/memory_speed.py --quick               # T = 256, 1024; to runs/memory_speed_quick
    python benchmarks/memory_speed.py --lengths 128 512 --threads 1 --out /tmp/bench
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
from tensordict import TensorDict
from torch import nn

# Measure the networks/ next to this script, never another installed copy (an editable
# install of a different checkout would otherwise win and be timed instead).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import networks  # noqa: E402
from networks import make_memory
from networks.ssm import cpu_mamba2, cpu_scan  # noqa: E402
from torchrl.modules import set_recurrent_mode  # noqa: E402

SEQ_METHODS = ["mamba1", "mamba1-pytorch", "mamba1-loop", "mamba2", "mamba2-pytorch", "mamba2-loop", "gru-torchrl",
               "transformer", "gru", "lstm", "mambapy"]
STEP_KINDS = ["mamba1", "mamba2", "gru", "lstm"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=128, help="hidden size (= input size)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per point; the median is reported")
    p.add_argument("--loop-max-len", type=int, default=1024, help="skip the *-loop methods above this T")
    p.add_argument("--reset-prob", type=float, default=0.01, help="per-step episode reset probability")
    p.add_argument("--methods", nargs="+", default=SEQ_METHODS, choices=SEQ_METHODS)
    p.add_argument("--step-calls", type=int, default=2000, help="acting steps timed per kind")
    p.add_argument("--quick", action="store_true", help="T = 256, 1024; 2 repeats")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results; "
                   "runs/memory_speed_quick with --quick, so a quick run never overwrites the results)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats, args.step_calls = [256, 1024], 2, 1000
    if args.out is None:
        args.out = "runs/memory_speed_quick" if args.quick else "benchmarks/results"
    return args


def load_avg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def timed(fn, repeats: int):
    """(median wall ms, median process-CPU ms) of fn() over repeats calls after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


class _FusedOff:
    """Within the block, the Mamba scans take the PyTorch paths (as without a compiler)."""

    def __enter__(self):
        self.saved = cpu_scan._EXT, cpu_mamba2._EXT
        cpu_scan._EXT = cpu_mamba2._EXT = False

    def __exit__(self, *exc):
        cpu_scan._EXT, cpu_mamba2._EXT = self.saved


def primer_states(memory, shape):
    return {k: torch.zeros(*shape, *s.shape) for k, s in memory.make_tensordict_primer().primers.items()}


def sequence_call(method: str, H: int, x, is_init):
    """A closure running one fwd+bwd of `method` on x [B, T, H], or None if unavailable."""
    B, T, _ = x.shape
    if method in ("gru", "lstm"):
        rnn = (nn.GRU if method == "gru" else nn.LSTM)(H, H, batch_first=True)

        def run():
            rnn.zero_grad(set_to_none=True)
            rnn(x)[0].square().mean().backward()
        return run
    if method == "mambapy":
        try:
            from mambapy.mamba import Mamba, MambaConfig
        except ImportError:
            return None
        model = Mamba(MambaConfig(d_model=H, n_layers=1))

        def run():
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
        return run
    kind, _, variant = method.partition("-")
    opts = {"scan": "reference"} if variant == "loop" else {}
    if kind == "transformer":
        opts = dict(num_heads=4, context=32)
    memory = make_memory(kind, H, H, 1, **opts)
    td = TensorDict({"embed": x, "is_init": is_init[..., None], **primer_states(memory, (B, T))}, [B, T])

    def run():
        memory.zero_grad(set_to_none=True)
        with set_recurrent_mode(True), (_FusedOff() if variant == "pytorch" else _Null()):
            out = memory(td.clone(False))
        out["memory"].square().mean().backward()
    return run


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def seq_vs_step(kind: str, H: int, B: int, T: int, repeats: int, gen) -> dict:
    """Forward only: one sequence call vs T step calls; ms (wall, cpu) for each."""
    x = torch.randn(B, T, H, generator=gen)
    out = {}
    with torch.no_grad():
        if kind in ("gru", "lstm"):
            rnn = (nn.GRU if kind == "gru" else nn.LSTM)(H, H, batch_first=True)
            cell = (nn.GRUCell if kind == "gru" else nn.LSTMCell)(H, H)
            out["seq"] = timed(lambda: rnn(x), repeats)
            h0 = torch.zeros(B, H)

            def steps():
                h = h0 if kind == "gru" else (h0, h0)
                for t in range(T):
                    h = cell(x[:, t], h)
            out["step"] = timed(steps, repeats)
            return out
        memory = make_memory(kind, H, H, 1)
        is_init = torch.zeros(B, T, 1, dtype=torch.bool)
        is_init[:, 0] = True
        td = TensorDict({"embed": x, "is_init": is_init, **primer_states(memory, (B, T))}, [B, T])

        def seq():
            with set_recurrent_mode(True):
                memory(td.clone(False))
        out["seq"] = timed(seq, repeats)
        tds = [td[:, t].clone() for t in range(T)]

        def steps():  # a collector's loop: the state travels through ("next", state)
            state = {k: tds[0][k] for k in memory.state_keys}
            for t in range(T):
                s = tds[t].clone(False)
                s.update(state)
                memory(s)
                state = {k: s["next", k] for k in memory.state_keys}
        out["step"] = timed(steps, repeats)
        core = getattr(memory, "core", None)
        if core is not None:
            st = {n: torch.zeros(B, *s) for n, s in core.state_shapes().items()}

            def core_steps():
                s = st
                for t in range(T):
                    _, s = core.step(x[:, t], s)
            out["core_step"] = timed(core_steps, repeats)
    return out


def step_latency(kind: str, H: int, calls: int) -> dict:
    """Median µs of one no-grad step at batch 1 (blocks of calls, median of block means)."""
    res = {}

    def per_call(fn):
        for _ in range(50):
            fn()
        blocks = []
        n = max(1, calls // 10)
        for _ in range(10):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            blocks.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(blocks)

    x = torch.randn(1, H)
    with torch.no_grad():
        if kind in ("GRUCell", "LSTMCell"):
            cell = getattr(nn, kind)(H, H)
            h = torch.zeros(1, H)
            res["module"] = per_call(lambda: cell(x, h if kind == "GRUCell" else (h, h)))
            return res
        memory = make_memory(kind, H, H, 1)
        td = TensorDict({"embed": x, "is_init": torch.zeros(1, 1, dtype=torch.bool),
                         **primer_states(memory, (1,))}, [1])
        res["make_memory"] = per_call(lambda: memory(td))
        core = getattr(memory, "core", None)
        if core is not None:
            st = {n: torch.zeros(1, *s) for n, s in core.state_shapes().items()}
            res["core"] = per_call(lambda: core.step(x, st))
    return res


def fmt(v, spec=".1f"):
    return "skipped" if v is None or v != v else format(v, spec)


def md_table(header, rows):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *["| " + " | ".join(map(str, r)) + " |" for r in rows]])


def main(argv=None):
    args = parse_args(argv)
    B, H, Tmax = args.batch, args.hidden, max(args.lengths)
    fused = cpu_scan.available()
    machine = (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    scan_path = (f"fused C++ scan from {cpu_scan.build_directory()}" if fused
                 else f"fused scan unavailable ({cpu_scan._WHY_NOT})")
    m2_path = (f"C++ SSD and step from {cpu_mamba2.build_directory()}" if cpu_mamba2.available()
               else f"C++ kernels unavailable ({cpu_mamba2._WHY_NOT})")
    print(f"machine: {machine}\nnetworks from: {os.path.dirname(networks.__file__)}\nmamba1: {scan_path}\n"
          f"mamba2: {m2_path}")
    methods = [m for m in args.methods if m != "mambapy" or _has_mambapy()]
    seq, ratios, lat, loads, rows_csv, row_load = {}, {}, {}, {}, [], {}
    t_fwd = 1024 if 1024 in args.lengths else Tmax
    for threads in args.threads:
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(args.seed)
        torch.manual_seed(args.seed)
        loads[threads] = [load_avg()]
        print(f"\n== {threads} thread(s); 1-min load average {loads[threads][0]:.2f}", flush=True)
        for T in args.lengths:
            row_load[threads, T] = [load_avg()]
            x = torch.randn(B, T, H, generator=gen)
            is_init = torch.rand(B, T, generator=gen) < args.reset_prob
            is_init[:, 0] = True
            for m in methods:
                if m.endswith("-loop") and T > args.loop_max_len:
                    continue
                run = sequence_call(m, H, x, is_init)
                seq[threads, m, T] = timed(run, args.repeats)
                rows_csv.append(["seq_fwd_bwd", threads, m, T, B, H, *seq[threads, m, T]])
                print(f"  seq fwd+bwd {m:>15} T={T:<5} wall {seq[threads, m, T][0]:9.1f} ms  "
                      f"cpu {seq[threads, m, T][1]:9.1f} ms", flush=True)
            row_load[threads, T].append(load_avg())
        for kind in STEP_KINDS:
            ratios[threads, kind] = seq_vs_step(kind, H, B, t_fwd, args.repeats, gen)
            r = ratios[threads, kind]
            for k, v in r.items():
                rows_csv.append([f"fwd_{k}", threads, kind, t_fwd, B, H, *v])
            print(f"  fwd T={t_fwd} {kind:>7}: seq {r['seq'][0]:.1f} ms, steps {r['step'][0]:.1f} ms "
                  f"({r['step'][0] / r['seq'][0]:.1f}x)", flush=True)
        for kind in ["mamba1", "mamba2", "gru", "lstm", "GRUCell", "LSTMCell"]:
            lat[threads, kind] = step_latency(kind, H, args.step_calls)
            for k, v in lat[threads, kind].items():
                rows_csv.append([f"step_us_{k}", threads, kind, 1, 1, H, v, ""])
            print(f"  step B=1 {kind:>8}: " + ", ".join(f"{k} {v:.1f} us" for k, v in lat[threads, kind].items()),
                  flush=True)
        loads[threads].append(load_avg())
        print(f"  load average after: {loads[threads][1]:.2f}")

    # ---------------------------------------------------------------- tables
    out = [f"# Memory speed on the CPU (issue 22)\n",
           f"Command: `python benchmarks/memory_speed.py {shlex.join(sys.argv[1:] if argv is None else argv)}`\n",
           f"Machine: {machine}. Date: {datetime.datetime.now().isoformat(timespec='seconds')}. "
           f"Mamba1 scan: {scan_path}. Mamba2: {m2_path}.\n",
           # this process adds ~1 per busy thread: above threads + 0.5 someone else had the cores
           ("**The machine was shared** with other jobs during this run" if any(
               max(a, b) > t + 0.5 for t, (a, b) in loads.items()) else "No other job ran (by the load average)")
           + ": the 1-min load average before/after each block is "
           + "; ".join(f"{t} thread(s): {a:.2f} / {b:.2f}" for t, (a, b) in loads.items())
           + f" on {os.cpu_count()} CPUs. Milliseconds move with the load; the ratios, each measured "
           "in one process minutes apart, are the figures.\n",
           f"B={B}, input=hidden={H}, 1 layer, float32, resets with p={args.reset_prob} per step plus t=0. "
           f"Median of {args.repeats} calls after 1 warm-up; wall and process CPU time (all threads).\n"]
    targets = []
    for threads in args.threads:
        header = ["T", "load avg start→end", *[f"{m} wall / cpu ms" for m in methods]]
        rows = [[T, _load_cell(row_load[threads, T]),
                 *[(f"{fmt(seq[threads, m, T][0])} / {fmt(seq[threads, m, T][1])}"
                    if (threads, m, T) in seq else "skipped") for m in methods]] for T in args.lengths]
        out += [f"\n## Sequence mode fwd+bwd, {threads} thread(s)\n", md_table(header, rows), ""]
        vs = [m for m in methods if m not in ("gru", "lstm")]
        both = lambda m, base, T: (f"{fmt(_ratio(seq, threads, m, base, T, 1), '.2f')} / "  # noqa: E731
                                   f"{fmt(_ratio(seq, threads, m, base, T, 0), '.2f')}")
        rrows = [[T, *[both(m, "gru", T) for m in vs],
                  *[both(m, "lstm", T) for m in ("mamba1", "mamba2") if m in vs]] for T in args.lengths]
        out += [f"Time ratios, {threads} thread(s), process CPU / wall (method / nn.GRU; method / nn.LSTM): "
                "< 1 is faster.\n",
                md_table(["T", *[f"{m}/gru" for m in vs], *[f"{m}/lstm" for m in ("mamba1", "mamba2") if m in vs]],
                         rrows), ""]
        srows = []
        for kind in STEP_KINDS:
            r = ratios[threads, kind]
            srows.append([kind, fmt(r["seq"][0]), fmt(r["step"][0]), f"{r['step'][0] / r['seq'][0]:.1f}x",
                          fmt(r["core_step"][0]) if "core_step" in r else "-",
                          f"{r['core_step'][0] / r['seq'][0]:.1f}x" if "core_step" in r else "-"])
        out += [f"\n### Forward only, T={t_fwd}, B={B}, {threads} thread(s): sequence vs stepping (wall ms)\n",
                "Stepping through make_memory runs a TensorDict step per t (as a collector); the core "
                "column calls core.step directly; gru/lstm step with nn.GRUCell/nn.LSTMCell.\n",
                md_table(["kind", "sequence", "T steps (make_memory)", "step/sequence", "T steps (core)",
                          "core step/sequence"], srows), ""]
        gcell = lat[threads, "GRUCell"]["module"]
        lrows = []
        for kind in ["mamba1", "mamba2", "gru", "lstm", "GRUCell", "LSTMCell"]:
            r = lat[threads, kind]
            main_us = r.get("make_memory", r.get("module"))
            lrows.append([kind, fmt(main_us), fmt(r.get("core")) if "core" in r else "-", f"{main_us / gcell:.2f}"])
        out += [f"\n### Acting step at batch 1, no grad, {threads} thread(s) (median µs)\n",
                md_table(["kind", "make_memory step (TensorDict)", "core.step", "/ nn.GRUCell"], lrows), ""]
        for kind in ("mamba1", "mamba2"):
            if (threads, kind, t_fwd) in seq:
                # Judged on process CPU time (what the issue measured; on a loaded machine wall
                # time also counts the time other jobs held the cores), wall shown beside it.
                g, gw = (_ratio(seq, threads, kind, "gru", t_fwd, i) for i in (1, 0))
                l_, lw = (_ratio(seq, threads, kind, "lstm", t_fwd, i) for i in (1, 0))
                rl = _load_cell(row_load[threads, t_fwd])
                targets.append([f"{kind} seq fwd+bwd T={t_fwd} faster than nn.GRU", threads,
                                f"{g:.2f}x GRU's CPU time ({gw:.2f}x wall)", rl, _ok(g < 1)])
                targets.append([f"{kind} seq fwd+bwd T={t_fwd} within 2x of nn.LSTM", threads,
                                f"{l_:.2f}x LSTM's CPU time ({lw:.2f}x wall)", rl, _ok(l_ <= 2)])
            r = ratios[threads, kind]
            bl = _load_cell(loads[threads])
            targets.append([f"{kind} sequence >= 10x faster than stepping (fwd, T={t_fwd}, make_memory)", threads,
                            f"{r['step'][0] / r['seq'][0]:.1f}x", bl, _ok(r["step"][0] / r["seq"][0] >= 10)])
            k = lat[threads, kind]["make_memory"] / gcell
            targets.append([f"{kind} acting step B=1 <= 3x nn.GRUCell", threads, f"{k:.2f}x", bl, _ok(k <= 3)])
    out += ["\n![memory speed](memory_speed.png)\n", "\n## Targets (issue 22), from the tables above\n",
            f"Load: the 1-min load average over the T={t_fwd} row (sequence targets) or the whole block "
            f"(stepping and acting). This process itself adds ~1 per busy thread; above {os.cpu_count()} + 0.5 "
            "(marked *contended*) other jobs were competing for the cores during the measurement, and methods "
            "timed later in the row met more of them than those timed first, so the ratio is not a figure.\n",
            md_table(["target", "threads", "measured", "load", "met"], targets),
            "\nThe CPU quadruped and POMDP sweeps' env steps/s (the issue's last target) are not part of "
            "this benchmark and were not measured in this run.\n"]
    text = "\n".join(out)
    print("\n" + text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "memory_speed.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "memory_speed.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["measure", "threads", "method", "T", "batch", "hidden", "wall_ms_or_us", "cpu_ms"])
        w.writerows(rows_csv)
    plot(seq, methods, args, os.path.join(args.out, "memory_speed.png"))
    print(f"wrote {args.out}/memory_speed.{{md,csv,png}}")
    return 0


def plot(seq, methods, args, path):
    import matplotlib
    matplotlib.use("Agg")  # no display on CI / remote machines
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(args.threads), figsize=(6.5 * len(args.threads), 5), squeeze=False)
    for ax, threads in zip(axes[0], args.threads):
        for m in methods:
            pts = [(T, seq[threads, m, T][1]) for T in args.lengths if (threads, m, T) in seq]
            if pts:
                ax.plot(*zip(*pts), marker="o", ls="--" if m.endswith(("-loop", "-pytorch")) else "-", label=m)
        ax.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="fwd+bwd process CPU ms (median)",
               title=f"B={args.batch}, hidden={args.hidden}, 1 layer, {threads} thread(s)")
        ax.set_xticks(args.lengths, [str(T) for T in args.lengths])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _ratio(seq, threads, m, base, T, i=0):
    """m's time over base's: i=0 wall, i=1 process CPU."""
    a, b = seq.get((threads, m, T)), seq.get((threads, base, T))
    return a[i] / b[i] if a and b else math.nan


def _load_cell(pair) -> str:
    a, b = pair[0], pair[-1]
    flag = " *contended*" if max(a, b) > (os.cpu_count() or 1) + 0.5 else ""
    return f"{a:.2f}→{b:.2f}{flag}"


def _ok(cond: bool) -> str:
    return "yes" if cond else "**no**"


def _has_mambapy() -> bool:
    try:
        import mambapy  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
