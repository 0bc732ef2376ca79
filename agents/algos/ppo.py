"""PPO pieces shared by the recurrent PPO agents (ppo_locomamba.py, ppo_memory.py).

Every agent's policy exposes the same views over one set of parameters: ``trunk`` (encoder +
memory, writes "memory"), ``value_head`` (on "memory"), ``value_step`` (trunk + value head, step
mode) and the actor head on "memory". The pieces below only rely on those keys and on TorchRL's
batch layout [envs, T] with "is_init", ("next", "reward"/"done"/"terminated").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import nn

from agents.runtime.config import field_spec
from agents.runtime.nonfinite import NonFiniteLoss, check_finite  # noqa: F401  (raised by ppo_update; agents import it here)


class RecurrentActorCritic(nn.Module):
    """Base of the agents' policies: ``set_views(front, actor_head, value_head)`` after building.

    ``front`` (encoder or embedding) and ``memory`` make the trunk; the views regroup the
    modules without registering them again: trunk, policy (trunk + actor, for the collector),
    value_step (trunk + value head, step mode), actor_on_memory (the actor on a trunk output,
    for ClipPPOLoss). ``self.memory`` must be set by the subclass.
    """

    def set_views(self, front, actor_head, value_head) -> None:
        from tensordict.nn import TensorDictSequential

        self.actor_head, self.value_head = actor_head, value_head
        self.__dict__["front"] = front   # already registered by the subclass (encoder / embed_net)
        trunk = TensorDictSequential(front, self.memory)
        self.__dict__["_views"] = {   # not submodules: they only regroup the modules above
            "trunk": trunk, "policy": TensorDictSequential(trunk, actor_head),
            "value_step": TensorDictSequential(trunk, value_head)}

    trunk = property(lambda self: self._views["trunk"])
    policy = property(lambda self: self._views["policy"])
    value_step = property(lambda self: self._views["value_step"])
    actor_on_memory = property(lambda self: self.actor_head)

    def primer(self):
        return self.memory.make_tensordict_primer()

    def acting_policy(self, cuda_graph: bool = False):
        """The collector's policy: ``policy``, or with ``cuda_graph`` the trunk and the
        distribution's parameters replayed as one CUDA graph per batch size (on CUDA inputs),
        followed by eager sampling (a few kernels)."""
        if not cuda_graph:
            return self.policy
        from tensordict.nn import TensorDictSequential

        from networks.cuda_graph import CudaGraphPolicy

        params, sampler = self.actor_head.module[0], self.actor_head.module[-1]
        return TensorDictSequential(CudaGraphPolicy(TensorDictSequential(self.trunk, params)), sampler)


@dataclass
class PPOConfig:
    lr: float = field_spec(1e-4, min=0.0, max=1.0, help="policy (and shared trunk) learning rate")
    value_lr: float = field_spec(1e-4, min=0.0, max=1.0, help="value head learning rate")
    clip_epsilon: float = field_spec(0.2, min=0.0, max=1.0)
    epochs: int = field_spec(3, min=1, max=100, help="passes over each batch")
    minibatch_size: int = field_spec(1024, min=1, help="frames per minibatch (slices x slice_len)")
    slice_len: int = field_spec(32, min=1, help="trajectory slice length for the recurrent update")
    gamma: float = field_spec(0.99, min=0.0, max=1.0)
    gae_lambda: float = field_spec(0.95, min=0.0, max=1.0)
    entropy_coef: float = field_spec(0.005, min=0.0)
    critic_coef: float = field_spec(0.5, min=0.0)
    max_grad_norm: float = field_spec(1.0, min=0.0, help="0 disables clipping")
    anneal_lr: bool = field_spec(False, help="decay the learning rates linearly to 0 over train.total_frames")
    adam_eps: float = field_spec(1e-5, min=0.0, max=1.0, help="Adam epsilon (1e-5 as in CleanRL / SB3 PPO)")
    desired_kl: float | None = field_spec(None, min=1e-5, max=1.0, nullable=True,
                                          help="adapt the learning rates to keep approx KL near this value "
                                               "(rsl_rl's adaptive schedule); null keeps them fixed")


# ------------------------------------------------------------------ seeds and exact resume
def seed_everything(seed: int) -> None:
    """Python, numpy and torch global generators (whatever a library draws from is seeded, so two
    processes of one config start from the same states)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def segment_seed(seed: int, iteration: int) -> int:
    """Env seed of the segment that starts after ``iteration`` (envs restart at every checkpoint):
    a fresh start, a resume and restart_segment all seed the envs with it."""
    return seed + 1000 * iteration


def restart_segment(collector, env_seed: int) -> None:
    """Called right after a checkpoint: every env restarts from ``env_seed`` and the collector from
    a fresh reset, which is exactly how a resumed run starts; so resumed == uninterrupted, with no
    simulator state in the file. The episodes in flight are cut there; GAE bootstraps them from
    the last stored next observation, as at any batch end."""
    from agents.runtime.run_dir import rng_state, set_rng_state

    state = rng_state()          # what the checkpoint holds: whatever a reset draws is not drawn
    collector.env.set_seed(env_seed)
    collector.reset()
    set_rng_state(state)


