"""The quadruped agent's env and network assembly, and its evaluation (used by ppo_locomamba.py).

Keys are the contract: the env writes ``proprio`` / ``depth`` (+ ``is_init`` from InitTracker and
the memory state from the primer); the encoder writes ``embed``; the memory writes ``memory``;
the heads write ``loc``/``scale``/``action`` and ``state_value``.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from agents.algos.ppo import RecurrentActorCritic
from agents.quadruped.config import Config, EnvConfig, check_consistency
from agents.runtime.config import ConfigError
from agents.runtime.stop import worker_ignores_sigint
from envs import QUADRUPED_IDS
from envs.quadruped.a1_env import A1QuadrupedEnv
from networks.models.loco_encoder import LocoEncoder
from networks.memory.factory import make_memory
from networks.params import parameter_table

INFO_KEYS = ("distance", "collisions", "fall", "goal_reached")


def env_kwargs(cfg: EnvConfig) -> dict:
    keys = ("horizon", "time_step_s", "num_action_repeat", "kp", "kd", "diagonal_act", "clip_num",
            "alive_reward", "fall_reward", "target_vel", "z_penalty", "other_direction_penalty",
            "energy_weight", "goal_reward", "fric_coeff", "domain_randomization", "depth",
            "depth_backend", "image_size", "frame_stack", "num_obstacles", "gait", "gait_freq", "gait_height")
    return {k: getattr(cfg, k) for k in keys}


def _gym_env(cfg: EnvConfig):
    from torchrl.envs import GymEnv
    from torchrl.envs.gym_like import default_info_dict_reader

    env = GymEnv(QUADRUPED_IDS[cfg.course], **env_kwargs(cfg))
    env.set_info_dict_reader(default_info_dict_reader(list(INFO_KEYS)))
    return env


def _vector_env(cfg: EnvConfig, num_envs: int):
    """num_envs A1 courses, one process each: gymnasium's AsyncVectorEnv (observations through shared
    memory, no autoreset: TorchRL resets the ended envs with a reset mask) under TorchRL's GymWrapper.

    Why not TorchRL's ParallelEnv: on the 16-core host it ran 16 A1 envs at 369 frames/s against
    4,327 for 16 bare processes (benchmarks/ppo_throughput.py measures both in one run)."""
    import gymnasium as gym
    from torchrl.data import Composite, Unbounded
    from torchrl.envs import GymWrapper
    from torchrl.envs.gym_like import default_info_dict_reader

    # spawn: PyBullet clients must not be forked from a process that already holds one
    # worker_ignores_sigint: a Ctrl-C stops the trainer gracefully (agents/runtime/stop.py), not the workers
    make = partial(worker_ignores_sigint, A1QuadrupedEnv, course=cfg.course, **env_kwargs(cfg))
    vec = gym.vector.AsyncVectorEnv([make] * num_envs, shared_memory=True, context="spawn",
                                    autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    env = GymWrapper(vec)
    spec = Composite({k: Unbounded((num_envs,), dtype=torch.float32) for k in INFO_KEYS}, shape=(num_envs,))
    env.set_info_dict_reader(default_info_dict_reader(list(INFO_KEYS), spec=spec))
    return env


def make_env(cfg: EnvConfig, seed: int, num_envs: int, primer=None):
    """num_envs A1 courses (one process each when cfg.parallel and num_envs > 1, else all in this
    process) + InitTracker, StepCounter, RewardSum and the memory primer."""
    from torchrl.envs import Compose, InitTracker, RewardSum, SerialEnv, StepCounter, TransformedEnv

    if num_envs == 1:
        base = _gym_env(cfg)
    else:
        base = _vector_env(cfg, num_envs) if cfg.parallel else SerialEnv(num_envs, partial(_gym_env, cfg))
    transforms = [InitTracker(), StepCounter(), RewardSum()]
    if primer is not None:
        transforms.append(primer)
    env = TransformedEnv(base, Compose(*transforms))
    env.set_seed(seed)
    return env


class StdCap(nn.Module):
    """(loc, scale) -> (loc, min(scale, cap)): an upper bound on the policy's pre-tanh std that
    training can lower over time (``train.std_cap``), so that the gait has to come from the mean
    action instead of the exploration noise. Collection and the PPO loss see the same capped
    distribution. The cap is a non-persistent buffer (set from the frames on every iteration,
    also after a resume), filled in place, so a captured CUDA graph reads the current value."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cap", torch.tensor(float("inf")), persistent=False)

    def forward(self, params):   # after NormalParamExtractor in an nn.Sequential: one (loc, scale) tuple
        loc, scale = params
        return loc, torch.minimum(scale, self.cap)

    def set(self, value: float) -> None:
        self.cap.fill_(value)


def std_cap_at(cfg: Config, frames: int) -> float:
    """The cap of train.std_cap [start, end] after ``frames``: linear over train.total_frames."""
    if cfg.train.std_cap is None:
        return float("inf")
    start, end = cfg.train.std_cap
    return start + (end - start) * min(1.0, frames / cfg.train.total_frames)


