"""Logs written to files stay clean: PyBullet's C-level banner lines ("pybullet build time: ...",
"argv[0]=") do not reach stdout/stderr, while anything else printed meanwhile does; progress bars
draw only on a terminal (no carriage returns or cursor escape codes in a log file)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.scene.bullet import without_banners

REPO = Path(__file__).resolve().parents[1]


def test_without_banners_drops_only_pybullets_two_lines(capfd):
    with without_banners():
        os.write(1, b"pybullet build time: Jan 29 2025 23:17:20\nkept on stdout\n")
        os.write(2, b"argv[0]=\nkept on stderr\n")
        print("python print", flush=True)
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == ["kept on stdout", "python print"] and err == "kept on stderr\n"


@pytest.mark.parametrize("env_id", ["mambazoo/A1Flat-v0", "mambazoo/DroneForest-v0", "mambazoo/PandaPush-v0",
                                    "mambazoo/NavTMaze1-v0"])
def test_the_pybullet_envs_print_no_banner_into_a_log_file(tmp_path, env_id):
    """One fresh process per env: the banner comes with the first import of pybullet in a process,
    wherever that is (a camera built before the client, the client itself)."""
    code = ("import gymnasium as gym, envs\n"
            f"env = gym.make({env_id!r}); env.reset(seed=0); env.step(env.action_space.sample()); env.close()\n"
            "print('made it')\n")
    log = tmp_path / "run.log"
    with log.open("wb") as f:                     # stdout and stderr into one file, as `> run.log 2>&1`
        subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    text = log.read_text()
    assert "made it" in text
    assert "pybullet build time" not in text and "argv[0]=" not in text, text


def test_bc_training_without_a_terminal_prints_plain_lines(tmp_path, capsys):
    """No tty (pytest captures stdout): no tqdm bar (its \\r redraws and, under a nested eval bar,
    cursor-up escape codes in the log), one plain line per log row instead."""
    from agents import bc_diffusion
    from agents.manipulation.config import Config
    from agents.manipulation.data import GenerateConfig, generate
    from agents.runtime.config import load_config
    from agents.runtime.run_dir import RunDir

    gen = GenerateConfig(task="push", seed=1, keep_failed=True, horizon=12, num_points=64, image_size=64)
    data = generate(tmp_path / "push", 2, gen, progress=False)
    cfg = load_config(Config, REPO / "configs" / "manip" / "tiny.yaml",
                      [f"data.path={data.path.parent}", f"run_root={tmp_path}", "logger=none"])
    capsys.readouterr()
    bc_diffusion.train(cfg, RunDir.create(tmp_path, "bc_diffusion", "tiny"), None)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "\r" not in text and "\x1b" not in text, repr(text)
    steps = [line.split()[1] for line in captured.out.splitlines() if line.startswith("step ")]
    assert steps == ["2/6", "4/6", "6/6"], captured.out
