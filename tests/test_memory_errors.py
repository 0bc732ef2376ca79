"""Bad input raises an error that names the key or parameter and what is allowed."""
import sys

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules import set_recurrent_mode

from networks.memory.parity import state_shapes
from networks import MEMORY_KINDS, make_memory, memory_options

KINDS_WITH_STATE = [k for k in MEMORY_KINDS if k != "none"]
SMALL = {"mamba2": dict(headdim=4), "transformer": dict(num_heads=2)}


def small_memory(kind, **kwargs):
    return make_memory(kind, 4, 8, **{**SMALL.get(kind, {}), **kwargs})


def _td(memory, B=3, drop=(), **override):
    shapes = state_shapes(memory)
    data = {"embed": torch.randn(B, memory.input_size), "is_init": torch.zeros(B, 1, dtype=torch.bool),
            **{k: torch.zeros(B, *s) for k, s in shapes.items()}, **override}
    return TensorDict({k: v for k, v in data.items() if k not in drop}, [B])


@pytest.mark.parametrize("kind", KINDS_WITH_STATE)
def test_missing_primer_names_the_state_key(kind):
    memory = small_memory(kind)
    key = memory.state_keys[0]
    with pytest.raises(KeyError, match=rf"{key}.*make_tensordict_primer"):
        memory(_td(memory, drop=(key,)))


@pytest.mark.parametrize("kind", KINDS_WITH_STATE)
def test_missing_is_init_names_init_tracker(kind):
    memory = small_memory(kind)
    with pytest.raises(KeyError, match="is_init.*InitTracker"):
        memory(_td(memory, drop=("is_init",)))


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_wrong_input_key_is_named(kind):
    memory = small_memory(kind, in_key="features")
    with pytest.raises(KeyError, match="'features'"):
        memory(_td(memory))  # holds "embed", not "features"


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_wrong_input_width_names_key_and_size(kind):
    memory = small_memory(kind)
    with pytest.raises(ValueError, match=r"'embed'.*input_size=4.*\(3, 5\)"):
        memory(_td(memory, embed=torch.randn(3, 5)))


@pytest.mark.parametrize("kind", ["mamba1", "mamba2", "transformer"])
def test_wrong_state_shape_names_key_and_shape(kind):
    memory = small_memory(kind)
    key = memory.state_keys[0]
    with pytest.raises(ValueError, match=rf"state key '{key}' must have shape"):
        memory(_td(memory, **{key: torch.zeros(3, 1, 2)}))


def test_sequence_mode_needs_a_time_dimension():
    memory = make_memory("mamba1", 4, 8)
    td = _td(memory)[0]
    with set_recurrent_mode(True), pytest.raises(ValueError, match="time dimension"):
        memory(td)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="mamba3"), r"unknown memory kind 'mamba3'; allowed: mamba1, mamba2, gru, lstm, transformer, rmt, none"),
    (dict(kind="mamba1", d_state=0), r"d_state must be a positive integer, got 0"),
    (dict(kind="mamba2", d_state=-4), r"d_state must be a positive integer, got -4"),
    (dict(kind="mamba2", headdim=48), r"mamba2: headdim=48 must divide d_inner = expand \* hidden_size = 64; allowed headdim: \[1, 2, 4, 8, 16, 32, 64\]"),
    (dict(kind="mamba2", headdim=8, ngroups=3), r"ngroups=3 must divide the number of heads 8"),
    (dict(kind="mamba1", d_conv=1), r"d_conv must be >= 2"),
    (dict(kind="mamba1", headdim=8), r"unknown option\(s\) \['headdim'\] for memory kind 'mamba1'; allowed: \["),
    (dict(kind="transformer", num_heads=3), r"num_heads=3 must divide hidden_size=32"),
    (dict(kind="mamba1", scan="fast"), r"scan must be one of \('chunked', 'reference'\), got 'fast'"),
    (dict(kind="gru", hidden_size=0), r"hidden_size must be a positive integer, got 0"),
    (dict(kind="lstm", num_layers=1.5), r"num_layers must be a positive integer, got 1.5"),
    (dict(kind="none", context=3), r"unknown option\(s\) \['context'\] for memory kind 'none'; allowed: none"),
])
def test_invalid_configuration_is_named(kwargs, match):
    kwargs = {"input_size": 4, "hidden_size": 32, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_memory(**kwargs)


def test_memory_options_lists_defaults_and_rejects_unknown_kind():
    assert memory_options("mamba2")["headdim"] == 32
    with pytest.raises(ValueError, match="allowed: mamba1"):
        memory_options("s4")


def test_removed_module_level_recurrent_mode_setter_points_to_context_manager():
    memory = make_memory("mamba1", 4, 8)
    with pytest.raises(RuntimeError, match="set_recurrent_mode"):
        memory.set_recurrent_mode(True)


def test_import_and_cpu_use_never_touch_mamba_ssm():
    from networks.ssm import kernels

    memory = small_memory("mamba2")
    memory(_td(memory))
    assert "mamba_ssm" not in sys.modules
    assert kernels.wanted("auto", torch.zeros(1)) is False
    assert kernels._KERNELS is None  # CPU tensors never even try the import
