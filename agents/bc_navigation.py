"""Behaviour cloning for image-goal navigation: ViNT baseline and MambaViNT (seed 000).

    python agents/bc_navigation.py generate --out data/nav_depth2 --episodes 400 --seed 0 depth=2
    python agents/bc_navigation.py train data.path=data/nav_depth2 model.kind=mambavint
    python agents/bc_navigation.py train --config configs/nav/vint.yaml seed=1
    python agents/bc_navigation.py train --resume runs/bc_navigation/<run>
    python agents/bc_navigation.py eval runs/bc_navigation/<run> --episodes 100

The algorithm, top to bottom (``train``): expert demonstrations from the T-maze env (scripted A* +
pure pursuit, agents/navigation/data.py) are read memory-mapped; every step draws ``batch_size *
chunk_len`` labelled positions - MambaViNT as consecutive chunks of whole trajectories, the Mamba
state carried (detached) from each chunk to the next of the same trajectory and reset where a
trajectory starts (truncated BPTT, agents/navigation/batches.py); ViNT as i.i.d. windows of its 5 context
frames. The loss is ViNT's: waypoint regression (x, y, cos, sin of K future poses in the robot
frame) + a weighted temporal-distance regression. Evaluation drives the robot closed loop on maps
not in the dataset: the policy steps at batch 1 with its carried state, its next waypoint becomes
the (v, w) command, and success, SPL (against the expert's path on the same map), collisions and
the control rate are reported, with a video and a plot of trajectories.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python agents/bc_navigation.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from tensordict import TensorDict

from agents.navigation import data as nav_data
from agents.navigation.config import Config
from agents.algos.bc import bc_main, bc_parser, restore_training, warmup_cosine
from agents.runtime.cli import pick_device, use_tf32_matmuls
from agents.runtime.config import ConfigError, from_dict, to_dict
from agents.runtime.loggers import log_scalars, make_logger
from agents.runtime.nonfinite import check_finite
from agents.runtime.run_dir import RunDir, rng_state
from agents.runtime.stop import StopOnSignal
from agents.navigation.batches import ContextWindows, TrajectoryChunks, context_rows, split_episodes
from networks.models.vint import MambaViNT, ViNT, parameter_counts, waypoint_to_action
from networks.params import count_parameters
from networks.ssm.param_groups import weight_decay_groups

AGENT = "bc_navigation"
LABEL_KEYS = ("waypoints", "waypoint_yaw", "temporal_distance", "episode")


def build_model(cfg: Config, image_size: int, num_waypoints: int, depth: int = 1) -> torch.nn.Module:
    """The policy of ``cfg.model``; with ``train.cue_weight`` > 0 it gets a 2**depth-way cue head."""
    m = cfg.model
    cues = 2 ** depth if cfg.train.cue_weight > 0 else 0
    if m.cnn_width % 8:
        raise ConfigError(f"model.cnn_width must be a multiple of 8 (GroupNorm groups), got {m.cnn_width}")
    if m.kind == "vint":
        if m.dim % m.heads:
            raise ConfigError(f"model.dim ({m.dim}) must be divisible by model.heads ({m.heads})")
        return ViNT(image_size, m.dim, m.context, m.transformer_layers, m.heads, num_waypoints, m.cnn_width, m.dropout,
                    cues)
    return MambaViNT(image_size, m.dim, m.memory_layers, num_waypoints, m.cnn_width, m.memory_kind, cues)


class NavData:
    """The dataset's columns the trainer reads (on ``device`` when preloaded) and the episode index."""

    def __init__(self, cfg: Config, device: torch.device):
        self.ds = nav_data.load_dataset(cfg.data.path)
        self.train_ids, self.val_ids = split_episodes(self.ds.num_episodes, cfg.data.val_episodes)
        self.starts, self.lengths = self.ds.episodes["start"].clone(), self.ds.episodes["length"].clone()
        cols = TensorDict({k: self.ds.steps[k] for k in ("rgb", *LABEL_KEYS)}, [len(self.ds)])
        goals, self.cues = self.ds.episodes["goal_rgb"], self.ds.episodes["cue"].clone().to(device)
        self.device = device if cfg.data.preload else torch.device("cpu")
        self.steps = cols.to(self.device) if cfg.data.preload else cols
        self.goals = goals.to(self.device) if cfg.data.preload else goals
        self.image_size = self.ds.config.image_size
        self.num_waypoints = self.ds.config.num_waypoints

    def gather(self, rows: torch.Tensor, device: torch.device) -> TensorDict:
        """Columns at ``rows`` (any shape) + goal_rgb, on ``device``."""
        flat = rows.reshape(-1).to(self.device)
        td = self.steps[flat]
        td["goal_rgb"] = self.goals[td["episode"]]
        td["cue"] = self.cues[td["episode"].to(self.cues.device)].to(td.device)
        return td.reshape(rows.shape).to(device)


