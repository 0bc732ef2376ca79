"""3D Diffusion Policy (DP3) and Mamba Policy: point-cloud conditioned action diffusion (seed 001).

    obs window (n_obs_steps=2): point_cloud [B, To, P, 3], agent_pos [B, To, 11]
      -> DP3Encoder -> global cond [B, To * (64 + 64)]
    noisy action chunk [B, T=16, A=4] + diffusion step k + global cond
      -> denoiser (ConditionalUnet1D | MambaUnet1D) -> predicted noise [B, T, A]

Training (``compute_loss``): DDPM forward process, 100 steps, squaredcos_cap_v2 betas, epsilon
prediction, MSE. Inference (``predict_action``): DDIM with 10 steps from Gaussian noise. Both are
diffusers' schedulers (not hand-written maths). agent_pos and action are min/max-normalised to
[-1, 1]; the point cloud is used raw (metres), as DP3 does.

Denoisers, all the same UNet skeleton (down levels -> 2 mid blocks -> up levels, skip concat):
  * ``ConditionalUnet1D``: Diffusion Policy / DP3. Each residual block = Conv1dBlock -> FiLM(cond)
    -> Conv1dBlock, + 1x1 residual. Default down_dims: DP3's [512,1024,2048] (255.07M params, the
    paper's 255M), so the parameter comparison reproduces; CPU configs pass narrower widths.
  * ``MambaUnet1D``: Mamba Policy's ConditionalMambaUnet1D. Each residual block keeps the first
    Conv1dBlock + FiLM but its second Conv1dBlock becomes an "XMamba" block (MambaVision style):
    x + Mamba(LN(x)) over the time axis, then x + MLP(LN(x)), then (``attention=True``, default)
    an attention block x + MHSA(LN(x)), x + MLP(LN(x)) -- the "hybrid with attention" of the
    paper. Default widths [128,256,512] (Mamba Policy's): 47.86M params with mamba1, the paper's
    47.9M (-81%). The released code builds the attention block but, for the mamba variants, skips
    it in forward; we run it, as the paper describes. Mixers: mamba1, mamba2 and
    bidirectional (Vision Mamba's "v2" block, as Mamba Policy uses: a forward and a time-reversed
    Mamba1 scan sharing one in_proj and out_proj, summed) and hydra (Mamba Policy's fourth variant:
    Hydra's quasiseparable mixer, shift(SS(X)) + flip(shift(SS(flip(X)))) + D X on Mamba2's SSD,
    networks/ssm/hydra.py).
Mamba mixers are networks/ssm/mamba1.py / mamba2.py (pure PyTorch; mamba-ssm kernels on CUDA).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.ssm.mamba1 import BiMamba1Mixer, Mamba1Mixer
from networks.ssm.hydra import HydraMixer
from networks.ssm.mamba2 import Mamba2Mixer

DENOISERS = ("unet", "mamba1", "mamba2", "bidirectional", "hydra")
UNET_DIMS = (512, 1024, 2048)    # DP3's (Diffusion Policy's own default is (256, 512, 1024))
MAMBA_DIMS = (128, 256, 512)     # Mamba Policy's


# ------------------------------------------------------------------------------------ encoder
class DP3Encoder(nn.Module):
    """DP3's PointNet-lite encoder + state MLP. One obs step -> [pc_dim + state_dim] features.

    point_cloud [B, To, P, 3] -> per-point MLP 3-64-128-256 (Linear+LayerNorm+ReLU) -> max over P
      -> Linear(256, out_dim) + LayerNorm -> [B, To, out_dim]
    agent_pos [B, To, S] -> Linear(S, 64) + ReLU + Linear(64, 64) -> [B, To, 64]
    concatenated and flattened over To -> [B, To * (out_dim + 64)] (the UNet's global condition).
    """

    def __init__(self, state_dim: int = 11, out_dim: int = 64, state_out: int = 64, n_obs_steps: int = 2):
        super().__init__()
        layers, widths = [], (3, 64, 128, 256)
        for i, o in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(i, o), nn.LayerNorm(o), nn.ReLU()]
        self.point_mlp = nn.Sequential(*layers)
        self.point_proj = nn.Sequential(nn.Linear(256, out_dim), nn.LayerNorm(out_dim))
        self.state_mlp = nn.Sequential(nn.Linear(state_dim, state_out), nn.ReLU(), nn.Linear(state_out, state_out))
        self.n_obs_steps = n_obs_steps
        self.out_dim = n_obs_steps * (out_dim + state_out)

    def forward(self, point_cloud: Tensor, agent_pos: Tensor) -> Tensor:
        pc = self.point_proj(self.point_mlp(point_cloud).amax(dim=-2))   # [B, To, out_dim]
        st = self.state_mlp(agent_pos)                                   # [B, To, 64]
        return torch.cat([pc, st], dim=-1).flatten(1)                    # [B, To * (out_dim + 64)]


# ------------------------------------------------------------------------- UNet building blocks
class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, k: Tensor) -> Tensor:                              # k [B] -> [B, dim]
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=k.device) * (-math.log(10000) / (half - 1)))
        arg = k.float()[:, None] * freq[None]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish over [B, C, T]."""

    def __init__(self, cin: int, cout: int, kernel_size: int, n_groups: int = 8):
        super().__init__(nn.Conv1d(cin, cout, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(n_groups, cout), nn.Mish())


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__(nn.Linear(dim, int(dim * ratio)), nn.GELU(), nn.Linear(int(dim * ratio), dim))


class SequenceMamba(nn.Module):
    """[B, T, D] -> [B, T, D] over the whole sequence with zero initial state (no memory across
    calls: each denoising pass sees one action chunk). kind: mamba1 | mamba2 | bidirectional
    (Vision Mamba's v2: shared in/out projections, networks/mamba1.BiMamba1Mixer) | hydra
    (quasiseparable, networks/ssm/hydra.HydraMixer; d_state and headdim as mamba2)."""

    def __init__(self, dim: int, kind: str, d_state: int = 16):
        super().__init__()
        self.kind = kind
        if kind == "mamba2":
            # headdim 32 as Mamba Policy; d_inner = 2 * dim must split into heads
            self.mixer = Mamba2Mixer(dim, d_state=max(d_state, 64), headdim=32)
        elif kind == "bidirectional":
            self.mixer = BiMamba1Mixer(dim, d_state=d_state)
        elif kind == "hydra":
            self.mixer = HydraMixer(dim, d_state=max(d_state, 64), headdim=32)
        else:
            self.mixer = Mamba1Mixer(dim, d_state=d_state)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind in ("bidirectional", "hydra"):           # whole-sequence mixers: [B, T, D] -> [B, T, D]
            return self.mixer(x)
        return self.mixer(x)[0]                                # one fresh sequence: zero state


class XMambaBlock(nn.Module):
    """Mamba Policy's MambaVisionBlock (+ optional AttnVisionBlock) on [B, C, T]: pre-norm
    residual Mamba over time, then a pre-norm residual MLP. Drop-path of the original is left out
    (it is a regulariser for large data; our datasets are small and the training is short)."""

    def __init__(self, dim: int, kind: str, attention: bool, mlp_ratio: float = 4.0, heads: int = 8):
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(dim), SequenceMamba(dim, kind)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)
        self.attn = None
        if attention:
            self.norm3, self.attn = nn.LayerNorm(dim), nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm4, self.mlp2 = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2)                                            # [B, T, C]
        x = x + self.mixer(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        if self.attn is not None:
            h = self.norm3(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            x = x + self.mlp2(self.norm4(x))
        return x.transpose(1, 2)                                         # [B, C, T]


class ConditionalResidualBlock1D(nn.Module):
    """x [B, Cin, T], cond [B, cond_dim] -> [B, Cout, T]. FiLM: cond -> per-channel scale, bias
    applied after the first conv. ``second`` replaces the second Conv1dBlock (XMamba in Mamba Policy)."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel_size: int, n_groups: int,
                 second: nn.Module | None = None):
        super().__init__()
        self.block1 = Conv1dBlock(cin, cout, kernel_size, n_groups)
        self.block2 = second if second is not None else Conv1dBlock(cout, cout, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.residual = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, bias = self.film(cond)[..., None].chunk(2, dim=1)         # [B, Cout, 1] each
        out = scale * self.block1(x) + bias
        return self.block2(out) + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Diffusion Policy's 1-D UNet. sample [B, T, A], k [B], global_cond [B, G] -> [B, T, A].

    T must be divisible by 2 ** (len(down_dims) - 1) (stride-2 down/up-sampling). ``block_fn``
    (cin, cout) -> second sub-block lets MambaUnet1D swap in XMamba blocks on the same skeleton.
    """

    def __init__(self, action_dim: int, global_cond_dim: int, down_dims=UNET_DIMS, kernel_size: int = 5,
                 n_groups: int = 8, step_embed_dim: int = 128, block_fn=None):
        super().__init__()
        dims = [action_dim, *down_dims]
        dsed = step_embed_dim
        self.step_encoder = nn.Sequential(SinusoidalPosEmb(dsed), nn.Linear(dsed, 4 * dsed), nn.Mish(),
                                          nn.Linear(4 * dsed, dsed))
        cond_dim = dsed + global_cond_dim
        second = block_fn or (lambda c: None)

        def res(cin, cout):
            return ConditionalResidualBlock1D(cin, cout, cond_dim, kernel_size, n_groups, second(cout))

        in_out = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.down.append(nn.ModuleList([res(cin, cout), res(cout, cout),
                                             nn.Conv1d(cout, cout, 3, 2, 1) if not last else nn.Identity()]))
        self.mid = nn.ModuleList([res(dims[-1], dims[-1]), res(dims[-1], dims[-1])])
        self.up = nn.ModuleList()
        for cin, cout in reversed(in_out[1:]):
            self.up.append(nn.ModuleList([res(2 * cout, cin), res(cin, cin),
                                          nn.ConvTranspose1d(cin, cin, 4, 2, 1)]))
        self.final = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))
        self.downsamples = len(down_dims) - 1

    def forward(self, sample: Tensor, k: Tensor, global_cond: Tensor) -> Tensor:
        if sample.shape[1] % (2 ** self.downsamples):
            raise ValueError(f"horizon {sample.shape[1]} must be divisible by {2 ** self.downsamples} "
                             f"({len(self.down)} UNet levels)")
        k = k.expand(sample.shape[0]) if k.dim() else k.reshape(1).expand(sample.shape[0])
        cond = torch.cat([self.step_encoder(k), global_cond], dim=-1)   # [B, dsed + G]
        x, skips = sample.transpose(1, 2), []                            # [B, A, T]
        for r1, r2, downsample in self.down:
            x = r2(r1(x, cond), cond)
            skips.append(x)
            x = downsample(x)                                            # T -> T/2
        for m in self.mid:
            x = m(x, cond)
        for r1, r2, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(r2(r1(x, cond), cond))                          # T -> 2T
        return self.final(x).transpose(1, 2)                             # [B, T, A]


