"""One source for each shared fact (issue "one house", item 3): the copies that were unified
behave as each of them did."""
import typing

import pytest

from agents.runtime.config import ConfigError, from_dict
from networks.memory.factory import KIND_OPTIONS, MEMORY_KINDS, MemoryKind, make_memory


# -- 1. memory kinds: networks.memory.factory.MemoryKind ------------------------------------------

def test_memory_kind_literal_is_the_registry():
    assert typing.get_args(MemoryKind) == tuple(MEMORY_KINDS) == tuple(KIND_OPTIONS)
    for kind in MEMORY_KINDS:   # every listed kind builds
        make_memory(kind, 4, 8, **({"headdim": 4} if kind == "mamba2" else
                                   {"num_heads": 2} if kind in ("transformer", "rmt") else {}))


@pytest.mark.parametrize("module, section", [("agents.quadruped.config", "ModelConfig"),
                                             ("agents.drone.config", "ModelConfig"),
                                             ("agents.pomdp.build", "ModelConfig")])
def test_agent_configs_take_every_memory_kind(module, section):
    import importlib
    cls = getattr(importlib.import_module(module), section)
    assert typing.get_type_hints(cls)["memory"] == MemoryKind
    for kind in MEMORY_KINDS:
        assert from_dict(cls, {"memory": kind}).memory == kind
    with pytest.raises(ConfigError, match="model.memory.*not one of.*'rmt'"):
        from_dict(cls, {"memory": "rnn"}, where="model")


def test_quadruped_builds_with_rmt():
    """rmt was missing from the quadruped's own list; its policy builds with it like any other kind."""
    from agents.quadruped.build import check_config
    from agents.quadruped.config import Config
    cfg = from_dict(Config, {"model": {"memory": "rmt", "memory_hidden": 32, "visual_dim": 32,
                                       "hidden_shapes": [32], "append_hidden_shapes": [32],
                                       "mamba_params": [[32, 4, 4, 1]]},
                             "env": {"image_size": 36, "frame_stack": 1, "num_envs": 2},
                             "train": {"frames_per_batch": 64},
                             "ppo": {"slice_len": 8, "minibatch_size": 32}})
    check_config(cfg)
