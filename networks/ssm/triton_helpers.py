"""The small @triton.jit helpers the Triton scan kernels (both kinds: networks/ssm/triton_scan.py's
tile, triton_scan_loop.py's loop) and the fused acting steps (triton_step.py) share: the scan
combine, softplus, sigmoid and the masked delta load. Their own module so that those three import
it and not each other (the loop kernels took them from triton_scan, which imports the loop kernels)."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def helpers():
    """(tl, {name: jitted helper}), built once (imports triton here, not at module load). A module
    whose kernels call them publishes both in its own globals (``globals().update(tl=tl, **helpers)``)."""
    import triton
    import triton.language as tl

    # @triton.jit resolves the names a kernel uses in its module's globals (not in this
    # closure), so tl and the helpers are published there as they are built.
    g = globals()
    g["tl"] = tl

    @triton.jit
    def _combine(a1, b1, a2, b2):
        # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2. With reverse=True triton feeds
        # the accumulated suffix as (a1, b1) (its own test_scan2d 'linear_recurrence'), so the
        # same function solves g_t = a'_t g_{t+1} + c_t.
        return a1 * a2, b1 * a2 + b2

    g["_combine"] = _combine

    @triton.jit
    def _softplus(x):
        # torch/mamba-ssm: log1p(exp(x)), x itself above 20. tl has no log1p: Goldberg's
        # log(w) * e / (w - 1) with w = 1 + e is accurate to a few ulps where log(1 + e) is not.
        e = tl.exp(tl.minimum(x, 20.0))
        w = 1.0 + e
        lp = tl.where(w == 1.0, e, tl.log(w) * (e / tl.where(w == 1.0, 1.0, w - 1.0)))
        return tl.where(x > 20.0, x, lp)

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    g["_softplus"], g["_sigmoid"] = _softplus, _sigmoid

    @triton.jit
    def _delta(dt_ptrs, m2, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, COMPUTE: tl.constexpr):
        """delta tile [BD, BT] after bias and softplus, 0 outside the mask (so padded steps
        have decay 1 and input 0: they leave the state unchanged). Also returns the
        pre-softplus value (for softplus's gradient)."""
        raw = tl.load(dt_ptrs, mask=m2, other=0.0).to(COMPUTE)
        if HAS_BIAS:
            raw = raw + bias[:, None]
        dt = raw
        if SOFTPLUS:
            dt = _softplus(raw)
        return tl.where(m2, dt, 0.0), raw

    g["_delta"] = _delta
    return tl, dict(_combine=_combine, _softplus=_softplus, _sigmoid=_sigmoid, _delta=_delta)
