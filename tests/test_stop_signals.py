"""agents/runtime/stop.py: SIGTERM and Ctrl-C (SIGINT) stop a trainer gracefully, env workers ignore
a Ctrl-C meant for it, and a second Ctrl-C quits at once."""
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agents.runtime.stop import StopOnSignal, worker_ignores_sigint

REPO = Path(__file__).resolve().parents[1]


def test_sigint_requests_a_stop_and_a_second_one_quits_now():
    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before        # the previous handler is back
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _sigint_self():
    os.kill(os.getpid(), signal.SIGINT)
    return 7


def _child(through_helper: bool, out):
    out.put(worker_ignores_sigint(_sigint_self) if through_helper else _sigint_self())


@pytest.mark.parametrize("through_helper", [True, False])
def test_a_worker_built_through_the_helper_survives_a_ctrl_c(through_helper):
    """A spawned process (as ParallelEnv's and AsyncVectorEnv's workers are) sends itself SIGINT:
    through worker_ignores_sigint it goes on (exit 0, its value back); without, KeyboardInterrupt
    ends it (exit 1) -- what broke the trainers' pipes mid-batch."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_child, args=(through_helper, out))
    p.start()
    p.join(60)
    assert p.exitcode == (0 if through_helper else 1)
    if through_helper:
        assert out.get(timeout=5) == 7


def test_the_helper_leaves_the_main_process_alone():
    before = signal.getsignal(signal.SIGINT)
    assert worker_ignores_sigint(lambda a, b=0: a + b, 2, b=3) == 5
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_to_the_process_group_stops_a_two_worker_td3_run_with_a_checkpoint(tmp_path):
    """A terminal's Ctrl-C reaches the trainer and its ParallelEnv workers alike (the run is its own
    process group here, signalled as a whole): the run finishes its batch, writes a checkpoint at that
    frame and exits 0, without a traceback. Before worker_ignores_sigint a worker died and the trainer
    raised "At least one process failed" (exit 1)."""
    args = [sys.executable, "agents/vmamba_td3.py", "--config", "configs/pendulum/td3_mamba.yaml",
            "replay.batch_size=8", "replay.seq_len=4", "replay.size=2000", "train.learning_starts=100",
            "train.frames_per_batch=50", "train.updates_per_step=0.2", "train.eval_episodes=1",
            "model.memory_hidden=8", "model.hidden_dim=16", "env.num_envs=2", "train.total_frames=1000000",
            f"run_root={tmp_path}"]
    p = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    watchdog = threading.Timer(300, lambda: os.killpg(p.pid, signal.SIGKILL))
    watchdog.start()
    try:
        seen = []
        for line in p.stdout:                 # the first progress line: workers up, training on
            seen.append(line)
            if line.startswith("frames "):
                os.killpg(p.pid, signal.SIGINT)
                break
        out, err = p.communicate(timeout=240)
    finally:
        watchdog.cancel()
    out = "".join(seen) + out
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "stopped by SIGINT at frame" in out, out[-2000:]
    ckpts = list(tmp_path.glob("vmamba_td3/*/checkpoints/ckpt_*.pt"))
    assert ckpts, "no checkpoint written"
