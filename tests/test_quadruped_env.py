"""A1 quadruped env: gymnasium conformance, determinism, reward signs, ray-cast depth vs PyBullet."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.quadruped.a1_env import A1QuadrupedEnv
from envs.quadruped.courses import COURSES, make_layout
from envs.scene.obstacles import build_bodies
from envs.scene.depth_camera import DepthCamera, Primitives

SMALL = dict(horizon=20, image_size=32)


@pytest.mark.parametrize("course", COURSES)
def test_gymnasium_env_checker(course):
    import gymnasium as gym

    env = gym.make(envs.QUADRUPED_IDS[course], **SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def _rollout(env, seed, steps=15):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs["proprio"].copy(), obs["depth"].copy()]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.act_dim).astype(np.float32))
        out += [obs["proprio"].copy(), obs["depth"].copy(), np.array([r, info["distance"]])]
        if term or trunc:
            break
    return out


def test_same_seed_same_rollout_and_other_seed_differs():
    env = A1QuadrupedEnv("moving", **SMALL)
    a, b = _rollout(env, 3), _rollout(env, 3)
    other = A1QuadrupedEnv("moving", **SMALL)
    c = _rollout(other, 4)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    env.close(), other.close()


def test_walking_forward_beats_standing_and_fall_gives_fall_reward():
    env = A1QuadrupedEnv("flat", depth=False, horizon=50, energy_weight=0.0)
    env.reset(seed=0)
    _, r_stand, *_ = env.step(np.zeros(12, np.float32))
    # push the body forward at ~target speed between two steps: the progress term must pay
    env.reset(seed=0)
    c, robot = env._client, env._robot
    c.resetBaseVelocity(robot, [1.0, 0, 0], [0, 0, 0])
    _, r_forward, *_ = env.step(np.zeros(12, np.float32))
    env.reset(seed=0)
    c.resetBaseVelocity(robot, [-1.0, 0, 0], [0, 0, 0])
    _, r_backward, *_ = env.step(np.zeros(12, np.float32))
    assert r_forward > r_stand + 0.3 > r_backward + 0.3
    # flip the robot over: the episode ends with the fall reward
    env.reset(seed=0)
    pos, _ = c.getBasePositionAndOrientation(robot)
    c.resetBasePositionAndOrientation(robot, [pos[0], pos[1], 0.3], c.getQuaternionFromEuler([np.pi, 0, 0]))
    _, r_fall, terminated, truncated, info = env.step(np.zeros(12, np.float32))
    assert terminated and not truncated and info["fall"] == 1.0
    assert r_fall < -19.0
    env.close()


def test_horizon_truncates():
    env = A1QuadrupedEnv("flat", depth=False, horizon=5)
    env.reset(seed=1)
    for t in range(5):
        _, _, term, trunc, info = env.step(np.zeros(12, np.float32))
        assert trunc == (t == 4) and not term
    assert info["collisions"] == 0 and info["fall"] == 0.0


def test_collisions_are_counted():
    env = A1QuadrupedEnv("wide", depth=False, horizon=5)
    env.reset(seed=1)
    # put a box right where the robot stands: it touches an obstacle on the next step
    box = env._box_ids[0]
    pos, _ = env._client.getBasePositionAndOrientation(env._robot)
    env._client.resetBasePositionAndOrientation(box, [pos[0] + 0.25, pos[1], 0.2], [0, 0, 0, 1])
    _, _, _, _, info = env.step(np.zeros(12, np.float32))
    assert info["collisions"] == 1


def test_diagonal_action_drives_diagonal_legs_alike():
    env = A1QuadrupedEnv("flat", depth=False, diagonal_act=True, horizon=10)
    obs, _ = env.reset(seed=0)
    assert env.action_space.shape == (6,) and obs["proprio"].shape == (39,)
    env._client.resetBasePositionAndOrientation(env._robot, [0, 0, 1.0], [0, 0, 0, 1])  # legs in the air
    env._client.changeDynamics(env._robot, -1, mass=0)                                    # pinned body
    for _ in range(5):
        obs, *_ = env.step(np.array([0.5, 0.8, -0.6, -0.5, -0.8, 0.6], np.float32))
    q = obs["proprio"][:12].reshape(4, 3)                   # FR, FL, RR, RL offsets from standing
    np.testing.assert_allclose(q[0], q[3], atol=0.02)       # FR == RL
    np.testing.assert_allclose(q[1], q[2], atol=0.02)       # FL == RR
    assert np.abs(q[0] - q[1]).max() > 0.3


def _random_scene(seed):
    import pybullet as p
    import pybullet_data
    from pybullet_utils import bullet_client

    c = bullet_client.BulletClient(p.DIRECT)
    c.setAdditionalSearchPath(pybullet_data.getDataPath())
    c.loadURDF("plane.urdf")
    layout = make_layout("thin", np.random.default_rng(seed), num_obstacles=40, length=5.0, x_start=0.6)
    wide = make_layout("wide", np.random.default_rng(seed + 1), num_obstacles=6, length=5.0, x_start=0.8)
    pr = layout.prims
    merged = Primitives(np.r_[pr.box_center, wide.prims.box_center], np.r_[pr.box_half, wide.prims.box_half],
                        np.r_[pr.box_yaw, wide.prims.box_yaw], pr.cyl_center, pr.cyl_radius, pr.cyl_half_height)
    layout.prims = merged
    build_bodies(c, layout)
    return c, merged


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raycast_depth_matches_pybullet_renderer_pixel_by_pixel(seed):
    c, prims = _random_scene(seed)
    cam = DepthCamera(64)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        eye = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.5)])
        R = np.array(c.getMatrixFromQuaternion(c.getQuaternionFromEuler(
            [rng.uniform(-0.2, 0.2), rng.uniform(0.0, 0.5), rng.uniform(-0.6, 0.6)]))).reshape(3, 3)
        ours = cam.raycast(eye, R, prims)
        ref = cam.tiny_renderer_depth(c, eye, R)
        err = np.abs(ours - ref)
        assert ref.min() < cam.far * 0.5 and (ref < cam.far - 1e-3).mean() > 0.3   # a non-trivial view
        # all but silhouette pixels (the renderer draws cylinders as polygons) agree within 1 cm
        assert (err < 0.01).mean() > 0.98, f"only {(err < 0.01).mean():.3f} of pixels agree"
        assert np.median(err) < 1e-3
    c.disconnect()


def test_raycast_sees_an_obstacle_in_front_at_the_right_distance():
    cam = DepthCamera(32, fov_deg=60, far=4.0)
    wall = Primitives(np.array([[2.1, 0, 0.5]]), np.array([[0.1, 1.0, 0.5]]), np.zeros(1),
                      np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    depth = cam.raycast(np.array([0.0, 0, 0.3]), np.eye(3), wall)   # looking along +x, level
    assert abs(depth[15, 16] - 2.0) < 1e-6          # the wall's near face is 2 m ahead
    assert depth[0, 16] == pytest.approx(cam.far)   # above the 1 m wall: nothing within far


def test_gait_prior_adds_phase_and_a_trot_reference():
    plain = A1QuadrupedEnv("flat", depth=False, horizon=30)
    trot = A1QuadrupedEnv("flat", depth=False, horizon=30, gait="trot", gait_freq=2.0, gait_height=0.25)
    assert trot.observation_space["proprio"].shape[0] == plain.observation_space["proprio"].shape[0] + 2
    obs, _ = trot.reset(seed=0)
    assert np.allclose(obs["proprio"][-2:], [0.0, 1.0])            # phase (sin, cos) at t=0
    plain.reset(seed=0)
    assert np.allclose(plain._gait_reference(), 0.0)
    trot._sim_time = 0.125                                          # a quarter cycle at 2 Hz
    ref = trot._gait_reference().reshape(4, 3)
    # FR and RL lifted fully (sin = 1), FL and RR in stance (sin = -1); thigh +h, calf -2h, hip 0
    assert np.allclose(ref[[0, 3]], [[0.0, 0.25, -0.5]] * 2) and np.allclose(ref[[1, 2]], 0.0)
    for _ in range(5):
        obs, *_ = trot.step(np.zeros(12, np.float32))
    assert trot._sim_time == pytest.approx(0.125 + 5 * 16 * 0.0025)   # physics time, 16 substeps a step
    trot.reset(seed=0)
    assert trot._sim_time == 0.0                                    # the phase restarts every episode
    with pytest.raises(ValueError, match="gait must be one of"):
        A1QuadrupedEnv("flat", gait="gallop")
    plain.close(), trot.close()
