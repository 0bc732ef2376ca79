"""Mamba1 (selective scan) in pure PyTorch, with carried state and per-step resets.

The recurrence per channel d and state index n:
    h_t = exp(delta_t[d] * A[d, n]) * h_{t-1} + delta_t[d] * B_t[n] * u_t[d]
    y_t[d] = sum_n C_t[n] h_t[d, n] + D[d] * u_t[d]
A reset at step t means h_{t-1} is taken as zero, i.e. the decay of step t is zero.

``selective_scan_reference`` is the plain loop and the test oracle.
``selective_scan_chunked`` is the fast CPU path. Mamba1's decay differs per (d, n),
so there is no matrix (SSD) form: any parallel scan must write the full
``[B, T, d_inner, d_state]`` state several times, which on a CPU is bound by memory
bandwidth and loses to a loop (measured: one pass over that tensor at B=8, T=1024,
d_inner=256 costs about as much as the whole 1024-step loop's dispatch overhead).
So it computes decays, inputs and read-outs for a chunk of steps at once, leaves only
the multiply-add ``h = a*h + b`` in the loop (one op per step instead of about ten),
and has a hand-written backward (``_ChunkedSelectiveScan``) so autograd does not build
a graph node per step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.ssm.causal_conv import causal_conv1d, causal_conv1d_step, depthwise_conv_parameters
from networks.ssm import cpu_scan
from networks.ssm import kernels
from networks.ssm.param_groups import no_weight_decay


def selective_scan_reference(u, delta, A, B, C, D, h0, is_init):
    """u, delta [Bt, T, Di]; A [Di, N]; B, C [Bt, T, N]; D [Di]; h0 [Bt, Di, N]; is_init [Bt, T].

    Returns y [Bt, T, Di] and the final state [Bt, Di, N]. One step at a time.
    """
    h = h0
    ys = []
    # unbind, not x[:, t]: indexing in a loop makes autograd write a full-size zero
    # gradient per step (quadratic in T), which would make the baseline unfairly slow.
    keeps = (~is_init).to(u.dtype).unbind(1)
    for u_t, d_t, B_t, C_t, keep in zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1), keeps):
        a = torch.exp(d_t[:, :, None] * A)
        h = keep[:, None, None] * a * h + (d_t * u_t)[:, :, None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1) + D * u_t)
    return torch.stack(ys, dim=1), h


def selective_scan_chunked(u, delta, A, B, C, D, h0, is_init, chunk_size: int = 16):
    """Same contract as ``selective_scan_reference``; see the module docstring for why."""
    if cpu_scan.wanted(u):  # the fused C++ scan (networks/ssm/cpu_scan.py), when it builds
        return cpu_scan.selective_scan(u, delta, A, B, C, D, h0, is_init, chunk_size)
    # Time-major, so that each step's slice of a chunk is contiguous.
    u_t, d_t, B_t, C_t = (t.transpose(0, 1).contiguous() for t in (u, delta, B, C))
    keep = (~is_init).to(u.dtype).transpose(0, 1).contiguous()
    y, h = _ChunkedSelectiveScan.apply(u_t, d_t, A, B_t, C_t, h0, keep, chunk_size)
    return y.transpose(0, 1) + D * u, h


def _chunk_inputs(u, delta, A, B, keep):
    """Decays (zero at resets) and inputs of one chunk, [L, Bt, Di, N]."""
    a = torch.exp(delta[..., None] * A) * keep[:, :, None, None]
    b = (delta * u)[..., None] * B[:, :, None, :]
    return a, b


def _run_chunk(a, b, h):
    """h_i = a_i * h_{i-1} + b_i for the chunk, written over ``b``; returns every h_i.

    In place: measured ~8x faster per step than ``addcmul(..., out=hs[i])`` here.
    """
    b[0].addcmul_(a[0], h)
    for i in range(1, a.shape[0]):
        b[i].addcmul_(a[i], b[i - 1])
    return b


class _ChunkedSelectiveScan(torch.autograd.Function):
    """Chunked scan with a hand-written backward, as mamba-ssm's CUDA kernel does.

    Autograd through a Python loop spends most of its time building and walking a graph
    node per step. Here forward keeps only the state entering each chunk; backward
    recomputes a chunk's states, runs the reverse recurrence
        g_t = dL/dh_t (direct) + a_{t+1} * g_{t+1}
    in place, and forms every other gradient in one vectorised op per chunk.
    Inputs are time-major: u, delta [T, Bt, Di]; B, C [T, Bt, N]; keep [T, Bt].
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, keep, chunk_size):
        T, L = u.shape[0], chunk_size
        y = u.new_empty(u.shape)
        starts, h = [], h0
        for s in range(0, T, L):
            sl = slice(s, s + L)
            starts.append(h)
            hs = _run_chunk(*_chunk_inputs(u[sl], delta[sl], A, B[sl], keep[sl]), h)
            y[sl] = torch.einsum("lbdn,lbn->lbd", hs, C[sl])
            h = hs[-1].clone()  # not a view: lets the chunk buffer be freed
        ctx.save_for_backward(u, delta, A, B, C, keep, torch.stack(starts))
        ctx.chunk_size = L
        return y, h  # already a copy (see the loop)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, g_final):
        u, delta, A, B, C, keep, starts = ctx.saved_tensors
        L = ctx.chunk_size
        gu, gdelta, gB, gC = (torch.empty_like(t) for t in (u, delta, B, C))
        gA = torch.zeros_like(A)
        g_carry = torch.zeros_like(starts[0]) if g_final is None else g_final
        gy = torch.zeros_like(u) if gy is None else gy
        for c in reversed(range(len(starts))):
            sl = slice(c * L, (c + 1) * L)
            a, b = _chunk_inputs(u[sl], delta[sl], A, B[sl], keep[sl])
            hs = _run_chunk(a, b, starts[c])
            gC[sl] = torch.einsum("lbd,lbdn->lbn", gy[sl], hs)
            g = gy[sl][..., None] * C[sl][:, :, None, :]  # dL/dh_t from y_t
            g[-1] += g_carry
            for i in range(g.shape[0] - 2, -1, -1):
                g[i].addcmul_(a[i + 1], g[i + 1])
            h_prev = torch.cat([starts[c][None], hs[:-1]])
            g_carry = a[0] * g[0]
            g_dA = g * h_prev * a  # through a = exp(delta * A) * keep
            gdelta[sl] = torch.einsum("lbdn,dn->lbd", g_dA, A)
            gA += torch.einsum("lbdn,lbd->dn", g_dA, delta[sl])
            g_bu = torch.einsum("lbdn,lbn->lbd", g, B[sl])  # through b = delta*u*B
            gdelta[sl] += g_bu * u[sl]
            gu[sl] = g_bu * delta[sl]
            gB[sl] = torch.einsum("lbdn,lbd->lbn", g, delta[sl] * u[sl])
        return gu, gdelta, gA, gB, gC, g_carry, None, None


