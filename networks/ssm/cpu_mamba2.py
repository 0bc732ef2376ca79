"""Mamba2 on the CPU in C++: the reset-aware SSD recurrence and the gated RMSNorm (forward and
backward; ``csrc/mamba2_cpu.cpp``) and a fused acting step (``csrc/mamba2_step.cpp``), built on
first use as ``cpu_scan``'s extension is.

Why C++ (issue 22): the eager acting step is ~230 small aten ops at batch 1 (169 µs against 17.5
for nn.GRUCell), and on a CPU the chunked SSD (``mamba2.ssd_chunked``) spends its time in passes
over [B, H, chunks, L, L] tensors; the recurrence run step by step costs fewer multiply-adds and
keeps each head's state in L1 (see the .cpp). A separate extension from the Mamba1 one, so that
neither's edits rebuild the other. ``MAMBAZOO_CPU_SCAN=0`` turns both off; without a compiler, or
when the build fails, one log line says so and the PyTorch paths run (the chunked SSD and the
eager step), which stay the reference.
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch

from networks.ssm import cpu_scan

NAME = "mambazoo_mamba2_cpu"
SOURCES = [Path(__file__).parent / "csrc" / f for f in ("mamba2_cpu.cpp", "mamba2_step.cpp")]  # + mamba2_cpu.h
_EXT = None  # None: not tried yet; False: unavailable; the extension module otherwise
_WHY_NOT = ""
_LOCK = threading.Lock()
GATE_EPS = 1e-5  # the gated RMSNorm's eps (Mamba2Mixer._gated_norm_out)


def build_directory() -> Path:
    return cpu_scan.build_directory(NAME)


def _build():
    return cpu_scan.compile_extension(NAME, SOURCES, build_directory())


def _load():
    global _EXT, _WHY_NOT
    if _EXT is None:
        with _LOCK:
            if _EXT is None:
                _EXT, _WHY_NOT = cpu_scan.load_once("fused CPU Mamba2 kernels", "the PyTorch SSD and step",
                                                    _build, build_directory)
    return _EXT


def available() -> bool:
    return bool(_load())


def wanted(x: torch.Tensor) -> bool:
    """CPU float32/float64 tensors take the C++ SSD when it builds."""
    return x.device.type == "cpu" and x.dtype in cpu_scan.DTYPES and available()


class _FusedSSD(torch.autograd.Function):
    """The extension's ssd_fwd/ssd_bwd. xbc [Bt, T, H*P + 2*G*N]; dt [Bt, T, H]; A, D [H];
    h0 [Bt, H, P, N]; keep [Bt, T] (0 at a reset) or empty."""

    @staticmethod
    def forward(ctx, xbc, dt, A, D, h0, keep, chunk):
        y, h, ck = _EXT.ssd_fwd(xbc, dt, A, D, h0, keep, chunk, True)
        ctx.save_for_backward(xbc, dt, A, D, h0, keep, ck)
        ctx.chunk = chunk
        return y, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, g_final):
        xbc, dt, A, D, h0, keep, ck = ctx.saved_tensors
        gy = xbc.new_zeros(*xbc.shape[:2], h0.shape[1] * h0.shape[2]) if gy is None else gy.contiguous()
        g_final = xbc.new_empty(0) if g_final is None else g_final.contiguous()
        gxbc, gdt, gA, gD, gh0 = _EXT.ssd_bwd(xbc, dt, A, D, h0, keep, ck, gy, g_final, ctx.chunk)
        return gxbc, gdt, gA, gD, gh0, None, None


def ssd_xbc(xbc, dt, A, D, h0, is_init, chunk_size: int = 16):
    """The SSD on Mamba2Mixer's conv output as it is: xbc [Bt, T, H*P + 2*G*N] (x, B, C), dt
    [Bt, T, H] after softplus, A, D [H], h0 [Bt, H, P, N], is_init [Bt, T] -> y [Bt, T, H*P]
    (D skip included) and the final state. ``chunk_size``: the backward recomputes that many
    steps from a saved state (memory: one state per chunk per row)."""
    if _load() is False:
        raise RuntimeError(f"the fused CPU Mamba2 kernels are unavailable ({_WHY_NOT})")
    dtype = xbc.dtype
    xbc, dt, A, D, h0 = (t.to(dtype).contiguous() for t in (xbc, dt, A, D, h0))
    keep = (~is_init).to(dtype).contiguous()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xbc, dt, A, D, h0)):
        return _FusedSSD.apply(xbc, dt, A, D, h0, keep, chunk_size)
    y, h, _ = _EXT.ssd_fwd(xbc, dt, A, D, h0, keep, chunk_size, False)  # no graph: no checkpoints
    return y, h


def ssd(x, dt, A, B, C, D, h0, is_init, chunk_size: int = 16):
    """``mamba2.ssd_reference``'s contract (x [Bt, T, H, P]; B, C [Bt, T, G, N]), for callers
    that hold x, B and C apart (Hydra, tests): one concatenation, then ``ssd_xbc``."""
    Bt, T, H, P = x.shape
    xbc = torch.cat([x.reshape(Bt, T, H * P), B.reshape(Bt, T, -1), C.reshape(Bt, T, -1)], dim=-1)
    y, h = ssd_xbc(xbc, dt, A, D, h0, is_init, chunk_size)
    return y.reshape(Bt, T, H, P), h


class _GatedNorm(torch.autograd.Function):
    """The extension's gated_norm_fwd/bwd: y [R, D]; z [R, D] (rows may be strided); w [D]."""

    @staticmethod
    def forward(ctx, y, z, w, groups, eps):
        out, rstd = _EXT.gated_norm_fwd(y, z, w, groups, eps)
        ctx.save_for_backward(y, z, w, rstd)
        ctx.groups = groups
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        y, z, w, rstd = ctx.saved_tensors
        gy, gz, gw = _EXT.gated_norm_bwd(y, z, w, rstd, gout.contiguous(), ctx.groups)
        return gy, gz, gw, None, None


