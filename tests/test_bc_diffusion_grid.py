"""benchmarks/bc_diffusion_grid.py across device calls: the mamba1_noattn variant's names and
overrides, --resume's choice per run (continue, skip a finished one, restart one without a
checkpoint), run_parallel's deadline; bc_diffusion_table.py's row for a run without attention."""
import sys
import time
from argparse import Namespace
from pathlib import Path

from benchmarks import bc_diffusion_grid as grid
from benchmarks.bc_diffusion_table import denoiser_label
from benchmarks.bc_navigation_compare import run_parallel


def args(**kw):
    base = dict(tasks=["push"], denoisers=["mamba1", "mamba1_noattn"], seeds=[0], unet_dims=None,
                mamba_dims=[16, 32, 64], set=["logger=csv"], val_root=None, val_every=300)
    return Namespace(**{**base, **kw})


def fake_run(root: Path, name: str, steps: list[int], attention: bool | None = None) -> Path:
    run = root / "bc_diffusion" / f"{name}-20261202-000000"
    (run / "checkpoints").mkdir(parents=True)
    for s in steps:
        (run / "checkpoints" / f"ckpt_{s:012d}.pt").write_bytes(b"")
    if attention is not None:
        (run / "config.yaml").write_text(f"policy:\n  denoiser: mamba1\n  attention: {str(attention).lower()}\n")
    return run


def test_variant_names_and_overrides(tmp_path):
    (plain, a), (variant, b) = grid.jobs(args(), tmp_path, 100, [])
    assert (plain, variant) == ("push_mamba1_s0", "push_mamba1_noattn_s0")
    assert a[a.index("--config") + 1].endswith("push_mamba1.yaml") and "policy.attention=false" not in a
    assert b[b.index("--config") + 1].endswith("push_mamba1.yaml") and "policy.attention=false" in b
    assert "name=push_mamba1_noattn_s0" in b and "policy.down_dims=[16,32,64]" in b


def test_val_root_gives_each_new_run_its_tasks_held_out_demos(tmp_path, capsys):
    import pytest

    (_, a), _ = grid.jobs(args(val_root=str(tmp_path / "val"), val_every=200), tmp_path, 100, [])
    assert f"data.val_path={tmp_path / 'val' / 'push'}" in a and "train.val_every_steps=200" in a
    (_, a), _ = grid.jobs(args(), tmp_path, 100, [])
    assert not any(x.startswith(("data.val_path", "train.val_every_steps")) for x in a)
    with pytest.raises(SystemExit) as exit_info:       # checked before any run starts
        grid.main(["--tasks", "push", "--steps", "10", "--val-root", str(tmp_path / "val"), "--runs", str(tmp_path / "r")])
    assert exit_info.value.code == 2 and f"--val-root {tmp_path / 'val'}: no dataset for push" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_continues_skips_and_restarts(tmp_path):
    fake_run(tmp_path, "push_mamba1_noattn_s0", [200, 300])       # must not be taken for push_mamba1_s0
    assert grid.existing_run(tmp_path, "push_mamba1_s0") is None
    (name, argv), = grid.jobs(args(), tmp_path, 300, [], resume=True)   # noattn is done at 300
    assert name == "push_mamba1_s0" and "--resume" not in argv
    run = fake_run(tmp_path, "push_mamba1_s0", [100])
    todo = dict(grid.jobs(args(), tmp_path, 300, [], resume=True))
    assert list(todo) == ["push_mamba1_s0"]
    assert todo["push_mamba1_s0"][-3:] == ["--resume", str(run), "train.steps=300"]
    (run / "checkpoints" / "ckpt_000000000100.pt").unlink()      # stopped before its first checkpoint
    todo = dict(grid.jobs(args(), tmp_path, 300, [], resume=True))
    assert "--resume" not in todo["push_mamba1_s0"] and not run.exists()


def test_run_parallel_deadline_stops_without_failing(tmp_path):
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    quick = [sys.executable, "-c", "pass"]
    t0 = time.time()
    stopped = run_parallel([("quick", quick), ("slow", sleep), ("never", sleep)], tmp_path, 2, {},
                           deadline=time.time() + 4)
    assert sorted(stopped) == ["never", "slow"] and time.time() - t0 < 30
    assert run_parallel([("quick", quick)], tmp_path, 1, {}) == []


def test_table_row_of_a_run_without_attention(tmp_path):
    assert denoiser_label(fake_run(tmp_path, "a", [], attention=False), "mamba1") == "mamba1_noattn"
    assert denoiser_label(fake_run(tmp_path, "b", [], attention=True), "mamba1") == "mamba1"
    assert denoiser_label(tmp_path / "no_config", "unet") == "unet"


def test_run_parallel_grace_sends_sigterm_first_and_a_job_that_then_exits_counts_as_stopped(tmp_path):
    """grace: a SIGTERM `grace` s before the deadline; a job that saves and exits 0 on it is stopped,
    not finished (the grid must not export it); one that ignores it is killed at the deadline."""
    saver = [sys.executable, "-c", "import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (open('saved', 'w').write('1'), sys.exit(0)))\n"
             "time.sleep(60)"]
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
    quick = [sys.executable, "-c", "pass"]
    t0 = time.time()
    stopped = run_parallel([("saver", saver), ("stubborn", stubborn), ("never", quick)],   # never: no free slot
                           tmp_path, 2, {}, deadline=time.time() + 8, grace=4)
    took = time.time() - t0
    assert sorted(stopped) == ["never", "saver", "stubborn"], stopped
    assert (grid.ROOT / "saved").is_file()          # the jobs run in the repo root (run_parallel's cwd)
    (grid.ROOT / "saved").unlink()
    assert 7 <= took < 30, took
