"""Does obstacle information make DroneForest solvable, and can this TD3 learn to use it? (issue 24, CPU probe)

The env is DroneEnv(field="forest", image_size=16, num_obstacles=20, max_episode_steps=200) (the field of
configs/drone/gpu_forest.yaml, same dynamics, reward and layouts) with its observation replaced by a
27-dim vector: the 11-dim ``state`` followed by a 16-beam "lidar", the per-column minimum of the depth
image over its two middle rows (rows 6 and 7 of 16). Why those rows: the camera casts row i at
v = 1 - 2(i+1)/16 (envs/scene/depth_camera.py), so row 7 is level and row 6 looks up by atan(0.125);
neither can see the ground (rows below do: at 1.5 m altitude row 8 sees it at 12 m, the bottom row at
1.5 m), and trees are 6-10 m tall, so both see every trunk ahead. Depth is z-depth / 15 (metres along
the optical axis), so beam j's obstacle point in the body frame is (x, y) = 15 r_j * (1, 1 - 2j/16)
(column 0 is the left edge, +45 deg; FOV 90 deg). The wrapper is registered in this process as
``probe/DroneForestLidar-v0``; the agent treats a non-``mambazoo/Drone*`` id as a vector env
(``model.encoder=memory``), as the state-only probe did (benchmarks/results/td3_drone_probe.md).

Subcommands:
  controller  hand-coded controllers on that observation over 50 seeded episodes (reset seeds
              20000-20049 by default): the straight-line one of td3_drone_probe.md and reactive
              variants that steer into a free corridor near the goal bearing (see ``reactive``)
  train       agents.vmamba_td3.main on the lidar env; the probe's config (PROBE_CONFIG, written to a
              temp YAML) plus any key=value overrides; ``--resume RUN [key=value ...]`` passes through
  eval        a checkpoint (file or run dir: its newest) over 50 seeded episodes through gymnasium,
              deterministic actor on K-step windows (first frame repeated at reset, as the agent's
              CatFrames), success / collision / timeout / return

Commands run for benchmarks/results/td3_drone_lidar_probe.md (2-core shared CPU, repo root; every one
prefixed with `OMP_NUM_THREADS=1 nice -n 15`, P=benchmarks/td3_drone_lidar_probe.py):
  python $P controller --variants all                                         # seeds 20000-20049
  python $P controller --variants straight,reactive_a,reactive_f,reactive_h --seed0 10000
  python $P controller --variants straight,reactive_f --seed0 30000 --episodes 200
  python $P train run_root=runs/lidar_probe                                   # run 1: 60k steps, seed 0
  python $P train --resume runs/lidar_probe/vmamba_td3/probe_forest_lidar-20261202-065555
      train.total_frames=100000                                               # run 1 continued to 100k
  python $P train run_root=runs/lidar_probe seed=1 name=probe_forest_lidar_seed1          # run 2
  python $P train run_root=runs/lidar_probe name=probe_forest_lidar_upd1
      train.updates_per_step=1.0 train.total_frames=50000                     # run 3: the one change
  python $P eval runs/lidar_probe/keep1/ckpt_000000060000.pt --json runs/lidar_probe/eval1_060k.json
      (and each 10k checkpoint of each run: the agent keeps only its newest two, so a shell loop
      `cp -n <run>/checkpoints/*.pt runs/lidar_probe/keepN/` every 15 s kept them while it trained)
  python $P curve runs/lidar_probe/vmamba_td3/<run>
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/td3_drone_lidar_probe.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym
import numpy as np

ENV_ID = "probe/DroneForestLidar-v0"
ENV_KW = dict(field="forest", image_size=16, num_obstacles=20, max_episode_steps=200)
ROWS = slice(6, 8)            # the level row (7) and the one above it (6): never the ground
BEAMS = 16
MAX_DEPTH = 15.0
EVAL_SEEDS = range(20000, 20050)   # the layouts of td3_drone_probe.md's second straight-line row

# the state-only probe's settings (td3_drone_probe.md), on the lidar env
PROBE_CONFIG = {
    "name": "probe_forest_lidar", "seed": 0, "run_root": "runs/lidar_probe", "logger": "csv",
    "env": {"id": ENV_ID, "num_envs": 1},
    "model": {"encoder": "memory", "memory": "gru", "memory_hidden": 64, "hidden_dim": 128},
    "td3": {"ou_anneal_frames": 30000},
    "replay": {"size": 100000, "batch_size": 128, "seq_len": 4},
    "train": {"total_frames": 60000, "learning_starts": 2000, "frames_per_batch": 200, "updates_per_step": 0.5,
              "checkpoint_every_frames": 5000, "eval_every_frames": 10000, "eval_episodes": 10},
}


# ------------------------------------------------------------------------------------------ env
class LidarObs(gym.ObservationWrapper):
    """Dict(depth [1,16,16], state [11]) -> Box [27]: state, then 16 ranges (z-depth / 15, in [0, 1])."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (11 + BEAMS,), np.float32)

    def observation(self, obs):
        ranges = obs["depth"][0, ROWS, :].min(0)
        return np.concatenate([obs["state"], ranges]).astype(np.float32)


