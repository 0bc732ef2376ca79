"""Mamba2 (SSD) in pure PyTorch, with carried state and per-step resets.

Per head h (headdim P, state N, one decay per head):
    H_t = exp(dt_t * A_h) * H_{t-1} + dt_t * x_t (outer) B_t        H: [P, N]
    y_t = H_t C_t + D_h * x_t
A reset at step t means H_{t-1} is taken as zero.

``ssd_reference`` is the loop (test oracle). ``ssd_chunked`` is mamba-ssm's
``ssd_minimal_discrete`` extended with resets: because the decay is a scalar per
head, a chunk is a masked attention-like matrix product, and the chunk-to-chunk
recurrence is a small matrix over chunks. Resets become masks: step s reaches step t
only if both lie in the same segment (``segment_ids``), so no padding is needed.
On the CPU, Mamba2Mixer's sequence mode runs the recurrence step by step in C++ instead
(``networks/ssm/cpu_mamba2.py``: fewer operations there than the chunked form's passes over
[.., L, L] tensors), with ``ssd_chunked`` as its fallback and the path on other devices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.ssm.causal_conv import causal_conv1d, causal_conv1d_step, depthwise_conv_parameters, segment_ids
from networks.ssm.mamba1 import dt_bias_init, fresh_state
from networks.ssm.param_groups import no_weight_decay
from networks.ssm import cpu_mamba2, cpu_scan, kernels


# Steps between the states the C++ SSD's forward keeps for its backward (networks/ssm/cpu_mamba2.py):
# one [H, P, N] state per row per CPU_CHECKPOINT steps (8 MB at B=8, T=1024, the defaults). Measured
# at those sizes, fwd+bwd of the SSD: 56 ms at 64, 59 at 32, 101 at 16 (whose 33 MB buffer is past
# glibc's mmap threshold, so every call page-faults it in afresh).
CPU_CHECKPOINT = 64


def ssd_reference(x, dt, A, B, C, D, h0, is_init):
    """x [Bt, T, H, P]; dt [Bt, T, H]; A, D [H]; B, C [Bt, T, G, N]; h0 [Bt, H, P, N]."""
    rep = x.shape[2] // B.shape[2]
    B, C = B.repeat_interleave(rep, dim=2), C.repeat_interleave(rep, dim=2)
    h = h0
    ys = []
    keeps = (~is_init).to(x.dtype).unbind(1)  # unbind: see mamba1.selective_scan_reference
    for x_t, dt_t, B_t, C_t, keep in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1), keeps):
        a = torch.exp(dt_t * A)[:, :, None, None]
        h = keep[:, None, None, None] * a * h + (dt_t[..., None] * x_t)[..., None] * B_t[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C_t) + D[:, None] * x_t)
    return torch.stack(ys, dim=1), h


def segsum(a: Tensor) -> Tensor:
    """out[..., i, j] = sum(a[..., j+1 : i+1]) for j <= i, -inf above the diagonal.

    Summing a masked copy (rather than differencing a cumsum) keeps float32 exact
    enough for long chunks; this is ssd_minimal's stable form.
    """
    L = a.shape[-1]
    a = a[..., None].expand(*a.shape, L)
    below = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a.device), diagonal=-1)
    out = torch.cumsum(a.masked_fill(~below, 0), dim=-2)
    on_or_below = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a.device))
    return out.masked_fill(~on_or_below, -torch.inf)


def ssd_chunked(x, dt, A, B, C, D, h0, is_init, chunk_size: int = 64):
    """Same contract as ``ssd_reference``. Heads are split as (group g, head-in-group r), so
    B and C are never repeated per head; einsums have two operands so their cost is known.
    """
    Bt, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G
    seg = segment_ids(is_init)
    L = min(chunk_size, T)
    pad = (-T) % L
    if pad:  # zero input and zero dt: the state passes through unchanged
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
        seg = F.pad(seg, (0, pad), mode="replicate")
    nc = (T + pad) // L
    B, C = B.reshape(Bt, nc, L, G, N), C.reshape(Bt, nc, L, G, N)
    xdt = (x * dt[..., None]).reshape(Bt, nc, L, G, R, P)
    dA = (dt * A).reshape(Bt, nc, L, G, R).permute(0, 3, 4, 1, 2)  # [Bt, G, R, c, L]
    cum = torch.cumsum(dA, dim=-1)
    seg = seg.reshape(Bt, nc, L)
    same_seg = seg[:, :, :, None] == seg[:, :, None, :]  # [Bt, c, L(t), L(s)]

    # 1. within each chunk: masked "attention" (C_t . B_s) exp(sum dA_{s+1..t}) x_s dt_s
    decay = torch.exp(segsum(dA).masked_fill(~same_seg[:, None, None], -torch.inf))
    scores = torch.einsum("bclgn,bcsgn->bgcls", C, B)[:, :, None] * decay  # [Bt,G,R,c,L,L]
    y_diag = torch.einsum("bgrcls,bcsgrp->bclgrp", scores, xdt)

    # 2. state at the end of each chunk, from that chunk's own inputs (last segment only)
    end_seg = seg[:, :, -1]  # [Bt, c]
    in_last = (seg == end_seg[..., None]).to(x.dtype)  # [Bt, c, L]
    decay_to_end = torch.exp(cum[..., -1:] - cum) * in_last[:, None, None]  # [Bt,G,R,c,L]
    weighted = xdt * decay_to_end.permute(0, 3, 4, 1, 2)[..., None]  # [Bt,c,L,G,R,P]
    states = torch.einsum("bclgn,bclgrp->bcgrpn", B, weighted).reshape(Bt, nc, H, P, N)

    # 3. carry states across chunks; a reset anywhere in between cuts the carry
    states = torch.cat([h0[:, None], states], dim=1)  # [Bt, c+1, H, P, N]
    seg_at = F.pad(end_seg, (1, 0))  # segment of each carried state; h0 is segment 0
    chunk_decay = segsum(F.pad(cum[..., -1], (1, 0))).reshape(Bt, H, nc + 1, nc + 1)
    carry_ok = seg_at[:, :, None] == seg_at[:, None, :]
    carry = torch.exp(chunk_decay.masked_fill(~carry_ok[:, None], -torch.inf))
    states = torch.einsum("bhzc,bchpn->bzhpn", carry, states)
    states_in, final = states[:, :-1], states[:, -1]

    # 4. contribution of the state entering each chunk, for steps still in its segment
    reach = (seg == seg_at[:, :-1, None]).to(x.dtype)[:, None, None] * torch.exp(cum)  # [Bt,G,R,c,L]
    y_off = torch.einsum("bclgn,bcgrpn->bclgrp", C, states_in.reshape(Bt, nc, G, R, P, N))
    y_off = y_off * reach.permute(0, 3, 4, 1, 2)[..., None]

    y = (y_diag + y_off).reshape(Bt, nc * L, H, P)[:, :T]
    return y + D[:, None] * x[:, :T], final


def ssd_step(x, dt, A, B, C, D, h):
    """One step: x [Bt, H, P]; dt [Bt, H]; B, C [Bt, G, N]; h [Bt, H, P, N] (zeroed on reset)."""
    rep = x.shape[1] // B.shape[1]
    B, C = B.repeat_interleave(rep, dim=1), C.repeat_interleave(rep, dim=1)
    h = torch.exp(dt * A)[..., None, None] * h + (dt[..., None] * x)[..., None] * B[:, :, None]
    return torch.einsum("bhpn,bhn->bhp", h, C) + D[:, None] * x, h


class Mamba2Mixer(nn.Module):
    """The Mamba2 block of mamba-ssm's ``Mamba2`` (ngroups groups of B/C, gated RMSNorm).

    x [B, T, d_model] -> in_proj -> z [d_inner], xBC [d_inner + 2*G*N], dt [H] ->
    causal conv + SiLU on xBC -> SSD over heads [H, headdim] -> RMSNorm(y * SiLU(z))
    -> out_proj. State: conv ``[B, d_inner + 2*G*N, d_conv-1]``, ssm ``[B, H, headdim, N]``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 32,
        ngroups: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        chunk_size: int = 64,
        use_kernels: bool | str = "auto",
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.headdim, self.ngroups = headdim, ngroups
        self.nheads = self.d_inner // headdim
        self.chunk_size = chunk_size
        self.use_kernels = use_kernels
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=False)
        self.conv_weight, self.conv_bias = depthwise_conv_parameters(self.conv_dim, d_conv)
        self.dt_bias = nn.Parameter(dt_bias_init(self.nheads, dt_min, dt_max))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        no_weight_decay(self.A_log, self.D, self.dt_bias)   # as mamba-ssm (networks/ssm/param_groups.py)
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"conv": (self.conv_dim, self.d_conv - 1), "ssm": (self.nheads, self.headdim, self.d_state)}

    def _split(self, zxbcdt: Tensor):
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _split_xbc(self, xbc: Tensor):
        GN = self.ngroups * self.d_state
        x, Bm, Cm = xbc.split([self.d_inner, GN, GN], dim=-1)
        lead = x.shape[:-1]
        return (x.reshape(*lead, self.nheads, self.headdim),
                Bm.reshape(*lead, self.ngroups, self.d_state),
                Cm.reshape(*lead, self.ngroups, self.d_state))

    def _gated_norm_out(self, y: Tensor, z: Tensor) -> Tensor:
        """RMSNorm(y * SiLU(z)) per group of d_inner / ngroups channels, then out_proj."""
        return self._norm_out(y.reshape(*z.shape) * F.silu(z))

    def _norm_out(self, g: Tensor) -> Tensor:
        """The gated output g = y * SiLU(z) [.., d_inner] -> RMSNorm per group, weight, out_proj."""
        shape = g.shape
        g = g.reshape(*shape[:-1], self.ngroups, -1)
        g = F.rms_norm(g, g.shape[-1:], eps=cpu_mamba2.GATE_EPS).reshape(shape) * self.norm_weight
        return self.out_proj(g)

    def prepare(self, x, conv_state, is_init=None):
        """in_proj -> causal conv + SiLU on xBC -> SSD inputs, shared by every path (kernels too).

        Sequence mode when ``is_init`` is given (x [B, T, d_model]), else one step (x [B, d_model]).
        Returns x [.., H, P], z, dt (after softplus), A, B, C [.., G, N] and the new conv state.
        """
        z, xbc, dt, A, conv_state = self._conv_inputs(x, conv_state, is_init)
        xh, Bm, Cm = self._split_xbc(xbc)
        return xh, z, dt, A, Bm, Cm, conv_state

    def _conv_inputs(self, x, conv_state, is_init=None):
        """in_proj -> z, SiLU(causal conv(xBC)) [.., conv_dim] unsplit, dt (after softplus), A and
        the new conv state. A sequence's conv, reset masks and SiLU are one pass: on the CPU in
        C++ (cpu_scan), on CUDA in Triton (triton_conv)."""
        z, xbc, dt = self._split(self.in_proj(x))
        if is_init is not None and cpu_scan.wanted(xbc):
            xbc, conv_state = cpu_scan.causal_conv1d_silu(xbc, self.conv_weight, self.conv_bias, conv_state, is_init)
        elif is_init is not None and kernels.wants_triton_conv(self.use_kernels, xbc, "Mamba2 conv + SiLU"):
            from networks.ssm import triton_conv   # one kernel instead of the cat/mask chain below

            xbc, conv_state = triton_conv.causal_conv1d_silu(xbc, self.conv_weight, self.conv_bias, conv_state,
                                                             is_init)
        else:
            if is_init is None:
                xbc, conv_state = causal_conv1d_step(xbc, self.conv_weight, self.conv_bias, conv_state)
            else:
                xbc, conv_state = causal_conv1d(xbc, self.conv_weight, self.conv_bias, conv_state, is_init)
            xbc = F.silu(xbc)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.to(x.dtype))
        return z, xbc, dt, A, conv_state

    def forward(self, x, is_init=None, conv_state=None, ssm_state=None, scan: str = "chunked"):
        """x [B, T, d_model], is_init [B, T] -> y [B, T, d_model], new conv and ssm states.
        Without is_init / states: one fresh sequence (mamba1.fresh_state)."""
        if is_init is None or conv_state is None or ssm_state is None:
            is_init, conv_state, ssm_state = fresh_state(self, x, is_init, conv_state, ssm_state)
        if kernels.wanted(self.use_kernels, x):
            return kernels.mamba2_forward(self, x, is_init, conv_state, ssm_state)
        if scan != "reference" and cpu_mamba2.wanted(x):  # the C++ SSD reads the conv output in place
            z, xbc, dt, A, conv_state = self._conv_inputs(x, conv_state, is_init)
            y, ssm_state = cpu_mamba2.ssd_xbc(xbc, dt, A, self.D, ssm_state, is_init, CPU_CHECKPOINT)
            g = cpu_mamba2.gated_rms_norm(y, z, self.norm_weight, self.ngroups)
            return self.out_proj(g), conv_state, ssm_state
        xh, z, dt, A, Bm, Cm, conv_state = self.prepare(x, conv_state, is_init)
        if scan == "reference":
            y, ssm_state = ssd_reference(xh, dt, A, Bm, Cm, self.D, ssm_state, is_init)
        else:
            y, ssm_state = ssd_chunked(xh, dt, A, Bm, Cm, self.D, ssm_state, is_init, self.chunk_size)
        return self._gated_norm_out(y, z), conv_state, ssm_state

    def step(self, x, conv_state, ssm_state):
        """x [B, d_model]; states already zeroed where an episode starts."""
        path = kernels.step_path(self.use_kernels, x, "Mamba2 acting step")
        if path == "triton":
            from networks.ssm import triton_step

            return triton_step.mamba2_step(self, x, conv_state, ssm_state)
        if path == "mamba_ssm":
            return kernels.mamba2_step(self, x, conv_state, ssm_state)
        xh, z, dt, A, Bm, Cm, conv_state = self.prepare(x, conv_state)
        y, ssm_state = ssd_step(xh, dt, A, Bm, Cm, self.D, ssm_state)
        return self._gated_norm_out(y, z), conv_state, ssm_state
