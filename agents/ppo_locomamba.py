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
6. log, checkpoint (atomic), evaluate; stop on a non-finite loss keeping the last good checkpoint.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from agents.common.cli import agent_parser, eval_checkpoint, format_eval, pick_device, resolve_run, run_agent
from agents.common.config import load_config, read_config_file, to_dict
from agents.common.loggers import log_scalars, make_logger
# the PPO pieces live in agents/common/ppo.py (shared with ppo_memory.py); re-exported for old imports
from agents.common.ppo import NonFiniteLoss, compute_advantages, episode_stats, ppo_update, slices  # noqa: F401
from agents.common.run_dir import RunDir, rng_state, set_rng_state
from agents.locomamba_config import Config, check_consistency, from_locotransformer
from agents.quadruped_setup import INFO_KEYS, build_policy, evaluate, make_env, parameter_report

log = logging.getLogger("mambazoo")
AGENT = "ppo_locomamba"


# --------------------------------------------------------------------------------- training
def train(cfg: Config, run: RunDir, resume_state: dict | None = None) -> int:
    from torchrl.collectors import Collector
    from torchrl.objectives import ClipPPOLoss
    from tqdm import tqdm

    device = pick_device(cfg.device, "device")
    torch.manual_seed(cfg.seed)
    start_frames = 0 if resume_state is None else int(resume_state["frames"])
    iteration = 0 if resume_state is None else int(resume_state["iteration"])
    nets = build_policy(cfg).to(device)
    env = make_env(cfg.env, seed=cfg.seed + 1000 * iteration, num_envs=cfg.env.num_envs, primer=nets.primer())
    print(parameter_report(nets))
    optim = torch.optim.Adam([
        {"params": [*nets.encoder.parameters(), *nets.memory.parameters(), *nets.actor_head.parameters()],
         "lr": cfg.ppo.lr},
        {"params": list(nets.value_head.parameters()), "lr": cfg.ppo.value_lr}])
    if resume_state is not None:
        nets.load_state_dict(resume_state["model"])
        optim.load_state_dict(resume_state["optimizer"])
        set_rng_state(resume_state["rng"])
        print(f"resumed from frame {start_frames} (iteration {iteration})")
    # the loss sees only the heads: the trunk (encoder + memory) runs once per minibatch and its
    # output carries the gradient back into the trunk's parameters
    loss_fn = ClipPPOLoss(nets.actor_on_memory, nets.value_head, clip_epsilon=cfg.ppo.clip_epsilon,
                          entropy_coeff=cfg.ppo.entropy_coef, critic_coeff=cfg.ppo.critic_coef,
                          normalize_advantage=True, loss_critic_type="smooth_l1")
    logger = make_logger(cfg.logger, run.path, "metrics", config=to_dict(cfg))
    remaining = cfg.train.total_frames - start_frames
    if remaining <= 0:
        print(f"nothing to do: {start_frames} frames already done (train.total_frames={cfg.train.total_frames})")
        return 0
    collector = Collector(env, nets.policy, frames_per_batch=cfg.train.frames_per_batch,
                          total_frames=math.ceil(remaining / cfg.train.frames_per_batch) * cfg.train.frames_per_batch,
                          policy_device=device, env_device="cpu", storing_device=device)
    gen = torch.Generator().manual_seed(cfg.seed + iteration)
    frames, last_return, last_good = start_frames, float("nan"), run.latest_checkpoint()
    bar = tqdm(total=cfg.train.total_frames, initial=start_frames, unit="step", dynamic_ncols=True,
               disable=None)
    t_start = time.perf_counter()
    for batch in collector:
        batch = batch.reshape(cfg.env.num_envs, -1) if batch.ndim == 1 else batch
        frames += batch.numel()
        iteration += 1
        stats = episode_stats(batch, INFO_KEYS)
        last_return = stats.get("episode_return", last_return)
        compute_advantages(batch, nets.trunk, nets.value_head, nets.value_step, cfg.ppo.gamma,
                           cfg.ppo.gae_lambda)
        try:
            losses = ppo_update(batch, nets.trunk, loss_fn, optim, nets.parameters(), cfg.ppo, gen)
        except NonFiniteLoss as err:
            bar.close()
            print(f"error: non-finite loss at frame {frames} ({err.detail}); stopping. Last good "
                  f"checkpoint: {last_good or 'none yet'}", file=sys.stderr)
            collector.shutdown()
            return 1
        collector.update_policy_weights_()
        elapsed = time.perf_counter() - t_start
        scalars = {f"train/{k}": v for k, v in stats.items()}
        scalars.update({f"loss/{k}": v for k, v in losses.items()})
        scalars.update({"time/steps_per_s": (frames - start_frames) / elapsed, "time/elapsed_s": elapsed})
        log_scalars(logger, scalars, frames)
        bar.update(batch.numel())
        bar.set_postfix(sps=f"{scalars['time/steps_per_s']:.0f}", ret=f"{last_return:.2f}")
        if bar.disable:
            print(f"frames {frames} return {last_return:.2f} steps/s {scalars['time/steps_per_s']:.0f}", flush=True)
        done = frames >= cfg.train.total_frames
        if iteration % cfg.train.checkpoint_every == 0 or done:
            last_good = run.save_checkpoint(checkpoint_state(cfg, nets, optim, frames, iteration), frames)
        if cfg.train.eval_every and iteration % cfg.train.eval_every == 0 and not done:
            log_scalars(logger, {f"eval/{k}": v for k, v in
                                 evaluate(cfg, nets, cfg.train.eval_episodes, video=None).items()}, frames)
        if done:
            break
    collector.shutdown()
    bar.close()
    result = evaluate(cfg, nets, cfg.train.eval_episodes, video=run.videos / f"eval_{frames}.mp4")
    log_scalars(logger, {f"eval/{k}": v for k, v in result.items() if isinstance(v, float)}, frames)
    print(f"done: {frames} frames in {time.perf_counter() - t_start:.0f} s; eval {format_eval(result)}")
    print(f"run directory: {run.path}")
    return 0


