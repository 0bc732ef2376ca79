"""The Mamba1 and Mamba2 acting steps (one token, no grad) as fused Triton kernels around the matmuls.

The PyTorch steps (``Mamba1Mixer.step``, ``Mamba2Mixer.step``) launch ~25 kernels a layer: the conv
window's cat/mul/sum/bias, SiLU, dt (Mamba1: dt_proj) and softplus, -exp(A_log), the state update's
exp/mul/add, the read-out, D, the z gate (Mamba2: then the group RMSNorm). A graphed acting step is
bound by that count (benchmarks/results/gpu_speed.md: 0.085 ms a one-layer step at batch 1, 1.8x faster
than cuDNN GRU's eager step, against a 3x target). Here:
- Mamba1: in_proj, ``conv_step`` (window shift + taps + bias + SiLU), x_proj, ``ssm_step`` (dt_proj +
  bias + softplus, decay, state update, read-out, D, SiLU(z) gate), out_proj: five launches;
- Mamba2: in_proj, ``conv_step`` over xBC, ``ssd_step`` (per head: dt bias + softplus, decay, update,
  read-out, D, SiLU(z) gate), the mixer's group RMSNorm (two), out_proj: six.
mamba-ssm's ``selective_state_update`` fuses only the state update (its conv, dt and gate are separate
kernels), so this is written here.

Contract: the PyTorch steps', states already zeroed at episode starts (the memory module does that):
    x [Bt, d_model], conv_state [Bt, C, K-1], ssm_state -> y [Bt, d_model], new states (new tensors)
Computes in float32 from any input dtype; the states come back in their own dtypes. No backward:
``kernels.step_path`` declines whenever autograd would record the step; otherwise it is the default
on CUDA since it was timed there (benchmarks/results/gpu_speed.md, 2026-12-04). Tested against the mixers' own PyTorch
steps in Triton's interpreter (tests/test_triton_step.py) and on CUDA.
"""
from __future__ import annotations

import functools

import torch

from networks.ssm.triton_scan import triton_cdiv


