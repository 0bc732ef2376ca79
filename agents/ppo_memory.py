"""PPO with a swappable memory (Mamba1/2, GRU, LSTM, transformer, RMT, none) on the POMDP suite.

    python agents/ppo_memory.py --config configs/pomdp/stateless_cartpole.yaml model.memory=gru
    python agents/ppo_memory.py --resume runs/ppo_memory/<run> train.total_frames=200000
    python agents/ppo_memory.py --eval runs/ppo_memory/<run> --episodes 64

The algorithm is the quadruped agent's (agents/algos/ppo.py holds the shared pieces):
1. env: one batched POMDPEnv of env.num_envs envs + InitTracker + the memory's primer.
2. policy: Linear embed -> networks.make_memory(model.memory) -> actor head (Categorical over the
   one-hot actions, TanhNormal for the pendulums) and value head, one shared trunk.
3. collect train.frames_per_batch steps with a TorchRL Collector (or RayCollector, collector.backend=ray).
4. GAE over the batch with sequence-mode values; PPO epochs over trajectory slices in sequence mode.
5. log return vs env steps and wall-clock (CSV), checkpoint atomically, evaluate greedily at the end;
   on SIGTERM stop with a checkpoint at the frame it arrived (the batch it is on finishes first).
``train(cfg)`` returns a dict of results (the sweep runner, benchmarks/sweep.py, calls it).
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from agents.runtime.cli import (agent_parser, eval_out_dir, eval_run, format_eval, pick_device, run_agent,
                                threads_restored)
from agents.runtime.atomic_io import atomic_open
from agents.runtime.config import save_config, to_dict
from agents.runtime.loggers import log_scalars, make_logger
from agents.algos.ppo import (compute_advantages, episode_stats, lr_scale, make_loss, make_optimizer, ppo_update,
                               restart_segment, restore_optimizer, seed_everything, segment_seed)
from agents.algos.ppo import dry_run as ppo_dry_run
from agents.runtime.run_dir import RunDir, rng_state, set_rng_state
from agents.runtime.stop import StopOnSignal
from agents.pomdp.build import (Config, EnvFactory, MemoryPolicy, check_consistency, evaluate, make_env,
                                measure_obs_stats)

log = logging.getLogger("mambazoo")
AGENT = "ppo_memory"
CURVE_FIELDS = ("frames", "wall_s", "return", "length", "episodes")
THRESHOLD_TOL = 1e-3          # float32 sums of 1/L rewards land a hair below 1.0


def make_collector(cfg: Config, nets: MemoryPolicy, env_seed: int, total: int):
    """A local TorchRL Collector, or TorchRL's RayCollector: collector.num_collectors remote collectors
    (Ray actors, one CPU each), each stepping its own batched env and splitting frames_per_batch
    between them (sync mode: every batch comes from the latest weights, as PPO needs). Ray is the one
    already initialised in this process, else cfg.collector.ray_address, else a new local instance."""
    from torchrl.collectors import Collector

    if cfg.collector.backend == "local":
        env = make_env(cfg.env, seed=env_seed, primer=nets.primer())
        return Collector(env, nets.policy, frames_per_batch=cfg.train.frames_per_batch, total_frames=total)
    import os

    from torchrl.collectors.distributed import RayCollector

    n = cfg.collector.num_collectors
    # actors unpickle EnvFactory from agents.pomdp.build: put this checkout on their path
    repo = str(Path(__file__).resolve().parents[1])
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}}
    init = ({"address": cfg.collector.ray_address, "runtime_env": runtime_env} if cfg.collector.ray_address else
            {"num_cpus": n, "include_dashboard": False, "log_to_driver": False, "runtime_env": runtime_env})
    return RayCollector([EnvFactory(cfg, env_seed + 100_000 * i) for i in range(n)], nets.policy,
                        frames_per_batch=cfg.train.frames_per_batch, total_frames=total, num_collectors=n,
                        sync=True, ray_init_config=init, remote_configs={"num_cpus": 1, "memory": 1024 ** 3},
                        weight_updater=_object_store_weight_updater())


def _object_store_weight_updater():
    """TorchRL's RayWeightUpdater (weights go through Ray's object store), wired to its collector.

    Why not RayCollector's default RayWeightSyncScheme: it opens a torch.distributed Gloo group
    between the driver and the actors, whose rendezvous took ~60 s per collector start and per first
    update on our 2-core machine (and timed out under load); our policies are a few kB, which the
    object store moves in milliseconds. RayCollector calls the class with no arguments, then
    registers itself, so the updater picks the policy weights and the actors from it."""
    import warnings

    from torchrl.collectors import RayWeightUpdater

    class ObjectStoreWeightUpdater(RayWeightUpdater):
        def __init__(self):
            pass

        def register_collector(self, collector):
            super().register_collector(collector)
            RayWeightUpdater.__init__(self, collector.policy_weights, collector.remote_collectors, max_interval=0)

    warnings.filterwarnings("ignore", message=".*weight_updater.*", category=DeprecationWarning)
    return ObjectStoreWeightUpdater


def _batch_layout(batch):
    """Collector output -> [envs, T]: RayCollector stacks its collectors' batches [n, envs, T]."""
    return batch.reshape(-1, batch.shape[-1]) if batch.ndim == 3 else batch


