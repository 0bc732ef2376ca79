"""Learning curves and final evaluation of agent runs, grouped by run name (seeds pooled).

    python benchmarks/learning_curves.py runs/ppo_locomamba/quick_thin_* --out benchmarks/results/quadruped_thin

Reads each run's CSV metrics (``<run>/metrics/scalars/...``, written by agents/runtime/loggers.py),
groups runs by the ``name`` in their config.yaml, and writes <out>.png (training return vs env
steps, mean and min-max over seeds) and <out>.md (final evaluation per group: mean +- std over
seeds of return, distance, collisions, falls; the per-seed values; the command).
"""
from __future__ import annotations

import argparse
import csv
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output stem (.png and .md are added)")
    parser.add_argument("--metric", default="train/episode_return")
    parser.add_argument("--eval-keys", nargs="+", default=["return", "distance", "collisions", "falls"],
                        help="final eval/<key> columns (TD3 drone: return success_rate collision_rate path_length)")
    args = parser.parse_args(argv)
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in args.runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        groups[cfg["name"]].append(run)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    lines = ["| run | seeds | frames | " + " | ".join(f"eval {k}" for k in args.eval_keys)
             + " | first / last training return |", "|---|---:|---:|" + "---:|" * (len(args.eval_keys) + 1)]
    details = []
    for name, runs in sorted(groups.items()):
        curves = [read_scalar(r, args.metric) for r in runs]
        n = min(len(x) for x, _ in curves)
        if n == 0:
            print(f"{name}: no '{args.metric}' values yet, skipped", file=sys.stderr)
            continue
        x = curves[0][0][:n]
        ys = np.stack([y[:n] for _, y in curves])
        ax.plot(x, ys.mean(0), label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(x, ys.min(0), ys.max(0), alpha=0.2)
        evals = {k: np.array([read_scalar(r, f"eval/{k}")[1][-1:] for r in runs]).ravel()
                 for k in args.eval_keys}

        def ms(v):
            return f"{v.mean():.2f} +- {v.std():.2f}" if v.size else "n/a"

        first, last = ys[:, :3].mean(), ys[:, -3:].mean()   # 3-batch averages at each end
        lines.append(f"| {name} | {len(runs)} | {int(x[-1])} | " + " | ".join(ms(evals[k]) for k in args.eval_keys)
                     + f" | {first:.1f} / {last:.1f} |")
        details.append(f"- {name}: " + "; ".join(f"{r.name}: eval return "
                                                 f"{read_scalar(r, 'eval/return')[1][-1:].round(2).tolist()}"
                                                 for r in runs))
    ax.set_xlabel("env steps")
    ax.set_ylabel(args.metric)
    ax.legend()
    ax.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    cmd = "python benchmarks/learning_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([f"Command: `{cmd}`", "", *lines, "", *details]) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
