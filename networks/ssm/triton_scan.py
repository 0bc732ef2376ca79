"""Mamba1 selective scan in Triton, with per-step resets and a carried state (forward and backward).

mamba-ssm's ``selective_scan_fn`` has neither resets nor an initial state (see
``kernels.scan_with_resets`` for the step-insertion trick it needs) and takes a ~6-minute
build. This scan takes both natively and needs only Triton, which ships with torch on
CUDA machines. Same contract as ``selective_scan_fn`` (layout, ``delta_bias`` and
``delta_softplus`` fused, gate ``y * silu(z)``, variable B/C with groups), plus:
- ``initial_state`` h0 [Bt, Di, N], with its gradient;
- ``reset`` [Bt, T] bool: where true the state is zeroed BEFORE that step (the step's
  decay is 0), exactly as ``networks.ssm.mamba1.selective_scan_reference``;
- the final state, with its gradient (mamba-ssm drops it).

Nothing here imports triton at module load (``import networks`` must work without it):
the kernels are built on first use by ``_kernels()``. With ``TRITON_INTERPRET=1`` set
before triton is first imported, the same kernels run on CPU tensors (that is how the
tests run it without a GPU).

Two kernel pairs ("kinds", chosen by ``set_config(..., kind=)`` / ``MAMBAZOO_TRITON_SCAN_KIND``):
"tile" (here) and "loop" (the default, ``networks.ssm.triton_scan_loop``: mamba-ssm's loop
over the states on [BD, BT] tiles, for long chunks at few registers). Same buffers and entry
points; the loop kind's forward also saves the pre-gate output for dz.

Tile kernel design. Program (row r = batch*G + group, block of BD channels) walks time in
chunks of BT steps. Per chunk it loads u/delta/z [BD, BT] and B/C [N, BT], forms the
per-(state, channel) decays a = exp(delta*A) (0 at resets) and inputs b = delta*u*B as an
[N, BD, BT] tile, and solves h_t = a_t h_{t-1} + b_t with ``tl.associative_scan``; the
state entering the chunk is carried in registers. The forward stores that entering state
per chunk (N/BT of u's size), so the backward can recompute a chunk's states from it and
then run the reverse recurrence g_t = dL/dh_t + a_{t+1} g_{t+1} as a reverse scan (chunks
last to first, g carried across). dB/dC sum over channels: one fp32 atomic add per
program per element (Di/BD adds, as mamba-ssm's own backward does per channel); dA, dD,
d(delta_bias) are per-batch partials summed by torch (deterministic, small).
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from networks.ssm import triton_helpers


# Kernel kind (module docstring). "loop" is the default since the H200 sweep of both kinds
# (benchmarks/results/triton_scan.md: forward+backward, B=8, d_inner=512, N=16, fp32) ran it
# faster at every T: 1.75 vs 2.61 ms at T=1024 and 24.4 vs 32.8 ms at 16384 with each kind's
# old defaults, and 3.76 ms at T=4096 with its best tilings (below) against the tile kind's
# best forward + best backward, 0.82 + 3.48 ms.
KINDS = ("tile", "loop")
DEFAULT_KIND = "loop"
# Tiling (BD channels per program, BT steps per chunk, warps, pipeline stages of the chunk
# loop's loads). The [N, BD, BT] tile is held several times over in registers: at N=16 the
# sm_90 build of (4, 32, 4) uses 128 registers forward and ~250 backward without spilling
# (cuobjdump); stages >= 2 prefetch the next chunk's loads with cp.async, since the loop is
# latency-bound (one chunk's scan waits on the previous chunk's last state).
# The backward has its own (BD, warps, stages): it holds ~3x the forward's tiles and was 7x the
# forward's time on the H200 (benchmarks/results/gpu_speed_profile.txt), so its best tiling need
# not be the forward's. Its BT is always the forward's: it restarts each chunk from the
# chunk-entry states the forward stored every BT steps.
# Override for tuning: MAMBAZOO_TRITON_SCAN="BD,BT,warps,stages" and
# MAMBAZOO_TRITON_SCAN_BWD="BD,warps,stages" (benchmarks/triton_scan_bench.py sweeps both); they
# apply to the kind in use.
DEFAULT_CONFIG = (4, 32, 4, 2)
DEFAULT_BWD_CONFIG = (4, 4, 2)
# The loop kind's tiles are [BD, BT] (N times smaller), so BT is long and BD small. ptxas for
# sm_90 at N=16 (benchmarks/triton_scan_resources.py; results/triton_scan_resources.md is the
# strided case), strided (the mixer's) / contiguous-along-T inputs (--unit-stride, the bench's):
# (1, 128, 4) uses 48/48 registers forward and 77/110 backward, no spills; (1, 256, 4) 72/93 and
# 106/136 (8 B of stack forward); BD=2 or 1024 steps on 4 warps reach 143..255. One channel a
# program also makes Bt*Di programs, mamba-ssm's grid.
# Measured on the H200 (same sweep, T=4096), the fastest pair is longer and wider than the
# register counts suggest: (2, 1024, 8) forward 0.90 ms (the (1, 128, 4) above: 2.44 ms) and
# (2, 4) backward 2.86 ms although ptxas reports spills for it (latency is hidden by fewer,
# longer chunks: T/BT serial steps per program). Short sequences clamp BT to T (_config).
LOOP_DEFAULT_CONFIG = (2, 1024, 8, 1)
LOOP_DEFAULT_BWD_CONFIG = (2, 4, 1)
DEFAULT_TILINGS = {"tile": (DEFAULT_CONFIG, DEFAULT_BWD_CONFIG), "loop": (LOOP_DEFAULT_CONFIG, LOOP_DEFAULT_BWD_CONFIG)}
_CONFIG_OVERRIDE = None  # set by tests and the benchmark (set_config) to exercise other tilings
_BWD_OVERRIDE = None
_KIND_OVERRIDE = None


def available() -> bool:
    """True when triton imports (never raises; does not import triton if it is absent)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def set_config(config, bwd=None, kind=None):
    """Forward tiling (BD, BT, num_warps[, stages]), backward tiling (BD, num_warps[, stages]) and
    kernel kind ("tile" or "loop"), each None for the default. For tests and benchmarks."""
    global _CONFIG_OVERRIDE, _BWD_OVERRIDE, _KIND_OVERRIDE
    _CONFIG_OVERRIDE = None if config is None else _full(tuple(int(v) for v in config))
    _BWD_OVERRIDE = None if bwd is None else _full_bwd(tuple(int(v) for v in bwd))
    _KIND_OVERRIDE = None if kind is None else _check_kind(kind, "set_config(kind=)")