def make_lidar_env(**kwargs):
    from envs.drone.drone_env import DroneEnv

    return LidarObs(DroneEnv(**{**ENV_KW, **kwargs}))


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=make_lidar_env, max_episode_steps=None)  # the env truncates itself


# ----------------------------------------------------------------------------------- controllers
U = 1.0 - 2.0 * np.arange(BEAMS) / BEAMS          # lateral / forward of each beam (tan of its angle, + left)
BEAM_ANGLE = np.arctan(U)


def goal_terms(obs):
    rel, sin_b, cos_b = obs[0:3], obs[7], obs[8]
    return rel, math.atan2(sin_b, cos_b)


def straight(obs, p=None):
    """td3_drone_probe.md's straight-line controller: goal seeking only."""
    rel, bearing = goal_terms(obs)
    return np.array([np.clip(math.cos(bearing), 0.0, 1.0), np.clip(2.0 * bearing / (np.pi / 3), -1, 1),
                     np.clip(rel[2] / 0.3, -1, 1)], np.float32)


def corridor_free(obs, thetas, margin):
    """Free distance (m) along each candidate heading: the nearest obstacle point ahead whose lateral
    offset from the heading's line is under ``margin`` (body radius + clearance). Points read 15 m
    (nothing seen) are ignored; the corridor's view is limited to the 90-deg FOV."""
    d = obs[11:] * MAX_DEPTH                           # z-depth of each beam
    seen = d < MAX_DEPTH - 1e-3
    px, py = d[seen], d[seen] * U[seen]               # body-frame points [M]
    free = np.full(len(thetas), MAX_DEPTH)
    for i, t in enumerate(thetas):
        along = px * math.cos(t) + py * math.sin(t)
        lat = -px * math.sin(t) + py * math.cos(t)
        hit = (along > 0) & (np.abs(lat) < margin)
        if hit.any():
            free[i] = along[hit].min()
    return free


def reactive(obs, p):
    """Goal seeking through a free corridor. Candidate headings span the FOV (+-40 deg, 33 of them);
    the chosen one is the candidate nearest the goal bearing whose corridor (half-width p['margin'])
    is free for p['look'] m (or up to the goal); if none, the freest. Yaw rate 2 x heading / (pi/3);
    forward speed cos(heading) x a brake: (free ahead - p['stop']) / p['slow'] clipped [0, 1], where
    'free ahead' is the corridor along the current body axis; vertical as the straight controller."""
    rel, bearing = goal_terms(obs)
    dist = float(obs[3])
    thetas = np.linspace(-np.radians(40), np.radians(40), 33)
    free = corridor_free(obs, thetas, p["margin"])
    need = min(p["look"], dist)
    target = float(np.clip(bearing, thetas[0], thetas[-1]))
    ok = free >= need
    if abs(bearing) > np.radians(45):                 # goal outside the view: turn towards it first
        heading = bearing
    elif ok.any():
        cost = np.abs(thetas - target) - p.get("free_bonus", 0.0) * np.minimum(free, p["look"]) / p["look"]
        heading = float(thetas[ok][np.argmin(cost[ok])])
    else:
        heading = float(thetas[np.argmax(free)])
    ahead = corridor_free(obs, np.array([0.0]), p["margin"])[0]
    brake = np.clip((ahead - p["stop"]) / p["slow"], 0.0, 1.0)
    fwd = np.clip(math.cos(heading), 0.0, 1.0) * brake
    fwd = max(fwd, p.get("min_fwd", 0.0)) if ahead > p["stop"] else fwd
    return np.array([fwd, np.clip(p["gain"] * heading / (np.pi / 3), -1, 1), np.clip(rel[2] / 0.3, -1, 1)],
                    np.float32)


