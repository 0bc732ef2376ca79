"""Config, env, policy and evaluation of the POMDP-suite PPO agent (used by ppo_memory.py).

Keys are the contract shared with agents/algos/ppo.py: the env writes "observation" (+ "is_init"
from InitTracker and the memory state from the primer); the embed writes "embed"; the memory writes
"memory"; the heads write "logits"/"action" (or "loc"/"scale"/"action") and "state_value".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from agents.runtime.config import ConfigError, RunConfig, field_spec, with_defaults
from agents.algos.ppo import PPOConfig, RecurrentActorCritic
from envs.pomdp.tasks import TASKS
from networks.memory.factory import MEMORY_KINDS, MemoryKind, make_memory
from networks.params import parameter_counts

Task = Literal["repeat_previous", "repeat_first", "autoencode", "count_recall", "stateless_cartpole",
               "stateless_pendulum", "noisy_stateless_cartpole", "noisy_stateless_pendulum"]
assert set(Task.__args__) == set(TASKS), "Task literal out of date with envs.pomdp.tasks.TASKS"


@dataclass
class EnvConfig:
    task: Task = field_spec("stateless_cartpole", help="POMDP suite task (envs/pomdp/tasks.py)")
    level: Literal["easy", "medium", "hard"] = field_spec("easy", help="popgym difficulty level")
    num_envs: int = field_spec(16, min=1, max=65536, help="envs stepped together as one batched env")
    options: dict = field_spec({}, help="task parameters overriding the level's, e.g. {max_steps: 500} "
                                        "(gymnasium CartPole-v1's limit) for stateless_cartpole")


@dataclass
class ModelConfig:
    memory: MemoryKind = field_spec("mamba2", help="memory kind (networks.make_memory)")
    embed: int = field_spec(32, min=1, max=4096, help="width of the Linear observation embedding")
    hidden: int = field_spec(32, min=1, max=4096, help="memory width")
    layers: int = field_spec(1, min=1, max=16, help="memory layers")
    options: dict = field_spec({}, help="memory options per kind, e.g. {mamba2: {d_state: 16, headdim: 16}}; "
                                        "only model.memory's entry is used (networks.memory_options lists them)")
    head_hidden: int = field_spec(64, min=0, max=4096, help="hidden layer of the policy/value heads "
                                                            "(0: linear heads)")
    init_std: float = field_spec(1.0, min=1e-3, max=5.0, help="initial policy std (pendulum tasks)")
    obs_norm: Literal["bounds", "rollout"] = field_spec(
        "bounds", help="observation scaling before the embed: the task's bounds, or mean/std of a "
                        "random-policy rollout measured at the start of training (kept in the checkpoint)")


# PPOConfig with defaults chosen for the suite (see README "Sweeps"): rl-zoo's RecurrentPPO
# CartPoleNoVel settings (lr 1e-3 annealed, gamma 0.98, lambda 0.8) with fewer epochs, as CPU time is
# the budget; keys, bounds and help are PPOConfig's
MemoryPPOConfig = with_defaults(PPOConfig, "MemoryPPOConfig", lr=1e-3, value_lr=1e-3, epochs=4, minibatch_size=256,
                                slice_len=32, gamma=0.98, gae_lambda=0.8, entropy_coef=0.0, max_grad_norm=0.5,
                                anneal_lr=True)


@dataclass
class TrainConfig:
    total_frames: int = field_spec(100_000, min=1, help="env steps to train for")
    frames_per_batch: int = field_spec(1024, min=1, help="env steps collected per PPO iteration")
    checkpoint_every_iters: int = field_spec(20, min=1, help="PPO iterations between checkpoints")
    eval_episodes: int = field_spec(32, min=1, help="greedy episodes of the final evaluation")
    threshold: float = field_spec(1.0, help="training return that counts as solved (steps and wall-clock "
                                            "to reach it are reported; met at >= threshold - 1e-3)")


@dataclass
class CollectorConfig:
    backend: Literal["local", "ray"] = field_spec("local", help="local Collector, or TorchRL's RayCollector")
    ray_address: str | None = field_spec(None, nullable=True,
                                         help="Ray cluster address (null: start a local Ray instance)")
    num_collectors: int = field_spec(1, min=1, max=1024, help="Ray collector actors (backend ray)")


@dataclass
class Config(RunConfig):     # name, seed, device, run_root, logger (agents/runtime/config.py)
    name: str = field_spec("pomdp", help="run name (run directory prefix)")
    device: Literal["cpu", "cuda"] = field_spec("cpu", help="small policies run fastest on the CPU")
    threads: int = field_spec(0, min=0, max=256, help="torch CPU threads (0: torch's default)")
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: MemoryPPOConfig = field(default_factory=MemoryPPOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)

    # old name -> new name, read with a warning for one release (agents/runtime/config.py)
    RENAMED = {"train.checkpoint_every": "train.checkpoint_every_iters"}


def check_consistency(cfg: Config) -> None:
    """Constraints between keys (single-key bounds are checked while loading)."""
    t, p = cfg.train, cfg.ppo
    # RayCollector splits each batch evenly between its collectors, each stepping env.num_envs envs
    envs = cfg.env.num_envs * (cfg.collector.num_collectors if cfg.collector.backend == "ray" else 1)
    if t.frames_per_batch % envs:
        what = "env.num_envs x collector.num_collectors" if envs != cfg.env.num_envs else "env.num_envs"
        raise ConfigError(f"config key 'train.frames_per_batch': {t.frames_per_batch} must be a multiple of "
                          f"{what} ({envs})")
    per_env = t.frames_per_batch // envs
    if per_env % p.slice_len:
        raise ConfigError(f"config key 'ppo.slice_len': {p.slice_len} must divide the steps per env per batch "
                          f"(train.frames_per_batch / env.num_envs = {per_env})")
    if p.minibatch_size % p.slice_len or p.minibatch_size > t.frames_per_batch:
        raise ConfigError(f"config key 'ppo.minibatch_size': {p.minibatch_size} must be a multiple of "
                          f"ppo.slice_len ({p.slice_len}) and at most train.frames_per_batch ({t.frames_per_batch})")
    try:
        task = TASKS[cfg.env.task]
        task(1, **{**task.LEVELS[cfg.env.level], **cfg.env.options})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config key 'env.options' (task {cfg.env.task!r}): {err}") from None
    bad = [k for k, v in cfg.model.options.items() if k not in MEMORY_KINDS or not isinstance(v, (dict, type(None)))]
    if bad:
        raise ConfigError(f"config key 'model.options': expected a mapping memory kind -> options, e.g. "
                          f"{{mamba2: {{d_state: 16}}}}; bad entries {bad} (kinds: {', '.join(MEMORY_KINDS)})")
    try:
        make_memory(cfg.model.memory, cfg.model.embed, cfg.model.hidden, cfg.model.layers, **memory_options(cfg.model))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config key 'model.options' (memory {cfg.model.memory!r}): {err}") from None


def memory_options(m: ModelConfig) -> dict:
    """model.memory's options: per-kind entries let one config switch kinds by a single override."""
    return dict(m.options.get(m.memory) or {})


