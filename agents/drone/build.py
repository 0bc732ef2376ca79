"""Assembly for the TD3 agent: env (with K-frame windows), networks, sequence replay, evaluation.

Keys are the contract. The env gives single steps ("depth" [1, H, W], "observation" [D]);
TorchRL's ``CatFrames`` adds the acting windows "<key>_seq" [K, ...] (first frame repeated at
reset, as the drone's own seq_len mode). The replay buffer stores single steps only (the
windows are dropped, depth is kept as uint8) and a ``SliceSampler`` returns K consecutive
steps of one episode, from which ``windows`` rebuilds the windows at t and t+1. So a stored
frame costs 1/K of a stored window, and a sampled sequence never crosses an episode end.

With ``env.num_envs`` > 1 (``make_train_env``: a TorchRL ``ParallelEnv``) a batch is [num_envs, T]
and the buffer stays flat, so an episode's steps lie in pieces of T, between other envs' pieces:
the sampler then rebuilds episodes from ("episode", "step_count") (``fragmented``), and a slice
may span two batches of one env but never two envs or two episodes.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

import envs  # noqa: F401  (registers the mambazoo/ ids)
from agents.drone.config import Config, is_drone
from agents.runtime.stop import worker_ignores_sigint
from networks.params import count_parameters, parameter_table
from networks.memory.encoder import MemorySequenceEncoder
from networks.models.vmamba import SequenceEncoder, VMambaActor, VMambaCritic

INFO_KEYS = ("success", "collision", "path_length", "distance_to_goal")


def obs_keys(cfg: Config) -> list[str]:
    return ["depth", "observation"] if is_drone(cfg) else ["observation"]


def seq_keys(cfg: Config) -> list[str]:
    return [f"{k}_seq" for k in obs_keys(cfg)]


def env_kwargs(cfg: Config, render: bool = False) -> dict:
    if not is_drone(cfg):
        return {"render_mode": "rgb_array"} if render else {}
    kw = dict(backend=cfg.env.backend, image_size=cfg.env.image_size,
              max_episode_steps=cfg.env.max_episode_steps)
    if cfg.env.num_obstacles is not None:
        kw["num_obstacles"] = cfg.env.num_obstacles
    if cfg.env.backend == "airsim":
        kw["airsim"] = dict(host=cfg.env.airsim_host, port=cfg.env.airsim_port, goal=tuple(cfg.env.airsim_goal))
    if render:
        kw["render_mode"] = "rgb_array"
    return kw


def make_env(cfg: Config, seed: int, render: bool = False):
    import gymnasium as gym
    from torchrl.envs import (CatFrames, Compose, DoubleToFloat, GymWrapper, InitTracker, RewardSum,
                              StepCounter, TransformedEnv, UnsqueezeTransform)
    from torchrl.envs.gym_like import default_info_dict_reader

    # gym.make, then wrap: GymEnv(id, **kwargs) would take the drone's `backend=` as its own
    try:
        gym_env = gym.make(cfg.env.id, **env_kwargs(cfg, render))
    except gym.error.Error as err:
        from agents.runtime.config import ConfigError
        raise ConfigError(f"config key 'env.id': {cfg.env.id!r} cannot be made ({err})") from err
    # on the CPU, named: a rollout with auto_cast_to_device moves a CUDA actor's action back to the
    # env's device, and an env of device None keeps it on CUDA (RewardSum then mixes devices)
    base = GymWrapper(gym_env, device="cpu")
    if is_drone(cfg):
        base.set_info_dict_reader(default_info_dict_reader(list(INFO_KEYS)))
    K = cfg.replay.seq_len
    transforms = [InitTracker(), StepCounter(), RewardSum(), DoubleToFloat()]
    for key in obs_keys(cfg):
        dim = -4 if key == "depth" else -2  # a new leading time dim before the event dims
        transforms += [UnsqueezeTransform(dim=dim, in_keys=[key], out_keys=[f"{key}_seq"]),
                       CatFrames(N=K, dim=dim, in_keys=[f"{key}_seq"], padding="same")]
    env = TransformedEnv(base, Compose(*transforms))
    env.set_seed(seed)
    return env


def make_train_env(cfg: Config, seed: int):
    """The collecting env: ``make_env`` itself, or with ``env.num_envs`` > 1 a ``ParallelEnv`` of
    make_env-built envs, worker i seeded ``seed + i`` (``seed`` is already the segment's seed + frames),
    one process each, stepped in lockstep: batch shape [num_envs].

    Why ParallelEnv inside the one Collector rather than a multi-process collector: the policy stays
    one module in this process (on the GPU, one forward for all envs per step), the OU noise and
    the random warm-up actions draw from this process's RNG (saved with each checkpoint: exact
    resume), and the workers only step simulators. MultiSync/MultiAsyncCollector would run a policy
    copy per worker (a CUDA context each, or CPU acting), with weight syncs and RNG streams of their own.
    """
    if cfg.env.num_envs == 1:
        return make_env(cfg, seed)
    import functools

    from torchrl.envs import ParallelEnv

    # partial, not lambdas: picklable as they are for TorchRL's default spawn start method (a lambda
    # would be wrapped in an EnvCreator). num_threads: ParallelEnv would otherwise shrink this
    # process's torch threads (by the worker count) for the updates; each worker gets one thread
    # (num_sub_threads' default); worker_ignores_sigint: a Ctrl-C stops the trainer gracefully, not the workers
    return ParallelEnv(cfg.env.num_envs,
                       [functools.partial(worker_ignores_sigint, make_env, cfg, seed + i) for i in range(cfg.env.num_envs)],
                       num_threads=torch.get_num_threads())


def close_env(env) -> None:
    """Close a collecting env (if the collector has not). Closing a ParallelEnv raises this process's
    torch thread count by its worker count: the count is given back, or the updates after the first
    checkpoint would run on other threads than those of a resumed run (different numerics)."""
    threads = torch.get_num_threads()
    if not env.is_closed:
        env.close()
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ networks
def build_encoder(cfg: Config, obs_dim: int) -> nn.Module:
    m = cfg.model
    if m.encoder == "vmamba":
        return SequenceEncoder(in_chans=1, image_size=cfg.env.image_size, state_dim=obs_dim,
                               d_model=m.d_model, visual_dim=m.d_model, state_feature_dim=m.d_model,
                               temporal=m.temporal, pool=m.pool, seq_len=cfg.replay.seq_len, patch_size=m.patch_size,
                               depths=tuple(m.depths), dims=tuple(m.dims), d_state=m.d_state)
    return MemorySequenceEncoder(obs_dim, m.memory, m.memory_hidden, m.memory_layers)


class TD3Nets(nn.Module):
    """Actor and twin-Q critic and their target copies. Each has its own encoder (the seed's two
    streams), or with ``model.shared_encoder`` the actor's encoder IS the critic's (and the target
    actor's the target critic's): the actor's loss then reaches only its head (``actor_parameters``),
    as in DrQ-v2, where letting the actor's gradient into a shared encoder destabilised learning."""

    def __init__(self, cfg: Config, obs_dim: int, action_dim: int):
        super().__init__()
        self.shared = cfg.model.shared_encoder
        if self.shared:
            self.critic = VMambaCritic(build_encoder(cfg, obs_dim), action_dim, cfg.model.hidden_dim)
            self.actor = VMambaActor(self.critic.encoder, action_dim, cfg.model.hidden_dim)
        else:
            self.actor = VMambaActor(build_encoder(cfg, obs_dim), action_dim, cfg.model.hidden_dim)
            self.critic = VMambaCritic(build_encoder(cfg, obs_dim), action_dim, cfg.model.hidden_dim)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # the memo makes the target actor's copy of the shared encoder the target critic's encoder
        memo = {id(self.critic.encoder): self.critic_target.encoder} if self.shared else {}
        self.actor_target = copy.deepcopy(self.actor, memo).requires_grad_(False)

    def num_trainable(self) -> int:
        """Trainable parameters of actor and critic, a shared encoder counted once."""
        return count_parameters(nn.ModuleList([self.actor, self.critic]))

    def actor_parameters(self) -> list[nn.Parameter]:
        """What the actor's optimiser steps: all of the actor, or with a shared encoder its head."""
        return list((self.actor.head if self.shared else self.actor).parameters())

    def target_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(target parameters, online parameters), each shared tensor once (a shared encoder would
        otherwise move towards its online copy twice per update)."""
        targets, online, seen = [], [], set()
        for t_net, o_net in ((self.actor_target, self.actor), (self.critic_target, self.critic)):
            for t, o in zip(t_net.parameters(), o_net.parameters()):
                if id(t) not in seen:
                    seen.add(id(t))
                    targets.append(t)
                    online.append(o)
        return targets, online


def build_nets(cfg: Config, env) -> TD3Nets:
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_dim = env.action_spec.shape[-1]
    return TD3Nets(cfg, obs_dim, action_dim)


def parameter_report(nets: TD3Nets) -> str:
    actor = nets.actor.head if nets.shared else nets.actor
    rows = {"actor (head; encoder: the critic's)" if nets.shared else "actor": actor, "critic (twin Q)": nets.critic,
            "targets (not trained)": nn.ModuleList([nets.actor_target, nets.critic_target])}
    trainable = nets.num_trainable()
    return parameter_table(rows) + f"\ntrainable (actor + critic): {trainable:,}"


def acting_policy(cfg: Config, nets: TD3Nets, action_spec):
    """TensorDict policy: actor on the windows, then TorchRL's annealed OU noise (exploration only)."""
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.modules import OrnsteinUhlenbeckProcessModule

    actor = TensorDictModule(nets.actor, in_keys=seq_keys(cfg), out_keys=["action"])
    ou = OrnsteinUhlenbeckProcessModule(spec=action_spec, eps_init=1.0, eps_end=cfg.td3.ou_eps_end,
                                        annealing_num_steps=cfg.td3.ou_anneal_frames,
                                        theta=cfg.td3.ou_theta, sigma=cfg.td3.ou_sigma)
    return TensorDictSequential(actor, ou), ou


