"""Behaviour cloning with diffusion: 3D Diffusion Policy (DP3) and Mamba Policy (seed 001).

    python agents/bc_diffusion.py generate --task push --episodes 100 --out data/manip/push --seed 0
    python agents/bc_diffusion.py info data/manip/push
    python agents/bc_diffusion.py train --config configs/manip/push_mamba1.yaml [key=value ...]
    python agents/bc_diffusion.py train --config configs/manip/push_unet.yaml data.path=data/manip/pick_place
    python agents/bc_diffusion.py train --resume runs/bc_diffusion/<run>
    python agents/bc_diffusion.py eval runs/bc_diffusion/<run> --episodes 20

The algorithm, top to bottom (``train``): the whole dataset goes into (device) memory (6 KiB a
step); every step draws ``batch_size`` windows of ``horizon`` rows that stay inside one episode
(padded by repeating its first observation / last action, as Diffusion Policy's sampler), the
first ``n_obs_steps`` observations of the window condition the denoiser and all ``horizon``
actions are the diffusion target. Loss: DDPM noise-prediction MSE (``DiffusionPolicy.compute_loss``),
AdamW + warm-up/cosine lr, an EMA of the weights (torch's AveragedModel with Diffusion Policy's
warm-up), which is what ``eval`` acts with. ``eval`` runs the env closed loop: keep the last
``n_obs_steps`` observations (the first one repeated at reset), sample a chunk with DDIM, execute
``n_action_steps`` of it, repeat.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path

if __package__ in (None, ""):  # `python agents/bc_diffusion.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from agents.manipulation.config import Config
from agents.algos.bc import bc_main, bc_parser, restore_training, warmup_cosine, write_json_atomic
from agents.runtime.cli import pick_device
from agents.runtime.config import to_dict
from agents.algos.cuda_graph_train import (GraphedTrainStep, NotCapturable, make_capturable, portable_optimizer_state,
                                            portable_schedule_state)
from agents.runtime.loggers import log_scalars, make_logger
from agents.runtime.nonfinite import check_finite
from agents.runtime.run_dir import RunDir, rng_state
from agents.runtime.stop import StopOnSignal
from agents.manipulation.data import DatasetError, load_dataset
from agents.manipulation.data import main as data_main
from networks.models.diffusion_policy import DiffusionPolicy, make_policy
from networks.params import count_parameters
from networks.ssm.param_groups import weight_decay_groups

AGENT = "bc_diffusion"


class Windows:
    """The dataset in memory + Diffusion Policy's window sampler: ``sample(B)`` -> training batch."""

    def __init__(self, cfg: Config, device: torch.device, path: str | None = None):
        p = cfg.policy
        self.demos = load_dataset(path or cfg.data.path)        # path: another dataset (data.val_path)
        meta = self.demos.meta["config"]
        self.task, self.num_points = meta["task"], int(meta["num_points"])
        data = self.demos.data
        # clone out of the memmap: random gathers from RAM / GPU memory, not the page cache
        self.pc, self.pos, self.act = (data[k].clone().to(device) for k in ("point_cloud", "agent_pos", "action"))
        self.index = self.demos.window_indices(p.horizon, p.n_obs_steps - 1, p.n_action_steps - 1).to(device)
        self.n_obs, self.device = p.n_obs_steps, device

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        pick = torch.randint(len(self.index), (batch_size,), device=self.device, generator=generator)
        rows = self.index[pick]                                                              # [B, T]
        obs = rows[:, : self.n_obs]                                                          # [B, To]
        return {"point_cloud": self.pc[obs], "agent_pos": self.pos[obs], "action": self.act[rows]}


@torch.no_grad()
def open_loop_error(policy: DiffusionPolicy, batch: dict, generator: torch.Generator) -> float:
    """Mean |sampled action - expert action| over the executed steps of a batch of windows, in
    normalised action units ([-1, 1]): how well the policy reproduces these demos open loop."""
    To, Ta = policy.n_obs_steps, policy.n_action_steps
    pred = policy.predict_action({k: batch[k][:, :To] for k in ("point_cloud", "agent_pos")},
                                 generator=generator)["action"]
    norm = policy.action_norm
    return float((norm(pred) - norm(batch["action"][:, To - 1: To - 1 + Ta])).abs().mean())


@torch.no_grad()
def validate(policy: DiffusionPolicy, batch: dict, device: torch.device) -> dict:
    """The (EMA) policy on fixed held-out windows: noise-MSE at fixed noise and DDPM steps, and the
    open-loop action error at fixed sampling noise, so successive validations differ by the weights."""
    was_training = policy.training
    policy.eval()
    loss = float(policy.compute_loss(batch, generator=torch.Generator(device).manual_seed(0)))
    error = open_loop_error(policy, batch, torch.Generator(device).manual_seed(1))
    policy.train(was_training)
    return {"val/loss": loss, "val/open_loop_error": error}