def _full(cfg):
    if len(cfg) not in (3, 4) or any(v < 1 for v in cfg) or any(v & (v - 1) for v in cfg[:2]):
        raise ValueError(f"tiling must be (BD, BT, warps[, stages]) with BD, BT powers of 2, got {cfg}")
    return cfg if len(cfg) == 4 else cfg + (1,)


def _full_bwd(cfg):
    if len(cfg) not in (2, 3) or any(v < 1 for v in cfg) or cfg[0] & (cfg[0] - 1):
        raise ValueError(f"backward tiling must be (BD, warps[, stages]) with BD a power of 2, got {cfg}")
    return cfg if len(cfg) == 3 else cfg + (1,)


def _check_kind(kind, where):
    if kind not in KINDS:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    return kind


def _ints(s):
    return tuple(int(v) for v in s.split(","))


def _lookup(override, env, parse, default):
    """The one lookup order of every setting: set_config's override, then the environment
    variable ``env`` (parsed), then the default."""
    if override is not None:
        return override
    if os.environ.get(env):
        return parse(os.environ[env])
    return default


def _kind():
    """The kernel kind in use: "tile" or "loop"."""
    return _lookup(_KIND_OVERRIDE, "MAMBAZOO_TRITON_SCAN_KIND",
                   lambda v: _check_kind(v.strip(), "MAMBAZOO_TRITON_SCAN_KIND"), DEFAULT_KIND)


def describe() -> str:
    """The kernel kind and tilings in use, for the dispatch's one log line (a bad setting raises
    its ValueError here, before any kernel)."""
    kind = _kind()
    bd, bt, w, st = _config(1 << 30, kind)
    bbd, bw, bst = _bwd_config(kind)
    return (f"{kind} kernels, forward (BD, BT, warps, stages) = ({bd}, {bt}, {w}, {st}), "
            f"backward (BD, warps, stages) = ({bbd}, {bw}, {bst})")


def _config(T, kind):
    bd, bt, w, st = _lookup(_CONFIG_OVERRIDE, "MAMBAZOO_TRITON_SCAN", lambda v: _full(_ints(v)),
                            DEFAULT_TILINGS[kind][0])
    # Short sequences: no point in a chunk longer than the sequence (pow2, >= 16 for tl.arange).
    bt = min(bt, max(16, 1 << (max(T, 1) - 1).bit_length()))
    return bd, bt, w, st


def _bwd_config(kind):
    """(BD, warps, stages) of the backward kernel."""
    return _lookup(_BWD_OVERRIDE, "MAMBAZOO_TRITON_SCAN_BWD", lambda v: _full_bwd(_ints(v)), DEFAULT_TILINGS[kind][1])


