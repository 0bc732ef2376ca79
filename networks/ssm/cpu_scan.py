"""Fused reset-aware selective scan on the CPU: a C++/OpenMP extension, built on first use.

Mamba1's chunked PyTorch scan spends its time dispatching ~38,700 small aten ops at T=1024
(issue 22); ``csrc/selective_scan_cpu.cpp`` runs the same recurrence, forward and
backward, in one pass per (row, channel block) on torch's intra-op threads, with resets,
an initial state and a gradient into the final state (see the .cpp for the layout and the
backward's memory profile: the state entering every ``chunk_size`` steps, as the chunked scan).

Why JIT and not setup.py: ``pip install -e .`` builds in an isolated environment, where a
torch extension would pull a multi-GB CUDA torch into the build env. So the first CPU scan
builds it with ``torch.utils.cpp_extension.load`` into ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), one directory per torch version and CPU (the code is built
with ``-march=native``); later processes load the cached build. One log line names the path
taken: the extension (and where it lives) or, without a C++ compiler or when the build
fails, the chunked PyTorch scan, which stays the reference fast path.
``MAMBAZOO_CPU_SCAN=0`` never builds or uses it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import threading
import time
from pathlib import Path

import torch

log = logging.getLogger("mambazoo")
ENV = "MAMBAZOO_CPU_SCAN"
SOURCE = Path(__file__).parent / "csrc" / "selective_scan_cpu.cpp"
_EXT = None  # None: not tried yet; False: unavailable; the extension module otherwise
_WHY_NOT = ""
_LOCK = threading.Lock()
DTYPES = (torch.float32, torch.float64)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def build_directory(name: str = "mambazoo_selective_scan_cpu") -> Path:
    """Where an extension is built: per torch version and CPU, since -march=native code
    built on one CPU may not run on another that shares the cache (a network home)."""
    tag = hashlib.sha1(f"{torch.__version__}|{platform.machine()}|{_cpu_flags()}".encode()).hexdigest()[:10]
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / f"{name}_{tag}"


def compile_extension(name: str, sources, directory: Path):
    """Compile (or load the cached build of) one extension of csrc/ from its source file(s); raises
    if that is impossible. Also builds Mamba2's (networks/ssm/cpu_mamba2.py), with the same flags."""
    from torch.utils.cpp_extension import load

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler ({cxx!r} is not on PATH)")
    sources = [sources] if isinstance(sources, Path) else list(sources)
    for source in sources:
        if not source.exists():
            raise RuntimeError(f"{source} is missing from this install")
    cflags = ["-O3"]
    if platform.system() == "Linux":
        # torch's libgomp has the soname libgomp.so.1, so the loader reuses it for the
        # extension: one OpenMP runtime, and torch.set_num_threads governs both.
        cflags.append("-fopenmp")
    if platform.machine() in ("x86_64", "AMD64"):
        cflags.append("-march=native")
    directory.mkdir(parents=True, exist_ok=True)
    return load(name=name, sources=[str(s) for s in sources], extra_cflags=cflags,
                extra_ldflags=["-fopenmp"] if "-fopenmp" in cflags else [],
                build_directory=str(directory), verbose=False)


def _build():
    return compile_extension("mambazoo_selective_scan_cpu", SOURCE, build_directory())


def disabled() -> str:
    """Why the C++ extensions are off by the environment ("" when they are not)."""
    value = os.environ.get(ENV, "1")
    return f"{ENV}={value}" if value.lower() in ("0", "off", "false", "no") else ""


def load_once(what: str, fallback: str, build, directory):
    """(the extension or False, why not), logging one line either way: ``what`` is the
    extension's name in the log, ``fallback`` the path taken without it."""
    off = disabled()
    if off:
        log.warning("mambazoo: %s disabled (%s); using %s", what, off, fallback)
        return False, off
    t0 = time.perf_counter()
    try:
        ext = build()
    except Exception as exc:  # no compiler, a failed compile, a broken cache
        lines = str(exc).strip().splitlines() or [""]
        first = next((ln for ln in lines if "error:" in ln), lines[-1])  # the compiler's first error
        why = f"{type(exc).__name__}: {first.strip()}"
        log.warning("mambazoo: %s unavailable (%s); using %s", what, why, fallback)
        return False, why
    took = time.perf_counter() - t0
    log.warning("mambazoo: using the %s from %s (%.1f s to load%s)", what, directory(), took,
                ", first use: built it" if took > 2 else "")
    return ext, ""


