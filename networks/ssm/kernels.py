"""Optional dispatch to mamba-ssm's CUDA/Triton kernels.

mamba-ssm cannot be imported without its compiled CUDA extension, so nothing here is
imported at module load: the first CUDA tensor that reaches a Mamba mixer triggers one
import attempt and one log line saying which path is used. CPU tensors always take the
pure-PyTorch path. ``use_kernels``: "auto" (kernels when they import), True (required:
error if missing), False (never).

Mamba1 sequence scan on CUDA (``mamba1_scan_path``): the Triton scan of
``networks.ssm.triton_scan`` when triton imports (resets and the carried state native, no
build step), else mamba-ssm's ``selective_scan_fn`` through ``scan_with_resets``, else
PyTorch; one log line names the choice. ``MAMBAZOO_MAMBA1_SCAN=triton|mamba_ssm|torch``
forces one (benchmarks compare them).

What the kernels cover, and what falls back to PyTorch (per call):
- Mamba2 sequence: ``mamba_chunk_scan_combined`` with ``initial_states`` and
  ``seq_idx`` (segment resets) and ``return_final_states``; the short conv stays ours
  (it must mask taps across resets and carry its state).
- Mamba1 sequence: ``selective_scan_fn`` has no initial-state or reset input, so
  ``scan_with_resets`` rewrites the sequence it is given (see there): extra steps load
  the carried state and zero it at resets, so the kernel handles both. Its final state
  carries no gradient (upstream: "the gradient of the last state is not considered"),
  unlike the PyTorch path; PPO/TD3 losses here never differentiate a final state.
- One step (both): ``selective_state_update``.
"""
from __future__ import annotations

import functools
import logging
import os

import torch

from networks.ssm.causal_conv import segment_ids

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


_PATH_LOGGED: set[str] = set()   # which scans have logged their path (one line each per process)


def scan_path(use_kernels, x: torch.Tensor, what: str = "Mamba1 sequence scan") -> str:
    """The Mamba1-type selective scan for ``x``: "triton", "mamba_ssm" or "torch" (see the module
    doc); ``what`` names the caller in the one log line (the Mamba1 mixer, SS2D). The
    MAMBAZOO_MAMBA1_SCAN environment variable (torch / mamba_ssm) forces a path for both."""
    if use_kernels is False or not x.is_cuda:
        return "torch"
    from networks.ssm import triton_scan  # imports no triton itself; available() tries it once

    forced = os.environ.get("MAMBAZOO_MAMBA1_SCAN")
    if forced == "torch":
        path = "torch"
    elif forced != "mamba_ssm" and _triton_available(triton_scan):
        path = "triton"
    else:  # use_kernels=True without triton or mamba-ssm raises in wanted()
        path = "mamba_ssm" if wanted(use_kernels, x) else "torch"
    if what not in _PATH_LOGGED:
        _PATH_LOGGED.add(what)
        if path == "triton":
            said = (f"Triton (networks/ssm/triton_scan.py: {triton_scan.describe()}"
                    + ("; conv + SiLU: triton_conv.py)" if "Mamba1" in what else ")"))
        else:
            said = {"mamba_ssm": "mamba-ssm selective_scan_fn" + (" + scan_with_resets" if "Mamba1" in what else ""),
                    "torch": "pure PyTorch"}[path]
        log.warning("mambazoo: %s on CUDA: %s", what, said)
    return path


def mamba1_scan_path(use_kernels, x: torch.Tensor) -> str:
    """The Mamba1 mixer's sequence scan for ``x`` (``scan_path``)."""
    return scan_path(use_kernels, x, "Mamba1 sequence scan")


@functools.lru_cache(maxsize=None)
def _triton_available(triton_scan) -> bool:
    return triton_scan.available()


def wants_triton_conv(use_kernels, x: torch.Tensor, what: str) -> bool:
    """Run a sequence's short conv + SiLU on the Triton kernel (networks/ssm/triton_conv.py)? On
    CUDA when triton imports and kernels are not switched off; one log line per caller."""
    if use_kernels is False or not x.is_cuda:
        return False
    from networks.ssm import triton_scan  # its available() tries the import once, never raises

    ok = _triton_available(triton_scan)
    if what not in _PATH_LOGGED:
        _PATH_LOGGED.add(what)
        log.warning("mambazoo: %s on CUDA: %s", what,
                    "Triton (networks/ssm/triton_conv.py)" if ok else "pure PyTorch (triton does not import)")
    return ok