# -------------------------------------------------------------------------------- replay buffer
def make_replay(cfg: Config, scratch_dir: Path | None = None):
    from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer
    from torchrl.data.replay_buffers import SliceSampler

    K = cfg.replay.seq_len
    if cfg.replay.storage == "memmap":
        storage = LazyMemmapStorage(cfg.replay.size, scratch_dir=str(scratch_dir) if scratch_dir else None)
    else:
        storage = LazyTensorStorage(cfg.replay.size)
    # episodes are told apart by our own running "episode" id (see to_storage): unlike the done
    # flag it stays right across a resume, where the env starts a new episode mid-buffer. One env
    # writes each episode in consecutive slots, so a change of id is a boundary; several envs
    # interleave their pieces, and fragmented=True orders each episode's steps by step_count
    # instead (every (episode, step_count) pair is unique in the buffer: ids are never reused)
    if cfg.env.num_envs == 1:
        sampler = SliceSampler(slice_len=K, traj_key="episode", strict_length=True)
    else:
        sampler = SliceSampler(slice_len=K, traj_key="episode", step_key="step_count", fragmented=True,
                               strict_length=True)
    return ReplayBuffer(storage=storage, sampler=sampler, batch_size=cfg.replay.batch_size * K)


def stored_keys(cfg: Config) -> list:
    """What an update reads (``windows``, ``check_slices``): the rest of a collector batch (the
    memory's recurrent_state_* columns, step counts, OU noise...) is not stored, so the buffer and
    its saved copy hold ~1% of a pendulum batch's bytes."""
    obs = obs_keys(cfg)
    keys = [*obs, *[("next", k) for k in obs], "action", ("next", "reward"), ("next", "done"),
            ("next", "terminated")]
    # several envs: the fragmented sampler orders an episode's scattered steps by their step count
    return keys + ["step_count"] if cfg.env.num_envs > 1 else keys