def selective_state_step(u, delta, A, B, C, D, h):
    """One step: u, delta [Bt, Di]; B, C [Bt, N]; h [Bt, Di, N] (already zeroed on reset)."""
    h = torch.exp(delta[..., None] * A) * h + (delta * u)[..., None] * B[:, None, :]
    y = (h * C[:, None, :]).sum(-1) + D * u
    return y, h


def dt_bias_init(n: int, dt_min: float, dt_max: float) -> Tensor:
    """Bias b with softplus(b) = dt, dt log-uniform in [dt_min, dt_max] (mamba-ssm's init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


class Mamba1Mixer(nn.Module):
    """The Mamba1 block of mamba-ssm's ``Mamba`` (same parameters and initialisation).

    x [B, T, d_model] -> in_proj -> (x [B, T, d_inner], z) -> causal conv + SiLU ->
    x_proj -> (dt [dt_rank], B [d_state], C [d_state]) -> selective scan -> * SiLU(z)
    -> out_proj [B, T, d_model].
    State: conv ``[B, d_inner, d_conv-1]``, ssm ``[B, d_inner, d_state]``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        chunk_size: int = 16,
        use_kernels: bool | str = "auto",
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.chunk_size = chunk_size
        self.use_kernels = use_kernels
        Di = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * Di, bias=False)
        self.conv_weight, self.conv_bias = depthwise_conv_parameters(Di, d_conv)
        self.x_proj = nn.Linear(Di, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, Di, bias=True)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias_init(Di, dt_min, dt_max))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(Di, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(Di))
        no_weight_decay(self.A_log, self.D, self.dt_proj.bias)   # as mamba-ssm (networks/ssm/param_groups.py)
        self.out_proj = nn.Linear(Di, d_model, bias=False)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"conv": (self.d_inner, self.d_conv - 1), "ssm": (self.d_inner, self.d_state)}

    def prepare(self, x, conv_state, is_init=None):
        """in_proj -> causal conv + SiLU -> SSM inputs, shared by every scan path (kernels too).

        Sequence mode when ``is_init`` is given (x [B, T, d_model]), else one step (x [B, d_model]).
        Returns xc, z, delta, A, B, C and the new conv state.
        """
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        xc, delta, A, Bm, Cm, conv_state = self.ssm_inputs(xi, conv_state, is_init)
        return xc, z, delta, A, Bm, Cm, conv_state

    def ssm_inputs(self, xi, conv_state, is_init=None):
        """The in_proj's x half [.., d_inner] -> causal conv + SiLU -> xc, delta, A, B, C, conv state."""
        if is_init is not None and cpu_scan.wanted(xi):  # taps, reset masks, SiLU: one pass (cpu_scan)
            xc, conv_state = cpu_scan.causal_conv1d_silu(xi, self.conv_weight, self.conv_bias, conv_state, is_init)
        else:
            if is_init is None:
                xc, conv_state = causal_conv1d_step(xi, self.conv_weight, self.conv_bias, conv_state)
            else:
                xc, conv_state = causal_conv1d(xi, self.conv_weight, self.conv_bias, conv_state, is_init)
            xc = F.silu(xc)
        dt, Bm, Cm = self.x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log.to(xi.dtype))
        return xc, delta, A, Bm, Cm, conv_state

    def scan_sequence(self, xi):
        """One whole sequence from zero state: in_proj's x half [B, T, d_inner] -> the SSM output
        [B, T, d_inner] before the gate and out_proj (BiMamba1Mixer runs two of these)."""
        is_init, conv, ssm = fresh_state(self, xi)
        xc, delta, A, Bm, Cm, _ = self.ssm_inputs(xi, conv, is_init)
        y, _ = selective_scan_chunked(xc, delta, A, Bm, Cm, self.D, ssm, is_init, self.chunk_size)
        return y

    def forward(self, x, is_init=None, conv_state=None, ssm_state=None, scan: str = "chunked"):
        """x [B, T, d_model], is_init [B, T] -> y [B, T, d_model], new conv and ssm states.
        Without is_init / states: one fresh sequence (``fresh_state``)."""
        if is_init is None or conv_state is None or ssm_state is None:
            is_init, conv_state, ssm_state = fresh_state(self, x, is_init, conv_state, ssm_state)
        if kernels.wants_mamba1_scan(self.use_kernels, x):  # Triton or mamba-ssm, CUDA only
            return kernels.mamba1_forward(self, x, is_init, conv_state, ssm_state)
        xc, z, delta, A, Bm, Cm, conv_state = self.prepare(x, conv_state, is_init)
        if scan == "reference":
            y, ssm_state = selective_scan_reference(xc, delta, A, Bm, Cm, self.D, ssm_state, is_init)
        else:
            y, ssm_state = selective_scan_chunked(xc, delta, A, Bm, Cm, self.D, ssm_state, is_init,
                                                  self.chunk_size)
        return self.out_proj(y * F.silu(z)), conv_state, ssm_state

    def step(self, x, conv_state, ssm_state):
        """x [B, d_model]; states already zeroed where an episode starts."""
        path = kernels.step_path(self.use_kernels, x, "Mamba1 acting step")
        if path == "triton":
            from networks.ssm import triton_step

            return triton_step.mamba1_step(self, x, conv_state, ssm_state)
        if path == "mamba_ssm":
            return kernels.mamba1_step(self, x, conv_state, ssm_state)
        xc, z, delta, A, Bm, Cm, conv_state = self.prepare(x, conv_state)
        y, ssm_state = selective_state_step(xc, delta, A, Bm, Cm, self.D, ssm_state)
        return self.out_proj(y * F.silu(z)), conv_state, ssm_state


