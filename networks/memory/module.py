"""The memory contract: a TensorDict module with the interface of TorchRL's LSTMModule.

``StatefulMemory`` wraps a *core* ``nn.Module`` that knows the maths and exposes
    state_shapes() -> {name: per-sample shape}
    sequence(x [B, T, F], is_init [B, T] bool, states {name: [B, ...]}) -> (y, states)
    step(x [B, F], states) -> (y, states)          (states already zeroed on reset)
and adds what every memory kind shares: keys, reset handling, recurrent mode (TorchRL's
``set_recurrent_mode`` context manager), the env primer, and input validation.

Keys. in_keys = [input, "is_init", *state keys]; out_keys = [output, *("next", state)].
Step mode (default): any batch shape, one step per call; the state is zeroed where
``is_init`` is true, then advanced. Sequence mode (``with set_recurrent_mode(True)``):
the last batch dim is time; the state is read at t=0 and reset wherever ``is_init`` is
true (t=0 included), so rows may hold several episodes without padding. In sequence mode
("next", state) holds each row's final state at the last step; it is an expanded
(stride-0) view of that final state along time, so earlier steps repeat it rather than
holding their own per-step state (TorchRL's LSTMModule writes zeros there; neither
materialises per-step states, and only the last step's entry is meaningful). Writing into
it in place (``td["next", key][..] = ..``) is not supported: ``set`` a new tensor instead.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.data import Unbounded
from torchrl.modules import recurrent_mode as _global_recurrent_mode


def _primer_hint(key) -> str:
    return (f"state key {key!r} is missing from the input tensordict. Append the memory's "
            "primer to the environment so collectors carry the state: "
            "env.append_transform(memory.make_tensordict_primer()) "
            "(or torchrl.modules.utils.get_primers_from_module(policy))")


IS_INIT_HINT = ("key 'is_init' is missing from the input tensordict: add "
                "torchrl.envs.InitTracker() to the environment's transforms so episode "
                "starts reset the memory")


def check_input(td: TensorDictBase, key, size: int) -> torch.Tensor:
    if key not in td.keys(include_nested=True):
        raise KeyError(f"input key {key!r} is missing from the tensordict "
                       f"(present: {sorted(map(str, td.keys(include_nested=True)))})")
    x = td.get(key)
    if x.shape[-1] != size:
        raise ValueError(f"input key {key!r} must have last dimension input_size={size}, "
                         f"got shape {tuple(x.shape)}")
    return x


def get_is_init(td: TensorDictBase) -> torch.Tensor:
    if "is_init" not in td.keys():
        raise KeyError(IS_INIT_HINT)
    is_init = td.get("is_init")
    if is_init.shape == td.shape + (1,):
        is_init = is_init.squeeze(-1)
    if is_init.shape != td.shape:
        raise ValueError(f"'is_init' must have shape batch+(1,) = {tuple(td.shape) + (1,)}, "
                         f"got {tuple(is_init.shape)}")
    return is_init.bool()


class StatefulMemory(TensorDictModuleBase):
    def __init__(self, core: nn.Module, input_size: int, in_key="embed", out_key="memory",
                 state_key: str = "recurrent_state", kind: str = ""):
        super().__init__()
        self.core = core
        self.kind = kind
        self.input_size = input_size
        self.state_names = list(core.state_shapes())
        self.state_keys = [f"{state_key}_{name}" for name in self.state_names]
        self.in_keys = [in_key, "is_init", *self.state_keys]
        self.out_keys = [out_key, *[("next", k) for k in self.state_keys]]
        self._shapes = None  # per-sample state shapes as tuples, for _thin_step

    @property
    def recurrent_mode(self) -> bool:
        return bool(_global_recurrent_mode())

    def set_recurrent_mode(self, mode: bool = True):
        raise RuntimeError("use the context manager `with torchrl.modules.set_recurrent_mode(True):`"
                           " as for TorchRL's LSTMModule")

    def _dtype(self):
        return next(self.core.parameters()).dtype

    def make_tensordict_primer(self):
        """The TensorDictPrimer that puts zero state into the env's reset/step specs."""
        from torchrl.envs import TensorDictPrimer

        specs = {key: Unbounded(shape=shape, dtype=self._dtype())
                 for key, shape in zip(self.state_keys, self.core.state_shapes().values())}
        return TensorDictPrimer(specs, expand_specs=True)

    def _read_states(self, td: TensorDictBase) -> list[torch.Tensor]:
        states = []
        for key, shape in zip(self.state_keys, self.core.state_shapes().values()):
            if key not in td.keys():
                raise KeyError(_primer_hint(key))
            s = td.get(key)
            if s.shape != td.shape + tuple(shape):
                raise ValueError(f"state key {key!r} must have shape batch+{tuple(shape)} = "
                                 f"{tuple(td.shape) + tuple(shape)}, got {tuple(s.shape)}")
            states.append(s)
        return states

    def _thin_step(self, td: TensorDictBase):
        """Step mode with the validated path's checks as plain lookups (an acting step at batch 1
        is ~25 us of maths; key views and per-key membership tests cost several times that).
        Returns None on anything unusual, so forward's validated path raises its message."""
        shape = td.shape
        x, is_init = td.get(self.in_keys[0], None), td.get("is_init", None)
        if x is None or is_init is None or x.shape[-1] != self.input_size:
            return None
        if is_init.shape != shape:
            if is_init.shape != shape + (1,):
                return None
            is_init = is_init.squeeze(-1)
        if is_init.dtype != torch.bool:
            is_init = is_init.bool()
        if self._shapes is None:
            self._shapes = [tuple(s) for s in self.core.state_shapes().values()]
        flat, keep = {}, None
        for name, key, per in zip(self.state_names, self.state_keys, self._shapes):
            s = td.get(key, None)
            if s is None or s.shape != shape + per:
                return None
            s = s.reshape(-1, *per)
            if keep is None:
                # On the CPU a step without resets (almost every acting step) skips the masking;
                # on an accelerator the test would be a device sync, so it always masks there.
                keep = False if is_init.device.type == "cpu" and not is_init.any() else \
                    (~is_init.reshape(-1)).to(x.dtype)
            flat[name] = s if keep is False else s * keep.reshape(-1, *([1] * len(per)))
        y, new = self.core.step(x.reshape(-1, x.shape[-1]), flat)
        td.set(self.out_keys[0], y.reshape(*shape, y.shape[-1]))
        for name, key in zip(self.state_names, self.out_keys[1:]):
            td.set(key, new[name].reshape(*shape, *new[name].shape[1:]))
        return td

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if not self.recurrent_mode:
            out = self._thin_step(tensordict)
            if out is not None:
                return out
        x = check_input(tensordict, self.in_keys[0], self.input_size)
        is_init = get_is_init(tensordict)
        states = self._read_states(tensordict)
        shape = tensordict.shape
        names = self.state_names
        if self.recurrent_mode:
            if tensordict.ndim == 0:
                raise ValueError("sequence mode needs a time dimension: the tensordict's last "
                                 "batch dim is time, got a 0-d tensordict")
            T = shape[-1]
            x = x.reshape(-1, T, x.shape[-1])
            is_init = is_init.reshape(-1, T)
            first = {n: s.reshape(-1, T, *s.shape[len(shape):])[:, 0] for n, s in zip(names, states)}
            y, final = self.core.sequence(x, is_init, first)
            # ("next", state) is a stride-0 view of each row's final state over time: the last
            # step holds the true next state (what step_mdp and a consumer of the row's end read;
            # PPO's bootstrap reads the collected step-mode states, not these) and no
            # [*B, T, state] tensor is written. TorchRL's LSTMModule
            # materialises zeros at the earlier steps instead: 575 MB per call for mamba2 at
            # T=1024 (issue 22), half of sequence mode's time, for values no consumer uses.
            outs = [final[n].reshape(*shape[:-1], 1, *final[n].shape[1:])
                    .expand(*shape, *final[n].shape[1:]) for n in names]
        else:
            x = x.reshape(-1, x.shape[-1])
            keep = (~is_init.reshape(-1)).to(x.dtype)
            flat = {}
            for n, s in zip(names, states):
                s = s.reshape(-1, *s.shape[len(shape):])
                flat[n] = s * keep.reshape(-1, *([1] * (s.dim() - 1)))
            y, new = self.core.step(x, flat)
            outs = [new[n].reshape(*shape, *new[n].shape[1:]) for n in names]
        tensordict.set(self.out_keys[0], y.reshape(*shape, y.shape[-1]))
        for key, s in zip(self.out_keys[1:], outs):
            tensordict.set(key, s)
        return tensordict
