"""Run directories, checkpoints, RNG state, loggers and video writing (agents/runtime)."""
import csv
import random
import re
import sys

import numpy as np
import pytest
import torch
from torch import nn

from agents.runtime.loggers import LOGGER_BACKENDS, log_scalars, make_logger
from agents.runtime.run_dir import RunDir, RunDirError, rng_state, set_rng_state
from agents.runtime.video import write_video


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def _train_step(model, opt, x):
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


# ---- RunDir ---------------------------------------------------------------------------------
def test_create_makes_unique_dirs_with_layout(tmp_path):
    a = RunDir.create(root=tmp_path, agent="td3", name="hover")
    b = RunDir.create(root=tmp_path, agent="td3", name="hover")
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path / "td3"
    assert a.path.name.startswith("hover-")
    for r in (a, b):
        assert r.checkpoints.is_dir() and r.videos.is_dir()
        assert r.config_path == r.path / "config.yaml"


def test_existing_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RunDirError, match="nope"):
        RunDir.existing(missing)
    run = RunDir(tmp_path / "run")
    with pytest.raises(RunDirError, match="config.yaml"):
        RunDir.existing(run.path)
    run.config_path.write_text("seed: 1\n")
    assert RunDir.existing(run.path).path == run.path
    assert issubclass(RunDirError, ValueError)