def nav_loss(out: dict, labels: TensorDict, cfg: Config, valid: torch.Tensor | None = None) -> dict:
    """ViNT's losses, per position then averaged over valid positions: waypoint MSE over
    (x / scale, y / scale, cos, sin) and the distance MSE in ``distance_scale`` steps; with a cue
    head, + cue_weight x the cross-entropy of the episode's cue."""
    t = cfg.train
    yaw = labels["waypoint_yaw"]
    target = torch.cat([labels["waypoints"] / t.waypoint_scale, torch.stack([yaw.cos(), yaw.sin()], -1)], -1)
    wp = (out["waypoints"] - target).pow(2).mean((-1, -2))
    dist = (out["distance"] - labels["temporal_distance"].float() / t.distance_scale).pow(2)
    w = torch.ones_like(wp) if valid is None else valid.float()
    n = w.sum().clamp(min=1.0)
    waypoint_loss, distance_loss = (wp * w).sum() / n, (dist * w).sum() / n
    losses = {"loss": waypoint_loss + t.distance_weight * distance_loss,
              "waypoint_loss": waypoint_loss, "distance_loss": distance_loss}
    if "cue_logits" in out:
        logits = out["cue_logits"]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels["cue"].reshape(-1), reduction="none")
        losses["cue_loss"] = (ce * w.reshape(-1)).sum() / n
        losses["loss"] = losses["loss"] + t.cue_weight * losses["cue_loss"]
    return losses


def vint_forward(model, data: NavData, rows: torch.Tensor, context: torch.Tensor, device):
    frames = data.gather(context, device)                          # [N, C]
    labels = data.gather(rows, device)                             # [N]
    return model(frames["rgb"], labels["goal_rgb"]), labels


def chunk_forward(model, data: NavData, batch: dict, carried: TensorDict, device):
    """MambaViNT on one truncated-BPTT batch of TrajectoryChunks: each stream's chunk from the state
    its previous chunk ended in (reset where ``is_init``: a new episode) -> (outputs, labels, final
    state detached: the value flows on to the stream's next chunk, the gradient does not, so a loss
    reaches back at most to its own chunk's first step)."""
    labels = data.gather(batch["rows"], device)
    out, final = model(labels["rgb"], labels["goal_rgb"], batch["is_init"].to(device), carried)
    return out, labels, final.detach()


@torch.no_grad()
def validate(model, data: NavData, cfg: Config, device) -> dict:
    """Mean losses over every position of the held-out episodes (whole episodes for MambaViNT)."""
    if len(data.val_ids) == 0:
        return {}
    model.eval()
    sums, count = {}, 0.0
    for e in data.val_ids.tolist():
        start, n = int(data.starts[e]), int(data.lengths[e])
        rows = torch.arange(start, start + n)
        if isinstance(model, ViNT):
            ctx = context_rows(rows, torch.full_like(rows, start), cfg.model.context, cfg.model.context_spacing)
            out, labels = vint_forward(model, data, rows, ctx, device)
        else:
            labels = data.gather(rows[None], device)
            is_init = torch.zeros(1, n, dtype=torch.bool, device=device)
            is_init[:, 0] = True
            out, _ = model(labels["rgb"], labels["goal_rgb"], is_init, model.initial_state(1, device))
        for k, v in nav_loss(out, labels, cfg).items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        count += n
    model.train()
    return {f"val_{k}": v / count for k, v in sums.items()}


def train(cfg: Config, run: RunDir, state: dict | None) -> None:
    """Train to train.steps; a SIGTERM or Ctrl-C (agents/runtime/stop.py) ends the step it arrives in
    with a checkpoint at that step (a resume continues exactly there) and returns."""
    with StopOnSignal() as stop:
        _train(cfg, run, state, stop)


