"""Mamba's short causal conv with per-step resets and a carried state, fused with SiLU, in Triton.

The PyTorch version (``networks.ssm.causal_conv.causal_conv1d``, the oracle of the tests) pads
with the carried state (a cat), builds one [B, T, 1] same-segment mask per tap and adds K
shifted products: ~4K elementwise kernels forward and more backward, ~6 ms of an 18.8 ms
Mamba1 layer on the GPU (benchmarks/results/gpu_speed_profile.txt). causal-conv1d's CUDA
kernel has ``seq_idx`` and ``initial_states`` but needs the ~2.5-minute build that the Triton
path exists to avoid, and with ``seq_idx`` it returns no final state (1.7.0's
causal_conv1d_interface.py: "If seq_idx is not None, we don't return final_states_out"), which
a carried-state memory needs at every chunk end; so this kernel serves also where causal-conv1d
is installed: one Triton kernel forward and two backward, with the same contract:

    x [B, T, C] (any strides: the in_proj half is a strided view), weight [C, K], bias [C],
    conv_state [B, C, K-1] (oldest first), is_init [B, T] bool
    -> SiLU(conv) [B, T, C], new conv_state [B, C, K-1]

A tap of step t reads input t-k only when no reset lies in (t-k, t] (same segment id, the
cumulative count of resets); inputs before t=0 come from the carried state, valid until the
row's first reset. The new state (the last K-1 inputs, zeroed where they precede the row's
last reset) is a [B, C, K-1] gather done by torch, so its gradient flows by autograd.

Backward: kernel 1 recomputes the pre-activation, writes dL/dpre (fp32) and per-program
partial sums of dL/dweight and dL/dbias (summed by torch: deterministic, no atomics); kernel 2
reads dL/dpre at t+k for dL/dx. dL/dconv_state touches only the first K-1 steps: torch.

As in triton_scan, triton is imported on first use only; with TRITON_INTERPRET=1 the same
kernels run on CPU tensors (the tests).
"""
from __future__ import annotations

import functools

import torch

BT, BC = 32, 32   # steps x channels per program; K taps are unrolled (K = d_conv, 4 in Mamba)


