"""``make_memory``: one factory for every memory kind, all with the same contract.

>>> mem = make_memory("mamba2", input_size=64, hidden_size=128, num_layers=2,
...                   in_key="embed", out_key="memory")
>>> env = env.append_transform(mem.make_tensordict_primer())   # env has InitTracker()

Kinds, their options (defaults) and state keys (per sample, with L = num_layers):

=============  =======================================================  ==========================================
kind           options                                                  state keys and shapes
=============  =======================================================  ==========================================
mamba1         d_state=16, d_conv=4, expand=2, dt_rank="auto",          {state_key}_conv [L, expand*H, d_conv-1]
               chunk_size=16, scan="chunked", use_kernels="auto"        {state_key}_ssm  [L, expand*H, d_state]
mamba2         d_state=64, d_conv=4, expand=2, headdim=32, ngroups=1,   {state_key}_conv [L, expand*H + 2*ngroups*d_state, d_conv-1]
               chunk_size=64, scan="chunked", use_kernels="auto"        {state_key}_ssm  [L, expand*H/headdim, headdim, d_state]
gru            recurrent_backend="pad"                                  {state_key}      [L, H]
lstm           recurrent_backend="pad"                                  {state_key}_h, {state_key}_c  [L, H]
transformer    num_heads=4, context=32, ff_mult=4, block=64             {state_key}_window [L, context, H]; {state_key}_mask [context]
rmt            num_heads=4, num_mem_tokens=4, segment=16, ff_mult=4,    {state_key}_mem [M, H]; {state_key}_buf [segment, H];
               mem_at_end=True, read_mem_from_cache=False               {state_key}_pos [1]  (M = num_mem_tokens)
none           (none)                                                   (none)
=============  =======================================================  ==========================================

H = hidden_size. ``scan="reference"`` selects the step loop (the test oracle).
Every kind accepts ``state_key`` (default "recurrent_state"): give each memory of a
policy its own.
"""
from __future__ import annotations

from typing import Literal, get_args

from torch import nn

from networks.memory.attention import WindowedTransformer
from networks.memory.mamba import MambaStack
from networks.memory.rmt import RMT_DEFAULTS, RMTCore, check_rmt_options
from networks.memory.module import StatefulMemory
from networks.memory.rnn import FeedForwardMemory, GRUMemory, LSTMMemory

# the one list of memory kinds: config dataclasses annotate with MemoryKind, code iterates MEMORY_KINDS;
# tests/test_memory_errors.py checks both against KIND_OPTIONS (the registry below) and make_memory
MemoryKind = Literal["mamba1", "mamba2", "gru", "lstm", "transformer", "rmt", "none"]
MEMORY_KINDS: tuple[str, ...] = get_args(MemoryKind)

KIND_OPTIONS = {
    "mamba1": dict(d_state=16, d_conv=4, expand=2, dt_rank="auto", chunk_size=16,
                   scan="chunked", use_kernels="auto", dt_min=1e-3, dt_max=1e-1),
    "mamba2": dict(d_state=64, d_conv=4, expand=2, headdim=32, ngroups=1, chunk_size=64,
                   scan="chunked", use_kernels="auto", dt_min=1e-3, dt_max=1e-1),
    "gru": dict(recurrent_backend="pad"),
    "lstm": dict(recurrent_backend="pad"),
    "transformer": dict(num_heads=4, context=32, ff_mult=4, block=64),
    "rmt": dict(RMT_DEFAULTS),
    "none": {},
}
_POSITIVE_INTS = ("d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size",
                  "num_heads", "context", "ff_mult", "block")
_CHOICES = {"scan": ("chunked", "reference"), "use_kernels": ("auto", True, False),
            "recurrent_backend": ("pad", "scan", "auto")}


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _validate(kind: str, input_size, hidden_size, num_layers, options: dict) -> dict:
    if kind not in MEMORY_KINDS:
        raise ValueError(f"unknown memory kind {kind!r}; allowed: {', '.join(MEMORY_KINDS)}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers)):
        _positive_int(name, value)
    allowed = KIND_OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for memory kind {kind!r}; "
                         f"allowed: {sorted(allowed) or 'none'}")
    opts = {**allowed, **options}
    for name, value in opts.items():
        if name in _POSITIVE_INTS:
            _positive_int(name, value)
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"{name} must be one of {_CHOICES[name]}, got {value!r}")
    if kind in ("mamba1", "mamba2") and opts["d_conv"] < 2:
        raise ValueError(f"d_conv must be >= 2 (the conv state keeps d_conv-1 steps), got {opts['d_conv']}")
    if kind == "mamba1" and opts["dt_rank"] != "auto":
        _positive_int("dt_rank", opts["dt_rank"])
    if kind == "mamba2":
        d_inner = opts["expand"] * hidden_size
        if d_inner % opts["headdim"]:
            raise ValueError(f"mamba2: headdim={opts['headdim']} must divide d_inner = expand * "
                             f"hidden_size = {d_inner}; allowed headdim: "
                             f"{[d for d in range(1, d_inner + 1) if d_inner % d == 0]}")
        if (d_inner // opts["headdim"]) % opts["ngroups"]:
            raise ValueError(f"mamba2: ngroups={opts['ngroups']} must divide the number of heads "
                             f"{d_inner // opts['headdim']}")
    if kind == "rmt":
        check_rmt_options(hidden_size, **opts)
    if kind == "transformer" and hidden_size % opts["num_heads"]:
        raise ValueError(f"transformer: num_heads={opts['num_heads']} must divide "
                         f"hidden_size={hidden_size}")
    return opts


def make_memory(kind: str, input_size: int, hidden_size: int, num_layers: int = 1,
                in_key="embed", out_key="memory", state_key: str = "recurrent_state",
                **kind_options) -> nn.Module:
    """Build a memory module of ``kind`` (see the module docstring for kinds and options)."""
    opts = _validate(kind, input_size, hidden_size, num_layers, kind_options)
    keys = dict(in_key=in_key, out_key=out_key)
    if kind in ("mamba1", "mamba2"):
        core = MambaStack(kind, input_size, hidden_size, num_layers, **opts)
    elif kind == "transformer":
        core = WindowedTransformer(input_size, hidden_size, num_layers, **opts)
    elif kind == "rmt":
        core = RMTCore(input_size, hidden_size, num_layers, **opts)
    elif kind == "gru":
        return GRUMemory(input_size, hidden_size, num_layers, state_key=state_key, **keys, **opts)
    elif kind == "lstm":
        return LSTMMemory(input_size, hidden_size, num_layers, state_key=state_key, **keys, **opts)
    else:
        return FeedForwardMemory(input_size, hidden_size, num_layers, **keys)
    return StatefulMemory(core, input_size, state_key=state_key, kind=kind, **keys)


def memory_options(kind: str) -> dict:
    """The options (with defaults) that ``kind`` accepts; for config validation and --help."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"unknown memory kind {kind!r}; allowed: {', '.join(MEMORY_KINDS)}")
    return dict(KIND_OPTIONS[kind])


__all__ = ["make_memory", "memory_options", "MEMORY_KINDS", "MemoryKind"]
