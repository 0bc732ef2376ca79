"""The drone agent's TD3 update replayed as CUDA graphs (``train.cuda_graph=true``, on CUDA):
``agents/vmamba_td3.py::make_update`` builds it on the first batch. Its own file because it is how
the update runs fast on a GPU, not part of the algorithm the agent script reads as."""
from __future__ import annotations

import torch
from torch import nn

from agents.algos.cuda_graph_train import GraphedTrainStep
from agents.drone.build import windows
from agents.drone.config import Config
from agents.runtime.nonfinite import check_finite


class GraphedTD3Update:
    """``td3_update`` as two CUDA graphs (agents/algos/cuda_graph_train.py): the critic-only update
    and the critic + actor + targets update of every ``policy_delay``-th step, both reading a static
    copy of the batch. A seed-size drone update is thousands of small kernels: launch-bound on a
    GPU, one launch replayed. Losses are checked after each replay (no host sync inside a graph):
    a non-finite loss stops the run one update later than eagerly, the checkpoints on disk untouched.
    ``td3_step`` is agents/vmamba_td3.py's (the algorithm stays there; this is how it is replayed)."""

    def __init__(self, cfg: Config, nets: nn.Module, optims: dict, sample, device, td3_step):
        self.cfg, self.device = cfg, device
        self.static = windows(cfg, sample, device)
        both = [optims["critic"], optims["actor"]]

        def graphed(actor_turn):
            def step_fn():
                out = td3_step(cfg, nets, optims, self.static, actor_turn, check=False)
                return torch.stack([out[k] for k in self.names(actor_turn)])
            return GraphedTrainStep(step_fn, [nets], both)
        self.graphs = {False: graphed(False), True: graphed(True)}

    @staticmethod
    def names(actor_turn: bool) -> list[str]:
        return ["critic_loss", "q1", "actor_loss"] if actor_turn else ["critic_loss", "q1"]

    def __call__(self, cfg, nets, optims, sample, update_index: int, device) -> dict:   # td3_update's signature
        fresh = windows(self.cfg, sample, self.device)
        obs, obs_next, *rest = self.static
        new_obs, new_next, *new_rest = fresh
        for dst, src in zip([*obs, *obs_next, *rest], [*new_obs, *new_next, *new_rest]):
            dst.copy_(src)
        actor_turn = update_index % self.cfg.td3.policy_delay == 0
        values = self.graphs[actor_turn]().clone()
        out = dict(zip(self.names(actor_turn), values))
        check_finite(None, **{k: v for k, v in out.items() if k != "q1"})
        return out