def write_curve(path: Path, curve: list[dict]) -> None:
    """CSV of CURVE_FIELDS, written to a temp file and renamed (readers never see half a file)."""
    with atomic_open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        w.writeheader()
        w.writerows(curve)


def train(cfg: Config, run: RunDir | None = None, resume_state: dict | None = None, verbose: bool = True) -> dict:
    """Train; returns final_return (greedy eval), final_train_return, best_return, steps_to_threshold,
    seconds_to_threshold (None if never reached), params, env_steps_per_s, wall_s, frames, curve
    (per-batch dicts of CURVE_FIELDS) and run_dir. Raises NonFiniteLoss (last checkpoint kept).
    A SIGTERM (agents/runtime/stop.py) ends the batch it arrives in with a checkpoint at that frame;
    the result then has ``stopped: True`` and no final_return (the run is not finished)."""
    # cfg.threads is this run's; the sweep calls train() without main()'s run_agent, which restores them too
    with threads_restored(), StopOnSignal() as stop:
        return _train(cfg, run, resume_state, verbose, stop)


def _train(cfg: Config, run: RunDir | None, resume_state: dict | None, verbose: bool, stop: StopOnSignal) -> dict:
    check_consistency(cfg)
    if run is None:
        run = RunDir.create(cfg.run_root, AGENT, cfg.name)
        save_config(cfg, run.config_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    say = print if verbose else (lambda *a, **k: None)
    device = pick_device(cfg.device, "device")
    state = resume_state or {}
    frames, iteration = int(state.get("frames", 0)), int(state.get("iteration", 0))
    elapsed0, curve = float(state.get("elapsed_s", 0.0)), list(state.get("curve", []))
    seed_everything(cfg.seed)
    nets = MemoryPolicy(cfg).to(device)
    params = nets.parameter_counts()
    say(parameter_line(nets))
    optim = make_optimizer(nets, cfg.ppo)
    if resume_state is not None:
        nets.load_state_dict(resume_state["model"])
        restore_optimizer(optim, resume_state["optimizer"], cfg.ppo)
        say(f"resumed from frame {frames} (iteration {iteration})")
    else:
        measure_obs_stats(cfg, nets, seed=cfg.seed + 999)      # model.obs_norm=rollout: fixed input scaling
    loss_fn = make_loss(nets, cfg.ppo)
    logger = make_logger(cfg.logger, run.path, "metrics", config=to_dict(cfg))
    remaining = cfg.train.total_frames - frames
    gen = torch.Generator().manual_seed(cfg.seed + iteration)     # minibatch order
    if resume_state is not None and "minibatch_rng" in resume_state:
        gen.set_state(resume_state["minibatch_rng"])
    t0 = time.perf_counter()
    wall = lambda: elapsed0 + time.perf_counter() - t0        # noqa: E731  (wall-clock across resumes)
    start_frames = frames
    stopping = False
    if remaining > 0:
        fpb = cfg.train.frames_per_batch
        collector = make_collector(cfg, nets, segment_seed(cfg.seed, iteration), math.ceil(remaining / fpb) * fpb)
        if resume_state is not None:   # after everything built alike on a fresh start and on a resume
            set_rng_state(resume_state["rng"])
        line_at = (t0, frames)          # time and frames of the last progress line: its rate is since then
        try:
            for batch in collector:
                batch = _batch_layout(batch)
                frames += batch.numel()
                iteration += 1
                stats = episode_stats(batch)
                compute_advantages(batch, nets.trunk, nets.value_head, nets.value_step, cfg.ppo.gamma,
                                   cfg.ppo.gae_lambda)
                scale = lr_scale(cfg.ppo, frames - fpb, cfg.train.total_frames)
                losses = ppo_update(batch, nets.trunk, loss_fn, optim, nets.parameters(), cfg.ppo, gen, scale)
                collector.update_policy_weights_()
                if "episode_return" in stats:
                    curve.append({"frames": frames, "wall_s": round(wall(), 3),
                                  "return": stats["episode_return"], "length": stats["episode_length"],
                                  "episodes": stats["episodes"]})
                sps = (frames - start_frames) / max(time.perf_counter() - t0, 1e-9)
                scalars = {**{f"train/{k}": v for k, v in stats.items()},
                           **{f"loss/{k}": v for k, v in losses.items()},
                           "time/steps_per_s": sps, "time/elapsed_s": wall()}
                log_scalars(logger, scalars, frames)
                if verbose and (iteration % 10 == 0 or frames >= cfg.train.total_frames):
                    last = curve[-1]["return"] if curve else float("nan")
                    now = time.perf_counter()
                    rate = (frames - line_at[1]) / max(now - line_at[0], 1e-9)
                    line_at = (now, frames)
                    say(f"frames {frames} return {last:.3f} steps/s {rate:.0f} (average {sps:.0f}) wall {wall():.0f}s",
                        flush=True)
                done = frames >= cfg.train.total_frames
                stopping = stop.requested and not done   # a stop's checkpoint ends a segment like a periodic one
                if iteration % cfg.train.checkpoint_every_iters == 0 or done or stopping:
                    path = run.save_checkpoint(checkpoint_state(cfg, nets, optim, frames, iteration, wall(), curve,
                                                                gen), frames)
                    # Ray collectors: resume is close, not exact
                    if not (done or stopping) and cfg.collector.backend == "local":
                        restart_segment(collector, segment_seed(cfg.seed, iteration))
                if done or stopping:
                    break
        finally:
            collector.shutdown()
    wall_s = wall()
    write_curve(run.path / "curve.csv", curve)
    result = summarize(curve, cfg.train.threshold, params["total"], frames, wall_s, (frames - start_frames) /
                       max(time.perf_counter() - t0, 1e-9) if frames > start_frames else float("nan"))
    result["run_dir"] = str(run.path)
    if stopping:        # the resumed run is the run whose checkpoint fell on this frame
        result["stopped"] = True
        # printed also when not verbose: a sweep's log must say why a run has no result
        print(f"stopped by {stop.signal_name} at frame {frames}: checkpoint {path} written; "
              f"`python agents/ppo_memory.py --resume {run.path}` continues the run", flush=True)
        return result
    result["final_return"] = evaluate(cfg, nets, cfg.train.eval_episodes, seed=cfg.seed + 12345)["return"]
    log_scalars(logger, {"eval/return": result["final_return"]}, frames)
    say(f"done: {frames} frames in {wall_s:.0f} s; greedy eval return {result['final_return']:.3f}; "
        f"best training return {result['best_return']:.3f}; threshold {cfg.train.threshold} reached at "
        f"{result['steps_to_threshold']} steps / {result['seconds_to_threshold']} s")
    say(f"run directory: {run.path}")
    return result


def first_reach(curve: list[dict], threshold: float, min_episodes: int = 10) -> dict | None:
    """The first curve point where the mean return of the most recent >= min_episodes finished
    episodes (whole batches, looking back) is >= threshold - THRESHOLD_TOL; None if never. A window
    of episodes, not one batch, so one lucky episode does not count as solved."""
    for i, point in enumerate(curve):
        total = count = 0.0
        for prev in reversed(curve[:i + 1]):
            total, count = total + prev["return"] * prev["episodes"], count + prev["episodes"]
            if count >= min_episodes:
                break
        if count >= min_episodes and total / count >= threshold - THRESHOLD_TOL:
            return point
    return None


def summarize(curve: list[dict], threshold: float, params: int, frames: int, wall_s: float, sps: float) -> dict:
    """The sweep row's numbers from a learning curve (also used for the sb3 baseline)."""
    returns = [c["return"] for c in curve]
    hit = first_reach(curve, threshold)
    return {"final_train_return": float(sum(returns[-3:]) / len(returns[-3:])) if returns else float("nan"),
            "best_return": max(returns) if returns else float("nan"),
            "steps_to_threshold": hit["frames"] if hit else None,
            "seconds_to_threshold": hit["wall_s"] if hit else None,
            "threshold": threshold, "params": params, "frames": frames, "wall_s": round(wall_s, 3),
            "env_steps_per_s": sps, "curve": curve}


def checkpoint_state(cfg: Config, nets, optim, frames: int, iteration: int, elapsed: float, curve,
                     gen: torch.Generator) -> dict:
    return {"model": nets.state_dict(), "optimizer": optim.state_dict(), "frames": frames,
            "minibatch_rng": gen.get_state(),
            "iteration": iteration, "rng": rng_state(), "config": to_dict(cfg), "elapsed_s": elapsed,
            "curve": [dict(c) for c in curve]}


# ---------------------------------------------------------------------------------- the CLI
def parse_args(argv=None) -> argparse.Namespace:
    return agent_parser("ppo_memory.py", "PPO with a Mamba / GRU / LSTM / transformer / RMT / no memory on "
                        "the POMDP suite.", Config, "YAML config (configs/pomdp/*.yaml)").parse_args(argv)


def main(argv=None) -> int:
    # save_config_on_resume: overrides given to --resume (say a larger total_frames) stick
    return run_agent(parse_args(argv), config_cls=Config, agent=AGENT, check=check_consistency, run_eval=run_eval,
                     dry_run=dry_run, train=train_cli, save_config_on_resume=True)


def train_cli(cfg: Config, run: RunDir, state: dict | None) -> int:
    train(cfg, run, state)       # its result dict is for sweeps; the command line reports exit 0
    return 0


def dry_run(cfg: Config) -> int:
    """Validate, build the env and the policy, take one step, print, exit 0."""
    return ppo_dry_run(cfg, MemoryPolicy, parameter_line,
                       lambda primer: make_env(cfg.env, seed=cfg.seed, num_envs=2, primer=primer),
                       lambda env, td: f"{cfg.env.task} ({cfg.env.level}), observation {tuple(td['observation'].shape)}")


def parameter_line(nets: MemoryPolicy) -> str:
    return "parameters: " + ", ".join(f"{k} {v:,}" for k, v in nets.parameter_counts().items())


def run_eval(args) -> int:
    ckpt, state, cfg, episodes = eval_run(args, Config)
    nets = MemoryPolicy(cfg)
    nets.load_state_dict(state["model"])
    result = evaluate(cfg, nets, episodes, seed=cfg.seed + 54321)
    print(f"eval of {ckpt} over {episodes} greedy episodes: {format_eval(result)}")
    if args.out:                        # no video here: --out DIR gets the results as JSON
        import json

        from agents.runtime.atomic_io import write_text_atomic

        out = eval_out_dir(args, ckpt, ckpt.parent)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / f"eval_{ckpt.stem}.json", json.dumps({"checkpoint": str(ckpt), **result}, indent=2) + "\n")
        print(f"wrote {out / f'eval_{ckpt.stem}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
