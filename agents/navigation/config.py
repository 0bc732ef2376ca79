"""Typed config of the navigation behaviour-cloning agent (``agents/bc_navigation.py``).

Defaults train MambaViNT on a depth-2 T-maze dataset; ``model.kind=vint`` is the ViNT baseline
with the same tokeniser, heads, optimiser and positions per step (``batch_size * chunk_len``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agents.runtime.config import RunConfig, field_spec


@dataclass
class DataConfig:
    path: str = field_spec("data/nav_depth2", help="dataset folder (bc_navigation.py generate --out DIR)")
    val_episodes: int = field_spec(16, min=0, help="last episodes held out for the validation loss")
    preload: bool = field_spec(True, help="copy the dataset to the training device once (else read the memmap)")


@dataclass
class ModelConfig:
    kind: Literal["vint", "mambavint"] = field_spec("mambavint", help="vint: 5-frame transformer baseline; "
                                                    "mambavint: Mamba history over the trajectory")
    dim: int = field_spec(128, min=16, help="token width")
    cnn_width: int = field_spec(32, min=8, help="image encoder base channels (must be a multiple of 8)")
    context: int = field_spec(5, min=1, max=32, help="vint: frames in the window (current included)")
    context_spacing: int = field_spec(1, min=1, help="vint: steps between context frames")
    transformer_layers: int = field_spec(4, min=1, max=12, help="vint: transformer layers")
    heads: int = field_spec(4, min=1, help="vint: attention heads")
    dropout: float = field_spec(0.1, min=0.0, max=0.9, help="vint: transformer dropout")
    memory_kind: Literal["mamba2", "mamba1", "gru", "lstm"] = field_spec("mamba2", help="mambavint: history memory")
    memory_layers: int = field_spec(2, min=1, max=8, help="mambavint: memory layers")


@dataclass
class TrainConfig:
    steps: int = field_spec(3000, min=1, help="gradient steps")
    batch_size: int = field_spec(8, min=1, help="trajectory streams (mambavint); vint samples "
                                 "batch_size * chunk_len i.i.d. windows, the same positions per step")
    chunk_len: int = field_spec(128, min=1, help="steps per chunk (truncated-BPTT length)")
    lr: float = field_spec(3e-4, min=0.0, max=1.0)
    weight_decay: float = field_spec(0.01, min=0.0)
    warmup_steps: int = field_spec(200, min=0)
    grad_clip: float = field_spec(1.0, min=0.0, help="max grad norm (0: off)")
    distance_weight: float = field_spec(0.1, min=0.0, help="weight of the temporal-distance loss")
    cue_weight: float = field_spec(0.0, min=0.0, help="auxiliary loss: classify the episode's cue from the "
                                   "policy's features at every step (0: off, the seed's MambaViNT)")
    waypoint_scale: float = field_spec(0.25, min=1e-3, help="metres per unit of waypoint output (~one step)")
    distance_scale: float = field_spec(100.0, min=1.0, help="steps per unit of distance output")
    log_every_steps: int = field_spec(50, min=1, help="gradient steps between log rows")
    val_every_steps: int = field_spec(500, min=1, help="gradient steps between validation losses on the "
                                      "held-out episodes")
    checkpoint_every_steps: int = field_spec(500, min=1, help="gradient steps between checkpoints")


@dataclass
class EvalConfig:
    episodes: int = field_spec(50, min=1, help="closed-loop episodes (cues balanced: episode i has cue i mod 2**depth)")
    seed: int = field_spec(1000, help="env seeds are episode_seed(seed, i): maps unseen in training when "
                                      "it differs from the dataset's seed")
    waypoint_index: int = field_spec(0, min=0, help="waypoint the controller drives to (0: the next step's pose)")
    max_steps: int = field_spec(0, min=0, help="step limit per episode (0: the dataset env's)")
    device: Literal["cpu", "cuda", "auto"] = field_spec("cpu", help="batch-1 control runs on this device")
    video: bool = field_spec(True, help="video of the first episode and a plot of trajectories")
    plot_episodes: int = field_spec(4, min=1, max=16)
    end_on_wrong_leaf: bool = field_spec(True, help="end an episode (unsuccessfully) when the robot enters a wrong "
                                         "leaf room, so success measures memory of the cue (false: it may turn "
                                         "back; direct success is reported either way)")


@dataclass
class Config(RunConfig):     # name, seed, device, run_root, logger (agents/runtime/config.py)
    name: str = field_spec("mambavint", help="run name (runs/bc_navigation/<name>-<time>)")
    device: Literal["auto", "cpu", "cuda"] = field_spec("auto", help="training device (auto: CUDA when present); "
                                                        "closed-loop eval uses eval.device")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # old name -> new name, read with a warning for one release (agents/runtime/config.py)
    RENAMED = {"train.log_every": "train.log_every_steps", "train.val_every": "train.val_every_steps",
               "train.checkpoint_every": "train.checkpoint_every_steps", "train.device": "device"}
