"""POPGym-style memory suite behind TorchRL (batched) and gymnasium (single env); tasks in envs/pomdp/tasks.py.

    env = POMDPEnv("repeat_previous", "easy", num_envs=4096, seed=0)   # TorchRL EnvBase, batch_size [N]
    td = env.reset()
    td["action"] = env.action_spec.rand()
    td, td = env.step_and_maybe_reset(td)      # ("next", ...) holds the step, the second td is reset where done

    register_pomdp_envs()                      # gymnasium ids, idempotent
    gymnasium.make("mambazoo/POMDP-RepeatPrevious-easy-v0")

Keys: "observation" float32 [N, obs_dim]; "action" one-hot [N, n] (int64; ``categorical_action_encoding=True``
gives an index [N]) or float32 [N, 1] in [-2, 2] for the pendulums; "reward" [N, 1]; "done", "terminated",
"truncated" [N, 1] bool. TorchRL's own autoreset convention: ``_step`` returns the terminal step, and
``step_and_maybe_reset`` (collectors, ``rollout``) calls ``_reset`` with a "_reset" mask, which resets
only the masked envs. Card games end with terminated; control tasks hit their time limit with truncated.
Env i of ``POMDPEnv(..., num_envs=N, seed=s)`` is the same env as ``POMDPEnv(..., num_envs=1, seed=s + i)``.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs import EnvBase

from envs.pomdp.tasks import LEVELS, TASKS, make_task

GYM_NAMES = {"repeat_previous": "RepeatPrevious", "repeat_first": "RepeatFirst", "autoencode": "Autoencode",
             "count_recall": "CountRecall", "stateless_cartpole": "StatelessCartPole",
             "stateless_pendulum": "StatelessPendulum", "noisy_stateless_cartpole": "NoisyStatelessCartPole",
             "noisy_stateless_pendulum": "NoisyStatelessPendulum"}
POMDP_IDS = {(task, level): f"mambazoo/POMDP-{GYM_NAMES[task]}-{level}-v0" for task in TASKS for level in LEVELS}


class POMDPEnv(EnvBase):
    """N envs of one task and level as one TorchRL env with batch_size [N]."""

    batch_locked = True

    def __init__(self, task: str, level: str = "easy", num_envs: int = 1, device="cpu", seed: int = 0,
                 categorical_action_encoding: bool = False, **task_kwargs):
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.task_name, self.level = task, level
        self.task = make_task(task, level, num_envs, device=self.device, seed=seed, **task_kwargs)
        self.categorical = categorical_action_encoding
        n, tk = num_envs, self.task
        low, high = tk.obs_bounds()
        self.observation_spec = Composite(
            observation=Bounded(low.expand(n, tk.obs_dim), high.expand(n, tk.obs_dim), (n, tk.obs_dim),
                                dtype=torch.float32, device=self.device), shape=(n,), device=self.device)
        if tk.n_actions and self.categorical:
            self.action_spec = Categorical(tk.n_actions, (n,), dtype=torch.int64, device=self.device)
        elif tk.n_actions:
            self.action_spec = OneHot(tk.n_actions, (n, tk.n_actions), dtype=torch.int64, device=self.device)
        else:
            self.action_spec = Bounded(tk.act_low, tk.act_high, (n, tk.act_dim), dtype=torch.float32,
                                       device=self.device)
        self.reward_spec = Unbounded((n, 1), dtype=torch.float32, device=self.device)
        flag = Categorical(2, (n, 1), dtype=torch.bool, device=self.device)
        self.done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=(n,),
                                   device=self.device)
        self._false = torch.zeros(n, 1, dtype=torch.bool, device=self.device)

    def _td(self, source: dict) -> TensorDict:
        # _new_unsafe: the shapes are ours and right by construction; skipping TensorDict's per-key
        # validation is a large part of this env's per-step cost at small N
        return TensorDict._new_unsafe(source, batch_size=self.batch_size, device=self.device)

    def _reset(self, tensordict, **kwargs):
        mask = None if tensordict is None else tensordict.get("_reset", None)
        obs = self.task.reset(mask)
        f = self._false
        return self._td({"observation": obs, "done": f.clone(), "terminated": f.clone(), "truncated": f.clone()})

    def _step(self, tensordict):
        action = tensordict.get("action")
        if self.task.n_actions and not self.categorical:
            action = action.argmax(-1)
        obs, reward, terminated, truncated = self.task.step(action)
        terminated, truncated = terminated[:, None], truncated[:, None]
        return self._td({"observation": obs, "reward": reward[:, None], "done": terminated | truncated,
                         "terminated": terminated, "truncated": truncated})

    def _set_seed(self, seed: int | None):
        self.task.reseed(0 if seed is None else seed)

    def oracle_action(self) -> torch.Tensor:
        """The optimal action in this env's action encoding (for tests and as an upper-bound baseline)."""
        a = self.task.oracle_action()
        if self.task.n_actions and not self.categorical:
            return torch.nn.functional.one_hot(a, self.task.n_actions)
        return a


class POMDPGymEnv(gym.Env):
    """One env of a task as a gymnasium.Env (numpy in and out); ``reset(seed=s)`` is POMDPEnv's seed s."""

    metadata = {"render_modes": []}

    def __init__(self, task: str = "repeat_previous", level: str = "easy", render_mode=None, **task_kwargs):
        self.task = make_task(task, level, 1, seed=0, **task_kwargs)
        low, high = self.task.obs_bounds()
        self.observation_space = gym.spaces.Box(low.numpy(), high.numpy(), (self.task.obs_dim,), np.float32)
        if self.task.n_actions:
            self.action_space = gym.spaces.Discrete(self.task.n_actions)
        else:
            self.action_space = gym.spaces.Box(self.task.act_low, self.task.act_high, (self.task.act_dim,),
                                               np.float32)
        self.render_mode = render_mode
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            # an unseeded first reset draws its seed from gymnasium's np_random, as gymnasium envs do
            self.task.reseed(int(self.np_random.integers(2 ** 31)) if seed is None else seed)
            self._seeded = True
        return self.task.reset()[0].numpy().copy(), {}

    def step(self, action):
        if self.task.n_actions:
            a = torch.as_tensor(np.asarray(action), dtype=torch.int64).reshape(1)
        else:
            a = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, self.task.act_dim)
        obs, reward, terminated, truncated = self.task.step(a)
        return obs[0].numpy().copy(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}


def register_pomdp_envs() -> dict:
    """Register every task x level as ``mambazoo/POMDP-<Task>-<level>-v0``; safe to call repeatedly."""
    for (task, level), env_id in POMDP_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="envs.pomdp.suite:POMDPGymEnv",
                         kwargs={"task": task, "level": level}, max_episode_steps=None)
    return POMDP_IDS