def _train(cfg: Config, run: RunDir, state: dict | None, stop: StopOnSignal) -> None:
    device = pick_device(cfg.device, "device")
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        use_tf32_matmuls(device)
    data = NavData(cfg, device)
    model = build_model(cfg, data.image_size, data.num_waypoints, data.ds.config.depth).to(device)
    counts = parameter_counts(model)
    print(f"{cfg.model.kind} on {device}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"dataset {cfg.data.path}: {len(data.train_ids)} training / {len(data.val_ids)} validation episodes, "
          f"{len(data.ds):,} steps")
    t = cfg.train
    # A_log, D and the dt bias are not decayed, as in upstream Mamba (networks/ssm/param_groups.py)
    optim = torch.optim.AdamW(weight_decay_groups(model, t.weight_decay), lr=t.lr)
    sched = warmup_cosine(optim, t.warmup_steps, t.steps)
    if cfg.model.kind == "vint":
        sampler = ContextWindows(data.starts, data.lengths, data.train_ids, t.batch_size * t.chunk_len,
                                 cfg.model.context, cfg.model.context_spacing, seed=cfg.seed)
    else:
        sampler = TrajectoryChunks(data.starts, data.lengths, data.train_ids, t.batch_size, t.chunk_len, seed=cfg.seed)
    carried = model.initial_state(t.batch_size, device) if cfg.model.kind == "mambavint" else None
    step = 0
    if state is not None:
        step = restore_training(state, model=model, optim=optim, sched=sched, sampler=sampler)
        if carried is not None:
            carried = TensorDict(state["carried"], [t.batch_size]).to(device)
        print(f"resumed at step {step}")
    logger = make_logger(cfg.logger, run.path, AGENT, config=to_dict(cfg))

    def save(at: int) -> Path:
        return run.save_checkpoint({
            "config": to_dict(cfg), "model": model.state_dict(), "optim": optim.state_dict(),
            "sched": sched.state_dict(), "sampler": sampler.state_dict(), "step": at, "rng": rng_state(),
            "parameters": counts, "dataset": data.ds.facts(),
            "carried": None if carried is None else {k: v.cpu() for k, v in carried.items()}}, at)

    from tqdm import tqdm
    # disable=None: a bar only on a terminal (in a log file: plain lines, no \r or cursor escape codes)
    bar = tqdm(total=t.steps, initial=step, desc=cfg.model.kind, unit="step", dynamic_ncols=True, disable=None)
    model.train()
    t0, done0 = time.perf_counter(), step
    while step < t.steps:
        batch = sampler.sample()
        if carried is None:
            out, labels = vint_forward(model, data, batch["rows"], batch["context"], device)
            losses = nav_loss(out, labels, cfg)
        else:
            out, labels, carried = chunk_forward(model, data, batch, carried, device)
            losses = nav_loss(out, labels, cfg, batch["valid"].to(device))
        check_finite(step, **losses)
        optim.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf"))
        optim.step()
        sched.step()
        step += 1
        bar.update(1)
        if step % t.log_every_steps == 0 or step == t.steps:
            rate = (step - done0) / (time.perf_counter() - t0)
            scalars = {k: float(v.detach()) for k, v in losses.items()}
            scalars.update(grad_norm=float(grad_norm), lr=sched.get_last_lr()[0], steps_per_s=rate)
            bar.set_postfix(loss=f"{scalars['loss']:.4f}", wp=f"{scalars['waypoint_loss']:.4f}")
            if bar.disable:                  # no terminal: one plain line per log row instead
                print(f"step {step}/{t.steps} loss {scalars['loss']:.4f} waypoint {scalars['waypoint_loss']:.4f} "
                      f"steps/s {rate:.1f}", flush=True)
            log_scalars(logger, scalars, step)
        if step % t.val_every_steps == 0 or step == t.steps:
            val = validate(model, data, cfg, device)
            if val:
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
                log_scalars(logger, val, step)
        if step % t.checkpoint_every_steps == 0 or step == t.steps or stop.requested:
            path = save(step)
        if stop.requested and step < t.steps:
            bar.close()
            print(f"stopped by {stop.signal_name} at step {step}: checkpoint {path} written; "
                  f"`python agents/bc_navigation.py train --resume {run.path}` continues exactly there", flush=True)
            return
    bar.close()
    print(f"done: {step} steps; checkpoint {run.latest_checkpoint()}")


