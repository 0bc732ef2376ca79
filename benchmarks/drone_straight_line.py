"""What goal seeking alone achieves in a drone field: a controller that sees only the state vector
and flies straight at the goal, never looking at the depth image. A learned policy's success above
this line is what its vision adds (benchmarks/results/td3_drone_probe.md, td3_drone_forest_2seeds.md).

    python benchmarks/drone_straight_line.py --env mambazoo/DroneForest-v0 mambazoo/DroneWalls-v0 \\
        --episodes 50 --seed 12345 --num-obstacles 20 --out benchmarks/results/drone_straight_line.md

The controller (state entries as envs/drone/drone_env.py documents them): yaw rate 2 x bearing /
(pi/3), forward speed cos(bearing) clipped to [0, 1], vertical speed from the goal's relative height
(full speed from 1 m off), all in the env's normalised action units [-1, 1].
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def straight_line_action(state: np.ndarray) -> np.ndarray:
    """state [11] -> action [3]: forward, yaw rate, vertical (normalised)."""
    bearing = np.arctan2(state[7], state[8])
    return np.array([np.clip(np.cos(bearing), 0.0, 1.0),
                     np.clip(2.0 * bearing / (np.pi / 3), -1.0, 1.0),
                     np.clip(state[2] / 1.0, -1.0, 1.0)], dtype=np.float32)


def fly(env_id: str, episodes: int, seed: int, num_obstacles: int | None, max_steps: int) -> dict:
    import gymnasium as gym

    import envs  # noqa: F401  (registers the mambazoo/ ids)

    env = gym.make(env_id, image_size=16, num_obstacles=num_obstacles, max_episode_steps=max_steps)
    outcome = {"success": 0, "collision": 0, "timeout": 0}
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(straight_line_action(obs["state"]))
            total += reward
            done = terminated or truncated
        outcome["success" if info["success"] else "collision" if info["collision"] else "timeout"] += 1
        returns.append(total)
    env.close()
    return {**outcome, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", nargs="+", default=["mambazoo/DroneForest-v0"], help="drone env ids")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=12345, help="reset seed of the first episode (then +1 each)")
    ap.add_argument("--num-obstacles", type=int, default=None, help="default: each field's own")
    ap.add_argument("--max-steps", type=int, default=200, help="episode length limit (the comparisons' 200)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    from envs import DRONE_IDS
    bad = [e for e in args.env if e not in DRONE_IDS.values()]
    if bad:
        ap.error(f"--env {' '.join(bad)}: not a drone field; one of {', '.join(sorted(DRONE_IDS.values()))}")
    lines = [f"Command: `python benchmarks/drone_straight_line.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "| env | obstacles | episodes (reset seeds) | success | collision | timeout | return |",
             "|---|---|---|---:|---:|---:|---:|"]
    for env_id in args.env:
        r = fly(env_id, args.episodes, args.seed, args.num_obstacles, args.max_steps)
        n = args.episodes
        lines.append(f"| {env_id} | {args.num_obstacles or 'default'} | {args.seed}-{args.seed + n - 1} | "
                     f"{r['success']}/{n} ({100 * r['success'] / n:.0f}%) | {r['collision']}/{n} | {r['timeout']}/{n} | "
                     f"{r['return_mean']:.2f} +- {r['return_std']:.2f} |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
