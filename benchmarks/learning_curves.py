"""Learning curves and final evaluation of agent runs, grouped by run name or --labels (seeds pooled).

    python benchmarks/learning_curves.py runs/ppo_locomamba/quick_thin_* --out benchmarks/results/quadruped_thin

Reads each run's CSV metrics (``<run>/metrics/scalars/...``, written by agents/runtime/loggers.py),
groups runs by the ``name`` in their config.yaml, and writes <out>.png (training return vs env
steps, mean and min-max over seeds; beside it the same vs wall-clock hours where the runs logged
time/elapsed_s, and one panel per ``--eval-curves`` key: the in-training evals vs env steps) and <out>.md (final evaluation per group: mean +- std over
seeds of return, distance, collisions, falls; the per-seed values; the command).

With ``--eval-dir NAME`` the final evaluation is read from the JSON files that ``--eval CKPT --out
RUN/NAME`` wrote (``eval_*_deterministic.json``, ``eval_*_stochastic.json``: one table per mode found)
instead of the eval/ scalars logged at the end of training. ``--final-metrics`` adds training
metrics (mean of the last 3 batches) as columns, e.g. train/episode_distance.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml


def read_scalar(run: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    path = run / "metrics" / "scalars" / f"{name}.csv"
    if not path.is_file():
        return np.zeros(0), np.zeros(0)
    rows = [r for r in csv.reader(path.open()) if r and r[0] != "step"]
    data = np.array([[float(a), float(b)] for a, b in rows]).reshape(-1, 2)
    return data[:, 0], data[:, 1]


def wall_clock(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, hours since the run began) from time/elapsed_s, over resumes: each process logs the
    seconds since it started, so a drop starts a new segment, which adds on to the previous one's
    last value (time a stop lost, steps trained again after a kill, is not counted)."""
    steps, elapsed = read_scalar(run, "time/elapsed_s")
    offset, total, last = 0.0, np.zeros_like(elapsed), 0.0
    for i, e in enumerate(elapsed):
        if e < last:
            offset += last
        total[i], last = offset + e, e
    return steps, total / 3600.0