# --------------------------------------------------------------------- optimiser and schedule
def make_optimizer(nets: RecurrentActorCritic, cfg: PPOConfig) -> torch.optim.Adam:
    """Adam over two groups: the trunk (front + memory) with the actor head at ppo.lr, the value
    head at ppo.value_lr. ``nets.front`` is the module before the memory (encoder or embedding)."""
    policy_params = [*nets.front.parameters(), *nets.memory.parameters(), *nets.actor_head.parameters()]
    # initial_lr: the base of linear annealing; kl_scale: the KL-adaptive factor (adapt_kl_scale)
    return torch.optim.Adam([{"params": policy_params, "lr": cfg.lr, "initial_lr": cfg.lr, "kl_scale": 1.0},
                             {"params": list(nets.value_head.parameters()), "lr": cfg.value_lr,
                              "initial_lr": cfg.value_lr, "kl_scale": 1.0}], eps=cfg.adam_eps)


def restore_optimizer(optim: torch.optim.Optimizer, state: dict, cfg: PPOConfig) -> None:
    """Load an optimiser checkpoint, then let the config decide the learning rates: the
    checkpoint's moments are kept, but ``--resume RUN ppo.lr=X`` trains at X (load_state_dict
    alone would restore the old lr while the run's config records the new one)."""
    optim.load_state_dict(state)
    for group, lr in zip(optim.param_groups, (cfg.lr, cfg.value_lr)):
        # the KL-adaptive factor is training state (kept, so a resume continues exactly); it is
        # reset when the schedule is off
        group["kl_scale"] = group.get("kl_scale", 1.0) if cfg.desired_kl is not None else 1.0
        group["initial_lr"] = lr
        group["lr"] = lr * group["kl_scale"]
        group["eps"] = cfg.adam_eps


# rsl_rl's (legged_gym's) adaptive schedule: the step and the bounds of the learning rate
KL_LR_FACTOR, KL_LR_MIN, KL_LR_MAX = 1.5, 1e-5, 1e-2


def adapt_kl_scale(optim: torch.optim.Optimizer, kl: float, desired_kl: float) -> None:
    """rsl_rl's adaptive learning rate, once per minibatch: divide every group's lr by 1.5 when
    the approx KL of the minibatch exceeds 2 x desired_kl, multiply it by 1.5 below desired_kl / 2,
    within [1e-5, 1e-2]. Fixed-lr PPO on the quadruped ran at KL ~0.1 and clip fraction ~0.5 at
    lr 3e-4 (README), i.e. most samples were clipped after the first epoch. The factor lives in
    the param group (``kl_scale``), so it is saved and restored with the optimiser."""
    step = KL_LR_FACTOR if kl < desired_kl / 2 else 1 / KL_LR_FACTOR if kl > 2 * desired_kl else 1.0
    if step == 1.0:
        return
    for group in optim.param_groups:
        if group["lr"] <= 0:       # the end of linear annealing: nothing to scale
            continue
        lr = min(max(group["lr"] * step, KL_LR_MIN), KL_LR_MAX)
        group["kl_scale"] *= lr / group["lr"]     # the factor only: linear annealing stays apart
        group["lr"] = lr


def lr_scale(cfg: PPOConfig, frames_done: int, total_frames: int) -> float:
    """Multiplier of the initial learning rates for the next update: 1, or linear decay to 0 over
    total_frames (frames_done counts the frames collected before the batch being learned from)."""
    return max(0.0, 1.0 - frames_done / total_frames) if cfg.anneal_lr else 1.0


def make_loss(nets: RecurrentActorCritic, cfg: PPOConfig):
    """TorchRL's ClipPPOLoss on the heads (the trunk runs once per minibatch, outside the loss);
    normalised advantages, smooth-L1 critic. It also reports clip_fraction, kl_approx, entropy,
    explained_variance and ESS, which ppo_update averages into its log."""
    from torchrl.objectives import ClipPPOLoss

    return ClipPPOLoss(nets.actor_on_memory, nets.value_head, clip_epsilon=cfg.clip_epsilon,
                       entropy_coeff=cfg.entropy_coef, critic_coeff=cfg.critic_coef,
                       normalize_advantage=True, loss_critic_type="smooth_l1")


