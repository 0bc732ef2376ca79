"""LocoTransformer / LocoMamba observation encoder: one control step's observation -> one feature.

proprio [*, P] -> MLP -> 1 token; depth [*, C, H, W] -> CNN -> 4x4 map -> 16 tokens (width D)
-> + learned position embedding -> fusion layers over the 17 tokens (transformer layers, or
pre-norm residual Mamba1 blocks) -> pool: concat(proprio token, mean of visual tokens) [2D]
-> MLP -> features [*, out_dim]. The Mamba scan is causal, so there the proprio token goes last
(its output has read every visual token); attention is order-free and keeps it first. The temporal memory across control steps runs after this
(networks.make_memory); the fusion itself carries no state between steps.
"""
from __future__ import annotations

import torch
from torch import nn

from networks.ssm.mamba1 import Mamba1Mixer

FUSIONS = ("mamba", "transformer")


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear + ReLU after every layer (LocoTransformer's MLPBase)."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class DepthTokens(nn.Module):
    """LocoTransformer's CNN: 64x64 -> 15 -> 6 -> 4, then a 1x1 projection to the token width."""

    def __init__(self, channels: int, image_size: int, dim: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(),
                                  nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, stride=1), nn.ReLU())
        side = image_size
        for k, s in ((8, 4), (4, 2), (3, 1)):
            side = (side - k) // s + 1
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for the depth CNN (needs >= 36)")
        self.grid = side
        self.proj = nn.Conv2d(64, dim, 1)

    def forward(self, depth):                                   # [N, C, H, W]
        x = self.proj(self.conv(depth))                         # [N, D, g, g]
        return x.flatten(2).transpose(1, 2)                     # [N, g*g, D]


class MambaFusionLayer(nn.Module):
    """h + Mamba1(RMSNorm(h)) over the token sequence, with projections when d_model != width."""

    def __init__(self, width: int, d_model: int, d_state: int, d_conv: int, expand: int):
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=1e-5)
        self.inp = nn.Linear(width, d_model) if d_model != width else nn.Identity()
        self.mixer = Mamba1Mixer(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.out = nn.Linear(d_model, width) if d_model != width else nn.Identity()

    def forward(self, h):                                       # [N, K, D]
        y, _, _ = self.mixer(self.inp(self.norm(h)))            # each step's tokens: one fresh sequence
        return h + self.out(y)


class LocoEncoder(nn.Module):
    def __init__(self, proprio_dim: int, depth_channels: int = 4, image_size: int = 64,
                 fusion: str = "mamba", hidden_shapes=(256, 256), visual_dim: int = 256,
                 transformer_params=((1, 256), (1, 256)), mamba_params=((256, 16, 4, 2), (256, 16, 4, 2)),
                 append_hidden_shapes=(256, 256), vision_only: bool = False):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {list(FUSIONS)}, got {fusion!r}")
        self.vision_only = vision_only
        self.proprio_last = fusion == "mamba"
        D = visual_dim
        if not vision_only:
            self.proprio = nn.Sequential(mlp([proprio_dim, *hidden_shapes]),
                                         nn.Linear(([proprio_dim, *hidden_shapes])[-1], D))
        self.depth = DepthTokens(depth_channels, image_size, D)
        n_tokens = self.depth.grid**2 + (0 if vision_only else 1)
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, D))
        nn.init.normal_(self.pos, std=0.02)
        layers = []
        if fusion == "transformer":
            for entry in transformer_params:
                if len(entry) != 2 or int(entry[0]) < 1 or D % int(entry[0]):
                    raise ValueError(f"transformer_params entries are [n_heads, dim_ff] with n_heads dividing "
                                     f"visual_dim {D}, got {list(entry)}")
                layers.append(nn.TransformerEncoderLayer(D, int(entry[0]), int(entry[1]), dropout=0.0,
                                                         batch_first=True, norm_first=True))
        else:
            for entry in mamba_params:
                if len(entry) != 4 or min(map(int, entry)) < 1:
                    raise ValueError(f"mamba_params entries are [d_model, d_state, d_conv, expand], got {list(entry)}")
                layers.append(MambaFusionLayer(D, *map(int, entry)))
        self.fusion = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(D)
        self.head = mlp([2 * D, *append_hidden_shapes])
        self.out_dim = append_hidden_shapes[-1] if len(append_hidden_shapes) else 2 * D

    def forward(self, proprio, depth):
        """proprio [*B, P], depth [*B, C, H, W] -> features [*B, out_dim]"""
        batch = depth.shape[:-3]
        tokens = self.depth(depth.reshape(-1, *depth.shape[-3:]))             # [N, 16, D]
        if not self.vision_only:
            p = self.proprio(proprio.reshape(-1, proprio.shape[-1]))[:, None]  # [N, 1, D]
            tokens = torch.cat([tokens, p] if self.proprio_last else [p, tokens], 1)  # [N, 17, D]
        h = tokens + self.pos
        for layer in self.fusion:
            h = layer(h)
        h = self.norm(h)
        if self.vision_only:
            pooled = torch.cat([h.mean(1), h.amax(1)], -1)                     # [N, 2D]
        else:
            own, visual = (h[:, -1], h[:, :-1]) if self.proprio_last else (h[:, 0], h[:, 1:])
            pooled = torch.cat([own, visual.mean(1)], -1)                      # [N, 2D]
        return self.head(pooled).reshape(*batch, -1)
