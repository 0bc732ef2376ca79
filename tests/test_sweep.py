"""Sweep runner and report: a 2-run sweep in a process pool, restart skips finished runs (and retries
failed and stopped ones), the sb3 baseline runner, report generation. The Ray path: tests/test_ray.py."""
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
    data = {"name": "tiny", "results": str(tmp_path / "committed"), "run_root": str(tmp_path / "runs"),
            "seeds": seeds, "overrides": TINY,
            "algorithms": {"ppo": {"kinds": kinds, "sizes": {"h8": []}}},
            "envs": {"cartpole": {"ppo": {"config": "configs/pomdp/stateless_cartpole.yaml"}}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def results_dir(tmp_path: Path) -> Path:
    """The default results folder of write_sweep's sweep: <run_root>/results."""
    return tmp_path / "runs" / "results"


def rows(tmp_path: Path, folder: Path | None = None) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in ((folder or results_dir(tmp_path)) / "runs").glob("*.json")}


def test_two_run_sweep_restart_and_report(tmp_path, capsys):
    path = write_sweep(tmp_path, ["none", "gru"], [0])
    assert sweep.main([str(path), "--workers", "2"]) == 0
    done = rows(tmp_path)
    assert sorted(done) == ["ppo__cartpole__gru__h8__s0", "ppo__cartpole__none__h8__s0"]
    for run_id, row in done.items():
        assert row["status"] == "ok" and row["frames"] == 128 and row["params"] > 0
        for key in ("final_return", "best_return", "steps_to_threshold", "seconds_to_threshold", "env_steps_per_s"):
            assert key in row
        curve = (results_dir(tmp_path) / "curves" / f"{run_id}.csv").read_text().splitlines()
        assert curve[0] == "frames,wall_s,return,length,episodes" and len(curve) >= 2
    capsys.readouterr()
    # restart: both finished runs are skipped, nothing is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in (results_dir(tmp_path) / "runs").glob("*.json")}
    assert sweep.main([str(path), "--workers", "0"]) == 0
    assert "2 finished (skipped), 0 to run" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    # a failed run is tried again on restart; a new seed adds only its own runs
    failed = results_dir(tmp_path) / "runs" / "ppo__cartpole__gru__h8__s0.json"
    failed.write_text(json.dumps({**done["ppo__cartpole__gru__h8__s0"], "status": "error", "error": "boom"}))
    path = write_sweep(tmp_path, ["none", "gru"], [0, 1])
    assert sweep.main([str(path), "--workers", "0", "--only", "gru"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 finished (skipped), 2 to run" in out           # gru s0 (failed) and gru s1 (new)
    assert rows(tmp_path)["ppo__cartpole__gru__h8__s0"]["status"] == "ok"
    assert "ppo__cartpole__gru__h8__s1" in rows(tmp_path)
    # report from this results folder
    assert report.main([str(results_dir(tmp_path))]) == 0
    text = (results_dir(tmp_path) / "report.md").read_text()
    assert "### cartpole" in text and "ppo+gru (h8)" in text and "ppo+none (h8)" in text
    assert (results_dir(tmp_path) / "curves_cartpole.png").stat().st_size > 5000


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


def test_a_run_stopped_by_sigterm_is_not_finished_and_ends_an_in_process_sweep(tmp_path, capsys, sigterm_after_log):
    """--workers 0: the sweep's SIGTERM stops the run it is in (status "stopped", no curve) and the
    sweep with it (the next run does not start); a restart runs the stopped run again."""
    from agents import ppo_memory

    path = write_sweep(tmp_path, ["none"], [0, 1])
    with sigterm_after_log(ppo_memory, 64):
        assert sweep.main([str(path), "--workers", "0"]) == 1
    assert "stopped by SIGTERM at frame 64" in capsys.readouterr().out
    run_id = "ppo__cartpole__none__h8__s0"
    assert list(rows(tmp_path)) == [run_id]
    row = rows(tmp_path)[run_id]
    assert row["status"] == "stopped" and row["frames"] == 64 and "final_return" not in row
    assert not (results_dir(tmp_path) / "curves" / f"{run_id}.csv").exists()
    assert sweep.main([str(path), "--workers", "0"]) == 0
    assert "2 runs, 0 finished (skipped), 2 to run" in capsys.readouterr().out
    assert {row["status"] for row in rows(tmp_path).values()} == {"ok"}


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


def test_default_results_folder_is_this_machines_not_the_committed_one(tmp_path, capsys):
    """A fresh clone holds the committed rows (the sweep file's `results`): the plain command must
    run the sweep into <run_root>/results, not report the committed runs as finished;
    --committed lists (and would extend) the committed folder."""
    path = write_sweep(tmp_path, ["none"], [0])
    committed = tmp_path / "committed" / "runs"
    committed.mkdir(parents=True)
    (committed / "ppo__cartpole__none__h8__s0.json").write_text(json.dumps({"status": "ok"}))
    assert sweep.main([str(path), "--list"]) == 0
    out_text = capsys.readouterr().out
    assert f"1 runs, 0 finished (skipped), 1 to run -> {results_dir(tmp_path)}" in out_text
    assert "todo ppo__cartpole__none__h8__s0" in out_text
    assert sweep.main([str(path), "--committed", "--list"]) == 0
    out_text = capsys.readouterr().out
    assert f"1 finished (skipped), 0 to run -> {tmp_path / 'committed'}" in out_text
    assert "done ppo__cartpole__none__h8__s0" in out_text
    assert sweep.main([str(path), "--committed", "--out", str(tmp_path / "x")]) == 2
    assert "give one" in capsys.readouterr().err


def test_runs_of_a_missing_optional_package_are_skipped_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sweep.REQUIRES, "sb3_recurrent_ppo", ("no_such_module_for_this_test", "pip install it"))
    path = write_sweep(tmp_path, ["none"], [0])
    data = yaml.safe_load(path.read_text())
    data["algorithms"]["sb3_recurrent_ppo"] = {"kinds": ["lstm"]}
    data["envs"]["cartpole"]["sb3_recurrent_ppo"] = {"overrides": ["train.total_frames=512"]}
    data["seeds"] = [0, 1]
    path.write_text(yaml.safe_dump(data))
    assert sweep.main([str(path), "--workers", "0"]) == 0         # the ppo runs ran, nothing failed
    text = capsys.readouterr().out
    assert "4 runs, 0 finished (skipped), 2 to run" in text
    skip = [line for line in text.splitlines() if line.startswith("skipping")]
    assert skip == ["skipping 2 sb3_recurrent_ppo run(s): the optional package no_such_module_for_this_test is "
                    "not installed (pip install it)"]
    assert sorted(rows(tmp_path)) == ["ppo__cartpole__none__h8__s0", "ppo__cartpole__none__h8__s1"]
    assert sweep.main([str(path), "--list"]) == 0
    assert "skip sb3_recurrent_ppo__cartpole__lstm__default__s0" in capsys.readouterr().out
