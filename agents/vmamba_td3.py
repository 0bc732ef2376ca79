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
import dataclasses
import logging
import math
import random
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python agents/vmamba_td3.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.runtime.cli import (agent_parser, eval_out_dir, eval_run, format_eval, output_root, pick_device,
                                run_agent, use_tf32_matmuls)
from agents.runtime.config import ConfigError, from_dict, to_dict  # noqa: F401  (from_dict: tests use it from here)
from agents.runtime.loggers import log_scalars, make_logger
from agents.runtime.nonfinite import NonFiniteLoss, check_finite
from agents.runtime.progress import ProgressRate
from agents.runtime.stop import StopOnSignal
from agents.runtime.best_export import keep_best
from agents.runtime import replay_io
from agents.algos.cuda_graph_train import NotCapturable, make_capturable, portable_optimizer_state
from agents.runtime.run_dir import RunDir, RunDirError, keep_rng, rng_state, set_rng_state
from agents.drone.config import Config, check_consistency, is_drone
from agents.drone.graphed_update import GraphedTD3Update
from envs import DRONE_IDS
from agents.drone.build import (acting_policy, build_nets, check_slices, close_env, evaluate, make_env, make_replay,
                              make_train_env, parameter_report, random_shift, to_storage, windows)

AGENT = "vmamba_td3"
log = logging.getLogger("mambazoo")


def make_optims(cfg: Config, nets) -> dict:
    """The two Adams: the actor's steps ``nets.actor_parameters()`` (its head alone with a shared encoder)."""
    return {"actor": torch.optim.Adam(nets.actor_parameters(), lr=cfg.td3.actor_lr),
            "critic": torch.optim.Adam(nets.critic.parameters(), lr=cfg.td3.critic_lr)}


def td3_update(cfg: Config, nets, optims, sample, update_index: int, device) -> dict:
    """One TD3 update on a batch of K-step slices; returns the losses (NaN-checked before each step)."""
    return td3_step(cfg, nets, optims, windows(cfg, sample, device), update_index % cfg.td3.policy_delay == 0)