VARIANTS = {   # name -> (controller, params)
    "straight": (straight, None),
    "reactive_a": (reactive, dict(margin=0.6, look=4.0, stop=0.8, slow=2.0, gain=2.0)),
    "reactive_b": (reactive, dict(margin=0.8, look=5.0, stop=1.0, slow=2.5, gain=2.0)),
    "reactive_c": (reactive, dict(margin=0.8, look=6.0, stop=1.2, slow=3.0, gain=3.0)),
    "reactive_d": (reactive, dict(margin=1.0, look=6.0, stop=1.2, slow=3.0, gain=3.0)),
    "reactive_e": (reactive, dict(margin=0.8, look=6.0, stop=1.2, slow=3.0, gain=3.0, free_bonus=0.3)),
    "reactive_f": (reactive, dict(margin=0.5, look=4.0, stop=0.8, slow=2.0, gain=2.0)),
    "reactive_g": (reactive, dict(margin=0.6, look=3.0, stop=0.8, slow=2.0, gain=2.0)),
    "reactive_h": (reactive, dict(margin=0.6, look=4.0, stop=0.6, slow=1.5, gain=3.0)),
}


def run_episodes(policy, seeds, env=None) -> dict:
    """policy(obs) -> action; one episode per reset seed. Returns counts and return stats."""
    register()
    env = env or gym.make(ENV_ID)
    out = {"success": 0, "collision": 0, "timeout": 0, "returns": [], "lengths": [], "timeout_distance": []}
    for s in seeds:
        obs, _ = env.reset(seed=int(s))
        if hasattr(policy, "reset"):
            policy.reset(obs)
        ret, n = 0.0, 0
        while True:
            obs, r, term, trunc, info = env.step(policy(obs))
            ret, n = ret + r, n + 1
            if term or trunc:
                break
        out["success"] += int(info["success"] > 0)
        out["collision"] += int(info["collision"] > 0)
        out["timeout"] += int(trunc and not term)
        if trunc and not term:
            out["timeout_distance"].append(float(info["distance_to_goal"]))
        out["returns"].append(ret)
        out["lengths"].append(n)
    env.close()
    return out


def summary(name, r, n) -> str:
    ret = np.array(r["returns"])
    return (f"| {name} | {r['success']}/{n} ({100 * r['success'] / n:.0f}%) | {r['collision']}/{n} | "
            f"{r['timeout']}/{n} | {ret.mean():.2f} +- {ret.std():.2f} | {np.mean(r['lengths']):.0f} | "
            + (f"{np.mean(r['timeout_distance']):.1f} |" if r["timeout_distance"] else "- |"))


HEADER = ("| controller | success | collision | timeout | return | mean length | goal distance at timeout (m) |\n"
          "|---|---:|---:|---:|---:|---:|---:|")


def cmd_controller(args) -> int:
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    seeds = range(args.seed0, args.seed0 + args.episodes)
    print(HEADER)
    for name in names:
        fn, p = VARIANTS[name]
        t0 = time.perf_counter()
        r = run_episodes(lambda o: fn(o, p), seeds)
        print(summary(name, r, args.episodes) + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


# --------------------------------------------------------------------------------------- train
def cmd_train(rest: list[str]) -> int:
    import yaml

    register()
    from agents.vmamba_td3 import main

    if "--resume" in rest or "--eval" in rest or "--config" in rest:
        return main(rest)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="lidar_probe_", delete=False) as f:
        yaml.safe_dump(PROBE_CONFIG, f, sort_keys=False)
    print(f"config: {f.name}\n{yaml.safe_dump(PROBE_CONFIG, sort_keys=False)}", flush=True)
    return main(["--config", f.name, *rest])


# ---------------------------------------------------------------------------------------- eval
class CheckpointActor:
    """The agent's actor from a checkpoint, acting on K-step windows of the observation."""

    def __init__(self, ckpt: Path):
        import torch

        from agents.drone.build import TD3Nets
        from agents.drone.config import Config
        from agents.runtime.config import from_dict

        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        self.cfg = from_dict(Config, state["config"])
        self.frames, self.updates = int(state["frames"]), int(state["updates"])
        nets = TD3Nets(self.cfg, 11 + BEAMS, 3)
        nets.load_state_dict(state["model"])
        self.actor, self.K, self.torch = nets.actor.eval(), self.cfg.replay.seq_len, torch

    def reset(self, obs):
        self.window = [obs] * self.K

    def __call__(self, obs):
        self.window = self.window[1:] + [obs]
        with self.torch.no_grad():
            x = self.torch.as_tensor(np.stack(self.window))[None]     # [1, K, 27]
            return self.actor(x)[0].numpy()


