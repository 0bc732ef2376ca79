"""External baseline: sb3-contrib's RecurrentPPO (LSTM) on stateless CartPole (CartPoleNoVel-v1).

    python benchmarks/sb3_baseline.py seed=0 train.total_frames=100000

Env: gymnasium CartPole-v1 (500-step limit) with the velocities masked by an ObservationWrapper,
i.e. rl-baselines3-zoo's CartPoleNoVel-v1, and the same dynamics as our stateless_cartpole with
``env.options={max_steps: 500}``. Hyper-parameters: rl-baselines3-zoo's ppo_lstm CartPoleNoVel-v1
entry (published with its trained agent: 500 +- 0 at 100k steps): 8 envs, n_steps 32, batch 256,
20 epochs, gamma 0.98, gae_lambda 0.8, lr lin_1e-3, clip lin_0.2, ent_coef 0, VecNormalize(obs),
LSTM 64 with a separate critic LSTM, ReLU, net_arch pi=[64] vf=[64], ortho_init False.

Returns are reported normalised like the suite's (1.0 = 500 steps) so both share plots and the
threshold; ``final_return_raw`` keeps sb3's own scale. The curve has one point per rollout (the mean
return of the episodes that ended in it), the same definition as agents/ppo_memory.py.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from agents.runtime.config import field_spec, load_config


@dataclass
class SB3PPOConfig:
    n_envs: int = field_spec(8, min=1)
    n_steps: int = field_spec(32, min=1)
    batch_size: int = field_spec(256, min=1)
    n_epochs: int = field_spec(20, min=1)
    gamma: float = field_spec(0.98, min=0.0, max=1.0)
    gae_lambda: float = field_spec(0.8, min=0.0, max=1.0)
    lr: float = field_spec(1e-3, min=0.0, help="linearly decayed to 0 (rl-zoo lin_0.001)")
    clip_range: float = field_spec(0.2, min=0.0, help="linearly decayed to 0 (rl-zoo lin_0.2)")
    ent_coef: float = field_spec(0.0, min=0.0)
    lstm_hidden_size: int = field_spec(64, min=1)


@dataclass
class SB3TrainConfig:
    total_frames: int = field_spec(100_000, min=1)
    threshold: float = field_spec(1.0, help="normalised training return counted as solved (1.0 = max_steps)")
    eval_episodes: int = field_spec(16, min=1)


@dataclass
class SB3Config:
    name: str = field_spec("sb3_recurrent_ppo")
    seed: int = field_spec(0, min=0)
    threads: int = field_spec(0, min=0, help="torch CPU threads (0: torch's default)")
    max_steps: int = field_spec(500, min=1, help="episode limit (CartPole-v1: 500)")
    ppo: SB3PPOConfig = field(default_factory=SB3PPOConfig)
    train: SB3TrainConfig = field(default_factory=SB3TrainConfig)


def make_cartpole_novel(max_steps: int):
    import gymnasium as gym

    class HideVelocities(gym.ObservationWrapper):
        """CartPole observing only the cart position and the pole angle."""

        def __init__(self, env):
            super().__init__(env)
            low, high = env.observation_space.low[[0, 2]], env.observation_space.high[[0, 2]]
            self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

        def observation(self, obs):
            return obs[[0, 2]].astype(np.float32)

    return HideVelocities(gym.make("CartPole-v1", max_episode_steps=max_steps))


def run(overrides=()) -> dict:
    """Train and evaluate; the same result keys as agents.ppo_memory.train (no run directory)."""
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.ppo_memory import summarize
    from networks.params import count_parameters

    cfg = load_config(SB3Config, None, list(overrides))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    p, scale = cfg.ppo, 1.0 / cfg.max_steps
    env = VecNormalize(make_vec_env(lambda: make_cartpole_novel(cfg.max_steps), n_envs=p.n_envs, seed=cfg.seed),
                       norm_obs=True, norm_reward=False)
    model = RecurrentPPO(
        "MlpLstmPolicy", env, n_steps=p.n_steps, batch_size=p.batch_size, n_epochs=p.n_epochs, gamma=p.gamma,
        gae_lambda=p.gae_lambda, learning_rate=lambda frac: p.lr * frac, clip_range=lambda frac: p.clip_range * frac,
        ent_coef=p.ent_coef, seed=cfg.seed, device="cpu", verbose=0,
        policy_kwargs=dict(ortho_init=False, activation_fn=torch.nn.ReLU, lstm_hidden_size=p.lstm_hidden_size,
                           enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])))
    curve: list[dict] = []

    class Curve(BaseCallback):
        def _on_training_start(self):
            self.t0, self.returns, self.lengths = time.perf_counter(), [], []

        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:                        # Monitor's end-of-episode record
                    self.returns.append(info["episode"]["r"] * scale)
                    self.lengths.append(info["episode"]["l"])
            return True

        def _on_rollout_end(self):
            if self.returns:
                curve.append({"frames": self.num_timesteps, "wall_s": round(time.perf_counter() - self.t0, 3),
                              "return": float(np.mean(self.returns)), "length": float(np.mean(self.lengths)),
                              "episodes": float(len(self.returns))})
            self.returns, self.lengths = [], []

    callback = Curve()
    model.learn(cfg.train.total_frames, callback=callback)
    wall = time.perf_counter() - callback.t0
    env.training = False                                     # freeze the observation statistics
    mean, _ = evaluate_policy(model, env, n_eval_episodes=cfg.train.eval_episodes, deterministic=True)
    params = count_parameters(model.policy)
    result = summarize(curve, cfg.train.threshold, params, model.num_timesteps, wall, model.num_timesteps / wall)
    return {**result, "final_return": float(mean) * scale, "final_return_raw": float(mean),
            "task": "CartPoleNoVel-v1 (gymnasium CartPole-v1, velocities masked)", "level": f"{cfg.max_steps} steps"}


if __name__ == "__main__":
    out = run(sys.argv[1:])
    out.pop("curve")
    print(out)
