"""Stop a run whose loss went NaN/inf, naming what went wrong (every agent's trainer raises it;
the command line turns it into exit code 1 naming the last good checkpoint)."""
from __future__ import annotations

import math

import torch


class NonFiniteLoss(RuntimeError):
    """A loss became NaN/inf; ``detail`` holds the loss terms (and where known the step)."""

    def __init__(self, detail: dict[str, float]):
        super().__init__(f"non-finite loss {detail}")
        self.detail = detail


def check_finite(step: int, **losses: torch.Tensor) -> None:
    """Raise NonFiniteLoss naming ``step`` and every term when any loss term is not finite."""
    values = {k: float(v.detach()) for k, v in losses.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLoss({"step": step, **values})