STEP_PATHS = ("triton", "mamba_ssm", "torch")


def step_path(use_kernels, x: torch.Tensor, what: str) -> str:
    """A Mamba1/Mamba2 mixer's acting step on ``x`` (``what``: "Mamba1 acting step", "Mamba2 acting
    step", named in the one log line per process): "triton" (networks/ssm/triton_step.py: a few fused
    kernels), "mamba_ssm" (its selective_state_update) or "torch". The default is the Triton step
    where triton imports and autograd is off (it has no backward): on the H200 its graphed step beat
    mamba-ssm's and PyTorch's graphed steps at batch 1 and 256, 1 and 4 layers, both kinds, in one run
    (benchmarks/results/gpu_speed.md: 0.054 vs 0.071 ms for Mamba1 at B=1, one layer). Else mamba-ssm
    when built, else PyTorch; MAMBAZOO_MAMBA_STEP=triton|mamba_ssm|torch forces one."""
    forced = os.environ.get("MAMBAZOO_MAMBA_STEP")
    if forced is not None and forced not in STEP_PATHS:
        raise ValueError(f"MAMBAZOO_MAMBA_STEP must be one of {', '.join(STEP_PATHS)}, got {forced!r}")
    if use_kernels is False or not x.is_cuda or forced == "torch":
        return "torch"
    from networks.ssm import triton_scan  # its available() tries the import once, never raises

    if forced != "mamba_ssm" and not torch.is_grad_enabled() and _triton_available(triton_scan):
        path = "triton"
    else:
        path = "mamba_ssm" if wanted(use_kernels, x) else "torch"
    if what not in _PATH_LOGGED:
        _PATH_LOGGED.add(what)
        log.warning("mambazoo: %s on CUDA: %s", what, {"triton": "Triton (networks/ssm/triton_step.py)",
                                                     "mamba_ssm": "mamba-ssm selective_state_update",
                                                     "torch": "pure PyTorch"}[path])
    return path


def wants_mamba1_scan(use_kernels, x: torch.Tensor) -> bool:
    """Mamba1Mixer.forward: does the sequence leave the PyTorch path (``mamba1_forward``)?"""
    return mamba1_scan_path(use_kernels, x) != "torch"


def mamba1_forward(m, x, is_init, conv_state, ssm_state):
    if mamba1_scan_path(m.use_kernels, x) == "triton":
        from networks.ssm import triton_scan

        return triton_scan.mamba1_forward(m, x, is_init, conv_state, ssm_state)
    xc, z, delta, A, Bm, Cm, conv_state = m.prepare(x, conv_state, is_init)
    # Under autocast our conv stays fp32 while the projections give bf16; the kernel wants one dtype.
    z, delta, Bm, Cm = (t.to(xc.dtype) for t in (z, delta, Bm, Cm))
    y, last = scan_with_resets(_KERNELS["scan"], xc.transpose(1, 2), delta.transpose(1, 2),
                               A.float(), Bm.transpose(1, 2), Cm.transpose(1, 2), m.D.float(),
                               z.transpose(1, 2), ssm_state, is_init)
    return m.out_proj(y.transpose(1, 2)), conv_state, last.to(ssm_state.dtype)


# Prefix steps that load the carried state use this step size: small, so the decay
# correction exp(-dt*A*k) cannot overflow for any plausible |A| (< ~5000 at d_state=16).
_LOAD_DT = 1e-3
# Reset steps use dt = _KILL / min|A| so that exp(dt*A) underflows to exactly 0 in fp32
# (exp(-103) is the smallest denormal), which zeroes the state and its gradient paths.
_KILL = 150.0