# --------------------------------------------------------------------------------- evaluation
def run_episode(env, model, device, seed: int, cue: int, cfg: Config, record: bool = False):
    """One closed-loop episode at batch 1 -> (info, trail [T+1, 2], frames, seconds spent in the policy)."""
    obs, info = env.reset(seed=seed, options={"cue": cue})
    state = model.initial_state(1, device)
    is_init = torch.ones(1, dtype=torch.bool, device=device)
    trail, frames, policy_s, steps = [info["pose"][:2]], [env.render()] if record else [], 0.0, 0
    limit = cfg.eval.max_steps or env.max_episode_steps
    term = trunc = False
    while not (term or trunc) and steps < limit:
        t0 = time.perf_counter()
        rgb = torch.from_numpy(obs["rgb"])[None].to(device)
        goal = torch.from_numpy(obs["goal_rgb"])[None].to(device)
        out, state = model.step(rgb, goal, state, is_init)
        wp = out["waypoints"].clone()
        wp[..., :2] *= cfg.train.waypoint_scale
        action = waypoint_to_action(wp, cfg.eval.waypoint_index, env.dt, env.max_speed, env.max_turn_rate)[0]
        action = action.cpu().numpy()
        policy_s += time.perf_counter() - t0
        is_init = torch.zeros_like(is_init)
        obs, _, term, trunc, info = env.step(action)
        steps += 1
        trail.append(info["pose"][:2])
        if record:
            frames.append(env.render())
    return info, np.array(trail), frames, policy_s, steps


def entered_wrong_leaf(layout, trail: np.ndarray) -> bool:
    """Whether a trail [T, 2] of positions entered a leaf room other than the goal's (zone 2 + k is
    leaf k; the goal is in leaf ``cue``). With eval.end_on_wrong_leaf=false the env lets a policy
    that guessed wrong at a junction turn back and still succeed within its time limit, so success
    alone can pass the memoryless ceiling; success without a wrong leaf ("direct") cannot. With it
    on (the default) the env ends such episodes, and success == direct success."""
    return bool(layout.in_wrong_leaf(trail).any())


def expert_reference(env, seed: int, cue: int):
    """The expert's (path length, trail) on the same map and cue: SPL's reference path."""
    from envs.navigation.expert import NavExpert, rollout
    ep = rollout(env, NavExpert(env), seed=seed, options={"cue": cue})
    return ep["path_length"], ep["pose"][:, :2], ep["success"]


def evaluate(cfg: Config, state: dict, args, out_dir: Path) -> dict:
    # The dataset's settings travel in the checkpoint (a shipped export evaluates without the
    # dataset); checkpoints written before they did read them from cfg.data.path.
    facts = add_dataset_facts(state)["dataset"]
    data_cfg = from_dict(nav_data.NavDataConfig, facts["config"], where="checkpoint dataset settings")
    device = pick_device(cfg.eval.device, "eval.device")
    if cfg.eval.waypoint_index >= data_cfg.num_waypoints:
        raise ConfigError(f"eval.waypoint_index must be < the dataset's num_waypoints "
                          f"({data_cfg.num_waypoints}), got {cfg.eval.waypoint_index}")
    model = build_model(cfg, data_cfg.image_size, data_cfg.num_waypoints, data_cfg.depth)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    env = nav_data.make_env(facts["env"], terminate_on_wrong_leaf=cfg.eval.end_on_wrong_leaf)
    episodes = args.episodes or cfg.eval.episodes
    first_seed = cfg.eval.seed if args.seed is None else args.seed
    n_cues = 2 ** data_cfg.depth
    rows, plots, video = [], [], None
    policy_s, policy_steps = 0.0, 0
    from tqdm import tqdm
    for i in tqdm(range(episodes), desc="eval", unit="ep", disable=None):
        seed, cue = nav_data.episode_seed(first_seed, i), i % n_cues
        record = i == 0 and cfg.eval.video and not args.no_video
        info, trail, frames, secs, steps = run_episode(env, model, device, seed, cue, cfg, record)
        expert_len, expert_trail, _ = expert_reference(env, seed, cue)
        success, wrong_leaf = bool(info["success"]), entered_wrong_leaf(env.layout, trail)
        path = float(info["path_length"])
        rows.append({"seed": seed, "cue": cue, "success": success, "wrong_leaf": wrong_leaf,
                     "direct_success": success and not wrong_leaf, "collision": bool(info["collision"]),
                     "steps": steps, "path_length": path, "expert_path_length": expert_len,
                     "spl": success * expert_len / max(path, expert_len)})
        policy_s, policy_steps = policy_s + secs, policy_steps + steps
        if record:
            video = frames
        if i < cfg.eval.plot_episodes and cfg.eval.video and not args.no_video:
            plots.append((env.layout.grid.copy(), env.layout.goal[:2].copy(), trail, expert_trail, success))
    env.close()
    result = {"episodes": episodes, "success_rate": float(np.mean([r["success"] for r in rows])),
              "direct_success_rate": float(np.mean([r["direct_success"] for r in rows])),
              "spl": float(np.mean([r["spl"] for r in rows])),
              "collision_rate": float(np.mean([r["collision"] for r in rows])),
              "mean_steps": float(np.mean([r["steps"] for r in rows])),
              "control_hz": policy_steps / max(policy_s, 1e-9), "device": str(device),
              "model": cfg.model.kind, "parameters": count_parameters(model),
              "success_by_cue": {str(c): float(np.mean([r["success"] for r in rows if r["cue"] == c]))
                                 for c in range(min(n_cues, episodes))}}
    import json
    (out_dir / "episodes.json").write_text(json.dumps(rows, indent=1) + "\n")
    if video:
        from agents.runtime.video import write_video
        result["video"] = str(write_video(video, out_dir / "episode_0.mp4", fps=8))
    if plots:
        result["plot"] = str(plot_trajectories(plots, out_dir / "trajectories.png", cfg.model.kind))
    return result


