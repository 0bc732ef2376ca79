"""VMamba-TD3 networks (seed 004): depth + state sequences -> actor action / twin critic Q.

Per sample: depth [K, 1, H, W], state [K, 11] (K = seq_len, 4 by default).
    depth -> VMambaRLTiny per frame (K folded into the batch) -> [K, visual_dim]
    state -> StateMLP                                          -> [K, state_feature_dim]
    concat -> FusionMLP -> TemporalMamba over the K steps      -> [K, d_model]
    CrossAttentionPool (query: last step; keys/values: all K)   -> feature [d_model]
Baselines (``temporal``): "gru" swaps TemporalMamba for TemporalGRU (same layout and pool);
"none" is the K-frame stack (FrameStackMLP over the K fused features concatenated, no attention).
``pool`` chooses the last stage apart from ``temporal`` ("attention" or "concat", FrameStackMLP; "auto"
pairs them as above), so that a comparison can separate the temporal stage from the pool.
Actor: LayerNorm-MLP head -> tanh action [action_dim]. Critic: one encoder, two Q heads.
Any leading batch dims are accepted: depth [*B, K, 1, H, W], state [*B, K, 11].

VMambaRLTiny: PatchEmbed (p x p conv) -> 4 stages of VSSBlocks (SS2D, networks.ssm.ss2d) with
PatchMerging between stages -> LayerNorm -> global average pool -> Linear. Stage 1 is 64 wide
as in the seed; VMamba doubles the width per stage, which at 64 gives 64/128/256/512 and
7-14M parameters per backbone (by block ratios), far over the seed's ~2M for the whole model. The
default widths here are DEFAULT_DIMS (see there): the two encoders, heads included, come to
~2M trainable parameters at 64x64, K=4 (``parameter_report()`` prints the table).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from networks.models.loco_encoder import MambaFusionLayer
from networks.params import count_parameters, parameter_table
from networks.ssm.ss2d import SS2D

# Stage widths. Stage 1 is 64 (seed). The budget is ~2M trainable parameters for actor +
# critic, i.e. two encoders, of which the non-backbone parts (StateMLP, FusionMLP, TemporalMamba,
# attention pool, heads; d_model 128, heads 256 wide) take ~0.77M, leaving ~0.6M per backbone.
# VMamba's doubling (64/128/256/512) would be 7.3M per backbone, so the widths grow slowly instead,
# with VSS blocks of ssm_ratio 1 and mlp_ratio 2 (VMamba v2 uses ssm_ratio 1, mlp_ratio 4):
# actor + critic = 2.03M at 64x64 (printed by parameter_report()).
DEFAULT_DIMS = (64, 64, 80, 96)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class VSSBlock(nn.Module):
    """x + SS2D(LN(x)), then x + MLP(LN(x)) if mlp_ratio > 0. [B, H, W, C] -> [B, H, W, C]."""

    def __init__(self, dim: int, d_state: int = 8, ssm_ratio: float = 1.0, mlp_ratio: float = 2.0,
                 drop_path: float = 0.0, **ss2d_options):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, d_state=d_state, ssm_ratio=ssm_ratio, **ss2d_options)
        self.drop_path = DropPath(drop_path)
        self.mlp = None
        if mlp_ratio > 0:
            hidden = int(dim * mlp_ratio)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):                                       # [B, H, W, C]
        x = x + self.drop_path(self.ss2d(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class PatchEmbed(nn.Module):
    """[B, C_in, H, W] -> p x p conv, stride p -> LayerNorm -> [B, H/p, W/p, dim]."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Swin/VMamba downsampling: 2x2 neighbours concatenated -> LN -> Linear.

    [B, H, W, dim] -> [B, ceil(H/2), ceil(W/2), out_dim] (out_dim = 2*dim by default; an odd
    side is zero-padded, e.g. 48x48 input: 12 -> 6 -> 3 -> 2).
    """

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x):
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = nn.functional.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class VMambaRLTiny(nn.Module):
    """Depth image [N, in_chans, H, W] -> pooled feature [N, out_dim] (and the last stage map).

    ``dims``: an int d means VMamba's doubling (d, 2d, 4d, 8d); a sequence gives every stage.
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, patch_size: int = 4,
                 depths=(2, 2, 4, 2), dims=DEFAULT_DIMS, d_state: int = 8, ssm_ratio: float = 1.0,
                 mlp_ratio: float = 2.0, drop_path: float = 0.0, out_dim: int = 128,
                 chunk_size: int = 16, scan: str = "chunked", use_kernels: bool | str = "auto"):
        super().__init__()
        dims = [dims * 2**i for i in range(len(depths))] if isinstance(dims, int) else list(dims)
        if len(dims) != len(depths) or not depths:
            raise ValueError(f"need one width per stage: depths={list(depths)}, dims={dims}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.in_chans, self.image_size, self.out_dim = in_chans, image_size, out_dim
        self.patch_embed = PatchEmbed(in_chans, dims[0], patch_size)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        opts = dict(d_state=d_state, ssm_ratio=ssm_ratio, mlp_ratio=mlp_ratio, chunk_size=chunk_size,
                    scan=scan, use_kernels=use_kernels)
        self.stages = nn.ModuleList()
        for s, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = [VSSBlock(dim, drop_path=rates.pop(0), **opts) for _ in range(depth)]
            if s + 1 < len(dims):
                blocks.append(PatchMerging(dim, dims[s + 1]))
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], out_dim)
        side = image_size // patch_size
        for _ in dims[1:]:
            side = (side + 1) // 2
        self.final_grid = (side, side)

    def forward(self, x, return_features: bool = False):
        """x [N, in_chans, image_size, image_size] -> [N, out_dim] (+ last map [N, h, w, C])."""
        want = (self.in_chans, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"VMambaRLTiny expects depth [N, {', '.join(map(str, want))}], "
                             f"got {list(x.shape)} (image_size is set at construction)")
        h = self.patch_embed(x)                                 # [N, H/p, W/p, dims[0]]
        for stage in self.stages:
            h = stage(h)                                        # [N, h, w, dims[-1]] at the end
        h = self.norm(h)
        out = self.head(h.mean((1, 2)))                         # [N, out_dim]
        return (out, h) if return_features else out


