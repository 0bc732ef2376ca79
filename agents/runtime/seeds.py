"""Per-episode seeds of the dataset generators and evaluations (navigation, manipulation)."""
from __future__ import annotations

import numpy as np


def episode_seed(seed: int, episode: int, attempt: int = 0) -> int:
    """Independent 32-bit seed for (dataset or eval seed, episode index, attempt), from
    ``np.random.SeedSequence([seed, episode, attempt])``. Attempt 0 gives the same seed as
    ``SeedSequence([seed, episode])`` (trailing zeros do not change a SeedSequence), so the
    navigation datasets written before attempts existed keep their seeds."""
    return int(np.random.SeedSequence([int(seed), int(episode), int(attempt)]).generate_state(1)[0])


__all__ = ["episode_seed"]
