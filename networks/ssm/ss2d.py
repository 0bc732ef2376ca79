"""SS2D, VMamba's 2-D selective scan, in pure PyTorch (optional mamba-ssm kernel on CUDA).

x [B, H, W, C] -> in_proj -> (x, z) [B, H, W, Di] -> depthwise 3x3 conv + SiLU -> the map is
read as four sequences of length L = H*W (directions k):
    0: row-major        t = i*W + j          2: row-major reversed
    1: column-major     t = j*H + i          3: column-major reversed
Each direction has its own x_proj, dt_proj (weight and bias), A_log and D. A selective scan
(Mamba1's recurrence, see networks.ssm.mamba1) runs along each; the four outputs are put back
on the grid and summed -> LayerNorm -> * SiLU(z) -> out_proj [B, H, W, C].

The four directions share nothing but the input, so they are one *grouped* scan: groups
g = direction, each with its own A [Di, N] and its own B, C [N] per step (mamba-ssm's
``selective_scan_fn`` calls this "variable B/C with groups"; VMamba uses exactly that).
``selective_scan_grouped`` is that scan with the chunked layout and hand-written backward of
``networks.ssm.mamba1._ChunkedSelectiveScan`` (reusing its in-place chunk recurrence), so one
loop of L steps serves all four directions. ``ss2d_reference`` is the slow oracle: an
explicit Python loop over directions and grid cells, with the visiting orders written out
cell by cell rather than by the flip/transpose used here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from networks.ssm import cpu_scan

from networks.ssm import kernels
from networks.ssm.mamba1 import _run_chunk, dt_bias_init

N_DIRECTIONS = 4


def _grouped_chunk_inputs(u, delta, A, B):
    """Decays and inputs of one chunk: u, delta [L, Bt, G, Di]; A [G, Di, N]; B [L, Bt, G, N]."""
    a = (delta[..., None] * A).exp_()                          # [L, Bt, G, Di, N]
    b = (delta * u)[..., None] * B[..., None, :]              # [L, Bt, G, Di, N]
    return a, b


class _GroupedChunkedScan(torch.autograd.Function):
    """mamba1's ``_ChunkedSelectiveScan`` with a group axis and zero initial state, no resets.

    Time-major inputs: u, delta [T, Bt, G, Di]; A [G, Di, N]; B, C [T, Bt, G, N].
    Forward keeps only the state entering each chunk; backward recomputes a chunk's states
    and runs the reverse recurrence g_t = dL/dh_t + a_{t+1} g_{t+1} in place.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size):
        T, L = u.shape[0], chunk_size
        y = u.new_empty(u.shape)
        h = u.new_zeros(*u.shape[1:], A.shape[-1])            # [Bt, G, Di, N]
        starts = []
        for s in range(0, T, L):
            sl = slice(s, s + L)
            starts.append(h)
            hs = _run_chunk(*_grouped_chunk_inputs(u[sl], delta[sl], A, B[sl]), h)
            y[sl] = (hs * C[sl][..., None, :]).sum(-1)        # faster than einsum's tiny bmms
            h = hs[-1].clone()
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts))
        ctx.chunk_size = L
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        u, delta, A, B, C, starts = ctx.saved_tensors
        L = ctx.chunk_size
        gu, gdelta, gB, gC = (torch.empty_like(t) for t in (u, delta, B, C))
        gA = torch.zeros_like(A)
        g_carry = torch.zeros_like(starts[0])
        for c in reversed(range(len(starts))):
            sl = slice(c * L, (c + 1) * L)
            a, b = _grouped_chunk_inputs(u[sl], delta[sl], A, B[sl])
            hs = _run_chunk(a, b, starts[c])
            gC[sl] = torch.einsum("lbgd,lbgdn->lbgn", gy[sl], hs)
            g = gy[sl][..., None] * C[sl][..., None, :]       # dL/dh_t from y_t
            g[-1] += g_carry
            for i in range(g.shape[0] - 2, -1, -1):
                g[i].addcmul_(a[i + 1], g[i + 1])
            h_prev = torch.cat([starts[c][None], hs[:-1]])
            g_carry = a[0] * g[0]
            g_dA = g * h_prev * a                              # through a = exp(delta * A)
            gdelta[sl] = (g_dA * A).sum(-1)
            gA += (g_dA * delta[sl][..., None]).sum((0, 1))    # einsum here: ~7x slower
            g_bu = (g * B[sl][..., None, :]).sum(-1)           # through b = delta*u*B
            gdelta[sl] += g_bu * u[sl]
            gu[sl] = g_bu * delta[sl]
            gB[sl] = (g * (delta[sl] * u[sl])[..., None]).sum(-2)
        return gu, gdelta, gA, gB, gC, None


