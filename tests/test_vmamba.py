"""VMamba-TD3 networks: SS2D == its explicit loop oracle, directions distinct, shapes, budget."""
import pytest
import torch

from networks.ssm.ss2d import (SS2D, direction_order, grid_to_sequences, selective_scan_grouped,
                           selective_scan_grouped_reference, sequences_to_grid, ss2d_reference)
from networks.models.vmamba import (CrossAttentionPool, SequenceEncoder, VMambaRLTiny, build_td3_networks,
                             count_parameters, parameter_report)

F64 = torch.float64
PER_DIRECTION = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")
TINY = dict(image_size=16, patch_size=4, depths=(1, 1), dims=(8, 16), d_state=4, visual_dim=16,
            state_feature_dim=8, d_model=16, num_heads=2, hidden_dim=16, temporal_d_state=4)


def _ss2d(seed=0, d_model=6, d_state=3, chunk_size=4):
    torch.manual_seed(seed)
    m = SS2D(d_model, d_state=d_state, ssm_ratio=1.5, chunk_size=chunk_size).double()
    with torch.no_grad():  # make directions' parameters clearly different from each other
        for name in PER_DIRECTION:
            getattr(m, name).add_(0.3 * torch.randn_like(getattr(m, name)))
    return m


@pytest.mark.parametrize("H,W,chunk", [(3, 5, 4), (4, 4, 16), (1, 6, 5), (5, 1, 3)])
def test_ss2d_matches_reference(H, W, chunk):
    m = _ss2d(chunk_size=chunk)
    x = torch.randn(2, H, W, 6, dtype=F64)
    out, ys = m(x, return_directions=True)
    ref, ys_ref = ss2d_reference(m, x, return_directions=True)
    torch.testing.assert_close(ys, ys_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    m.scan = "reference"
    torch.testing.assert_close(m(x), ref, atol=1e-10, rtol=0)


def test_ss2d_float32_matches_reference():
    m = _ss2d().float()
    x = torch.randn(2, 4, 5, 6)
    torch.testing.assert_close(m(x), ss2d_reference(m, x), atol=1e-5, rtol=1e-5)


def test_grouped_scan_gradients_match_loop():
    gen = torch.Generator().manual_seed(1)
    Bt, T, G, Di, N = 2, 11, 4, 3, 5
    u, B, C = (torch.randn(Bt, T, G, n, generator=gen, dtype=F64) for n in (Di, N, N))
    delta = torch.rand(Bt, T, G, Di, generator=gen, dtype=F64)
    A = -2 * torch.rand(G, Di, N, generator=gen, dtype=F64)
    D = torch.randn(G, Di, generator=gen, dtype=F64)
    args = [t.requires_grad_() for t in (u, delta, A, B, C, D)]
    gy = torch.randn(Bt, T, G, Di, generator=gen, dtype=F64)
    y_ref = selective_scan_grouped_reference(*args)
    g_ref = torch.autograd.grad((y_ref * gy).sum(), args)
    y = selective_scan_grouped(*args, chunk_size=4)
    g = torch.autograd.grad((y * gy).sum(), args)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=0)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_direction_orders_and_grid_roundtrip():
    H, W = 3, 4
    idx = torch.arange(H * W, dtype=F64).reshape(1, H, W, 1)                 # cell id = i*W + j
    seqs = grid_to_sequences(idx)[0, :, :, 0]                                 # [L, 4]
    for k in range(4):
        assert seqs[:, k].tolist() == [i * W + j for i, j in direction_order(k, H, W)]
    back = sequences_to_grid(grid_to_sequences(idx), H, W)
    assert torch.equal(back, idx[:, None].expand(1, 4, H, W, 1))