def _load():
    global _EXT, _WHY_NOT
    if _EXT is None:
        with _LOCK:
            if _EXT is None:
                _EXT, _WHY_NOT = load_once("fused CPU selective scan", "the chunked PyTorch scan",
                                           _build, build_directory)
    return _EXT


def available() -> bool:
    return bool(_load())


def wanted(u: torch.Tensor) -> bool:
    """CPU float32/float64 tensors take the fused scan when it builds."""
    return u.device.type == "cpu" and u.dtype in DTYPES and available()


def _blocks(Bt: int, G: int, Di: int) -> int:
    """Channel blocks per (row, group): enough work units to keep every thread busy (uneven
    units leave threads idle), but blocks of >= 32 channels so the inner loop vectorises."""
    target = 4 * torch.get_num_threads()
    nblk = 1
    while Bt * G * nblk < target and Di % (2 * nblk) == 0 and Di // (2 * nblk) >= 32:
        nblk *= 2
    return nblk


class _FusedScan(torch.autograd.Function):
    """The extension's forward/backward. Inputs as the .cpp: u, delta [Bt, T, Dt]; A [Dt, N];
    B, C [Bt, T, G, N]; D [Dt]; h0 [Bt, Dt, N]; keep [Bt, T] or empty."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, h0, keep, chunk, nblk):
        y, h, ck = _EXT.fwd(u, delta, A, B, C, D, h0, keep, chunk, nblk, True)
        ctx.save_for_backward(u, delta, A, B, C, D, keep, ck)
        ctx.chunk, ctx.nblk = chunk, nblk
        return y, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, g_final):
        u, delta, A, B, C, D, keep, ck = ctx.saved_tensors
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        g_final = u.new_empty(0) if g_final is None else g_final.contiguous()
        gu, gdelta, gA, gB, gC, gD, gh0 = _EXT.bwd(u, delta, A, B, C, D, keep, ck, gy, g_final,
                                                  ctx.chunk, ctx.nblk)
        return gu, gdelta, gA, gB, gC, gD, gh0, None, None, None


def scan(u, delta, A, B, C, D, h0, keep=None, chunk_size: int = 16):
    """u, delta [Bt, T, Dt]; A [Dt, N]; B, C [Bt, T, G, N]; D [Dt]; h0 [Bt, Dt, N]; keep
    [Bt, T] (0 where a step resets) or None -> y [Bt, T, Dt] (D skip included), h_T [Bt, Dt, N]."""
    if _load() is False:
        raise RuntimeError(f"the fused CPU selective scan is unavailable ({_WHY_NOT})")
    dtype = u.dtype
    u, delta, A, B, C, D, h0 = (t.to(dtype).contiguous() for t in (u, delta, A, B, C, D, h0))
    keep = u.new_empty(0) if keep is None else keep.to(dtype).contiguous()
    nblk = _blocks(u.shape[0], B.shape[2], u.shape[2] // B.shape[2])
    args = (u, delta, A, B, C, D, h0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        return _FusedScan.apply(*args, keep, chunk_size, nblk)
    y, h, _ = _EXT.fwd(*args, keep, chunk_size, nblk, False)  # no graph: keep no checkpoints
    return y, h


def selective_scan(u, delta, A, B, C, D, h0, is_init, chunk_size: int = 16):
    """Mamba1's contract (networks.ssm.mamba1.selective_scan_reference): u, delta [Bt, T, Di];
    A [Di, N]; B, C [Bt, T, N]; D [Di]; h0 [Bt, Di, N]; is_init [Bt, T] -> y, final state."""
    keep = (~is_init).to(u.dtype)
    return scan(u, delta, A, B[:, :, None], C[:, :, None], D, h0, keep, chunk_size)


def selective_scan_grouped(u, delta, A, B, C, D, chunk_size: int = 16):
    """SS2D's contract (networks.ssm.ss2d.selective_scan_grouped): u, delta [Bt, T, G, Di];
    A [G, Di, N]; B, C [Bt, T, G, N]; D [G, Di] -> y [Bt, T, G, Di]; zero state, no resets."""
    Bt, T, G, Di = u.shape
    h0 = u.new_zeros(Bt, G * Di, A.shape[-1])
    y, _ = scan(u.reshape(Bt, T, G * Di), delta.reshape(Bt, T, G * Di), A.reshape(G * Di, -1),
                B, C, D.reshape(-1), h0, None, chunk_size)
    return y.reshape(Bt, T, G, Di)


def step_wanted(stack, x: torch.Tensor, ext_available=None) -> bool:
    """The fused acting step serves a MambaStack (the caller checks the mixer kind: this module
    sits below the mixers; ``ext_available`` is the step's extension, this one's by default) on the
    CPU when no gradient is needed (acting and collection; training's sequence mode and gradient
    checks stay eager)."""
    if x.device.type != "cpu" or x.dtype not in DTYPES:
        return False
    if len({n.eps for n in (*stack.norms, stack.out_norm)}) != 1:  # the kernel takes one eps
        return False
    if x.dtype != stack.out_norm.weight.dtype:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in stack.parameters())):
        return False
    return (ext_available or available)()


def mamba1_stack_step(stack, x, states):
    """``MambaStack.step`` for Mamba1 in one extension call: x [B, input], states {"conv": [B, L,
    Di, K-1], "ssm": [B, L, Di, N]} (already zeroed on reset) -> (y [B, H], new states)."""
    if _load() is False:
        raise RuntimeError(f"the fused CPU selective scan is unavailable ({_WHY_NOT})")
    args = _step_args(stack)
    y, conv, ssm = _EXT.mamba1_stack_step(x.contiguous(), args[0], args[1], states["conv"].contiguous(),
                                          states["ssm"].contiguous(), *args[2:])
    return y, {"conv": conv, "ssm": ssm}


def _step_args(stack):
    """Mamba1's per-layer tensors for the step kernel (selective_scan_cpu.cpp's order)."""
    return gather_step_args(stack, "_cpu_step_args", lambda norm, m: [
        norm.weight, m.in_proj.weight, m.conv_weight, m.conv_bias, m.x_proj.weight, m.dt_proj.weight,
        m.dt_proj.bias, m.A_log, m.D, m.out_proj.weight], stack.mixers[0].dt_rank)


def gather_step_args(stack, cache_attr: str, per_layer, last):
    """(in_proj weight, its bias, [per_layer(norm, mixer) of every layer], out_norm weight, eps,
    ``last``): what a fused step kernel reads, gathered once per stack and cached in
    ``cache_attr`` (gathering is ~20 us, most of a step). The Parameter objects are kept, so
    optimizer steps, load_state_dict and .to() (which update them in place) are seen; assigning
    a new Parameter to a mixer is not. Mamba1's and Mamba2's (cpu_mamba2) steps both use it."""
    cached = getattr(stack, cache_attr, None)
    if cached is not None and cached[-1] is stack.out_norm.weight:
        return cached[:-1]
    empty = torch.empty(0)
    inp = stack.in_proj
    in_w = empty if isinstance(inp, torch.nn.Identity) else inp.weight
    in_b = empty if isinstance(inp, torch.nn.Identity) or inp.bias is None else inp.bias
    layers = [t for norm, m in zip(stack.norms, stack.mixers) for t in per_layer(norm, m)]
    eps = stack.norms[0].eps if stack.norms[0].eps is not None else torch.finfo(stack.out_norm.weight.dtype).eps
    args = (in_w, in_b, layers, stack.out_norm.weight, eps, last)
    object.__setattr__(stack, cache_attr, (*args, stack.out_norm.weight))
    return args


class _FusedConv(torch.autograd.Function):
    """Depthwise causal conv with reset masks + bias + SiLU (the .cpp's conv_fwd/conv_bwd)."""

    @staticmethod
    def forward(ctx, x, weight, bias, state, seg):
        out, new_state = _EXT.conv_fwd(x, weight, bias, state, seg)
        ctx.save_for_backward(x, weight, bias, state, seg)
        return out, new_state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout, gstate):
        x, weight, bias, state, seg = ctx.saved_tensors
        gout = torch.zeros_like(x) if gout is None else gout.contiguous()
        gstate = x.new_empty(0) if gstate is None else gstate.contiguous()
        gx, gw, gb, gs = _EXT.conv_bwd(x, weight, bias, state, seg, gout, gstate)
        return gx, gw, gb, gs, None


def causal_conv1d_silu(x, weight, bias, conv_state, is_init):
    """SiLU(networks.ssm.causal_conv.causal_conv1d(...)) and its new state, in one pass each way.
    x [B, T, C] (channels contiguous; rows may be a strided view, e.g. in_proj's x half)."""
    from networks.ssm import causal_conv  # segment ids from there, so what patches it (tests) applies here

    seg = causal_conv.segment_ids(is_init).contiguous()
    dtype = x.dtype
    if x.stride(-1) != 1:
        x = x.contiguous()
    weight, bias, conv_state = (t.to(dtype).contiguous() for t in (weight, bias, conv_state))
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias, conv_state)):
        return _FusedConv.apply(x, weight, bias, conv_state, seg)
    out, new_state = _EXT.conv_fwd(x, weight, bias, conv_state, seg)
    return out, new_state
