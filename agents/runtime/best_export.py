"""The best policy a run has evaluated so far, kept as a float16 export: RUN/export/best_float16.pt,
its eval in RUN/export/best.json.

Why: eval success swings by tens of points between evals of one RL run (the Forest TD3 runs: 80 ->
14 -> 54% and 0 -> 88 -> 70% at 20k/40k/60k env steps, benchmarks/results/td3_drone_forest_gpu_s1.md),
and a run keeps only its newest checkpoints, so the policy worth shipping is often one the run has
already deleted. SB3's EvalCallback keeps a ``best_model`` for the same reason; here it is the
acting export (agents/runtime/export.py: no optimiser, replay or RNG, ~2-3 MB), so it also travels
back from a GPU host inside the run's record. It is picked on the in-training evals' own episodes,
so its figure is optimistic: ``--eval`` it on held-out layouts before quoting it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from agents.runtime.atomic_io import torch_save_atomic, write_text_atomic
from agents.runtime.export import export_checkpoint

BEST_EXPORT, BEST_RECORD = "best_float16.pt", "best.json"


def is_better(result: dict, best: dict | None, key: str, tie: str) -> bool:
    """``result`` beats ``best`` on ``key``, or equals it and beats it on ``tie`` (None: nothing yet)."""
    return best is None or (result[key], result[tie]) > (best[key], best[tie])


def keep_best(run_path: Path, state: dict, result: dict, frame: int, best: dict | None, *,
              key: str = "success_rate", tie: str = "return") -> dict | None:
    """After an eval at ``frame`` with figures ``result``: if it beats ``best`` (the record this returned
    last time; a checkpoint carries it across resumes) on ``key`` (on ``tie`` alone where a task has no
    ``key``: return where there is no success rate), export ``state`` (config and ``model``: the
    acting weights) to RUN/export/best_float16.pt and its record to best.json, both atomically, and
    return the new record; else return ``best``. The export carries the record too (``best_eval``)."""
    key = key if key in result else tie
    if not is_better(result, best, key, tie):
        return best
    record = {"frame": int(frame), **{k: float(v) for k, v in result.items() if isinstance(v, (int, float))}}
    exported = export_checkpoint(state, f"{run_path} at frame {frame}", torch.float16)
    exported["best_eval"] = record
    dest = Path(run_path) / "export" / BEST_EXPORT
    torch_save_atomic(exported, dest)
    write_text_atomic(dest.with_name(BEST_RECORD), json.dumps(record, indent=1) + "\n")
    print(f"best eval so far ({key} {record[key]:.3f} at frame {frame}): its policy is {dest}", flush=True)
    return record
