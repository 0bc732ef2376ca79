"""Optional dispatch to mamba-ssm's CUDA/Triton kernels.

mamba-ssm cannot be imported without its compiled CUDA extension, so nothing here is
imported at module load: the first CUDA tensor that reaches a Mamba mixer triggers one
import attempt and one log line saying which path is used. CPU tensors always take the
pure-PyTorch path. ``use_kernels``: "auto" (kernels when they import), True (required:
error if missing), False (never).

What the kernels cover, and what falls back to PyTorch (per call):
- Mamba2 sequence: ``mamba_chunk_scan_combined`` with ``initial_states`` and
  ``seq_idx`` (segment resets) and ``return_final_states``; the short conv stays ours
  (it must mask taps across resets and carry its state).
- Mamba1 sequence: ``selective_scan_fn`` has no initial state and no reset input, so it
  is used only when no row resets after t=0 and no row carries a state in; otherwise
  the chunked PyTorch scan runs.
- One step (both): ``selective_state_update``.
"""
from __future__ import annotations

import logging

import torch

from .causal_conv import segment_ids

log = logging.getLogger("mambazoo")
_KERNELS = None  # None: not tried yet; False: unavailable; dict of callables otherwise
_WHY_NOT = ""


def _load():
    global _KERNELS, _WHY_NOT
    if _KERNELS is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            from mamba_ssm.ops.triton.selective_state_update import selective_state_update
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

            _KERNELS = dict(scan=selective_scan_fn, update=selective_state_update,
                            ssd=mamba_chunk_scan_combined)
            log.warning("mambazoo: using mamba-ssm CUDA kernels for Mamba layers")
        except Exception as exc:  # ImportError, or an OSError from a broken CUDA build
            _KERNELS, _WHY_NOT = False, f"{type(exc).__name__}: {exc}"
            log.warning("mambazoo: mamba-ssm kernels unavailable (%s); "
                        "using the pure-PyTorch Mamba path on CUDA", _WHY_NOT)
    return _KERNELS


def available() -> bool:
    return bool(_load())


def wanted(use_kernels, x: torch.Tensor) -> bool:
    if use_kernels is False or not x.is_cuda:
        return False
    if _load():
        return True
    if use_kernels is True:
        raise RuntimeError(f"use_kernels=True but mamba-ssm kernels do not import ({_WHY_NOT}); "
                           "install with `pip install -e .[cuda]` on a CUDA machine "
                           "(README, section GPU) or set use_kernels='auto'")
    return False


def mamba1_forward(m, x, is_init, conv_state, ssm_state):
    resets_inside = bool(is_init[:, 1:].any())
    carries_state = bool(((ssm_state != 0).flatten(1).any(1) & ~is_init[:, 0]).any())
    if resets_inside or carries_state:
        return _mamba1_torch(m, x, is_init, conv_state, ssm_state)
    xc, z, delta, A, Bm, Cm, conv_state = m.prepare(x, conv_state, is_init)
    y, last = _KERNELS["scan"](xc.transpose(1, 2), delta.transpose(1, 2), A.float(),
                               Bm.transpose(1, 2), Cm.transpose(1, 2), m.D.float(),
                               z=z.transpose(1, 2), return_last_state=True)
    return m.out_proj(y.transpose(1, 2)), conv_state, last.to(ssm_state.dtype)


def _mamba1_torch(m, x, is_init, conv_state, ssm_state):
    use = m.use_kernels
    m.use_kernels = False
    try:
        return m.forward(x, is_init, conv_state, ssm_state)
    finally:
        m.use_kernels = use


def mamba1_step(m, x, conv_state, ssm_state):
    xc, z, delta, A, Bm, Cm, conv_state = m.prepare(x, conv_state)
    ssm_state = ssm_state.clone()  # the kernel updates in place; keep the input intact
    y = _KERNELS["update"](ssm_state, xc, delta, A.float(), Bm, Cm, D=m.D, z=z)
    return m.out_proj(y), conv_state, ssm_state


def mamba2_forward(m, x, is_init, conv_state, ssm_state):
    xh, z, dt, A, Bm, Cm, conv_state = m.prepare(x, conv_state, is_init)
    # The kernel's initial state belongs to the first segment; rows that start an
    # episode at t=0 must not see it.
    h0 = ssm_state * (~is_init[:, 0]).to(ssm_state.dtype)[:, None, None, None]
    seq_idx = segment_ids(is_init).to(torch.int32).contiguous()
    y, final = _KERNELS["ssd"](xh, dt, A.float(), Bm, Cm, m.chunk_size, D=m.D,
                               initial_states=h0, seq_idx=seq_idx, return_final_states=True)
    return m._gated_norm_out(y, z), conv_state, final.to(ssm_state.dtype)


def mamba2_step(m, x, conv_state, ssm_state):
    xh, z, dt, A, Bm, Cm, conv_state = m.prepare(x, conv_state)
    H, P, N = m.nheads, m.headdim, m.d_state
    ssm_state = ssm_state.clone()  # the kernel updates in place; keep the input intact
    y = _KERNELS["update"](ssm_state, xh, dt[..., None].expand(-1, H, P),
                           A.float()[:, None, None].expand(H, P, N), Bm, Cm,
                           D=m.D[:, None].expand(H, P))
    return m._gated_norm_out(y, z), conv_state, ssm_state
