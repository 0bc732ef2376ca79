"""Learning curves of ppo_locomamba runs: training return and distance vs env steps and vs wall-clock.

    python benchmarks/quadruped_curves.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/quadruped_flat_gpu.png \
        [--mark 829440:"desired_kl + std_cap on"]

The third row shows PPO's approx KL and clip fraction per update and, where the run capped its
std (train.std_cap), the cap, against env steps and wall-clock.

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
    ap.add_argument("--mark", action="append", default=[], metavar="FRAMES:LABEL",
                    help="a vertical line at an env-step count (say where a setting changed)")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    marks = []
    for m in args.mark:
        frames, _, text = m.partition(":")
        if not frames.isdigit():
            raise SystemExit(f"error: --mark {m!r}: expected FRAMES:LABEL, e.g. 829440:std_cap on")
        marks.append((int(frames), text))
    fig, axes = plt.subplots(3, 2, figsize=(11, 10))
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"error: --labels: {len(labels)} labels for {len(args.runs)} runs")
    for run, label in zip(args.runs, labels):
        ret, dist, wall = (series(run, n) for n in ("train/episode_return", "train/episode_distance", "time/elapsed_s"))
        steps = sorted(set(ret) & set(wall))
        for row, values in ((0, ret), (1, dist)):
            axes[row][0].plot(steps, [values.get(s, float("nan")) for s in steps], label=label)
            axes[row][1].plot([wall[s] / 60 for s in steps], [values.get(s, float("nan")) for s in steps], label=label)
        diag = [(series(run, "loss/kl_approx"), "approx KL"), (series(run, "loss/clip_fraction"), "clip fraction")]
        if (run / "metrics" / "scalars" / "train" / "std_cap.csv").is_file():
            diag.append((series(run, "train/std_cap"), "std cap"))
        for values, what in diag:
            xs = [s for s in steps if s in values]
            axes[2][0].plot(xs, [values[s] for s in xs], label=f"{label}: {what}", lw=1)
            axes[2][1].plot([wall[s] / 60 for s in xs], [values[s] for s in xs], label=f"{label}: {what}", lw=1)
        for frames, text in marks:
            at = min(steps, key=lambda s: abs(s - frames)) if steps else frames
            for row in range(3):
                axes[row][0].axvline(frames, color="grey", ls="--", lw=0.8)
                if at in wall:
                    axes[row][1].axvline(wall[at] / 60, color="grey", ls="--", lw=0.8)
            axes[0][0].annotate(text, (frames, 0.95), xycoords=("data", "axes fraction"), fontsize=7, ha="left")
    for row, what in ((0, "training episode return"), (1, "training episode distance (m)"),
                      (2, "PPO diagnostics")):
        axes[row][0].set_ylabel(what)
    for col, what in ((0, "env steps"), (1, "wall-clock (min)")):
        axes[2][col].set_xlabel(what)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    axes[2][0].legend(fontsize=7)
    axes[2][0].set_yscale("log")
    axes[2][1].set_yscale("log")
    fig.suptitle("ppo_locomamba, stochastic training policy (episodes that ended in each iteration)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