def mlp(sizes, norm_input: bool = False) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU for each hidden layer, plain Linear last (seed's heads)."""
    layers = [nn.LayerNorm(sizes[0])] if norm_input else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i + 2 < len(sizes):
            layers += [nn.LayerNorm(b), nn.ReLU()]
    return nn.Sequential(*layers)


class StateMLP(nn.Module):
    """[*, state_dim] -> Linear -> ReLU -> Linear -> [*, out_dim] (seed's StateMLP)."""

    def __init__(self, state_dim: int = 11, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, s):
        return self.net(s)


class FusionMLP(nn.Module):
    """concat(visual [*, Dv], state [*, Ds]) -> Linear -> LayerNorm -> ReLU -> [*, d_model]."""

    def __init__(self, visual_dim: int, state_dim: int, d_model: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(visual_dim + state_dim, d_model), nn.LayerNorm(d_model), nn.ReLU())

    def forward(self, visual, state):
        return self.net(torch.cat([visual, state], -1))


class TemporalMamba(nn.Module):
    """Mamba1 over the K steps of one sample: [B, K, d_model] -> [B, K, d_model].

    Each layer is h + Mamba1(RMSNorm(h)) (loco_encoder.MambaFusionLayer: networks.ssm.mamba1 in
    sequence mode, zero state, the K steps one fresh sequence), then LayerNorm (seed). The
    scan is causal, so step K (the attention query) has read all K steps; the seed's SS2D
    over a [K, 1] map would also scan backwards, which the attention pool covers instead.
    """

    def __init__(self, d_model: int, num_layers: int = 1, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(MambaFusionLayer(d_model, d_model, d_state, d_conv, expand)
                                    for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))

    def forward(self, x):                                       # [B, K, d_model]
        for layer, norm in zip(self.layers, self.norms):
            x = norm(layer(x))
        return x


def gru_unrolled(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """nn.GRU's output for a one-layer, batch-first GRU from a zero state, in plain tensor ops:
    x [B, K, d_in] -> [B, K, d_hidden], with the GRU's own weights (PyTorch's gate order r, z, n).

    Why by hand: CUDA graphs cannot capture cuDNN's RNN kernels (agents/algos/cuda_graph_train.py),
    so on CUDA a TD3 run with a GRU temporal stage updated eagerly, at ~60% of the graphed runs'
    rate. For the K=4 steps of a window the unrolled loop is 1 + K small matmuls, which a graph holds.
    """
    w_ih, w_hh, b_ih, b_hh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    gi = torch.nn.functional.linear(x, w_ih, b_ih)              # [B, K, 3H], all steps at once
    h = x.new_zeros(x.shape[0], gru.hidden_size)
    out = []
    for t in range(x.shape[1]):
        gh = torch.nn.functional.linear(h, w_hh, b_hh)          # [B, 3H]
        i_r, i_z, i_n = gi[:, t].chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)                                     # (1 - z) n + z h
        out.append(h)
    return torch.stack(out, 1)


class TemporalGRU(nn.Module):
    """The recurrent baseline of TemporalMamba: a GRU over the K steps, [B, K, d] -> [B, K, d].

    Each layer is h + GRU(RMSNorm(h)) (a zero initial state: the K steps are one fresh sequence),
    then LayerNorm, exactly TemporalMamba's layout with the mixer swapped, so the cross-attention
    pool after it and every other part of the encoder stay the same in the comparison. On CUDA the
    GRU runs unrolled (``gru_unrolled``: the same function and weights, no cuDNN), so CUDA graphs can
    hold it (``graph_safe_rnns``, read by agents/algos/cuda_graph_train.uncapturable); on the CPU it
    is nn.GRU.
    """
    graph_safe_rnns = True

    def __init__(self, d_model: int, num_layers: int = 1):
        super().__init__()
        self.norms_in = nn.ModuleList(nn.RMSNorm(d_model, eps=1e-5) for _ in range(num_layers))
        self.grus = nn.ModuleList(nn.GRU(d_model, d_model, batch_first=True) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))

    def forward(self, x):                                       # [B, K, d_model]
        for norm_in, gru, norm in zip(self.norms_in, self.grus, self.norms):
            y = gru_unrolled(gru, norm_in(x)) if x.is_cuda else gru(norm_in(x))[0]
            x = norm(x + y)
        return x


