"""Depthwise causal conv1d with a carried state and per-step resets (pure PyTorch).

Mamba's short convolution sees the last ``d_conv`` inputs of a channel. In RL a row
of a batch can hold several episodes, so a tap must not read an input from before the
most recent reset. ``causal_conv1d`` masks every tap whose input lies in an earlier
segment; the carried ``conv_state`` (the last ``d_conv - 1`` inputs) is part of the
memory, exactly as in mamba-ssm's inference cache.

Shapes: x ``[B, T, C]``, weight ``[C, K]`` (K = d_conv), bias ``[C]``,
conv_state ``[B, C, K-1]`` (oldest first), is_init ``[B, T]`` bool.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def segment_ids(is_init: Tensor) -> Tensor:
    """Segment index of every step: 0 until the first reset, +1 at each reset. [B, T] long."""
    return is_init.long().cumsum(-1)


def causal_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor, is_init: Tensor
) -> tuple[Tensor, Tensor]:
    """Returns (pre-activation output [B, T, C], new conv_state [B, C, K-1])."""
    B, T, C = x.shape
    K = weight.shape[-1]
    seg = segment_ids(is_init)  # [B, T]
    # The carried inputs belong to segment 0 (valid only until the first reset).
    x_pad = torch.cat([conv_state.transpose(1, 2), x], dim=1)  # [B, K-1+T, C]
    seg_pad = torch.cat([seg.new_zeros(B, K - 1), seg], dim=1)  # [B, K-1+T]
    out = x * weight[:, K - 1] if bias is None else torch.addcmul(bias, x, weight[:, K - 1])
    for k in range(1, K):  # tap k reads the input k steps back
        lo = K - 1 - k
        same = (seg_pad[:, lo : lo + T] == seg).unsqueeze(-1).to(x.dtype)
        out = out + x_pad[:, lo : lo + T] * same * weight[:, K - 1 - k]
    # New state: last K-1 inputs, zeroed where they precede the last reset of the row.
    tail = x_pad[:, T:]  # [B, K-1, C]
    keep = (seg_pad[:, T:] == seg[:, -1:]).unsqueeze(-1).to(x.dtype)
    return out, (tail * keep).transpose(1, 2)


def causal_conv1d_step(
    x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor
) -> tuple[Tensor, Tensor]:
    """One step: x [B, C], conv_state [B, C, K-1] (already zeroed on reset)."""
    window = torch.cat([conv_state, x.unsqueeze(-1)], dim=-1)  # [B, C, K]
    out = (window * weight).sum(-1)
    if bias is not None:
        out = out + bias
    return out, window[..., 1:]


def depthwise_conv_parameters(channels: int, d_conv: int) -> tuple[nn.Parameter, nn.Parameter]:
    """(weight [C, K], bias [C]) initialised as nn.Conv1d(C, C, K, groups=C) would be."""
    bound = 1 / math.sqrt(d_conv)
    weight = nn.Parameter(torch.empty(channels, d_conv).uniform_(-bound, bound))
    bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))
    return weight, bias
