"""DP3 UNet vs Mamba Policy denoisers: success, parameters and inference time per task.

    python benchmarks/bc_diffusion_table.py runs/bc_diffusion/push_* runs/bc_diffusion/pick_place_* \\
        [--evaluate --episodes 20] [--fit] [--out benchmarks/results/bc_diffusion.md]

Each argument is a run directory of agents/bc_diffusion.py. Its result is the eval json of its
latest checkpoint (``RUN/eval/eval_ckpt_<step>.json``, written by ``bc_diffusion.py eval``);
with --evaluate, runs without one are evaluated first (``eval RUN --episodes N --no-video``).
Rows group runs by (task, denoiser): success mean +- std over the runs (seeds), parameters,
DDIM inference ms per action chunk (mean of the runs' means, and their p95s). A Mamba denoiser
trained without XMamba's attention sub-block (``policy.attention=false`` in the run's config.yaml)
is its own row, ``<denoiser>_noattn`` (benchmarks/bc_diffusion_grid.py's variant name); so are runs
of one denoiser on schedules of different lengths (train.steps), ``<denoiser>@<steps>``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch


def acting_checkpoint(run: Path) -> Path | None:
    """The run's latest training checkpoint, else its latest `export` (a run trained on a GPU
    machine comes back as config + logs + export/, without the training checkpoints)."""
    from agents.runtime.cli import checkpoint_path
    from agents.runtime.run_dir import RunDirError

    try:
        return checkpoint_path(run, "table", exports=True) if run.is_dir() else None
    except RunDirError:
        return None


def latest_result(run: Path, evaluate: bool, episodes: int | None) -> dict | None:
    ckpt = acting_checkpoint(run)
    if ckpt is None:
        print(f"skip {run}: no checkpoint or export", file=sys.stderr)
        return None
    path = run / "eval" / f"eval_{ckpt.stem}.json"
    if not path.is_file() and evaluate:
        from agents.bc_diffusion import main as agent_main

        argv = ["eval", str(ckpt), "--no-video"] + (["--episodes", str(episodes)] if episodes else [])
        if agent_main(argv) != 0:
            print(f"skip {run}: eval failed", file=sys.stderr)
            return None
    if not path.is_file():
        print(f"skip {run}: no {path.name} (run `bc_diffusion.py eval {run}` or pass --evaluate)", file=sys.stderr)
        return None
    result = {**json.loads(path.read_text()), "run": str(run)}
    result["denoiser"] = denoiser_label(run, result["denoiser"])
    result["schedule_steps"] = run_config(run).get("train", {}).get("steps")
    return result


def run_config(run: Path) -> dict:
    """The run's config.yaml as a dict ({} without one)."""
    import yaml

    config = run / "config.yaml"
    return (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}


def split_by_schedule(results: list[dict]) -> list[dict]:
    """Where one task's runs of a denoiser were trained on schedules of different lengths (train.steps:
    the cosine decays to its end, so 7,200 and 14,400 steps are different runs, not one run's two
    points), each length is its own row, ``<denoiser>@<steps>``; a single schedule keeps the plain name."""
    lengths = defaultdict(set)
    for r in results:
        lengths[(r["task"], r["denoiser"])].add(r.get("schedule_steps"))
    return [{**r, "denoiser": f"{r['denoiser']}@{r.get('schedule_steps')}"}
            if len(lengths[(r["task"], r["denoiser"])]) > 1 else r for r in results]


def variant_name(denoiser: str, attention: bool) -> str:
    """The row name: the denoiser, with ``_noattn`` for a Mamba one without XMamba's attention."""
    return f"{denoiser}_noattn" if denoiser != "unet" and attention is False else denoiser


def denoiser_label(run: Path, denoiser: str) -> str:
    """variant_name from the run's config.yaml (the eval json does not say whether attention was on)."""
    return variant_name(denoiser, run_config(run).get("policy", {}).get("attention"))


@torch.no_grad()
def open_loop_error(run: Path, windows: int = 128, data: Path | None = None) -> float:
    """Mean |sampled action - expert action| over the executed steps of ``windows`` dataset
    windows (seeded), in normalised action units ([-1, 1]): whether the policy fits its own
    training data, which tells under-fitting from closed-loop drift when success is low. With
    ``data`` (demos the run never saw, e.g. generated with another --seed) the same error on them:
    a training error far below it is memorisation of the demos, not a better policy."""
    return open_loop_errors(run, [data], windows)[0]


def open_loop_errors(run: Path, datasets: list, windows: int = 128) -> list[float]:
    """``open_loop_error`` on each of ``datasets`` (None: the run's own), the run's policy loaded once."""
    from agents.bc_diffusion import Windows, acting_policy, open_loop_error as policy_error
    from agents.manipulation.config import Config
    from agents.runtime.config import from_dict
    from agents.runtime.run_dir import RunDir

    state = RunDir.load_checkpoint(acting_checkpoint(run))
    cfg = from_dict(Config, state["config"])
    policy = acting_policy(cfg, state)
    errors = []
    for data in datasets:
        batch = Windows(cfg, torch.device("cpu"), None if data is None else str(data)).sample(
            windows, torch.Generator().manual_seed(0))
        errors.append(policy_error(policy, batch, torch.Generator().manual_seed(0)))
    return errors


