"""Turn a sweep's results folder into learning-curve plots and a markdown table.

    python benchmarks/report.py benchmarks/results/sweep_pomdp [--out DIR]

Reads ``runs/*.json`` (one row per run, from benchmarks/sweep.py) and ``curves/*.csv``; groups runs by
env and (algorithm, memory kind, size), pooling seeds. Writes, into the results folder (or --out):
``curves_<env>.png`` (training return vs env steps and vs wall-clock: mean over seeds, min-max band)
and ``report.md`` (one table per env; failed runs listed with their error).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def load_rows(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]


def load_curve(results: Path, run_id: str) -> dict[str, np.ndarray]:
    path = results / "curves" / f"{run_id}.csv"
    if not path.is_file():
        return {}
    rows = list(csv.DictReader(path.open()))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("frames", "wall_s", "return")} if rows else {}


def group_label(row: dict) -> str:
    label = row["algorithm"] if row["algorithm"] != "ppo" else f"ppo+{row['kind']}"
    return label if row["size"] in ("default", "") else f"{label} ({row['size']})"


def _stat(values, fmt="{:.3f}") -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(float(np.mean(values)))} ± {fmt.format(float(np.std(values)))}"


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` batches (per-batch returns are noisy: few episodes end
    in a batch)."""
    if window <= 1 or len(y) < 2:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    n = np.minimum(np.arange(1, len(y) + 1), window)
    return (c[1:] - c[np.arange(1, len(y) + 1) - n]) / n


def band(curves: list[dict], x_key: str, points: int = 100, window: int = 1):
    """Mean, min and max of the seeds' (smoothed) returns on a common grid, up to the shortest seed's end."""
    curves = [c for c in curves if len(c.get(x_key, ())) >= 1]
    if not curves:
        return None
    lo = max(c[x_key][0] for c in curves)
    hi = min(c[x_key][-1] for c in curves)
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, c[x_key], smooth(c["return"], window)) for c in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def plot_env(env: str, groups: dict[str, list[dict]], results: Path, out: Path, window: int = 5) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(sorted(groups.items())):
        curves = [load_curve(results, r["run_id"]) for r in rows if r["status"] == "ok"]
        for ax, x_key in zip(axes, ("frames", "wall_s")):
            b = band(curves, x_key, window=window)
            if b is None:
                continue
            grid, mean, lo, hi = b
            color = colors[i % len(colors)]
            ax.plot(grid, mean, color=color, label=f"{label} (n={len(curves)})")
            ax.fill_between(grid, lo, hi, color=color, alpha=0.15)
    threshold = next((r.get("threshold") for rows in groups.values() for r in rows if r.get("threshold") is not None), None)
    for ax, xlabel in zip(axes, ("env steps", "wall-clock (s)")):
        if threshold is not None:
            ax.axhline(threshold, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"training return (per batch, moving average of {window})")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{env}: return vs env steps (mean, min-max over seeds)")
    axes[1].set_title(f"{env}: return vs wall-clock")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / f"curves_{env}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def table(env: str, groups: dict[str, list[dict]]) -> list[str]:
    rows0 = next(iter(groups.values()))
    threshold = next((r.get("threshold") for rows in groups.values() for r in rows if r.get("threshold") is not None), "-")
    options = next((r.get("task_options") for r in rows0 if r.get("task_options")), None)
    lines = [f"### {env}", "",
             f"task: {rows0[0].get('task', '-')} {rows0[0].get('level', '')}{f' {options}' if options else ''}, "
             f"threshold {threshold}", "",
             "| run | seeds | params | final greedy return | final train return | best train return | "
             "solved | steps to threshold | wall-clock to threshold (s) | env steps/s | run time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(groups.items(), key=lambda kv: -float(np.mean([r.get("final_return", -1e9) for r in kv[1]
                                                                   if r["status"] == "ok"] or [-1e9])))
    for label, rows in order:
        ok = [r for r in rows if r["status"] == "ok"]
        solved = [r for r in ok if r.get("steps_to_threshold") is not None]
        params = sorted({r["params"] for r in ok})
        lines.append(
            f"| {label} | {len(ok)}{f' (+{len(rows) - len(ok)} failed)' if len(rows) > len(ok) else ''} | "
            f"{'/'.join(f'{p:,}' for p in params) or '-'} | {_stat([r['final_return'] for r in ok])} | "
            f"{_stat([r['final_train_return'] for r in ok])} | {_stat([r['best_return'] for r in ok])} | "
            f"{len(solved)}/{len(ok)} | {_stat([r['steps_to_threshold'] for r in solved], '{:,.0f}')} | "
            f"{_stat([r['seconds_to_threshold'] for r in solved], '{:.1f}')} | "
            f"{_stat([r['env_steps_per_s'] for r in ok], '{:,.0f}')} | {_stat([r['total_s'] for r in ok], '{:.0f}')} |")
    return lines + [""]


def summary(by_env: dict[str, dict[str, list[dict]]]) -> list[str]:
    """One row per run group, one column per env: final greedy return (mean over seeds), seeds that
    reached the threshold, and their mean env steps to it."""
    envs = sorted(by_env)
    labels = sorted({label for groups in by_env.values() for label in groups})
    lines = ["| run | " + " | ".join(envs) + " |", "|---|" + "---:|" * len(envs)]
    for label in labels:
        cells = []
        for env in envs:
            ok = [r for r in by_env[env].get(label, []) if r["status"] == "ok"]
            if not ok:
                cells.append("")
                continue
            solved = [r["steps_to_threshold"] for r in ok if r.get("steps_to_threshold") is not None]
            steps = f", {np.mean(solved) / 1000:.0f}k" if solved else ""
            cells.append(f"{np.mean([r['final_return'] for r in ok]):.2f} ({len(solved)}/{len(ok)}{steps})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + ["", "Cell: final greedy return, mean over seeds (seeds that reached the threshold / seeds, "
                        "their mean env steps to it).", ""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results folder written by benchmarks/sweep.py")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the results folder)")
    parser.add_argument("--smooth", type=int, default=5, help="moving average over this many batches in plots")
    args = parser.parse_args(argv)
    rows = load_rows(args.results)
    if not rows:
        print(f"error: no runs/*.json under {args.results}", file=sys.stderr)
        return 2
    out = args.out or args.results
    out.mkdir(parents=True, exist_ok=True)
    by_env: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_env[row["env"]][group_label(row)].append(row)
    lines = [f"# Sweep report: {args.results}", "",
             f"{len(rows)} runs ({sum(r['status'] == 'ok' for r in rows)} ok). Returns are per episode, "
             "normalised so that 1.0 is the maximum (card tasks: +-1/K per answer; CartPole: 1/L per step). "
             "'final greedy return': the final policy, deterministic, mean over evaluation episodes. "
             "'train return': mean return of the episodes that ended in a batch (stochastic policy); final = mean "
             "of the last 3 batches. 'solved': the mean return of the >= 10 most recent finished episodes reached "
             "the threshold (- 1e-3); steps and wall-clock to threshold are over the solved seeds only "
             "(wall-clock excludes start-up and evaluation). Values: mean ± std over seeds.", ""]
    lines += ["## Summary", ""] + summary(by_env) + ["## Per env", ""]
    for env, groups in sorted(by_env.items()):
        png = plot_env(env, groups, args.results, out, args.smooth)
        lines += table(env, groups) + [f"![{env}]({png.name})", ""]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["## Failed runs", ""] + [f"- {r['run_id']}: {r.get('error', '?')}" for r in failed] + [""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"wrote {out / 'report.md'} and {len(by_env)} plot(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
