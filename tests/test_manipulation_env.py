"""Panda manipulation env: gymnasium conformance, point clouds, seeding, scripted experts."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.manipulation.expert import make_expert, rollout
from envs.manipulation.panda_env import CUBE_HALF, TASKS, WORKSPACE_HIGH, WORKSPACE_LOW, PandaManipEnv
from envs.scene.point_cloud import crop, downsample, farthest_point_indices


@pytest.mark.parametrize("task", TASKS)
def test_gymnasium_env_checker(task):
    env = PandaManipEnv(task, horizon=10)
    check_env(env, skip_render_check=True)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_point_cloud_shape_workspace_and_geometry(task):
    env = PandaManipEnv(task)
    obs, info = env.reset(seed=5)
    assert info["task"] == task and info["success"] == 0
    rng = np.random.default_rng(0)
    for _ in range(3):
        pc = obs["point_cloud"]
        assert pc.shape == (512, 3) and pc.dtype == np.float32
        assert np.all(pc >= WORKSPACE_LOW.astype(np.float32)) and np.all(pc <= WORKSPACE_HIGH.astype(np.float32))
        assert len(np.unique(pc, axis=0)) == 512          # more than 512 points in view: no duplicates
        assert env.observation_space["agent_pos"].contains(obs["agent_pos"])
        obs, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    # back-projection is metric: table pixels land on z = 0, the cube's top face at its height
    raw = env.camera.back_project(env.camera.zbuffer(env._client))
    table = raw[(np.abs(raw[:, 2]) < 0.01) & (np.abs(raw[:, 1]) > 0.3)]   # beside every object
    assert len(table) > 1000 and np.abs(table[:, 2]).max() < 1e-3
    half, cube = CUBE_HALF[task], env.privileged_state()["object_pos"]
    on_cube = raw[np.all(np.abs(raw - cube) < half + 1e-3, axis=1)]
    assert len(on_cube) > 20 and abs(on_cube[:, 2].max() - 2 * half) < 2e-3
    env.close()


def test_downsample_fills_and_spreads():
    rng = np.random.default_rng(0)
    few = rng.uniform(0, 1, (10, 3))
    out = downsample(few, 32, rng)                      # all 10 points, then random duplicates
    assert out.shape == (32, 3) and np.array_equal(out[:10], few.astype(np.float32))
    assert all((few.astype(np.float32) == p).all(1).any() for p in out)
    assert np.all(downsample(np.zeros((0, 3)), 8, rng, fill=[1, 2, 3]) == [1, 2, 3])
    with pytest.raises(ValueError, match="sampling method"):
        downsample(few, 4, rng, method="grid")
    # two far clusters of very different sizes: FPS takes points from both
    pts = np.concatenate([rng.normal(0, 0.01, (1000, 3)), rng.normal(5, 0.01, (10, 3))])
    idx = farthest_point_indices(pts, 8, rng)
    assert len(set(idx.tolist())) == 8 and (idx >= 1000).any() and (idx < 1000).any()
    box = crop(pts, np.array([4.0] * 3), np.array([6.0] * 3))
    assert len(box) == 10


def _trace(env, seed, steps=4):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    out = [obs["point_cloud"], obs["agent_pos"]]
    for _ in range(steps):
        obs, r, *_ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        out += [obs["point_cloud"], obs["agent_pos"]]
    return out, env.privileged_state()["goal_pos"]


def test_seeding_determinism():
    env, other = PandaManipEnv("pick_place"), PandaManipEnv("pick_place")
    (a, goal_a), (b, goal_b) = _trace(env, 11), _trace(other, 11)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and np.array_equal(goal_a, goal_b)
    c, goal_c = _trace(env, 12)
    assert not np.array_equal(goal_a, goal_c) and not np.array_equal(a[0], c[0])
    env.close(), other.close()


@pytest.mark.parametrize("task", TASKS)
def test_scripted_expert_succeeds(task):
    env = PandaManipEnv(task, point_cloud=False)    # the expert plans on simulator state
    expert = make_expert(task)
    results = [rollout(env, expert, seed, record=False) for seed in range(10)]
    rate = np.mean([r["success"] for r in results])
    assert rate >= 0.9, f"{task}: expert success {rate:.2f}"
    assert max(r["length"] for r in results) < env.horizon
    env.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="task must be one of"):
        PandaManipEnv("stack")
    with pytest.raises(ValueError, match="sampling must be one of"):
        PandaManipEnv("push", sampling="grid")
    with pytest.raises(RuntimeError, match="reset"):
        PandaManipEnv("push").step(np.zeros(4, np.float32))
