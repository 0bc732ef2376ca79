"""Where pick_place episodes fail: grasp, lift or place. Closed-loop episodes of trained diffusion
policies (agents/bc_diffusion.py's own rollout, the same seeds and sampling noise as its eval), each
classified from the simulator's cube height over the episode:

    OMP_NUM_THREADS=1 python benchmarks/bc_diffusion_failures.py RUN_OR_EXPORT ... [--episodes 50] \\
        [--seed 100000] [--out benchmarks/results/bc_diffusion_failures.json]

Per episode: ``placed`` (the env's success), else ``not lifted`` (the cube never rose 1 cm: the grasp
failed), ``lifted, below the walls`` (it rose but never high enough to clear the bin's walls, or
fell), ``lifted over the walls, not placed`` (high enough, then missed the bin or never let go).
Also the step at which the cube first rose 1 cm (how quickly the grasp succeeds), and where the
episode left the cube: its height over its start, the finger opening, whether it is over the bin. Rows group
runs by denoiser (``_noattn`` where the policy has no attention sub-block; ``@<steps>`` where runs of
one denoiser were trained on schedules of different lengths), as bc_diffusion_table.
A run directory acts with its latest checkpoint, else its latest export; a file is used as given.
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

from benchmarks.bc_diffusion_table import split_by_schedule

LIFTED = 0.01                                   # m above the cube's start height: off the table
OUTCOMES = ("placed", "not lifted", "lifted, below the walls", "lifted over the walls, not placed")


def classify(heights: list[float], success: bool, wall: float) -> str:
    """heights: the cube centre's z at reset and after each step; wall: the bin wall height (m)."""
    if success:
        return OUTCOMES[0]
    rise = max(heights) - heights[0]
    return OUTCOMES[1] if rise < LIFTED else OUTCOMES[2] if rise < wall else OUTCOMES[3]


@torch.no_grad()
def episodes_of(path: Path, episodes: int, seed: int) -> tuple[str, int, list[dict]]:
    from agents.bc_diffusion import acting_policy, rollout
    from agents.manipulation.config import Config
    from agents.runtime.config import from_dict
    from agents.runtime.run_dir import RunDir
    from benchmarks.bc_diffusion_table import acting_checkpoint, variant_name
    from envs.manipulation.panda_env import BIN_HEIGHT, BIN_INNER

    ckpt = acting_checkpoint(path) if path.is_dir() else path
    if ckpt is None or not ckpt.is_file():
        raise SystemExit(f"{path}: no checkpoint or export")
    state = RunDir.load_checkpoint(ckpt)
    if state["task"] != "pick_place":
        raise SystemExit(f"{ckpt}: task {state['task']!r}; this probe classifies pick_place episodes")
    cfg = from_dict(Config, state["config"])
    heights = defaultdict(list)                               # episode -> cube centre z, reset and each step
    last = {}                                                 # episode -> the simulator's state at its last step

    def on_step(ep, env):
        last[ep] = env.privileged_state()
        heights[ep].append(float(last[ep]["object_pos"][2]))

    rows = []                                                 # rollout's {seed, success, steps} per episode
    rollout(cfg, acting_policy(cfg, state), "pick_place", episodes, seed, None, on_step=on_step, episode_rows=rows)
    for ep, row in enumerate(rows):
        z = heights[ep]
        end = last[ep]                                        # where a "not placed" episode left the cube
        row.update(outcome=classify(z, row["success"], BIN_HEIGHT), max_rise_m=max(z) - z[0],
                   first_lift_step=next((i for i, h in enumerate(z) if h - z[0] >= LIFTED), None),
                   end_rise_m=z[-1] - z[0], end_finger_width_m=float(end["finger_width"]),
                   end_over_bin=bool(np.all(np.abs(end["object_pos"][:2] - end["goal_pos"][:2]) < BIN_INNER)))
    return variant_name(cfg.policy.denoiser, cfg.policy.attention), cfg.train.steps, rows


def table(groups: dict[str, list[list[dict]]]) -> str:
    lines = ["| denoiser | runs | episodes | " + " | ".join(OUTCOMES) + " | first lift, median step (lifted episodes) |",
             "|---|---:|---:|" + "---:|" * len(OUTCOMES) + "---:|"]
    for name, runs in groups.items():
        rows = [r for run in runs for r in run]
        share = {o: 100 * np.mean([r["outcome"] == o for r in rows]) for o in OUTCOMES}
        lifts = [r["first_lift_step"] for r in rows if r["first_lift_step"] is not None]
        lines.append(f"| {name} | {len(runs)} | {len(rows)} | " + " | ".join(f"{share[o]:.0f}%" for o in OUTCOMES)
                     + (f" | {np.median(lifts):.0f} |" if lifts else " | - |"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories or checkpoint / export files")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=100000, help="first env seed (bc_diffusion eval's default)")
    ap.add_argument("--out", type=Path, default=None, help="JSON of every episode's row, per run")
    args = ap.parse_args(argv)
    for path in args.runs:                                   # before any episode runs
        if not path.exists():
            raise SystemExit(f"{path}: no such run directory or file")
    torch.set_num_threads(1)
    results = []
    for path in args.runs:
        label, schedule, rows = episodes_of(path, args.episodes, args.seed)
        results.append({"task": "pick_place", "denoiser": label, "schedule_steps": schedule, "run": str(path),
                        "episodes": rows})
        print(f"{path}: {label}, placed {sum(r['outcome'] == OUTCOMES[0] for r in rows)}/{len(rows)}", flush=True)
    groups, per_run = defaultdict(list), {}
    for r in split_by_schedule(results):                      # <denoiser>@<steps> rows, as the table's
        groups[r["denoiser"]].append(r["episodes"])
        per_run[r["run"]] = {"denoiser": r["denoiser"], "episodes": r["episodes"]}
    print(table(groups))
    if args.out:
        from agents.runtime.atomic_io import write_text_atomic

        write_text_atomic(args.out, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": per_run},
                                               indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