def find_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    ckpts = sorted((path / "checkpoints").glob("ckpt_*.pt"))
    if not ckpts:
        raise SystemExit(f"no checkpoints under {path}")
    return ckpts[-1]


def cmd_eval(args) -> int:
    import torch

    torch.set_num_threads(1)
    ckpt = find_checkpoint(Path(args.checkpoint))
    actor = CheckpointActor(ckpt)
    seeds = range(args.seed0, args.seed0 + args.episodes)
    t0 = time.perf_counter()
    r = run_episodes(actor, seeds)
    print(f"{ckpt}: {actor.frames} frames, {actor.updates} updates ({time.perf_counter() - t0:.0f} s)")
    print(HEADER)
    print(summary(f"TD3 {actor.frames // 1000}k", r, args.episodes))
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(ckpt), "frames": actor.frames,
                                               "updates": actor.updates, **r}, indent=1))
    return 0


# --------------------------------------------------------------------------------------- curve
def read_csv(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    rows = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
    return [(int(float(a)), float(b)) for a, b, *_ in rows if a.replace(".", "").isdigit()]


def cmd_curve(args) -> int:
    """The run's scalars every ``--every`` steps: training return (the agent's running mean of the last
    10 finished episodes, OU noise included), updates, elapsed s, and the agent's own eval (10 episodes)."""
    sc = Path(args.run) / "metrics" / "scalars"
    series = {k: read_csv(sc / f"{k}.csv") for k in ("train/episode_return", "train/updates", "time/elapsed_s",
                                                      "eval/return", "eval/episode_length")}

    def at(key, step):        # the last value logged at or before step
        vals = [v for s, v in series[key] if s <= step]
        return vals[-1] if vals else float("nan")

    last = max((s for s, _ in series["train/updates"]), default=0)
    marks = list(range(args.every, last + 1, args.every))
    print("| env steps | " + " | ".join(f"{m // 1000}k" for m in marks) + " |")
    print("|---|" + "---:|" * len(marks))
    print("| training return (last 10 eps) | " + " | ".join(f"{at('train/episode_return', m):.2f}" for m in marks) + " |")
    print("| updates | " + " | ".join(f"{at('train/updates', m):.0f}" for m in marks) + " |")
    print("| elapsed s (this process) | " + " | ".join(f"{at('time/elapsed_s', m):.0f}" for m in marks) + " |")
    ev, el = dict(series["eval/return"]), dict(series["eval/episode_length"])

    def eval_at(m):           # the agent's eval at m, or within one batch after it (a resumed run's
        near = [s for s in ev if m <= s < m + 1000]   # evals fall at the first batch past each mark)
        return f"{ev[near[0]]:.2f} / {el[near[0]]:.0f}" if near else "-"
    print("| agent eval return / length (10 eps) | " + " | ".join(eval_at(m) for m in marks) + " |")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("controller", help="hand-coded controllers over seeded episodes")
    c.add_argument("--variants", default="all", help=f"comma list of {list(VARIANTS)} or 'all'")
    c.add_argument("--episodes", type=int, default=len(EVAL_SEEDS))
    c.add_argument("--seed0", type=int, default=EVAL_SEEDS[0])
    sub.add_parser("train", help="agents.vmamba_td3.main on the lidar env; args pass through "
                                 "(key=value overrides, or --resume RUN [key=value ...])", add_help=False)
    e = sub.add_parser("eval", help="a checkpoint over seeded episodes")
    e.add_argument("checkpoint", help="checkpoint file or run directory (its newest checkpoint)")
    e.add_argument("--episodes", type=int, default=len(EVAL_SEEDS))
    e.add_argument("--seed0", type=int, default=EVAL_SEEDS[0])
    e.add_argument("--json", default=None, help="also write the counts and returns here")
    cu = sub.add_parser("curve", help="a run's training curve (metrics/scalars CSVs) as a markdown table")
    cu.add_argument("run", help="run directory")
    cu.add_argument("--every", type=int, default=10000)
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    args = ap.parse_args(argv)
    return {"controller": cmd_controller, "eval": cmd_eval, "curve": cmd_curve}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