@functools.lru_cache(maxsize=None)
def _kernels():
    import triton
    import triton.language as tl

    g = globals()   # @triton.jit resolves the names a kernel uses in its module's globals
    g["tl"] = tl

    @triton.jit
    def _tap(x_ptr, s_ptr, seg_ptr, pb, t, c, mt, mc, seg_t, T, sxb, sxt, sxc, ssb, ssc, ssk, k,
             K: tl.constexpr):
        """The input tap k of steps t reads [BT, BC] (fp32): x at t-k, or the carried state before
        t=0, and 0 where a reset lies in (t-k, t] (another segment id)."""
        src = t - k
        inside = src >= 0
        seg_s = tl.load(seg_ptr + pb * T + src, mask=mt & inside, other=0)
        same = tl.where(inside, seg_s == seg_t, seg_t == 0) & mt
        m_x = (same & inside)[:, None] & mc[None, :]
        m_s = (same & (src < 0))[:, None] & mc[None, :]
        xv = tl.load(x_ptr + pb * sxb + src[:, None] * sxt + c[None, :] * sxc, mask=m_x, other=0.0)
        sv = tl.load(s_ptr + pb * ssb + c[None, :] * ssc + (K - 1 + src)[:, None] * ssk, mask=m_s, other=0.0)
        return xv.to(tl.float32) + sv.to(tl.float32)

    g["_tap"] = _tap

    @triton.jit
    def _pre(x_ptr, w_ptr, b_ptr, s_ptr, seg_ptr, pb, t, c, mt, mc, seg_t, T,
             sxb, sxt, sxc, ssb, ssc, ssk, K: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr,
             BC: tl.constexpr):
        """The pre-activation tile [BT, BC] of row pb, steps t, channels c (fp32)."""
        acc = tl.zeros((BT, BC), dtype=tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + c, mask=mc, other=0.0).to(tl.float32)[None, :]
        for k in tl.static_range(K):   # tap k reads the input k steps back: weight column K-1-k
            w = tl.load(w_ptr + c * K + (K - 1 - k), mask=mc, other=0.0).to(tl.float32)
            acc += _tap(x_ptr, s_ptr, seg_ptr, pb, t, c, mt, mc, seg_t, T, sxb, sxt, sxc, ssb, ssc, ssk, k, K) \
                * w[None, :]
        return acc

    g["_pre"] = _pre

    @triton.jit
    def fwd(x_ptr, w_ptr, b_ptr, s_ptr, seg_ptr, y_ptr, T, C, sxb, sxt, sxc, ssb, ssc, ssk,
            K: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        pb, pt, pc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pt * BT + tl.arange(0, BT)
        c = pc * BC + tl.arange(0, BC)
        mt, mc = t < T, c < C
        seg_t = tl.load(seg_ptr + pb * T + t, mask=mt, other=0)
        pre = _pre(x_ptr, w_ptr, b_ptr, s_ptr, seg_ptr, pb, t, c, mt, mc, seg_t, T, sxb, sxt, sxc, ssb, ssc, ssk,
                   K, HAS_BIAS, BT, BC)
        y = pre / (1.0 + tl.exp(-pre))
        tl.store(y_ptr + (pb * T + t[:, None]) * C + c[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=mt[:, None] & mc[None, :])

    @triton.jit
    def bwd_pre(x_ptr, w_ptr, b_ptr, s_ptr, seg_ptr, dy_ptr, dpre_ptr, dw_ptr, db_ptr, T, C,
                sxb, sxt, sxc, ssb, ssc, ssk, sdb, sdt, sdc,
                K: tl.constexpr, HAS_BIAS: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        """dL/dpre = dy * SiLU'(pre), and this program's partial dL/dweight [K, C], dL/dbias [C]."""
        pb, pt, pc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pt * BT + tl.arange(0, BT)
        c = pc * BC + tl.arange(0, BC)
        mt, mc = t < T, c < C
        m2 = mt[:, None] & mc[None, :]
        seg_t = tl.load(seg_ptr + pb * T + t, mask=mt, other=0)
        pre = _pre(x_ptr, w_ptr, b_ptr, s_ptr, seg_ptr, pb, t, c, mt, mc, seg_t, T, sxb, sxt, sxc, ssb, ssc, ssk,
                   K, HAS_BIAS, BT, BC)
        sig = 1.0 / (1.0 + tl.exp(-pre))
        dy = tl.load(dy_ptr + pb * sdb + t[:, None] * sdt + c[None, :] * sdc, mask=m2, other=0.0).to(tl.float32)
        dpre = tl.where(m2, dy * sig * (1.0 + pre * (1.0 - sig)), 0.0)
        tl.store(dpre_ptr + (pb * T + t[:, None]) * C + c[None, :], dpre, mask=m2)
        part = pb * tl.num_programs(1) + pt   # one partial row per (batch row, time block)
        for k in tl.static_range(K):
            tap = _tap(x_ptr, s_ptr, seg_ptr, pb, t, c, mt, mc, seg_t, T, sxb, sxt, sxc, ssb, ssc, ssk, k, K)
            dw = tl.sum(dpre * tap, axis=0)
            tl.store(dw_ptr + (part * K + (K - 1 - k)) * C + c, dw, mask=mc)
        tl.store(db_ptr + part * C + c, tl.sum(dpre, axis=0), mask=mc)

    @triton.jit
    def bwd_x(dpre_ptr, w_ptr, seg_ptr, dx_ptr, T, C, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        """dL/dx[s] = sum_k dL/dpre[s+k] * weight[K-1-k], over the taps that read s (same segment)."""
        pb, pt, pc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        s = pt * BT + tl.arange(0, BT)
        c = pc * BC + tl.arange(0, BC)
        ms, mc = s < T, c < C
        seg_s = tl.load(seg_ptr + pb * T + s, mask=ms, other=0)
        acc = tl.zeros((BT, BC), dtype=tl.float32)
        for k in tl.static_range(K):
            w = tl.load(w_ptr + c * K + (K - 1 - k), mask=mc, other=0.0).to(tl.float32)
            dst = s + k
            ok = ms & (dst < T)
            seg_d = tl.load(seg_ptr + pb * T + dst, mask=ok, other=-1)
            same = ok & (seg_d == seg_s)
            g = tl.load(dpre_ptr + (pb * T + dst[:, None]) * C + c[None, :], mask=same[:, None] & mc[None, :],
                        other=0.0)
            acc += g * w[None, :]
        tl.store(dx_ptr + (pb * T + s[:, None]) * C + c[None, :], acc.to(dx_ptr.dtype.element_ty),
                 mask=ms[:, None] & mc[None, :])

    return fwd, bwd_pre, bwd_x


def _grid(B, T, C):
    return (B, (T + BT - 1) // BT, (C + BC - 1) // BC)


class _ConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, conv_state, seg):
        fwd, _, _ = _kernels()
        B, T, C = x.shape
        K = weight.shape[1]
        weight = weight.contiguous()
        out_dtype = torch.promote_types(x.dtype, weight.dtype)   # as the PyTorch conv: x * fp32 weight
        y = torch.empty(B, T, C, device=x.device, dtype=out_dtype)
        b = bias if bias is not None else weight   # a valid pointer, never read without HAS_BIAS
        fwd[_grid(B, T, C)](x, weight, b, conv_state, seg, y, T, C, *x.stride(), *conv_state.stride(),
                            K=K, HAS_BIAS=bias is not None, BT=BT, BC=BC)
        ctx.save_for_backward(x, weight, bias if bias is not None else weight.new_empty(0), conv_state, seg)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        _, bwd_pre, bwd_x = _kernels()
        x, weight, bias, conv_state, seg = ctx.saved_tensors
        B, T, C = x.shape
        K = weight.shape[1]
        grid = _grid(B, T, C)
        parts = B * grid[1]
        dpre = torch.empty(B, T, C, device=x.device, dtype=torch.float32)
        dw = torch.empty(parts, K, C, device=x.device, dtype=torch.float32)
        db = torch.empty(parts, C, device=x.device, dtype=torch.float32)
        b = bias if ctx.has_bias else weight
        bwd_pre[grid](x, weight, b, conv_state, seg, dy, dpre, dw, db, T, C, *x.stride(), *conv_state.stride(),
                      *dy.stride(), K=K, HAS_BIAS=ctx.has_bias, BT=BT, BC=BC)
        dx = torch.empty(B, T, C, device=x.device, dtype=x.dtype)
        bwd_x[grid](dpre, weight, seg, dx, T, C, K=K, BT=BT, BC=BC)
        # carried inputs: position j of the state is step j-(K-1); tap k of step t = j-(K-1)+k
        # reads it while the row has had no reset up to t (segment 0)
        d_state = None
        if ctx.needs_input_grad[3]:
            d_state = torch.zeros(B, C, K - 1, device=x.device, dtype=torch.float32)
            first = seg[:, : K - 1] == 0   # [B, min(T, K-1)]
            for j in range(K - 1):
                for k in range(K - 1 - j, K):
                    t = j - (K - 1) + k
                    if t < T:
                        d_state[:, :, j] += dpre[:, t] * first[:, t, None] * weight[:, K - 1 - k]
            d_state = d_state.to(conv_state.dtype)
        d_bias = db.sum(0).to(bias.dtype) if ctx.has_bias else None
        return dx, dw.sum(0).t().to(weight.dtype), d_bias, d_state, None


def causal_conv1d_silu(x, weight, bias, conv_state, is_init):
    """SiLU(causal_conv1d(x, weight, bias, conv_state, is_init)) and the new conv state, on the
    Triton kernels (CUDA tensors, or CPU under TRITON_INTERPRET=1). Shapes: module docstring."""
    B, T, C = x.shape
    K = weight.shape[1]
    seg = is_init.to(torch.int32).cumsum(1, dtype=torch.int32).contiguous()
    y = _ConvSiLU.apply(x, weight, bias, conv_state, seg)
    # new state: the last K-1 inputs (carried ones too when T < K-1), zeroed before the last reset
    tail = x[:, T - (K - 1):] if T >= K - 1 else torch.cat([conv_state.transpose(1, 2)[:, T:], x], 1)
    tail_seg = seg[:, T - (K - 1):] if T >= K - 1 else torch.cat([seg.new_zeros(B, K - 1 - T), seg], 1)
    keep = (tail_seg == seg[:, -1:]).unsqueeze(-1).to(tail.dtype)
    return y, (tail * keep).transpose(1, 2).to(conv_state.dtype)