class MambaUnet1D(ConditionalUnet1D):
    """Mamba Policy's ConditionalMambaUnet1D: the UNet above with XMamba second sub-blocks."""

    def __init__(self, action_dim: int, global_cond_dim: int, kind: str = "mamba1", down_dims=MAMBA_DIMS,
                 kernel_size: int = 5, n_groups: int = 8, step_embed_dim: int = 128, attention: bool = True):
        if kind not in DENOISERS[1:]:
            raise ValueError(f"Mamba kind must be one of {list(DENOISERS[1:])}, got {kind!r}")
        if kind in ("mamba2", "hydra") and any(d * 2 % 32 for d in down_dims):
            raise ValueError(f"{kind} needs every down_dim to be a multiple of 16 (headdim 32), got {list(down_dims)}")
        super().__init__(action_dim, global_cond_dim, down_dims, kernel_size, n_groups, step_embed_dim,
                         block_fn=lambda c: XMambaBlock(c, kind, attention))


# ------------------------------------------------------------------------------------- policy
class Normalizer(nn.Module):
    """Per-dimension min/max -> [-1, 1] (Diffusion Policy's LinearNormalizer, "limits" mode).
    Constant dimensions (range < eps) map to 0. Buffers, so checkpoints carry the statistics."""

    def __init__(self, dim: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(dim))

    @torch.no_grad()
    def fit(self, lo: Tensor, hi: Tensor) -> None:
        lo, hi = lo.float().to(self.scale.device), hi.float().to(self.scale.device)
        span = hi - lo
        flat = span < self.eps
        scale = 2.0 / torch.where(flat, torch.full_like(span, 2.0), span)
        offset = torch.where(flat, -lo, -1.0 - scale * lo)               # flat dims: x - lo = 0
        self.scale.copy_(scale)
        self.offset.copy_(offset)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.offset

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.offset) / self.scale


