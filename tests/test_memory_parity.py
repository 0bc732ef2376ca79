"""The invariant, for every kind: step-by-step with resets == one sequence-mode call.

200 random reset patterns per kind and dtype here; `python -m benchmarks.parity
--patterns 1000` runs the long version.
"""
import pytest
import torch

import networks.ssm.causal_conv as causal_conv
from networks.memory import parity
from networks import MEMORY_KINDS

PATTERNS = 200


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_step_equals_sequence_over_random_resets(kind, dtype):
    (failures, worst), = parity.run([kind], PATTERNS, dtype, seed=1, verbose=False).values()
    assert failures == 0, f"{kind}: {failures}/{PATTERNS} patterns differ, worst {worst:.2e}"


@pytest.mark.parametrize("kind", ["mamba1", "mamba2"])
def test_parity_check_catches_a_conv_that_ignores_resets(kind, monkeypatch):
    """The harness has teeth: a conv that lets taps cross episode boundaries fails it."""
    monkeypatch.setattr(causal_conv, "segment_ids", lambda is_init: torch.zeros_like(is_init, dtype=torch.long))
    (failures, _), = parity.run([kind], 20, torch.float64, seed=1, verbose=False).values()
    assert failures > 0


def test_parity_check_catches_a_scan_that_ignores_resets(monkeypatch):
    import networks.ssm.mamba1 as m1

    real = m1.selective_scan_chunked
    monkeypatch.setattr(m1, "selective_scan_chunked",
                        lambda u, d, A, B, C, D, h0, is_init, chunk_size: real(
                            u, d, A, B, C, D, h0, torch.zeros_like(is_init), chunk_size))
    (failures, _), = parity.run(["mamba1"], 20, torch.float64, seed=1, verbose=False).values()
    assert failures > 0


def test_parity_script_cli_reports_counts(capsys):
    from benchmarks import parity as parity_cli   # the command line over the harness

    assert parity_cli.main(["--patterns", "3", "--kinds", "mamba2", "gru"]) == 0
    assert "6 passed, 0 failed" in capsys.readouterr().out
