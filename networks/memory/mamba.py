"""Residual stack of Mamba1/Mamba2 mixers: the core behind kinds ``mamba1``/``mamba2``.

x [B, T, input_size] -> Linear (if input_size != hidden) -> L x (h + mixer(RMSNorm(h)))
-> RMSNorm -> [B, T, hidden]. State per layer is (conv, ssm), stacked on a layer dim:
conv ``[L, conv_dim, d_conv-1]``, ssm ``[L, *mixer ssm shape]``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from networks.ssm import cpu_mamba2, cpu_scan
from networks.ssm.mamba1 import Mamba1Mixer
from networks.ssm.mamba2 import Mamba2Mixer

MIXERS = {"mamba1": Mamba1Mixer, "mamba2": Mamba2Mixer}


class MambaStack(nn.Module):
    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 scan: str = "chunked", **mixer_options):
        super().__init__()
        self.scan = scan  # "chunked" (fast) or "reference" (the step loop, for tests/benchmarks)
        self.in_proj = nn.Linear(input_size, hidden_size) if input_size != hidden_size else nn.Identity()
        self.norms = nn.ModuleList(nn.RMSNorm(hidden_size, eps=1e-5) for _ in range(num_layers))
        self.mixers = nn.ModuleList(MIXERS[kind](hidden_size, **mixer_options) for _ in range(num_layers))
        self.out_norm = nn.RMSNorm(hidden_size, eps=1e-5)
        self.kind = kind   # which C++ acting step serves it on the CPU (cpu_scan or cpu_mamba2)
        # mamba-ssm's init for a residual stack (rescale_prenorm_residual): each out_proj, whose
        # output is added to the residual stream, scaled by 1/sqrt(n_layers) so the stream's
        # variance at init does not grow with depth
        with torch.no_grad():
            for mixer in self.mixers:
                for name, p in mixer.named_parameters():
                    if name.endswith("out_proj.weight"):
                        p.div_(math.sqrt(num_layers))

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        L = len(self.mixers)
        return {name: (L, *shape) for name, shape in self.mixers[0].state_shapes().items()}

    def sequence(self, x, is_init=None, states=None):
        """x [B, T, input_size] -> ([B, T, hidden], final states); without is_init / states one
        fresh sequence from zero state (each mixer fills them in: mamba1.fresh_state)."""
        h = self.in_proj(x)
        convs, ssms = [], []
        for l, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            conv, ssm = (None, None) if states is None else (states["conv"][:, l], states["ssm"][:, l])
            y, c, s = mixer(norm(h), is_init, conv, ssm, scan=self.scan)
            h = h + y
            convs.append(c)
            ssms.append(s)
        return self.out_norm(h), {"conv": torch.stack(convs, 1), "ssm": torch.stack(ssms, 1)}

    def step(self, x, states):
        # acting on the CPU: one fused call (networks/ssm/cpu_scan.py, networks/ssm/cpu_mamba2.py)
        if self.kind == "mamba1" and cpu_scan.step_wanted(self, x):
            return cpu_scan.mamba1_stack_step(self, x, states)
        if self.kind == "mamba2" and cpu_mamba2.step_wanted(self, x):
            return cpu_mamba2.stack_step(self, x, states)
        h = self.in_proj(x)
        convs, ssms = [], []
        for l, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            y, c, s = mixer.step(norm(h), states["conv"][:, l], states["ssm"][:, l])
            h = h + y
            convs.append(c)
            ssms.append(s)
        return self.out_norm(h), {"conv": torch.stack(convs, 1), "ssm": torch.stack(ssms, 1)}