TEMPORAL = ("mamba", "gru", "none")   # SequenceEncoder's temporal stages (agents/drone/config.py: model.temporal)
POOLS = ("auto", "attention", "concat")  # its pools (model.pool); auto: attention after mamba/gru, concat after none


class FrameStackMLP(nn.Module):
    """The feed-forward baseline's temporal stage: [B, K, D] -> [B, D] from the K frames concatenated.

    No memory beyond the K-frame window and no attention: what "K-frame stack, ``none``
    memory" means for the comparison with TemporalMamba + attention pooling.
    """

    def __init__(self, d_model: int, K: int):
        super().__init__()
        self.K = K
        self.net = nn.Sequential(nn.Linear(K * d_model, d_model), nn.ReLU(), nn.LayerNorm(d_model))

    def forward(self, x):                                       # [B, K, D]
        if x.shape[1] != self.K:
            raise ValueError(f"FrameStackMLP was built for K={self.K} frames, got {x.shape[1]}")
        return self.net(x.flatten(1))


class CrossAttentionPool(nn.Module):
    """Last step attends over all K steps: [B, K, D] -> (pooled [B, D], weights [B, heads, K]).

    pooled = LayerNorm(x_K + MHA(q=x_K, k=v=x)); the weights (softmax over K, per head) are
    returned for plotting.
    """

    def __init__(self, d_model: int, num_heads: int = 4):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide d_model={d_model}")
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x):
        q = x[:, -1:]                                           # [B, 1, D]
        out, w = self.attn(q, x, x, need_weights=True, average_attn_weights=False)
        return self.norm(q[:, 0] + out[:, 0]), w[:, :, 0]       # [B, D], [B, heads, K]