def _next_pow2(n: int) -> int:
    return max(2, 1 << (max(n, 1) - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _kernels():
    import triton

    from networks.ssm import triton_helpers

    tl, helpers = triton_helpers.helpers()
    # @triton.jit resolves names in this module's globals: publish tl and the scan's shared helpers
    # (_softplus: torch's log1p(exp(x)) with its threshold 20), as triton_scan_loop does
    globals().update(tl=tl, **helpers)

    @triton.jit
    def conv_step_kernel(x_ptr, cs_ptr, w_ptr, b_ptr, out_ptr, ncs_ptr, Di,
                         sx_b, scs_b, scs_d, scs_k, sw_d, sw_k,
                         HAS_BIAS: tl.constexpr, KM1: tl.constexpr, BD: tl.constexpr):
        # window = [conv_state[0..K-2], x]; out = SiLU(sum_k window[k] w[k] + bias); new state = window[1:]
        b = tl.program_id(0).to(tl.int64)
        offs = tl.program_id(1) * BD + tl.arange(0, BD)
        m = offs < Di
        x = tl.load(x_ptr + b * sx_b + offs, mask=m, other=0.0).to(tl.float32)
        acc = x * tl.load(w_ptr + offs * sw_d + KM1 * sw_k, mask=m, other=0.0).to(tl.float32)
        for k in tl.static_range(KM1):
            v = tl.load(cs_ptr + b * scs_b + offs * scs_d + k * scs_k, mask=m, other=0.0)
            acc += v.to(tl.float32) * tl.load(w_ptr + offs * sw_d + k * sw_k, mask=m, other=0.0).to(tl.float32)
            if k >= 1:
                tl.store(ncs_ptr + b * Di * KM1 + offs * KM1 + (k - 1), v, mask=m)
        tl.store(ncs_ptr + b * Di * KM1 + offs * KM1 + (KM1 - 1), x.to(ncs_ptr.dtype.element_ty), mask=m)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(out_ptr + b * Di + offs, (acc * tl.sigmoid(acc)).to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def ssm_step_kernel(u_ptr, dtl_ptr, W_ptr, bias_ptr, Alog_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h_ptr,
                        y_ptr, hn_ptr, Di, N, R,
                        su_b, sdt_b, sW_d, sW_r, sA_d, sA_n, sB_b, sC_b, sz_b, sh_b, sh_d, sh_n,
                        HAS_Z: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        offs_d = tl.program_id(1) * BD + tl.arange(0, BD)
        md = offs_d < Di
        offs_n = tl.arange(0, BN)
        mn = offs_n < N
        offs_r = tl.arange(0, BR)
        mr = offs_r < R
        mdn = md[:, None] & mn[None, :]
        # delta = softplus(dt_proj(dt_low) + bias)
        dtl = tl.load(dtl_ptr + b * sdt_b + offs_r, mask=mr, other=0.0).to(tl.float32)
        W = tl.load(W_ptr + offs_d[:, None] * sW_d + offs_r[None, :] * sW_r, mask=md[:, None] & mr[None, :],
                    other=0.0).to(tl.float32)
        dt = tl.sum(W * dtl[None, :], axis=1) + tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        delta = _softplus(dt)
        u = tl.load(u_ptr + b * su_b + offs_d, mask=md, other=0.0).to(tl.float32)
        A = -tl.exp(tl.load(Alog_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mdn,
                            other=0.0).to(tl.float32))
        Bv = tl.load(B_ptr + b * sB_b + offs_n, mask=mn, other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + b * sC_b + offs_n, mask=mn, other=0.0).to(tl.float32)
        h = tl.load(h_ptr + b * sh_b + offs_d[:, None] * sh_d + offs_n[None, :] * sh_n, mask=mdn,
                    other=0.0).to(tl.float32)
        h = tl.exp(delta[:, None] * A) * h + (delta * u)[:, None] * Bv[None, :]
        y = tl.sum(tl.where(mdn, h * Cv[None, :], 0.0), axis=1) + tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32) * u
        if HAS_Z:
            zv = tl.load(z_ptr + b * sz_b + offs_d, mask=md, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(hn_ptr + b * Di * N + offs_d[:, None] * N + offs_n[None, :], h.to(hn_ptr.dtype.element_ty), mask=mdn)
        tl.store(y_ptr + b * Di + offs_d, y.to(y_ptr.dtype.element_ty), mask=md)

    @triton.jit
    def ssd_step_kernel(xbc_ptr, dt_ptr, dtb_ptr, Alog_ptr, D_ptr, z_ptr, h_ptr, g_ptr, hn_ptr,
                        H, P, N, HPG, DI, sx_b, sdt_b, sz_b, sh_b, sh_h, sh_p, sh_n,
                        BP: tl.constexpr, BN: tl.constexpr):
        # one (row, head): x [P] = xbc[h P:(h+1) P], B/C [N] of the head's group (after the d_inner x
        # channels), dt = softplus(dt + dt_bias), h = exp(dt A) h + dt x B^T,
        # y = h C + D x, out = y * SiLU(z): the pre-norm gated output (the RMSNorm needs whole groups)
        b = tl.program_id(0).to(tl.int64)
        hd = tl.program_id(1)
        grp = hd // HPG
        offs_p = tl.arange(0, BP)
        mp = offs_p < P
        offs_n = tl.arange(0, BN)
        mn = offs_n < N
        mpn = mp[:, None] & mn[None, :]
        dt = tl.load(dt_ptr + b * sdt_b + hd).to(tl.float32) + tl.load(dtb_ptr + hd).to(tl.float32)
        dt = _softplus(dt)
        A = -tl.exp(tl.load(Alog_ptr + hd).to(tl.float32))
        x = tl.load(xbc_ptr + b * sx_b + hd * P + offs_p, mask=mp, other=0.0).to(tl.float32)
        Bv = tl.load(xbc_ptr + b * sx_b + DI + grp * N + offs_n, mask=mn, other=0.0).to(tl.float32)
        NG = DI + (H // HPG) * N                                           # where C starts
        Cv = tl.load(xbc_ptr + b * sx_b + NG + grp * N + offs_n, mask=mn, other=0.0).to(tl.float32)
        h = tl.load(h_ptr + b * sh_b + hd * sh_h + offs_p[:, None] * sh_p + offs_n[None, :] * sh_n, mask=mpn,
                    other=0.0).to(tl.float32)
        h = tl.exp(dt * A) * h + (dt * x)[:, None] * Bv[None, :]
        y = tl.sum(tl.where(mpn, h * Cv[None, :], 0.0), axis=1) + tl.load(D_ptr + hd).to(tl.float32) * x
        zv = tl.load(z_ptr + b * sz_b + hd * P + offs_p, mask=mp, other=0.0).to(tl.float32)
        tl.store(g_ptr + b * DI + hd * P + offs_p, (y * zv * tl.sigmoid(zv)).to(g_ptr.dtype.element_ty), mask=mp)
        tl.store(hn_ptr + b * H * P * N + hd * P * N + offs_p[:, None] * N + offs_n[None, :],
                 h.to(hn_ptr.dtype.element_ty), mask=mpn)

    return conv_step_kernel, ssm_step_kernel, ssd_step_kernel


BD_CONV, BD_SSM = 128, 32   # channels per program; an SSM program holds [BD, d_state] and [BD, dt_rank] tiles


def conv_step(x, weight, bias, conv_state):
    """x [Bt, Di] (any row stride, unit channel stride), weight [Di, K], bias [Di] or None,
    conv_state [Bt, Di, K-1] -> (SiLU(conv) [Bt, Di] in x's dtype, new conv state, contiguous)."""
    conv_k = _kernels()[0]
    Bt, Di = x.shape
    K = weight.shape[1]
    if K < 2 or x.stride(1) != 1:
        raise ValueError(f"conv_step needs d_conv >= 2 and a unit channel stride, got K={K}, stride {x.stride()}")
    out = torch.empty(Bt, Di, device=x.device, dtype=x.dtype)
    new_state = torch.empty(Bt, Di, K - 1, device=x.device, dtype=conv_state.dtype)
    grid = (Bt, triton_cdiv(Di, BD_CONV))
    conv_k[grid](x, conv_state, weight, bias if bias is not None else weight, out, new_state, Di,
                 x.stride(0), conv_state.stride(0), conv_state.stride(1), conv_state.stride(2),
                 weight.stride(0), weight.stride(1),
                 HAS_BIAS=bias is not None, KM1=K - 1, BD=BD_CONV, num_warps=4)
    return out, new_state


def ssm_step(u, dt_low, dt_weight, dt_bias, A_log, B, C, D, z, h):
    """u [Bt, Di]; dt_low [Bt, R] (x_proj's dt part); dt_weight [Di, R], dt_bias [Di]; A_log [Di, N];
    B, C [Bt, N]; D [Di]; z [Bt, Di] or None; h [Bt, Di, N] -> (y [Bt, Di] gated, new h in h's dtype).
    Every tensor may be a strided view with a unit last stride (x_proj's split, in_proj's chunk)."""
    ssm_k = _kernels()[1]
    Bt, Di = u.shape
    N, R = A_log.shape[1], dt_weight.shape[1]
    for name, t in (("u", u), ("dt_low", dt_low), ("B", B), ("C", C), ("z", z)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"ssm_step: {name} needs a unit last stride, got {t.stride()}")
    y = torch.empty(Bt, Di, device=u.device, dtype=u.dtype)
    h_new = torch.empty(Bt, Di, N, device=h.device, dtype=h.dtype)
    grid = (Bt, triton_cdiv(Di, BD_SSM))
    ssm_k[grid](u, dt_low, dt_weight, dt_bias, A_log, B, C, D, z if z is not None else u, h, y, h_new, Di, N, R,
                u.stride(0), dt_low.stride(0), dt_weight.stride(0), dt_weight.stride(1),
                A_log.stride(0), A_log.stride(1), B.stride(0), C.stride(0),
                z.stride(0) if z is not None else 0, h.stride(0), h.stride(1), h.stride(2),
                HAS_Z=z is not None, BD=BD_SSM, BN=_next_pow2(N), BR=_next_pow2(R), num_warps=4)
    return y, h_new


def mamba1_step(m, x, conv_state, ssm_state):
    """``Mamba1Mixer.step`` on the two kernels: x [Bt, d_model] -> (y [Bt, d_model], conv, ssm)."""
    xi, z = m.in_proj(x).chunk(2, dim=-1)
    xc, conv_state = conv_step(xi, m.conv_weight, m.conv_bias, conv_state)
    dt, Bm, Cm = m.x_proj(xc).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    y, ssm_state = ssm_step(xc, dt, m.dt_proj.weight, m.dt_proj.bias, m.A_log, Bm, Cm, m.D, z, ssm_state)
    return m.out_proj(y), conv_state, ssm_state


def ssd_step(xbc, dt, dt_bias, A_log, D, z, h, nheads: int, headdim: int, ngroups: int, d_state: int):
    """Mamba2's per-head step on the conv output: xbc [Bt, d_inner + 2 G N] (x, then B, then C),
    dt [Bt, H] (before bias and softplus), z [Bt, d_inner], h [Bt, H, P, N] -> (y * SiLU(z) [Bt, d_inner],
    new h). Unit last strides required (in_proj's split views have them)."""
    ssd_k = _kernels()[2]
    Bt = xbc.shape[0]
    H, P, N = nheads, headdim, d_state
    for name, t in (("xbc", xbc), ("dt", dt), ("z", z)):
        if t.stride(-1) != 1:
            raise ValueError(f"ssd_step: {name} needs a unit last stride, got {t.stride()}")
    g = torch.empty(Bt, H * P, device=xbc.device, dtype=xbc.dtype)
    h_new = torch.empty(Bt, H, P, N, device=h.device, dtype=h.dtype)
    ssd_k[(Bt, H)](xbc, dt, dt_bias, A_log, D, z, h, g, h_new, H, P, N, H // ngroups, H * P,
                   xbc.stride(0), dt.stride(0), z.stride(0), h.stride(0), h.stride(1), h.stride(2), h.stride(3),
                   BP=_next_pow2(P), BN=_next_pow2(N), num_warps=4)
    return g, h_new


def mamba2_step(m, x, conv_state, ssm_state):
    """``Mamba2Mixer.step`` on the kernels: in_proj, conv_step, ssd_step, the mixer's group RMSNorm, out_proj."""
    z, xbc, dt = m._split(m.in_proj(x))
    xbc, conv_state = conv_step(xbc, m.conv_weight, m.conv_bias, conv_state)
    g, ssm_state = ssd_step(xbc, dt, m.dt_bias, m.A_log, m.D, z, ssm_state, m.nheads, m.headdim, m.ngroups,
                            m.d_state)
    return m._norm_out(g), conv_state, ssm_state