def plot_trajectories(plots, path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(plots)
    cols = min(n, 4)
    rows_ = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 4 * rows_), squeeze=False)
    for ax, (grid, goal, trail, expert, success) in zip(axes.flat, plots):
        ax.imshow(grid != 0, cmap="Greys", origin="lower", extent=(0, grid.shape[1], 0, grid.shape[0]))
        ax.plot(expert[:, 0], expert[:, 1], "--", color="tab:green", lw=1.5, label="expert")
        ax.plot(trail[:, 0], trail[:, 1], "-", color="tab:blue" if success else "tab:red", lw=1.5, label="policy")
        ax.plot(*trail[0], "ko", ms=4)
        ax.plot(*goal, "*", color="tab:green", ms=12)
        ax.set_title("success" if success else "failure", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(f"{title}: policy (blue success / red failure) vs expert (green dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def check(cfg: Config):
    """The dataset opens and validates, and the config fits it (before any run directory exists)."""
    ds = nav_data.load_dataset(cfg.data.path)
    train_ids, _ = split_episodes(ds.num_episodes, cfg.data.val_episodes)
    if cfg.model.kind == "mambavint" and len(train_ids) < cfg.train.batch_size:
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size} streams) exceeds the {len(train_ids)} "
                          "training episodes: lower it or generate more episodes")
    try:
        with torch.device("meta"):      # shapes only: no memory, no compute
            build_model(cfg, ds.config.image_size, ds.config.num_waypoints, ds.config.depth)
    except ConfigError:
        raise
    except (ValueError, AssertionError, RuntimeError) as err:   # e.g. a memory width its kind cannot take
        raise ConfigError(f"config key 'model.dim': {cfg.model.dim} does not fit model.kind={cfg.model.kind} "
                          f"(memory {cfg.model.memory_kind}): {err}") from None
    return ds


def dry_run(cfg: Config) -> int:
    import yaml
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    ds = check(cfg)
    model = build_model(cfg, ds.config.image_size, ds.config.num_waypoints, ds.config.depth)
    print(f"{cfg.model.kind}: " + ", ".join(f"{k} {v:,}" for k, v in parameter_counts(model).items()))
    print(nav_data.summary(ds))
    return 0


def add_dataset_facts(state: dict) -> dict:
    """--export of a checkpoint written before checkpoints held their dataset's settings: read
    them from its data.path (that dataset must still be there), so the export is self-contained."""
    if "dataset" in state:
        return state
    return {**state, "dataset": nav_data.load_dataset(from_dict(Config, state["config"]).data.path).facts()}


def main(argv=None) -> int:
    parser = bc_parser("bc_navigation.py", __doc__.split("\n\n")[0], Config,
                       "YAML/JSON config (e.g. configs/nav/mambavint.yaml)")
    return bc_main(argv, parser=parser, agent=AGENT, config_cls=Config, data_main=nav_data.main,
                   data_errors=(nav_data.NavDatasetError,), train=train, evaluate=evaluate,
                   dry_run=dry_run, check=check, add_facts=add_dataset_facts)


if __name__ == "__main__":
    sys.exit(main())