def gated_rms_norm(y, z, weight, groups: int, eps: float = GATE_EPS):
    """RMSNorm(y * SiLU(z)) * weight over each of ``groups`` groups of the last dim, as
    Mamba2Mixer._gated_norm_out before out_proj: y, z [.., D] -> [.., D]."""
    if _load() is False:
        raise RuntimeError(f"the fused CPU Mamba2 kernels are unavailable ({_WHY_NOT})")
    lead, D = z.shape[:-1], z.shape[-1]
    y2 = y.reshape(-1, D).contiguous()
    z2 = z.reshape(-1, D)  # a view of in_proj's output where possible: the kernel takes a row stride
    if z2.stride(-1) != 1:
        z2 = z2.contiguous()
    w = weight.to(y.dtype).contiguous()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (y2, z2, w)):
        return _GatedNorm.apply(y2, z2, w, groups, eps).reshape(*lead, D)
    return _EXT.gated_norm_fwd(y2, z2, w, groups, eps)[0].reshape(*lead, D)


def step_wanted(stack, x: torch.Tensor) -> bool:
    """As ``cpu_scan.step_wanted`` (no-grad CPU acting), with this extension."""
    return cpu_scan.step_wanted(stack, x, ext_available=available)


def stack_step(stack, x, states):
    """``MambaStack.step`` for Mamba2 in one extension call: x [B, input], states {"conv": [B, L,
    conv_dim, K-1], "ssm": [B, L, H, P, N]} (already zeroed on reset) -> (y [B, H], new states)."""
    if _load() is False:
        raise RuntimeError(f"the fused CPU Mamba2 kernels are unavailable ({_WHY_NOT})")
    in_w, in_b, layers, out_w, eps, ngroups = _step_args(stack)
    y, conv, ssm = _EXT.mamba2_stack_step(x.contiguous(), in_w, in_b, states["conv"].contiguous(),
                                          states["ssm"].contiguous(), layers, out_w, eps, GATE_EPS, ngroups)
    return y, {"conv": conv, "ssm": ssm}


def _step_args(stack):
    """Mamba2's per-layer tensors for the step kernel (mamba2_step.cpp's order), gathered and
    cached as Mamba1's are (cpu_scan.gather_step_args)."""
    return cpu_scan.gather_step_args(stack, "_cpu_mamba2_step_args", lambda norm, m: [
        norm.weight, m.in_proj.weight, m.conv_weight, m.conv_bias, m.dt_bias, m.A_log, m.D, m.norm_weight,
        m.out_proj.weight], stack.mixers[0].ngroups)
