"""The memory contract's invariant, checked over random episode-reset patterns.

For a batch of trajectories with resets at random steps (and a random carried state at
t=0, which rows that do not start an episode must use), stepping one step at a time
must give the same outputs, final state and parameter/input gradients as one
sequence-mode call. States handed in at reset steps are random garbage, so a kind that
fails to reset fails here. A difference is measured relative to the size of the value
compared, ``max|a-b| / max(1, max|a|)``: parameter gradients sum over every step and
reach ~10-100, where float32 rounding alone is ~1e-5 in absolute terms.

The harness lives with the contract it checks (tests/test_memory_parity.py runs it); the
command line is benchmarks/parity.py:

    python -m benchmarks.parity --patterns 1000            # every kind, float64
    python -m benchmarks.parity --kinds mamba2 --dtype float32
"""
from __future__ import annotations

import time

import torch
from tensordict import TensorDict
from torchrl.modules import set_recurrent_mode

from networks.memory.factory import make_memory

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
# Small sizes keep 1000 patterns fast; chunk/block sizes below T exercise the chunking.
SMALL_OPTIONS = {"mamba1": dict(chunk_size=4, d_state=4), "mamba2": dict(chunk_size=4, d_state=8, headdim=8),
                 "transformer": dict(context=5, block=4, num_heads=2),
                 "rmt": dict(segment=4, num_mem_tokens=2, num_heads=2)}


def build(kind: str, input_size=5, hidden_size=16, num_layers=2, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return make_memory(kind, input_size, hidden_size, num_layers, **SMALL_OPTIONS.get(kind, {})).to(dtype)


def state_shapes(memory) -> dict:
    return {k: tuple(s.shape) for k, s in memory.make_tensordict_primer().primers.items()}


def random_pattern(B: int, T: int, input_size: int, shapes: dict, dtype, gen: torch.Generator, reset_p: float):
    x = torch.randn(B, T, input_size, generator=gen, dtype=dtype)
    is_init = torch.rand(B, T, 1, generator=gen) < reset_p
    is_init[:, 0] |= torch.rand(B, 1, generator=gen) < 0.5  # some rows carry a state in
    garbage = {k: torch.randn(B, T, *s, generator=gen, dtype=dtype) for k, s in shapes.items()}
    for k, s in garbage.items():  # mask-like states hold 0/1 values
        if k.endswith("_mask"):
            garbage[k] = (s > 0).to(dtype)
    return x, is_init, garbage


def _run_steps(memory, x, is_init, garbage):
    """Step mode, as a collector runs it. Returns outputs [B,T,H], stored inputs, final state."""
    B, T = is_init.shape[:2]
    state = {k: v[:, 0] for k, v in garbage.items()}
    outs, stored = [], {k: [] for k in garbage}
    for t in range(T):
        for k in garbage:  # at a reset the incoming state is garbage: it must be ignored
            state[k] = torch.where(is_init[:, t].reshape(B, *[1] * (state[k].dim() - 1)), garbage[k][:, t], state[k])
            stored[k].append(state[k])
        td = TensorDict({memory.in_keys[0]: x[:, t], "is_init": is_init[:, t], **state}, [B])
        memory(td)
        outs.append(td[memory.out_keys[0]])
        state = {k: td["next", k] for k in garbage}
    # Stored states are data for the sequence call (as in a replay buffer): no graph.
    return torch.stack(outs, 1), {k: torch.stack(v, 1).detach() for k, v in stored.items()}, state


def check(memory, B: int, T: int, gen: torch.Generator, reset_p: float = 0.2) -> float:
    """Largest scaled difference (outputs, final states, gradients) between the two modes."""
    dtype = next(memory.parameters()).dtype
    shapes = state_shapes(memory)  # {} for kind none (empty primer)
    x, is_init, garbage = random_pattern(B, T, memory.input_size, shapes, dtype, gen, reset_p)
    params = list(memory.parameters())
    x1 = x.clone().requires_grad_()
    y1, stored, final1 = _run_steps(memory, x1, is_init, garbage)
    w = torch.randn(y1.shape, generator=gen, dtype=dtype)
    g1 = torch.autograd.grad((y1 * w).sum(), [x1, *params], allow_unused=True)

    x2 = x.clone().requires_grad_()
    td = TensorDict({memory.in_keys[0]: x2, "is_init": is_init, **stored}, [B, T])
    with set_recurrent_mode(True):
        memory(td)
    y2 = td[memory.out_keys[0]]
    g2 = torch.autograd.grad((y2 * w).sum(), [x2, *params], allow_unused=True)

    pairs = [(y1, y2)] + [(final1[k], td["next", k][:, -1]) for k in garbage]
    pairs += [(a, b) for a, b in zip(g1, g2) if a is not None or b is not None]
    return max(_difference(a, b) for a, b in pairs)


def _difference(a, b) -> float:
    if a is None or b is None:  # a gradient that exists in one mode only is a failure
        return float("inf")
    return ((a - b).abs().max() / a.abs().max().clamp(min=1)).item()


def run(kinds, patterns: int, dtype, seed: int = 0, verbose: bool = True) -> dict:
    """Returns {kind: (failures, worst difference)}; a failure exceeds TOLERANCE[dtype]."""
    results = {}
    for kind in kinds:
        memory = build(kind, dtype=dtype, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        fails, worst, t0 = 0, 0.0, time.time()
        for i in range(patterns):
            B = int(torch.randint(1, 5, (1,), generator=gen))
            T = int(torch.randint(1, 14, (1,), generator=gen))
            reset_p = float(torch.rand(1, generator=gen)) * 0.5
            d = check(memory, B, T, gen, reset_p)
            worst = max(worst, d)
            fails += d > TOLERANCE[dtype]
        results[kind] = (fails, worst)
        if verbose:
            print(f"{kind:12s} patterns={patterns} failures={fails} worst={worst:.2e} "
                  f"tol={TOLERANCE[dtype]:.0e} ({time.time() - t0:.1f}s)", flush=True)
    return results
