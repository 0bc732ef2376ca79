"""benchmarks/bc_diffusion_fit_probe.py's decayall control (issue 20: does excluding A_log / D / dt
bias from weight decay matter?): with no weight decay it must train exactly like the default groups
(same batches, noise, init), with weight decay it must move the SSM parameters differently."""
import json

import pytest

from benchmarks.bc_diffusion_fit_probe import main
from test_bc_diffusion import synthetic_dataset  # rootdir-relative, as pytest runs tests/


def probe(tmp_path, data, wd, name):
    out = tmp_path / f"{name}.json"
    assert main([str(data), "--model", "mamba1:16,32", "--model", "mamba1:16,32:decayall", "--steps", "4",
                 "--batch", "4", "--warmup", "1", "--every", "2", "--lr", "1e-2", "--weight-decay", str(wd),
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    return res["mamba1:16,32"], res["mamba1:16,32:decayall"]


def test_decayall_equals_the_groups_without_decay_and_differs_with_it(tmp_path):
    data = synthetic_dataset(tmp_path / "push", episodes=2, length=24)
    kept, decayed = probe(tmp_path, data, 0.0, "wd0")
    assert [r["eval_loss"] for r in kept["rows"]] == [r["eval_loss"] for r in decayed["rows"]]
    assert kept["ssm_params_mean_abs_change"] == decayed["ssm_params_mean_abs_change"] > 0
    kept, decayed = probe(tmp_path, data, 10.0, "wd10")         # lr x wd = 0.1 a step: a visible pull
    assert decayed["ssm_params_mean_abs_change"] > kept["ssm_params_mean_abs_change"]


def test_unknown_model_flag_is_refused_before_the_dataset_is_read(tmp_path):
    with pytest.raises(SystemExit, match="unknown flag.*allowed: noattn, decayall"):
        main([str(tmp_path / "no_such_dataset"), "--model", "mamba1:16,32:decay", "--steps", "1"])
