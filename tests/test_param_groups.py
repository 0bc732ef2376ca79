"""SSM parameter hygiene as upstream Mamba: A_log, D and the dt bias out of weight decay (by a
marker), out_proj scaled by 1/sqrt(n_layers) at init in a stack, and the BC agents' AdamW."""
import math

import pytest
import torch

from networks.memory.mamba import MambaStack
from networks.ssm.param_groups import weight_decay_groups


@pytest.mark.parametrize("kind, dt_bias", [("mamba1", "dt_proj.bias"), ("mamba2", "dt_bias")])
def test_a_log_d_and_dt_bias_are_not_decayed(kind, dt_bias):
    stack = MambaStack(kind, 8, 32, num_layers=2)
    decay, keep = weight_decay_groups(stack, 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    names = {id(p): n for n, p in stack.named_parameters()}
    kept = sorted(names[id(p)] for p in keep["params"])
    expected = sorted(f"mixers.{l}.{n}" for l in range(2) for n in ("A_log", "D", dt_bias))
    assert kept == expected
    assert len(decay["params"]) + len(keep["params"]) == len(list(stack.parameters()))   # each once
    # the decay really is 0 for them under AdamW: one step with zero gradients moves only decayed weights
    opt = torch.optim.AdamW(weight_decay_groups(stack, 0.5), lr=0.1)
    before = {n: p.detach().clone() for n, p in stack.named_parameters()}
    for p in stack.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in stack.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        assert moved == (n not in expected and before[n].abs().sum() > 0), n


@pytest.mark.parametrize("layers", [1, 4])
def test_out_proj_scaled_by_one_over_sqrt_layers_at_init(layers):
    torch.manual_seed(0)
    stack = MambaStack("mamba1", 64, 64, num_layers=layers)
    w = stack.mixers[0].out_proj.weight                      # [64, 128]: kaiming-uniform bound 1/sqrt(128)
    bound = 1 / math.sqrt(w.shape[1]) / math.sqrt(layers)
    assert w.abs().max() <= bound * (1 + 1e-6)
    assert w.abs().max() > 0.98 * bound                      # uniform on [-b, b]: 8192 draws reach b