def test_each_direction_is_distinct():
    """All four directions given the SAME parameters: only the visiting order differs, so any
    two directions' outputs being equal means two of them read the map in the same order."""
    m = _ss2d()
    with torch.no_grad():
        for name in PER_DIRECTION:
            p = getattr(m, name)
            p.copy_(p[:1].expand_as(p))
    x = torch.randn(2, 4, 5, 6, dtype=F64)
    _, ys = m(x, return_directions=True)                                      # [B, 4, H, W, Di]
    for a in range(4):
        for b in range(a + 1, 4):
            assert (ys[:, a] - ys[:, b]).abs().max() > 1e-3, f"directions {a} and {b} are equal"
    # causality per direction: perturbing the scan input at one cell changes exactly the
    # cells that direction visits from that cell on
    H, W, cell = 4, 5, (1, 2)
    xc = torch.randn(2, H, W, m.d_inner, dtype=F64)
    xc2 = xc.clone()
    xc2[:, cell[0], cell[1]] += 1.0
    changed = (m.scan_directions(xc) - m.scan_directions(xc2)).abs().amax((0, -1)) > 0  # [4, H, W]
    for k in range(4):
        order = direction_order(k, H, W)
        expect = torch.zeros(H, W, dtype=torch.bool)
        for i, j in order[order.index(cell):]:
            expect[i, j] = True
        assert torch.equal(changed[k], expect), f"direction {k} visits cells in the wrong order"


def test_gradients_reach_every_direction():
    m = _ss2d()
    x = torch.randn(2, 4, 5, 6, dtype=F64, requires_grad=True)
    m(x).pow(2).sum().backward()
    for name in PER_DIRECTION:
        grad = getattr(m, name).grad
        assert grad is not None, name
        for k in range(4):
            assert grad[k].abs().sum() > 0, f"{name}[{k}] gets no gradient"
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("image_size", [48, 64])
def test_backbone_image_sizes(image_size):
    net = VMambaRLTiny(image_size=image_size, depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), out_dim=12)
    out, maps = net(torch.randn(2, 1, image_size, image_size), return_features=True)
    assert out.shape == (2, 12)
    assert maps.shape == (2, *net.final_grid, 16) and net.final_grid == (2, 2)
    with pytest.raises(ValueError, match="image_size"):
        net(torch.randn(2, 1, 32, 32))


def test_sequence_encoder_shapes_and_attention():
    torch.manual_seed(0)
    enc = SequenceEncoder(**{k: v for k, v in TINY.items() if k != "hidden_dim"})
    depth, state = torch.randn(3, 4, 1, 16, 16), torch.randn(3, 4, 11)
    feat = enc(depth, state)
    assert feat.shape == (3, 16)
    feat2, extras = enc(depth, state, return_attention=True, return_features=True)
    torch.testing.assert_close(feat, feat2)
    w = extras["attention"]
    assert w.shape == (3, 2, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2))
    assert extras["features"].shape == (3, 4, 2, 2, 16)
    # extra leading batch dims
    assert enc(depth[None].expand(2, -1, -1, -1, -1, -1), state[None].expand(2, -1, -1, -1)).shape == (2, 3, 16)
    with pytest.raises(ValueError, match="state_dim"):
        enc(depth, torch.randn(3, 4, 10))
    with pytest.raises(ValueError, match="same"):
        enc(depth, torch.randn(3, 5, 11))


