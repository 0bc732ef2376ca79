"""``kernels.scan_with_resets`` gives mamba-ssm's Mamba1 kernel resets and a carried state.

The CUDA kernel is not available here, so it is stood in for by a zero-initial-state scan
with the kernel's signature built on our reference loop; the rewrite must then agree with
the reference scan that handles resets and h0 natively, values and gradients.
"""
import pytest
import torch
import torch.nn.functional as F

from networks.ssm.kernels import scan_with_resets
from networks.ssm.mamba1 import selective_scan_reference


def zero_state_scan(u, delta, A, B, C, D=None, z=None, return_last_state=False):
    """selective_scan_fn's contract (kernel layout, zero initial state, no resets)."""
    Bt, Di, T = u.shape
    h0 = u.new_zeros(Bt, Di, A.shape[1])
    no_reset = torch.zeros(Bt, T, dtype=torch.bool)
    y, h = selective_scan_reference(u.transpose(1, 2), delta.transpose(1, 2), A,
                                    B.transpose(1, 2), C.transpose(1, 2), D, h0, no_reset)
    y = y.transpose(1, 2) * F.silu(z)
    return (y, h) if return_last_state else y


def make_inputs(Bt=3, Di=5, N=4, T=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    u, z = r(Bt, Di, T), r(Bt, Di, T)
    delta = F.softplus(r(Bt, Di, T))
    A = -torch.exp(r(Di, N) * 0.5 + 1.0)  # |A| spans ~0.5..15, as the S4D init and after training
    B, C, D = r(Bt, N, T), r(Bt, N, T), r(Di)
    h0 = r(Bt, Di, N)
    return [u, delta, A, B, C, D, z, h0]


def reference(u, delta, A, B, C, D, z, h0, is_init):
    y, h = selective_scan_reference(u.transpose(1, 2), delta.transpose(1, 2), A,
                                    B.transpose(1, 2), C.transpose(1, 2), D, h0, is_init)
    return y.transpose(1, 2) * F.silu(z), h


RESETS = {
    "none": [],
    "t0_only": [(0, 0)],
    "inside": [(0, 3), (0, 4), (1, 10), (2, 1), (2, 7)],
    "inside_and_t0": [(1, 0), (1, 5), (2, 2)],
}


@pytest.mark.parametrize("case", list(RESETS))
@pytest.mark.parametrize("carry", [False, True])
def test_rewrite_matches_reference_values_and_gradients(case, carry):
    inputs = make_inputs()
    if not carry:
        inputs[-1] = torch.zeros_like(inputs[-1])
    is_init = torch.zeros(3, 11, dtype=torch.bool)
    for b, t in RESETS[case]:
        is_init[b, t] = True
    ref_in = [t.clone().requires_grad_() for t in inputs]
    new_in = [t.clone().requires_grad_() for t in inputs]
    y_ref, h_ref = reference(*ref_in, is_init)
    y_new, h_new = scan_with_resets(zero_state_scan, *new_in, is_init)
    torch.testing.assert_close(y_new, y_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h_new, h_ref, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(y_ref)
    (y_ref * w).sum().backward()
    (y_new * w).sum().backward()
    names = ["u", "delta", "A", "B", "C", "D", "z", "h0"]
    for name, a, b in zip(names, new_in, ref_in):
        if name == "h0" and not carry:
            continue  # an all-zero h0 takes the plain kernel call, which has no h0 input
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-7, atol=1e-9, msg=lambda m: f"d{name}: {m}")


def test_reset_rows_ignore_the_carried_state():
    inputs = make_inputs()
    is_init = torch.zeros(3, 11, dtype=torch.bool)
    is_init[1, 0] = True
    y1, _ = scan_with_resets(zero_state_scan, *inputs, is_init)
    inputs[-1][:2] += 100.0  # row 1 starts an episode: its h0 must not matter; row 0's must
    y2, _ = scan_with_resets(zero_state_scan, *inputs, is_init)
    torch.testing.assert_close(y1[1], y2[1])
    assert not torch.allclose(y1[0], y2[0])


def test_float32_kill_step_really_zeroes_the_state():
    # In float32 the reset relies on exp(dt * A) underflowing to 0 for the smallest |A|.
    inputs = [t.float() for t in make_inputs()]
    inputs[2][0, 0] = -1e-3  # a nearly non-decaying channel
    is_init = torch.zeros(3, 11, dtype=torch.bool)
    is_init[0, 6] = True
    y, _ = scan_with_resets(zero_state_scan, *inputs, is_init)
    inputs[0][0, :, :6] += 10.0  # change everything before the reset
    inputs[-1][0] += 10.0
    y2, _ = scan_with_resets(zero_state_scan, *inputs, is_init)
    torch.testing.assert_close(y[0, :, 6:], y2[0, :, 6:], rtol=0, atol=1e-6)
