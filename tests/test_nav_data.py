"""Navigation demonstrations (agents/navigation/data.py): write -> memory-map -> read round trip, resumable
and deterministic generation, clear errors for bad paths and malformed datasets, CLI, replay buffer."""
import json
import shutil

import numpy as np
import pytest
import torch
from tensordict import MemoryMappedTensor

from agents.navigation.data import (NavDataConfig, NavDatasetError, episode_rows, episode_seed, generate,
                             load_dataset, main, replay_buffer)
from envs.navigation.expert import NavExpert, expert_labels, rollout, waypoint_labels
from envs.navigation.nav_env import NavigationEnv

SMALL = NavDataConfig(depth=1, image_size=16, max_episode_steps=300)   # ~125 steps per episode


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("nav") / "ds", 3, seed=7, config=SMALL, progress=False)


def _files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*.memmap"))}


def test_round_trip_values_match_a_fresh_rollout(dataset_dir):
    ds = load_dataset(dataset_dir)
    assert ds.num_episodes == 3 and len(ds) == int(ds.episodes["length"].sum())
    assert isinstance(ds.steps["rgb"], MemoryMappedTensor) and str(dataset_dir) in str(ds.steps["rgb"].filename)
    assert ds.steps["rgb"].dtype == torch.uint8 and ds.steps["rgb"].shape[1:] == (3, 16, 16)
    assert ds.steps["waypoints"].shape[1:] == (5, 2) and ds.episodes["goal_rgb"].shape[1:] == (3, 16, 16)
    # episode 1 again, straight from the env and the expert: every column must be what was written
    env = NavigationEnv(**ds.manifest["env"])
    seed = episode_seed(7, 1)
    ep = rollout(env, NavExpert(env), seed=seed, options={"cue": 1 % 2})
    start = int(ds.episodes["start"][1])
    steps, row = episode_rows(ep, SMALL, 1, start, seed)
    sl = slice(start, start + int(ds.episodes["length"][1]))
    for key, value in steps.items():
        np.testing.assert_array_equal(ds.steps[key][sl].numpy(), value, err_msg=key)
    for key, value in row.items():
        np.testing.assert_array_equal(ds.episodes[key][1].numpy(), np.asarray(value, ds.episodes[key].numpy().dtype),
                                      err_msg=key)
    assert bool(ds.episodes["success"].all()) and ds.episodes["cue"].tolist() == [0, 1, 0]
    # goal images joined through the episode column
    ids = ds.steps["episode"][sl][:4].reshape(2, 2)
    assert ds.goal_rgb(ids).shape == (2, 2, 3, 16, 16)
    assert torch.equal(ds.goal_rgb(ids)[1, 1], ds.episodes["goal_rgb"][1])
    env.close()


def test_expert_labels_are_the_driven_labels_without_noise():
    """Relabelling each pose with the expert's own drive reproduces the odometry labels of a
    noise-free episode (up to float32 poses)."""
    env = NavigationEnv(**SMALL.env_kwargs())
    expert = NavExpert(env)
    ep = rollout(env, expert, seed=episode_seed(7, 0))
    wp, yaw = expert_labels(expert, ep["pose"], 5, 2)
    ref_wp, ref_yaw, _ = waypoint_labels(ep["pose"], 5, 2)
    np.testing.assert_allclose(wp, ref_wp, atol=1e-4)
    np.testing.assert_allclose(np.cos(yaw - ref_yaw), 1.0, atol=1e-6)
    env.close()


