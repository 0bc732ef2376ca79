"""Sequence mode's ("next", state) costs no per-step memory and still carries the final state.

Issue 22: writing a [B, T, state] tensor of zeros for every step but the last took half of
mamba2's sequence-mode time. The contract kept: the last step holds each row's final state
(a second chunk started from it continues the first exactly), and step_mdp still works.
"""
import pytest
import torch
from tensordict import TensorDict
from torch.profiler import ProfilerActivity, profile
from torchrl.envs.utils import step_mdp
from torchrl.modules import set_recurrent_mode

from networks.memory.parity import SMALL_OPTIONS
from networks import make_memory

# The kinds whose sequence mode is ours (StatefulMemory); gru/lstm are TorchRL's modules.
KINDS = ["mamba1", "mamba2", "transformer", "rmt"]


def build(kind):
    torch.manual_seed(0)
    return make_memory(kind, 5, 16, 2, **SMALL_OPTIONS.get(kind, {}))


def batch(memory, shape, gen):
    shapes = {k: tuple(s.shape) for k, s in memory.make_tensordict_primer().primers.items()}
    is_init = torch.rand(*shape, 1, generator=gen) < 0.2
    td = TensorDict({"embed": torch.randn(*shape, 5, generator=gen), "is_init": is_init}, list(shape))
    for k, s in shapes.items():
        v = torch.randn(*shape, *s, generator=gen)
        td.set(k, (v > 0).float() if k.endswith("_mask") else v)
    return td


@pytest.mark.parametrize("shape", [(3, 12), (2, 3, 12)], ids=["BT", "B1B2T"])
@pytest.mark.parametrize("kind", KINDS)
def test_next_state_is_a_view_of_the_final_state(kind, shape):
    memory = build(kind)
    td = batch(memory, shape, torch.Generator().manual_seed(0))
    with torch.no_grad(), set_recurrent_mode(True):
        memory(td)
    rows = torch.Size(shape[:-1]).numel()
    for key in memory.state_keys:
        s = td["next", key]
        assert s.shape[:len(shape)] == shape
        assert s.stride(len(shape) - 1) == 0, f"{key}: time dim must be stride 0 (not materialised)"
        per_row = s.select(len(shape) - 1, -1).numel() // rows * s.element_size()
        # One state per row is stored, not one per step (12x that here).
        assert s.untyped_storage().nbytes() <= rows * per_row, key


@pytest.mark.parametrize("kind", KINDS)
def test_last_next_state_continues_the_sequence_and_step_mdp_works(kind):
    """Chunk 1 then chunk 2 started from chunk 1's ("next", state)[:, -1] == one long call."""
    memory = build(kind)
    gen = torch.Generator().manual_seed(1)
    whole = batch(memory, (3, 14), gen)
    with torch.no_grad(), set_recurrent_mode(True):
        memory(whole)
        first = memory(whole[:, :8].clone())
        nxt = step_mdp(first, keep_other=False)             # TorchRL's next-step view
        second = whole[:, 8:].clone()
        for key in memory.state_keys:
            carried = nxt[key][:, -1]
            # Rows that start an episode at the chunk boundary ignore the carried state.
            second.set(key, carried[:, None].expand_as(second[key]).clone())
        memory(second)
    torch.testing.assert_close(torch.cat([first["memory"], second["memory"]], 1), whole["memory"],
                               atol=1e-5, rtol=1e-5)
    for key in memory.state_keys:
        torch.testing.assert_close(second["next", key][:, -1], whole["next", key][:, -1], atol=1e-5, rtol=1e-5)


def test_sequence_mode_allocates_no_per_step_state():
    """No allocation in the whole forward is as large as [B, T, ssm state] (the old zeros were).

    mamba1 with d_state=16, expand 2, hidden 16: the ssm state is 512 floats per step, 32x the
    output's 16, so the largest legitimate allocations (outputs, a chunk of the scan's states,
    [16, B, 32, 16]) stay well under B*T*512 floats at T=64.
    """
    torch.manual_seed(0)
    memory = make_memory("mamba1", 16, 16, 1, d_state=16)
    B, T = 4, 64
    td = TensorDict({"embed": torch.randn(B, T, 16), "is_init": torch.zeros(B, T, 1, dtype=torch.bool),
                     "recurrent_state_conv": torch.zeros(1, 1, 1, 32, 3).expand(B, T, 1, 32, 3),
                     "recurrent_state_ssm": torch.zeros(1, 1, 1, 32, 16).expand(B, T, 1, 32, 16)}, [B, T])
    per_step_bytes = B * T * 32 * 16 * 4
    with torch.no_grad(), set_recurrent_mode(True):
        memory(td)                                          # warm-up (lazy init, extension load)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            memory(td)
    allocs = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    assert allocs, "the profiler recorded no allocation: the check below would prove nothing"
    assert max(allocs) < per_step_bytes, f"an allocation of {max(allocs)} B >= [B, T, state] {per_step_bytes} B"