def checkpoint_state(cfg: Config, nets: nn.Module, optim, frames: int, iteration: int) -> dict:
    return {"model": nets.state_dict(), "optimizer": optim.state_dict(), "frames": frames,
            "iteration": iteration, "rng": rng_state(), "config": to_dict(cfg),
            "env_seed": cfg.seed + 1000 * iteration}


# ---------------------------------------------------------------------------------- the CLI
def parse_args(argv=None) -> argparse.Namespace:
    return agent_parser("ppo_locomamba.py", "PPO with a LocoMamba (or LocoTransformer) policy on the "
                        "PyBullet A1 quadruped.", Config,
                        "YAML config of ours, or a LocoTransformer JSON config").parse_args(argv)


def resolve(args) -> tuple[Config, RunDir | None, dict | None]:
    return resolve_run(args, Config, load_new)


def load_new(args) -> Config:
    """A new run's config: ours (YAML) or LocoTransformer's JSON, converted."""
    if args.config:
        data = read_config_file(args.config)
        return load_config(Config, None, args.overrides, convert=lambda _: from_locotransformer(data))
    return load_config(Config, None, args.overrides)


def main(argv=None) -> int:
    return run_agent(parse_args(argv), config_cls=Config, agent=AGENT, check=check_consistency, run_eval=run_eval,
                     dry_run=dry_run, train=train, load_new=load_new)


def dry_run(cfg: Config) -> int:
    import yaml

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    nets = build_policy(cfg)
    print(parameter_report(nets))
    env = make_env(cfg.env, seed=cfg.seed, num_envs=1, primer=nets.primer())
    td = nets.policy(env.reset())
    print(f"env ok: observation keys {sorted(k for k in env.observation_spec.keys())}, "
          f"action {tuple(td['action'].shape)}")
    env.close()
    return 0


def run_eval(args) -> int:
    ckpt, state = eval_checkpoint(args.eval)
    from agents.common.config import from_dict

    cfg = from_dict(Config, state["config"])
    nets = build_policy(cfg)
    nets.load_state_dict(state["model"])
    episodes = args.episodes or cfg.train.eval_episodes
    out_dir = ckpt.parent.parent / "videos" if ckpt.parent.name == "checkpoints" else ckpt.parent
    result = evaluate(cfg, nets, episodes, video=out_dir / f"eval_{ckpt.stem}.mp4", seed=cfg.seed + 12345)
    print(f"eval of {ckpt} over {episodes} episodes: {format_eval(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
