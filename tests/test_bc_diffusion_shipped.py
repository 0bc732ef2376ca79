"""The README's shipped Mamba Policy (pick_place, mamba1 without attention, 14,400 GPU steps), guarded
against env or network changes that would silently break it: the float16 export through the public
eval command, no dataset. Measured on env seeds 100001-100002: 2/2 (200 episodes from 100000:
55.5%; the export acts in float16, so one episode may flip on another CPU)."""
import json
from pathlib import Path

import pytest

from agents.bc_diffusion import main

EXPORT = Path(__file__).resolve().parents[1] / "agents" / "policies" / "manipulation" / "pick_place_mamba1_noattn_14400.pt"


def test_the_shipped_pick_place_policy_places_the_cube(tmp_path):
    assert main(["eval", str(EXPORT), "--episodes", "2", "--seed", "100001", "--no-video", "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("eval_*.json")).read_text())
    assert result["task"] == "pick_place" and result["step"] == 14400 and result["episodes"] == 2
    assert result["success_rate"] >= 0.5, result
    rows = json.loads((tmp_path / "episodes.json").read_text())            # per episode, as nav's eval
    assert [r["seed"] for r in rows] == [100001, 100002]
    assert sum(r["success"] for r in rows) / 2 == result["success_rate"]
    assert sum(r["steps"] for r in rows) / 2 == result["mean_episode_length"]


def test_failure_probe_agrees_with_eval_and_classifies_by_cube_height(tmp_path):
    """benchmarks/bc_diffusion_failures.py runs the agent's own rollout: its 'placed' episodes are
    eval's successes on the same seeds (100004 not placed, 100005 placed, as measured); the thresholds
    sort the cube's height trace into grasp / lift / place failures."""
    from benchmarks.bc_diffusion_failures import OUTCOMES, classify
    from benchmarks.bc_diffusion_failures import main as failures_main

    assert main(["eval", str(EXPORT), "--episodes", "2", "--seed", "100004", "--no-video", "--out", str(tmp_path)]) == 0
    success = json.loads(next(tmp_path.glob("eval_*.json")).read_text())["success_rate"]
    out = tmp_path / "failures.json"
    assert failures_main([str(EXPORT), "--episodes", "2", "--seed", "100004", "--out", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"].values()
    assert run["denoiser"] == "mamba1_noattn" and len(run["episodes"]) == 2
    assert sum(r["outcome"] == "placed" for r in run["episodes"]) / 2 == success
    for r in run["episodes"]:                                              # a placed cube ends over the bin
        assert r["end_over_bin"] or r["outcome"] != "placed"
        assert r["end_finger_width_m"] >= 0.0 and r["end_rise_m"] <= r["max_rise_m"]
    z0 = 0.02
    assert classify([z0, z0 + 0.005], False, 0.05) == OUTCOMES[1]           # never off the table
    assert classify([z0, z0 + 0.03, z0], False, 0.05) == OUTCOMES[2]        # lifted, dropped below the walls
    assert classify([z0, z0 + 0.08, z0], False, 0.05) == OUTCOMES[3]        # over the walls, missed the bin
    assert classify([z0, z0], True, 0.05) == OUTCOMES[0]


def test_failure_probe_names_a_missing_run(tmp_path):
    from benchmarks.bc_diffusion_failures import main as failures_main

    with pytest.raises(SystemExit, match="no_such_run: no such run directory or file"):
        failures_main([str(tmp_path / "no_such_run")])
