"""Optimiser parameter groups from a marker on the parameters, as upstream Mamba does.

mamba-ssm sets ``_no_weight_decay = True`` on A_log and D (and on Mamba2's dt_bias) and leaves
them out of weight decay: decay would pull log-decay rates, skip gains and step-size biases
towards 0, which is not regularisation but a change of the dynamics (A_log -> 0 means every
channel forgets at rate exp(-1) per unit step). Our mixers mark A_log, D and the dt bias
(Mamba1's dt_proj.bias, Mamba2's dt_bias); ``weight_decay_groups`` turns the marks into groups.
"""
from __future__ import annotations

from torch import nn


def no_weight_decay(*params: nn.Parameter) -> None:
    """Mark parameters that an optimiser must not decay (read by weight_decay_groups)."""
    for p in params:
        p._no_weight_decay = True


def weight_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """[{params: decayed, weight_decay}, {params: marked, weight_decay: 0}] over the trainable
    parameters of ``module``, each parameter once (shared ones are not repeated)."""
    decay, keep, seen = [], [], set()
    for p in module.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (keep if getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