@torch.no_grad()
def ema_update_(ema, model: torch.nn.Module, max_decay: float, power: float = 0.75) -> None:
    """One EMA update of ``ema`` (torch's AveragedModel with use_buffers=True, kept for its
    state_dict layout) towards ``model``, with Diffusion Policy's warm-up: after n updates the decay
    is min(max_decay, 1 - (1 + n)^-power), so the first update (n = 0) copies and a short run's EMA
    is not still mostly its random initialisation (a fixed 0.9999 needs ~10^4 steps). Tensor maths
    only: AveragedModel.update_parameters branches on its counter (a host sync), this can run inside
    a CUDA graph. Why not diffusers' EMAModel: importing diffusers.training_utils pulls diffusers'
    model zoo (and transformers/peft when installed)."""
    n = ema.n_averaged
    keep = (1.0 - (1.0 + n.float()) ** -power).clamp(max=max_decay)
    pairs = list(zip([*ema.module.parameters(), *ema.module.buffers()], [*model.parameters(), *model.buffers()]))
    avg = [d for d, _ in pairs if d.is_floating_point()]
    delta = torch._foreach_sub([s.detach() for d, s in pairs if d.is_floating_point()], avg)
    torch._foreach_mul_(delta, 1.0 - keep)
    torch._foreach_add_(avg, delta)
    for d, s in pairs:
        if not d.is_floating_point():
            d.copy_(s)
    n += 1


def param_report(policy: DiffusionPolicy) -> dict:
    return {name: count_parameters(m, trainable=True)
            for name, m in (("encoder", policy.encoder), ("denoiser", policy.denoiser), ("total", policy))}


# ------------------------------------------------------------------------------------ training
def train(cfg: Config, run: RunDir, state: dict | None) -> None:
    """Train to train.steps; a SIGTERM (agents/runtime/stop.py) ends the step it arrives in with a
    checkpoint at that step (a resume continues exactly there) and returns."""
    with StopOnSignal() as stop:
        _train(cfg, run, state, stop)


