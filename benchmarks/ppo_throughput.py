"""PPO on the A1 quadruped: how close training runs to the simulator's speed, in one run.

    python benchmarks/ppo_throughput.py --envs 2 --config configs/quadruped/quick_flat.yaml       # 2-core CPU
    python benchmarks/ppo_throughput.py --envs 16 --config configs/quadruped/flat_locomamba.yaml  # GPU host

Rows (same process tree, same machine, same course and env settings as the config):
  simulator limit   N independent processes stepping A1QuadrupedEnv directly, random actions,
                    one thread each (no TorchRL, no IPC): the most the machine can simulate
  TorchRL ParallelEnv   N GymEnv workers under torchrl.envs.ParallelEnv, random actions (the old path)
  env stack         the agent's own env (agents.quadruped.build.make_env: gymnasium AsyncVectorEnv
                    under GymWrapper + transforms), random actions, no policy
  policy step       the acting policy alone at batch N on the agent's device (eager; CUDA graph on GPU)
  end-to-end        ppo_locomamba training for --iters iterations: collection (env + policy +
                    transfers) and update (GAE + PPO epochs) per frame, and frames/s
Writes benchmarks/results/ppo_throughput_<tag>.md/.json (tag: --tag, default cpu<N> / gpu<N>).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.processes import summed_rate  # noqa: E402


def _sim_worker(env_kwargs: dict, seconds: float, seed: int, out) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np

    from envs.quadruped.a1_env import A1QuadrupedEnv

    env = A1QuadrupedEnv(**env_kwargs)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, env.act_dim).astype(np.float32))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.act_dim).astype(np.float32))
        steps += 1
        if term or trunc:
            env.reset()
    out.put(steps / (time.perf_counter() - t0))


def simulator_limit(env_kwargs: dict, n: int, seconds: float) -> float:
    return summed_rate(_sim_worker, [(env_kwargs, seconds, i) for i in range(n)])


def _random_steps(env, seconds: float) -> float:
    from torchrl.envs.utils import step_mdp

    td = env.reset()
    for _ in range(5):
        td = env.maybe_reset(step_mdp(env.rand_step(td)))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        td = env.maybe_reset(step_mdp(env.rand_step(td)))
        steps += env.batch_size.numel()
    return steps / (time.perf_counter() - t0)


def torchrl_parallel(cfg, n: int, seconds: float) -> float:
    from functools import partial

    from torchrl.envs import ParallelEnv

    from agents.quadruped.build import _gym_env

    env = ParallelEnv(n, partial(_gym_env, cfg.env), mp_start_method="spawn")
    env.set_seed(0)
    try:
        return _random_steps(env, seconds)
    finally:
        env.close()


def env_stack(cfg, n: int, seconds: float) -> float:
    from agents.quadruped.build import make_env

    env = make_env(cfg.env, seed=0, num_envs=n)
    try:
        return _random_steps(env, seconds)
    finally:
        env.close()


def policy_step(cfg, n: int, device: str, repeats: int = 200) -> dict:
    import torch

    from agents.quadruped.build import build_policy, make_env

    nets = build_policy(cfg).to(device)
    env = make_env(cfg.env, seed=0, num_envs=1, primer=nets.primer())
    one = env.reset()
    env.close()
    td = one.expand(n).clone().to(device)
    out = {}
    variants = {"eager": nets.policy}
    if device == "cuda":
        variants["cuda graph"] = nets.acting_policy(cuda_graph=True)
    for name, pol in variants.items():
        with torch.no_grad():
            for _ in range(10):
                pol(td.clone())
            if device == "cuda":
                torch.cuda.synchronize()
            times = []
            for _ in range(repeats):
                x = td.clone()
                t0 = time.perf_counter()
                pol(x)["action"].cpu()       # the collector needs the action on the host
                times.append(time.perf_counter() - t0)
        times.sort()
        out[name] = 1e3 * times[len(times) // 2]
    return out


def end_to_end(config: str, n: int, iters: int, overrides: list[str]) -> dict:
    import csv

    from agents import ppo_locomamba
    from agents.runtime.config import load_config
    from agents.quadruped.config import Config

    base = load_config(Config, config, [])
    fpb = base.train.frames_per_batch
    root = tempfile.mkdtemp(prefix="ppo_throughput_")
    args = ["--config", config, f"env.num_envs={n}", f"train.total_frames={fpb * iters}",
            f"train.checkpoint_every_iters={iters}", "train.eval_episodes=1", f"run_root={root}", "name=bench", *overrides]
    t0 = time.perf_counter()
    rc = ppo_locomamba.main(args)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"training exited {rc}")
    run = next(Path(root, "ppo_locomamba").iterdir())
    scal = run / "metrics" / "scalars" / "time"

    def series(name):
        with open(scal / f"{name}.csv") as f:
            return [float(r[1]) for r in csv.reader(f)]
    collect, update = series("collect_s"), series("update_s")
    # the first iteration holds the one-off costs (process start, graph capture): report it apart
    steady = slice(1, None) if len(collect) > 1 else slice(None)
    c, u = sum(collect[steady]), sum(update[steady])
    frames = fpb * len(collect[steady])
    return {"frames_per_batch": fpb, "iterations": len(collect), "wall_s_total": wall,
            "first_iteration_s": collect[0] + update[0], "collect_s": c, "update_s": u,
            "frames_per_s": frames / (c + u), "collect_frames_per_s": frames / c,
            "us_per_frame_collect": 1e6 * c / frames, "us_per_frame_update": 1e6 * u / frames}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", default="configs/quadruped/quick_flat.yaml")
    ap.add_argument("--envs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=15.0, help="per random-action row")
    ap.add_argument("--iters", type=int, default=4, help="training iterations of the end-to-end row")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["sim", "parallel", "stack", "policy", "train"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("overrides", nargs="*", help="key=value config overrides (end-to-end row and env rows)")
    args = ap.parse_args(argv)

    import torch

    from agents.runtime.config import load_config
    from agents.quadruped.config import Config
    from agents.quadruped.build import env_kwargs

    cfg = load_config(Config, args.config, [*args.overrides, f"env.num_envs={args.envs}"])
    device = "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    tag = args.tag or f"{'gpu' if device == 'cuda' else 'cpu'}{args.envs}"
    n = args.envs
    kw = {"course": cfg.env.course, **env_kwargs(cfg.env)}
    rows: dict = {"command": "python benchmarks/ppo_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "machine": f"{platform.node()} {os.cpu_count()} cpus" +
                             (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
                  "torch": torch.__version__, "load_average_start": os.getloadavg(), "envs": n,
                  "course": cfg.env.course, "depth": cfg.env.depth}
    if "sim" not in args.skip:
        rows["simulator_limit"] = simulator_limit(kw, n, args.seconds)
        print(f"simulator limit ({n} processes): {rows['simulator_limit']:.0f} steps/s", flush=True)
    if "parallel" not in args.skip:
        rows["torchrl_parallel_env"] = torchrl_parallel(cfg, n, args.seconds)
        print(f"TorchRL ParallelEnv x{n}: {rows['torchrl_parallel_env']:.0f} steps/s", flush=True)
    if "stack" not in args.skip:
        rows["env_stack"] = env_stack(cfg, n, args.seconds)
        print(f"env stack (AsyncVectorEnv + GymWrapper + transforms) x{n}: {rows['env_stack']:.0f} steps/s", flush=True)
    if "policy" not in args.skip:
        rows["policy_step_ms"] = policy_step(cfg, n, device)
        print(f"policy step at batch {n} on {device}: {rows['policy_step_ms']}", flush=True)
    if "train" not in args.skip:
        rows["end_to_end"] = end_to_end(args.config, n, args.iters, args.overrides)
        e = rows["end_to_end"]
        print(f"end-to-end: {e['frames_per_s']:.0f} frames/s (collect {e['us_per_frame_collect']:.0f} us/frame, "
              f"update {e['us_per_frame_update']:.0f} us/frame)", flush=True)
    rows["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ppo_throughput_{tag}.json").write_text(json.dumps(rows, indent=1))
    lines = [f"# PPO quadruped throughput ({tag})", "", f"Command: `{rows['command']}`", "",
             f"Machine: {rows['machine']}; torch {rows['torch']}; load average at start "
             f"{rows['load_average_start'][0]:.2f}, at end {rows['load_average_end'][0]:.2f}.", "",
             f"Course {cfg.env.course}, depth {cfg.env.depth}, {n} envs.", "", "| row | frames/s | vs simulator limit |",
             "|---|---:|---:|"]
    lim = rows.get("simulator_limit")
    for key, name in (("simulator_limit", "simulator limit (bare processes)"),
                      ("torchrl_parallel_env", "TorchRL ParallelEnv, random actions"),
                      ("env_stack", "our env stack, random actions")):
        if key in rows:
            lines.append(f"| {name} | {rows[key]:.0f} | {rows[key] / lim:.0%} |" if lim else f"| {name} | {rows[key]:.0f} | |")
    if "end_to_end" in rows:
        e = rows["end_to_end"]
        lines.append(f"| end-to-end PPO training | {e['frames_per_s']:.0f} | "
                     + (f"{e['frames_per_s'] / lim:.0%} |" if lim else "|"))
        lines += ["", f"End-to-end breakdown (iterations 2..{e['iterations']}, {e['frames_per_batch']} frames each): "
                  f"collection {e['us_per_frame_collect']:.0f} us/frame ({e['collect_frames_per_s']:.0f} frames/s), "
                  f"update {e['us_per_frame_update']:.0f} us/frame; first iteration {e['first_iteration_s']:.1f} s."]
    if "policy_step_ms" in rows:
        lines += ["", "Policy step at batch {} on {}: ".format(n, device) +
                  ", ".join(f"{k} {v:.2f} ms" for k, v in rows["policy_step_ms"].items())]
    (out / f"ppo_throughput_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
