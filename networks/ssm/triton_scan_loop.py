"""The "loop" kernels of the Triton Mamba1 scan: mamba-ssm's structure, one state at a time.

Same contract, buffers and Python entry point as the "tile" kernels of
``networks.ssm.triton_scan`` (which dispatches here when the kind is "loop": ``set_config(...,
kind="loop")`` or ``MAMBAZOO_TRITON_SCAN_KIND=loop``); this module holds only the kernels.

Why a second pair. The tile kernels solve all N states of a chunk at once on an
[N, BD, BT] tile and hold that tile several times over in registers: ptxas for sm_90 gives
~128 registers a thread forward and ~250 (255 with spills past BT=32) backward at N=16
(benchmarks/results/triton_scan_resources.md). So BT stays at 16..32, the serial chunk loop
is long (one chunk's scan waits on the previous chunk's last state) and few warps fit an SM:
on the H200 the backward took 1.90 ms against mamba-ssm's 0.39 ms. mamba-ssm's
``selective_scan_fwd/bwd_kernel`` instead walks the states in a loop inside each chunk, so
only [channels, steps] tiles are live: here [BD, BT], which lets BT be 128..1024 (few
chunks) with a small register footprint.

Program (row r = batch*G + group, block of BD channels), time in chunks of BT steps:
- forward, per chunk: load u, delta [BD, BT] once; per state n: a = exp(delta A[n]) (0 at
  resets), b = delta u B[n, t], ``tl.associative_scan`` along time, h_t = A_t h_in + B_t,
  y += h C[n]. The per-state carry across chunks is a [BN, BD] register tile; state n's row
  is read with a masked sum over n and written back with ``tl.where`` (BN*BD elements, cheap
  next to the [BD, BT] scans). It stores each chunk's entry states (``hst``, as the tile
  kernel does) and, when z is given and a backward will run, the pre-gate output y
  (mamba-ssm's ``selective_scan_fn`` saves ``out`` the same way), so the backward gets dz
  and dL/dy without a pass over the states first.
- backward, chunks last to first: dy (and dz from the saved y), then per state n: h
  recomputed from the stored entry state, dL/dh_t through y (dy C[n]) solved backwards with
  the NEXT step's decay a_{t+1} as a reverse scan (as the tile kernel), plus the carried
  gradient (a [BN, BD] carry like the forward's); du / ddelta accumulate in [BD, BT]
  registers, dA[n] in a [BN, BD] tile, dB[n, t] and dC[n, t] are summed over the block's
  channels and atomically added.
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def kernels():
    """(fwd_kernel, bwd_kernel), built once; the shared helpers come from triton_helpers."""
    import triton

    from networks.ssm import triton_helpers

    tl, helpers = triton_helpers.helpers()
    # @triton.jit resolves names in this module's globals: publish tl and the shared helpers.
    globals().update(tl=tl, **helpers)

    @triton.jit(do_not_specialize=["T", "n_chunks"])
    def fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, rst_ptr,
                   out_ptr, hst_ptr, ys_ptr, last_ptr,
                   T, Dg, N, G, n_chunks,
                   su_b, su_d, su_t, sdt_b, sdt_d, sdt_t, sz_b, sz_d, sz_t, so_b, so_d, so_t,
                   sB_b, sB_g, sB_n, sB_t, sC_b, sC_g, sC_n, sC_t, sA_d, sA_n, sr_b, sr_t,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_H0: tl.constexpr, HAS_RESET: tl.constexpr, SOFTPLUS: tl.constexpr,
                   SAVE: tl.constexpr, COMPUTE: tl.constexpr,
                   BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr, NS: tl.constexpr):
        # ys (pre-gate y, contiguous [Bt, Di, T], compute dtype) is written when SAVE and HAS_Z.
        r = tl.program_id(0)
        b = (r // G).to(tl.int64)
        g = r % G
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        md = offs_d < Dg
        ch = (g * Dg + offs_d).to(tl.int64)                 # channel in [0, Di)
        offs_n = tl.arange(0, BN)
        mnd = (offs_n < N)[:, None] & md[None, :]
        Di = Dg * G
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
        ys_row = ys_ptr + b * Di * T + ch[:, None] * T
        A_row = A_ptr + ch * sA_d
        B_b = B_ptr + b * sB_b + g * sB_g
        C_b = C_ptr + b * sC_b + g * sC_g
        last_col = (tl.arange(0, BT) == BT - 1)[None, :]
        for c in tl.range(0, n_chunks, num_stages=NS):
            t = c * BT + tl.arange(0, BT)[None, :]          # [1, BT]: broadcasts against [BD, BT]
            mt = t < T
            m2 = md[:, None] & mt
            u = tl.load(u_row + t * su_t, mask=m2, other=0.0).to(COMPUTE)
            dt, _ = _delta(dt_row + t * sdt_t, m2, bias, HAS_BIAS, SOFTPLUS, COMPUTE)
            dtu = dt * u
            if HAS_RESET:
                keep = tl.load(rst_ptr + b * sr_b + t * sr_t, mask=mt, other=0) == 0
            if SAVE:
                tl.store(hst_ptr + (b * n_chunks + c) * Di * N + st_off, h, mask=mnd)
            y = tl.zeros([BD, BT], dtype=COMPUTE)
            for n in tl.range(0, N):
                An = tl.load(A_row + n * sA_n, mask=md, other=0.0).to(COMPUTE)       # [BD]
                Bn = tl.load(B_b + n * sB_n + t * sB_t, mask=mt, other=0.0).to(COMPUTE)  # [1, BT]
                Cn = tl.load(C_b + n * sC_n + t * sC_t, mask=mt, other=0.0).to(COMPUTE)
                a = tl.exp(dt * An[:, None])
                if HAS_RESET:
                    a = tl.where(keep, a, 0.0)
                sel = offs_n[:, None] == n
                hn = tl.sum(tl.where(sel, h, 0.0), axis=0)                            # carry row n
                aa, bb = tl.associative_scan((a, dtu * Bn), 1, _combine)
                hs = aa * hn[:, None] + bb
                y += hs * Cn
                # Padded steps (t >= T) have decay 1 and input 0: the last column is h_{T-1}.
                h = tl.where(sel, tl.sum(tl.where(last_col, hs, 0.0), axis=1)[None, :], h)
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                if SAVE:
                    tl.store(ys_row + t, y, mask=m2)
                zv = tl.load(z_row + t * sz_t, mask=m2, other=0.0).to(COMPUTE)
                y = y * zv * _sigmoid(zv)
            tl.store(o_row + t * so_t, y.to(out_ptr.dtype.element_ty), mask=m2)
        tl.store(last_ptr + b * Di * N + st_off, h, mask=mnd)

    @triton.jit(do_not_specialize=["T", "n_chunks"])
    def bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, rst_ptr, hst_ptr, ys_ptr,
                   gout_ptr, glast_ptr,
                   du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, dz_ptr, dh0_ptr,
                   T, Dg, N, G, n_chunks,
                   su_b, su_d, su_t, sdt_b, sdt_d, sdt_t, sz_b, sz_d, sz_t, sg_b, sg_d, sg_t,
                   sB_b, sB_g, sB_n, sB_t, sC_b, sC_g, sC_n, sC_t, sA_d, sA_n, sr_b, sr_t,
                   HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                   HAS_GLAST: tl.constexpr, HAS_RESET: tl.constexpr, SOFTPLUS: tl.constexpr,
                   COMPUTE: tl.constexpr,
                   BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr, NS: tl.constexpr):
        # Same buffers as the tile backward: du/ddt/dz [Bt, Di, T], dB/dC [Bt, G, N, T] (zeroed,
        # atomics), dA/dh0 [Bt, Di, N], dD/dbias [Bt, Di] (per-batch partials), all contiguous.
        r = tl.program_id(0)
        b = (r // G).to(tl.int64)
        g = r % G
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        md = offs_d < Dg
        ch = (g * Dg + offs_d).to(tl.int64)
        offs_n = tl.arange(0, BN)
        mnd = (offs_n < N)[:, None] & md[None, :]
        Di = Dg * G
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
        A_row = A_ptr + ch * sA_d
        B_b = B_ptr + b * sB_b + g * sB_g
        C_b = C_ptr + b * sC_b + g * sC_g
        grad_row = b * Di * T + ch[:, None] * T               # du/ddt/dz and the saved y
        bc_row = (b * G + g) * N * T                          # dB/dC
        first_col = (tl.arange(0, BT) == 0)[None, :]
        for i in tl.range(0, n_chunks, num_stages=NS):
            c = n_chunks - 1 - i
            t = c * BT + tl.arange(0, BT)[None, :]
            mt = t < T
            m2 = md[:, None] & mt
            u = tl.load(u_row + t * su_t, mask=m2, other=0.0).to(COMPUTE)
            dt, raw = _delta(dt_row + t * sdt_t, m2, bias, HAS_BIAS, SOFTPLUS, COMPUTE)
            dtu = dt * u
            # The NEXT step's decay a_{t+1} couples g_t to g_{t+1}; past T it is 1 (padding),
            # so the last real step receives the final state's gradient unchanged.
            t1 = t + 1
            dt1, _ = _delta(dt_row + t1 * sdt_t, md[:, None] & (t1 < T), bias, HAS_BIAS, SOFTPLUS, COMPUTE)
            if HAS_RESET:
                keep = tl.load(rst_ptr + b * sr_b + t * sr_t, mask=mt, other=0) == 0
                keep1 = tl.load(rst_ptr + b * sr_b + t1 * sr_t, mask=t1 < T, other=0) == 0
            go = tl.load(g_row + t * sg_t, mask=m2, other=0.0).to(COMPUTE)
            if HAS_Z:
                zv = tl.load(z_row + t * sz_t, mask=m2, other=0.0).to(COMPUTE)
                sz = _sigmoid(zv)
                y = tl.load(ys_ptr + grad_row + t, mask=m2, other=0.0)   # pre-gate, saved by the forward
                dzv = go * y * sz * (1.0 + zv * (1.0 - sz))
                tl.store(dz_ptr + grad_row + t, dzv.to(dz_ptr.dtype.element_ty), mask=m2)
                dy = go * zv * sz
            else:
                dy = go
            if HAS_D:
                dD_acc += tl.sum(dy * u, axis=1)
            gda_A = tl.zeros([BD, BT], dtype=COMPUTE)         # sum_n dL/d(delta A[n]) A[n]
            gB = tl.zeros([BD, BT], dtype=COMPUTE)            # sum_n dL/dh[n] B[n]: through b = delta u B
            hst_c = hst_ptr + (b * n_chunks + c) * Di * N + ch * N
            for n in tl.range(0, N):
                An = tl.load(A_row + n * sA_n, mask=md, other=0.0).to(COMPUTE)
                Bn = tl.load(B_b + n * sB_n + t * sB_t, mask=mt, other=0.0).to(COMPUTE)
                Cn = tl.load(C_b + n * sC_n + t * sC_t, mask=mt, other=0.0).to(COMPUTE)
                hn = tl.load(hst_c + n, mask=md, other=0.0)   # state n entering the chunk
                a = tl.exp(dt * An[:, None])
                a1 = tl.exp(dt1 * An[:, None])
                if HAS_RESET:
                    a = tl.where(keep, a, 0.0)
                    a1 = tl.where(keep1, a1, 0.0)
                bx = dtu * Bn
                aa, bb = tl.associative_scan((a, bx), 1, _combine)
                hs = aa * hn[:, None] + bb                    # h_t, recomputed
                tl.atomic_add(dC_ptr + bc_row + n * T + t, tl.sum(dy * hs, axis=0, keep_dims=True),
                              mask=mt, sem="relaxed")        # read after the kernel only
                ga, gb = tl.associative_scan((a1, dy * Cn), 1, _combine, reverse=True)
                sel = offs_n[:, None] == n
                gg = ga * tl.sum(tl.where(sel, gcar, 0.0), axis=0)[:, None] + gb   # dL/dh_t, total
                gcar = tl.where(sel, tl.sum(tl.where(first_col, gg, 0.0), axis=1)[None, :], gcar)
                # a_t h_{t-1} = h_t - b_t: exact 0 at a reset (the scan gives h_t = b_t there).
                gda = gg * (hs - bx)
                dA_acc += tl.where(sel, tl.sum(gda * dt, axis=1)[None, :], 0.0)
                gda_A += gda * An[:, None]
                gB += gg * Bn
                tl.atomic_add(dB_ptr + bc_row + n * T + t, tl.sum(gg * dtu, axis=0, keep_dims=True),
                              mask=mt, sem="relaxed")
            ddt = gda_A + gB * u
            du = gB * dt
            if HAS_D:
                du += Dv[:, None] * dy
            if SOFTPLUS:
                ddt = ddt * tl.where(raw > 20.0, 1.0, _sigmoid(raw))
            ddt = tl.where(m2, ddt, 0.0)
            dbias_acc += tl.sum(ddt, axis=1)
            tl.store(du_ptr + grad_row + t, du.to(du_ptr.dtype.element_ty), mask=m2)
            tl.store(ddt_ptr + grad_row + t, ddt.to(ddt_ptr.dtype.element_ty), mask=m2)
        # gcar is now dL/dh_0 (step 0's state); the state before it enters through step 0's
        # decay: dL/dh0 = a_0 * g_0 (0 where the row resets at t=0).
        A = tl.load(A_row[None, :] + offs_n[:, None] * sA_n, mask=mnd, other=0.0).to(COMPUTE)
        dt0, _ = _delta(dt_row, md[:, None], bias, HAS_BIAS, SOFTPLUS, COMPUTE)   # [BD, 1]
        a0 = tl.exp(tl.sum(dt0, axis=1)[None, :] * A)
        if HAS_RESET:
            a0 = tl.where(tl.load(rst_ptr + b * sr_b) != 0, 0.0, a0)
        tl.store(dA_ptr + b * Di * N + st_off, dA_acc, mask=mnd)
        tl.store(dh0_ptr + b * Di * N + st_off, a0 * gcar, mask=mnd)
        tl.store(dD_ptr + b * Di + ch, dD_acc, mask=md)
        tl.store(dbias_ptr + b * Di + ch, dbias_acc, mask=md)

    return fwd_kernel, bwd_kernel