def read_evals(run: Path, eval_dir: str | None, keys: list[str]) -> dict[str, dict]:
    """{mode: {key: values}}, the final evaluation of a run: the logged eval/<key> scalars (mode
    "logged"), or with ``eval_dir`` the --eval JSON files in RUN/eval_dir, by their mode."""
    if eval_dir is None:
        return {"logged": {k: read_scalar(run, f"eval/{k}")[1][-1:] for k in keys}}
    found = {}
    for path in sorted((run / eval_dir).glob("eval_*.json")):
        summary = json.loads(path.read_text())
        found[summary["mode"]] = {k: np.array([v]) for k, v in summary.items() if isinstance(v, (int, float))}
    if not found:
        raise SystemExit(f"error: no eval_*.json in {run / eval_dir} (write them with --eval CKPT --out {run / eval_dir})")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output stem (.png and .md are added)")
    parser.add_argument("--metric", default="train/episode_return")
    parser.add_argument("--eval-keys", nargs="+", default=["return", "distance", "collisions", "falls"],
                        help="final eval/<key> columns (TD3 drone: return success_rate collision_rate path_length)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one group label per run (runs with the same label are pooled; default: the config's name)")
    parser.add_argument("--eval-dir", default=None, metavar="NAME",
                        help="read the final evaluation from RUN/NAME/eval_*_<mode>.json (written by --eval --out)")
    parser.add_argument("--final-metrics", nargs="*", default=[],
                        help="training metrics to add as columns (mean of the last 3 batches), e.g. train/episode_distance")
    parser.add_argument("--eval-curves", nargs="*", default=[], metavar="KEY",
                        help="plot the in-training eval/<KEY> scalars vs env steps, one panel per key (e.g. success_rate)")
    args = parser.parse_args(argv)
    groups: dict[str, list[Path]] = defaultdict(list)
    if args.labels is not None and len(args.labels) != len(args.runs):
        raise SystemExit(f"error: --labels: {len(args.labels)} labels for {len(args.runs)} runs")
    for i, run in enumerate(args.runs):
        label = args.labels[i] if args.labels else yaml.safe_load((run / "config.yaml").read_text())["name"]
        groups[label].append(run)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clocks = {name: [wall_clock(r) for r in runs] for name, runs in groups.items()}
    timed = any(all(x.size for x, _ in c) for c in clocks.values())
    panels = 1 + timed + len(args.eval_curves)
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
    ax, rest = axes[0, 0], list(axes[0, 1:])
    ax_time = rest.pop(0) if timed else None
    header = ("| run | seeds | frames | " + " | ".join(f"eval {k}" for k in args.eval_keys)
              + "".join(f" | last {m}" for m in args.final_metrics) + " | first / last training return |")
    rule = "|---|---:|---:|" + "---:|" * (len(args.eval_keys) + len(args.final_metrics) + 1)
    tables: dict[str, list[str]] = defaultdict(list)
    details = []

    def ms(v):
        return f"{v.mean():.2f} +- {v.std():.2f}" if v.size else "n/a"

    for name, runs in sorted(groups.items()):
        curves = [read_scalar(r, args.metric) for r in runs]
        n = min(len(x) for x, _ in curves)
        if n == 0:
            print(f"{name}: no '{args.metric}' values yet, skipped", file=sys.stderr)
            continue
        x = curves[0][0][:n]
        ys = np.stack([y[:n] for _, y in curves])
        line, = ax.plot(x, ys.mean(0), label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(x, ys.min(0), ys.max(0), alpha=0.2)
        hours = ""
        if ax_time is not None and all(c[0].size for c in clocks[name]):
            for (y_steps, y), (t_steps, t_hours) in zip(curves, clocks[name]):   # each seed: its own clock
                ax_time.plot(np.interp(y_steps, t_steps, t_hours), y, color=line.get_color(), alpha=0.8)
            hours = ", wall-clock " + " / ".join(f"{c[1][-1]:.2f} h" for c in clocks[name])
        for key, ax_eval in zip(args.eval_curves, rest):
            for i, run in enumerate(runs):
                e_steps, e = read_scalar(run, f"eval/{key}")
                ax_eval.plot(e_steps, e, "o-", color=line.get_color(), label=name if i == 0 else None)
        first, last = ys[:, :3].mean(), ys[:, -3:].mean()   # 3-batch averages at each end
        finals = [np.array([v[-3:].mean() for v in (read_scalar(r, m)[1] for r in runs) if v.size])
                  for m in args.final_metrics]
        per_run = [read_evals(r, args.eval_dir, args.eval_keys) for r in runs]
        for mode in sorted(set().union(*per_run)):
            evals = {k: np.concatenate([e.get(mode, {}).get(k, np.zeros(0)) for e in per_run]) for k in args.eval_keys}
            seeds = sum(mode in e for e in per_run)
            tables[mode].append(f"| {name} | {seeds} | {int(x[-1])} | "
                                + " | ".join(ms(evals[k]) for k in args.eval_keys)
                                + "".join(f" | {ms(v)}" for v in finals) + f" | {first:.1f} / {last:.1f} |")
            details.append(f"- {name}, {mode}: " + "; ".join(
                f"{r.name}: " + ", ".join(f"{k} {e[mode][k][-1]:.2f}" for k in args.eval_keys
                                 if e.get(mode, {}).get(k, np.zeros(0)).size)
                for r, e in zip(runs, per_run) if mode in e) + hours)
    lines = []
    for mode, rows in tables.items():
        if args.eval_dir is not None:
            lines += ["", f"Evaluation: {mode} policy"]
        lines += ["", header, rule, *rows]
    ax.set_xlabel("env steps")
    ax.set_ylabel(args.metric)
    ax.legend()
    if ax_time is not None:
        ax_time.set_xlabel("wall-clock hours (each run's own, resumes added up)")
        ax_time.set_ylabel(args.metric)
    for key, ax_eval in zip(args.eval_curves, rest):
        ax_eval.set_xlabel("env steps")
        ax_eval.set_ylabel(f"eval/{key}")
        ax_eval.legend()
    for a in axes[0]:
        a.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    cmd = "python benchmarks/learning_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([f"Command: `{cmd}`", *lines, "", *details]) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
