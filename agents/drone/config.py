"""Typed config of the TD3 agent (``agents/vmamba_td3.py``); ``--help`` lists every key.

Defaults are seed 004's (VMamba TD3 drone): actor lr 5e-4, critic lr 1e-3, gamma 0.99,
tau 0.005, policy noise 0.2, noise clip 0.2, policy delay 2, OU exploration noise with decay,
buffer 20000, batch 128, seq_len 4, learning starts 2000, grad clip 10. The seed trains the
full-size network on a GPU; ``configs/drone/quick_*.yaml`` shrink it for a CPU budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agents.runtime.config import ConfigError, RunConfig, field_spec
from networks.memory.factory import MemoryKind


@dataclass
class EnvConfig:
    id: str = field_spec("mambazoo/DroneForest-v0",
                         help="gymnasium id: mambazoo/Drone{Forest,Walls,Boxes}-v0 or any vector-obs "
                              "env with a Box action space (e.g. mambazoo/PendulumNoVel-v0)")
    backend: Literal["pybullet", "airsim"] = field_spec("pybullet", help="drone only: simulator backend")
    airsim_host: str = field_spec("127.0.0.1", help="drone + airsim: AirSim RPC host")
    airsim_port: int = field_spec(41451, min=1, max=65535, help="drone + airsim: AirSim RPC port")
    airsim_goal: list[float] = field_spec([20.0, 0.0, 2.0], length=3,
                                          help="drone + airsim: goal (x, y, z up) in metres")
    image_size: int = field_spec(64, min=16, max=256, help="drone only: depth image side")
    num_obstacles: int | None = field_spec(None, min=0, max=500, nullable=True,
                                           help="drone only: obstacle count (null: the field's default)")
    max_episode_steps: int = field_spec(300, min=1, help="drone only: steps before truncation")
    num_envs: int = field_spec(1, min=1, max=256,
                               help="envs collecting in lockstep; >1 steps each in its own worker process "
                                    "(TorchRL ParallelEnv, seeds seed+i) while the policy and updates stay in the "
                                    "training process; train.* frame counts are env steps summed over envs")


@dataclass
class ModelConfig:
    encoder: Literal["vmamba", "memory"] = field_spec(
        "vmamba", help="vmamba: depth+state drone encoder; memory: make_memory over vector obs")
    temporal: Literal["mamba", "gru", "none"] = field_spec(   # networks/models/vmamba.py: TEMPORAL
        "mamba", help="vmamba: TemporalMamba + attention pooling; gru: a GRU in its place (same pooling); "
                      "none: K-frame stack MLP baseline")
    pool: Literal["auto", "attention", "concat"] = field_spec(   # networks/models/vmamba.py: POOLS
        "auto", help="vmamba: how the K steps become one feature; attention: the last step attends over the K "
                     "(the seed's); concat: the K features concatenated through an MLP (the frame stack's); "
                     "auto: attention after mamba/gru, concat after none")
    depths: list[int] = field_spec([2, 2, 4, 2], min=1, length=4, help="vmamba: VSS blocks per stage")
    dims: list[int] = field_spec([64, 64, 80, 96], min=4, length=4, help="vmamba: stage widths")
    patch_size: int = field_spec(4, min=1, max=16, help="vmamba: patch embedding stride")
    d_state: int = field_spec(8, min=1, max=64, help="vmamba: SS2D state size")
    d_model: int = field_spec(128, min=8, help="vmamba: fused feature width")
    hidden_dim: int = field_spec(256, min=8, help="actor/critic head width")
    shared_encoder: bool = field_spec(
        False, help="one encoder for actor and critic, trained by the critic's TD loss only; the actor reads "
                    "its features detached and the target actor those of the target critic's encoder "
                    "(DrQ-v2's layout): 2 encoder passes per update instead of 5. false: the seed's two streams")
    memory: MemoryKind = field_spec("mamba1", help="memory encoder: make_memory kind")
    memory_hidden: int = field_spec(64, min=4, help="memory encoder: width")
    memory_layers: int = field_spec(1, min=1, max=8, help="memory encoder: layers")


@dataclass
class TD3Config:
    actor_lr: float = field_spec(5e-4, min=0.0, max=1.0)
    critic_lr: float = field_spec(1e-3, min=0.0, max=1.0)
    gamma: float = field_spec(0.99, min=0.0, max=1.0)
    tau: float = field_spec(0.005, min=0.0, max=1.0, help="target soft-update rate")
    policy_noise: float = field_spec(0.2, min=0.0, max=10.0, help="target policy smoothing noise std")
    noise_clip: float = field_spec(0.2, min=0.0, max=10.0, help="clip of the smoothing noise")
    policy_delay: int = field_spec(2, min=1, help="critic updates per actor/target update")
    grad_clip: float = field_spec(10.0, min=0.0, max=1e6, help="max grad norm (0: off)")
    ou_sigma: float = field_spec(0.2, min=0.0, max=10.0, help="OU exploration noise scale")
    ou_theta: float = field_spec(0.15, min=0.0, max=10.0, help="OU mean reversion")
    ou_eps_end: float = field_spec(0.1, min=0.0, max=1.0, help="final OU noise multiplier (starts at 1)")
    ou_anneal_frames: int = field_spec(50_000, min=1, help="frames over which the OU noise decays")
    image_shift: int = field_spec(
        0, min=0, max=16, help="drone only: DrQ's random shift, in pixels: each sampled depth window is padded "
                               "by this much (edge pixels repeated) and cropped back at one random offset for all "
                               "its K frames, in every update (0: off; DrQ-v2 uses 4 at 84x84)")


@dataclass
class ReplayConfig:
    size: int = field_spec(20_000, min=10, help="transitions kept")
    batch_size: int = field_spec(128, min=1, help="sequences per update")
    seq_len: int = field_spec(4, min=1, max=64, help="K: steps per sampled sequence (and acting window)")
    storage: Literal["memory", "memmap"] = field_spec("memory",
                                                      help="memmap: keep the buffer on disk in the run dir")


@dataclass
class TrainConfig:
    total_frames: int = field_spec(200_000, min=1, max=10**12, help="env steps")
    learning_starts: int = field_spec(2000, min=0, help="random-action steps before updates start")
    frames_per_batch: int = field_spec(100, min=1, help="env steps between update rounds")
    updates_per_step: float = field_spec(1.0, min=0.0, max=64.0, help="gradient updates per env step")
    checkpoint_every_frames: int = field_spec(10_000, min=1, help="env steps between checkpoints")
    eval_every_frames: int = field_spec(0, min=0, help="env steps between evaluations (0: only at the end)")
    eval_episodes: int = field_spec(10, min=1)
    refill_replay: bool = field_spec(
        False, help="on --resume, when the checkpoint's replay folder is gone (buffers need not travel with a "
                    "run): start from an empty buffer, collect train.learning_starts env steps with the resumed "
                    "policy and its OU noise, then update again (the resumed run then differs from an "
                    "uninterrupted one). false: a missing folder is an error")
    cuda_graph: bool = field_spec(False, help="on CUDA, replay each update (critic; critic + actor + targets) as a "
                                              "CUDA graph; nets no graph can hold (cuDNN GRU/LSTM) update eagerly, "
                                              "said in a log line; a capture failing midway stops the run")


@dataclass
class Config(RunConfig):     # name, seed, device, run_root, logger (agents/runtime/config.py)
    name: str = field_spec("vmamba_td3", help="run name (run directory prefix)")
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    td3: TD3Config = field(default_factory=TD3Config)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # old name -> new name, read with a warning for one release (agents/runtime/config.py)
    RENAMED = {"train.checkpoint_every": "train.checkpoint_every_frames", "train.eval_every": "train.eval_every_frames"}


def is_drone(cfg: Config) -> bool:
    return cfg.env.id.startswith("mambazoo/Drone")


def check_consistency(cfg: Config) -> None:
    """Constraints between keys (single-key bounds are checked while loading)."""
    if cfg.model.encoder == "vmamba" and not is_drone(cfg):
        raise ConfigError(f"config key 'model.encoder': vmamba needs a drone env (mambazoo/Drone*-v0), "
                          f"got env.id={cfg.env.id!r}; use model.encoder=memory for vector observations")
    if cfg.model.encoder == "memory" and is_drone(cfg):
        raise ConfigError("config key 'model.encoder': the drone's depth images need model.encoder=vmamba")
    if cfg.replay.batch_size * cfg.replay.seq_len > cfg.replay.size:
        raise ConfigError(f"config key 'replay.batch_size': batch_size x seq_len = "
                          f"{cfg.replay.batch_size * cfg.replay.seq_len} exceeds replay.size={cfg.replay.size}")
    if cfg.train.frames_per_batch % cfg.env.num_envs:
        # the collector steps every env frames_per_batch / num_envs times per batch: a remainder would
        # be rounded up by TorchRL, and every frame count (checkpoints, learning_starts) would drift
        raise ConfigError(f"config key 'env.num_envs': train.frames_per_batch={cfg.train.frames_per_batch} is "
                          f"not divisible by env.num_envs={cfg.env.num_envs} (each batch is num_envs x steps)")
    if cfg.td3.image_shift and not is_drone(cfg):
        raise ConfigError(f"config key 'td3.image_shift': shifts depth images, which env.id={cfg.env.id!r} "
                          f"does not have; use 0")
    if cfg.td3.image_shift * 2 >= cfg.env.image_size:
        raise ConfigError(f"config key 'td3.image_shift': {cfg.td3.image_shift} must be under half of "
                          f"env.image_size ({cfg.env.image_size})")
    if cfg.model.encoder == "memory":
        check_memory_size(cfg)
    if is_drone(cfg) and cfg.model.encoder == "vmamba" and cfg.env.image_size % cfg.model.patch_size:
        raise ConfigError(f"config key 'env.image_size': {cfg.env.image_size} must be a multiple of "
                          f"model.patch_size ({cfg.model.patch_size})")


def check_memory_size(cfg: Config) -> None:
    """Build the memory encoder once on the meta device (no memory, no compute): a memory_hidden
    the kind cannot take (mamba2's heads, a transformer's head count...) is a ConfigError naming the
    key before a run directory exists, not a ValueError traceback from inside training."""
    import torch

    from networks.memory.encoder import MemorySequenceEncoder

    try:
        with torch.device("meta"):
            MemorySequenceEncoder(1, cfg.model.memory, cfg.model.memory_hidden, cfg.model.memory_layers)
    except (ValueError, AssertionError, RuntimeError) as err:
        raise ConfigError(f"config key 'model.memory_hidden': {cfg.model.memory_hidden} does not fit "
                          f"model.memory={cfg.model.memory} ({err})") from None