# ----------------------------------------------------------------------------------------- env
def make_env(cfg: EnvConfig, seed: int, num_envs: int | None = None, primer=None):
    """POMDPEnv [num_envs] + InitTracker (is_init), StepCounter, RewardSum and the memory primer."""
    from torchrl.envs import Compose, InitTracker, RewardSum, StepCounter, TransformedEnv

    from envs.pomdp.suite import POMDPEnv

    base = POMDPEnv(cfg.task, cfg.level, num_envs=num_envs or cfg.num_envs, seed=seed, **cfg.options)
    transforms = [InitTracker(), StepCounter(), RewardSum()]
    if primer is not None:
        transforms.append(primer)
    return TransformedEnv(base, Compose(*transforms))


class EnvFactory:
    """Picklable env constructor (for Ray workers): builds its own primer from the model config."""

    def __init__(self, cfg: Config, seed: int):
        self.env_cfg, self.model_cfg, self.seed = cfg.env, cfg.model, seed

    def __call__(self):
        m = self.model_cfg
        primer = make_memory(m.memory, m.embed, m.hidden, m.layers, **memory_options(m)).make_tensordict_primer()
        return make_env(self.env_cfg, self.seed, primer=primer)


# -------------------------------------------------------------------------------------- policy
def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    # ReLU heads with one hidden layer: the net_arch of rl-zoo's RecurrentPPO baseline (pi=[64], vf=[64])
    layers = [nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out)] if hidden else [nn.Linear(inp, out)]
    return nn.Sequential(*layers)