def _train(cfg: Config, run: RunDir, state: dict | None, stop: StopOnSignal) -> None:
    from torch.optim.swa_utils import AveragedModel
    from tqdm import tqdm

    device = pick_device(cfg.device, "device")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = Windows(cfg, device)
    policy = make_policy(cfg.policy, data.num_points).to(device)
    policy.fit_normalizers({k: {m: v.to(device) for m, v in d.items()} for k, d in data.demos.stats().items()})
    # A_log, D and the dt bias are not decayed, as in upstream Mamba (networks/ssm/param_groups.py)
    optim = torch.optim.AdamW(weight_decay_groups(policy, cfg.train.weight_decay), lr=cfg.train.lr,
                              betas=(0.95, 0.999))
    sched = warmup_cosine(optim, cfg.train.warmup_steps, cfg.train.steps)
    # use_buffers: the EMA copy carries the normalisers too, so it is a complete acting policy
    ema = AveragedModel(policy, device=device, use_buffers=True)
    step = 0
    if state is not None:
        step = restore_training(state, model=policy, optim=optim, sched=sched, ema=ema)
        print(f"resumed from step {step}")
    counts = param_report(policy)
    print(f"task {data.task}: {len(data.demos.episodes)} episodes, {len(data.demos)} steps, "
          f"{len(data.index)} windows; device {device}")
    print(f"parameters ({cfg.policy.denoiser}): encoder {counts['encoder']:,}, denoiser {counts['denoiser']:,}, "
          f"total {counts['total']:,}")
    logger = make_logger(cfg.logger, run.path, AGENT, config=to_dict(cfg))
    val_batch = None
    if cfg.train.val_every_steps:    # the same 256 held-out windows at every validation
        val = Windows(cfg, device, cfg.data.val_path)
        val_batch = val.sample(256, torch.Generator(device).manual_seed(0))
        print(f"validation every {cfg.train.val_every_steps} steps on {len(val.demos.episodes)} held-out episodes "
              f"({cfg.data.val_path}): 256 windows")
        del val

    def save() -> Path:
        return run.save_checkpoint({
            "model": policy.state_dict(), "ema": ema.state_dict(), "ema_model": ema.module.state_dict(),
            "optim": portable_optimizer_state(optim.state_dict()),
            "sched": portable_schedule_state(sched.state_dict()), "step": step, "rng": rng_state(),
            "config": to_dict(cfg), "task": data.task, "num_points": data.num_points, "params": counts}, step)

    def train_step() -> torch.Tensor:
        """One step but zeroing the gradients: sample windows, noise-prediction loss, AdamW, EMA."""
        loss = policy.compute_loss(data.sample(cfg.train.batch_size))
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.train.grad_clip)
        optim.step()
        ema_update_(ema, policy, cfg.train.ema_decay)
        return loss.detach()

    policy.train()
    graphed = None
    if device.type == "cuda" and cfg.train.cuda_graph:
        make_capturable(optim, device)
        try:
            graphed = GraphedTrainStep(train_step, [policy, ema], optim)
            print("training step captured as one CUDA graph (train.cuda_graph=true)")
        except NotCapturable as e:  # a module no graph can hold: the same step, eagerly
            print(f"train.cuda_graph skipped ({e}); training eagerly")
    # disable=None: a bar only on a terminal (in a log file: plain lines, no \r or cursor escape codes)
    bar = tqdm(total=cfg.train.steps, initial=step, desc=f"{cfg.name} ({cfg.policy.denoiser})", unit="step",
               disable=None)
    running, n, t0 = 0.0, 0, time.perf_counter()
    while step < cfg.train.steps:
        if graphed is not None:
            loss = graphed()
        else:
            optim.zero_grad(set_to_none=True)
            loss = train_step()
        sched.step()
        step += 1
        check_finite(step, loss=loss)          # one sync a step; cheap next to a UNet step
        running, n = running + float(loss), n + 1
        bar.update()
        if step % cfg.train.log_every_steps == 0 or step == cfg.train.steps:
            dt = time.perf_counter() - t0
            log_scalars(logger, {"train/loss": running / n, "train/lr": float(sched.get_last_lr()[0]),
                                 "train/steps_per_s": n / dt}, step)
            bar.set_postfix(loss=f"{running / n:.4f}", lr=f"{float(sched.get_last_lr()[0]):.1e}")
            if bar.disable:                  # no terminal: one plain line per log row instead
                print(f"step {step}/{cfg.train.steps} loss {running / n:.4f} lr {float(sched.get_last_lr()[0]):.1e} "
                      f"steps/s {n / dt:.1f}", flush=True)
            running, n, t0 = 0.0, 0, time.perf_counter()
        if step % cfg.train.checkpoint_every_steps == 0 or step == cfg.train.steps or stop.requested:
            path = save()
        if stop.requested and step < cfg.train.steps:
            bar.close()
            print(f"stopped by {stop.signal_name} at step {step}: checkpoint {path} written; "
                  f"`python agents/bc_diffusion.py train --resume {run.path}` continues exactly there", flush=True)
            return
        if val_batch is not None and (step % cfg.train.val_every_steps == 0 or step == cfg.train.steps):
            scores = validate(ema.module, val_batch, device)
            log_scalars(logger, scores, step)
            print(f"step {step} val loss {scores['val/loss']:.4f} open-loop error {scores['val/open_loop_error']:.4f}",
                  flush=True)
        if cfg.train.eval_every_steps and step % cfg.train.eval_every_steps == 0:
            result = rollout(cfg, ema.module, data.task, cfg.eval.episodes, cfg.eval.seed, None)
            log_scalars(logger, {f"eval/{k}": v for k, v in result.items() if isinstance(v, float)}, step)
            policy.train()
    bar.close()
    print(f"done: {step} steps; last checkpoint {run.latest_checkpoint()}")


# ---------------------------------------------------------------------------------- evaluation
def _stack(history: deque, device) -> dict:
    """Last n_obs_steps env observations -> point_cloud [1, To, P, 3], agent_pos [1, To, 11]."""
    return {k: torch.from_numpy(np.stack([o[k] for o in history]))[None].to(device)
            for k in ("point_cloud", "agent_pos")}


