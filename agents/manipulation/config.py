"""Typed config of the diffusion-policy BC agent (``agents/bc_diffusion.py``); ``train --help`` lists every key.

Defaults follow DP3 / Mamba Policy (seed 001): horizon 16, 2 observation steps, 8 executed action
steps, 100 DDPM training steps, 10 DDIM inference steps, AdamW lr 1e-4 (betas 0.95/0.999, weight
decay 1e-6), warm-up 500 steps then cosine decay, batch 64 (DP3 uses 128), EMA with DP's warm-up
(power 0.75) up to decay 0.9999 (torch AveragedModel). ``policy.down_dims: null`` picks the paper's widths per
denoiser: unet [512,1024,2048] (DP3, 255M params), mamba* [128,256,512] (Mamba Policy, ~48M).
configs/manip/*.yaml narrow both by 4x for CPU budgets (same width ratio as the papers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agents.runtime.config import ConfigError, RunConfig, field_spec

Denoiser = Literal["unet", "mamba1", "mamba2", "bidirectional", "hydra"]


@dataclass
class DataConfig:
    path: str = field_spec("data/manip/push",
                           help="dataset directory written by `generate` (the task is read from it); "
                                "one policy per task: run train once per dataset")
    val_path: str = field_spec("", help="held-out demos of the same task (`generate` with another --seed): "
                                       "every train.val_every_steps the EMA policy's noise-MSE and open-loop "
                                       "action error on them are logged (val/*); empty: none")


@dataclass
class PolicyConfig:
    denoiser: Denoiser = field_spec("unet", help="unet: DP3's conditional 1-D UNet; mamba1/mamba2/"
                                                 "bidirectional/hydra: Mamba Policy's XMamba UNet "
                                                 "(hydra: quasiseparable bidirectional SSD)")
    down_dims: list[int] | None = field_spec(None, min=8, length=(1, 2, 3, 4), nullable=True,
                                             help="UNet widths per level (null: unet [512,1024,2048], "
                                                  "mamba* [128,256,512]); multiples of 8 (GroupNorm)")
    attention: bool = field_spec(True, help="mamba*: XMamba's attention sub-block (the 'hybrid' of the paper)")
    kernel_size: int = field_spec(5, min=1, max=15, help="UNet Conv1d kernel (odd)")
    encoder_dim: int = field_spec(64, min=8, help="point-cloud feature per obs step (DP3: 64)")
    horizon: int = field_spec(16, min=1, max=256, help="predicted action chunk length")
    n_obs_steps: int = field_spec(2, min=1, max=8, help="observation history fed to the encoder")
    n_action_steps: int = field_spec(8, min=1, help="actions executed per chunk (from index n_obs_steps-1)")
    diffusion_steps: int = field_spec(100, min=2, max=1000, help="DDPM training timesteps")
    inference_steps: int = field_spec(10, min=1, max=1000, help="DDIM sampling steps")


@dataclass
class TrainConfig:
    steps: int = field_spec(3000, min=1, help="gradient steps")
    batch_size: int = field_spec(64, min=1)
    lr: float = field_spec(1e-4, min=0.0, max=1.0)
    weight_decay: float = field_spec(1e-6, min=0.0)
    warmup_steps: int = field_spec(500, min=0, help="gradient steps of linear lr warm-up (then cosine decay)")
    grad_clip: float = field_spec(0.0, min=0.0, help="max grad norm (0: off, as DP3)")
    ema_decay: float = field_spec(0.9999, min=0.0, max=1.0, help="EMA max decay (warm-up power 0.75)")
    log_every_steps: int = field_spec(50, min=1, help="gradient steps between CSV log rows")
    checkpoint_every_steps: int = field_spec(1000, min=1, help="gradient steps between checkpoints (and one at "
                                             "the end)")
    eval_every_steps: int = field_spec(0, min=0, help="gradient steps between closed-loop evals (0: none during "
                                       "training)")
    val_every_steps: int = field_spec(0, min=0, help="gradient steps between validations on data.val_path "
                                      "(0: none); needs data.val_path")
    cuda_graph: bool = field_spec(True, help="on CUDA, replay the whole training step (batch noise, loss, "
                                             "backward, AdamW, EMA) as one CUDA graph: the Mamba denoisers launch "
                                             "thousands of small kernels a step; a net no graph can hold (cuDNN "
                                             "GRU/LSTM) trains eagerly, said in one log line; a capture failing "
                                             "midway stops the run")


@dataclass
class EvalConfig:
    episodes: int = field_spec(20, min=1, help="closed-loop episodes")
    seed: int = field_spec(100_000, min=0, help="first env seed (episode i uses seed + i); far from the data seeds")
    video: bool = field_spec(True, help="write a video of the first episode")


@dataclass
class Config(RunConfig):     # name, seed, device, run_root, logger (agents/runtime/config.py)
    name: str = field_spec("bc_diffusion", help="run name (run directory prefix)")
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # old name -> new name, read with a warning for one release (agents/runtime/config.py)
    RENAMED = {"train.log_every": "train.log_every_steps", "train.checkpoint_every": "train.checkpoint_every_steps",
               "train.eval_every": "train.eval_every_steps", "train.warmup": "train.warmup_steps",
               "train.device": "device"}

    def __post_init__(self):
        # from_dict builds the sections first, so cross-key errors surface while loading (exit 2
        # before a run directory is created), not at the first training step
        check_consistency(self)


def check_consistency(cfg: Config) -> None:
    """Constraints between keys (single-key bounds are checked while loading)."""
    p = cfg.policy
    if p.n_obs_steps - 1 + p.n_action_steps > p.horizon:
        raise ConfigError(f"config key 'policy.n_action_steps': n_obs_steps - 1 + n_action_steps = "
                          f"{p.n_obs_steps - 1 + p.n_action_steps} exceeds policy.horizon={p.horizon}")
    levels = len(p.down_dims) if p.down_dims else 3
    if p.horizon % 2 ** (levels - 1):
        raise ConfigError(f"config key 'policy.horizon': {p.horizon} must be divisible by {2 ** (levels - 1)} "
                          f"(the UNet halves it {levels - 1} times)")
    if p.down_dims and any(d % 8 for d in p.down_dims):
        raise ConfigError(f"config key 'policy.down_dims': {p.down_dims} must be multiples of 8 (GroupNorm groups)")
    if p.down_dims and p.denoiser in ("mamba2", "hydra") and any(d % 16 for d in p.down_dims):
        raise ConfigError(f"config key 'policy.down_dims': {p.denoiser} needs multiples of 16 (2*dim split into "
                          f"heads of 32), got {p.down_dims}")
    if p.kernel_size % 2 == 0:
        raise ConfigError(f"config key 'policy.kernel_size': must be odd (same-length conv), got {p.kernel_size}")
    if cfg.train.val_every_steps and not cfg.data.val_path:
        raise ConfigError(f"config key 'train.val_every_steps': {cfg.train.val_every_steps} needs data.val_path "
                          "(a dataset of held-out demos), which is empty")
    if p.inference_steps > p.diffusion_steps:
        raise ConfigError(f"config key 'policy.inference_steps': {p.inference_steps} exceeds "
                          f"policy.diffusion_steps={p.diffusion_steps}")
