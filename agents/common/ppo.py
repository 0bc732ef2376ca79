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

from agents.common.config import field_spec
from agents.common.nonfinite import NonFiniteLoss  # noqa: F401  (raised by ppo_update; agents import it here)


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


def ppo_update(batch: TensorDict, trunk, loss_fn, optim: torch.optim.Optimizer, params, cfg: PPOConfig,
               generator: torch.Generator, lr_scale: float = 1.0) -> dict[str, float]:
    """cfg.epochs passes of clipped PPO over minibatches of trajectory slices, in sequence mode.

    The loss sees only the heads: the trunk (encoder + memory) runs once per minibatch and its
    output carries the gradient back into the trunk's parameters. Each slice starts from the memory
    state recorded at collection and resets where is_init is set. ``lr_scale`` multiplies every
    group's initial lr (linear annealing). Returns the mean loss terms; raises NonFiniteLoss."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import set_recurrent_mode

    for group in optim.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * lr_scale
    params = list(params)
    losses = []
    with set_exploration_type(ExplorationType.RANDOM), set_recurrent_mode(True):
        for _ in range(cfg.epochs):
            for mb in slices(batch, cfg.slice_len, cfg.minibatch_size // cfg.slice_len, generator):
                out = loss_fn(trunk(mb.clone(False)))
                loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                if not torch.isfinite(loss):
                    raise NonFiniteLoss({k: float(v) for k, v in out.items() if k.startswith("loss")})
                optim.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optim.step()
                losses.append(out.select("loss_objective", "loss_critic", "loss_entropy").detach())
    return {k: torch.stack([l[k] for l in losses]).mean().item() for k in losses[0].keys()}
