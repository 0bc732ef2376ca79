"""Kinds ``gru``/``lstm`` (TorchRL's own GRUModule/LSTMModule) and ``none``.

The RNN kinds subclass TorchRL's modules only to give them the same contract as the
Mamba kinds: a missing primer, a missing ``is_init`` or a wrong input width is an
error, never a silent zero; and in sequence mode the stored state is zeroed wherever
``is_init`` is true (TorchRL reads the stored state at every segment start, which is
zero in collected data but need not be in user data).
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.modules import GRUModule, LSTMModule

from networks.memory.module import _primer_hint, check_input, get_is_init


class _ContractMixin:
    kind = ""

    def _setup(self, input_size: int):
        self.input_size = input_size
        self.state_keys = [k for k in self.in_keys[1:] if k != "is_init"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        check_input(tensordict, self.in_keys[0], self.input_size)
        is_init = get_is_init(tensordict)
        td = tensordict.copy()  # shallow: zeroing states must not touch the caller's tensors
        for key in self.state_keys:
            if key not in tensordict.keys():
                raise KeyError(_primer_hint(key))
            if self.recurrent_mode:
                s = tensordict.get(key)
                keep = (~is_init).to(s.dtype).reshape(*is_init.shape, *([1] * (s.dim() - is_init.dim())))
                td.set(key, s * keep)
        out = super().forward(td)
        return tensordict.update(out.select(*self.out_keys))


def _keys(state_key: str, names: list[str], in_key, out_key):
    states = [state_key] if len(names) == 1 else [f"{state_key}_{n}" for n in names]
    return [in_key, *states, "is_init"], [out_key, *[("next", s) for s in states]]


class GRUMemory(_ContractMixin, GRUModule):
    """State: ``recurrent_state`` ``[num_layers, hidden]``."""

    kind = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, in_key="embed", out_key="memory",
                 state_key="recurrent_state", recurrent_backend="pad"):
        in_keys, out_keys = _keys(state_key, ["h"], in_key, out_key)
        super().__init__(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                         in_keys=in_keys, out_keys=out_keys, recurrent_backend=recurrent_backend)
        self._setup(input_size)


class LSTMMemory(_ContractMixin, LSTMModule):
    """State: ``recurrent_state_h`` and ``recurrent_state_c``, each ``[num_layers, hidden]``."""

    kind = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, in_key="embed", out_key="memory",
                 state_key="recurrent_state", recurrent_backend="pad"):
        in_keys, out_keys = _keys(state_key, ["h", "c"], in_key, out_key)
        super().__init__(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                         in_keys=in_keys, out_keys=out_keys, recurrent_backend=recurrent_backend)
        self._setup(input_size)


class FeedForwardMemory(TensorDictModuleBase):
    """Kind ``none``: no state. Linear -> num_layers residual MLP blocks -> LayerNorm.

    It keeps the memory interface (``make_tensordict_primer`` gives an empty primer) so
    configs can switch memory off without changing the rest of the policy.
    """

    kind = "none"

    def __init__(self, input_size, hidden_size, num_layers=1, in_key="embed", out_key="memory"):
        super().__init__()
        self.input_size = input_size
        self.in_keys, self.out_keys, self.state_keys = [in_key], [out_key], []
        self.in_proj = nn.Linear(input_size, hidden_size)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, 4 * hidden_size),
                          nn.GELU(), nn.Linear(4 * hidden_size, hidden_size))
            for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden_size)

    def make_tensordict_primer(self):
        from torchrl.envs import TensorDictPrimer

        return TensorDictPrimer({}, expand_specs=True)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        h = self.in_proj(check_input(tensordict, self.in_keys[0], self.input_size))
        for block in self.blocks:
            h = h + block(h)
        tensordict.set(self.out_keys[0], self.out_norm(h))
        return tensordict