def td3_step(cfg: Config, nets, optims, batch, actor_turn: bool, check: bool = True) -> dict:
    """The update on one batch of windows: critic, then (on the actor's turn) actor and targets.
    ``check=False`` inside a CUDA graph (no host sync there; GraphedTD3Update checks after replay)."""
    obs, obs_next, action, reward, terminated = batch
    c = cfg.td3
    if c.image_shift:   # DrQ: obs and next obs shifted independently (depth is obs[0]: build.obs_keys)
        obs = [random_shift(obs[0], c.image_shift), *obs[1:]]
        obs_next = [random_shift(obs_next[0], c.image_shift), *obs_next[1:]]
    shared = nets.shared   # one encoder for actor and critic (model.shared_encoder): encode once each
    with torch.no_grad():
        noise = (torch.randn_like(action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
        if shared:
            feature_next = nets.critic_target.encoder(*obs_next)
            next_action = (nets.actor_target.act(feature_next) + noise).clamp(-1.0, 1.0)
            q1_t, q2_t = nets.critic_target.q_heads(feature_next, next_action)
        else:
            next_action = (nets.actor_target(*obs_next) + noise).clamp(-1.0, 1.0)
            q1_t, q2_t = nets.critic_target(*obs_next, next_action)
        target = reward + c.gamma * (1.0 - terminated) * torch.min(q1_t, q2_t)
    feature = nets.critic.encoder(*obs)
    q1, q2 = nets.critic.q_heads(feature, action)
    critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    out = {"critic_loss": critic_loss.detach(), "q1": q1.mean().detach()}
    step(optims["critic"], critic_loss, c.grad_clip, check)
    if actor_turn:
        if shared:   # the critic pass's features, taken before its step, as DrQ-v2 does
            feature = feature.detach()
            actor_loss = -nets.critic.q_heads(feature, nets.actor.act(feature))[0].mean()
        else:
            with torch.no_grad():  # the critic's features do not depend on the actor: encode once
                feature = nets.critic.encoder(*obs)
            actor_loss = -nets.critic.q_heads(feature, nets.actor(*obs))[0].mean()
        step(optims["actor"], actor_loss, c.grad_clip, check)
        out["actor_loss"] = actor_loss.detach()
        with torch.no_grad():
            torch._foreach_lerp_(*nets.target_pairs(), c.tau)
    return out


def step(optim, loss, grad_clip: float, check: bool = True) -> None:
    """zero_grad, backward, clip (over the optimiser's own parameters: a shared encoder still holds the
    critic's gradient during the actor's step), step."""
    if check:
        check_finite(None, loss=loss)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_([p for g in optim.param_groups for p in g["params"]], grad_clip)
    optim.step()


def make_update(cfg: Config, nets, optims, sample, device):
    """td3_update, or with train.cuda_graph on CUDA its graphed form (built on the first batch: the
    graphs need its shapes). Nets that cannot be captured (cuDNN GRU/LSTM) are reported and updated
    eagerly; a capture that fails midway stops the run (agents/algos/cuda_graph_train.py says why)."""
    if not (cfg.train.cuda_graph and device.type == "cuda"):
        return td3_update
    try:
        graphed = GraphedTD3Update(cfg, nets, optims, sample, device, td3_step)
    except NotCapturable as exc:
        log.warning("TD3 update: train.cuda_graph skipped (%s); eager updates", exc)
        return td3_update
    log.warning("TD3 update: critic and critic+actor steps replayed as CUDA graphs (agents/algos/cuda_graph_train.py)")
    return graphed


def train(cfg: Config, run: RunDir, resume_state: dict | None = None) -> int:
    """Collect + update in segments of ``train.checkpoint_every_frames`` frames. Each segment starts a
    fresh env (seeded with seed + frames) and collector from the RNG state saved with the
    checkpoint that ends the previous one, exactly as ``--resume`` does: so a resumed run is the
    uninterrupted run, bit for bit (tested), at the cost of one truncated episode per checkpoint.
    With env.num_envs > 1 the env is a ParallelEnv (``make_train_env``) and a batch [num_envs, T]:
    every frame count here is env steps summed over the envs (``batch.numel()``).
    A SIGTERM (agents/runtime/stop.py) ends the segment after the batch it arrives in, or cuts off a
    running eval (which the resumed run then does first): a checkpoint at that frame, exit 0."""
    with StopOnSignal() as stop:
        return _train(cfg, run, resume_state, stop)


def _train(cfg: Config, run: RunDir, resume_state: dict | None, stop: StopOnSignal) -> int:
    from tqdm import tqdm

    device = pick_device(cfg.device, "device")
    if use_tf32_matmuls(device):
        log.warning("TD3 on CUDA: float32 matmuls and convolutions on TF32 tensor cores")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)                 # all three streams: a fresh process must not start from urandom
    np.random.seed(cfg.seed)
    st = resume_state or {}
    frames, updates = int(st.get("frames", 0)), int(st.get("updates", 0))
    env = make_train_env(cfg, seed=cfg.seed + frames)
    nets = build_nets(cfg, env).to(device)
    print(parameter_report(nets))
    optims = make_optims(cfg, nets)
    policy, ou = acting_policy(cfg, nets, env.action_spec)
    # replay.storage=memmap: replay_storage/ is this process's working copy (the run is locked);
    # what a resume restores is the checkpoint's replay folder, so a stale copy goes first
    shutil.rmtree(run.path / "replay_storage", ignore_errors=True)
    replay = make_replay(cfg, run.path / "replay_storage")
    episode = 0  # running episode id stored with each step: the SliceSampler's trajectory key
    returns, losses, last_eval, rng = [], [], frames, None
    best = st.get("best_eval")            # the best eval's record (agents/runtime/best_export.py)
    refill_until = 0  # frame before which no update runs (learning_starts; on a refilled resume later)
    if resume_state is not None:
        nets.load_state_dict(resume_state["model"])
        for k, o in optims.items():
            o.load_state_dict(resume_state["optim_" + k])
        ou.load_state_dict(resume_state["ou"])
        if "replay" not in resume_state:
            raise RunDirError("this checkpoint predates the pickle-free replay format (its replay/ folder was "
                              "written by torchrl's dumps, which loads pickle files): start a new run")
        saved = run.path / "replay" / str(resume_state["replay"]["dir"])
        if cfg.train.refill_replay and not saved.exists():
            refill_until = frames + cfg.train.learning_starts
            print(f"replay folder {saved} is missing: train.refill_replay collects {cfg.train.learning_starts} "
                  f"steps with the resumed policy before updating again (until frame {refill_until})")
            if refill_until >= cfg.train.total_frames:   # seen: a Forest run resumed 1.8k steps from its end
                print(f"warning: the refill reaches train.total_frames={cfg.train.total_frames}: no update runs "
                      f"in the rest of this run (its final eval is the resumed policy's); raise "
                      f"train.total_frames to train on, or resume with the replay folder", flush=True)
        else:
            try:
                replay_io.load(replay, run.path / "replay", resume_state["replay"])
            except replay_io.ReplayError as err:
                if saved.exists():
                    raise
                raise RunDirError(f"{err}: resume with train.refill_replay=true to refill the buffer from the "
                                  f"resumed policy ({cfg.train.learning_starts} steps, train.learning_starts, "
                                  "without updates)") from None
        # folders of saves that a kill cut short (no checkpoint names them) go now
        replay_io.prune(run.path / "replay", [replay_io.folder_name(s) for s, _ in run._checkpoint_files()])
        episode = int(resume_state["episode"]) + 1  # the env starts a new episode after a resume
        returns, losses = list(st.get("returns", [])), list(st.get("losses", []))
        last_eval = int(st.get("last_eval", frames))
        refill_until = max(refill_until, int(st.get("refill_until", 0)))   # a refill a stop cut short goes on
        rng = resume_state["rng"]
        close_env(env)
        env = None                        # the segment below makes it after the RNG is restored
        print(f"resumed at frame {frames} ({updates} updates, replay {len(replay)} steps)")
    remaining = cfg.train.total_frames - frames
    if remaining <= 0:
        print(f"nothing to do: {frames} frames done (train.total_frames={cfg.train.total_frames})")
        return 0
    if cfg.train.cuda_graph and device.type == "cuda":   # after loading a resumed state (CPU step counters)
        for o in optims.values():
            make_capturable(o, device)
    update = None                         # td3_update or its graphed form, chosen at the first batch
    fpb = cfg.train.frames_per_batch
    logger = make_logger(cfg.logger, run.path, "metrics", config=to_dict(cfg))

    def keep_if_best(result: dict, frame: int) -> None:
        nonlocal best
        best = keep_best(run.path, {"model": nets.state_dict(), "config": to_dict(cfg), "frames": frame,
                                    "updates": updates}, result, frame, best)

    def periodic_eval(frame: int) -> bool:
        """The train.eval_every_frames eval at ``frame``, logged (and exported if the best so far); False when
        a stop cut it off (nothing logged)."""
        result = keep_rng(evaluate, cfg, nets, cfg.train.eval_episodes, seed=cfg.seed + EVAL_SEED_OFFSET,
                          should_stop=lambda: stop.requested)
        if result is not None:
            log_scalars(logger, {f"eval/{k}": v for k, v in result.items()}, frame)
            print(f"\neval at {frame}: {format_eval(result)}", flush=True)
            keep_if_best(result, frame)
        return result is not None

    if eval_due(cfg, frames, last_eval) and frames < cfg.train.total_frames:
        # the eval a stop cut off (it left last_eval behind): at the frame it was due, as the run without the stop
        if not periodic_eval(frames):
            print(f"stopped by {stop.signal_name} during the eval at frame {frames}: nothing new to save; "
                  f"--resume {run.path} evaluates again", flush=True)
            return 0
        last_eval = frames
    bar = tqdm(total=cfg.train.total_frames, initial=frames, unit="step", dynamic_ncols=True, disable=None)
    t0, start = time.perf_counter(), frames
    progress = ProgressRate(t0, frames)
    finished = stopped = False
    while not (finished or stopped):      # one segment: from a checkpoint (or the start) to the next
        if rng is not None:
            set_rng_state(rng)
        if env is None:
            env = make_train_env(cfg, seed=cfg.seed + frames)
        # to the next multiple of checkpoint_every_frames (a stop's checkpoint is off that grid), or the end
        every = cfg.train.checkpoint_every_frames
        seg = math.ceil((min((frames // every + 1) * every, cfg.train.total_frames) - frames) / fpb)
        collector = make_collector(cfg, env, policy, device, seg * fpb, frames)
        first_episode = episode           # this segment's collector numbers its episodes from 0: ids start past the stored ones
        try:
            for batch in collector:
                frames += batch.numel()
                ou.step(batch.numel())
                done = batch["next", "done"].squeeze(-1)
                returns = (returns + batch["next", "episode_reward"][done].flatten().tolist())[-10:]
                stored, episode = to_storage(cfg, batch, first_episode)
                replay.extend(stored)
                if frames >= max(cfg.train.learning_starts, refill_until) and \
                        len(replay) > cfg.replay.batch_size * cfg.replay.seq_len:
                    for _ in range(int(round(batch.numel() * cfg.train.updates_per_step))):
                        sample = replay.sample()
                        check_slices(cfg, sample)
                        updates += 1
                        if update is None:
                            update = make_update(cfg, nets, optims, sample, device)
                        try:
                            out = update(cfg, nets, optims, sample, updates, device)
                        except NonFiniteLoss as err:   # run_agent reports it (exit 1, the last good checkpoint)
                            bar.close()
                            raise err.at(frame=frames) from None
                        losses = (losses + [{k: float(v) for k, v in out.items()}])[-200:]
                    collector.update_policy_weights_()
                elapsed = time.perf_counter() - t0
                scalars = {"time/steps_per_s": (frames - start) / elapsed, "time/elapsed_s": elapsed,
                           "train/updates": updates, "train/ou_eps": float(ou.eps)}
                if returns:
                    scalars["train/episode_return"] = sum(returns) / len(returns)
                for k in ("critic_loss", "actor_loss", "q1"):
                    vals = [l[k] for l in losses if k in l]
                    if vals:
                        scalars[f"loss/{k}"] = sum(vals) / len(vals)
                log_scalars(logger, scalars, frames)
                now = time.perf_counter()
                bar.update(batch.numel())
                bar.set_postfix(ret=f"{scalars.get('train/episode_return', float('nan')):.1f}",
                                sps=f"{progress.batch_rate(now, frames):.0f}")     # this batch's rate, as PPO's bar
                line = progress.line_rate(now, frames, final=frames >= cfg.train.total_frames)
                if bar.disable and line is not None:
                    # no tty (logs, CI): a line at least every PROGRESS_EVERY_S, with the rate since the last one
                    print(f"frames {frames} return {scalars.get('train/episode_return', float('nan')):.2f} "
                          f"steps/s {line:.0f} (average {scalars['time/steps_per_s']:.0f}) updates {updates}", flush=True)
                finished = frames >= cfg.train.total_frames
                if stop.requested and not finished:
                    stopped = True        # the collector stops here; the checkpoint below is this frame's
                    break
                if eval_due(cfg, frames, last_eval) and not finished:
                    if not periodic_eval(frames):   # cut off by a stop: last_eval stays, the resume evaluates first
                        stopped = True
                        break
                    last_eval = frames
        finally:                          # also on a crash: no worker processes left behind
            collector.shutdown(close_env=False)
            close_env(env)
        env = None
        rng = rng_state()
        # finished: the final eval follows this save. Where a periodic eval was due at this frame too, a run
        # extended from here (--resume with a larger train.total_frames) counts the final one as it instead
        # of evaluating the same frame again; elsewhere the periodic grid goes on as it was
        if finished and eval_due(cfg, frames, last_eval):
            last_eval = frames
        path = save(cfg, run, nets, optims, ou, replay, frames, updates, episode,
                    rng=rng, returns=returns, losses=losses, last_eval=last_eval, refill_until=refill_until,
                    best_eval=best)
        episode += 1                      # the next segment's env starts a new episode, as on resume
    bar.close()
    if stopped:
        print(f"stopped by {stop.signal_name} at frame {frames}: checkpoint {path} written; "
              f"`python agents/vmamba_td3.py --resume {run.path}` continues the run (the stop ends a segment "
              "there: the resumed run is the run whose checkpoint fell on this frame, bit for bit)", flush=True)
        return 0
    result = evaluate(cfg, nets, cfg.train.eval_episodes, seed=cfg.seed + EVAL_SEED_OFFSET, out_dir=run.videos / f"eval_{frames}")
    figures = {k: v for k, v in result.items() if isinstance(v, float)}   # less the video and plot paths
    log_scalars(logger, {f"eval/{k}": v for k, v in figures.items()}, frames)
    keep_if_best(figures, frames)
    print(f"done: {frames} frames, {updates} updates in {time.perf_counter() - t0:.0f} s; eval {format_eval(result)}")
    print(f"run directory: {run.path}")
    return 0


def make_collector(cfg: Config, env, policy, device, total: int, frames: int):
    from torchrl.collectors import Collector

    return Collector(env, policy, frames_per_batch=cfg.train.frames_per_batch, total_frames=total,
                     init_random_frames=max(0, cfg.train.learning_starts - frames),
                     policy_device=device, env_device="cpu", storing_device="cpu",
                     # the OU module keeps its noise in the tensordict: the collector adds its primer
                     auto_register_policy_transforms=True)


EVAL_SEED_OFFSET, HELDOUT_SEED_OFFSET = 10_000, 12345   # in-training evals' episodes; --eval's by default


def eval_due(cfg: Config, frames: int, last_eval: int) -> bool:
    return bool(cfg.train.eval_every_frames) and frames - last_eval >= cfg.train.eval_every_frames


KEEP_CHECKPOINTS = 2   # the newest and one to fall back to; each names its own replay folder


def save(cfg, run, nets, optims, ou, replay, frames, updates, episode, *, rng=None, returns=(), losses=(),
         last_eval=0, refill_until=0, best_eval=None) -> Path:
    """Crash-consistent: the replay goes to its own folder replay/<frame>/ (fsynced, with a manifest),
    then the checkpoint (atomic rename) names that folder and the manifest's sha256, then folders
    that no kept checkpoint names are deleted. A kill at any point leaves the newest checkpoint
    paired with exactly the replay it was written with."""
    entry = replay_io.save(replay, run.path / "replay", frames)
    state = {"model": nets.state_dict(), "frames": frames, "updates": updates, "episode": episode,
             "ou": ou.state_dict(), "replay": entry, "returns": [float(r) for r in returns],
             "losses": [dict(l) for l in losses], "last_eval": int(last_eval), "refill_until": int(refill_until),
             "best_eval": best_eval,
             "rng": rng if rng is not None else rng_state(), "config": to_dict(cfg),
             # as an ordinary optimiser saves it, also from a graphed run: checkpoints resume anywhere
             **{"optim_" + k: portable_optimizer_state(o.state_dict()) for k, o in optims.items()}}
    replay_io.fault_pause("before checkpoint")
    path = run.save_checkpoint(state, frames, keep=KEEP_CHECKPOINTS)
    replay_io.fault_pause("before prune")
    replay_io.prune(run.path / "replay", [replay_io.folder_name(step) for step, _ in run._checkpoint_files()])
    return path


def validate_checkpoint(run: RunDir, state: dict) -> None:
    """A checkpoint is only resumable with the replay it names (the fallback to an older one skips it),
    except when the run has no replay folder at all (a run that travelled without its buffers): then
    the newest checkpoint stands and train() refills the buffer (train.refill_replay) or says how."""
    if "replay" in state:
        root = run.path / "replay"
        if not (root.is_dir() and any(p.is_dir() for p in root.iterdir())):
            return
        replay_io.verify(root, state["replay"], checksums=True)


# -------------------------------------------------------------------------------------- the CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = agent_parser("vmamba_td3.py", "TD3 with VMamba (drone) or make_memory (vector obs) encoders "
                          "over K-step windows.", Config, "YAML config (configs/drone/*.yaml, configs/pendulum/*.yaml)")
    parser.sections["eval"].add_argument(
        "--eval-seed", type=int, default=None, metavar="N",
        help=f"seed of --eval's episodes (the drone's layouts); default the run's seed + {HELDOUT_SEED_OFFSET}, "
             f"episodes no in-training eval flew; seed + {EVAL_SEED_OFFSET} flies the in-training evals' episodes")
    parser.sections["eval"].add_argument(
        "--eval-env", default=None, choices=sorted(DRONE_IDS.values()), metavar="ID",
        help="fly a drone policy in another field (one DroneEnv: the same observations and actions), e.g. a "
             f"Forest policy in mambazoo/DroneWalls-v0 (the rest of the config as trained, env.num_obstacles too); one of {', '.join(sorted(DRONE_IDS.values()))}")
    return parser.parse_args(argv)


QUICK_CPU_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "drone" / "quick_vmamba.yaml"


def main(argv=None) -> int:
    args = parse_args(argv)
    if use_cpu_default(args, torch.cuda.is_available()):
        args.config = str(QUICK_CPU_CONFIG)
        print(f"no CUDA device: training the CPU-sized {QUICK_CPU_CONFIG.relative_to(QUICK_CPU_CONFIG.parents[2])} "
              "(small VMamba, 8,000 frames, a few minutes on 2 cores); the seed's 2.03M-parameter network is "
              "--config configs/drone/seed_vmamba.yaml (about 15 s per update on a 2-core CPU)", flush=True)
    return run_agent(args, config_cls=Config, agent=AGENT, check=check, run_eval=run_eval,
                     dry_run=dry_run, train=train, validate_checkpoint=validate_checkpoint,
                     frozen_on_resume=("model", "env", "replay"),   # the weights and the saved replay's layout
                     launch_errors=(ConfigError,))      # e.g. an env id that gymnasium cannot make


def use_cpu_default(args, cuda: bool) -> bool:
    """The plain command (no --config, --resume, --eval or --export) on a machine without CUDA trains the
    CPU-sized config: the seed-size network needs ~15 s per update there, so it would print its
    parameter table and then nothing for minutes. The seed size stays one option away."""
    return not (args.config or args.resume or args.eval or getattr(args, "export", None) or cuda)


def check(cfg: Config) -> None:
    """Everything that can be checked before a run directory exists: key constraints, the env id
    is registered, an AirSim backend answers."""
    import gymnasium as gym

    check_consistency(cfg)
    try:
        gym.spec(cfg.env.id)
    except gym.error.Error as err:
        raise ConfigError(f"config key 'env.id': {cfg.env.id!r} is not a registered gymnasium id ({err})") from None
    if is_drone(cfg) and cfg.env.backend == "airsim":
        import socket

        try:
            socket.create_connection((cfg.env.airsim_host, cfg.env.airsim_port), timeout=3.0).close()
        except OSError as err:
            raise ConfigError(f"config key 'env.airsim_host': no AirSim at {cfg.env.airsim_host}:"
                              f"{cfg.env.airsim_port} ({err}); start it or use env.backend=pybullet") from None


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
    ckpt, state, cfg, episodes = eval_run(args, Config)
    if args.eval_env is not None:            # transfer to another field, the rest of the config as trained
        if cfg.env.id not in DRONE_IDS.values():
            print(f"error: --eval-env {args.eval_env}: {ckpt} was trained on {cfg.env.id}, not a drone field",
                  file=sys.stderr)
            return 2
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, id=args.eval_env))
    env = make_env(cfg, seed=cfg.seed)
    nets = build_nets(cfg, env).to(pick_device(cfg.device, "device"))
    env.close()
    nets.load_state_dict(state["model"])
    # a run's checkpoint: RUN/videos/eval_<name>/; a loose file (a shipped policy): eval_<name>/ beside it,
    # which .gitignore keeps out of agents/policies/
    root = output_root(ckpt)
    name = f"eval_{ckpt.stem}" + (f"_{args.eval_env.split('/')[-1]}" if args.eval_env else "")
    out_dir = eval_out_dir(args, ckpt, (root / "videos" if root != ckpt.parent else root) / name)
    seed = cfg.seed + HELDOUT_SEED_OFFSET if args.eval_seed is None else args.eval_seed
    result = evaluate(cfg, nets, episodes, seed=seed, out_dir=out_dir)
    where = f" in {cfg.env.id}" if args.eval_env else ""
    print(f"eval of {ckpt}{where} over {episodes} episodes (seed {seed}): {format_eval(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