@functools.lru_cache(maxsize=None)
def _kernels():
    """The tile kind's (fwd_kernel, bwd_kernel, tl), built once."""
    import triton

    tl, helpers = triton_helpers.helpers()
    # @triton.jit resolves the names a kernel uses in its module's globals: publish tl and the helpers.
    globals().update(tl=tl, **helpers)

    # Tiles are [BN, BD, BT] (state, channel, time). Triton's default layout puts the 32 lanes
    # of a warp along time (the scan is then warp shuffles), warps along channels and every
    # state index of a (channel, step) in one thread, so the sums over N (y, dL/du, dL/ddelta)
    # are register adds; only the sums over channels (dB, dC) cross warps. Measured with
    # sm_90 AOT builds: [BD, BN, BT] had warps on N and 249 registers in the backward.
    # T and n_chunks are not specialised on (divisibility by 16): one compile serves every length.
    @triton.jit(do_not_specialize=["T", "n_chunks"])
    def fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, rst_ptr,
                   out_ptr, hst_ptr, last_ptr,
                   T, Dg, N, G, n_chunks,
                   su_b, su_d, su_t, sdt_b, sdt_d, sdt_t, sz_b, sz_d, sz_t, so_b, so_d, so_t,
                   sB_b, sB_g, sB_n, sB_t, sC_b, sC_g, sC_n, sC_t, sA_d, sA_n, sr_b, sr_t,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_H0: tl.constexpr, HAS_RESET: tl.constexpr, SOFTPLUS: tl.constexpr,
                   SAVE: tl.constexpr, COMPUTE: tl.constexpr,
                   BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr, NS: tl.constexpr):
        r = tl.program_id(0)
        b = (r // G).to(tl.int64)
        g = r % G
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        md = offs_d < Dg
        ch = (g * Dg + offs_d).to(tl.int64)                 # channel in [0, Di)
        offs_n = tl.arange(0, BN)
        mn = offs_n < N
        mnd = mn[:, None] & md[None, :]
        Di = Dg * G
        A = tl.load(A_ptr + offs_n[:, None] * sA_n + ch[None, :] * sA_d, mask=mnd, other=0.0).to(COMPUTE)
        if HAS_D:
            Dv = tl.load(D_ptr + ch, mask=md, other=0.0).to(COMPUTE)
        bias = tl.zeros([BD], dtype=COMPUTE)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + ch, mask=md, other=0.0).to(COMPUTE)
        st_off = ch[None, :] * N + offs_n[:, None]           # [BN, BD] in a [.., Di, N] state
        if HAS_H0:
            h = tl.load(h0_ptr + b * Di * N + st_off, mask=mnd, other=0.0).to(COMPUTE)
        else:
            h = tl.zeros([BN, BD], dtype=COMPUTE)
        u_row = u_ptr + b * su_b + ch[:, None] * su_d
        dt_row = dt_ptr + b * sdt_b + ch[:, None] * sdt_d
        z_row = z_ptr + b * sz_b + ch[:, None] * sz_d
        o_row = out_ptr + b * so_b + ch[:, None] * so_d
        B_row = B_ptr + b * sB_b + g * sB_g + offs_n[:, None] * sB_n
        C_row = C_ptr + b * sC_b + g * sC_g + offs_n[:, None] * sC_n
        last_col = (tl.arange(0, BT) == BT - 1)[None, None, :]
        for c in tl.range(0, n_chunks, num_stages=NS):
            t = c * BT + tl.arange(0, BT)
            mt = t < T
            m2 = md[:, None] & mt[None, :]
            mnt = mn[:, None] & mt[None, :]
            u = tl.load(u_row + t[None, :] * su_t, mask=m2, other=0.0).to(COMPUTE)
            dt, _ = _delta(dt_row + t[None, :] * sdt_t, m2, bias, HAS_BIAS, SOFTPLUS, COMPUTE)
            Bv = tl.load(B_row + t[None, :] * sB_t, mask=mnt, other=0.0).to(COMPUTE)
            Cv = tl.load(C_row + t[None, :] * sC_t, mask=mnt, other=0.0).to(COMPUTE)
            a = tl.exp(dt[None, :, :] * A[:, :, None])      # [BN, BD, BT]
            if HAS_RESET:
                rs = tl.load(rst_ptr + b * sr_b + t * sr_t, mask=mt, other=0)
                a = tl.where((rs != 0)[None, None, :], 0.0, a)
            bx = (dt * u)[None, :, :] * Bv[:, None, :]
            if SAVE:
                tl.store(hst_ptr + (b * n_chunks + c) * Di * N + st_off, h, mask=mnd)
            aa, bb = tl.associative_scan((a, bx), 2, _combine)
            hs = aa * h[:, :, None] + bb
            y = tl.sum(hs * Cv[:, None, :], axis=0)          # [BD, BT]
            if HAS_D:
                y = y + Dv[:, None] * u
            if HAS_Z:
                zv = tl.load(z_row + t[None, :] * sz_t, mask=m2, other=0.0).to(COMPUTE)
                y = y * zv * _sigmoid(zv)
            tl.store(o_row + t[None, :] * so_t, y.to(out_ptr.dtype.element_ty), mask=m2)
            # Padded steps (t >= T) have decay 1 and input 0, so the last column is h_{T-1}.
            h = tl.sum(tl.where(last_col, hs, 0.0), axis=2)
        tl.store(last_ptr + b * Di * N + st_off, h, mask=mnd)

    @triton.jit(do_not_specialize=["T", "n_chunks"])
    def bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, rst_ptr, hst_ptr,
                   gout_ptr, glast_ptr,
                   du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr, dh0_ptr,
                   T, Dg, N, G, n_chunks,
                   su_b, su_d, su_t, sdt_b, sdt_d, sdt_t, sz_b, sz_d, sz_t, sg_b, sg_d, sg_t,
                   sB_b, sB_g, sB_n, sB_t, sC_b, sC_g, sC_n, sC_t, sA_d, sA_n, sr_b, sr_t,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_GLAST: tl.constexpr, HAS_RESET: tl.constexpr, SOFTPLUS: tl.constexpr,
                   COMPUTE: tl.constexpr,
                   BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr, NS: tl.constexpr):
        # Gradient buffers are contiguous: du/ddt/dz [Bt, Di, T], dB/dC [Bt, G, N, T] (fp32
        # or fp64, zeroed: atomics), dA/dh0 [Bt, Di, N], dD/dbias [Bt, Di] (per-batch partials).
        r = tl.program_id(0)
        b = (r // G).to(tl.int64)
        g = r % G
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        md = offs_d < Dg
        ch = (g * Dg + offs_d).to(tl.int64)
        offs_n = tl.arange(0, BN)
        mn = offs_n < N
        mnd = mn[:, None] & md[None, :]
        Di = Dg * G
        A = tl.load(A_ptr + offs_n[:, None] * sA_n + ch[None, :] * sA_d, mask=mnd, other=0.0).to(COMPUTE)
        if HAS_D:
            Dv = tl.load(D_ptr + ch, mask=md, other=0.0).to(COMPUTE)
        bias = tl.zeros([BD], dtype=COMPUTE)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + ch, mask=md, other=0.0).to(COMPUTE)
        st_off = ch[None, :] * N + offs_n[:, None]
        if HAS_GLAST:
            gcar = tl.load(glast_ptr + b * Di * N + st_off, mask=mnd, other=0.0).to(COMPUTE)
        else:
            gcar = tl.zeros([BN, BD], dtype=COMPUTE)
        dA_acc = tl.zeros([BN, BD], dtype=COMPUTE)
        dD_acc = tl.zeros([BD], dtype=COMPUTE)
        dbias_acc = tl.zeros([BD], dtype=COMPUTE)
        u_row = u_ptr + b * su_b + ch[:, None] * su_d
        dt_row = dt_ptr + b * sdt_b + ch[:, None] * sdt_d
        z_row = z_ptr + b * sz_b + ch[:, None] * sz_d
        g_row = gout_ptr + b * sg_b + ch[:, None] * sg_d
        B_row = B_ptr + b * sB_b + g * sB_g + offs_n[:, None] * sB_n
        C_row = C_ptr + b * sC_b + g * sC_g + offs_n[:, None] * sC_n
        grad_row = b * Di * T + ch[:, None] * T               # du/ddt/dz
        bc_row = ((b * G + g) * N + offs_n[:, None]) * T       # dB/dC
        first_col = (tl.arange(0, BT) == 0)[None, None, :]
        for i in tl.range(0, n_chunks, num_stages=NS):
            c = n_chunks - 1 - i
            t = c * BT + tl.arange(0, BT)
            mt = t < T
            m2 = md[:, None] & mt[None, :]
            mnt = mn[:, None] & mt[None, :]
            u = tl.load(u_row + t[None, :] * su_t, mask=m2, other=0.0).to(COMPUTE)
            dt, raw = _delta(dt_row + t[None, :] * sdt_t, m2, bias, HAS_BIAS, SOFTPLUS, COMPUTE)
            Bv = tl.load(B_row + t[None, :] * sB_t, mask=mnt, other=0.0).to(COMPUTE)
            Cv = tl.load(C_row + t[None, :] * sC_t, mask=mnt, other=0.0).to(COMPUTE)
            a = tl.exp(dt[None, :, :] * A[:, :, None])
            if HAS_RESET:
                rs = tl.load(rst_ptr + b * sr_b + t * sr_t, mask=mt, other=0)
                a = tl.where((rs != 0)[None, None, :], 0.0, a)
            bx = (dt * u)[None, :, :] * Bv[:, None, :]
            h = tl.load(hst_ptr + (b * n_chunks + c) * Di * N + st_off, mask=mnd, other=0.0)
            aa, bb = tl.associative_scan((a, bx), 2, _combine)
            hs = aa * h[:, :, None] + bb                     # h_t, recomputed
            go = tl.load(g_row + t[None, :] * sg_t, mask=m2, other=0.0).to(COMPUTE)
            if HAS_Z:
                zv = tl.load(z_row + t[None, :] * sz_t, mask=m2, other=0.0).to(COMPUTE)
                sz = _sigmoid(zv)
                y = tl.sum(hs * Cv[:, None, :], axis=0)
                if HAS_D:
                    y = y + Dv[:, None] * u
                dzv = go * y * sz * (1.0 + zv * (1.0 - sz))
                tl.store(dz_ptr + grad_row + t[None, :], dzv.to(dz_ptr.dtype.element_ty), mask=m2)
                dy = go * zv * sz
            else:
                dy = go
            if HAS_D:
                dD_acc += tl.sum(dy * u, axis=1)
            dCv = tl.sum(dy[None, :, :] * hs, axis=1)        # [BN, BT], this block's channels
            tl.atomic_add(dC_ptr + bc_row + t[None, :], dCv, mask=mnt, sem="relaxed")  # read after the kernel only
            # a_t h_{t-1} = h_t - b_t: exact 0 at a reset (the scan gives h_t = b_t there).
            ah = hs - bx
            # The decay of the NEXT step, a_{t+1}, couples g_t to g_{t+1}; past T it is 1
            # (padding), so the last real step receives the final state's gradient unchanged.
            t1 = t + 1
            m21 = md[:, None] & (t1 < T)[None, :]
            dt1, _ = _delta(dt_row + t1[None, :] * sdt_t, m21, bias, HAS_BIAS, SOFTPLUS, COMPUTE)
            a1 = tl.exp(dt1[None, :, :] * A[:, :, None])
            if HAS_RESET:
                rs1 = tl.load(rst_ptr + b * sr_b + t1 * sr_t, mask=t1 < T, other=0)
                a1 = tl.where((rs1 != 0)[None, None, :], 0.0, a1)
            gh = dy[None, :, :] * Cv[:, None, :]             # dL/dh_t through y_t
            ga, gb = tl.associative_scan((a1, gh), 2, _combine, reverse=True)
            gg = ga * gcar[:, :, None] + gb                  # dL/dh_t, total
            gcar = tl.sum(tl.where(first_col, gg, 0.0), axis=2)
            gda = gg * ah                                    # dL/d(delta_t A) per (n, d)
            dA_acc += tl.sum(gda * dt[None, :, :], axis=2)
            gbu = tl.sum(gg * Bv[:, None, :], axis=0)        # [BD, BT]: through b = delta u B
            ddt = tl.sum(gda * A[:, :, None], axis=0) + gbu * u
            du = gbu * dt
            if HAS_D:
                du += Dv[:, None] * dy
            dBv = tl.sum(gg * (dt * u)[None, :, :], axis=1)
            tl.atomic_add(dB_ptr + bc_row + t[None, :], dBv, mask=mnt, sem="relaxed")
            if SOFTPLUS:
                ddt = ddt * tl.where(raw > 20.0, 1.0, _sigmoid(raw))
            ddt = tl.where(m2, ddt, 0.0)
            dbias_acc += tl.sum(ddt, axis=1)
            tl.store(du_ptr + grad_row + t[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
            tl.store(ddt_ptr + grad_row + t[None, :], ddt.to(ddt_ptr.dtype.element_ty), mask=m2)
        # After the loop gcar is dL/dh_0 (step 0's state); the state before it enters
        # through step 0's decay: dL/dh0 = a_0 * g_0 (0 where the row resets at t=0).
        dt0, _ = _delta(dt_row, md[:, None], bias, HAS_BIAS, SOFTPLUS, COMPUTE)   # [BD, 1]
        a0 = tl.exp(tl.sum(dt0, axis=1)[None, :] * A)
        if HAS_RESET:
            a0 = tl.where(tl.load(rst_ptr + b * sr_b) != 0, 0.0, a0)
        tl.store(dA_ptr + b * Di * N + st_off, dA_acc, mask=mnd)
        tl.store(dh0_ptr + b * Di * N + st_off, a0 * gcar, mask=mnd)
        tl.store(dD_ptr + b * Di + ch, dD_acc, mask=md)
        tl.store(dbias_ptr + b * Di + ch, dbias_acc, mask=md)

    return fwd_kernel, bwd_kernel, tl


def _triton_dtype(tl, dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _bc_strides(t):
    """B/C as [Bt, G, N, T] strides (a [Bt, N, T] tensor is G=1)."""
    return t.stride() if t.dim() == 4 else (t.stride(0), 0, t.stride(1), t.stride(2))


class _SelectiveScanTriton(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, reset, softplus, save, kind):
        fwd, _, tl = _kind_kernels(kind)
        Bt, Di, T = u.shape
        N = A.shape[1]
        G = B.shape[1] if B.dim() == 4 else 1
        Dg = Di // G
        BD, BT, warps, stages = _config(T, kind)
        n_chunks = triton_cdiv(T, BT)
        compute = torch.float64 if u.dtype == torch.float64 else torch.float32
        out = torch.empty(Bt, Di, T, device=u.device, dtype=u.dtype)
        last = torch.empty(Bt, Di, N, device=u.device, dtype=compute)
        # Chunk-entry states are only needed by the backward: skipped under no_grad (where
        # ctx.needs_input_grad still says True for inputs that require grad).
        hst = torch.empty(Bt, n_chunks if save else 0, Di, N, device=u.device, dtype=compute)
        # The loop kind also saves the pre-gate output y (for dz), as mamba-ssm saves ``out``.
        ys = torch.empty(Bt, Di, T, device=u.device, dtype=compute) \
            if kind == "loop" and save and z is not None else None
        rst = reset.to(torch.int8) if reset is not None else None
        dummy = u  # never read: the matching HAS_* flag is off
        zz = z if z is not None else u
        grid = (Bt * G, triton_cdiv(Dg, BD))
        fwd[grid](u, delta, A, B, C, D if D is not None else dummy, zz,
                  delta_bias if delta_bias is not None else dummy,
                  h0 if h0 is not None else dummy, rst if rst is not None else dummy,
                  out, hst if save else last, *_loop_only(kind, ys if ys is not None else last), last,
                  T, Dg, N, G, n_chunks,
                  *u.stride(), *delta.stride(), *zz.stride(), *out.stride(),
                  *_bc_strides(B), *_bc_strides(C), *A.stride(),
                  *(rst.stride() if rst is not None else (0, 0)),
                  HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                  HAS_H0=h0 is not None, HAS_RESET=rst is not None, SOFTPLUS=bool(softplus),
                  SAVE=save, COMPUTE=_triton_dtype(tl, compute),
                  BD=BD, BN=max(2, 1 << (N - 1).bit_length()), BT=BT, NS=stages, num_warps=warps)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, rst, hst, ys)
        ctx.meta = (softplus, h0 is not None, h0.dtype if h0 is not None else None, BT, kind)
        return out, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout, glast):
        u, delta, A, B, C, D, z, delta_bias, rst, hst, ys = ctx.saved_tensors
        softplus, has_h0, h0_dtype, BT, kind = ctx.meta
        _, bwd, tl = _kind_kernels(kind)
        BD, warps, stages = _bwd_config(kind)
        Bt, Di, T = u.shape
        N = A.shape[1]
        G = B.shape[1] if B.dim() == 4 else 1
        Dg = Di // G
        n_chunks = triton_cdiv(T, BT)
        glast = glast.contiguous() if glast is not None else None
        compute = hst.dtype
        dev = u.device
        if gout is None:
            gout = torch.zeros(Bt, Di, T, device=dev, dtype=u.dtype)
        du = torch.empty(Bt, Di, T, device=dev, dtype=u.dtype)
        ddt = torch.empty(Bt, Di, T, device=dev, dtype=delta.dtype)
        dz = torch.empty(Bt, Di, T, device=dev, dtype=z.dtype) if z is not None else du
        dB = torch.zeros(Bt, G, N, T, device=dev, dtype=compute)   # atomics: fp32/fp64, zeroed
        dC = torch.zeros(Bt, G, N, T, device=dev, dtype=compute)
        dA = torch.empty(Bt, Di, N, device=dev, dtype=compute)     # per-batch partials
        dh0 = torch.empty(Bt, Di, N, device=dev, dtype=compute)
        dD = torch.empty(Bt, Di, device=dev, dtype=compute)
        dbias = torch.empty(Bt, Di, device=dev, dtype=compute)
        dummy = u
        zz = z if z is not None else u
        grid = (Bt * G, triton_cdiv(Dg, BD))
        bwd[grid](u, delta, A, B, C, D if D is not None else dummy, zz,
                  delta_bias if delta_bias is not None else dummy, rst if rst is not None else dummy,
                  hst, *_loop_only(kind, ys if ys is not None else dummy), gout,
                  glast if glast is not None else dummy,
                  du, ddt, dA, dB, dC, dD, dbias, dz, dh0,
                  T, Dg, N, G, n_chunks,
                  *u.stride(), *delta.stride(), *zz.stride(), *gout.stride(),
                  *_bc_strides(B), *_bc_strides(C), *A.stride(),
                  *(rst.stride() if rst is not None else (0, 0)),
                  HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                  HAS_GLAST=glast is not None, HAS_RESET=rst is not None, SOFTPLUS=bool(softplus),
                  COMPUTE=_triton_dtype(tl, compute),
                  BD=BD, BN=max(2, 1 << (N - 1).bit_length()), BT=BT, NS=stages, num_warps=warps)
        dB = dB.to(B.dtype).reshape(B.shape)
        dC = dC.to(C.dtype).reshape(C.shape)
        return (du, ddt, dA.sum(0).to(A.dtype), dB, dC,
                dD.sum(0).to(D.dtype) if D is not None else None,
                dz if z is not None else None,
                dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
                dh0.to(h0_dtype) if has_h0 else None, None, None, None, None)


def _kind_kernels(kind):
    """(fwd_kernel, bwd_kernel, tl) of a kind."""
    if kind == "loop":
        from networks.ssm import triton_scan_loop
        return (*triton_scan_loop.kernels(), triton_helpers.helpers()[0])
    return _kernels()


def _loop_only(kind, ys):
    """The saved pre-gate output ``ys``: an argument of the loop kernels only (after hst)."""
    return (ys,) if kind == "loop" else ()


def triton_cdiv(a, b):
    return -(-a // b)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, initial_state=None, reset=None):
    """mamba-ssm's ``selective_scan_fn`` (same argument order) with resets and an initial state.

    u, delta, z [Bt, Di, T]; A [Di, N] (real, negative); B, C [Bt, N, T] or [Bt, G, N, T]
    (Di % G == 0: channel d uses group d // (Di/G)); D, delta_bias [Di];
    initial_state [Bt, Di, N]; reset [Bt, T] bool (state zeroed before the step).
    Returns out [Bt, Di, T] (dtype of u; ``out = y * silu(z)`` when z is given) and, with
    ``return_last_state``, the final state [Bt, Di, N] (fp32, fp64 for fp64 u), which
    carries a gradient. Any strides; computes in fp32 (fp64 for fp64 u).
    """
    Bt, Di, T = u.shape
    if A.dim() != 2 or A.shape[0] != Di:
        raise ValueError(f"A must be [Di={Di}, N], got {list(A.shape)}")
    N = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if t.dim() not in (3, 4) or t.shape[0] != Bt or t.shape[-2:] != (N, T):
            raise ValueError(f"{name} must be [Bt, N, T] or [Bt, G, N, T] (variable B/C), got {list(t.shape)}")
    G = B.shape[1] if B.dim() == 4 else 1
    if C.shape != B.shape or Di % G:
        raise ValueError(f"B and C need the same shape and Di % groups == 0, got {list(B.shape)}, {list(C.shape)}")
    if reset is not None and tuple(reset.shape) != (Bt, T):
        raise ValueError(f"reset must be [Bt, T] = [{Bt}, {T}], got {list(reset.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (Bt, Di, N):
        raise ValueError(f"initial_state must be [Bt, Di, N], got {list(initial_state.shape)}")
    # The kernels index these as dense [Di] / [Bt, Di, N] (a layer slice of a stacked state is not).
    D, delta_bias, initial_state = (t.contiguous() if t is not None else None
                                    for t in (D, delta_bias, initial_state))
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    kind = _kind()  # a bad MAMBAZOO_TRITON_SCAN_KIND is refused here, before any kernel
    out, last = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                           reset, delta_softplus, save, kind)
    return (out, last) if return_last_state else out


# How the layers (mamba1_forward below, SS2D's networks/ssm/ss2d._triton_scan) hand their tensors
# to the scan. "views": the [B, D, T] transposes of their [B, T, .] projections, strided along time
# (d_inner floats for u, delta and z; dt_rank + 2N for Mamba1's B and C). "contiguous": time-contiguous,
# as mamba-ssm's selective_scan_fn makes its inputs, so the loop kernels' long time tiles load with
# unit stride (Triton specializes stride-1 arguments at compile time); Mamba1 computes its projections
# channel-first for it (mamba1_forward), SS2D copies (scan_layout). "auto" (the default): "contiguous"
# for Mamba1 from T >= CONTIGUOUS_FROM_T, else "views". Measured on the H200, 2026-12-04
# (benchmarks/results/gpu_speed_mamba1_layout.md): the scan alone is 1.5x (T=1024) and 2.1x (T=4096)
# faster on time-contiguous inputs, and the Mamba1 layer (forward+backward) with the channel-first
# projections 1.30-1.49x faster at T=4096 and 16384 (fp32 and bf16), but 9% (fp32) and 33% (bf16)
# slower at T=1024, where the layer is launch-bound and the extra transposes cost more than the
# scan saves. SS2D keeps "views" under "auto": its layout was not timed.
SCAN_INPUTS = "auto"
CONTIGUOUS_FROM_T = 4096


def scan_inputs(T: int | None = None) -> str:
    """The layout for a scan over T steps ("contiguous" or "views"), as SCAN_INPUTS says; T=None: a
    layer whose layout was not timed (SS2D), "views" under "auto"."""
    if SCAN_INPUTS not in ("auto", "contiguous", "views"):
        raise ValueError(f"triton_scan.SCAN_INPUTS must be 'auto', 'views' or 'contiguous', got {SCAN_INPUTS!r}")
    if SCAN_INPUTS == "auto":
        return "contiguous" if T is not None and T >= CONTIGUOUS_FROM_T else "views"
    return SCAN_INPUTS


def scan_layout(*tensors):
    """SS2D's scan inputs as SCAN_INPUTS says: copied time-contiguous, or the tensors as given."""
    return tuple(t.contiguous() for t in tensors) if scan_inputs() == "contiguous" else tensors


def mamba1_forward(m, x, is_init, conv_state, ssm_state):
    """``Mamba1Mixer.forward`` (sequence mode) on the Triton scan: resets and the carried
    state go straight into the kernel, and dt_proj's bias + softplus are fused into it
    (mamba-ssm's Mamba does the same), so only the bias-free dt_proj matmul runs in torch.
    The conv + SiLU is the reset-aware Triton kernel of networks/ssm/triton_conv.py (the
    mixer's PyTorch conv is its test oracle); the projections are the mixer's own."""
    from networks.ssm import triton_conv

    layout = scan_inputs(x.shape[1])
    A = -torch.exp(m.A_log.float())
    if layout == "contiguous":   # mamba-ssm's layout (its mamba_inner_fn): channel-first
        # projections, so every scan input comes out time-contiguous; copying the [B, T, .] ones instead
        # held the conv output and z twice for backward (+19% peak, gpu_speed.md's "time-contiguous" rows)
        Wx, Wz = m.in_proj.weight.chunk(2, dim=0)
        xi = F.linear(x, Wx)                                          # [B, T, D]: the conv's layout
        zt = torch.matmul(Wz, x.transpose(1, 2))                      # [B, D, T]
        xc, conv_state = triton_conv.causal_conv1d_silu(xi, m.conv_weight, m.conv_bias, conv_state, is_init)
        u = xc.transpose(1, 2).contiguous()                           # [B, D, T]; xc itself is not kept
        dt, Bt, Ct = torch.matmul(m.x_proj.weight, u).split([m.dt_rank, m.d_state, m.d_state], dim=1)
        dl = torch.matmul(m.dt_proj.weight, dt)                       # [B, D, T]; bias + softplus: in the kernel
    else:                     # "views": the [B, T, .] projections' transposes, strided along time
        xi, z = m.in_proj(x).chunk(2, dim=-1)
        xc, conv_state = triton_conv.causal_conv1d_silu(xi, m.conv_weight, m.conv_bias, conv_state, is_init)
        dt, Bm, Cm = m.x_proj(xc).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
        delta = F.linear(dt, m.dt_proj.weight)                        # bias + softplus: in the kernel
        u, dl, Bt, Ct, zt = (t.transpose(1, 2) for t in (xc, delta, Bm, Cm, z))   # [B, D|N, T]
    # Under autocast the projections give bf16; the kernel reads any dtype and computes in fp32.
    y, last = selective_scan_fn(u, dl, A, Bt, Ct, m.D.float(), zt,
                                delta_bias=m.dt_proj.bias.float(), delta_softplus=True,
                                return_last_state=True, initial_state=ssm_state, reset=is_init)
    return m.out_proj(y.transpose(1, 2)), conv_state, last.to(ssm_state.dtype)