def plot_losses(results: list[dict], out: Path) -> None:
    """Per task: the training loss (noise MSE, RUN/bc_diffusion/scalars/train/loss.csv) vs step, one
    colour per denoiser row, log scale (flat or still falling?); and where runs validated on held-out
    demos (train.val_every_steps), a second row with their val/open_loop_error (memorising or
    generalising?), also log scale: the end of training, where the models differ, is a few % of the start."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(run: str, key: str):
        f = Path(run) / "bc_diffusion" / "scalars" / key
        return np.array([[float(v) for v in row] for row in csv.reader(f.open())]).T if f.is_file() else None

    tasks = sorted({r["task"] for r in results})
    val = any(series(r["run"], "val/open_loop_error.csv") is not None for r in results)
    fig, axes = plt.subplots(1 + val, len(tasks), figsize=(6 * len(tasks), 4 * (1 + val)), squeeze=False)
    colours = {}
    for r in sorted(results, key=lambda r: r["run"]):
        c = colours.setdefault(r["denoiser"], f"C{len(colours)}")
        col = tasks.index(r["task"])
        train = series(r["run"], "train/loss.csv")
        if train is not None:
            steps, loss = train
            k = max(1, len(loss) // 50)                       # a moving mean over ~2% of the run
            axes[0, col].plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), color=c,
                              label=r["denoiser"])
        held = series(r["run"], "val/open_loop_error.csv") if val else None
        if held is not None:
            axes[1, col].plot(*held, "o-", ms=3, color=c, label=r["denoiser"])
    for row, (ylabel, yscale) in enumerate([("training loss (noise MSE)", "log"),
                                            ("held-out open-loop action error", "log")][: 1 + val]):
        for ax, task in zip(axes[row], tasks):
            handles, labels = ax.get_legend_handles_labels()
            unique = dict(zip(labels, handles))
            ax.legend(unique.values(), unique.keys())
            ax.set(title=task, xlabel="step", ylabel=ylabel, yscale=yscale)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def held_out_cell(rs: list[dict]) -> str:
    errors = [r["heldout_open_loop_error"] for r in rs if "heldout_open_loop_error" in r]
    return f"{np.mean(errors):.3f}" if errors else "-"


def table(results: list[dict]) -> str:
    groups = defaultdict(list)
    for r in results:
        groups[(r["task"], r["denoiser"])].append(r)
    order = {"unet": 0, "mamba1": 1, "mamba1_noattn": 1.5, "mamba2": 2, "bidirectional": 3, "hydra": 4}
    fit = all("open_loop_error" in r for r in results)
    heldout = any("heldout_open_loop_error" in r for r in results)
    lines = ["# Diffusion-policy BC: DP3 UNet vs Mamba Policy", "",
             "Generated by `python benchmarks/bc_diffusion_table.py RUN_DIR ...` (see its header).", ""]
    for task in sorted({t for t, _ in groups}):
        lines += [f"## {task}", "",
                  "| denoiser | params (total) | runs | episodes/run | success | episode length | "
                  "inference ms/chunk (mean) | p95 |" + (" open-loop action error |" if fit else "")
                  + (" held-out open-loop error |" if heldout else ""),
                  "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if fit else "") + ("---:|" if heldout else "")]
        for (t, den), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][1].split("@")[0], 9),
                                                                   int(kv[0][1].partition("@")[2] or 0))):
            if t != task:
                continue
            s = np.array([r["success_rate"] for r in rs])
            params = sorted({r["params_total"] for r in rs})
            lines.append(f"| {den} | {'/'.join(f'{p / 1e6:.2f}M' for p in params)} | {len(rs)} | "
                         f"{rs[0]['episodes']} | {s.mean():.2f} ± {s.std():.2f} | "
                         f"{np.mean([r['mean_episode_length'] for r in rs]):.1f} | "
                         f"{np.mean([r['inference_ms_mean'] for r in rs]):.1f} | "
                         f"{np.mean([r['inference_ms_p95'] for r in rs]):.1f} |"
                         + (f" {np.mean([r['open_loop_error'] for r in rs]):.3f} |" if fit else "")
                         + (f" {held_out_cell(rs)} |" if heldout else ""))
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories of agents/bc_diffusion.py")
    ap.add_argument("--evaluate", action="store_true", help="evaluate runs that have no eval json yet")
    ap.add_argument("--episodes", type=int, default=None, help="episodes for --evaluate (default: the config's)")
    ap.add_argument("--fit", action="store_true", help="add the open-loop action error on the training data "
                    "(mean |sampled - expert| of the executed steps, normalised units; needs the dataset)")
    ap.add_argument("--heldout", type=Path, default=None, metavar="DATASET",
                    help="add the same error on demos no run trained on (a dataset of `bc_diffusion.py "
                         "generate` with another --seed, same task; a run of another task is skipped)")
    ap.add_argument("--loss-png", type=Path, default=None, metavar="FILE",
                    help="also plot every run's training loss vs step (one panel per task; a second row: its "
                         "val/open_loop_error where the run validated on held-out demos)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bc_diffusion.md"))
    args = ap.parse_args(argv)
    if args.heldout is not None and not (args.heldout / "config.json").is_file():
        ap.error(f"--heldout {args.heldout}: no dataset there (expected {args.heldout}/config.json, "
                 "as `bc_diffusion.py generate --out DIR` writes)")
    results = split_by_schedule([r for r in (latest_result(run, args.evaluate, args.episodes) for run in args.runs) if r])
    heldout_task = json.loads((args.heldout / "config.json").read_text())["task"] if args.heldout else None
    for r in results:   # one load of each run's policy for both errors
        keys = (["open_loop_error"] if args.fit else []) + \
            (["heldout_open_loop_error"] if heldout_task is not None and r["task"] == heldout_task else [])
        datasets = [None if k == "open_loop_error" else args.heldout for k in keys]
        r.update(zip(keys, open_loop_errors(Path(r["run"]), datasets)) if keys else {})
    if not results:
        print("error: no results to tabulate", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = table(results)
    args.out.write_text(text + "\n")
    print(text)
    if args.loss_png is not None:
        plot_losses(results, args.loss_png)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