def to_storage(cfg: Config, batch, first_episode: int):
    """Collector batch [T] (one env) or [num_envs, T] -> what the buffer keeps, and the largest
    episode id in it.

    Single steps of ``stored_keys`` only (no windows), env after env, depth as uint8 (4x smaller),
    and "episode": ``first_episode`` + the collector's ("collector", "traj_ids"), which number the
    episodes of one collector from 0, unique across its envs (a done gives that env a new id).
    A segment's collector starts again from 0, so the caller passes, for all of a segment's batches,
    an offset past every id stored before.
    """
    episode = first_episode + batch.get(("collector", "traj_ids")).reshape(-1)
    batch = batch.select(*stored_keys(cfg)).reshape(-1)
    batch.set("episode", episode)
    if is_drone(cfg):
        for key in ("depth", ("next", "depth")):
            batch.set(key, (batch.get(key) * 255.0).round_().to(torch.uint8))
    return batch, int(episode.max())


def windows(cfg: Config, sample, device):
    """[B*K] sampled steps -> (obs_t, obs_t+1, action, reward, terminated) for the last step.

    obs_t = the K stored steps; obs_t+1 = steps 2..K plus the last step's next observation.
    """
    K = cfg.replay.seq_len
    s = sample.reshape(-1, K).to(device)
    now, nxt = [], []
    for key in obs_keys(cfg):
        x, x_next = s.get(key), s.get(("next", key))[:, -1:]
        if x.dtype == torch.uint8:
            x, x_next = x.float() / 255.0, x_next.float() / 255.0
        now.append(x)
        nxt.append(torch.cat([x[:, 1:], x_next], 1))
    last = s[:, -1]
    return (now, nxt, last.get("action"), last.get(("next", "reward")),
            last.get(("next", "terminated")).float())


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ's image augmentation (Kostrikov et al. 2020; DrQ-v2's RandomShiftsAug), one offset per window.

    x [B, K, C, H, W] (any dims between B and H, W) -> same shape: each batch row is padded by ``pad``
    (edge pixels repeated) and cropped back at one offset (dy, dx) in [0, 2 pad]^2, the same for all its
    K frames, so the window stays a consistent piece of video. Written here because neither TorchRL nor
    torchvision shifts per sample: torchvision's RandomCrop draws one crop for the whole batch. Index
    gathers, no host sync: it runs inside the graphed update (the offsets come from the CUDA generator).
    """
    if pad == 0:
        return x
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    flat = x.reshape(B, -1, H, W)                                               # [B, K*C, H, W]
    padded = nn.functional.pad(flat, (pad, pad, pad, pad), mode="replicate")    # [B, K*C, H+2p, W+2p]
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B, 1, 1, 1), device=x.device)
    rows = (torch.arange(H, device=x.device).view(1, 1, H, 1) + dy).expand(B, flat.shape[1], H, W + 2 * pad)
    cols = (torch.arange(W, device=x.device).view(1, 1, 1, W) + dx).expand(B, flat.shape[1], H, W)
    return padded.gather(2, rows).gather(3, cols).reshape(x.shape)


def check_slices(cfg: Config, sample) -> None:
    """Sampled sequences must lie inside one episode: no done flag before a slice's last step, and
    one episode id throughout (ids are unique across envs: so also one env)."""
    done = sample.get(("next", "done")).reshape(-1, cfg.replay.seq_len)
    if done[:, :-1].any():
        raise RuntimeError("replay returned a sequence that crosses an episode end")
    episode = sample.get("episode").reshape(-1, cfg.replay.seq_len)
    if (episode != episode[:, :1]).any():
        raise RuntimeError("replay returned a sequence that mixes episodes (or envs)")


# ----------------------------------------------------------------------------------- evaluation
VIDEO_EPISODES = 3


def evaluate(cfg: Config, nets: TD3Nets, episodes: int, seed: int, out_dir: Path | None = None,
             should_stop=None) -> dict | None:
    """Deterministic policy over ``episodes`` seeded episodes; a video of the first VIDEO_EPISODES (at most
    600 frames: one episode may end in a crash, so the video shows more than one) and plots of the first.
    None when ``should_stop()`` (asked before each episode) turns true: a stop cut the eval off."""
    from tensordict.nn import TensorDictModule
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    # videos of the drone only: classic-control rendering needs pygame, not a dependency here
    record = out_dir is not None and is_drone(cfg)
    env = make_env(cfg, seed=seed, render=record)
    device = next(nets.parameters()).device
    actor = TensorDictModule(nets.actor, in_keys=seq_keys(cfg), out_keys=["action"])
    frames, returns, lengths, info = [], [], [], {k: [] for k in INFO_KEYS}
    first = None

    def grab(e, _td):
        if len(frames) < 600:
            frames.append(e.base_env._env.render())

    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for ep in range(episodes):
            if should_stop is not None and should_stop():
                env.close()
                return None
            rollout = env.rollout(100_000, actor.to(device), break_when_any_done=True, auto_cast_to_device=True,
                                  callback=grab if (record and ep < VIDEO_EPISODES) else None)
            first = rollout if first is None else first
            returns.append(float(rollout["next", "reward"].sum()))
            lengths.append(rollout.shape[0])
            for k in INFO_KEYS:
                if ("next", k) in rollout.keys(True):
                    info[k].append(float(rollout["next", k][-1]))
    env.close()
    result = {"return": sum(returns) / episodes, "episode_length": sum(lengths) / episodes}
    names = {"success": "success_rate", "collision": "collision_rate", "path_length": "path_length",
             "distance_to_goal": "final_distance"}
    result.update({names[k]: sum(v) / len(v) for k, v in info.items() if v})
    if out_dir is not None:
        from agents.runtime.video import write_video

        out_dir.mkdir(parents=True, exist_ok=True)
        if frames:
            result["video"] = str(write_video(frames, out_dir / "eval_episode.mp4", fps=10))
        if cfg.model.encoder == "vmamba":
            result.update(plot_attention(cfg, nets, first, out_dir))
    return result


def plot_attention(cfg: Config, nets: TD3Nets, rollout, out_dir: Path) -> dict:
    """PNGs of the actor's attention over the K steps along the episode, and of its feature maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = next(nets.parameters()).device
    with torch.no_grad():
        depth, state = rollout["depth_seq"].to(device), rollout["observation_seq"].to(device)
        _, extras = nets.actor.encoder(depth, state, return_attention=True, return_features=True)
    att = extras["attention"].mean(1).cpu()                     # [T, K] (mean over heads)
    fig, ax = plt.subplots(figsize=(8, 3))
    im = ax.imshow(att.T, aspect="auto", cmap="viridis", origin="lower")
    ax.set(xlabel="control step", ylabel="window step (K-1 = now)", title="actor attention over the window")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_dir / "attention.png", dpi=110)
    plt.close(fig)
    t = min(len(rollout) - 1, 10)
    maps = extras["features"][t, -1].cpu()                      # [h, w, C] of the newest frame
    n = min(8, maps.shape[-1])
    fig, axes = plt.subplots(1, n + 1, figsize=(2 * (n + 1), 2.2))
    axes[0].imshow(depth[t, -1, 0].cpu(), cmap="gray")
    axes[0].set_title("depth")
    for i in range(n):
        axes[i + 1].imshow(maps[..., i], cmap="magma")
        axes[i + 1].set_title(f"ch {i}")
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "feature_maps.png", dpi=110)
    plt.close(fig)
    return {"attention_png": str(out_dir / "attention.png"), "features_png": str(out_dir / "feature_maps.png")}
