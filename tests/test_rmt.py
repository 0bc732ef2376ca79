"""Kind ``rmt`` (networks/memory/rmt.py): the Recurrent Memory Transformer core.

Step == sequence (outputs, final state, gradients) through the TensorDict contract with
resets anywhere and carried states, for every layout option; gradients cross segment
boundaries (the memory is trained); a reset cuts all information; option validation.
"""
import itertools

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules import set_recurrent_mode

from networks.memory import parity
from networks.memory.module import StatefulMemory
from networks.memory.rmt import RMT_DEFAULTS, RMTCore, check_rmt_options

LAYOUTS = list(itertools.product([True, False], [False, True]))  # (mem_at_end, read_mem_from_cache)
LAYOUT_IDS = [f"end={e}-cache={c}" for e, c in LAYOUTS]
SMALL = dict(num_heads=2, num_mem_tokens=2, segment=3)


def make_core(mem_at_end=True, read_mem_from_cache=False, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    opts = {**SMALL, **kw}
    return RMTCore(5, 16, 2, mem_at_end=mem_at_end, read_mem_from_cache=read_mem_from_cache, **opts).to(dtype)


def make_memory(*args, **kw):
    return StatefulMemory(make_core(*args, **kw), 5, in_key="embed", out_key="memory", kind="rmt")


def fresh_state(core, B, dtype=torch.float64):
    return {k: torch.zeros(B, *s, dtype=dtype) for k, s in core.state_shapes().items()}


def run_steps(core, x, is_init, state):
    """Step mode as StatefulMemory runs it: zero the state where is_init, then step."""
    ys = []
    for t in range(x.shape[1]):
        keep = ~is_init[:, t]
        state = {k: v * keep.reshape(-1, *[1] * (v.dim() - 1)).to(v.dtype) for k, v in state.items()}
        y, state = core.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


# -- parity -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mem_at_end, cache", LAYOUTS, ids=LAYOUT_IDS)
def test_tensordict_step_equals_sequence_with_random_resets(mem_at_end, cache, dtype):
    """The project's parity harness (garbage states at resets, random carried states,
    outputs + final states + input/parameter gradients), with T up to 5 segments."""
    memory = make_memory(mem_at_end, cache, dtype)
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(25):
        B = int(torch.randint(1, 5, (1,), generator=gen))
        T = int(torch.randint(1, 16, (1,), generator=gen))
        worst = max(worst, parity.check(memory, B, T, gen, float(torch.rand(1, generator=gen)) * 0.5))
    assert worst < parity.TOLERANCE[dtype], worst


@pytest.mark.parametrize("mem_at_end, cache", LAYOUTS, ids=LAYOUT_IDS)
def test_core_parity_long_rows_from_a_real_carried_state(mem_at_end, cache):
    """States carried in mid-segment (every offset 0..segment-1), long rows (many segments,
    several episodes per row, resets mid-segment and at boundaries), gradients included."""
    core = make_core(mem_at_end, cache, segment=4)
    gen = torch.Generator().manual_seed(2)
    B, T0, T = 6, 7, 30
    x0 = torch.randn(B, T0, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():  # a realistic carried state: rows stopped at different offsets
        state = fresh_state(core, B)
        for t in range(T0):
            y, new = core.step(x0[:, t], state)
            go = (torch.arange(B) <= t)[:, None]  # row b has seen b+1 steps (or all T0)
            state = {k: torch.where(go.reshape(B, *[1] * (v.dim() - 1)), new[k], v) for k, v in state.items()}
    assert set(state["pos"][:, 0].tolist()) >= {1.0, 2.0, 3.0, 4.0}  # every offset occurs
    x = torch.randn(B, T, 5, generator=gen, dtype=torch.float64)
    is_init = torch.rand(B, T, generator=gen) < 0.12
    is_init[1, 4] = is_init[2, 8] = True  # mid-segment and on a boundary
    is_init[0] = False  # one row never resets: one chain of ~8 segments
    w = torch.randn(B, T, 16, generator=gen, dtype=torch.float64)

    params = list(core.parameters())
    x1 = x.clone().requires_grad_()
    y1, s1 = run_steps(core, x1, is_init, state)
    g1 = torch.autograd.grad((y1 * w).sum(), [x1, *params])
    x2 = x.clone().requires_grad_()
    y2, s2 = core.sequence(x2, is_init, state)
    g2 = torch.autograd.grad((y2 * w).sum(), [x2, *params])
    torch.testing.assert_close(y2, y1, atol=1e-10, rtol=0)
    for k in s1:
        torch.testing.assert_close(s2[k], s1[k], atol=1e-10, rtol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


def test_zero_state_is_fresh_and_carried_state_is_never_zero():
    """The primer's zeros mean 'fresh' (learned initial memory); after any step every
    state key holds something (the collector test checks carried states are non-zero)."""
    core = make_core(segment=3)
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    zeros = fresh_state(core, 4)
    garbage = {k: torch.randn_like(v) for k, v in zeros.items()}
    reset_at_0 = torch.zeros(4, 7, dtype=torch.bool)
    reset_at_0[:, 0] = True
    y_fresh, _ = core.sequence(x, torch.zeros_like(reset_at_0), zeros)
    y_reset, _ = core.sequence(x, reset_at_0, garbage)
    torch.testing.assert_close(y_fresh, y_reset, atol=0, rtol=0)
    state = zeros
    for t in range(7):
        y, state = core.step(x[:, t], state)
        if t == 0:
            torch.testing.assert_close(state["mem"], core.mem_init.expand(4, -1, -1))
        assert all(v.flatten(1).abs().sum(1).gt(0).all() for v in state.values())
    assert state["pos"][:, 0].tolist() == [2.0] * 4  # 7 steps = 2 segments + 1 step buffered


# -- the memory learns across segments; resets cut ---------------------------------------------
@pytest.mark.parametrize("mem_at_end, cache", LAYOUTS, ids=LAYOUT_IDS)
def test_gradient_flows_across_segments_to_the_initial_memory(mem_at_end, cache):
    core = make_core(mem_at_end, cache, segment=4)
    x = torch.randn(2, 12, 5, dtype=torch.float64, requires_grad=True)
    y, _ = core.sequence(x, torch.zeros(2, 12, dtype=torch.bool), fresh_state(core, 2))
    w = torch.randn_like(y)
    gx, gmem = torch.autograd.grad((y[:, 8:] * w[:, 8:]).sum(), [x, core.mem_init])  # last segment only
    assert gx[:, :4].abs().amin(-1).gt(0).all(), "first segment's inputs must reach the third's outputs"
    assert gx[:, 4:8].abs().amin(-1).gt(0).all()
    assert gmem.abs().gt(0).all(), "the learned initial memory must be trained"


@pytest.mark.parametrize("mem_at_end, cache", LAYOUTS, ids=LAYOUT_IDS)
def test_reset_cuts_information(mem_at_end, cache):
    core = make_core(mem_at_end, cache, segment=4)
    B, T, r = 3, 14, 6  # reset mid-segment (steps 4..5 are a partial segment)
    x = torch.randn(B, T, 5, dtype=torch.float64, requires_grad=True)
    is_init = torch.zeros(B, T, dtype=torch.bool)
    is_init[:, r] = True
    state = {k: torch.randn(B, *s, dtype=torch.float64) for k, s in core.state_shapes().items()}
    state["pos"] = torch.full((B, 1), 3.0, dtype=torch.float64)  # carried, 2 steps buffered
    y, final = core.sequence(x, is_init, state)
    (g,) = torch.autograd.grad(y[:, r:].sum() + sum(v.sum() for v in final.values()), [x])
    assert (g[:, :r] == 0).all() and g[:, r:].abs().gt(0).any()
    x2 = x.detach().clone()
    x2[:, :r] = torch.randn(B, r, 5, dtype=torch.float64)
    other = {k: torch.randn_like(v) for k, v in state.items()}  # a different carried state too
    y2, final2 = core.sequence(x2, is_init, other)
    torch.testing.assert_close(y2[:, r:], y[:, r:], atol=0, rtol=0)
    assert not torch.allclose(y2[:, :r], y[:, :r])
    for k in final:
        torch.testing.assert_close(final2[k], final[k], atol=0, rtol=0)
    y3, _ = run_steps(core, x2, is_init, other)  # the same in step mode
    torch.testing.assert_close(y3[:, r:], y[:, r:], atol=1e-12, rtol=0)


def test_outputs_are_causal_inside_a_segment():
    core = make_core(segment=8)
    x = torch.randn(2, 8, 5, dtype=torch.float64)
    no_reset = torch.zeros(2, 8, dtype=torch.bool)
    y, _ = core.sequence(x, no_reset, fresh_state(core, 2))
    x2 = x.clone()
    x2[:, 5:] += 1.0
    y2, _ = core.sequence(x2, no_reset, fresh_state(core, 2))
    torch.testing.assert_close(y2[:, :5], y[:, :5], atol=0, rtol=0)
    assert not torch.allclose(y2[:, 5:], y[:, 5:])


@pytest.mark.parametrize("detach", [False, True], ids=["bptt", "detached-control"])
def test_memory_learns_to_recall_across_a_segment_boundary(detach, monkeypatch):
    """A bit seen at t=0 must be reported at the last step, 2 segments later: only the
    memory tokens can carry it, so this trains only if gradients cross segments. The
    control detaches the written memory (as the seed's RMT effectively did) and fails."""
    if detach:
        real = RMTCore._segments
        monkeypatch.setattr(RMTCore, "_segments", lambda self, *a: (lambda y, w: (y, w.detach()))(*real(self, *a)))
    torch.manual_seed(0)
    core = RMTCore(2, 16, 1, num_heads=2, num_mem_tokens=2, segment=3)
    head = torch.nn.Linear(16, 1)
    opt = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=3e-3)
    B, T = 64, 7
    for _ in range(150):
        bit = torch.randint(0, 2, (B,)).float()
        x = torch.randn(B, T, 2) * 0.5
        x[:, 0, 0] = bit * 2 - 1
        y, _ = core.sequence(x, torch.zeros(B, T, dtype=torch.bool), fresh_state(core, B, torch.float32))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(y[:, -1])[:, 0], bit)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if detach:
        assert loss.item() > 0.3, loss.item()  # chance level is 0.69
    else:
        assert loss.item() < 0.1, loss.item()


# -- TensorDict contract ----------------------------------------------------------------
def test_tensordict_contract_keys_primer_and_batch_shapes():
    memory = make_memory()
    assert memory.in_keys == ["embed", "is_init", "recurrent_state_mem", "recurrent_state_buf",
                              "recurrent_state_pos"]
    assert memory.out_keys[1:] == [("next", k) for k in memory.in_keys[2:]]
    primer = memory.make_tensordict_primer()
    shapes = {k: tuple(s.shape) for k, s in primer.primers.items()}
    assert shapes == {"recurrent_state_mem": (2, 16), "recurrent_state_buf": (3, 16), "recurrent_state_pos": (1,)}
    # step mode with a 2-d batch, then the same data as one sequence call
    B, T = (2, 3), 5
    x = torch.randn(*B, T, 5, dtype=torch.float64)
    is_init = torch.zeros(*B, T, 1, dtype=torch.bool)
    is_init[..., 0, :] = True
    is_init[0, 1, 3] = True
    state = {k: torch.zeros(*B, *s, dtype=torch.float64) for k, s in shapes.items()}
    outs, stored = [], []
    for t in range(T):
        td = TensorDict({"embed": x[..., t, :], "is_init": is_init[..., t, :], **state}, list(B))
        stored.append(td.select(*memory.in_keys[2:]).clone())
        memory(td)
        outs.append(td["memory"])
        state = {k: td["next", k] for k in shapes}
    td = TensorDict({"embed": x, "is_init": is_init, **torch.stack(stored, -1).to_dict()}, [*B, T])
    with set_recurrent_mode(True):
        memory(td)
    torch.testing.assert_close(td["memory"], torch.stack(outs, -2), atol=1e-10, rtol=0)
    for k in shapes:  # final state at the last step
        torch.testing.assert_close(td["next", k][:, :, -1], state[k], atol=1e-10, rtol=0)


# The collector test for this kind is tests/test_collector.py (parametrised over every kind).


def test_defaults_match_the_constructor():
    import inspect

    sig = inspect.signature(RMTCore)
    assert {k: sig.parameters[k].default for k in RMT_DEFAULTS} == RMT_DEFAULTS
    core = RMTCore(8, 32, 1)
    assert core.state_shapes() == {"mem": (4, 32), "buf": (16, 32), "pos": (1,)}


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_heads=3), r"rmt: num_heads=3 must divide hidden_size=32"),
    (dict(num_mem_tokens=0), r"num_mem_tokens must be a positive integer, got 0"),
    (dict(segment=2.5), r"segment must be a positive integer, got 2.5"),
    (dict(ff_mult=True), r"ff_mult must be a positive integer, got True"),
    (dict(mem_at_end="yes"), r"mem_at_end must be True or False, got 'yes'"),
    (dict(read_mem_from_cache=1), r"read_mem_from_cache must be True or False, got 1"),
    (dict(mem_at_end=False, num_mem_tokens=8, segment=4),
     r"mem_at_end=False .* num_mem_tokens=8 must be <= segment=4"),
    (dict(num_layers=0), r"num_layers must be a positive integer, got 0"),
])
def test_invalid_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RMTCore(4, 32, **{"num_layers": 1, **kwargs})
    if "num_layers" not in kwargs:
        with pytest.raises(ValueError, match=match):
            check_rmt_options(32, **kwargs)