def fresh_state(mixer, x, is_init=None, conv_state=None, ssm_state=None):
    """What a sequence call of a Mamba1/Mamba2 mixer needs and was not given, for x [B, T, ...]
    as one fresh sequence: is_init True at step 0 only, conv and ssm states zero (the shapes of
    ``mixer.state_shapes()``, x's dtype and device). The one place a stateless call's zero state
    is built: ``mixer(x)`` and ``MambaStack.sequence(x)`` come here."""
    B, T = x.shape[:2]
    if is_init is None:
        is_init = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        is_init[:, 0] = True
    shapes = mixer.state_shapes()
    if conv_state is None:
        conv_state = x.new_zeros(B, *shapes["conv"])
    if ssm_state is None:
        ssm_state = x.new_zeros(B, *shapes["ssm"])
    return is_init, conv_state, ssm_state


class BiMamba1Mixer(nn.Module):
    """Vision Mamba's bidirectional Mamba1 (Vim's ``bimamba_type="v2"``, which Mamba Policy's
    bidirectional variant uses): one in_proj and one out_proj shared by a forward scan and a scan
    over the time-reversed sequence, each scan with its own conv, x_proj, dt_proj, A and D; the two
    outputs are summed (Vim's default, if_divide_out=False) before the SiLU(z) gate and out_proj.

    x [B, T, d_model] -> [B, T, d_model], whole sequences from zero state only: a scan that reads
    the future has no step-by-step (recurrent) form. Pure PyTorch: mamba-ssm's own kernels have no
    bidirectional mode (Vim patches them), so this runs selective_scan_chunked on any device.
    """

    def __init__(self, d_model: int, d_state: int = 16, **kw):
        super().__init__()
        self.fwd = Mamba1Mixer(d_model, d_state, **kw)
        self.bwd = Mamba1Mixer(d_model, d_state, **kw)
        del self.bwd.in_proj, self.bwd.out_proj      # shared with fwd (Vim's v2)

    def forward(self, x: Tensor) -> Tensor:
        xi, z = self.fwd.in_proj(x).chunk(2, dim=-1)                     # [B, T, d_inner] each
        y = self.fwd.scan_sequence(xi) + self.bwd.scan_sequence(xi.flip(1)).flip(1)
        return self.fwd.out_proj(y * F.silu(z))
