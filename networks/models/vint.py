"""Image-goal navigation policies: a ViNT-style baseline and MambaViNT (seed 000).

Both map camera images + a goal image to ViNT's outputs: the temporal distance to the goal and
K future waypoints (x, y, cos yaw, sin yaw) in the robot frame. They share the tokeniser:

    ImageEncoder(3 ch):  rgb_t                 -> obs token  [dim]
    ImageEncoder(6 ch):  (rgb_t, goal_rgb)     -> goal token [dim]   (ViNT stacks obs and goal
                                                  so the goal token already says "where is it from here")

    ViNT:       tokens [obs_{t-C+1} .. obs_t, goal_t] + positions -> transformer (pre-norm) -> flatten
                -> MLP -> heads.  Memory = the last C frames, nothing older.
    MambaViNT:  Linear([obs_t, goal_t]) -> make_memory("mamba2") over the whole trajectory
                (state carried step to step, reset when a new goal starts) -> MLP -> heads.

Deployment is the same for both: ``initial_state(batch)`` then ``step(rgb, goal_rgb, state,
is_init)``, one control step at a time, batch first; ViNT's state is the token window of the
last C-1 frames (each frame is encoded once), MambaViNT's the Mamba conv/ssm state.
Training calls ``forward`` on whole chunks: ViNT on i.i.d. context windows, MambaViNT on
consecutive chunks of trajectories with the state handed from one chunk to the next.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor, nn

from networks.memory.factory import make_memory
from networks.params import count_parameters


def image_to_float(x: Tensor, dtype=torch.float32) -> Tensor:
    """uint8 [..., C, H, W] in 0..255 -> ``dtype`` in [-0.5, 0.5] (floats are only cast)."""
    return x.to(dtype) / 255.0 - 0.5 if x.dtype == torch.uint8 else x.to(dtype)


class ImageEncoder(nn.Module):
    """[..., C, H, W] -> [..., dim]: four stride-2 convs (GroupNorm, SiLU) and a linear layer over
    the flattened H/16 x W/16 map. Why a small CNN instead of ViNT's EfficientNet-B0: 64 px
    images of a synthetic scene, CPU training; GroupNorm, not BatchNorm: batch-1 deployment and
    padded training chunks would skew batch statistics."""

    def __init__(self, in_channels: int, dim: int, image_size: int = 64, width: int = 32):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        chans = [in_channels, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(a, b, k, stride=2, padding=k // 2), nn.GroupNorm(8, b), nn.SiLU()]
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Linear(chans[-1] * (image_size // 16) ** 2, dim)
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        if x.shape[-3] != self.in_channels:
            raise ValueError(f"ImageEncoder expects {self.in_channels} channels, got shape {tuple(x.shape)}")
        h = self.conv(image_to_float(x, self.proj.weight.dtype).reshape(-1, *x.shape[-3:]))      # [N, 4w, H/16, W/16]
        return self.proj(h.flatten(1)).reshape(*lead, -1)


class NavHeads(nn.Module):
    """features [..., F] -> distance [...] (in units of ``distance_scale`` steps) and waypoints
    [..., K, 4]: (x, y) as cumulative sums of per-step deltas in units of ``waypoint_scale`` metres
    (ViNT's parameterisation: each delta is about one control step of travel) and a unit (cos, sin)."""

    def __init__(self, in_dim: int, num_waypoints: int, hidden: int = 256):
        super().__init__()
        self.k = num_waypoints
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden // 2), nn.SiLU())
        self.distance = nn.Linear(hidden // 2, 1)
        self.waypoints = nn.Linear(hidden // 2, 4 * num_waypoints)

    def forward(self, feat: Tensor) -> dict[str, Tensor]:
        h = self.mlp(feat)
        wp = self.waypoints(h).unflatten(-1, (self.k, 4))
        xy = wp[..., :2].cumsum(-2)
        cs = F.normalize(wp[..., 2:], dim=-1, eps=1e-6)
        return {"distance": self.distance(h).squeeze(-1), "waypoints": torch.cat([xy, cs], -1)}


def with_cue(out: dict, cue_head: nn.Module | None, feat: Tensor) -> dict:
    """Adds "cue_logits" (the optional auxiliary task: which cue started this episode) to ``out``."""
    if cue_head is not None:
        out["cue_logits"] = cue_head(feat)
    return out


class ViNT(nn.Module):
    """ViNT-style baseline: the last ``context`` frames + the goal, a small transformer."""

    def __init__(self, image_size: int = 64, dim: int = 128, context: int = 5, layers: int = 4, heads: int = 4,
                 num_waypoints: int = 5, cnn_width: int = 32, dropout: float = 0.1, num_cues: int = 0):
        super().__init__()
        self.context = context
        self.obs_encoder = ImageEncoder(3, dim, image_size, cnn_width)
        self.goal_encoder = ImageEncoder(6, dim, image_size, cnn_width)
        self.positions = nn.Parameter(torch.randn(context + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.compress = nn.Linear((context + 1) * dim, dim)     # ViNT flattens the output tokens
        self.heads = NavHeads(dim, num_waypoints)
        self.cue_head = nn.Linear(dim, num_cues) if num_cues else None

    def _decode(self, obs_tokens: Tensor, goal_token: Tensor) -> dict[str, Tensor]:
        # obs_tokens [N, C, dim], goal_token [N, dim]
        x = torch.cat([obs_tokens, goal_token[:, None]], 1) + self.positions
        x = self.norm(self.transformer(x))                                # [N, C+1, dim]
        feat = F.silu(self.compress(x.flatten(1)))
        return with_cue(self.heads(feat), self.cue_head, feat)

    def forward(self, context_rgb: Tensor, goal_rgb: Tensor) -> dict[str, Tensor]:
        """context_rgb [N, C, 3, H, W] (oldest first, the current frame last), goal_rgb [N, 3, H, W]."""
        if context_rgb.dim() != 5 or context_rgb.shape[1] != self.context:
            raise ValueError(f"ViNT expects context_rgb [N, {self.context}, 3, H, W], got {tuple(context_rgb.shape)}")
        goal = self.goal_encoder(torch.cat([context_rgb[:, -1], goal_rgb], -3))
        return self._decode(self.obs_encoder(context_rgb), goal)

    # ---- deployment: one step at a time, each frame encoded once
    def initial_state(self, batch: int, device=None) -> TensorDict:
        dim = self.positions.shape[1]
        return TensorDict({"tokens": torch.zeros(batch, self.context - 1, dim, device=device)}, [batch])

    @torch.no_grad()
    def step(self, rgb: Tensor, goal_rgb: Tensor, state: TensorDict, is_init: Tensor):
        """rgb, goal_rgb [B, 3, H, W]; is_init [B] bool (a new goal: the window restarts by
        repeating the first frame, as ViNT pads at episode starts) -> (outputs, next state)."""
        tok = self.obs_encoder(rgb)                                       # [B, dim]
        window = torch.where(is_init[:, None, None], tok[:, None], state["tokens"])
        obs_tokens = torch.cat([window, tok[:, None]], 1)                 # [B, C, dim]
        out = self._decode(obs_tokens, self.goal_encoder(torch.cat([rgb, goal_rgb], -3)))
        return out, TensorDict({"tokens": obs_tokens[:, 1:]}, state.batch_size)


class MambaViNT(nn.Module):
    """MambaViNT: the same tokeniser and heads, a Mamba2 history over the whole trajectory."""

    def __init__(self, image_size: int = 64, dim: int = 128, layers: int = 2, num_waypoints: int = 5,
                 cnn_width: int = 32, memory_kind: str = "mamba2", num_cues: int = 0, **memory_options):
        super().__init__()
        self.obs_encoder = ImageEncoder(3, dim, image_size, cnn_width)
        self.goal_encoder = ImageEncoder(6, dim, image_size, cnn_width)
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU())
        # the TensorDict memory module (make_memory) serves deployment (step) and the env-collector
        # contract; training calls its core's sequence() directly, which takes the chunk's first
        # state as [B, ...] instead of a [B, T, ...] state column that would be copied T times
        self.memory = make_memory(memory_kind, dim, dim, layers, in_key="token", out_key="history",
                                  **memory_options)
        self.heads = NavHeads(2 * dim, num_waypoints)
        self.cue_head = nn.Linear(dim, num_cues) if num_cues else None    # reads the history alone

    def _tokens(self, rgb: Tensor, goal_rgb: Tensor) -> Tensor:
        goal = self.goal_encoder(torch.cat([rgb, goal_rgb], -3))
        return self.fuse(torch.cat([self.obs_encoder(rgb), goal], -1))

    def initial_state(self, batch: int, device=None) -> TensorDict:
        shapes = self.memory.core.state_shapes()
        dtype = next(self.parameters()).dtype
        return TensorDict({n: torch.zeros(batch, *s, device=device, dtype=dtype) for n, s in shapes.items()}, [batch])

    def forward(self, rgb: Tensor, goal_rgb: Tensor, is_init: Tensor, state: TensorDict):
        """rgb, goal_rgb [B, T, 3, H, W]; is_init [B, T] bool (the state resets there, mid-chunk
        too); state [B] at the chunk's start -> (outputs [B, T, ...], state after the last step)."""
        if rgb.dim() != 5 or is_init.shape != rgb.shape[:2]:
            raise ValueError(f"MambaViNT expects rgb [B, T, 3, H, W] and is_init [B, T], got "
                             f"{tuple(rgb.shape)} and {tuple(is_init.shape)}")
        tok = self._tokens(rgb, goal_rgb)                                 # [B, T, dim]
        hist, final = self.memory.core.sequence(tok, is_init.bool(), dict(state.items()))
        out = with_cue(self.heads(torch.cat([hist, tok], -1)), self.cue_head, hist)
        return out, TensorDict(dict(final), state.batch_size)

    @torch.no_grad()
    def step(self, rgb: Tensor, goal_rgb: Tensor, state: TensorDict, is_init: Tensor):
        """One control step through the TensorDict memory contract (state zeroed where is_init)."""
        tok = self._tokens(rgb, goal_rgb)                                 # [B, dim]
        td = TensorDict({"token": tok, "is_init": is_init.reshape(-1, 1)}, [tok.shape[0]])
        for name, key in zip(self.memory.state_names, self.memory.state_keys):
            td.set(key, state[name])
        td = self.memory(td)
        nxt = TensorDict({n: td.get(("next", k)) for n, k in zip(self.memory.state_names, self.memory.state_keys)},
                         state.batch_size)
        hist = td.get("history")
        return with_cue(self.heads(torch.cat([hist, tok], -1)), self.cue_head, hist), nxt


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per top-level child, and the total."""
    counts = {name: count_parameters(child, trainable=True) for name, child in model.named_children()}
    counts["positions"] = model.positions.numel() if isinstance(model, ViNT) else 0
    counts = {k: v for k, v in counts.items() if v}
    counts["total"] = count_parameters(model, trainable=True)
    return counts


def waypoint_to_action(waypoints: Tensor, index: int, dt: float, max_speed: float, max_turn_rate: float) -> Tensor:
    """Waypoint ``index`` [..., K, 4] (robot frame, metres, reached after index + 1 steps) -> env
    action [..., 2] in [-1, 1]: the constant (v, w) whose unicycle arc ends at that waypoint's
    heading, v = chord / time * (theta/2) / sin(theta/2), w = theta / time (exact for the env's
    unicycle when index = 0). ViNT uses a PD controller on a waypoint instead; this inverse is
    exact for our robot, so control error is the policy's alone."""
    wp = waypoints[..., index, :]
    time = (index + 1) * dt
    theta = torch.atan2(wp[..., 3], wp[..., 2])
    chord = torch.linalg.vector_norm(wp[..., :2], dim=-1)
    half = theta / 2
    arc = torch.where(half.abs() > 1e-4, half / torch.sin(half), torch.ones_like(half))
    v = torch.where(wp[..., 0] >= 0, chord, -chord) * arc / time
    w = theta / time
    return torch.stack([v / max_speed, w / max_turn_rate], -1).clamp(-1.0, 1.0)


__all__ = ["ImageEncoder", "NavHeads", "ViNT", "MambaViNT", "parameter_counts", "waypoint_to_action"]
