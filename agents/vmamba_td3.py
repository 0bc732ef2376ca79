"""TD3 with VMamba encoders over K-step windows of depth + state: the drone agent (seed 004).

    python agents/vmamba_td3.py                                    # embedded PyBullet drone, seed defaults
    python agents/vmamba_td3.py --config configs/drone/quick_vmamba.yaml
    python agents/vmamba_td3.py --config configs/pendulum/td3_mamba.yaml   # the POMDP proof
    python agents/vmamba_td3.py --resume runs/vmamba_td3/<run>
    python agents/vmamba_td3.py --eval runs/vmamba_td3/<run> --episodes 20

The algorithm, top to bottom (``train``): a TorchRL Collector steps the env with the actor +
annealed OU noise (random actions for the first ``learning_starts`` steps); transitions go to
a replay buffer whose SliceSampler returns K consecutive steps of one episode; each update
builds the windows at t and t+1 from a slice and does TD3: clipped double-Q targets with
target-policy smoothing, a critic step every update, an actor step and Polyak target updates
every ``policy_delay`` updates.

Why not TorchRL's TD3Loss / SoftUpdate: TD3Loss builds ``num_qvalue_nets`` independent critic
copies through functional vmap, while this critic shares one (expensive) encoder between its
twin heads, and vmap does not run our chunked-scan autograd.Function; SoftUpdate needs that
LossModule. The update below is the same maths in ~25 lines, with the target update a single
``torch._foreach_lerp_``.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python agents/vmamba_td3.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from agents.common.cli import agent_parser, eval_checkpoint, format_eval, pick_device, run_agent
from agents.common.config import ConfigError, from_dict, to_dict
from agents.common.loggers import log_scalars, make_logger
from agents.common.run_dir import RunDir, rng_state, set_rng_state
from agents.td3_config import Config, check_consistency
from agents.td3_setup import (acting_policy, build_nets, check_slices, evaluate, make_env, make_replay,
                              parameter_report, to_storage, windows)

AGENT = "vmamba_td3"


def td3_update(cfg: Config, nets, optims, sample, update_index: int, device) -> dict:
    """One TD3 update on a batch of K-step slices; returns the losses (NaN-checked by the caller)."""
    obs, obs_next, action, reward, terminated = windows(cfg, sample, device)
    c = cfg.td3
    with torch.no_grad():
        noise = (torch.randn_like(action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
        next_action = (nets.actor_target(*obs_next) + noise).clamp(-1.0, 1.0)
        q1_t, q2_t = nets.critic_target(*obs_next, next_action)
        target = reward + c.gamma * (1.0 - terminated) * torch.min(q1_t, q2_t)
    q1, q2 = nets.critic(*obs, action)
    critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    out = {"critic_loss": critic_loss.detach(), "q1": q1.mean().detach()}
    step(optims["critic"], critic_loss, nets.critic, c.grad_clip)
    if update_index % c.policy_delay == 0:
        with torch.no_grad():  # the critic's features do not depend on the actor: encode once
            feature = nets.critic.encoder(*obs)
        actor_loss = -nets.critic.q_heads(feature, nets.actor(*obs))[0].mean()
        step(optims["actor"], actor_loss, nets.actor, c.grad_clip)
        out["actor_loss"] = actor_loss.detach()
        with torch.no_grad():
            for online, target_net in ((nets.actor, nets.actor_target), (nets.critic, nets.critic_target)):
                torch._foreach_lerp_(list(target_net.parameters()), list(online.parameters()), c.tau)
    return out


def step(optim, loss, module: nn.Module, grad_clip: float) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {float(loss)}")
    optim.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optim.step()


def train(cfg: Config, run: RunDir, resume_state: dict | None = None) -> int:
    from torchrl.collectors import Collector
    from tqdm import tqdm

    device = pick_device(cfg.device, "device")
    torch.manual_seed(cfg.seed)
    frames = 0 if resume_state is None else int(resume_state["frames"])
    updates = 0 if resume_state is None else int(resume_state["updates"])
    env = make_env(cfg, seed=cfg.seed + frames)
    nets = build_nets(cfg, env).to(device)
    print(parameter_report(nets))
    optims = {"actor": torch.optim.Adam(nets.actor.parameters(), lr=cfg.td3.actor_lr),
              "critic": torch.optim.Adam(nets.critic.parameters(), lr=cfg.td3.critic_lr)}
    policy, ou = acting_policy(cfg, nets, env.action_spec)
    replay = make_replay(cfg, run.path / "replay_storage")
    episode = 0  # running episode id stored with each step: the SliceSampler's trajectory key
    if resume_state is not None:
        nets.load_state_dict(resume_state["model"])
        for k, o in optims.items():
            o.load_state_dict(resume_state["optim_" + k])
        ou.load_state_dict(resume_state["ou"])
        set_rng_state(resume_state["rng"])
        if (run.path / "replay").is_dir():
            replay.loads(str(run.path / "replay"))
        episode = int(resume_state["episode"]) + 1  # the env starts a new episode after a resume
        print(f"resumed at frame {frames} ({updates} updates, replay {len(replay)} steps)")
    remaining = cfg.train.total_frames - frames
    if remaining <= 0:
        print(f"nothing to do: {frames} frames done (train.total_frames={cfg.train.total_frames})")
        return 0
    fpb = cfg.train.frames_per_batch
    collector = Collector(env, policy, frames_per_batch=fpb, total_frames=math.ceil(remaining / fpb) * fpb,
                          init_random_frames=max(0, cfg.train.learning_starts - frames),
                          policy_device=device, env_device="cpu", storing_device="cpu",
                          # the OU module keeps its noise in the tensordict: the collector adds its primer
                          auto_register_policy_transforms=True)
    logger = make_logger(cfg.logger, run.path, "metrics", config=to_dict(cfg))
    bar = tqdm(total=cfg.train.total_frames, initial=frames, unit="step", dynamic_ncols=True, disable=None)
    t0, start, last_ckpt, last_eval = time.perf_counter(), frames, frames, frames
    returns, losses, last_good = [], [], run.latest_checkpoint()
    for batch in collector:
        frames += batch.numel()
        ou.step(batch.numel())
        done = batch["next", "done"].squeeze(-1)
        returns += batch["next", "episode_reward"][done].flatten().tolist()
        stored, episode = to_storage(cfg, batch, episode)
        replay.extend(stored)
        if frames >= cfg.train.learning_starts and len(replay) > cfg.replay.batch_size * cfg.replay.seq_len:
            for _ in range(int(round(batch.numel() * cfg.train.updates_per_step))):
                sample = replay.sample()
                check_slices(cfg, sample)
                updates += 1
                try:
                    losses.append({k: float(v) for k, v in td3_update(cfg, nets, optims, sample, updates, device).items()})
                except FloatingPointError as err:
                    bar.close()
                    collector.shutdown()
                    print(f"error: {err} at frame {frames}; stopping. Last good checkpoint: "
                          f"{last_good or 'none yet'}", file=sys.stderr)
                    return 1
            collector.update_policy_weights_()
        elapsed = time.perf_counter() - t0
        scalars = {"time/steps_per_s": (frames - start) / elapsed, "time/elapsed_s": elapsed,
                   "train/updates": updates, "train/ou_eps": float(ou.eps)}
        if returns:
            scalars["train/episode_return"] = sum(returns[-10:]) / len(returns[-10:])
        for k in ("critic_loss", "actor_loss", "q1"):
            vals = [l[k] for l in losses[-200:] if k in l]
            if vals:
                scalars[f"loss/{k}"] = sum(vals) / len(vals)
        log_scalars(logger, scalars, frames)
        bar.update(batch.numel())
        bar.set_postfix(ret=f"{scalars.get('train/episode_return', float('nan')):.1f}",
                        sps=f"{scalars['time/steps_per_s']:.0f}")
        if bar.disable and (frames // fpb) % 20 == 0:  # no tty (logs, CI): a line now and then
            print(f"frames {frames} return {scalars.get('train/episode_return', float('nan')):.2f} "
                  f"steps/s {scalars['time/steps_per_s']:.0f} updates {updates}", flush=True)
        finished = frames >= cfg.train.total_frames
        if frames - last_ckpt >= cfg.train.checkpoint_every or finished:
            last_good, last_ckpt = save(cfg, run, nets, optims, ou, replay, frames, updates, episode), frames
        if cfg.train.eval_every and frames - last_eval >= cfg.train.eval_every and not finished:
            last_eval = frames
            result = evaluate(cfg, nets, cfg.train.eval_episodes, seed=cfg.seed + 10_000)
            log_scalars(logger, {f"eval/{k}": v for k, v in result.items()}, frames)
            print(f"\neval at {frames}: {format_eval(result)}", flush=True)
        if finished:
            break
    collector.shutdown()
    bar.close()
    result = evaluate(cfg, nets, cfg.train.eval_episodes, seed=cfg.seed + 10_000, out_dir=run.videos / f"eval_{frames}")
    log_scalars(logger, {f"eval/{k}": v for k, v in result.items() if isinstance(v, float)}, frames)
    print(f"done: {frames} frames, {updates} updates in {time.perf_counter() - t0:.0f} s; eval {format_eval(result)}")
    print(f"run directory: {run.path}")
    return 0


def save(cfg, run, nets, optims, ou, replay, frames, updates, episode) -> Path:
    # The replay buffer is written next to the checkpoint (tmp dir, then renamed), so a resumed run
    # continues with the same data instead of re-collecting learning_starts random steps.
    tmp, final = run.path / "replay.tmp", run.path / "replay"
    shutil.rmtree(tmp, ignore_errors=True)
    replay.dumps(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    state = {"model": nets.state_dict(), "frames": frames, "updates": updates, "episode": episode,
             "ou": ou.state_dict(),
             "rng": rng_state(), "config": to_dict(cfg), **{"optim_" + k: o.state_dict() for k, o in optims.items()}}
    return run.save_checkpoint(state, frames)


# -------------------------------------------------------------------------------------- the CLI
def parse_args(argv=None) -> argparse.Namespace:
    return agent_parser("vmamba_td3.py", "TD3 with VMamba (drone) or make_memory (vector obs) encoders "
                        "over K-step windows.", Config,
                        "YAML config (configs/drone/*.yaml, configs/pendulum/*.yaml)").parse_args(argv)


def main(argv=None) -> int:
    return run_agent(parse_args(argv), config_cls=Config, agent=AGENT, check=check_consistency, run_eval=run_eval,
                     dry_run=dry_run, train=train,
                     launch_errors=(ConfigError,))      # e.g. an env id that gymnasium cannot make


def dry_run(cfg: Config) -> int:
    import yaml

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    env = make_env(cfg, seed=cfg.seed)
    nets = build_nets(cfg, env)
    print(parameter_report(nets))
    policy, _ = acting_policy(cfg, nets, env.action_spec)
    td = policy(env.reset())
    print(f"env ok: observation keys {sorted(map(str, env.observation_spec.keys()))}, action {tuple(td['action'].shape)}")
    env.close()
    return 0


def run_eval(args) -> int:
    ckpt, state = eval_checkpoint(args.eval)
    cfg = from_dict(Config, state["config"])
    env = make_env(cfg, seed=cfg.seed)
    nets = build_nets(cfg, env).to(pick_device(cfg.device, "device"))
    env.close()
    nets.load_state_dict(state["model"])
    episodes = args.episodes or cfg.train.eval_episodes
    out_dir = ckpt.parent.parent / "videos" / f"eval_{ckpt.stem}"
    result = evaluate(cfg, nets, episodes, seed=cfg.seed + 12345, out_dir=out_dir)
    print(f"eval of {ckpt} over {episodes} episodes: {format_eval(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