@torch.no_grad()
def rollout(cfg: Config, policy: DiffusionPolicy, task: str, episodes: int, seed: int, video_path,
            on_step=None, episode_rows: list | None = None) -> dict:
    """Closed-loop episodes seeded seed, seed+1, ...: success rate, length, inference ms per chunk.
    ``on_step(episode, env)``, if given, is called after each reset and each env step (a probe of the
    simulator's state, e.g. benchmarks/bc_diffusion_failures.py; it must not step the env).
    ``episode_rows``, if given, gets one {seed, success, steps} per episode."""
    from tqdm import tqdm

    from agents.runtime.video import write_video
    from envs.manipulation.panda_env import PandaManipEnv

    device = next(policy.parameters()).device
    policy.eval()
    env = PandaManipEnv(task=task, num_points=policy.num_points)
    rows = [] if episode_rows is None else episode_rows   # one {seed, success, steps} per episode
    first, times, frames = len(rows), [], []
    try:
        bar = tqdm(range(episodes), desc=f"eval {task} ({cfg.policy.denoiser})", unit="ep", dynamic_ncols=True,
                   disable=None)
        for ep in bar:
            obs, info = env.reset(seed=seed + ep)
            gen = torch.Generator(device).manual_seed(seed + ep)    # the sampling noise is seeded too
            history = deque([obs] * policy.n_obs_steps, maxlen=policy.n_obs_steps)  # first obs repeated
            record = video_path is not None and ep == 0
            frames += [env.render()] if record else []
            if on_step:
                on_step(ep, env)
            done, steps, success = False, 0, False
            while not done:
                t = time.perf_counter()
                chunk = policy.predict_action(_stack(history, device), generator=gen)["action"][0]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(1000 * (time.perf_counter() - t))
                for a in chunk.cpu().numpy():
                    obs, _, terminated, truncated, info = env.step(a)
                    history.append(obs)
                    steps += 1
                    frames += [env.render()] if record else []
                    if on_step:
                        on_step(ep, env)
                    success = success or bool(info["success"])
                    done = terminated or truncated
                    if done:
                        break
            rows.append({"seed": seed + ep, "success": success, "steps": steps})
            bar.set_postfix(success=f"{np.mean([r['success'] for r in rows[first:]]):.2f}")
    finally:
        env.close()
    these = rows[first:]
    result = {"task": task, "denoiser": cfg.policy.denoiser, "episodes": episodes,
              "success_rate": float(np.mean([r["success"] for r in these])),
              "mean_episode_length": float(np.mean([r["steps"] for r in these])),
              "inference_ms_mean": float(np.mean(times)), "inference_ms_p95": float(np.percentile(times, 95))}
    if frames:
        result["video"] = str(write_video(frames, video_path, fps=10))
    return result


def acting_policy(cfg: Config, state: dict, device="cpu") -> DiffusionPolicy:
    """The policy a checkpoint or export acts with: its EMA weights, as DP3 evaluates, in eval mode."""
    policy = make_policy(cfg.policy, int(state["num_points"])).to(device)
    policy.load_state_dict(state["ema_model"])
    return policy.eval()


def evaluate(cfg: Config, state: dict, args, out: Path) -> dict:
    device = pick_device(cfg.device, "device")
    policy = acting_policy(cfg, state, device)
    episodes = args.episodes or cfg.eval.episodes
    seed = cfg.eval.seed if args.seed is None else args.seed
    video = None if args.no_video or not cfg.eval.video else out / f"{state['task']}_{cfg.policy.denoiser}_ep0.mp4"
    rows = []
    result = rollout(cfg, policy, state["task"], episodes, seed, video, episode_rows=rows)
    write_json_atomic(out / "episodes.json", rows)     # per episode, as bc_navigation's eval writes them
    result["step"] = int(state["step"])
    result.update({f"params_{k}": v for k, v in param_report(policy).items()})
    return result


def dry_run(cfg: Config) -> int:
    import yaml

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    device = pick_device(cfg.device, "device")
    data = Windows(cfg, device)
    policy = make_policy(cfg.policy, data.num_points).to(device)
    policy.fit_normalizers({k: {m: v.to(device) for m, v in d.items()} for k, d in data.demos.stats().items()})
    counts = param_report(policy)
    with torch.no_grad():
        loss = policy.compute_loss(data.sample(2))
    print(f"task {data.task}: {len(data.demos.episodes)} episodes, {len(data.index)} windows; "
          f"parameters: encoder {counts['encoder']:,}, denoiser {counts['denoiser']:,}, total {counts['total']:,}; "
          f"loss on 2 windows {float(loss):.4f}; device {device}")
    return 0


def check(cfg: Config) -> None:
    """The datasets open and validate (before bc_main creates a run directory); held-out demos must
    be of the training data's task and point count."""
    meta = load_dataset(cfg.data.path).meta["config"]
    if cfg.data.val_path:
        val = load_dataset(cfg.data.val_path).meta["config"]
        for key in ("task", "num_points"):
            if val[key] != meta[key]:
                raise DatasetError(f"data.val_path={cfg.data.val_path}: {key} {val[key]!r}, but data.path="
                                   f"{cfg.data.path} has {meta[key]!r}")


def main(argv=None) -> int:
    parser = bc_parser("bc_diffusion.py", "Diffusion-policy BC (DP3 UNet or Mamba Policy) on point-cloud "
                       "manipulation demos.", Config, "YAML config (configs/manip/*.yaml)")
    return bc_main(argv, parser=parser, agent=AGENT, config_cls=Config, data_main=data_main,
                   data_errors=(DatasetError,), train=train, evaluate=evaluate, dry_run=dry_run,
                   check=check)


if __name__ == "__main__":
    sys.exit(main())
