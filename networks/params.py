"""Parameter counts: the one counter behind every agent's and benchmark's parameter report."""
from __future__ import annotations

from torch import nn


def count_parameters(*modules: nn.Module, trainable: bool = False) -> int:
    """Parameters of ``modules`` (each module's own parameters once; the modules' counts added),
    only those with requires_grad when ``trainable``."""
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad or not trainable)


def parameter_counts(parts: dict[str, nn.Module], trainable: bool = False) -> dict[str, int]:
    """{part: count, ..., "total": the parts' counts added}."""
    counts = {name: count_parameters(m, trainable=trainable) for name, m in parts.items()}
    return {**counts, "total": sum(counts.values())}


def parameter_table(parts: dict[str, nn.Module], trainable: bool = False) -> str:
    """``parameter_counts`` as aligned lines, one per part, then the total."""
    counts = parameter_counts(parts, trainable)
    width = max(map(len, counts))
    return "\n".join(f"{name:<{width}}  {n:>12,d}" for name, n in counts.items())


__all__ = ["count_parameters", "parameter_counts", "parameter_table"]