def scan_with_resets(scan_fn, u, delta, A, B, C, D, z, h0, is_init):
    """Mamba1 selective scan with a carried state and resets, on a scan that has neither.

    Kernel layout: u, delta, z [Bt, Di, T]; B, C [Bt, N, T]; A [Di, N]; D [Di];
    h0 [Bt, Di, N]; is_init [Bt, T]. ``scan_fn`` has selective_scan_fn's signature and
    starts from a zero state. Returns y [Bt, Di, T] and the final state [Bt, Di, N].

    The recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t is steered with steps the
    caller never sees (their outputs are dropped):
    - state load, N steps before t=0: step k has B = e_k, C = 0, dt = _LOAD_DT and
      u_k = h0[:, :, k] * exp(-dt A[:, k] (N-1-k)) / dt, so after the N steps the state
      is exactly h0 (column k is written once and decayed by the N-1-k steps after it).
    - reset, one step before each reset inside a row: u = 0, B = 0 and a dt so large
      that exp(dt A) is 0: the state becomes 0 and the reset step then starts afresh.
    - padding at the end of rows with fewer resets: dt = 0, u = 0 leaves h unchanged,
      so the kernel's last state is each row's true final state.
    The cost is N + (most resets in one row) extra steps; with neither, one plain call.
    Upstream alternatives do not fit: mamba-ssm's Mamba1 kernel takes no seq_idx, and
    packing episodes as separate rows (varlen) pads to the longest episode.
    """
    Bt, Di, T = u.shape
    N = A.shape[1]
    h0 = h0 * (~is_init[:, 0]).to(h0.dtype)[:, None, None]
    inside = is_init.clone()
    inside[:, 0] = False
    R = int(inside.sum(1).max())  # host sync: the new length depends on it
    load = bool(h0.ne(0).any())
    if not load and R == 0:
        return scan_fn(u, delta, A, B, C, D, z=z, return_last_state=True)
    T2 = T + R
    pos = torch.arange(T, device=u.device) + inside.long().cumsum(1)  # [Bt, T] new index of step t

    def place(t):  # [Bt, C, T] -> [Bt, C, T2], zeros at inserted steps
        idx = pos[:, None, :].expand(-1, t.shape[1], -1)
        return t.new_zeros(Bt, t.shape[1], T2).scatter(2, idx, t)

    u2, d2, z2, B2, C2 = place(u), place(delta), place(z), place(B), place(C)
    kill = torch.zeros(Bt, T2, device=u.device, dtype=delta.dtype)
    kill = kill.scatter_add(1, (pos - 1).clamp(min=0), inside.to(delta.dtype))
    kill_dt = (_KILL / (-A).amin(1)).detach().to(delta.dtype)  # [Di]
    d2 = d2 + kill[:, None, :] * kill_dt[None, :, None]
    if load:
        k = torch.arange(N, device=u.device, dtype=A.dtype)
        u_load = h0 * torch.exp(-_LOAD_DT * A * (N - 1 - k)) / _LOAD_DT  # [Bt, Di, N]
        eye = torch.eye(N, device=u.device, dtype=B.dtype).expand(Bt, N, N)
        u2 = torch.cat([u_load.to(u.dtype), u2], 2)
        d2 = torch.cat([d2.new_full((Bt, Di, N), _LOAD_DT), d2], 2)
        z2 = torch.cat([z2.new_zeros(Bt, Di, N), z2], 2)
        B2 = torch.cat([eye, B2], 2)
        C2 = torch.cat([C2.new_zeros(Bt, N, N), C2], 2)
        pos = pos + N
    y2, last = scan_fn(u2, d2, A, B2, C2, D, z=z2, return_last_state=True)
    return y2.gather(2, pos[:, None, :].expand(-1, Di, -1)), last


def mamba1_step(m, x, conv_state, ssm_state):
    xc, z, delta, A, Bm, Cm, conv_state = m.prepare(x, conv_state)
    ssm_state = ssm_state.clone()  # the kernel updates in place; keep the input intact
    # dt_bias must be a tensor: mamba-ssm 2.3.2 reads dt_bias.stride() even when it is None.
    y = _KERNELS["update"](ssm_state, xc, delta, A.float(), Bm, Cm, D=m.D, z=z,
                           dt_bias=delta.new_zeros(delta.shape[-1]))
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
    # Stride-0 expansions over headdim let the kernel load dt/A/dt_bias once per head.
    y = _KERNELS["update"](ssm_state, xh, dt[..., None].expand(-1, H, P),
                           A.float()[:, None, None].expand(H, P, N), Bm, Cm,
                           D=m.D[:, None].expand(H, P),
                           dt_bias=dt.new_zeros(H)[:, None].expand(H, P))
    return m._gated_norm_out(y, z), conv_state, ssm_state
