"""Learning curves of ppo_locomamba runs: training return and distance vs env steps and vs wall-clock.

    python benchmarks/quadruped_curves.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/quadruped_flat_gpu.png

Reads each run's CSV metrics (RUN/metrics/scalars/{train,time}/*.csv, written by logger=csv);
wall-clock is time/elapsed_s, which carries across resumes. Each run is labelled by its folder name.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def series(run: Path, name: str) -> dict[int, float]:
    path = run / "metrics" / "scalars" / f"{name}.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing (was the run logged with logger=csv?)")
    with path.open() as f:
        return {int(float(r[0])): float(r[1]) for r in csv.reader(f) if len(r) == 2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", nargs="*", default=None, help="one per run (default: the folder names)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"error: --labels: {len(labels)} labels for {len(args.runs)} runs")
    for run, label in zip(args.runs, labels):
        ret, dist, wall = (series(run, n) for n in ("train/episode_return", "train/episode_distance", "time/elapsed_s"))
        steps = sorted(set(ret) & set(wall))
        for row, values in ((0, ret), (1, dist)):
            axes[row][0].plot(steps, [values.get(s, float("nan")) for s in steps], label=label)
            axes[row][1].plot([wall[s] / 60 for s in steps], [values.get(s, float("nan")) for s in steps], label=label)
    for row, what in ((0, "training episode return"), (1, "training episode distance (m)")):
        axes[row][0].set_ylabel(what)
    for col, what in ((0, "env steps"), (1, "wall-clock (min)")):
        axes[1][col].set_xlabel(what)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("ppo_locomamba, stochastic training policy (episodes that ended in each iteration)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