def selective_scan_grouped(u, delta, A, B, C, D, chunk_size: int = 16):
    """u, delta [Bt, T, G, Di]; A [G, Di, N]; B, C [Bt, T, G, N]; D [G, Di] -> y [Bt, T, G, Di].

    Zero initial state, no resets. Group g uses A[g], D[g] and B[:, :, g], C[:, :, g].
    """
    if cpu_scan.wanted(u):  # the fused C++ scan serves the four directions as groups
        return cpu_scan.selective_scan_grouped(u, delta, A, B, C, D, chunk_size)
    u_t, d_t, B_t, C_t = (t.transpose(0, 1).contiguous() for t in (u, delta, B, C))
    y = _GroupedChunkedScan.apply(u_t, d_t, A, B_t, C_t, chunk_size)
    return y.transpose(0, 1) + D * u


def selective_scan_grouped_reference(u, delta, A, B, C, D):
    """Same contract as ``selective_scan_grouped``, one step at a time (autograd through it)."""
    h = u.new_zeros(u.shape[0], *A.shape)                     # [Bt, G, Di, N]
    ys = []
    for u_t, d_t, B_t, C_t in zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        h = torch.exp(d_t[..., None] * A) * h + (d_t * u_t)[..., None] * B_t[..., None, :]
        ys.append((h * C_t[..., None, :]).sum(-1) + D * u_t)
    return torch.stack(ys, dim=1)


def _kernel_scan(u, delta, A, B, C, D):
    """mamba-ssm's ``selective_scan_fn`` with grouped B/C (CUDA): same contract as above."""
    Bt, T, G, Di = u.shape
    to_cl = lambda t: t.permute(0, 2, 3, 1).reshape(Bt, -1, T).contiguous()  # noqa: E731
    y = kernels._load()["scan"](to_cl(u), to_cl(delta), A.reshape(G * Di, -1).contiguous(),
                                B.permute(0, 2, 3, 1).contiguous(), C.permute(0, 2, 3, 1).contiguous(),
                                D.reshape(-1).float(), delta_softplus=False)
    return y.reshape(Bt, G, Di, T).permute(0, 3, 1, 2)


def _triton_scan(u, delta, A, B, C, D):
    """The Triton Mamba1 scan (networks/ssm/triton_scan.py: no build step, any strides) with the
    four directions as groups: same contract as ``selective_scan_grouped``."""
    from networks.ssm import triton_scan

    Bt, T, G, Di = u.shape
    to_cl = lambda t: t.permute(0, 2, 3, 1).reshape(Bt, G * Di, T)  # noqa: E731   (views, strided along T)
    u, delta, B, C = triton_scan.scan_layout(to_cl(u), to_cl(delta), B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1))
    y = triton_scan.selective_scan_fn(u, delta, A.reshape(G * Di, -1), B, C, D.reshape(-1), delta_softplus=False)
    return y.reshape(Bt, G, Di, T).permute(0, 3, 1, 2)


def grid_to_sequences(x: Tensor) -> Tensor:
    """[Bt, H, W, Di] -> the four direction sequences [Bt, L, 4, Di] (module docstring order)."""
    rows = x.flatten(1, 2)                                    # t = i*W + j
    cols = x.transpose(1, 2).flatten(1, 2)                    # t = j*H + i
    return torch.stack([rows, cols, rows.flip(1), cols.flip(1)], dim=2)


def sequences_to_grid(y: Tensor, H: int, W: int) -> Tensor:
    """Inverse of ``grid_to_sequences`` per direction: [Bt, L, 4, Di] -> [Bt, 4, H, W, Di]."""
    Bt, _, _, Di = y.shape
    rows, cols, rows_r, cols_r = y.unbind(2)
    from_rows = lambda s: s.reshape(Bt, H, W, Di)                       # noqa: E731
    from_cols = lambda s: s.reshape(Bt, W, H, Di).transpose(1, 2)       # noqa: E731
    return torch.stack([from_rows(rows), from_cols(cols),
                        from_rows(rows_r.flip(1)), from_cols(cols_r.flip(1))], dim=1)