def compute_advantages(batch: TensorDict, trunk, value_head, value_step, gamma: float, lmbda: float):
    """Adds state_value, advantage, value_target to a collected batch [envs, T] in place.

    V(s_t) comes from one sequence-mode pass over the batch. V(s_{t+1}) is V(s_{t+1}) of the same
    pass when step t+1 continues the episode in this batch; at the batch's last step and at
    truncations (where step t+1 is a new episode) it is evaluated from the stored next
    observation and the memory state recorded after step t (step mode)."""
    from torchrl.modules import set_recurrent_mode
    from torchrl.objectives.value.functional import generalized_advantage_estimate

    with torch.no_grad():
        with set_recurrent_mode(True):
            value = value_head(trunk(batch.clone(False)))["state_value"]            # [E, T, 1]
        next_value = torch.zeros_like(value)
        next_value[:, :-1] = value[:, 1:]
        is_init = batch["is_init"]                                                  # [E, T, 1]
        need = torch.zeros_like(is_init)
        need[:, -1] = True
        need[:, :-1] = is_init[:, 1:]                                              # t+1 starts anew
        need &= ~batch["next", "terminated"]                                       # no bootstrap there
        idx = need.squeeze(-1).nonzero(as_tuple=True)
        if idx[0].numel():
            nxt = batch["next"][idx].clone(False)
            nxt["is_init"] = torch.zeros_like(nxt["is_init"])
            next_value[idx] = value_step(nxt)["state_value"]
        adv, target = generalized_advantage_estimate(
            gamma, lmbda, value, next_value, batch["next", "reward"], batch["next", "done"],
            batch["next", "terminated"], time_dim=-2)
    batch["state_value"], batch["advantage"], batch["value_target"] = value, adv, target
    return batch


def slices(batch: TensorDict, slice_len: int, minibatch_slices: int, generator: torch.Generator):
    """Yield random minibatches [minibatch_slices, slice_len] of contiguous trajectory slices."""
    E, T = batch.shape
    cut = batch.reshape(E, T // slice_len, slice_len).reshape(-1, slice_len)       # [S, L]
    order = torch.randperm(cut.shape[0], generator=generator)
    for start in range(0, len(order) - minibatch_slices + 1, minibatch_slices):
        yield cut[order[start:start + minibatch_slices]]


def episode_stats(batch: TensorDict, info_keys=()) -> dict[str, float]:
    """Mean return/length over the episodes that ended in the batch (needs RewardSum and
    StepCounter), plus the mean of each ("next", info_key) at those ends."""
    done = batch["next", "done"].squeeze(-1)
    if not done.any():
        return {}
    stats = {"episode_return": batch["next", "episode_reward"][done].mean().item(),
             "episode_length": batch["next", "step_count"][done].float().mean().item(),
             "episodes": float(done.sum())}
    for key in info_keys:
        stats[f"episode_{key}"] = batch["next", key][done].float().mean().item()
    return stats


PPO_DIAGNOSTICS = ("loss_objective", "loss_critic", "loss_entropy", "clip_fraction", "kl_approx", "entropy",
                   "explained_variance", "ESS")


def ppo_update(batch: TensorDict, trunk, loss_fn, optim: torch.optim.Optimizer, params, cfg: PPOConfig,
               generator: torch.Generator, lr_scale: float = 1.0) -> dict[str, float]:
    """cfg.epochs passes of clipped PPO over minibatches of trajectory slices, in sequence mode.

    The loss sees only the heads: the trunk (encoder + memory) runs once per minibatch and its
    output carries the gradient back into the trunk's parameters. Each slice starts from the memory
    state recorded at collection and resets where is_init is set. ``lr_scale`` multiplies every
    group's initial lr (linear annealing). Returns the means of the loss terms and of the
    diagnostics PPO users read (clip fraction, approx KL, entropy, explained variance, ESS, grad norm
    before clipping) and the lr used; raises NonFiniteLoss."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import set_recurrent_mode

    for group in optim.param_groups:
        group["lr"] = group["initial_lr"] * lr_scale * group["kl_scale"]   # both set by make_optimizer
    params = list(params)
    logs = []
    with set_exploration_type(ExplorationType.RANDOM), set_recurrent_mode(True):
        for _ in range(cfg.epochs):
            for mb in slices(batch, cfg.slice_len, cfg.minibatch_size // cfg.slice_len, generator):
                out = loss_fn(trunk(mb.clone(False)))
                loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                check_finite(None, loss=loss, **{k: v for k, v in out.items() if k.startswith("loss")})
                if cfg.desired_kl is not None:
                    # one host sync per minibatch, the price of rsl_rl's schedule
                    adapt_kl_scale(optim, float(out["kl_approx"]), cfg.desired_kl)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                # the norm before clipping is the diagnostic (inf when clipping is off is not useful)
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0
                                                     else float("inf"))
                optim.step()
                row = {k: v.detach() for k, v in out.items() if k in PPO_DIAGNOSTICS}
                row["grad_norm"] = grad_norm.detach()
                logs.append(row)
    # one host sync per update, not per minibatch
    result = {k: torch.stack([row[k].float() for row in logs]).mean().item() for k in logs[0]}
    result["lr"] = optim.param_groups[0]["lr"]
    return result


def dry_run(cfg, build, report, make_env, describe_env) -> int:
    """Both PPO agents' ``--dry-run``: print the resolved config, ``nets = build(cfg)`` and
    ``report(nets)`` (parameter counts), take one policy step on ``make_env(nets.primer())``, print
    ``env ok: <describe_env(env, td)>, action <shape>``, exit 0."""
    import yaml

    from agents.runtime.config import to_dict

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    nets = build(cfg)
    print(report(nets))
    env = make_env(nets.primer())
    td = nets.policy(env.reset())
    print(f"env ok: {describe_env(env, td)}, action {tuple(td['action'].shape)}")
    env.close()
    return 0
