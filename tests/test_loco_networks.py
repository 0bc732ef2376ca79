"""LocoEncoder: shapes over any batch dims, what each input contributes, fusion types, errors."""
import pytest
import torch

from networks.models.loco_encoder import LocoEncoder
from networks.params import parameter_table

SMALL = dict(hidden_shapes=[16], visual_dim=16, transformer_params=[[2, 32]], mamba_params=[[16, 4, 4, 2]],
             append_hidden_shapes=[24])


def make(fusion="mamba", **kw):
    torch.manual_seed(0)
    return LocoEncoder(10, 4, 64, fusion=fusion, **{**SMALL, **kw})


@pytest.mark.parametrize("fusion", ["mamba", "transformer"])
@pytest.mark.parametrize("batch", [(), (5,), (3, 7)])
def test_shapes_over_any_batch_dims(fusion, batch):
    for vision_only in (False, True):
        enc = make(fusion, vision_only=vision_only)
        out = enc(torch.randn(*batch, 10), torch.rand(*batch, 4, 64, 64))
        assert out.shape == (*batch, 24) and enc.out_dim == 24


@pytest.mark.parametrize("fusion", ["mamba", "transformer"])
def test_inputs_matter_as_designed(fusion):
    proprio, depth = torch.randn(2, 10), torch.rand(2, 4, 64, 64)
    full, vision = make(fusion), make(fusion, vision_only=True)
    other = proprio + 1.0
    assert not torch.allclose(full(proprio, depth), full(other, depth))
    torch.testing.assert_close(vision(proprio, depth), vision(other, depth))   # proprio ignored
    patched = depth.clone()
    patched[..., :32, :32] = 0.0                                                # one quadrant
    for enc in (full, vision):
        assert not torch.allclose(enc(proprio, depth), enc(proprio, patched))


@pytest.mark.parametrize("fusion", ["mamba", "transformer"])
def test_batch_rows_are_independent(fusion):
    enc = make(fusion)
    proprio, depth = torch.randn(4, 10), torch.rand(4, 4, 64, 64)
    together = enc(proprio, depth)
    alone = torch.cat([enc(proprio[i:i + 1], depth[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_fusion_layers_are_what_they_say():
    mamba, transformer = make("mamba"), make("transformer")
    assert any("A_log" in n for n, _ in mamba.named_parameters())
    assert not any("in_proj_weight" in n for n, _ in mamba.named_parameters())
    assert any("in_proj_weight" in n for n, _ in transformer.named_parameters())
    # no fusion layers at all is allowed (pooling straight from the tokens)
    assert make("mamba", mamba_params=[])(torch.randn(10), torch.rand(4, 64, 64)).shape == (24,)


@pytest.mark.parametrize("fusion", ["mamba", "transformer"])
def test_gradients_reach_every_parameter(fusion):
    for vision_only in (False, True):
        enc = make(fusion, vision_only=vision_only)
        enc(torch.randn(3, 10), torch.rand(3, 4, 64, 64)).square().sum().backward()
        assert hasattr(enc, "proprio") != vision_only
        for name, p in enc.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_image_size_and_argument_errors():
    enc = LocoEncoder(10, 2, 40, **SMALL)
    assert enc.depth.grid == 1 and enc(torch.randn(10), torch.rand(2, 40, 40)).shape == (24,)
    with pytest.raises(ValueError, match="image_size 20"):
        LocoEncoder(10, 4, 20, **SMALL)
    with pytest.raises(ValueError, match="fusion must be one of"):
        make("gru")
    with pytest.raises(ValueError, match=r"n_heads dividing visual_dim 16"):
        make("transformer", transformer_params=[[3, 32]])
    with pytest.raises(ValueError, match=r"\[d_model, d_state, d_conv, expand\]"):
        make("mamba", mamba_params=[[16, 4, 4]])
    with pytest.raises(ValueError, match="n_heads"):
        make("transformer", transformer_params=[[0, 32]])


def test_parameter_table_lists_parts_and_total():
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)
    table = parameter_table({"encoder": a, "value head": b})
    lines = table.splitlines()
    assert [l.split()[0] for l in lines] == ["encoder", "value", "total"]
    assert lines[-1].split()[-1] == f"{16 + 5:,d}"