# ---- checkpoints ----------------------------------------------------------------------------
def test_checkpoint_round_trip_resumes_training_identically(tmp_path):
    run = RunDir(tmp_path / "run")
    model, opt = _model_and_opt()
    x = torch.randn(16, 4)
    for _ in range(3):
        _train_step(model, opt, x)
    state = {"model": model.state_dict(), "optim": opt.state_dict(),
             "counters": {"step": 3, "frames": 48, "best_return": -1.5}, "tag": "ppo", "hist": [1.0, 2.0]}
    path = run.save_checkpoint(state, step=3)
    assert path.name == "ckpt_000000000003.pt"
    assert [p.name for p in run.checkpoints.iterdir()] == [path.name]  # no tmp file left behind

    loaded = RunDir.load_checkpoint(path)
    model2, opt2 = _model_and_opt(seed=123)  # different init: everything must come from the file
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optim"])
    assert loaded["counters"] == {"step": 3, "frames": 48, "best_return": -1.5}
    assert loaded["tag"] == "ppo" and loaded["hist"] == [1.0, 2.0]
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    _train_step(model, opt, x)
    _train_step(model2, opt2, x)  # Adam moments restored -> identical next update
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_keep_and_latest(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.latest_checkpoint() is None
    for step in (100, 5, 2000, 40):
        run.save_checkpoint({"step": step}, step=step, keep=2)
    names = sorted(p.name for p in run.checkpoints.iterdir())
    # newest two by step, plus the one just written (40) which is never deleted
    assert names == ["ckpt_000000000040.pt", "ckpt_000000000100.pt", "ckpt_000000002000.pt"]
    assert run.latest_checkpoint().name == "ckpt_000000002000.pt"  # numeric, not write order
    assert RunDir.load_checkpoint(run.latest_checkpoint())["step"] == 2000
    run.save_checkpoint({"step": 3000}, step=3000, keep=2)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["ckpt_000000002000.pt", "ckpt_000000003000.pt"]


def test_numpy_in_state_is_rejected_with_key_path(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(TypeError, match=r"state\['extra'\]\['obs_mean'\].*numpy"):
        run.save_checkpoint({"model": {"w": torch.zeros(2)}, "extra": {"obs_mean": np.zeros(3)}}, step=1)
    with pytest.raises(TypeError, match=r"state\['ret'\]\[1\]"):
        run.save_checkpoint({"ret": [1.0, np.float64(2.0)]}, step=1)  # np.float64 subclasses float
    with pytest.raises(TypeError, match=r"state\['obj'\]"):
        run.save_checkpoint({"obj": object()}, step=1)
    assert list(run.checkpoints.iterdir()) == []


def test_missing_or_corrupt_checkpoint_raises_run_dir_error(tmp_path):
    bad = tmp_path / "ckpt_000000000001.pt"
    with pytest.raises(RunDirError, match=re.escape(str(bad))):
        RunDir.load_checkpoint(bad)
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(RunDirError, match=re.escape(str(bad))):
        RunDir.load_checkpoint(bad)
    run = RunDir(tmp_path / "run")
    good = run.save_checkpoint({"w": torch.ones(1000)}, step=1)
    good.write_bytes(good.read_bytes()[:200])  # truncated, as after a crash without atomic write
    with pytest.raises(RunDirError, match="could not load"):
        RunDir.load_checkpoint(good)


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in the numpy legacy state
    state = rng_state()
    expected = (random.random(), np.random.rand(3), np.random.normal(), torch.rand(3))
    run = RunDir(tmp_path / "run")
    state = RunDir.load_checkpoint(run.save_checkpoint({"rng": state}, step=0))["rng"]
    random.random(), np.random.rand(5), torch.rand(5)  # advance all generators
    set_rng_state(state)
    got = (random.random(), np.random.rand(3), np.random.normal(), torch.rand(3))
    assert got[0] == expected[0] and got[2] == expected[2]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[3], expected[3])


# ---- loggers --------------------------------------------------------------------------------
def test_csv_logger_writes_scalars_inside_run_dir(tmp_path):
    run = RunDir(tmp_path / "run")
    logger = make_logger("csv", run.path, "exp", config={"lr": 3e-4, "env": {"name": "quadruped"}})
    log_scalars(logger, {"train/reward": 1.5, "loss": torch.tensor(0.25)}, step=10)
    log_scalars(logger, {"train/reward": np.float32(2.5)}, step=20)
    files = {p.relative_to(run.path).as_posix(): p for p in run.path.rglob("*.csv")}
    assert set(files) == {"exp/scalars/train/reward.csv", "exp/scalars/loss.csv"}
    rows = list(csv.reader(files["exp/scalars/train/reward.csv"].open()))
    assert [(int(s), float(v)) for s, v in rows] == [(10, 1.5), (20, 2.5)]
    assert [(int(s), float(v)) for s, v in csv.reader(files["exp/scalars/loss.csv"].open())] == [(10, 0.25)]
    assert "lr: 0.0003" in (run.path / "exp" / "texts" / "hparams0.txt").read_text()
    log_scalars(None, {"x": 1.0}, step=0)  # no logger: no-op


def test_logger_backend_errors(tmp_path, monkeypatch):
    assert make_logger("none", tmp_path, "exp") is None
    with pytest.raises(ValueError, match="csv, tensorboard, wandb, none"):
        make_logger("mlflow", tmp_path, "exp")
    assert LOGGER_BACKENDS == ("csv", "tensorboard", "wandb", "none")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        make_logger("tensorboard", tmp_path, "exp")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[wandb\]'"):
        make_logger("wandb", tmp_path, "exp")


# ---- video ----------------------------------------------------------------------------------
def _frames(n=5, h=24, w=32):
    # distinct frames: Pillow merges identical consecutive GIF frames
    return [np.full((h, w, 3), 40 * i, dtype=np.uint8) for i in range(n)]


def test_write_gif_reads_back(tmp_path):
    from PIL import Image

    out = write_video(_frames(), tmp_path / "videos" / "ep0.gif", fps=10)
    assert out == tmp_path / "videos" / "ep0.gif"
    assert sorted(p.name for p in out.parent.iterdir()) == ["ep0.gif"]  # no tmp left
    with Image.open(out) as im:
        assert im.n_frames == 5 and im.size == (32, 24)
        assert im.info["duration"] == 100


def test_mp4_without_imageio_falls_back_to_gif(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "imageio", None)
    with caplog.at_level("INFO", logger="agents.runtime.video"):
        out = write_video(_frames(3), tmp_path / "ep.mp4")
    assert out == tmp_path / "ep.gif" and out.is_file()
    assert not (tmp_path / "ep.mp4").exists()
    assert "GIF instead of mp4" in caplog.text


@pytest.mark.parametrize("frames", [
    [],
    [np.zeros((8, 8, 3), dtype=np.float32)],
    [np.zeros((8, 8), dtype=np.uint8)],
    [np.zeros((8, 8, 4), dtype=np.uint8)],
    [np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((4, 8, 3), dtype=np.uint8)],
])
def test_bad_frames_rejected(tmp_path, frames):
    with pytest.raises(ValueError, match="at least one frame|HxWx3"):
        write_video(frames, tmp_path / "x.gif")


# ---- run_agent: every RL agent's main ---------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("agent", ["ppo_locomamba", "ppo_memory", "vmamba_td3"])
def test_device_cuda_without_cuda_exits_2_before_a_run_dir(agent, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"agents.{agent}").main
    assert main(["device=cuda", f"run_root={tmp_path}"]) == 2
    assert "config key 'device': 'cuda' asked for but torch.cuda.is_available() is False" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
