"""Demonstration datasets: memmap round trip, seeded resume without duplicates, clear errors."""
import json
import shutil

import numpy as np
import pytest
import torch

import envs.manipulation.expert as manip_expert
from agents.manipulation.data import (DatasetError, GenerateConfig, episode_seed, generate, load_dataset,
                               main)
from envs.manipulation.expert import make_expert, rollout
from envs.manipulation.panda_env import PandaManipEnv

# short failed-or-not episodes keep this fast; the expert's success is tested in test_manipulation_env
CFG = GenerateConfig(task="pick_place", seed=3, keep_failed=True, horizon=5, num_points=64, image_size=64)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-episode dataset."""
    return generate(tmp_path_factory.mktemp("ref") / "ds", 4, CFG, progress=False)


def test_round_trip_matches_the_env(reference):
    demos = load_dataset(reference.path.parent)                # the dataset root or its data/
    assert len(demos.episodes) == 4 and len(demos) == 20
    assert isinstance(demos.data["point_cloud"], torch.Tensor) and demos.data["point_cloud"].shape == (20, 64, 3)
    assert (demos.path / "point_cloud.memmap").stat().st_size == 20 * 64 * 3 * 4
    # episode 2, replayed in a fresh env from its recorded seed, gives the stored rows
    rec = demos.episodes[2]
    assert rec["seed"] == episode_seed(CFG.seed, 2) and rec["start"] == 10
    ep = rollout(PandaManipEnv(**CFG.env_kwargs()), make_expert(CFG.task), rec["seed"])
    rows = demos.data[rec["start"]: rec["start"] + rec["length"]]
    for key in ("point_cloud", "agent_pos", "action"):
        assert np.array_equal(rows[key].numpy(), ep[key]), key
    assert rows["episode"].tolist() == [2] * 5 and rows["step"].tolist() == list(range(5))


def test_resume_after_crash_has_no_duplicates_and_equals_uninterrupted(tmp_path, monkeypatch, reference):
    out = tmp_path / "ds"
    real, calls = manip_expert.rollout, []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed mid-episode
        return real(*args, **kwargs)

    monkeypatch.setattr(manip_expert, "rollout", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        generate(out, 3, CFG, progress=False)
    monkeypatch.setattr(manip_expert, "rollout", real)
    with pytest.raises(DatasetError, match="unfinished dataset .1 episodes generated"):
        load_dataset(out)
    first = generate(out, 3, CFG, progress=False)     # resumes: episodes 1, 2
    assert [r["episode"] for r in first.episodes] == [0, 1, 2]
    demos = generate(out, 4, CFG, progress=False)     # extends the merged dataset: episode 3
    assert demos.data["episode"].tolist() == reference.data["episode"].tolist()
    assert (demos.data == reference.data).all() and demos.episodes == reference.episodes
    assert not any((out / "pending").iterdir()) and not (out / "data.tmp").exists()
    assert generate(out, 2, CFG, progress=False).episodes == reference.episodes   # nothing to do


def test_workers_write_the_same_dataset(reference, tmp_path, capsys):
    """Two processes record the episodes side by side: the same rows and records as one process."""
    demos = generate(tmp_path / "par", 4, CFG, progress=False, workers=2)
    assert (demos.data == reference.data).all() and demos.episodes == reference.episodes
    assert main(["generate", "--out", str(tmp_path / "bad"), "--episodes", "2", "--workers", "0"]) == 2
    assert "workers must be >= 1, got 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_other_settings_refused(reference, tmp_path):
    with pytest.raises(DatasetError, match="other settings.*'seed': \\(3, 4\\)"):
        generate(reference.path.parent, 4, GenerateConfig(**{**CFG.__dict__, "seed": 4}), progress=False)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(DatasetError, match="non-empty directory without config.json"):
        generate(tmp_path, 1, CFG, progress=False)


def _copy(reference, tmp_path):
    dst = tmp_path / "bad"
    shutil.copytree(reference.path, dst)
    return dst


def _rewrite(dst, td):
    """Replace the memmapped tensors of dataset dir dst by td, keeping its dataset.json."""
    index = (dst / "dataset.json").read_text()
    shutil.rmtree(dst)
    td.memmap(prefix=dst)
    (dst / "dataset.json").write_text(index)


def test_malformed_datasets_give_clear_errors(reference, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "file")
    with pytest.raises(DatasetError, match="not a demo dataset"):
        load_dataset(tmp_path)
    good = reference.data.clone()                       # in-memory copy to tamper with
    dst = _copy(reference, tmp_path)
    _rewrite(dst, good.exclude("action"))
    with pytest.raises(DatasetError, match=r"missing keys \['action'\]"):
        load_dataset(dst)
    bad = good.clone()
    bad["agent_pos"] = torch.zeros(20, 10)
    _rewrite(dst, bad)
    with pytest.raises(DatasetError, match=r"agent_pos has shape \[20, 10\], expected \[20, 11\]"):
        load_dataset(dst)
    _rewrite(dst, good[:17])
    with pytest.raises(DatasetError, match="inconsistent lengths: 17 rows stored"):
        load_dataset(dst)
    shuffled = good.clone()
    shuffled["step"] = shuffled["step"].flip(0)
    _rewrite(dst, shuffled)
    with pytest.raises(DatasetError, match="do not hold episode 0 steps 0..4"):
        load_dataset(dst)
    _rewrite(dst, good)
    (dst / "point_cloud.memmap").write_bytes(b"\0" * 100)   # truncated file
    with pytest.raises(DatasetError, match="cannot memory-map"):
        load_dataset(dst)
    (dst / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read .*dataset.json"):
        load_dataset(dst)
    meta = json.loads((reference.path / "dataset.json").read_text())
    (dst / "dataset.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(DatasetError, match="version 99"):
        load_dataset(dst)


def test_window_indices_stay_inside_episodes(reference):
    idx = reference.window_indices(horizon=4, pad_before=1, pad_after=2)   # DP3: n_obs 2, n_action 3
    assert idx.shape == (4 * 5, 4)                   # starts -1 .. 3 per 5-step episode
    episode = reference.data["episode"][idx]
    assert (episode == episode[:, :1]).all()         # no window crosses an episode
    assert idx[0].tolist() == [0, 0, 1, 2] and idx[4].tolist() == [3, 4, 4, 4]
    stats = reference.stats()
    assert torch.all(stats["action"]["min"] >= -1) and torch.all(stats["action"]["max"] <= 1)


def test_cli(reference, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--help"])
    assert e.value.code == 0 and "--episodes" in capsys.readouterr().out
    assert main(["info", str(reference.path.parent)]) == 0
    assert "4 episodes, 20 steps" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
