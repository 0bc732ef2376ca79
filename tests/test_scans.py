"""Fast scans == their one-step reference loops (float64, 1e-10), resets included."""
import pytest
import torch

from networks.ssm.causal_conv import causal_conv1d, causal_conv1d_step
from networks.ssm.mamba1 import selective_scan_chunked, selective_scan_reference, selective_state_step
from networks.ssm.mamba2 import ssd_chunked, ssd_reference, ssd_step

F64 = torch.float64


def _resets(gen, Bt, T, p):
    return torch.rand(Bt, T, generator=gen) < p


@pytest.mark.parametrize("seed", range(12))
def test_selective_scan_chunked_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randint(*s, (1,), generator=gen).item()  # noqa: E731
    Bt, T, Di, N, L = r(1, 4), r(1, 70), r(1, 9), r(1, 6), r(1, 20)  # T need not divide L
    u, delta = torch.randn(Bt, T, Di, generator=gen, dtype=F64), torch.rand(Bt, T, Di, generator=gen, dtype=F64)
    A = -3 * torch.rand(Di, N, generator=gen, dtype=F64)
    B, C = (torch.randn(Bt, T, N, generator=gen, dtype=F64) for _ in range(2))
    D, h0 = torch.randn(Di, generator=gen, dtype=F64), torch.randn(Bt, Di, N, generator=gen, dtype=F64)
    is_init = _resets(gen, Bt, T, 0.15)
    y_ref, h_ref = selective_scan_reference(u, delta, A, B, C, D, h0, is_init)
    y, h = selective_scan_chunked(u, delta, A, B, C, D, h0, is_init, chunk_size=L)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("seed", range(12))
def test_ssd_chunked_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randint(*s, (1,), generator=gen).item()  # noqa: E731
    Bt, T, G, P, N, L = r(1, 4), r(1, 70), r(1, 3), r(1, 5), r(1, 6), r(1, 20)
    H = G * r(1, 3)
    x = torch.randn(Bt, T, H, P, generator=gen, dtype=F64)
    dt = torch.rand(Bt, T, H, generator=gen, dtype=F64)
    A = -2 * torch.rand(H, generator=gen, dtype=F64)
    B, C = (torch.randn(Bt, T, G, N, generator=gen, dtype=F64) for _ in range(2))
    D, h0 = torch.randn(H, generator=gen, dtype=F64), torch.randn(Bt, H, P, N, generator=gen, dtype=F64)
    is_init = _resets(gen, Bt, T, 0.15)
    y_ref, h_ref = ssd_reference(x, dt, A, B, C, D, h0, is_init)
    y, h = ssd_chunked(x, dt, A, B, C, D, h0, is_init, chunk_size=L)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-10, rtol=0)


def test_one_step_updates_match_reference_first_step():
    gen = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 1, 3, generator=gen, dtype=F64), torch.rand(2, 1, 3, generator=gen, dtype=F64)
    A, B, C = -torch.rand(3, 4, dtype=F64), torch.randn(2, 1, 4, dtype=F64), torch.randn(2, 1, 4, dtype=F64)
    D, h0 = torch.randn(3, dtype=F64), torch.randn(2, 3, 4, dtype=F64)
    no_reset = torch.zeros(2, 1, dtype=torch.bool)
    y_ref, h_ref = selective_scan_reference(u, delta, A, B, C, D, h0, no_reset)
    y, h = selective_state_step(u[:, 0], delta[:, 0], A, B[:, 0], C[:, 0], D, h0)
    torch.testing.assert_close(y, y_ref[:, 0], atol=1e-12, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=0)
    x, dt = torch.randn(2, 1, 4, 2, dtype=F64), torch.rand(2, 1, 4, dtype=F64)
    A2, B2, C2 = -torch.rand(4, dtype=F64), torch.randn(2, 1, 2, 3, dtype=F64), torch.randn(2, 1, 2, 3, dtype=F64)
    D2, g0 = torch.randn(4, dtype=F64), torch.randn(2, 4, 2, 3, dtype=F64)
    y_ref, h_ref = ssd_reference(x, dt, A2, B2, C2, D2, g0, no_reset)
    y, h = ssd_step(x[:, 0], dt[:, 0], A2, B2[:, 0], C2[:, 0], D2, g0)
    torch.testing.assert_close(y, y_ref[:, 0], atol=1e-12, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(6))
def test_causal_conv_with_resets_matches_steps(seed):
    gen = torch.Generator().manual_seed(seed)
    Bt, T, Cc, K = 3, 23, 5, 1 + seed % 4 + 1
    x = torch.randn(Bt, T, Cc, generator=gen, dtype=F64)
    w, b = torch.randn(Cc, K, generator=gen, dtype=F64), torch.randn(Cc, generator=gen, dtype=F64)
    state0 = torch.randn(Bt, Cc, K - 1, generator=gen, dtype=F64)
    is_init = _resets(gen, Bt, T, 0.2)
    out, state = causal_conv1d(x, w, b, state0, is_init)
    s, ref = state0, []
    for t in range(T):
        s = s * (~is_init[:, t]).to(F64)[:, None, None]
        o, s = causal_conv1d_step(x[:, t], w, b, s)
        ref.append(o)
    torch.testing.assert_close(out, torch.stack(ref, 1), atol=1e-12, rtol=0)
    torch.testing.assert_close(state, s, atol=1e-12, rtol=0)
    # Without resets it is exactly torch's causal depthwise conv.
    no_reset = torch.zeros(Bt, T, dtype=torch.bool)
    out, _ = causal_conv1d(x, w, b, torch.zeros_like(state0), no_reset)
    conv = torch.nn.functional.conv1d(x.transpose(1, 2), w[:, None], b, padding=K - 1, groups=Cc)[..., :T]
    torch.testing.assert_close(out, conv.transpose(1, 2), atol=1e-12, rtol=0)


@pytest.mark.parametrize("T, chunk", [(13, 4), (16, 16), (1, 4), (30, 7)])
def test_selective_scan_chunked_hand_written_backward_passes_gradcheck(T, chunk):
    """The chunked Mamba1 scan has its own backward: check it against finite differences."""
    gen = torch.Generator().manual_seed(T)
    Bt, Di, N = 2, 3, 4
    leaf = lambda t: t.requires_grad_()  # noqa: E731
    inputs = (leaf(torch.randn(Bt, T, Di, generator=gen, dtype=F64)),
              leaf(torch.rand(Bt, T, Di, generator=gen, dtype=F64)),
              leaf(-2 * torch.rand(Di, N, generator=gen, dtype=F64)),
              leaf(torch.randn(Bt, T, N, generator=gen, dtype=F64)),
              leaf(torch.randn(Bt, T, N, generator=gen, dtype=F64)),
              leaf(torch.randn(Di, generator=gen, dtype=F64)),
              leaf(torch.randn(Bt, Di, N, generator=gen, dtype=F64)))
    is_init = _resets(gen, Bt, T, 0.2)
    assert torch.autograd.gradcheck(lambda *a: selective_scan_chunked(*a, is_init, chunk_size=chunk), inputs)
