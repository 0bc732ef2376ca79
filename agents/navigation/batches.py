"""Training batches for the navigation policies, drawn from a NavDataset (agents/navigation/data.py).

Two samplers over the same training episodes, each giving ``batch_size * chunk_len`` labelled
positions per step (an equal training budget for the two models):

``TrajectoryChunks`` (MambaViNT, truncated BPTT): ``batch_size`` streams; each walks one episode
from its first step in consecutive chunks of ``chunk_len`` steps, then moves to the next episode of
a shuffled epoch. Row b of batch n+1 continues row b of batch n, so the trainer hands the final
Mamba state of one chunk (detached) to the next. Episodes start at a chunk's first step
(``is_init``) and the tail of an episode's last chunk is padding (``valid`` false), so the cue at
the start of an episode and the junctions after it share a chunk's gradient whenever they are less
than ``chunk_len`` steps apart. Why by hand: TorchRL's SliceSampler draws independent slices,
and no TorchRL sampler hands batch row b the next slice of the trajectory it drew before.

``ContextWindows`` (ViNT): i.i.d. positions, each with the ``context`` frames that end at it
(ViNT's training sample), clamped to the episode's first frame as ViNT pads at episode starts.

Both return row indices into ``dataset.steps`` and are resumable (``state_dict``).
"""
from __future__ import annotations

import torch

from agents.runtime.config import ConfigError


def split_episodes(num_episodes: int, val_episodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ids, validation ids): the last ``val_episodes`` episodes are held out."""
    if not 0 <= val_episodes < num_episodes:
        raise ConfigError(f"data.val_episodes must be in [0, {num_episodes - 1}] for a dataset of "
                         f"{num_episodes} episodes, got {val_episodes}")
    ids = torch.arange(num_episodes)
    return ids[: num_episodes - val_episodes], ids[num_episodes - val_episodes:]


class TrajectoryChunks:
    def __init__(self, starts: torch.Tensor, lengths: torch.Tensor, episode_ids: torch.Tensor,
                 batch_size: int, chunk_len: int, seed: int = 0):
        if len(episode_ids) < batch_size:
            raise ConfigError(f"{len(episode_ids)} training episodes cannot fill {batch_size} streams: "
                             "lower train.batch_size or generate more episodes")
        self.starts, self.lengths, self.ids = starts.long(), lengths.long(), episode_ids.long()
        self.batch_size, self.chunk_len = batch_size, chunk_len
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.cursor = self._shuffle(), 0
        self.episode = torch.full((batch_size,), -1, dtype=torch.long)   # episode each stream is on
        self.offset = torch.zeros(batch_size, dtype=torch.long)          # its next step

    def _shuffle(self) -> torch.Tensor:
        return self.ids[torch.randperm(len(self.ids), generator=self.generator)]

    def _next_episode(self) -> int:
        if self.cursor == len(self.order):
            self.order, self.cursor = self._shuffle(), 0
        self.cursor += 1
        return int(self.order[self.cursor - 1])

    def sample(self) -> dict[str, torch.Tensor]:
        """rows [B, L] (padding repeats the episode's last row), is_init [B, L], valid [B, L]."""
        for b in range(self.batch_size):
            e = int(self.episode[b])
            if e < 0 or self.offset[b] >= self.lengths[e]:
                self.episode[b], self.offset[b] = self._next_episode(), 0
        t = self.offset[:, None] + torch.arange(self.chunk_len)                    # [B, L] step in episode
        length = self.lengths[self.episode][:, None]
        rows = self.starts[self.episode][:, None] + t.clamp(max=length - 1)
        is_init = t == 0
        valid = t < length
        self.offset += self.chunk_len
        return {"rows": rows, "is_init": is_init, "valid": valid}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "cursor": self.cursor,
                "episode": self.episode.clone(), "offset": self.offset.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.cursor = state["order"], int(state["cursor"])
        self.episode, self.offset = state["episode"].clone(), state["offset"].clone()


def context_rows(rows: torch.Tensor, episode_start: torch.Tensor, context: int, spacing: int = 1) -> torch.Tensor:
    """[..., context] rows of the frames ending at each row (oldest first), clamped to the episode start."""
    back = spacing * torch.arange(context - 1, -1, -1)
    return torch.maximum(rows[..., None] - back, episode_start[..., None])


class ContextWindows:
    def __init__(self, starts: torch.Tensor, lengths: torch.Tensor, episode_ids: torch.Tensor,
                 batch_size: int, context: int, spacing: int = 1, seed: int = 0):
        self.pool = torch.cat([torch.arange(int(starts[e]), int(starts[e] + lengths[e])) for e in episode_ids])
        self.episode_start = torch.cat([torch.full((int(lengths[e]),), int(starts[e])) for e in episode_ids])
        self.batch_size, self.context, self.spacing = batch_size, context, spacing
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> dict[str, torch.Tensor]:
        """rows [N] (the current frames) and context [N, context] (rows of the window)."""
        pick = torch.randint(len(self.pool), (self.batch_size,), generator=self.generator)
        rows = self.pool[pick]
        return {"rows": rows, "context": context_rows(rows, self.episode_start[pick], self.context, self.spacing)}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
