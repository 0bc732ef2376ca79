"""The device scripts' stop (benchmarks/device_site.sh: run_until), with real processes: the trainer
alone gets SIGTERM GRACE s before the deadline while its worker lives on until it has saved, and at
the deadline SIGKILL ends the whole process group, so no worker outlives a call."""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# a trainer with one worker process (as an env worker): on SIGTERM it records whether its worker is
# still alive, "saves" and exits 0 (or, with IGNORE, ignores the signal and runs on)
TRAINER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    out = sys.argv[1]
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(os.path.join(out, "worker.pid"), "w").write(str(worker.pid))
    def on_term(*_):
        open(os.path.join(out, "saved"), "w").write("worker alive" if worker.poll() is None else "worker dead")
        sys.exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE") else on_term)
    open(os.path.join(out, "started"), "w").write("")
    while True:
        time.sleep(0.1)
""")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")           # a zombie has ended; only its parent's wait is missing


def run_until(tmp_path, seconds: int, grace: int, ignore: bool = False):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    log = tmp_path / "run.log"
    env = {**os.environ, "GRACE": str(grace), **({"IGNORE": "1"} if ignore else {})}
    t0 = time.monotonic()
    proc = subprocess.run(["bash", "-c", f'. benchmarks/device_site.sh; run_until {seconds} "{log}" '
                           f'"{sys.executable}" "{script}" "{tmp_path}"'], cwd=REPO, env=env, timeout=60)
    return proc.returncode, time.monotonic() - t0, log.read_text() if log.exists() else ""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_run_until_terms_the_trainer_alone_before_the_deadline(tmp_path):
    rc, elapsed, log = run_until(tmp_path, seconds=6, grace=3)
    assert (tmp_path / "started").exists(), log
    assert rc == 0 and elapsed < 6, (rc, elapsed, log)
    assert "SIGTERM to" in log and "SIGKILL" not in log, log
    # the trainer saved while its worker still ran (a signal to the group would have killed it first)
    assert (tmp_path / "saved").read_text() == "worker alive"
    worker = int((tmp_path / "worker.pid").read_text())
    assert not alive(worker), "the worker outlived run_until"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_run_until_kills_the_whole_group_at_the_deadline(tmp_path):
    rc, elapsed, log = run_until(tmp_path, seconds=4, grace=2, ignore=True)
    assert rc == 137 and 3 <= elapsed < 10, (rc, elapsed, log)     # 128 + SIGKILL
    assert "SIGTERM to" in log and "SIGKILL to" in log, log
    assert not (tmp_path / "saved").exists()
    worker = int((tmp_path / "worker.pid").read_text())
    assert not alive(worker), "the worker outlived run_until"
