"""Classic-control tasks with velocities hidden (the pomdp-baselines "-V" tasks).

``mambazoo/PendulumNoVel-v0`` = gymnasium's Pendulum-v1 observing only (cos theta, sin theta):
the angular velocity must be inferred from history. Rewards are Pendulum-v1's, so returns
compare with pomdp-baselines' Pendulum-V figures (TD3-LSTM about -180 by ~30k steps).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TransformObservation


def make_pendulum_novel(**kwargs) -> gym.Env:
    env = gym.make("Pendulum-v1", **kwargs)
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    return TransformObservation(env, lambda obs: np.asarray(obs[:2], dtype=np.float32), space)