def test_dart_noise_leaves_the_path_and_labels_the_expert(tmp_path):
    """action_noise: the robot leaves the expert's path yet stays collision-free, the action
    column is the expert's action at each visited pose, the waypoints are the expert's drive from
    it, and the data are seeded (a second generate writes the same bytes)."""
    noisy = NavDataConfig(**{**SMALL.__dict__, "action_noise": 0.3})
    path = generate(tmp_path / "dart", 2, seed=7, config=noisy, progress=False)
    ds, clean = load_dataset(path), load_dataset(generate(tmp_path / "clean", 2, seed=7, config=SMALL, progress=False))
    assert ds.manifest["config"]["action_noise"] == 0.3 and bool(ds.episodes["success"].all())
    assert not bool(ds.episodes["collision"].any())
    n = min(int(ds.episodes["length"][0]), int(clean.episodes["length"][0]))
    assert not torch.allclose(ds.steps["pose"][:n], clean.steps["pose"][:n], atol=1e-2)   # off the expert's path
    env = NavigationEnv(**ds.manifest["env"])
    env.reset(seed=episode_seed(7, 0), options={"cue": 0})
    expert = NavExpert(env)
    expert.reset()
    end = int(ds.episodes["length"][0]) - 1
    poses = ds.steps["pose"][:end].numpy()
    for t in (0, end // 3, 2 * end // 3):
        np.testing.assert_array_equal(ds.steps["action"][t].numpy(), expert.act(poses[t]))
    wp, _ = expert_labels(expert, poses[: end // 2], 5, 1)
    np.testing.assert_array_equal(ds.steps["waypoints"][: end // 2].numpy(), wp)
    assert _files(generate(tmp_path / "again", 2, seed=7, config=noisy, progress=False)) == _files(path)
    env.close()
    with pytest.raises(ValueError, match="noise > 0 needs a seeded rng"):
        rollout(env, expert, seed=1, noise=0.1)


def test_resume_writes_what_one_run_writes_and_drops_a_torn_episode(dataset_dir, tmp_path):
    part = tmp_path / "part"
    generate(part, 1, seed=7, config=SMALL, progress=False)
    with open(part / "steps" / "rgb.memmap", "ab") as f:        # a crash mid-episode: rows past the commit
        f.write(b"\x01" * 999)
    with open(part / "episodes" / "cue.memmap", "ab") as f:
        f.write(b"\x02" * 8)
    assert load_dataset(part).num_episodes == 1                  # readers ignore the torn rows
    generate(part, 3, seed=7, config=SMALL, progress=False)
    assert _files(part) == _files(dataset_dir)                   # byte for byte
    ds = load_dataset(part)
    assert ds.episodes["seed"].unique().numel() == 3
    assert torch.equal(ds.steps["episode"].unique(), torch.arange(3))
    before = _files(part)
    generate(part, 2, seed=7, config=SMALL, progress=False)      # fewer than held: nothing to do
    assert _files(part) == before


def test_worker_processes_write_the_same_bytes(dataset_dir, tmp_path):
    generate(tmp_path / "par", 3, seed=7, config=SMALL, progress=False, workers=2)
    assert _files(tmp_path / "par") == _files(dataset_dir)


def test_resume_refuses_other_settings(dataset_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset_dir, copy)
    with pytest.raises(NavDatasetError, match="seed 7, not 8"):
        generate(copy, 4, seed=8, config=SMALL, progress=False)
    with pytest.raises(NavDatasetError, match="config"):
        generate(copy, 4, seed=7, config=NavDataConfig(depth=1, image_size=24), progress=False)


def test_paired_cues_drive_every_map_with_every_cue(dataset_dir, tmp_path):
    """paired_cues: episodes 2k and 2k+1 share a map and differ in the cue, so in the data a map's
    look says nothing of its turn; their images are the same wherever the cue is out of view until
    the expert turns at the first junction."""
    import dataclasses
    cfg = dataclasses.replace(SMALL, paired_cues=True)
    ds = load_dataset(generate(tmp_path / "paired", 4, seed=7, config=cfg, progress=False))
    seeds, cues = ds.episodes["seed"].tolist(), ds.episodes["cue"].tolist()
    assert seeds[0] == seeds[1] == episode_seed(7, 0) and seeds[2] == seeds[3] == episode_seed(7, 1)
    assert seeds[0] != seeds[2] and cues == [0, 1, 0, 1]
    a, b = (slice(int(ds.episodes["start"][e]), int(ds.episodes["start"][e] + ds.episodes["length"][e])) for e in (0, 1))
    pose_a, pose_b = ds.steps["pose"][a], ds.steps["pose"][b]
    same = int((pose_a[:min(len(pose_a), len(pose_b))] == pose_b[:len(pose_a)]).all(-1).cumprod(0).sum())
    assert 20 < same < min(len(pose_a), len(pose_b))      # one drive to the junction, then they part
    # without it (the default) every episode has its own map; a manifest written before the setting
    # existed reads as the default, so such a dataset can still be continued
    copy = tmp_path / "old"
    shutil.copytree(dataset_dir, copy)
    m = json.loads((copy / "manifest.json").read_text())
    del m["config"]["paired_cues"]
    (copy / "manifest.json").write_text(json.dumps(m))
    assert load_dataset(copy).config.paired_cues is False
    generate(copy, 4, seed=7, config=SMALL, progress=False)
    assert len(set(load_dataset(copy).episodes["seed"].tolist())) == 4


def test_bad_paths_give_clear_errors(tmp_path):
    with pytest.raises(NavDatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NavDatasetError, match="is a file"):
        load_dataset(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NavDatasetError, match="manifest.json is missing"):
        load_dataset(tmp_path / "empty")


def _broken(dataset_dir, tmp_path, edit):
    copy = tmp_path / "broken"
    shutil.copytree(dataset_dir, copy)
    edit(copy)
    return copy


def _edit_manifest(fn):
    def edit(path):
        m = json.loads((path / "manifest.json").read_text())
        fn(m)
        (path / "manifest.json").write_text(json.dumps(m))
    return edit


def _write_column(table, key, dtype, fn):
    def edit(path):
        f = path / table / f"{key}.memmap"
        a = np.fromfile(f, dtype)
        fn(a)
        a.tofile(f)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda p: (p / "steps" / "waypoints.memmap").unlink(), r"steps/waypoints.memmap is missing"),
    (lambda p: (p / "manifest.json").write_text("{not json"), r"cannot be read as JSON"),
    (_edit_manifest(lambda m: m.update(format="something/0")), r"format 'something/0'"),
    (_edit_manifest(lambda m: m["columns"]["steps"].pop("action")), r"steps column 'action' is missing"),
    (_edit_manifest(lambda m: m["columns"]["steps"].update(waypoints=["float32", [8, 2]])),
     r"steps column 'waypoints' is float32 \[8, 2\].*expected float32 \[5, 2\]"),
    (_edit_manifest(lambda m: m["config"].update(depth=7)), r"invalid settings.*config.depth"),
    (_edit_manifest(lambda m: m.update(num_steps=m["num_steps"] + 50)), r"holds \d+ bytes, but \d+ rows"),
    (_edit_manifest(lambda m: m.update(num_steps=m["num_steps"] - 1)), r"lengths sum to \d+, but there are"),
    (_edit_manifest(lambda m: m.update(num_episodes=0)), r"holds no episodes"),
    (lambda p: open(p / "steps" / "rgb.memmap", "r+b").truncate(100), r"rgb.memmap holds 100 bytes"),
    (_write_column("episodes", "length", np.int64, lambda a: a.__setitem__(slice(0, 2), a[[1, 0]])),
     r"starts are not the running sum|step row \d+ says episode"),
    (_write_column("steps", "episode", np.int64, lambda a: a.__setitem__(5, 2)), r"step row 5 says episode 2"),
    (_write_column("steps", "temporal_distance", np.int64, lambda a: a.__setitem__(0, 0)), r"temporal_distance"),
])
def test_malformed_datasets_name_the_problem(dataset_dir, tmp_path, edit, message):
    with pytest.raises(NavDatasetError, match=message):
        load_dataset(_broken(dataset_dir, tmp_path, edit))


def test_cli_generate_info_and_help(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["generate", "--out", str(out), "--episodes", "1", "--seed", "3", "--quiet",
                 "depth=1", "image_size=16"]) == 0
    assert "1 episodes" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0 and "MiB per episode" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", "--out", str(out), "--episodes", "2", "depth=9"]) == 2
    assert "config key 'depth'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--help"])
    assert exc.value.code == 0 and "waypoint_spacing" in capsys.readouterr().out


def test_replay_buffer_samples_slices_within_episodes(dataset_dir):
    ds = load_dataset(dataset_dir)
    rb = replay_buffer(ds, slice_len=8, batch_size=32)
    batch = rb.sample().reshape(4, 8)
    assert batch["rgb"].shape == (4, 8, 3, 16, 16)
    assert (batch["episode"] == batch["episode"][:, :1]).all()                 # never across episodes
    assert (batch["step"].diff(dim=1) == 1).all()                               # consecutive steps
    assert ds.goal_rgb(batch["episode"]).shape == (4, 8, 3, 16, 16)
