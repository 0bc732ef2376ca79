"""Sweep runner and report: a 2-run sweep in a process pool, restart skips finished runs (and retries
failed ones), the sb3 baseline runner, report generation. The Ray path: tests/test_ray.py."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from benchmarks import report, sweep
from networks import MEMORY_KINDS

TINY = ["threads=1", "logger=none", "env.num_envs=4", "model.embed=8", "model.hidden=8", "model.head_hidden=8",
        "ppo.slice_len=8", "ppo.minibatch_size=32", "ppo.epochs=1", "train.frames_per_batch=64",
        "train.total_frames=128", "train.eval_episodes=2"]


def write_sweep(tmp_path: Path, kinds, seeds) -> Path:
    data = {"name": "tiny", "results": str(tmp_path / "results"), "run_root": str(tmp_path / "runs"),
            "seeds": seeds, "overrides": TINY,
            "algorithms": {"ppo": {"kinds": kinds, "sizes": {"h8": []}}},
            "envs": {"cartpole": {"ppo": {"config": "configs/pomdp/stateless_cartpole.yaml"}}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rows(tmp_path: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")}


def test_two_run_sweep_restart_and_report(tmp_path, capsys):
    path = write_sweep(tmp_path, ["none", "gru"], [0])
    assert sweep.main([str(path), "--workers", "2"]) == 0
    done = rows(tmp_path)
    assert sorted(done) == ["ppo__cartpole__gru__h8__s0", "ppo__cartpole__none__h8__s0"]
    for run_id, row in done.items():
        assert row["status"] == "ok" and row["frames"] == 128 and row["params"] > 0
        for key in ("final_return", "best_return", "steps_to_threshold", "seconds_to_threshold", "env_steps_per_s"):
            assert key in row
        curve = (tmp_path / "results" / "curves" / f"{run_id}.csv").read_text().splitlines()
        assert curve[0] == "frames,wall_s,return,length,episodes" and len(curve) >= 2
    capsys.readouterr()
    # restart: both finished runs are skipped, nothing is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").glob("*.json")}
    assert sweep.main([str(path), "--workers", "0"]) == 0
    assert "2 finished (skipped), 0 to run" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    # a failed run is tried again on restart; a new seed adds only its own runs
    failed = tmp_path / "results" / "runs" / "ppo__cartpole__gru__h8__s0.json"
    failed.write_text(json.dumps({**done["ppo__cartpole__gru__h8__s0"], "status": "error", "error": "boom"}))
    path = write_sweep(tmp_path, ["none", "gru"], [0, 1])
    assert sweep.main([str(path), "--workers", "0", "--only", "gru"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 finished (skipped), 2 to run" in out           # gru s0 (failed) and gru s1 (new)
    assert rows(tmp_path)["ppo__cartpole__gru__h8__s0"]["status"] == "ok"
    assert "ppo__cartpole__gru__h8__s1" in rows(tmp_path)
    # report from this results folder
    assert report.main([str(tmp_path / "results")]) == 0
    text = (tmp_path / "results" / "report.md").read_text()
    assert "### cartpole" in text and "ppo+gru (h8)" in text and "ppo+none (h8)" in text
    assert (tmp_path / "results" / "curves_cartpole.png").stat().st_size > 5000


def test_bad_sweep_files_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"algorithms": {"dqn": {}}, "envs": {"x": {"dqn": {}}}}))
    assert sweep.main([str(path)]) == 2
    assert "algorithms.dqn" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"algorithms": {"ppo": {"kind": ["gru"]}}, "envs": {"x": {"ppo": {}}}}))
    assert sweep.main([str(path)]) == 2
    assert "algorithms.ppo" in capsys.readouterr().err


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    path = write_sweep(tmp_path, ["none"], [0])
    data = yaml.safe_load(path.read_text())
    data["overrides"] = TINY + ["ppo.slice_len=7"]           # inconsistent: 16 steps per env
    path.write_text(yaml.safe_dump(data))
    assert sweep.main([str(path), "--workers", "0"]) == 1
    row = rows(tmp_path)["ppo__cartpole__none__h8__s0"]
    assert row["status"] == "error" and "ppo.slice_len" in row["error"]


def test_shipped_sweep_file_expands():
    root = Path(__file__).resolve().parents[1]
    specs = sweep.expand(sweep.load_sweep(root / "configs/sweeps/pomdp_ppo.yaml"))
    kinds = {s["kind"] for s in specs if s["algorithm"] == "ppo"}
    assert kinds == set(MEMORY_KINDS)
    assert len({s["env"] for s in specs}) >= 4 and len({s["seed"] for s in specs}) >= 3


@pytest.mark.skipif(importlib.util.find_spec("sb3_contrib") is None,
                    reason="sb3-contrib is not installed; the RecurrentPPO baseline runner is untested here")
def test_sb3_baseline_runner():
    from benchmarks import sb3_baseline

    result = sb3_baseline.run(["threads=1", "train.total_frames=512", "train.eval_episodes=2", "max_steps=50"])
    assert result["frames"] >= 512 and result["params"] > 0 and result["curve"]
    assert 0 < result["final_return"] <= 1.0 and result["final_return_raw"] <= 50
