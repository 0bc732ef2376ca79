"""What goal seeking alone achieves in a drone field: a controller that sees only the state vector
and flies straight at the goal, never looking at the depth image. A learned policy's success above
this line is what its vision adds (benchmarks/results/td3_drone_probe.md, td3_drone_forest_2seeds.md).

    python benchmarks/drone_straight_line.py --env mambazoo/DroneForest-v0 mambazoo/DroneWalls-v0 \\
        --episodes 50 --seed 10000 10001 12345 12346 --out benchmarks/results/drone_straight_line.md

The episodes are those of ``python agents/vmamba_td3.py --eval POLICY --eval-seed SEED`` (with
``--eval-env`` for another field) for a policy trained with ``--config`` (default
configs/drone/gpu_forest.yaml: 20 obstacles, 200 steps): the same env stack (agents/drone/build.py's
make_env, seeded once with SEED, then one rollout an episode), so the layouts are paired with the
policy's. The controller (state entries as envs/drone/drone_env.py documents them): yaw rate 2 x bearing / (pi/3), forward speed cos(bearing) clipped to [0, 1], vertical
speed from the goal's relative height (full speed from 1 m off), in the env's normalised units.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch


def straight_line_action(state: torch.Tensor) -> torch.Tensor:
    """state [..., 11] -> action [..., 3]: forward, yaw rate, vertical (normalised)."""
    bearing = torch.atan2(state[..., 7], state[..., 8])
    return torch.stack([torch.cos(bearing).clamp(0.0, 1.0), (2.0 * bearing / (math.pi / 3)).clamp(-1.0, 1.0),
                        state[..., 2].clamp(-1.0, 1.0)], dim=-1)


def fly(config: str, env_id: str, episodes: int, seed: int, overrides: tuple = ()) -> dict:
    """``episodes`` straight-line episodes on --eval's layouts of seed ``seed`` in ``env_id``."""
    from tensordict.nn import TensorDictModule

    from agents.drone.build import make_env
    from agents.drone.config import Config
    from agents.runtime.config import load_config

    cfg = load_config(Config, config, [f"env.id={env_id}", *overrides])
    env = make_env(cfg, seed=seed)
    # the env's "state" vector is the TorchRL stack's "observation" (the newest step)
    policy = TensorDictModule(straight_line_action, in_keys=["observation"], out_keys=["action"])
    outcome, returns = {"success": 0, "collision": 0, "timeout": 0}, []
    with torch.no_grad():
        for _ in range(episodes):       # as agents/drone/build.py's evaluate: one rollout an episode
            r = env.rollout(100_000, policy, break_when_any_done=True)
            success, collision = bool(r["next", "success"][-1]), bool(r["next", "collision"][-1])
            outcome["success" if success else "collision" if collision else "timeout"] += 1
            returns.append(float(r["next", "reward"].sum()))
    env.close()
    return {**outcome, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", nargs="+", default=["mambazoo/DroneForest-v0"], help="drone env ids")
    ap.add_argument("--config", default="configs/drone/gpu_forest.yaml",
                    help="the trained policies' config: its env settings (obstacles, episode length) and window")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, nargs="+", default=[12345],
                    help="--eval-seed(s) of the policies' evals to pair with (one row per env and seed)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    from envs import DRONE_IDS
    bad = [e for e in args.env if e not in DRONE_IDS.values()]
    if bad:
        ap.error(f"--env {' '.join(bad)}: not a drone field; one of {', '.join(sorted(DRONE_IDS.values()))}")
    lines = [f"Command: `python benchmarks/drone_straight_line.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Episodes: those of `vmamba_td3.py --eval POLICY --eval-seed SEED` for a policy trained "
             f"with {args.config} (`--eval-env` for the other fields).", "",
             "| env | --eval-seed | episodes | success | collision | timeout | return |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    from agents.runtime.config import ConfigError
    for env_id in args.env:
        for seed in args.seed:
            try:
                r = fly(args.config, env_id, args.episodes, seed)
            except (ConfigError, FileNotFoundError) as err:
                ap.error(f"--config {args.config}: {err}")
            n = args.episodes
            lines.append(f"| {env_id} | {seed} | {n} | {r['success']}/{n} ({100 * r['success'] / n:.0f}%) | "
                         f"{r['collision']}/{n} | {r['timeout']}/{n} | {r['return_mean']:.2f} +- {r['return_std']:.2f} |")
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