def test_the_unrolled_gru_is_nn_gru_in_value_and_every_gradient():
    """gru_unrolled (what TemporalGRU runs on CUDA, where graphs cannot hold cuDNN) == nn.GRU from a
    zero state, float64: outputs and the gradients of input and all four weights."""
    from networks.models.vmamba import gru_unrolled

    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 5, batch_first=True).double()
    x = torch.randn(3, 4, 6, dtype=F64, requires_grad=True)
    w = torch.randn(3, 4, 5, dtype=F64)
    y_ref = gru(x)[0]
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [x, *gru.parameters()])
    y = gru_unrolled(gru, x)
    grads = torch.autograd.grad((y * w).sum(), [x, *gru.parameters()])
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_uncapturable_passes_the_temporal_gru_and_still_names_a_cudnn_rnn(monkeypatch):
    from agents.algos.cuda_graph_train import uncapturable

    monkeypatch.setattr(torch.backends.cudnn, "enabled", True)
    enc = SequenceEncoder(**{k: v for k, v in TINY.items() if k != "hidden_dim"}, temporal="gru")
    assert uncapturable([enc]) is None
    mixed = torch.nn.ModuleDict({"enc": enc, "memory": torch.nn.GRU(4, 4)})
    assert "memory is a cuDNN GRU" in uncapturable([mixed])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_temporal_gru_on_cuda_is_captured_by_a_cuda_graph_and_trains_as_eager():
    """On CUDA TemporalGRU runs unrolled: a GraphedTrainStep holds its forward, backward and Adam
    step, and 5 replays give the weights 5 eager steps give (and the CPU nn.GRU's output)."""
    import copy

    from agents.algos.cuda_graph_train import GraphedTrainStep, make_capturable
    from networks.models.vmamba import TemporalGRU

    torch.manual_seed(0)
    cpu = TemporalGRU(16)
    x, target = torch.randn(8, 4, 16), torch.randn(8, 4, 16)
    graphed, eager = copy.deepcopy(cpu).cuda(), copy.deepcopy(cpu).cuda()
    torch.testing.assert_close(graphed(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-5)
    xg, tg = x.cuda(), target.cuda()
    opt_g, opt_e = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (graphed, eager))
    make_capturable(opt_g, xg.device)

    # A regression onto a random target, not the output's square: the stage ends in a LayerNorm, whose
    # output has mean square ~1 whatever the GRU's weights, so that loss's GRU gradients are ~1e-5 noise,
    # which Adam scales to lr-sized steps (two exact-math paths on the CPU differ by 1e-5 after 5 steps).
    def step_fn():
        loss = (graphed(xg) - tg).square().mean()
        loss.backward()
        opt_g.step()
        return loss

    step = GraphedTrainStep(step_fn, [graphed], opt_g)   # warm-up steps, undone, then the capture
    for _ in range(5):
        step()
    for _ in range(5):
        opt_e.zero_grad()
        (eager(xg) - tg).square().mean().backward()
        opt_e.step()
    for (name, a), b in zip(graphed.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_gru_temporal_stage_is_causal_and_reaches_the_first_step():
    """temporal="gru": the recurrent baseline. Step k's output ignores later steps (a GRU over
    the K steps, zero initial state) and the pooled feature depends on the first frame."""
    from networks.models.vmamba import TemporalGRU

    torch.manual_seed(0)
    stage = TemporalGRU(8, num_layers=2)
    x = torch.randn(2, 4, 8)
    x2 = x.clone()
    x2[:, 2:] += 1.0
    y, y2 = stage(x), stage(x2)
    torch.testing.assert_close(y[:, :2], y2[:, :2])
    assert (y[:, 2:] - y2[:, 2:]).abs().max() > 1e-3
    enc = SequenceEncoder(**{k: v for k, v in TINY.items() if k != "hidden_dim"}, temporal="gru")
    depth, state = torch.randn(3, 4, 1, 16, 16), torch.randn(3, 4, 11)
    state2 = state.clone()
    state2[:, 0] += 1.0                                                       # only the oldest step
    feat, extras = enc(depth, state, return_attention=True)
    assert feat.shape == (3, 16) and extras["attention"].shape == (3, 2, 4)
    assert (enc(depth, state2) - feat).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"\['mamba', 'gru', 'none'\]"):
        SequenceEncoder(**{k: v for k, v in TINY.items() if k != "hidden_dim"}, temporal="lstm")


def test_cross_attention_pool_query_is_last_step():
    pool = CrossAttentionPool(8, num_heads=2)
    x = torch.randn(2, 4, 8)
    y1, _ = pool(x)
    x2 = x.clone()
    x2[:, -1] += 1.0                                                          # change the query
    y2, _ = pool(x2)
    assert (y1 - y2).abs().max() > 1e-4


def test_actor_and_critic():
    torch.manual_seed(0)
    actor, critic = build_td3_networks(TINY)
    depth, state = 10 * torch.randn(5, 4, 1, 16, 16), 10 * torch.randn(5, 4, 11)
    with torch.no_grad():
        actor.head[-1].weight.mul_(1e4)                                       # push tanh to saturation
    a = actor(depth, state)
    assert a.shape == (5, 3) and a.abs().max() <= 1.0
    q1, q2 = critic(depth, state, a)
    assert q1.shape == (5, 1) and q2.shape == (5, 1)
    assert not torch.equal(q1, q2)
    (q1.sum() + q2.sum()).backward()
    assert all(p.grad is not None for p in critic.parameters())
    assert actor.encoder is not critic.encoder
    with pytest.raises(ValueError, match="unknown"):
        build_td3_networks(bogus=1)