class SS2D(nn.Module):
    """VMamba's SS2D: [B, H, W, d_model] -> [B, H, W, d_model].

    Per-direction parameters (leading axis = direction k, see the module docstring):
    x_proj_weight [4, dt_rank + 2N, Di], dt_projs_weight [4, Di, dt_rank],
    dt_projs_bias [4, Di], A_logs [4, Di, N], Ds [4, Di]. Di = ssm_ratio * d_model.
    ``scan``: "chunked" (default) or "reference" (step loop, autograd through it).
    ``use_kernels``: on CUDA, "auto" takes the Triton scan when triton imports (no build step),
    else mamba-ssm's selective_scan_fn when it imports, else PyTorch (``kernels.scan_path``, one
    log line naming it); True requires one of the two kernels; False is always PyTorch.
    """

    def __init__(self, d_model: int, d_state: int = 8, ssm_ratio: float = 2.0,
                 dt_rank: int | str = "auto", d_conv: int = 3, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, chunk_size: int = 16, scan: str = "chunked",
                 use_kernels: bool | str = "auto"):
        super().__init__()
        if scan not in ("chunked", "reference"):
            raise ValueError(f"scan must be 'chunked' or 'reference', got {scan!r}")
        Di = int(ssm_ratio * d_model)
        if Di < 1:
            raise ValueError(f"ssm_ratio * d_model must be >= 1, got {ssm_ratio} * {d_model}")
        self.d_model, self.d_inner, self.d_state = d_model, Di, d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.chunk_size, self.scan, self.use_kernels = chunk_size, scan, use_kernels
        K, R, N = N_DIRECTIONS, self.dt_rank, d_state
        self.in_proj = nn.Linear(d_model, 2 * Di, bias=False)
        self.conv2d = nn.Conv2d(Di, Di, d_conv, padding=(d_conv - 1) // 2, groups=Di)
        bound = Di**-0.5                                      # nn.Linear's default range
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, Di).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(K, Di, R).uniform_(-R**-0.5, R**-0.5))
        self.dt_projs_bias = nn.Parameter(torch.stack([dt_bias_init(Di, dt_min, dt_max) for _ in range(K)]))
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(K, Di, 1)
        self.A_logs = nn.Parameter(torch.log(A))             # [K, Di, N]
        self.Ds = nn.Parameter(torch.ones(K, Di))
        self.out_norm = nn.LayerNorm(Di)
        self.out_proj = nn.Linear(Di, d_model, bias=False)

    def ssm_inputs(self, x):
        """x [B, H, W, d_model] -> xc (conv + SiLU) [B, H, W, Di] and z [B, H, W, Di]."""
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"SS2D expects [B, H, W, {self.d_model}], got {list(x.shape)}")
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        xc = F.silu(self.conv2d(xi.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        return xc, z

    def scan_directions(self, xc):
        """xc [B, H, W, Di] -> per-direction scan outputs on the grid [B, 4, H, W, Di]."""
        Bt, H, W, Di = xc.shape
        u = grid_to_sequences(xc)                                               # [B, L, 4, Di]
        dbc = torch.einsum("blkd,kcd->blkc", u, self.x_proj_weight)
        dt, Bm, Cm = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(torch.einsum("blkr,kdr->blkd", dt, self.dt_projs_weight) + self.dt_projs_bias)
        A = -torch.exp(self.A_logs.to(xc.dtype))                                # [4, Di, N]
        path = kernels.scan_path(self.use_kernels, xc, "SS2D scan") if self.scan != "reference" else "torch"
        if path == "triton":
            y = _triton_scan(u, delta, A, Bm, Cm, self.Ds)
        elif path == "mamba_ssm":
            y = _kernel_scan(u, delta, A, Bm, Cm, self.Ds)
        elif self.scan == "reference":
            y = selective_scan_grouped_reference(u, delta, A, Bm, Cm, self.Ds)
        else:
            y = selective_scan_grouped(u, delta, A, Bm, Cm, self.Ds, self.chunk_size)
        return sequences_to_grid(y, H, W)

    def finish(self, y, z):
        """Merged scan output y [B, H, W, Di], gate z -> [B, H, W, d_model]."""
        return self.out_proj(self.out_norm(y) * F.silu(z))

    def forward(self, x, return_directions: bool = False):
        """x [B, H, W, d_model] -> [B, H, W, d_model] (and the per-direction scans [B, 4, H, W, Di])."""
        xc, z = self.ssm_inputs(x)
        ys = self.scan_directions(xc)
        out = self.finish(ys.sum(1), z)
        return (out, ys) if return_directions else out


def direction_order(k: int, H: int, W: int) -> list[tuple[int, int]]:
    """The grid cells (i, j) in the order direction k visits them, written out explicitly."""
    rows = [(i, j) for i in range(H) for j in range(W)]
    cols = [(i, j) for j in range(W) for i in range(H)]
    return [rows, cols, rows[::-1], cols[::-1]][k]


def ss2d_reference(m: SS2D, x: Tensor, return_directions: bool = False):
    """Oracle for ``SS2D.forward`` with m's parameters: a loop over directions and cells."""
    xc, z = m.ssm_inputs(x)
    Bt, H, W, Di = xc.shape
    R, N = m.dt_rank, m.d_state
    ys = xc.new_zeros(Bt, N_DIRECTIONS, H, W, Di)
    for k in range(N_DIRECTIONS):
        A = -torch.exp(m.A_logs[k].to(xc.dtype))                                # [Di, N]
        h = xc.new_zeros(Bt, Di, N)
        for i, j in direction_order(k, H, W):
            u = xc[:, i, j]                                                     # [B, Di]
            dbc = u @ m.x_proj_weight[k].T
            dt, Bv, Cv = dbc[:, :R], dbc[:, R:R + N], dbc[:, R + N:]
            delta = F.softplus(dt @ m.dt_projs_weight[k].T + m.dt_projs_bias[k])
            h = torch.exp(delta[:, :, None] * A) * h + (delta * u)[:, :, None] * Bv[:, None, :]
            ys[:, k, i, j] = (h * Cv[:, None, :]).sum(-1) + m.Ds[k] * u
    out = m.finish(ys.sum(1), z)
    return (out, ys) if return_directions else out
