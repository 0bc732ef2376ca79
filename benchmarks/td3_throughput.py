"""TD3 (agents/vmamba_td3.py): where the time of a training step goes, in one run.

    python benchmarks/td3_throughput.py --config configs/drone/quick_vmamba.yaml       # 2-core CPU
    python benchmarks/td3_throughput.py --config configs/drone/seed_vmamba.yaml --envs 16   # GPU host
    python benchmarks/td3_throughput.py --config configs/drone/seed_vmamba.yaml --envs 16 --frames 2000 \
        env.num_envs=16 train.frames_per_batch=96                                     # training from 16 envs

Rows (same machine, same env and network settings as the config):
  simulator limit   --envs independent processes stepping the gymnasium env directly with random
                    actions, one thread each: what the machine can simulate
  env stack         the agent's own env (agents.drone.build.make_env: GymWrapper + frame windows),
                    random actions, in this process
  acting step       the actor on one K-step window at batch 1, on the agent's device (ms)
  update            one TD3 update (critic, and the actor every policy_delay) on a sampled batch of
                    K-step windows from a replay filled by the env stack (ms, updates/s)
  end-to-end        the rate the parts above allow at the config's update-to-data ratio,
                    1 / (1/env + 1/act + updates_per_step/updates), and the agent's own training
                    run for --frames frames after learning_starts (frames/s, from its wall-clock),
                    with the overrides: env.num_envs=16 collects from 16 worker envs there (the
                    rows above stay one env)
Writes benchmarks/results/td3_throughput_<tag>.md/.json (tag: --tag, default cpu<N> / gpu<N>).
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


def _sim_worker(env_id: str, kwargs: dict, seconds: float, seed: int, out) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import gymnasium as gym

    import envs  # noqa: F401  (registers the mambazoo ids)

    env = gym.make(env_id, **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        steps += 1
        if term or trunc:
            env.reset()
    out.put(steps / (time.perf_counter() - t0))


def simulator_limit(env_id: str, kwargs: dict, n: int, seconds: float) -> float:
    return summed_rate(_sim_worker, [(env_id, kwargs, seconds, i) for i in range(n)])


def env_stack_and_replay(cfg, seconds: float, fill: int):
    """Random-action steps/s of the agent's env (timed apart from the copies kept), and a replay
    filled with ``fill`` of its steps."""
    import torch
    from torchrl.envs.utils import step_mdp

    from agents.drone.build import make_env, make_replay, to_storage

    env = make_env(cfg, seed=0)
    td, rows = env.reset(), []
    for _ in range(fill):                       # the replay's steps (also the warm-up)
        td = env.rand_step(td)
        rows.append(td.clone())
        td = env.maybe_reset(step_mdp(td))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        td = env.maybe_reset(step_mdp(env.rand_step(td)))
        steps += 1
    rate = steps / (time.perf_counter() - t0)
    env.close()
    data = torch.stack(rows)
    done = data.get(("next", "done")).reshape(-1).long()
    data.set(("collector", "traj_ids"), done.cumsum(0) - done)   # the episode ids a collector gives one env
    replay = make_replay(cfg)
    replay.extend(to_storage(cfg, data, 0)[0])
    return rate, replay


def acting_ms(cfg, nets, replay, device, repeats: int = 100) -> float:
    import torch

    from agents.drone.build import windows

    obs, *_ = windows(cfg, replay.sample(), device)
    one = [x[:1] for x in obs]
    times = []
    with torch.no_grad():
        for i in range(repeats + 5):
            t0 = time.perf_counter()
            nets.actor(*one).cpu()              # the env needs the action on the host
            if i >= 5:
                times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def update_ms(cfg, nets, replay, device, repeats: int, optims=None) -> float:
    """Mean ms of an eager TD3 update after 3 warm-ups, with ``optims`` (fresh ones if None)."""
    import torch

    from agents.vmamba_td3 import make_optims, td3_update

    optims = optims if optims is not None else make_optims(cfg, nets)
    for i in range(3):                          # warm-up (allocator, kernels, lazy modules)
        td3_update(cfg, nets, optims, replay.sample(), i + 1, device)
    if torch.device(device).type == "cuda":   # a str or a torch.device (torch.device("cuda") != "cuda")
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(repeats):
        out = td3_update(cfg, nets, optims, replay.sample(), i + 1, device)
    float(out["critic_loss"])                   # one sync at the end
    return 1e3 * (time.perf_counter() - t0) / repeats


def end_to_end(config: str, frames: int, overrides: list[str]) -> dict:
    from agents import vmamba_td3
    from agents.drone.config import Config
    from agents.runtime.config import load_config

    base = load_config(Config, config, overrides)
    total = base.train.learning_starts + frames
    root = tempfile.mkdtemp(prefix="td3_throughput_")
    args = ["--config", config, *overrides, f"train.total_frames={total}", f"train.checkpoint_every_frames={total}",
            "train.eval_episodes=1", "train.eval_every_frames=0", f"run_root={root}", "name=bench", "logger=csv"]
    t0 = time.perf_counter()
    rc = vmamba_td3.main(args)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"training exited {rc}")
    return {"frames": total, "wall_s": wall, "frames_per_s_overall": total / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", default="configs/drone/quick_vmamba.yaml")
    ap.add_argument("--envs", type=int, default=2, help="processes of the simulator-limit row")
    ap.add_argument("--seconds", type=float, default=10.0, help="per random-action row")
    ap.add_argument("--updates", type=int, default=20, help="timed updates")
    ap.add_argument("--frames", type=int, default=0,
                    help="end-to-end training frames after learning_starts (0: skip the training row)")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)

    import torch

    from agents.drone.build import build_nets, env_kwargs, make_env
    from agents.drone.config import Config
    from agents.runtime.config import load_config

    cfg = load_config(Config, args.config, args.overrides)
    device = "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    tag = args.tag or f"{'gpu' if device == 'cuda' else 'cpu'}{args.envs}"
    rows: dict = {"command": "python benchmarks/td3_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "machine": f"{platform.node()} {os.cpu_count()} cpus" +
                             (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
                  "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                  "load_average_start": os.getloadavg(), "env": cfg.env.id, "envs": args.envs,
                  "batch": f"{cfg.replay.batch_size} x K={cfg.replay.seq_len}",
                  "updates_per_step": cfg.train.updates_per_step, "num_envs": cfg.env.num_envs}
    rows["simulator_limit"] = simulator_limit(cfg.env.id, env_kwargs(cfg), args.envs, args.seconds)
    print(f"simulator limit ({args.envs} processes): {rows['simulator_limit']:.0f} steps/s", flush=True)
    fill = max(cfg.replay.batch_size * cfg.replay.seq_len * 2, 1000)
    rows["env_stack"], replay = env_stack_and_replay(cfg, args.seconds, fill)
    print(f"env stack (1 env, this process): {rows['env_stack']:.0f} steps/s", flush=True)
    env = make_env(cfg, seed=0)
    nets = build_nets(cfg, env).to(device)
    env.close()
    rows["parameters"] = nets.num_trainable()
    rows["acting_ms"] = acting_ms(cfg, nets, replay, device)
    print(f"acting step at batch 1 on {device}: {rows['acting_ms']:.2f} ms", flush=True)
    rows["update_ms"] = update_ms(cfg, nets, replay, device, args.updates)
    print(f"TD3 update on {device}: {rows['update_ms']:.1f} ms ({1e3 / rows['update_ms']:.1f} updates/s)", flush=True)
    per_frame_s = 1 / rows["env_stack"] + rows["acting_ms"] / 1e3 + cfg.train.updates_per_step * rows["update_ms"] / 1e3
    rows["predicted_frames_per_s"] = 1 / per_frame_s
    rows["predicted_split"] = {"env": 1 / rows["env_stack"] / per_frame_s, "act": rows["acting_ms"] / 1e3 / per_frame_s,
                               "update": cfg.train.updates_per_step * rows["update_ms"] / 1e3 / per_frame_s}
    print(f"predicted end-to-end at updates_per_step={cfg.train.updates_per_step}: "
          f"{rows['predicted_frames_per_s']:.1f} frames/s", flush=True)
    if args.frames:
        rows["end_to_end"] = end_to_end(args.config, args.frames, args.overrides)
        print(f"end-to-end training: {rows['end_to_end']['frames_per_s_overall']:.1f} frames/s overall", flush=True)
    rows["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"td3_throughput_{tag}.json").write_text(json.dumps(rows, indent=1))
    lim, split = rows["simulator_limit"], rows["predicted_split"]
    lines = [f"# TD3 throughput ({tag})", "", f"Command: `{rows['command']}`", "",
             f"Machine: {rows['machine']}; torch {rows['torch']} ({rows['torch_threads']} threads); load average "
             f"at start {rows['load_average_start'][0]:.2f}, at end {rows['load_average_end'][0]:.2f}.", "",
             f"Env {cfg.env.id}; {rows['parameters']:,} trainable parameters; batch {rows['batch']}; "
             f"updates_per_step {cfg.train.updates_per_step}.", "",
             "| row | figure |", "|---|---:|",
             f"| simulator limit, {args.envs} bare processes | {lim:.0f} steps/s |",
             f"| env stack, 1 env, random actions | {rows['env_stack']:.0f} steps/s |",
             f"| acting step, batch 1 | {rows['acting_ms']:.2f} ms |",
             f"| TD3 update | {rows['update_ms']:.1f} ms ({1e3 / rows['update_ms']:.1f} updates/s) |",
             f"| end-to-end the parts allow | {rows['predicted_frames_per_s']:.1f} frames/s "
             f"(env {split['env']:.0%}, acting {split['act']:.0%}, updates {split['update']:.0%}) |"]
    if "end_to_end" in rows:
        e = rows["end_to_end"]
        lines.append(f"| end-to-end training ({e['frames']} frames incl. learning_starts, "
                     f"env.num_envs={cfg.env.num_envs}) | "
                     f"{e['frames_per_s_overall']:.1f} frames/s ({e['wall_s']:.0f} s) |")
    (out / f"td3_throughput_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
