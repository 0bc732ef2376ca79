"""Issue 18, "nothing lost, nothing executed": no unpickling of run or data files, a crash-consistent
TD3 replay, exact TD3 resume, overrides checked against the checkpoint, locks on runs and sweep
results, late checks moved before any directory exists, metrics truncated on resume, no predictable
temp files, and a fallback over checkpoints that do not load."""
import fcntl
import glob
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents import vmamba_td3
from agents.runtime import replay_io
from agents.runtime.run_dir import RunDir, differing_entries, flatten_state

REPO = Path(__file__).resolve().parents[1]
PENDULUM = "configs/pendulum/td3_mamba.yaml"
TINY = ["replay.batch_size=8", "replay.seq_len=4", "replay.size=2000", "train.learning_starts=100",
        "train.frames_per_batch=50", "train.updates_per_step=0.2", "train.eval_episodes=1",
        "model.memory_hidden=8", "model.hidden_dim=16", "train.checkpoint_every_frames=100"]


class Crash(BaseException):
    """A simulated kill: nothing in the agent catches a BaseException that is not an Exception."""


class Planted:
    """A pickle whose loading creates ``marker``: proof that something unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Planted(marker)))
    return path


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny pendulum TD3 run to 200 frames: checkpoints (and replay folders) at 100 and 200."""
    root = tmp_path_factory.mktemp("td3base")
    assert vmamba_td3.main(["--config", PENDULUM, *TINY, "train.total_frames=200", f"run_root={root}", "name=b"]) == 0
    (run,) = glob.glob(str(root / "vmamba_td3" / "*"))
    return Path(run)


