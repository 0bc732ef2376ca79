"""Exports: the acting weights of a checkpoint, small (float16 matrices), for shipping a trained
policy or moving one off a GPU machine (written with agents.runtime.atomic_io.torch_save_atomic).
Every agent's ``export`` (BC subcommand, RL ``--export``) uses these."""
from __future__ import annotations

import torch

# checkpoint entries that only training needs (BC: optim, sched, sampler, ema, carried; PPO: the
# optimizer and the minibatch generator; TD3: optim_<net> per optimiser, the OU noise state and the
# replay folder's entry; all: rng)
TRAINING_ONLY = ("optim", "sched", "sampler", "rng", "ema", "carried", "optimizer", "minibatch_rng", "ou", "replay")
TRAINING_ONLY_PREFIXES = ("optim_",)


def export_checkpoint(state: dict, source: str, dtype: torch.dtype = torch.float16) -> dict:
    """A training checkpoint -> the acting checkpoint ``eval`` needs: config, task facts and the
    acting weights (``ema_model`` where the agent keeps an EMA, else ``model``), without optimiser,
    schedule, sampler or RNG state. Weight matrices and filters (>= 2 dims) are cast to ``dtype``;
    vectors (biases, norms, normaliser statistics) stay float32, they are few and they set the
    output scale. Loading casts back to the model's dtype. float16 acts close to, not exactly like,
    the original, and closed-loop episodes can diverge from it (float32 export is exact). For
    shipping a policy (or moving one off a GPU machine with a size limit on what comes back), not
    for resuming."""
    out = {k: v for k, v in state.items() if k not in TRAINING_ONLY and not k.startswith(TRAINING_ONLY_PREFIXES)}
    if "ema_model" in out:
        out.pop("model", None)

    # one cast per tensor: entries that share one (a TD3 encoder shared by actor and critic is in the
    # state dict under both) share the cast too, so torch.save writes it once
    done: dict = {}

    def cast(v):
        if isinstance(v, dict):
            return {k: cast(x) for k, x in v.items()}
        if torch.is_tensor(v) and v.is_floating_point() and v.dim() >= 2:
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
            if key not in done:
                done[key] = v.to(dtype)
            return done[key]
        return v

    weights = "ema_model" if "ema_model" in out else "model"
    if weights not in out:
        raise ValueError(f"{source}: the checkpoint holds no 'model' weights to export")
    out[weights] = cast(out[weights])
    out["exported"] = {"from": source, "dtype": str(dtype).removeprefix("torch.")}
    return out