class SequenceEncoder(nn.Module):
    """depth [*B, K, in_chans, H, W] + state [*B, K, state_dim] -> feature [*B, d_model].

    ``forward(depth, state, return_attention=False, return_features=False)`` returns the
    feature alone, or (feature, extras) with extras["attention"] [*B, heads, K] and/or
    extras["features"] (the backbone's last stage maps, [*B, K, h, w, C]) when asked.
    """

    def __init__(self, in_chans: int = 1, image_size: int = 64, state_dim: int = 11,
                 visual_dim: int = 128, state_feature_dim: int = 128, d_model: int = 128,
                 temporal_layers: int = 1, temporal_d_state: int = 16, temporal_expand: int = 2,
                 num_heads: int = 4, temporal: str = "mamba", seq_len: int = 4, pool: str = "auto",
                 **backbone_options):
        super().__init__()
        if temporal not in TEMPORAL:
            raise ValueError(f"temporal must be one of {list(TEMPORAL)} (none: the K-frame stack baseline), "
                             f"got {temporal!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {list(POOLS)} (auto: attention after mamba/gru, concat "
                             f"after none), got {pool!r}")
        if pool == "auto":
            pool = "concat" if temporal == "none" else "attention"
        self.state_dim, self.d_model = state_dim, d_model
        self.backbone = VMambaRLTiny(in_chans, image_size, out_dim=visual_dim, **backbone_options)
        self.state_mlp = StateMLP(state_dim, state_feature_dim)
        self.fusion = FusionMLP(visual_dim, state_feature_dim, d_model)
        if temporal == "mamba":
            self.temporal = TemporalMamba(d_model, temporal_layers, temporal_d_state, expand=temporal_expand)
        elif temporal == "gru":
            self.temporal = TemporalGRU(d_model, temporal_layers)
        else:
            self.temporal = nn.Identity()
        # The pool is a separate choice so that the comparison can tell the temporal stage's effect from
        # the pool's (td3_encoder_fit.md: the seed's pairing, mamba + attention, against mamba + concat).
        self.pool = CrossAttentionPool(d_model, num_heads) if pool == "attention" else FrameStackMLP(d_model, seq_len)

    def forward(self, depth, state, return_attention: bool = False, return_features: bool = False):
        if depth.dim() < 4 or state.dim() < 2 or depth.shape[:-3] != state.shape[:-1]:  # *B may be empty
            raise ValueError(f"expected depth [*B, K, C, H, W] and state [*B, K, {self.state_dim}] with "
                             f"the same [*B, K], got depth {list(depth.shape)}, state {list(state.shape)}")
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state's last dim must be state_dim={self.state_dim}, got {list(state.shape)}")
        batch, K = depth.shape[:-4], depth.shape[-4]
        frames = depth.reshape(-1, *depth.shape[-3:])           # [N*K, C, H, W]
        visual, maps = self.backbone(frames, return_features=True)
        visual = visual.reshape(-1, K, visual.shape[-1])        # [N, K, visual_dim]
        s = self.state_mlp(state.reshape(-1, K, self.state_dim))
        h = self.temporal(self.fusion(visual, s))               # [N, K, d_model]
        if isinstance(self.pool, FrameStackMLP):                # no attention: uniform weights
            feature, weights = self.pool(h), h.new_full((h.shape[0], 1, K), 1.0 / K)
        else:
            feature, weights = self.pool(h)                     # [N, d_model], [N, heads, K]
        feature = feature.reshape(*batch, self.d_model)
        if not (return_attention or return_features):
            return feature
        extras = {}
        if return_attention:
            extras["attention"] = weights.reshape(*batch, *weights.shape[1:])
        if return_features:
            extras["features"] = maps.reshape(*batch, K, *maps.shape[1:])
        return feature, extras


def _init_last(layer: nn.Linear, scale: float = 3e-3):
    nn.init.uniform_(layer.weight, -scale, scale)
    nn.init.zeros_(layer.bias)


class VMambaActor(nn.Module):
    """(depth, state) -> tanh action [*B, action_dim] in [-1, 1]; scaling to m/s is the env's."""

    def __init__(self, encoder: SequenceEncoder, action_dim: int = 3, hidden_dim: int = 256):
        super().__init__()
        self.encoder = encoder
        self.head = mlp([encoder.d_model, hidden_dim, hidden_dim, action_dim], norm_input=True)
        _init_last(self.head[-1])

    def act(self, feature):   # encoder feature [*B, d_model] -> action (a shared encoder's caller encodes)
        return torch.tanh(self.head(feature))

    def forward(self, *obs):  # (depth, state) here; any encoder's inputs (e.g. memory_encoder)
        return self.act(self.encoder(*obs))