def copy_run(base_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def differing(a: dict, b: dict, skip=("/config/name", "/config/run_root")) -> list:
    assert set(flatten_state(a)) == set(flatten_state(b))
    return differing_entries(a, b, skip)


# ---- 1. nothing executed ---------------------------------------------------------------------
@pytest.mark.parametrize("where", ["replay/prefetch.pkl", "replay/000000000200/prefetch.pkl",
                                   "replay/000000000200/storage/other.pickle"])
def test_td3_resume_refuses_a_planted_pickle_and_never_runs_it(base_run, tmp_path, capsys, where):
    run = copy_run(base_run, tmp_path)
    marker = tmp_path / "executed"
    bad = plant(run / where, marker)
    capsys.readouterr()
    rc = vmamba_td3.main(["--resume", str(run), "train.total_frames=300"])
    assert not marker.exists(), "the planted pickle was executed"
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "pickle" in err


def test_manip_dataset_refuses_a_planted_other_pickle(tmp_path):
    """tensordict unpickles <key>/other.pickle of a non-tensor entry (a NonTensorData folder) while
    memory-mapping: a dataset someone else made could run code on `info` or `train`."""
    import warnings

    from tensordict import NonTensorData, TensorDict

    import agents.manipulation.data as md

    data = tmp_path / "ds" / "data"
    TensorDict({"x": torch.zeros(3), "note": NonTensorData("hello", batch_size=[3])}, [3]).memmap(prefix=data)
    (data / "dataset.json").write_text(json.dumps({"format": md.FORMAT, "version": md.VERSION, "episodes": []}))
    marker = tmp_path / "executed"
    bad = plant(data / "note" / "other.pickle", marker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            md.load_dataset(tmp_path / "ds")
            error = None
        except md.DatasetError as err:
            error = str(err)
    assert not marker.exists(), "the planted pickle was executed"
    assert error is not None and "pickle" in error and str(bad) in error


# ---- 2. a crash-consistent replay --------------------------------------------------------------
def _crash_at(monkeypatch, stage: str):
    """Make the save at frame 300 die at ``stage``; earlier saves are untouched."""
    from agents.runtime import run_dir

    real_save, real_replace, real_prune = torch.save, os.replace, replay_io.prune
    real_fsync, real_dumps = replay_io.os.fsync, replay_io.json.dumps
    state = {"frame": None, "fsyncs": 0}
    real_replay_save = replay_io.save

    def replay_save(replay, root, frame):
        state["frame"] = frame
        return real_replay_save(replay, root, frame)

    monkeypatch.setattr(replay_io, "save", replay_save)
    armed = lambda: state["frame"] == 300  # noqa: E731

    if stage == "mid_replay_column":
        def fsync(fd):
            if armed():
                state["fsyncs"] += 1
                if state["fsyncs"] == 2:
                    raise Crash(stage)
            return real_fsync(fd)
        monkeypatch.setattr(replay_io.os, "fsync", fsync)
    elif stage == "before_manifest":
        monkeypatch.setattr(replay_io.json, "dumps",
                            lambda *a, **k: (_ for _ in ()).throw(Crash(stage)) if armed() else real_dumps(*a, **k))
    elif stage == "mid_checkpoint":
        def save(obj, f, *a, **k):
            if armed():
                f.write(b"PK\x03\x04half a zip")
                raise Crash(stage)
            return real_save(obj, f, *a, **k)
        monkeypatch.setattr(run_dir.torch, "save", save)
    elif stage == "before_rename":
        def replace(src, dst):
            if armed() and str(dst).endswith(".pt"):
                raise Crash(stage)
            return real_replace(src, dst)
        monkeypatch.setattr(run_dir.os, "replace", replace)
    elif stage == "before_prune":
        monkeypatch.setattr(replay_io, "prune", lambda *a: (_ for _ in ()).throw(Crash(stage)) if armed()
                            else real_prune(*a))


@pytest.mark.parametrize("stage", ["mid_replay_column", "before_manifest", "mid_checkpoint", "before_rename",
                                   "before_prune"])
def test_a_kill_at_any_stage_of_a_save_leaves_a_checkpoint_and_its_replay(base_run, tmp_path, monkeypatch, stage):
    from agents.runtime.cli import latest_loadable

    run = copy_run(base_run, tmp_path)
    with monkeypatch.context() as m:
        _crash_at(m, stage)
        with pytest.raises(Crash):
            vmamba_td3.main(["--resume", str(run), "train.total_frames=300"])
    rd = RunDir(run)
    ckpt, state = latest_loadable(rd, vmamba_td3.validate_checkpoint)
    assert state["frames"] in (200, 300) and (state["frames"] == 300) == (stage == "before_prune")
    assert state["replay"]["dir"] == replay_io.folder_name(state["frames"])
    replay = vmamba_td3.make_replay(vmamba_td3.from_dict(vmamba_td3.Config, state["config"]))
    assert replay_io.load(replay, run / "replay", state["replay"]) == state["frames"]   # the steps to that frame
    # the next resume continues from there and leaves only the kept checkpoints' replay folders
    assert vmamba_td3.main(["--resume", str(run), "train.total_frames=300"]) == 0
    final = RunDir.load_checkpoint(rd.latest_checkpoint())
    assert final["frames"] == 300 and final["replay"]["rows"] == 300
    names = {p.name for p in (run / "replay").iterdir()}
    assert names == {replay_io.folder_name(s) for s, _ in rd._checkpoint_files()}


def test_a_truncated_replay_is_detected_not_loaded_as_zeros(base_run, tmp_path, capsys):
    run = copy_run(base_run, tmp_path)
    folder = run / "replay" / replay_io.folder_name(200)
    col = sorted(folder.glob("*.bin"), key=lambda p: p.stat().st_size)[-1]
    col.write_bytes(col.read_bytes()[: col.stat().st_size // 2])
    capsys.readouterr()
    # the latest checkpoint's replay is truncated: resume falls back to the one before, saying so
    assert vmamba_td3.main(["--resume", str(run), "train.total_frames=200"]) == 0
    captured = capsys.readouterr()
    assert str(col) in captured.err and "truncated" in captured.err
    assert "resumed at frame 100" in captured.out
    # every replay truncated: exit 2 naming the files
    for p in (run / "replay").glob("*/*.bin"):
        p.write_bytes(b"")
    assert vmamba_td3.main(["--resume", str(run), "train.total_frames=300"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint loads" in err and str(run / "replay" / replay_io.folder_name(100)) in err


def test_an_altered_replay_column_is_refused_by_its_checksum(base_run, tmp_path, capsys):
    run = copy_run(base_run, tmp_path)
    state = RunDir.load_checkpoint(RunDir(run).latest_checkpoint())
    folder = run / "replay" / state["replay"]["dir"]
    col = sorted(folder.glob("*.bin"))[0]
    raw = bytearray(col.read_bytes())
    raw[0] ^= 0xFF
    col.write_bytes(bytes(raw))
    replay = vmamba_td3.make_replay(vmamba_td3.from_dict(vmamba_td3.Config, state["config"]))
    with pytest.raises(replay_io.ReplayError, match="sha256"):
        replay_io.load(replay, run / "replay", state["replay"])
    assert len(replay) == 0
    # --resume skips that checkpoint (naming the file) for the one before
    assert vmamba_td3.main(["--resume", str(run), "train.total_frames=200"]) == 0
    captured = capsys.readouterr()
    assert str(col) in captured.err and "resumed at frame 100" in captured.out


def test_the_saved_replay_holds_only_the_filled_rows_of_the_columns_an_update_reads(base_run):
    state = RunDir.load_checkpoint(RunDir(base_run).latest_checkpoint())
    folder = base_run / "replay" / state["replay"]["dir"]
    manifest = json.loads((folder / "manifest.json").read_text())
    keys = {"/".join(c["key"]) for c in manifest["columns"]}
    assert keys == {"observation", "next/observation", "action", "next/reward", "next/done", "next/terminated",
                    "episode"}
    assert all(c["shape"][0] == 200 for c in manifest["columns"])          # rows stored, not replay.size
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 12_000, size                                             # ~36 bytes a step


# ---- 3. exact resume ------------------------------------------------------------------------------
def test_td3_killed_and_resumed_equals_the_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch, capsys):
    """Run A: 300 frames straight. Run B: killed at frame 250 (after logging it, 50 frames past its
    checkpoint at 200), then resumed to 300. Every tensor and number of the final checkpoints, the
    replay and the CSV metrics (but wall-clock times) are the same; no step is logged twice."""
    args = ["--config", PENDULUM, *TINY, "train.total_frames=300"]
    assert vmamba_td3.main([*args, f"run_root={tmp_path / 'a'}", "name=a"]) == 0
    real_log = vmamba_td3.log_scalars

    def dying_log(logger, scalars, step):
        real_log(logger, scalars, step)
        if step == 250:
            raise Crash("kill -9")

    import random

    import numpy as np

    random.seed(98765)                    # as a fresh process would start: python/numpy streams elsewhere
    np.random.seed(4321)
    with monkeypatch.context() as m:
        m.setattr(vmamba_td3, "log_scalars", dying_log)
        with pytest.raises(Crash):
            vmamba_td3.main([*args, f"run_root={tmp_path / 'b'}", "name=b"])
    (b,) = glob.glob(str(tmp_path / "b" / "vmamba_td3" / "*"))
    assert RunDir(b).latest_checkpoint().name == "ckpt_000000000200.pt"
    assert vmamba_td3.main(["--resume", b]) == 0
    (a,) = glob.glob(str(tmp_path / "a" / "vmamba_td3" / "*"))
    sa, sb = (RunDir.load_checkpoint(RunDir(p).latest_checkpoint()) for p in (a, b))
    assert sa["frames"] == sb["frames"] == 300
    assert differing(sa, sb) == []
    assert sa["replay"]["manifest_sha256"] == sb["replay"]["manifest_sha256"]
    for csv in sorted(Path(a, "metrics", "scalars").rglob("*.csv")):
        rel = csv.relative_to(a)
        if "time" in rel.parts:
            continue
        rows_a, rows_b = csv.read_text().splitlines(), (Path(b) / rel).read_text().splitlines()
        assert rows_a == rows_b, rel          # same values, and each step once (truncated on resume)


# ---- 4. overrides checked against the checkpoint ----------------------------------------------------
@pytest.mark.parametrize("override,key", [("model.hidden_dim=32", "model.hidden_dim"),
                                          ("replay.seq_len=2", "replay.seq_len"),
                                          ("env.id=Pendulum-v1", "env.id")])
def test_resume_overrides_that_do_not_fit_the_checkpoint_exit_2_with_config_untouched(base_run, tmp_path, capsys,
                                                                                     override, key):
    run = copy_run(base_run, tmp_path)
    before = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert vmamba_td3.main(["--resume", str(run), override]) == 2
    assert f"config key '{key}'" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == before


def test_a_checkpoint_older_than_a_config_key_resumes_with_its_default_and_keeps_it(base_run, tmp_path, capsys):
    """A checkpoint written before a frozen-section key existed (model.pool, added 2026-12-03) was
    trained with that key's default: it resumes, and an override of the key is still refused."""
    run = copy_run(base_run, tmp_path)
    for ckpt in (run / "checkpoints").glob("ckpt_*.pt"):
        state = torch.load(ckpt, weights_only=True)
        del state["config"]["model"]["pool"]
        torch.save(state, ckpt)
    capsys.readouterr()
    assert vmamba_td3.main(["--resume", str(run), "model.pool=concat"]) == 2
    assert "config key 'model.pool': the checkpoint ckpt_000000000200.pt was trained with 'auto'" in capsys.readouterr().err
    assert vmamba_td3.main(["--resume", str(run), "train.total_frames=300"]) == 0
    assert "resumed at frame 200" in capsys.readouterr().out


def test_a_resume_reads_the_checkpoints_config_and_an_empty_config_yaml_is_refused(base_run, tmp_path, capsys):
    run = copy_run(base_run, tmp_path)
    (run / "config.yaml").write_text("")
    capsys.readouterr()
    assert vmamba_td3.main(["--resume", str(run)]) == 2
    assert f"{run / 'config.yaml'} is empty" in capsys.readouterr().err


def test_ppo_memory_resume_with_a_bad_override_leaves_the_run_resumable(tmp_path, capsys):
    """A resume whose override is valid but poisons training (critic_coef=1e39: a non-finite loss)
    stops with exit 1; the next plain --resume uses the checkpoint's config, not the override."""
    from agents import ppo_memory

    tiny = ["threads=1", "logger=none", "env.num_envs=4", "model.embed=8", "model.hidden=8", "model.head_hidden=8",
            "ppo.slice_len=8", "ppo.minibatch_size=32", "ppo.epochs=1", "train.frames_per_batch=64",
            "train.eval_episodes=2", "model.memory=none"]
    assert ppo_memory.main(["--config", "configs/pomdp/stateless_cartpole.yaml", *tiny, "train.total_frames=64",
                            f"run_root={tmp_path}"]) == 0
    (run,) = glob.glob(str(tmp_path / "ppo_memory" / "*"))
    before = Path(run, "config.yaml").read_bytes()
    assert ppo_memory.main(["--resume", run, "model.hidden=16"]) == 2
    assert "config key 'model.hidden'" in capsys.readouterr().err
    assert Path(run, "config.yaml").read_bytes() == before
    ppo_memory.main(["--resume", run, "train.total_frames=128", "ppo.critic_coef=1e39"])
    assert ppo_memory.main(["--resume", run, "train.total_frames=128"]) == 0


def test_bc_resume_that_changes_the_model_exits_2_with_config_untouched(nav_dataset, tmp_path, capsys):
    from agents.bc_navigation import main

    root = tmp_path / "runs"
    assert main(["train", f"data.path={nav_dataset}", f"run_root={root}", "data.val_episodes=1", "train.batch_size=2",
                 "train.chunk_len=16", "train.steps=4", "train.checkpoint_every_steps=2", "train.val_every_steps=100",
                 "model.dim=32", "model.cnn_width=8", "model.memory_layers=1", "name=m"]) == 0
    (run,) = (root / "bc_navigation").glob("m-*")
    before = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "model.dim=64"]) == 2
    assert "config key 'model.dim'" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == before
    assert main(["train", "--resume", str(run), "train.steps=6"]) == 0


# ---- 5. sweeps: workers die with the sweep, one sweep per results folder ------------------------------
def test_a_second_sweep_on_the_same_results_folder_exits_2(tmp_path, capsys):
    from benchmarks import sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps({"name": "t", "results": str(tmp_path / "results"), "run_root": str(tmp_path / "runs"),
                                "seeds": [0], "algorithms": {"ppo": {"kinds": ["none"]}},
                                "envs": {"c": {"ppo": {"config": "configs/pomdp/stateless_cartpole.yaml"}}}}))
    (tmp_path / "results").mkdir()
    with open(tmp_path / "results" / sweep.LOCK, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert sweep.main([str(path), "--workers", "0", "--committed"]) == 2     # the sweep file's results
    assert "in use by another sweep" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_kill_9_of_a_sweep_ends_its_pool_workers(tmp_path):
    """The worker watches its parent: reparented (the sweep died), it exits within a second."""
    code = (f"import sys, time, os; sys.path.insert(0, {str(REPO)!r}); from benchmarks import sweep\n"
            "from concurrent.futures import ProcessPoolExecutor\nimport multiprocessing\n"
            f"(r := __import__('pathlib').Path({str(tmp_path)!r})).mkdir(exist_ok=True)\n"
            "with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'), initializer=sweep._worker_init,"
            " initargs=(os.getpid(), str(r))) as pool:\n"
            # a first task's result proves the worker's initializer (the watch thread) ran: a fixed
            # sleep did not under load (spawn imports take seconds then), and the test was flaky
            "    pool.submit(os.getpid).result(); pool.submit(time.sleep, 60)\n"
            "    print('started', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.time() + 20
    workers = []
    while time.time() < deadline and not workers:
        workers = [c for c in _children(proc.pid) if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()]
        time.sleep(0.1)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if _alive(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, "pool workers outlived the sweep"


# ---- 6. one process per run directory -----------------------------------------------------------------
def test_a_second_resume_of_a_run_in_use_exits_2_and_a_kill_9_lock_does_not_block(base_run, tmp_path, capsys):
    run = copy_run(base_run, tmp_path)
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r})\nfrom agents.runtime.run_dir import RunDir\n"
            f"r = RunDir({str(run)!r}).lock(); print('locked', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert vmamba_td3.main(["--resume", str(run), "train.total_frames=300"]) == 2
        err = capsys.readouterr().err
        assert "in use by another process" in err and f"pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the lock file is still there, but the kernel dropped the lock with the process
    assert (run / ".lock").exists()
    RunDir(run).lock().unlock()


# ---- 7. checked before any directory exists ---------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LATE = [
    (["--config", PENDULUM, "model.memory=mamba2", "model.memory_hidden=10"], "model.memory_hidden"),
    (["--config", PENDULUM, "model.memory=transformer", "model.memory_hidden=10"], "model.memory_hidden"),
    (["--config", PENDULUM, "td3.ou_sigma=1e39", "--dry-run"], "td3.ou_sigma"),
    (["--config", PENDULUM, "env.id=mambazoo/NoSuchEnv-v0"], "env.id"),
    (["--config", PENDULUM, "name=../../x"], "name"),
    (["--config", PENDULUM, "name="], "name"),
    (["--config", PENDULUM, "seed=1", "seed=2"], "seed"),
    (["--config", PENDULUM, "train.total_frames=1000000000000000000000000000000"], "train.total_frames"),
    (["env.backend=airsim", "env.airsim_port=PORT", "env.max_episode_steps=5"], "env.airsim_host"),
]


@pytest.mark.parametrize("args,key", LATE, ids=[k + "|" + " ".join(a[2:] if a[0] == "--config" else a)
                                                 for a, k in LATE])
def test_bad_inputs_exit_2_naming_the_key_before_a_directory_exists(tmp_path, capsys, args, key):
    args = [a.replace("PORT", str(_free_port())) for a in args]
    if not any(a.startswith("train.total_frames=") for a in args):   # a regression then ends quickly
        args += ["train.total_frames=50", "train.learning_starts=50", "train.frames_per_batch=50"]
    root = tmp_path / "root"
    assert vmamba_td3.main([*args, f"run_root={root}"]) == 2
    assert f"'{key}'" in capsys.readouterr().err
    assert not root.exists() and not list(tmp_path.glob("x-*"))


def test_logger_without_its_package_and_an_empty_config_file_exit_2(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    root = tmp_path / "root"
    assert vmamba_td3.main(["--config", PENDULUM, "logger=tensorboard", f"run_root={root}"]) == 2
    assert "config key 'logger'" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert vmamba_td3.main(["--config", str(empty), f"run_root={root}"]) == 2
    assert f"config file {empty} holds no keys" in capsys.readouterr().err
    assert not root.exists()


def test_overrides_may_follow_options(capsys):
    assert vmamba_td3.main(["seed=3", "--config", PENDULUM, "model.memory_hidden=8", "--dry-run",
                            "model.hidden_dim=16"]) == 0
    out = capsys.readouterr().out
    assert "seed: 3" in out and "hidden_dim: 16" in out and "memory_hidden: 8" in out


@pytest.fixture(scope="module")
def nav_dataset(tmp_path_factory):
    from agents.navigation.data import NavDataConfig, generate

    return generate(tmp_path_factory.mktemp("nav") / "ds", 3, seed=1, progress=False,
                    config=NavDataConfig(depth=1, image_size=16, max_episode_steps=40, collision_backend="grid"))


def test_bc_navigation_memory_width_checked_before_a_run_dir(nav_dataset, tmp_path, capsys):
    from agents.bc_navigation import main

    data = nav_dataset
    root = tmp_path / "root"
    rc = main(["train", f"data.path={data}", "model.kind=mambavint", "model.dim=24", "train.batch_size=1", "data.val_episodes=1", f"run_root={root}"])
    assert rc == 2
    assert "config key 'model.dim'" in capsys.readouterr().err
    assert not root.exists()


# ---- 8. metrics after a resume ---------------------------------------------------------------------
def test_truncate_csv_metrics_drops_rows_after_the_step_and_half_lines(tmp_path):
    from agents.runtime.loggers import truncate_csv_metrics

    f = tmp_path / "metrics" / "scalars" / "train" / "r.csv"
    f.parent.mkdir(parents=True)
    f.write_text("100,1.0\n200,2.0\n250,2.5\n30")
    assert truncate_csv_metrics(tmp_path, 200) == 2
    assert f.read_text() == "100,1.0\n200,2.0\n"


# ---- 9. files outside the run directory ----------------------------------------------------------------
def test_panda_urdf_goes_to_a_private_temp_folder_not_a_predictable_name():
    import tempfile

    pytest.importorskip("pybullet_data")
    from envs.manipulation.panda_env import light_panda_urdf

    path = Path(light_panda_urdf())
    assert path.parent != Path(tempfile.gettempdir())
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert path.read_text().startswith("<?xml") or "<robot" in path.read_text()


def test_eval_of_a_checkpoint_file_outside_a_run_writes_next_to_it(base_run, tmp_path):
    ckpt = RunDir(base_run).latest_checkpoint()
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    shutil.copy(ckpt, elsewhere / ckpt.name)
    assert vmamba_td3.main(["--eval", str(elsewhere / ckpt.name), "--episodes", "1"]) == 0
    # eval_<name>/ beside the file (a shipped policy's folder: ignored by git), nothing in the folder above
    assert (elsewhere / f"eval_{ckpt.stem}").is_dir() and not (elsewhere / "videos").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


# ---- 10. recovery -----------------------------------------------------------------------------------
def test_a_corrupt_latest_checkpoint_falls_back_to_the_newest_that_loads(base_run, tmp_path, capsys):
    run = copy_run(base_run, tmp_path)
    latest = RunDir(run).latest_checkpoint()
    latest.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert vmamba_td3.main(["--resume", str(run), "train.total_frames=200"]) == 0
    captured = capsys.readouterr()
    assert f"skipping checkpoint {latest}" in captured.err and "resumed at frame 100" in captured.out
    assert RunDir.load_checkpoint(RunDir(run).latest_checkpoint())["frames"] == 200


def test_memmap_replay_storage_resumes(tmp_path):
    """replay.storage=memmap keeps a working copy in replay_storage/; a resume starts it afresh
    from the checkpoint's replay folder (its memmap files used to make the resume fail)."""
    args = ["--config", PENDULUM, *TINY, "replay.storage=memmap", f"run_root={tmp_path}", "name=m"]
    assert vmamba_td3.main([*args, "train.total_frames=100"]) == 0
    (run,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    assert vmamba_td3.main(["--resume", run, "train.total_frames=200"]) == 0
    assert RunDir.load_checkpoint(RunDir(run).latest_checkpoint())["replay"]["rows"] == 200
