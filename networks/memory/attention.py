"""Kind ``transformer``: causal attention over a sliding window of past embeddings.

The state holds, per layer, the last ``context`` inputs of that layer (the residual
stream, not keys/values: smaller, and step and sequence mode then compute keys the same
way) plus a validity mask. A query attends to itself and up to ``context`` earlier
steps of its own episode; positions enter as a learned per-head bias on the distance
(0..context), which stays exact when the window slides. Step mode is the sequence code
with T=1. Long sequences are processed in query blocks so memory is O(T * context).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PAD_SEG, INVALID_SEG = -3, -1  # segment ids that never match a real one (>= 0)


class WindowedAttentionLayer(nn.Module):
    """Pre-norm block: h = u + Attn(LN(u), window); h = h + FF(LN(h)).  u: [B, T, D]."""

    def __init__(self, d_model: int, num_heads: int, context: int, ff_mult: int, block: int):
        super().__init__()
        self.h, self.dh, self.context, self.block = num_heads, d_model // num_heads, context, block
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q, self.kv, self.o = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model), nn.Linear(d_model, d_model)
        self.rel_bias = nn.Parameter(torch.zeros(num_heads, context + 1))
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(),
                                nn.Linear(ff_mult * d_model, d_model))

    def forward(self, u, seg, window, window_valid):
        """seg [B, T] segment ids (0 = same episode as the window); window [B, C, D]."""
        B, T, D = u.shape
        C, Q = self.context, min(T, self.block)
        nb = math.ceil(T / Q)
        pad = nb * Q - T
        src = torch.cat([window, u], dim=1)  # [B, C+T, D]
        src_seg = torch.cat([torch.where(window_valid > 0, 0, INVALID_SEG).to(seg.dtype), seg], 1)
        # Keep the last C inputs; entries from before the last reset are zeroed, so the
        # state is the same whether it was built step by step or in one call.
        new_valid = (src_seg[:, T:] == seg[:, -1:]).to(u.dtype)
        new_window = src[:, T:] * new_valid[..., None]

        q = self.q(self.ln1(F.pad(u, (0, 0, 0, pad))))  # [B, nb*Q, D]
        k, v = self.kv(self.ln1(F.pad(src, (0, 0, 0, pad)))).chunk(2, dim=-1)  # [B, C+nb*Q, D]
        q_seg = F.pad(seg, (0, pad), value=PAD_SEG).reshape(B, nb, Q)
        k_seg = F.pad(src_seg, (0, pad), value=PAD_SEG).unfold(1, C + Q, Q)  # [B, nb, C+Q]
        q = q.reshape(B, nb, Q, self.h, self.dh)
        k, v = (t.unfold(1, C + Q, Q).reshape(B, nb, self.h, self.dh, C + Q) for t in (k, v))
        scores = torch.einsum("bnqhd,bnhdk->bnhqk", q, k) / math.sqrt(self.dh)
        dist = C + torch.arange(Q, device=u.device)[:, None] - torch.arange(C + Q, device=u.device)
        scores = scores + self.rel_bias[:, dist.clamp(0, C)]  # [H, Q, C+Q] broadcast
        ok = (dist >= 0) & (dist <= C) & (q_seg[..., :, None] == k_seg[..., None, :])  # [B,nb,Q,C+Q]
        scores = scores.masked_fill(~ok[:, :, None], -torch.inf)
        att = torch.einsum("bnhqk,bnhdk->bnqhd", scores.softmax(-1), v).reshape(B, nb * Q, D)[:, :T]
        h = u + self.o(att)
        return h + self.ff(self.ln2(h)), new_window, new_valid


class WindowedTransformer(nn.Module):
    """Core for kind ``transformer``. State: window ``[L, context, hidden]``, mask ``[context]``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, num_heads: int = 4,
                 context: int = 32, ff_mult: int = 4, block: int = 64):
        super().__init__()
        self.context, self.hidden = context, hidden_size
        self.in_proj = nn.Linear(input_size, hidden_size) if input_size != hidden_size else nn.Identity()
        self.layers = nn.ModuleList(WindowedAttentionLayer(hidden_size, num_heads, context, ff_mult, block)
                                    for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden_size)

    def state_shapes(self):
        return {"window": (len(self.layers), self.context, self.hidden), "mask": (self.context,)}

    def sequence(self, x, is_init, states):
        seg = is_init.long().cumsum(-1)
        h = self.in_proj(x)
        windows, valid = [], states["mask"]
        for l, layer in enumerate(self.layers):
            h, w, v = layer(h, seg, states["window"][:, l], states["mask"])
            windows.append(w)
            valid = v  # identical for every layer: it depends only on the resets
        return self.out_norm(h), {"window": torch.stack(windows, 1), "mask": valid}

    def step(self, x, states):
        is_init = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
        y, states = self.sequence(x[:, None], is_init, states)
        return y[:, 0], states
