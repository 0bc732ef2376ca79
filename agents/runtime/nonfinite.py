"""Stop a run whose loss went NaN/inf, naming what went wrong: the one NaN/inf path of every
trainer (PPO, TD3, both BC agents). ``check_finite`` raises NonFiniteLoss; a trainer that holds
resources (a collector, a progress bar) releases them and re-raises it with the frame
(``err.at(frame=...)``); agents/runtime/cli.run_agent turns it into exit code 1 naming the last
good checkpoint."""
from __future__ import annotations

import torch


class NonFiniteLoss(RuntimeError):
    """A loss became NaN/inf; ``detail`` holds the loss terms (and where known the step)."""

    def __init__(self, detail: dict[str, float]):
        super().__init__(f"non-finite loss {detail}")
        self.detail = detail

    def at(self, **where) -> "NonFiniteLoss":
        """The same error with ``where`` (say frame=...) first in its detail."""
        return NonFiniteLoss({**where, **self.detail})


def check_finite(step: int | None = None, **losses) -> None:
    """Raise NonFiniteLoss naming ``step`` (when given) and every term when any loss term is NaN
    or inf. One host sync however many terms (tensors on one device)."""
    tensors = [torch.as_tensor(v).detach() for v in losses.values()]
    if len({t.device for t in tensors}) == 1:
        finite = bool(torch.stack([t.isfinite().all() for t in tensors]).all())
    else:
        finite = all(bool(t.isfinite().all()) for t in tensors)
    if not finite:
        values = {k: float(t) for k, t in zip(losses, tensors)}
        raise NonFiniteLoss(values if step is None else {"step": step, **values})