class DiffusionPolicy(nn.Module):
    """DP3 encoder + denoiser + normalisers + diffusers DDPM (train) / DDIM (sample) schedulers."""

    def __init__(self, denoiser: str = "unet", down_dims=None, horizon: int = 16, n_obs_steps: int = 2,
                 n_action_steps: int = 8, num_train_timesteps: int = 100, num_inference_steps: int = 10,
                 num_points: int = 512, state_dim: int = 11, action_dim: int = 4, kernel_size: int = 5,
                 attention: bool = True, encoder_dim: int = 64):
        super().__init__()
        try:
            from diffusers.schedulers.scheduling_ddim import DDIMScheduler
            from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
        except ImportError as e:
            raise ImportError("the diffusion policy needs diffusers' schedulers: pip install -e '.[diffusion]' "
                              f"({type(e).__name__}: {e})") from e

        if denoiser not in DENOISERS:
            raise ValueError(f"denoiser must be one of {list(DENOISERS)}, got {denoiser!r}")
        if n_obs_steps - 1 + n_action_steps > horizon:
            raise ValueError(f"n_obs_steps - 1 + n_action_steps = {n_obs_steps - 1 + n_action_steps} "
                             f"exceeds horizon {horizon}")
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.num_points, self.state_dim, self.action_dim = num_points, state_dim, action_dim
        self.num_inference_steps = num_inference_steps
        self.encoder = DP3Encoder(state_dim, encoder_dim, 64, n_obs_steps)
        if denoiser == "unet":
            self.denoiser = ConditionalUnet1D(action_dim, self.encoder.out_dim, tuple(down_dims or UNET_DIMS),
                                              kernel_size)
        else:
            self.denoiser = MambaUnet1D(action_dim, self.encoder.out_dim, denoiser, tuple(down_dims or MAMBA_DIMS),
                                        kernel_size, attention=attention)
        self.state_norm, self.action_norm = Normalizer(state_dim), Normalizer(action_dim)
        sched = dict(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                     clip_sample=True, prediction_type="epsilon")
        self.noise_scheduler = DDPMScheduler(**sched)
        self.sample_scheduler = DDIMScheduler(**sched, set_alpha_to_one=True, steps_offset=0)

    def fit_normalizers(self, stats: dict) -> None:
        """stats: ManipDemos.stats() -> {"agent_pos": {"min", "max"}, "action": {...}}."""
        self.state_norm.fit(stats["agent_pos"]["min"], stats["agent_pos"]["max"])
        self.action_norm.fit(stats["action"]["min"], stats["action"]["max"])

    def _check_obs(self, point_cloud: Tensor, agent_pos: Tensor) -> None:
        want_pc = ("B", self.n_obs_steps, self.num_points, 3)
        want_st = ("B", self.n_obs_steps, self.state_dim)
        if point_cloud.dim() != 4 or tuple(point_cloud.shape[1:]) != want_pc[1:]:
            raise ValueError(f"point_cloud has shape {list(point_cloud.shape)}, expected "
                             f"[B, n_obs_steps={self.n_obs_steps}, num_points={self.num_points}, 3]")
        if agent_pos.dim() != 3 or tuple(agent_pos.shape[1:]) != want_st[1:] or \
                agent_pos.shape[0] != point_cloud.shape[0]:
            raise ValueError(f"agent_pos has shape {list(agent_pos.shape)}, expected "
                             f"[B={point_cloud.shape[0]}, n_obs_steps={self.n_obs_steps}, {self.state_dim}]")

    def condition(self, point_cloud: Tensor, agent_pos: Tensor) -> Tensor:
        """Raw obs window -> global condition [B, G]."""
        self._check_obs(point_cloud, agent_pos)
        return self.encoder(point_cloud, self.state_norm(agent_pos))

    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        """batch: point_cloud [B, To, P, 3], agent_pos [B, To, S], action [B, T, A] (raw units).
        Noise a random DDPM step of the normalised chunk and regress the noise (MSE). ``generator``
        draws the noise and steps (a validation's fixed ones); None: torch's global RNG."""
        cond = self.condition(batch["point_cloud"], batch["agent_pos"])
        x0 = self.action_norm(batch["action"])                          # [B, T, A] in [-1, 1]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        k = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device,
                          generator=generator)
        noisy = self.noise_scheduler.add_noise(x0, noise, k)
        return F.mse_loss(self.denoiser(noisy, k, cond), noise)

    @torch.no_grad()
    def predict_action(self, obs: dict, generator: torch.Generator | None = None) -> dict:
        """obs window -> {"action_pred": [B, horizon, A], "action": [B, n_action_steps, A]}.
        "action" are the steps to execute: from index n_obs_steps - 1 (the current step) on."""
        cond = self.condition(obs["point_cloud"], obs["agent_pos"])
        B = cond.shape[0]
        x = torch.randn((B, self.horizon, self.action_dim), generator=generator, device=cond.device)
        sched = self.sample_scheduler
        sched.set_timesteps(self.num_inference_steps, device=cond.device)
        for k in sched.timesteps:
            eps = self.denoiser(x, k.to(cond.device), cond)
            x = sched.step(eps, k, x, generator=generator).prev_sample
        action = self.action_norm.inverse(x)
        start = self.n_obs_steps - 1
        return {"action_pred": action, "action": action[:, start: start + self.n_action_steps]}


def make_policy(cfg, num_points: int = 512) -> DiffusionPolicy:
    """From the ``policy`` section of agents/manipulation/config.py (any object with its fields);
    num_points comes from the dataset."""
    return DiffusionPolicy(denoiser=cfg.denoiser, down_dims=cfg.down_dims, horizon=cfg.horizon,
                           n_obs_steps=cfg.n_obs_steps, n_action_steps=cfg.n_action_steps,
                           num_train_timesteps=cfg.diffusion_steps, num_inference_steps=cfg.inference_steps,
                           num_points=num_points, kernel_size=cfg.kernel_size, attention=cfg.attention,
                           encoder_dim=cfg.encoder_dim)
