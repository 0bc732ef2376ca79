"""Typed config of the PPO quadruped agent, and the import of LocoTransformer's JSON configs.

Every key, its type, default and bounds live in the dataclasses below (``--help`` lists them).
``from_locotransformer`` translates the schema of the public vision4leg repository
(``config/rl/<static|moving>/locotransformer/*.json``) into ours: every key with a counterpart is
mapped, the ones without are named in one warning, and ``transformer_params`` is converted to
``mamba_params`` (d_model = encoder visual_dim, d_state 16, d_conv 4, expand 2).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from agents.runtime.config import ConfigError, RunConfig, field_spec
from agents.algos.ppo import PPOConfig  # noqa: F401  (shared with ppo_memory.py; defaults are LocoTransformer's)
from networks.memory.factory import MemoryKind

log = logging.getLogger("mambazoo")

Course = Literal["flat", "thin", "wide", "moving", "goal"]


@dataclass
class EnvConfig:
    course: Course = field_spec("thin", help="obstacle course")
    horizon: int = field_spec(1000, min=1, help="control steps per episode")
    num_envs: int = field_spec(2, min=1, max=512, help="environments collected in parallel")
    parallel: bool = field_spec(True, help="one process per env (gymnasium AsyncVectorEnv with shared memory, "
                                "under TorchRL's GymWrapper) instead of all envs in this process (SerialEnv)")
    time_step_s: float = field_spec(0.0025, min=1e-4, max=0.02, help="physics step (s)")
    num_action_repeat: int = field_spec(16, min=1, max=100, help="physics steps per action")
    kp: float = field_spec(80.0, min=0.0, help="PD position gain")
    kd: float = field_spec(0.4, min=0.0, help="PD velocity gain")
    diagonal_act: bool = field_spec(True, help="6-dim action shared by diagonal leg pairs")
    clip_num: list[float] = field_spec([0.05, 0.5, 0.5], min=0.0, max=2.0, length=(3, 12),
                                       help="max joint offset from standing (rad), per joint or per leg")
    alive_reward: float = field_spec(-0.05, help="per-step term")
    fall_reward: float = field_spec(-20.0, help="added on a fall")
    target_vel: float = field_spec(1.0, min=0.0, max=5.0, help="forward speed cap of the reward (m/s)")
    z_penalty: float = field_spec(1.0, min=0.0, help="weight of vertical speed squared")
    other_direction_penalty: float = field_spec(0.0, min=0.0, help="weight of sideways speed squared")
    energy_weight: float = field_spec(0.005, min=0.0, help="weight of sum(tau^2) * dt")
    goal_reward: float = field_spec(10.0, help="bonus on reaching the goal (course goal)")
    fric_coeff: list[float] = field_spec([1.0, 0.01, 0.01], min=0.0, length=3,
                                         help="ground friction: lateral, spinning, rolling")
    domain_randomization: bool = field_spec(False, help="randomise friction and body mass per episode")
    depth: bool = field_spec(True, help="depth camera on (False: proprioception only)")
    depth_backend: Literal["raycast", "tiny"] = field_spec("raycast", help="ray caster or PyBullet TinyRenderer")
    image_size: int = field_spec(64, min=16, max=256, help="depth image side (pixels)")
    frame_stack: int = field_spec(4, min=1, max=16, help="depth frames stacked per observation")
    num_obstacles: int | None = field_spec(None, min=0, max=1000, nullable=True,
                                           help="obstacle count (null: the course's default)")
    gait: Literal["none", "trot"] = field_spec("none", help="periodic trot reference added to the PD targets "
                                               "(PMTG-style gait prior; none = LocoTransformer's env)")
    gait_freq: float = field_spec(2.0, min=0.1, max=10.0, help="gait prior frequency (Hz)")
    gait_height: float = field_spec(0.25, min=0.0, max=1.0, help="gait prior foot lift (rad of thigh; calf -2x)")


@dataclass
class ModelConfig:
    fusion: Literal["mamba", "transformer"] = field_spec("mamba", help="LocoMamba or LocoTransformer fusion")
    vision_only: bool = field_spec(False, help="drop the proprioception token")
    hidden_shapes: list[int] = field_spec([256, 256], min=1, help="proprioception MLP")
    visual_dim: int = field_spec(256, min=8, max=4096, help="token width")
    transformer_params: list[list[int]] = field_spec([[1, 256], [1, 256]], min=1,
                                                     help="[[n_heads, dim_ff], ...] per layer")
    mamba_params: list[list[int]] = field_spec([[256, 16, 4, 2], [256, 16, 4, 2]], min=1,
                                               help="[[d_model, d_state, d_conv, expand], ...] per layer")
    append_hidden_shapes: list[int] = field_spec([256, 256], min=1, help="MLP after pooling")
    memory: MemoryKind = field_spec("mamba1", help="temporal memory across control steps")
    memory_hidden: int = field_spec(256, min=1, help="memory width")
    memory_layers: int = field_spec(1, min=1, max=16, help="memory layers")
    init_std: float = field_spec(0.5, min=1e-3, max=5.0, help="initial policy std (pre-tanh)")


@dataclass
class TrainConfig:
    total_frames: int = field_spec(24_576_000, min=1, help="env steps to train for")
    frames_per_batch: int = field_spec(16384, min=1, help="env steps collected per PPO iteration")
    checkpoint_every_iters: int = field_spec(10, min=1, help="PPO iterations between checkpoints (each one "
                                             "restarts every env from a seed of the iteration, which makes resume exact)")
    eval_every_iters: int = field_spec(0, min=0, help="PPO iterations between evaluations (0: only at the end)")
    eval_episodes: int = field_spec(2, min=1)
    cuda_graph: bool = field_spec(True, help="on CUDA, act through a captured CUDA graph of the policy step")
    # an exploration schedule, not part of the network: a resumed run may set or change it
    std_cap: list[float] | None = field_spec(None, min=1e-3, max=5.0, length=(2, 2), nullable=True,
                                             help="[start, end]: upper bound on the pre-tanh std, linear over "
                                                  "train.total_frames (null: none)")


@dataclass
class Config(RunConfig):     # name, seed, device, run_root, logger (agents/runtime/config.py)
    name: str = field_spec("locomamba", help="run name (run directory prefix)")
    threads: int = field_spec(0, min=0, max=1024, help="torch threads of the training process (0: 1 when the envs "
                              "run in their own processes, whose cores they need; else torch's default)")
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # old name -> new name, read with a warning for one release (agents/runtime/config.py)
    RENAMED = {"train.checkpoint_every": "train.checkpoint_every_iters", "train.eval_every": "train.eval_every_iters"}


def check_consistency(cfg: Config) -> None:
    """Constraints between keys (single-key bounds are checked while loading)."""
    per_env = cfg.train.frames_per_batch // cfg.env.num_envs
    if cfg.train.frames_per_batch % cfg.env.num_envs:
        raise ConfigError(f"config key 'train.frames_per_batch': {cfg.train.frames_per_batch} must be a "
                          f"multiple of env.num_envs ({cfg.env.num_envs})")
    if per_env % cfg.ppo.slice_len:
        raise ConfigError(f"config key 'ppo.slice_len': {cfg.ppo.slice_len} must divide the steps per env "
                          f"per batch (train.frames_per_batch / env.num_envs = {per_env})")
    if cfg.ppo.minibatch_size % cfg.ppo.slice_len or cfg.ppo.minibatch_size > cfg.train.frames_per_batch:
        raise ConfigError(f"config key 'ppo.minibatch_size': {cfg.ppo.minibatch_size} must be a multiple of "
                          f"ppo.slice_len ({cfg.ppo.slice_len}) and at most train.frames_per_batch "
                          f"({cfg.train.frames_per_batch})")
    for i, entry in enumerate(cfg.model.transformer_params):
        if len(entry) != 2 or cfg.model.visual_dim % entry[0]:
            raise ConfigError(f"config key 'model.transformer_params[{i}]': expected [n_heads, dim_ff] with "
                              f"n_heads dividing model.visual_dim ({cfg.model.visual_dim}), got {entry}")
    for i, entry in enumerate(cfg.model.mamba_params):
        if len(entry) != 4:
            raise ConfigError(f"config key 'model.mamba_params[{i}]': expected [d_model, d_state, d_conv, "
                              f"expand], got {entry}")
    if cfg.model.vision_only and not cfg.env.depth:
        raise ConfigError("config key 'model.vision_only': true needs env.depth: true")


# ------------------------------------------------------------------ LocoTransformer's JSON schema
# (our key, conversion) per LocoTransformer key; None = no counterpart here (named in the warning)
_ENV_BUILD = {
    "time_step_s": "env.time_step_s", "num_action_repeat": "env.num_action_repeat",
    "diagonal_act": "env.diagonal_act", "clip_num": "env.clip_num", "alive_reward": "env.alive_reward",
    "fall_reward": "env.fall_reward", "target_vel": "env.target_vel", "z_penalty": "env.z_penalty",
    "other_direction_penalty": "env.other_direction_penalty", "fric_coeff": "env.fric_coeff",
    "domain_randomization": "env.domain_randomization",
}
_TOP = {
    ("encoder", "hidden_shapes"): "model.hidden_shapes", ("encoder", "visual_dim"): "model.visual_dim",
    ("net", "transformer_params"): "model.transformer_params",
    ("net", "append_hidden_shapes"): "model.append_hidden_shapes",
    ("collector", "epoch_frames"): "train.frames_per_batch", ("collector", "eval_episodes"): "train.eval_episodes",
    ("general_setting", "discount"): "ppo.gamma", ("general_setting", "batch_size"): "ppo.minibatch_size",
    ("general_setting", "save_interval"): "train.checkpoint_every_iters",
    ("general_setting", "eval_interval"): "train.eval_every_iters",
    ("ppo", "plr"): "ppo.lr", ("ppo", "vlr"): "ppo.value_lr", ("ppo", "clip_para"): "ppo.clip_epsilon",
    ("ppo", "opt_epochs"): "ppo.epochs", ("ppo", "tau"): "ppo.gae_lambda",
    ("ppo", "entropy_coeff"): "ppo.entropy_coef",
}
# keys whose value is implied by how this agent works: accepted silently only with that value
_IMPLIED = {"motor_control_mode": "POSITION", "add_last_action_input": True, "no_displacement": True,
            "depth_norm": True, "rgbd": False, "grayscale": False, "gae": True}


def is_locotransformer(data: dict) -> bool:
    return isinstance(data, dict) and ("env_name" in data or "general_setting" in data)


def _set(out: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = out
    for p in path:
        node = node.setdefault(p, {})
    node[last] = value


def _course(build: dict, unmapped: list[str]) -> str:
    terrain = str(build.get("terrain_type", "random_blocks_sparse"))
    if build.get("moving"):
        return "moving"
    if build.get("goal") or build.get("subgoal"):
        return "goal"
    if terrain == "plane":
        return "flat"
    if "wide" in terrain:
        return "wide"
    if terrain != "random_blocks_sparse":
        unmapped.append(f"env.env_build.terrain_type={terrain!r} (no such terrain here: using the thin course)")
    return "thin"


def from_locotransformer(data: dict) -> dict:
    """LocoTransformer JSON (as loaded) -> a dict in our schema; prints what was converted."""
    if not is_locotransformer(data):
        return data
    if data.get("env_name", "A1MoveGround") not in ("A1MoveGround",):
        raise ConfigError(f"config key 'env_name': only 'A1MoveGround' has a counterpart here, "
                          f"got {data.get('env_name')!r}")
    out: dict = {}
    unmapped: list[str] = []
    env = dict(data.get("env", {}))
    build = dict(env.pop("env_build", {}))
    if "horizon" in env:
        out.setdefault("env", {})["horizon"] = env.pop("horizon")
    for key, value in build.items():
        if key in _ENV_BUILD:
            _set(out, _ENV_BUILD[key], value)
        elif key in ("moving", "terrain_type", "goal", "subgoal"):
            pass                                     # folded into env.course below
        elif key in ("get_image", "depth_image"):
            pass                                     # folded into env.depth below
        elif key in _IMPLIED and value == _IMPLIED[key]:
            pass
        else:
            unmapped.append(f"env.env_build.{key}")
    _set(out, "env.course", _course(build, unmapped))
    _set(out, "env.depth", bool(build.get("get_image", True) and build.get("depth_image", True)))
    unmapped += [f"env.{k}" for k in env]            # reward_scale, obs_norm, ...
    for section, value in data.items():
        if section in ("env_name", "env"):
            continue
        if not isinstance(value, dict):
            unmapped.append(section)
            continue
        for key, v in value.items():
            if (section, key) in _TOP:
                _set(out, _TOP[(section, key)], v)
            elif key in _IMPLIED and v == _IMPLIED[key]:
                pass
            elif (section, key) == ("collector", "max_episode_frames"):
                horizon = out.setdefault("env", {}).get("horizon", v)
                out["env"]["horizon"] = min(int(horizon), int(v) + 1)   # frames 0..max inclusive
            elif (section, key) == ("general_setting", "num_epochs"):
                frames = data.get("collector", {}).get("epoch_frames", 16384)
                _set(out, "train.total_frames", int(v) * int(frames))
            else:
                unmapped.append(f"{section}.{key}")
    tp = out.get("model", {}).get("transformer_params")
    if tp is not None:
        d_model = int(out["model"].get("visual_dim", 256))
        mp = [[d_model, 16, 4, 2] for _ in tp]
        _set(out, "model.mamba_params", mp)
        _set(out, "model.fusion", "mamba")
        print(f"[config] LocoTransformer config converted: net.transformer_params {tp} -> "
              f"model.mamba_params {mp} (d_model = encoder.visual_dim, d_state 16, d_conv 4, expand 2); "
              f"model.fusion=transformer keeps the transformer")
    if unmapped:
        log.warning("LocoTransformer keys with no counterpart here (ignored): %s", ", ".join(unmapped))
    return out