class ObsEmbed(nn.Module):
    """Linear embedding of the observation after a fixed affine scaling: by default the task's bounds
    to [-1, 1]; ``set_stats`` replaces it by measured mean/std (model.obs_norm=rollout)."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor, width: int):
        super().__init__()
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("scale", ((high - low) / 2).clamp(min=1e-6))
        self.linear = nn.Linear(low.numel(), width)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear((obs - self.center) / self.scale)

    @torch.no_grad()
    def set_stats(self, obs: torch.Tensor) -> None:
        """Centre and scale from observations [N, obs_dim]; near-constant features keep scale >= 1e-2
        of their range so they are not blown up."""
        floor = (self.scale * 1e-2).clamp(min=1e-6)
        self.center.copy_(obs.mean(0))
        self.scale.copy_(torch.maximum(obs.std(0), floor))


@torch.no_grad()
def measure_obs_stats(cfg: Config, nets: "MemoryPolicy", seed: int, steps: int = 256) -> None:
    """model.obs_norm=rollout: why: stateless CartPole's x and theta move by ~1e-3 of their bounds per
    step, and the memory must difference them to recover velocities. Scaling by the spread a random
    policy sees (as rl-zoo's VecNormalize does, but frozen, so the policy's input never drifts) makes
    those differences visible. Uses the task's bounds otherwise."""
    if cfg.model.obs_norm != "rollout":
        return
    env = make_env(cfg.env, seed=seed)
    data = env.rollout(steps, break_when_any_done=False)         # random actions, auto-reset
    nets.embed_net.set_stats(data["observation"].reshape(-1, data["observation"].shape[-1]).float())
    env.close()


class MemoryPolicy(RecurrentActorCritic):
    """Linear embed -> memory -> (actor head, value head); views over the same parameters:
    trunk (embed+memory), policy (trunk+actor, for the collector), actor_on_memory (the actor on a
    trunk output, for ClipPPOLoss), value_step (trunk+value, step mode)."""

    def __init__(self, cfg: Config):
        super().__init__()
        from tensordict.nn import NormalParamExtractor, TensorDictModule
        from torchrl.data import Bounded, OneHot
        from torchrl.modules import OneHotCategorical, ProbabilisticActor, TanhNormal, ValueOperator

        task = TASKS[cfg.env.task]
        probe = task(1, **{**task.LEVELS[cfg.env.level], **cfg.env.options})   # dims and bounds
        low, high = probe.obs_bounds()
        m = cfg.model
        self.embed_net = ObsEmbed(low, high, m.embed)
        self.embed = TensorDictModule(self.embed_net, in_keys=["observation"], out_keys=["embed"])
        self.memory = make_memory(m.memory, m.embed, m.hidden, m.layers, in_key="embed", out_key="memory",
                                  **memory_options(m))
        self.discrete = bool(probe.n_actions)
        if self.discrete:
            head = _mlp(m.hidden, m.head_hidden, probe.n_actions)
            module = TensorDictModule(head, in_keys=["memory"], out_keys=["logits"])
            spec = OneHot(probe.n_actions, (probe.n_actions,), dtype=torch.int64)
            actor_head = ProbabilisticActor(module, in_keys=["logits"], spec=spec,
                                                 distribution_class=OneHotCategorical, return_log_prob=True)
        else:
            head = _mlp(m.hidden, m.head_hidden, 2 * probe.act_dim)
            net = nn.Sequential(head, NormalParamExtractor(scale_mapping=f"biased_softplus_{m.init_std}"))
            module = TensorDictModule(net, in_keys=["memory"], out_keys=["loc", "scale"])
            spec = Bounded(probe.act_low, probe.act_high, (probe.act_dim,))
            actor_head = ProbabilisticActor(
                module, in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal,
                distribution_kwargs={"low": probe.act_low, "high": probe.act_high}, return_log_prob=True)
        nn.init.normal_(head[-1].weight, std=0.01)     # near-uniform initial policy: explore first
        nn.init.zeros_(head[-1].bias)
        value_head = ValueOperator(_mlp(m.hidden, m.head_hidden, 1), in_keys=["memory"])
        self.set_views(self.embed, actor_head, value_head)

    def parameter_counts(self) -> dict[str, int]:
        return parameter_counts({"embed": self.embed_net, "memory": self.memory,
                                 "policy head": self.actor_head, "value head": self.value_head})


@torch.no_grad()
def evaluate(cfg: Config, nets: MemoryPolicy, episodes: int, seed: int) -> dict[str, float]:
    """Greedy policy on ``episodes`` envs stepped as one batch; each env's first episode counts.
    Returns mean/min/max return and mean length."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    env = make_env(cfg.env, seed=seed, num_envs=episodes, primer=nets.primer())
    horizon = env.base_env.task.max_steps + 1
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        data = env.rollout(horizon, nets.policy, break_when_any_done=False)      # [episodes, T]
    done = data["next", "done"].squeeze(-1)
    first = done & (done.long().cumsum(-1) == 1)                                 # first episode's last step
    finished = first.any(-1)
    ret = data["next", "episode_reward"].squeeze(-1)[first]
    length = data["next", "step_count"].squeeze(-1)[first].float()
    env.close()
    if not finished.all():
        raise RuntimeError(f"evaluation: {int((~finished).sum())} episodes did not end in {horizon} steps")
    return {"return": ret.mean().item(), "return_min": ret.min().item(), "return_max": ret.max().item(),
            "length": length.mean().item()}
