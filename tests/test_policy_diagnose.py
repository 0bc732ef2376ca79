"""benchmarks/td3_policy_diagnose.py's measures on matrices whose answer is known."""
import torch

from benchmarks.td3_policy_diagnose import TAU, dormant_fraction, srank


def test_dormant_fraction_counts_units_below_tau_of_the_layer_mean():
    acts = torch.rand(500, 8) + 0.5
    acts[:, 1] = 0.0                                   # dead
    acts[:, 5] = 0.5 * TAU * acts[:, [0, 2, 3]].mean()  # active, but far below tau x the layer's mean
    assert dormant_fraction(acts) == 2 / 8
    assert dormant_fraction(torch.rand(500, 8) + 0.5) == 0.0


def test_srank_is_the_rank_of_a_well_conditioned_low_rank_matrix():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(400, 3, generator=g) @ torch.randn(3, 64, generator=g)
    assert srank(low) == 3
    assert srank(torch.randn(400, 64, generator=g)) > 50        # full rank: most of the 64 directions
