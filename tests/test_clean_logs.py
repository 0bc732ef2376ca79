"""Logs written to files stay clean: PyBullet's C-level banner lines ("pybullet build time: ...",
"argv[0]=") do not reach stdout/stderr, while anything else printed meanwhile does; progress bars
draw only on a terminal (no carriage returns or cursor escape codes in a log file)."""
import os
import subprocess
import sys
from pathlib import Path

from envs.scene.bullet import without_banners

REPO = Path(__file__).resolve().parents[1]


def test_without_banners_drops_only_pybullets_two_lines(capfd):
    with without_banners():
        os.write(1, b"pybullet build time: Jan 29 2025 23:17:20\nkept on stdout\n")
        os.write(2, b"argv[0]=\nkept on stderr\n")
        print("python print", flush=True)
    out, err = capfd.readouterr()
    assert sorted(out.splitlines()) == ["kept on stdout", "python print"] and err == "kept on stderr\n"


def test_the_pybullet_envs_print_no_banner_into_a_log_file(tmp_path):
    code = ("import gymnasium as gym, envs\n"
            "for i in ('mambazoo/A1Flat-v0', 'mambazoo/DroneForest-v0', 'mambazoo/PandaPush-v0', "
            "'mambazoo/NavTMaze1-v0'):\n"
            "    env = gym.make(i); env.reset(seed=0); env.close()\n"
            "print('made 4')\n")
    log = tmp_path / "run.log"
    with log.open("wb") as f:                     # stdout and stderr into one file, as `> run.log 2>&1`
        subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    text = log.read_text()
    assert "made 4" in text
    assert "pybullet build time" not in text and "argv[0]=" not in text, text
