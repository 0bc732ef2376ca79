"""PPO + LocoMamba on the A1 quadruped (depth + proprioception), built from TorchRL.

    python agents/ppo_locomamba.py --config configs/quadruped/quick_flat.yaml
    python agents/ppo_locomamba.py --config vision4leg/config/rl/moving/locotransformer/thin.json
    python agents/ppo_locomamba.py --resume runs/ppo_locomamba/<run>
    python agents/ppo_locomamba.py --eval runs/ppo_locomamba/<run> --episodes 5

The algorithm, top to bottom:
1. envs: N A1 courses in parallel (TorchRL ParallelEnv over gymnasium), with InitTracker (is_init
   flags episode starts) and the memory's primer (recurrent state in every tensordict).
2. policy: LocoEncoder (proprio token + 16 depth tokens, fused by Mamba or transformer layers) ->
   temporal memory (networks.make_memory: Mamba state carried across control steps, reset at
   is_init) -> TanhNormal policy head and value head. One shared trunk.
3. collect frames_per_batch steps with a TorchRL Collector (memory in step mode).
4. values over the whole batch in sequence mode; GAE (TorchRL's functional estimator).
5. PPO epochs over minibatches of trajectory slices [slices, slice_len] in sequence mode: each slice
   starts from the memory state recorded at collection and resets where is_init is set. The trunk
   runs once per minibatch; TorchRL's ClipPPOLoss evaluates the heads on its output.
6. log, checkpoint (atomic), evaluate; stop on a non-finite loss keeping the last good checkpoint,
   and on SIGTERM with a checkpoint at the frame it arrived (the batch it is on finishes first).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from agents.runtime.cli import (agent_parser, eval_out_dir, eval_run, format_eval, pick_device, resolve_run,
                                run_agent)
from agents.runtime.atomic_io import write_text_atomic
from agents.runtime.config import load_config, read_config_file, to_dict
from agents.runtime.loggers import log_scalars, make_logger
# the PPO pieces live in agents/algos/ppo.py (shared with ppo_memory.py); re-exported for old imports
from agents.algos.ppo import (NonFiniteLoss, compute_advantages, episode_stats, lr_scale, make_loss,  # noqa: F401
                               make_optimizer, ppo_update, restart_segment, restore_optimizer, seed_everything,
                               segment_seed, slices)
from agents.algos.ppo import dry_run as ppo_dry_run
from agents.runtime.run_dir import RunDir, keep_rng, rng_state, set_rng_state
from agents.runtime.stop import StopOnSignal
from agents.quadruped.config import Config, from_locotransformer
from agents.quadruped.build import (INFO_KEYS, build_policy, check_config, evaluate, make_env, parameter_report,
                                     std_cap_at)

log = logging.getLogger("mambazoo")
AGENT = "ppo_locomamba"


# --------------------------------------------------------------------------------- training
def train(cfg: Config, run: RunDir, resume_state: dict | None = None) -> int:
    """Train to train.total_frames; a SIGTERM (agents/runtime/stop.py) ends the batch it arrives in
    with a checkpoint at that frame (and the periodic eval due there, if any, left for the resume)."""
    with StopOnSignal() as stop:
        return _train(cfg, run, resume_state, stop)


def _train(cfg: Config, run: RunDir, resume_state: dict | None, stop: StopOnSignal) -> int:
    from torchrl.collectors import Collector
    from tqdm import tqdm

    device = pick_device(cfg.device, "device")
    set_threads(cfg)
    seed_everything(cfg.seed)
    start_frames = 0 if resume_state is None else int(resume_state["frames"])
    iteration = 0 if resume_state is None else int(resume_state["iteration"])
    elapsed0 = 0.0 if resume_state is None else float(resume_state.get("elapsed_s", 0.0))
    nets = build_policy(cfg).to(device)
    print(parameter_report(nets))
    optim = make_optimizer(nets, cfg.ppo)
    gen = torch.Generator().manual_seed(cfg.seed + iteration)      # minibatch order
    if resume_state is not None:
        nets.load_state_dict(resume_state["model"])
        restore_optimizer(optim, resume_state["optimizer"], cfg.ppo)
        if "minibatch_rng" in resume_state:
            gen.set_state(resume_state["minibatch_rng"])
        print(f"resumed from frame {start_frames} (iteration {iteration})")
    loss_fn = make_loss(nets, cfg.ppo)
    nets.std_cap.set(std_cap_at(cfg, start_frames))
    logger = make_logger(cfg.logger, run.path, "metrics", config=to_dict(cfg))
    remaining = cfg.train.total_frames - start_frames
    if remaining <= 0:
        print(f"nothing to do: {start_frames} frames already done (train.total_frames={cfg.train.total_frames})")
        return 0
    env = make_env(cfg.env, seed=segment_seed(cfg.seed, iteration), num_envs=cfg.env.num_envs, primer=nets.primer())
    graphed = device.type == "cuda" and cfg.train.cuda_graph
    policy = nets.acting_policy(cuda_graph=graphed)
    if graphed:
        print("acting policy: trunk + action distribution as a CUDA graph (networks/cuda_graph.py), sampling eager")
    collector = Collector(env, policy, frames_per_batch=cfg.train.frames_per_batch,
                          total_frames=math.ceil(remaining / cfg.train.frames_per_batch) * cfg.train.frames_per_batch,
                          policy_device=device, env_device="cpu", storing_device=device)
    # RNG after everything that is built the same way on a fresh start and a resume: the collector
    # continues from exactly the state the uninterrupted run had after its checkpoint
    if resume_state is not None:
        set_rng_state(resume_state["rng"])
        if resume_state.get("eval_pending"):     # the periodic eval a stop left: at the frame it was due
            periodic_eval(cfg, nets, logger, start_frames)
    frames, last_return = start_frames, float("nan")
    bar = tqdm(total=cfg.train.total_frames, initial=start_frames, unit="step", dynamic_ncols=True,
               disable=None)
    t_start = time.perf_counter()
    t_collect = time.perf_counter()
    for batch in collector:
        collect_s = time.perf_counter() - t_collect
        batch = batch.reshape(cfg.env.num_envs, -1) if batch.ndim == 1 else batch
        frames_before = frames
        frames += batch.numel()
        iteration += 1
        stats = episode_stats(batch, INFO_KEYS)
        last_return = stats.get("episode_return", last_return)
        t_update = time.perf_counter()
        compute_advantages(batch, nets.trunk, nets.value_head, nets.value_step, cfg.ppo.gamma,
                           cfg.ppo.gae_lambda)
        try:
            losses = ppo_update(batch, nets.trunk, loss_fn, optim, nets.parameters(), cfg.ppo, gen,
                                lr_scale(cfg.ppo, frames_before, cfg.train.total_frames))
        except NonFiniteLoss as err:      # run_agent reports it (exit 1, the last good checkpoint)
            bar.close()
            collector.shutdown()
            raise err.at(frame=frames) from None
        nets.std_cap.set(std_cap_at(cfg, frames))          # the cap the next batch is collected with
        collector.update_policy_weights_()
        update_s = time.perf_counter() - t_update
        elapsed = time.perf_counter() - t_start
        scalars = {f"train/{k}": v for k, v in stats.items()}
        scalars.update({f"loss/{k}": v for k, v in losses.items()})
        if cfg.train.std_cap is not None:
            scalars["train/std_cap"] = std_cap_at(cfg, frames_before)
        scalars.update({"time/steps_per_s": (frames - start_frames) / elapsed, "time/elapsed_s": elapsed0 + elapsed,
                        "time/collect_s": collect_s, "time/update_s": update_s,
                        "time/iteration_steps_per_s": batch.numel() / (collect_s + update_s)})
        log_scalars(logger, scalars, frames)
        bar.update(batch.numel())
        bar.set_postfix(sps=f"{scalars['time/iteration_steps_per_s']:.0f}", ret=f"{last_return:.2f}")
        if bar.disable:   # no terminal: one plain line per iteration, the current rate and diagnostics
            print(f"frames {frames} return {last_return:.2f} distance {stats.get('episode_distance', float('nan')):.2f} "
                  f"steps/s {scalars['time/iteration_steps_per_s']:.0f} (collect {collect_s:.1f}s update "
                  f"{update_s:.1f}s) kl {losses.get('kl_approx', float('nan')):.4f} clip "
                  f"{losses.get('clip_fraction', float('nan')):.3f} ev {losses.get('explained_variance', float('nan')):.2f}",
                  flush=True)
        done = frames >= cfg.train.total_frames
        eval_due = bool(cfg.train.eval_every_iters) and iteration % cfg.train.eval_every_iters == 0 and not done
        stopping = stop.requested and not done    # a stop's checkpoint ends a segment like a periodic one
        if iteration % cfg.train.checkpoint_every_iters == 0 or done or stopping:
            path = run.save_checkpoint(checkpoint_state(cfg, nets, optim, frames, iteration, gen, elapsed0 + elapsed,
                                                        eval_pending=stopping and eval_due), frames)
            if stopping:     # the resumed run is the run whose checkpoint fell on this frame
                bar.close()
                collector.shutdown()
                print(f"stopped by {stop.signal_name} at frame {frames}: checkpoint {path} written; "
                      f"`python agents/ppo_locomamba.py --resume {run.path}` continues the run", flush=True)
                return 0
            if not done:
                # a checkpoint ends a segment: a resumed run continues exactly as this one does
                restart_segment(collector, segment_seed(cfg.seed, iteration))
        if eval_due:
            periodic_eval(cfg, nets, logger, frames)
        if done:
            break
        t_collect = time.perf_counter()
    collector.shutdown()
    bar.close()
    result = evaluate(cfg, nets, cfg.train.eval_episodes, video=run.videos / f"eval_{frames}.mp4")
    log_scalars(logger, {f"eval/{k}": v for k, v in result.items() if isinstance(v, float)}, frames)
    print(f"done: {frames} frames in {time.perf_counter() - t_start:.0f} s; eval {format_eval(result)}")
    print(f"run directory: {run.path}")
    return 0


def set_threads(cfg: Config) -> int:
    """torch's intra-op threads for this process. With the envs in worker processes the default
    (one per core) made the collector ~10x slower on a loaded 2-core machine: OpenMP threads spin
    while waiting, on the cores the simulators need."""
    n = cfg.threads or (1 if cfg.env.parallel and cfg.env.num_envs > 1 else torch.get_num_threads())
    torch.set_num_threads(n)
    return n


def periodic_eval(cfg: Config, nets: nn.Module, logger, frames: int) -> None:
    """The train.eval_every_iters eval, logged at ``frames``; it leaves the training RNG streams as
    they were, so a run with evals trains as the run without them (and a resume that runs a pending
    eval first as the run that ran it in place)."""
    result = keep_rng(evaluate, cfg, nets, cfg.train.eval_episodes, video=None)
    log_scalars(logger, {f"eval/{k}": v for k, v in result.items()}, frames)


def checkpoint_state(cfg: Config, nets: nn.Module, optim, frames: int, iteration: int,
                     gen: torch.Generator, elapsed_s: float, eval_pending: bool = False) -> dict:
    return {"model": nets.state_dict(), "optimizer": optim.state_dict(), "frames": frames,
            "iteration": iteration, "rng": rng_state(), "minibatch_rng": gen.get_state(),
            "config": to_dict(cfg), "env_seed": segment_seed(cfg.seed, iteration), "elapsed_s": elapsed_s,
            "eval_pending": eval_pending}


# ---------------------------------------------------------------------------------- the CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = agent_parser("ppo_locomamba.py", "PPO with a LocoMamba (or LocoTransformer) policy on the "
                          "PyBullet A1 quadruped.", Config, "YAML config of ours, or a LocoTransformer JSON config")
    parser.sections["eval"].add_argument("--stochastic", action="store_true",
                                         help="--eval samples actions from the policy instead of taking its mean")
    return parser.parse_args(argv)


def resolve(args) -> tuple[Config, RunDir | None, dict | None]:
    return resolve_run(args, Config, load_new)


def load_new(args) -> Config:
    """A new run's config: ours (YAML) or LocoTransformer's JSON, converted."""
    if args.config:
        data = read_config_file(args.config)
        return load_config(Config, None, args.overrides, convert=lambda _: from_locotransformer(data))
    return load_config(Config, None, args.overrides)


def main(argv=None) -> int:
    args = parse_args(argv)
    # save_config_on_resume: config.yaml says what the run trains with after `--resume RUN key=value`
    return run_agent(args, config_cls=Config, agent=AGENT, check=check_config, run_eval=run_eval,
                     dry_run=dry_run, train=train, load_new=load_new, save_config_on_resume=True)


def dry_run(cfg: Config) -> int:
    return ppo_dry_run(cfg, build_policy, parameter_report,
                       lambda primer: make_env(cfg.env, seed=cfg.seed, num_envs=1, primer=primer),
                       lambda env, td: f"observation keys {sorted(k for k in env.observation_spec.keys())}")


def run_eval(args) -> int:
    ckpt, state, cfg, episodes = eval_run(args, Config)
    nets = build_policy(cfg)
    nets.load_state_dict(state["model"])
    # the cap is not a weight (set from the frames while training): --stochastic samples the
    # distribution the run collected with at this checkpoint, not the uncapped one
    nets.std_cap.set(std_cap_at(cfg, int(state["frames"])))
    out_dir = eval_out_dir(args, ckpt, ckpt.parent.parent / "videos" if ckpt.parent.name == "checkpoints"
                           else ckpt.parent)
    mode = "stochastic" if args.stochastic else "deterministic"
    result = evaluate(cfg, nets, episodes, video=out_dir / f"eval_{ckpt.stem}_{mode}.mp4", seed=cfg.seed + 12345,
                      stochastic=args.stochastic)
    print(f"eval of {ckpt} over {episodes} {mode} episodes: {format_eval(result)}")
    summary = {"checkpoint": str(ckpt), "episodes": episodes, "mode": mode, "seed": cfg.seed + 12345,
               "course": cfg.env.course, **result}
    path = write_text_atomic(out_dir / f"eval_{ckpt.stem}_{mode}.json", json.dumps(summary, indent=1) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
