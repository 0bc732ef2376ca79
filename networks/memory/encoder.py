"""Window encoder for vector observations: obs [*B, K, obs_dim] -> feature [*B, hidden].

Linear embedding -> ``make_memory(kind)`` in sequence mode over the K-step window, from a
fresh (zero) state with ``is_init`` at the window's first step -> the last step's output.
It goes through the memory's TensorDict contract, so every kind (mamba1, mamba2, gru,
lstm, transformer, rmt, none) plugs in unchanged. Used by the TD3 agent's POMDP proof
(Pendulum with velocities hidden) in the place of the drone's VMamba encoder.
"""
from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn
from torchrl.modules import set_recurrent_mode

from networks.memory.factory import make_memory


class MemorySequenceEncoder(nn.Module):
    def __init__(self, obs_dim: int, kind: str = "mamba1", hidden_size: int = 64, num_layers: int = 1,
                 **memory_options):
        super().__init__()
        self.obs_dim, self.d_model = obs_dim, hidden_size
        self.embed = nn.Sequential(nn.Linear(obs_dim, hidden_size), nn.Tanh())
        self.memory = make_memory(kind, hidden_size, hidden_size, num_layers, **memory_options)
        self._shapes = {k: tuple(v.shape) for k, v in self.memory.make_tensordict_primer().primers.items()}

    def forward(self, obs):                                     # [*B, K, obs_dim]
        if obs.dim() < 2 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"expected obs [*B, K, {self.obs_dim}], got {list(obs.shape)}")
        batch, K = obs.shape[:-2], obs.shape[-2]
        x = self.embed(obs.reshape(-1, K, self.obs_dim))        # [N, K, H]
        N = x.shape[0]
        is_init = torch.zeros(N, K, 1, dtype=torch.bool, device=x.device)
        is_init[:, 0] = True
        td = TensorDict({"embed": x, "is_init": is_init}, [N, K])
        for key, shape in self._shapes.items():
            td.set(key, x.new_zeros(N, K, *shape))
        with set_recurrent_mode(True):
            y = self.memory(td)["memory"][:, -1]                # [N, H]: has read the whole window
        return y.reshape(*batch, self.d_model)