def test_default_parameter_budget():
    actor, critic = build_td3_networks()
    total = count_parameters(actor) + count_parameters(critic)
    assert 1.5e6 <= total <= 2.5e6, total
    report = parameter_report(actor, critic)
    assert "actor_target" in report and f"{total:,d}" in report


def _upstream_selective_scan_ref(u, delta, A, B, C, D=None, delta_softplus=False):
    """mamba-ssm's selective_scan_ref semantics for grouped B/C (B [Bt, G, N, L]):
    channel c of u [Bt, G*Di, L] uses group c // Di (their ``repeat(B, "B G N L -> B (G H) N L")``)."""
    Di = u.shape[1] // B.shape[1]
    B, C = (t.repeat_interleave(Di, dim=1) for t in (B, C))                   # [Bt, G*Di, N, L]
    h = u.new_zeros(u.shape[0], *A.shape)
    ys = []
    for t in range(u.shape[2]):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    return torch.stack(ys, -1) + D[:, None] * u


def test_ss2d_kernel_layout_with_reference_semantics(monkeypatch):
    """The CUDA path's layout (``_kernel_scan``) checked on CPU against upstream's semantics."""
    from networks.ssm import kernels
    m = _ss2d()
    x = torch.randn(2, 3, 4, 6, dtype=F64)
    ref = m(x)
    monkeypatch.setattr(kernels, "wanted", lambda use, t: True)
    monkeypatch.setattr(kernels, "_load", lambda: {"scan": _upstream_selective_scan_ref})
    # D goes to the kernel as fp32 (its contract), hence 1e-7; a layout bug is O(1)
    torch.testing.assert_close(m(x), ref, atol=1e-7, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ss2d_kernel_matches_pytorch():
    from networks.ssm import kernels
    if not kernels.available():
        pytest.skip("mamba-ssm kernels not built")
    torch.manual_seed(0)
    m = SS2D(32, d_state=8).cuda()
    x = torch.randn(4, 16, 16, 32, device="cuda", requires_grad=True)
    m.use_kernels = True
    out_k = m(x)
    g_k = torch.autograd.grad(out_k.sum(), [x, m.A_logs, m.x_proj_weight])
    m.use_kernels = False
    out_t = m(x)
    g_t = torch.autograd.grad(out_t.sum(), [x, m.A_logs, m.x_proj_weight])
    torch.testing.assert_close(out_k, out_t, atol=2e-4, rtol=2e-3)
    for a, b in zip(g_k, g_t):
        torch.testing.assert_close(a, b, atol=2e-3 * b.abs().max().item(), rtol=1e-2)


def test_pool_is_chosen_apart_from_the_temporal_stage():
    """model.pool: auto keeps the seed's pairings (attention after mamba/gru, the frame stack's concat
    MLP after none); attention/concat cross them, and a wrong name is refused naming the choices."""
    from networks.models.vmamba import FrameStackMLP

    opts = {k: v for k, v in TINY.items() if k != "hidden_dim"}
    kinds = {(t, p): type(SequenceEncoder(**opts, temporal=t, pool=p).pool).__name__
             for t in ("mamba", "none") for p in ("auto", "attention", "concat")}
    assert kinds == {("mamba", "auto"): "CrossAttentionPool", ("mamba", "attention"): "CrossAttentionPool",
                     ("mamba", "concat"): "FrameStackMLP", ("none", "auto"): "FrameStackMLP",
                     ("none", "attention"): "CrossAttentionPool", ("none", "concat"): "FrameStackMLP"}
    enc = SequenceEncoder(**opts, temporal="mamba", pool="concat")
    depth, state = torch.randn(3, 4, 1, 16, 16), torch.randn(3, 4, 11)
    state2 = state.clone()
    state2[:, 0] += 1.0                                       # the oldest step reaches the feature
    feat, extras = enc(depth, state, return_attention=True)
    assert isinstance(enc.pool, FrameStackMLP) and feat.shape == (3, 16)
    assert (enc(depth, state2) - feat).abs().max() > 1e-4
    torch.testing.assert_close(extras["attention"], torch.full((3, 1, 4), 0.25))
    with pytest.raises(ValueError, match=r"pool must be one of \['auto', 'attention', 'concat'\]"):
        SequenceEncoder(**opts, pool="mean")