class QuadrupedPolicy(RecurrentActorCritic):
    """encoder -> memory -> (policy head, value head); views over the same parameters:
    trunk (encoder+memory), policy (trunk+actor, for the collector), actor_on_memory (the
    actor on a trunk output, for ClipPPOLoss), value_step (trunk+value, step mode)."""

    def __init__(self, cfg: Config):
        super().__init__()
        from tensordict.nn import NormalParamExtractor, TensorDictModule
        from torchrl.data import Bounded
        from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator

        space = A1QuadrupedEnv(**env_kwargs(cfg.env)).observation_space   # no simulator started
        proprio_dim = space["proprio"].shape[0]
        act_dim = 6 if cfg.env.diagonal_act else 12
        m = cfg.model
        if cfg.env.depth:
            net = LocoEncoder(proprio_dim, cfg.env.frame_stack, cfg.env.image_size, fusion=m.fusion,
                              hidden_shapes=m.hidden_shapes, visual_dim=m.visual_dim,
                              transformer_params=m.transformer_params, mamba_params=m.mamba_params,
                              append_hidden_shapes=m.append_hidden_shapes, vision_only=m.vision_only)
            self.encoder = TensorDictModule(net, in_keys=["proprio", "depth"], out_keys=["embed"])
            embed_dim = net.out_dim
        else:   # proprioception only (LocoTransformer's state-only baseline)
            widths = [*m.hidden_shapes, *m.append_hidden_shapes]
            net = MLP(in_features=proprio_dim, out_features=widths[-1], num_cells=widths[:-1],
                      activation_class=nn.ReLU, activate_last_layer=True)
            self.encoder = TensorDictModule(net, in_keys=["proprio"], out_keys=["embed"])
            embed_dim = widths[-1]
        self.memory = make_memory(m.memory, embed_dim, m.memory_hidden, m.memory_layers,
                                  in_key="embed", out_key="memory")
        self.std_cap = StdCap()
        head = nn.Sequential(nn.Linear(m.memory_hidden, 2 * act_dim),
                             NormalParamExtractor(scale_mapping=f"biased_softplus_{m.init_std}"), self.std_cap)
        nn.init.normal_(head[0].weight, std=0.01)   # small initial actions: start near standing
        nn.init.zeros_(head[0].bias)
        spec = Bounded(-1.0, 1.0, (act_dim,))
        actor_head = ProbabilisticActor(
            TensorDictModule(head, in_keys=["memory"], out_keys=["loc", "scale"]), in_keys=["loc", "scale"],
            spec=spec, distribution_class=TanhNormal, distribution_kwargs={"low": -1.0, "high": 1.0},
            return_log_prob=True)
        value_head = ValueOperator(nn.Linear(m.memory_hidden, 1), in_keys=["memory"])
        self.set_views(self.encoder, actor_head, value_head)


def build_policy(cfg: Config) -> QuadrupedPolicy:
    return QuadrupedPolicy(cfg)


def parameter_report(nets: QuadrupedPolicy) -> str:
    return parameter_table({"encoder": nets.encoder, "memory": nets.memory,
                            "policy head": nets.actor_head, "value head": nets.value_head})


@torch.no_grad()
def evaluate(cfg: Config, nets: QuadrupedPolicy, episodes: int, video: Path | None = None,
             seed: int | None = None, stochastic: bool = False) -> dict:
    """Deterministic policy (tanh of the mean; sampled actions with ``stochastic``) on one env;
    mean return, distance, collisions, falls over ``episodes`` (a progress bar per episode); the
    first episode is written to ``video`` (mp4, or gif without ffmpeg)."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp
    from tqdm import tqdm

    from agents.runtime.video import write_video

    env = make_env(cfg.env, seed=cfg.seed + 777 if seed is None else seed, num_envs=1, primer=nets.primer())
    device = next(nets.parameters()).device
    gym_env = env.base_env._env
    totals = {"return": 0.0, **{k: 0.0 for k in INFO_KEYS}, "length": 0.0}
    frames = []
    mode = ExplorationType.RANDOM if stochastic else ExplorationType.DETERMINISTIC
    if stochastic:   # sampled actions from a seeded generator: the same seed gives the same episodes
        torch.manual_seed(cfg.seed + 777 if seed is None else seed)
    bar = tqdm(total=episodes, unit="episode", desc="eval", disable=episodes < 2 or None)
    with set_exploration_type(mode):
        for ep in range(episodes):
            td = env.reset()
            ret = 0.0
            for t in range(cfg.env.horizon):
                td = nets.policy(td.to(device)).cpu()
                td = env.step(td)
                ret += td["next", "reward"].item()
                if video is not None and ep == 0 and t % 2 == 0 and len(frames) < 400:
                    frames.append(gym_env.unwrapped.render())
                if td["next", "done"].item():
                    break
                td = step_mdp(td)
            totals["return"] += ret
            totals["length"] += t + 1
            for k in INFO_KEYS:
                totals[k] += float(td["next", k].item())
            bar.update(1)
            bar.set_postfix(distance=f"{totals['distance'] / (ep + 1):.2f}", falls=f"{totals['fall']:.0f}")
    bar.close()
    env.close()
    result = {("falls" if k == "fall" else k): v / episodes for k, v in totals.items()}
    if video is not None and frames:
        result["video"] = str(write_video(frames, video, fps=12))
    return result


def check_config(cfg: Config) -> None:
    """Build the policy once (on the CPU: ~0.1 s at LocoTransformer's size; some initialisers read
    values, so the meta device will not do): a width the memory kind or the depth CNN cannot take
    (mamba2's heads, image_size < 36, ...) is a ConfigError naming the keys before a run
    directory exists, not a traceback from training. Training seeds its generators afterwards.
    First the constraints between keys (agents/quadruped/config.py)."""
    check_consistency(cfg)
    try:
        build_policy(cfg)
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"config keys 'model.*' / 'env.image_size': the network cannot be built: {err} "
                          f"(model.memory={cfg.model.memory}, model.memory_hidden={cfg.model.memory_hidden}, "
                          f"env.image_size={cfg.env.image_size})") from None
