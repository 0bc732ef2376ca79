"""A TorchRL collector carries each memory kind's state through CartPole (velocities hidden).

Checks that the primer zeroes the state at every reset, that it is carried otherwise,
and that replaying the collected batch in sequence mode gives the collected outputs.
"""
import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import GymWrapper, InitTracker, SerialEnv, TransformedEnv
from torchrl.modules import OneHotCategorical, ProbabilisticActor, set_recurrent_mode

from networks import make_memory


class HideVelocities(gym.ObservationWrapper):
    """CartPole observing only cart position and pole angle (a POMDP)."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(env.observation_space.low[[0, 2]],
                                                env.observation_space.high[[0, 2]], dtype=np.float32)

    def observation(self, obs):
        return obs[[0, 2]].astype(np.float32)


def make_env():
    return GymWrapper(HideVelocities(gym.make("CartPole-v1")))


def make_policy(kind):
    torch.manual_seed(0)
    opts = {"mamba2": dict(headdim=8, d_state=8), "transformer": dict(context=6, num_heads=2),
            "rmt": dict(num_heads=2, num_mem_tokens=2, segment=4)}.get(kind, {})
    memory = make_memory(kind, input_size=2, hidden_size=16, num_layers=2,
                         in_key="observation", out_key="memory", **opts)
    head = TensorDictModule(nn.Linear(16, 2), in_keys=["memory"], out_keys=["logits"])
    actor = ProbabilisticActor(head, in_keys=["logits"], out_keys=["action"],
                               distribution_class=OneHotCategorical, return_log_prob=True)
    return memory, TensorDictSequential(memory, actor)


@pytest.mark.parametrize("kind", ["mamba1", "mamba2", "gru", "lstm", "transformer", "rmt"])
def test_collector_carries_and_resets_state(kind):
    memory, policy = make_policy(kind)
    env = TransformedEnv(SerialEnv(2, make_env), InitTracker())
    env.append_transform(memory.make_tensordict_primer())
    env.set_seed(0)
    collector = Collector(env, policy, frames_per_batch=160, total_frames=160)
    data = next(iter(collector))
    collector.shutdown()
    assert data.shape == (2, 80)
    is_init = data["is_init"].squeeze(-1)
    assert is_init[:, 1:].any(), "CartPole with a random policy should end episodes inside the batch"
    for key in memory.state_keys:
        state = data[key]
        flat = state.flatten(2)
        assert (flat[is_init] == 0).all(), f"{key} must be zero at every episode start"
        carried = ~is_init[:, 1:]
        torch.testing.assert_close(state[:, 1:][carried], data["next", key][:, :-1][carried])
        assert flat[:, 1:][carried].abs().sum(-1).gt(0).all(), f"{key} must be carried, not re-zeroed"

    replay = data.select(*memory.in_keys).clone()
    with torch.no_grad(), set_recurrent_mode(True):
        memory(replay)
    torch.testing.assert_close(replay["memory"], data["memory"], atol=1e-5, rtol=1e-5)


def test_missing_primer_fails_in_the_collector_with_a_message():
    memory, policy = make_policy("mamba2")
    env = TransformedEnv(make_env(), InitTracker())  # no primer
    with pytest.raises(KeyError, match="make_tensordict_primer"):
        policy(env.reset())