class VMambaCritic(nn.Module):
    """(depth, state, action [*B, action_dim]) -> (q1, q2), each [*B, 1].

    The twin Q heads share this critic's encoder (the actor has its own: the seed's two
    streams). Sharing keeps the critic at one encoder's cost; TD3's clipped double-Q needs two
    estimates that err differently, and separately initialised heads give that while both
    TD errors train the shared encoder. ``q_heads(feature, action)`` lets the agent encode
    once (e.g. under no_grad in the actor update) and evaluate both heads.
    """

    def __init__(self, encoder: SequenceEncoder, action_dim: int = 3, hidden_dim: int = 256):
        super().__init__()
        self.encoder = encoder
        self.action_dim = action_dim
        sizes = [encoder.d_model + action_dim, hidden_dim, hidden_dim, 1]
        self.q1, self.q2 = mlp(sizes, norm_input=True), mlp(sizes, norm_input=True)

    def q_heads(self, feature, action):
        if action.shape[-1] != self.action_dim or action.shape[:-1] != feature.shape[:-1]:
            raise ValueError(f"action must be [*B, {self.action_dim}] matching the feature's "
                             f"{list(feature.shape[:-1])}, got {list(action.shape)}")
        x = torch.cat([feature, action], -1)
        return self.q1(x), self.q2(x)

    def forward(self, *obs_and_action):  # (depth, state, action), or any encoder's inputs + action
        return self.q_heads(self.encoder(*obs_and_action[:-1]), obs_and_action[-1])


TD3_NETWORK_DEFAULTS = dict(
    in_chans=1, image_size=64, patch_size=4, depths=(2, 2, 4, 2), dims=DEFAULT_DIMS, d_state=8,
    ssm_ratio=1.0, mlp_ratio=2.0, drop_path=0.0, chunk_size=16, scan="chunked", use_kernels="auto",
    state_dim=11, visual_dim=128, state_feature_dim=128, d_model=128, temporal_layers=1,
    temporal_d_state=16, temporal_expand=2, num_heads=4, action_dim=3, hidden_dim=256,
    temporal="mamba", seq_len=4, pool="auto",
)


def build_td3_networks(cfg: dict | None = None, **kwargs):
    """(actor, critic), each with its own SequenceEncoder. Keys: TD3_NETWORK_DEFAULTS.

    Target copies are the agent's (copy.deepcopy); ``parameter_report`` counts them.
    """
    given = {**(cfg or {}), **kwargs}
    unknown = sorted(set(given) - set(TD3_NETWORK_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown VMamba-TD3 option(s) {unknown}; allowed: {sorted(TD3_NETWORK_DEFAULTS)}")
    c = {**TD3_NETWORK_DEFAULTS, **given}
    action_dim, hidden_dim = c.pop("action_dim"), c.pop("hidden_dim")
    actor = VMambaActor(SequenceEncoder(**c), action_dim, hidden_dim)
    critic = VMambaCritic(SequenceEncoder(**c), action_dim, hidden_dim)
    return actor, critic


def parameter_report(actor: nn.Module | None = None, critic: nn.Module | None = None, **cfg) -> str:
    """Parameter table (actor/critic by part, targets, totals); builds the networks if not given."""
    if actor is None or critic is None:
        actor, critic = build_td3_networks(cfg)
    parts = {}
    for name, net in (("actor", actor), ("critic", critic)):
        e = net.encoder
        for part, m in (("backbone", e.backbone), ("state_mlp", e.state_mlp), ("fusion", e.fusion),
                        ("temporal", e.temporal), ("attn_pool", e.pool)):
            parts[f"{name}.{part}"] = m
        parts[f"{name}.heads"] = [m for n, m in net.named_children() if n != "encoder"]
    parts = {k: nn.ModuleList(v) if isinstance(v, list) else v for k, v in parts.items()}
    trainable = count_parameters(actor, critic, trainable=True)
    lines = ["trainable, by part (total = actor + critic):", parameter_table(parts), "",
             "with the agent's target copies (deepcopy):",
             parameter_table({"actor": actor, "critic": critic, "actor_target": copy.deepcopy(actor),
                              "critic_target": copy.deepcopy(critic)}), "",
             f"trainable (actor + critic, requires_grad): {trainable:,d}"]
    return "\n".join(lines)


__all__ = ["SS2D", "VSSBlock", "PatchEmbed", "PatchMerging", "VMambaRLTiny", "StateMLP", "FusionMLP",
           "TemporalMamba", "CrossAttentionPool", "SequenceEncoder", "VMambaActor", "VMambaCritic",
           "build_td3_networks", "parameter_report", "count_parameters", "TD3_NETWORK_DEFAULTS"]


if __name__ == "__main__":  # python -m networks.models.vmamba
    print(parameter_report())
