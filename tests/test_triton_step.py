"""networks.ssm.triton_step (the Mamba1 and Mamba2 acting steps as fused Triton kernels) == the mixers'
PyTorch steps.

Same two modes as test_triton_scan.py: ``cuda`` (marked cuda) and ``cpu`` (Triton's interpreter, run by
test_triton_scan.test_interpreter_mode in a child process with TRITON_INTERPRET=1). The oracle is
``Mamba1Mixer.step`` / ``Mamba2Mixer.step`` with use_kernels=False (the PyTorch step) on the same float32 inputs; tolerance
1e-5 of the largest reference entry (a wrong tap, shift, softplus or gate is off by O(0.1)).
"""
import pytest
import torch

from networks.ssm import kernels
from networks.ssm.mamba1 import Mamba1Mixer
from networks.ssm.mamba2 import Mamba2Mixer
from test_triton_scan import DEVICES, close  # same two modes (rootdir-relative import, as pytest runs tests/)

TOL = 1e-5


def _two_chained_steps(m, fused_step, conv, ssm, device):
    """The mixer's PyTorch step (m.step, use_kernels=False) and ``fused_step`` from the same states, twice
    (the new states feed the next step, as an actor's do): outputs and both states agree."""
    c_ref, s_ref, c, s = conv, ssm, conv.clone(), ssm.clone()
    given = (c, s)
    with torch.no_grad():
        for t in range(2):
            x = torch.randn(conv.shape[0], m.d_model, device=device)
            y_ref, c_ref, s_ref = m.step(x, c_ref, s_ref)
            y, c, s = fused_step(m, x, c, s)
            close(y, y_ref, TOL, f"y at step {t}")
            close(c, c_ref, TOL, f"conv state at step {t}")
            close(s, s_ref, TOL, f"ssm state at step {t}")
    # the states handed in are not written in place (an actor may keep them): new tensors come back
    assert torch.equal(given[0], conv) and torch.equal(given[1], ssm)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d_model,d_state,d_conv,batch", [(8, 3, 4, 3), (40, 16, 2, 2), (24, 5, 3, 1)])
def test_step_matches_the_pytorch_step(device, d_model, d_state, d_conv, batch):
    """Non-power-of-2 d_state and dt_rank (masked tiles), d_inner past one program's channels (40 -> 80,
    BD_SSM 32), every conv width the mixers use, random carried states; twice in a row (the new states
    feed the next step as an actor's do)."""
    from networks.ssm import triton_step

    torch.manual_seed(0)
    m = Mamba1Mixer(d_model, d_state=d_state, d_conv=d_conv, use_kernels=False).to(device)
    with torch.no_grad():
        m.dt_proj.bias.add_(torch.randn_like(m.dt_proj.bias) * 3)     # softplus on both sides of its threshold
        m.dt_proj.bias[0] = 25.0
    conv = torch.randn(batch, m.d_inner, d_conv - 1, device=device)
    ssm = torch.randn(batch, m.d_inner, d_state, device=device)
    _two_chained_steps(m, triton_step.mamba1_step, conv, ssm, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d_model,d_state,headdim,ngroups,batch", [(16, 8, 8, 1, 2), (24, 5, 6, 2, 3), (32, 16, 16, 4, 1)])
def test_mamba2_step_matches_the_pytorch_step(device, d_model, d_state, headdim, ngroups, batch):
    """Heads sharing a group's B/C (H / G heads a group), non-power-of-2 d_state and headdim (masked
    tiles), the group RMSNorm after the gate; two chained steps from random states."""
    from networks.ssm import triton_step

    torch.manual_seed(0)
    m = Mamba2Mixer(d_model, d_state=d_state, headdim=headdim, ngroups=ngroups, use_kernels=False).to(device)
    with torch.no_grad():
        m.dt_bias.add_(torch.randn_like(m.dt_bias) * 3)
        m.dt_bias[0] = 25.0
        m.norm_weight.mul_(torch.rand_like(m.norm_weight) + 0.5)
    shapes = m.state_shapes()
    conv = torch.randn(batch, *shapes["conv"], device=device)
    ssm = torch.randn(batch, *shapes["ssm"], device=device)
    _two_chained_steps(m, triton_step.mamba2_step, conv, ssm, device)


def test_a_bad_step_path_names_the_variable(monkeypatch):
    monkeypatch.setenv("MAMBAZOO_MAMBA_STEP", "fused")
    with pytest.raises(ValueError, match="MAMBAZOO_MAMBA_STEP must be one of triton, mamba_ssm, torch, got 'fused'"):
        kernels.step_path("auto", torch.zeros(1, 4), "Mamba1 acting step")


def test_the_step_path_is_pytorch_on_cpu_whatever_is_asked(monkeypatch):
    monkeypatch.setenv("MAMBAZOO_MAMBA_STEP", "triton")
    assert kernels.step_path("auto", torch.zeros(1, 4), "Mamba1 acting step") == "torch"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["mamba1", "mamba2"])
def test_the_mixer_takes_the_triton_step_by_default_and_only_without_grad(monkeypatch, kind):
    from networks.ssm import triton_step

    calls = []
    name = f"{kind}_step"
    real = getattr(triton_step, name)
    monkeypatch.setattr(triton_step, name, lambda *a: calls.append(1) or real(*a))
    m = (Mamba1Mixer(16, d_state=4) if kind == "mamba1" else Mamba2Mixer(16, d_state=8, headdim=8)).cuda()
    x = torch.randn(2, 16, device="cuda")
    conv, ssm = (torch.zeros(2, *shape, device="cuda") for shape in m.state_shapes().values())
    with torch.no_grad():
        m.step(x, conv, ssm)
    assert len(calls) == 1                                      # the default
    m.step(x, conv, ssm)                                        # grad enabled: no backward there
    assert len(calls) == 1
    for other in ("mamba_ssm", "torch"):
        monkeypatch.setenv("MAMBAZOO_MAMBA_STEP", other)
        with torch.no_grad():
            m.step(x, conv, ssm)
    assert len(calls) == 1


@pytest.mark.parametrize("forced,grad,triton_ok,ssm_ok,expect", [
    (None, False, True, True, "triton"), (None, True, True, True, "mamba_ssm"), (None, False, False, True, "mamba_ssm"),
    (None, False, False, False, "torch"), ("mamba_ssm", False, True, True, "mamba_ssm"),
    ("mamba_ssm", False, True, False, "torch"), ("torch", False, True, True, "torch"),
    ("triton", True, True, False, "torch"), ("triton", False, True, False, "triton")])
def test_step_path_order(monkeypatch, forced, grad, triton_ok, ssm_ok, expect):
    """kernels.step_path on a CUDA tensor (stood in for on the CPU): the Triton step by default where
    triton imports and autograd is off, else mamba-ssm when built, else PyTorch; the variable forces."""
    class CudaLike:
        is_cuda = True

    if forced:
        monkeypatch.setenv("MAMBAZOO_MAMBA_STEP", forced)
    else:
        monkeypatch.delenv("MAMBAZOO_MAMBA_STEP", raising=False)
    monkeypatch.setattr(kernels, "_triton_available", lambda _mod: triton_ok)
    monkeypatch.setattr(kernels, "wanted", lambda _uk, _x: ssm_ok)
    with torch.set_grad_enabled(grad):
        assert kernels.step_path("auto", CudaLike(), "a test step") == expect
