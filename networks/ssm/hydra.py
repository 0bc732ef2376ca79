"""Hydra: a bidirectional SSM mixer as a quasiseparable matrix (Hwang et al. 2024, "Hydra:
Bidirectional State Space Models Through Generalized Matrix Mixers"), on networks/ssm/mamba2's
SSD scan (no kernels of its own).

Mamba2's SSD is a causal semiseparable matrix mixer SS(X) (lower triangular, diagonal included).
Hydra's quasiseparable mixer takes one causal pass forward and one over the time-reversed
sequence, each shifted by one step so that it is strictly triangular, and puts the diagonal back
as its own term:

    QS(X) = shift(SS_f(X)) + flip(shift(SS_b(flip(X)))) + D X

so y_t reads x_s for s < t through the forward scan, s > t through the backward scan and s = t
through D alone. As in the Hydra reference: one in_proj and one out_proj (shared), the x stream
shared by both directions, separate B, C and dt per direction, one A and one dt bias per head,
a non-causal ("same") depthwise conv, D = a per-head parameter plus a data-dependent part
(``fc_D``), and Mamba2's gated RMSNorm before out_proj. Both directions run as one batched
``ssd_chunked`` call ([x; flip(x)] along the batch).

Whole sequences from zero state only: a mixer that reads the future has no step (recurrent) form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.ssm.mamba1 import dt_bias_init
from networks.ssm.mamba2 import ssd_chunked
from networks.ssm.param_groups import no_weight_decay


def shift_right(y: Tensor) -> Tensor:
    """[B, T, ...] -> y[:, t-1] at t, zero at t = 0 (the 'shift' of QS: drops SS's diagonal)."""
    return F.pad(y, (0, 0) * (y.dim() - 2) + (1, 0))[:, :-1]


class HydraMixer(nn.Module):
    """x [B, T, d_model] -> [B, T, d_model], bidirectional (quasiseparable) sequence mixing.

    in_proj: d_model -> z [d_inner] | x [d_inner] | B_f, B_b, C_f, C_b [G*N each] | dt_f, dt_b [H each]
    depthwise conv (kernel d_conv, centred) + SiLU over x|B|C; H = d_inner / headdim heads.
    """

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 7, expand: int = 2, headdim: int = 32,
                 ngroups: int = 1, dt_min: float = 1e-3, dt_max: float = 1e-1, chunk_size: int = 64):
        super().__init__()
        if (expand * d_model) % headdim:
            raise ValueError(f"Hydra: d_inner = {expand * d_model} must split into heads of {headdim}")
        if d_conv % 2 == 0:
            raise ValueError(f"Hydra: d_conv must be odd (a centred conv), got {d_conv}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.headdim, self.ngroups = headdim, ngroups
        self.nheads = self.d_inner // headdim
        self.chunk_size = chunk_size
        GN = ngroups * d_state
        self.conv_dim = self.d_inner + 4 * GN                              # x | B_f B_b | C_f C_b
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + 2 * self.nheads, bias=False)
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, padding=d_conv // 2, groups=self.conv_dim)
        self.dt_bias = nn.Parameter(dt_bias_init(self.nheads, dt_min, dt_max))     # shared by both directions
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        no_weight_decay(self.A_log, self.D, self.dt_bias)   # as mamba-ssm (networks/ssm/param_groups.py)
        self.fc_D = nn.Linear(self.d_inner, self.nheads, bias=False)     # data-dependent part of the diagonal
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:
        Bt, T, _ = u.shape
        H, P, G, N = self.nheads, self.headdim, self.ngroups, self.d_state
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, 2 * H], dim=-1)
        xbc = F.silu(self.conv(xbc.transpose(1, 2)).transpose(1, 2))           # [B, T, conv_dim]
        x, Bf, Bb, Cf, Cb = xbc.split([self.d_inner, G * N, G * N, G * N, G * N], dim=-1)
        dt_f, dt_b = dt.chunk(2, dim=-1)                                       # [B, T, H] each
        # both directions as one batch: [forward; time-reversed], [2B, T, ...]
        xs = torch.cat([x, x.flip(1)]).reshape(2 * Bt, T, H, P)
        Bs = torch.cat([Bf, Bb.flip(1)]).reshape(2 * Bt, T, G, N)
        Cs = torch.cat([Cf, Cb.flip(1)]).reshape(2 * Bt, T, G, N)
        dts = F.softplus(torch.cat([dt_f, dt_b.flip(1)]) + self.dt_bias)      # [2B, T, H]
        A = -torch.exp(self.A_log.to(u.dtype))
        is_init = torch.zeros(2 * Bt, T, dtype=torch.bool, device=u.device)
        is_init[:, 0] = True
        y, _ = ssd_chunked(xs, dts, A, Bs, Cs, torch.zeros_like(self.D), xs.new_zeros(2 * Bt, H, P, N), is_init,
                           self.chunk_size)                                    # SS(.) without its D: [2B, T, H, P]
        y_f, y_b = y.chunk(2)                                                  # [B, T, H, P] each
        y = shift_right(y_f) + shift_right(y_b).flip(1)                        # strictly past + strictly future
        xh = x.reshape(Bt, T, H, P)
        y = y + xh * (self.D + self.fc_D(x))[..., None]                        # the diagonal: D X
        g = y.reshape(Bt, T, self.d_inner) * F.silu(z)                         # Mamba2's gated RMSNorm
        g = F.rms_norm(g.reshape(Bt, T, G, -1), (self.d_inner // G,), eps=1e-5).reshape(Bt, T, -1)
        return self.out_proj(g * self.norm_weight)
