"""Drone env: gymnasium conformance, seeding, sequences, dynamics, collisions, goal; the AirSim
backend against a local stand-in server (tests/airsim_standin.py) speaking AirSim's msgpack-RPC."""
import importlib.util
import socket
import time

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.drone.airsim_env import AirSimConnectionError, ned_flip, quat_ned_flip
from envs.drone.drone_env import BODY_RADIUS, FIELDS, DroneEnv

SMALL = dict(image_size=16, max_episode_steps=30)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("seq_len", [1, 3])
def test_gymnasium_env_checker(field, seq_len):
    env = DroneEnv(field, seq_len=seq_len, render_mode="rgb_array", **SMALL)
    check_env(env, skip_render_check=False)
    img = env.render()
    assert img.shape == (160, 160, 3) and img.dtype == np.uint8
    assert ((img[..., 0] > 200) & (img[..., 1] < 60)).any()         # the drone is drawn (red)
    env.close()


def _rollout(env, seed, steps=20):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs["depth"].copy(), obs["state"].copy()]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
        out += [obs["depth"].copy(), obs["state"].copy(), np.array([r, info["path_length"]])]
        if term or trunc:
            break
    return out


def test_same_seed_same_observations_other_seed_differs():
    env, other = DroneEnv("forest", image_size=24), DroneEnv("forest", image_size=24)
    a, b, c = _rollout(env, 5), _rollout(env, 5), _rollout(other, 6)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])                            # another layout, another view
    env.close(), other.close()


def test_sequence_mode_stacks_oldest_first_and_repeats_the_first_frame():
    env = DroneEnv("forest", image_size=(12, 20), seq_len=4)
    obs, _ = env.reset(seed=0)
    assert obs["depth"].shape == (4, 1, 12, 20) and obs["state"].shape == (4, 11)
    assert obs["depth"].dtype == obs["state"].dtype == np.float32
    assert all(np.array_equal(obs["state"][0], s) for s in obs["state"])   # first frame repeated
    prev = obs
    for _ in range(3):
        obs, *_ = env.step(np.array([1.0, 0.3, 0.5], np.float32))
        np.testing.assert_array_equal(obs["state"][:-1], prev["state"][1:])  # window slides by one
        np.testing.assert_array_equal(obs["depth"][:-1], prev["depth"][1:])
        assert not np.array_equal(obs["state"][-1], prev["state"][-1])
        prev = obs
    single = DroneEnv("forest", image_size=(12, 20))
    o1, _ = single.reset(seed=0)
    assert o1["depth"].shape == (1, 12, 20) and o1["state"].shape == (11,)


def test_state_vector_entries_match_the_kinematics():
    env = DroneEnv("forest", image_size=16)
    obs, _ = env.reset(seed=2)
    for _ in range(5):
        obs, *_ = env.step(np.array([0.8, -0.5, 0.4], np.float32))
    k, goal, s = env.backend.get_state(), env.backend.goal, obs["state"]
    c, sn = np.cos(k.yaw), np.sin(k.yaw)
    rel = goal - k.pos
    np.testing.assert_allclose(s[0:3], [c * rel[0] + sn * rel[1], -sn * rel[0] + c * rel[1], rel[2]], atol=1e-5)
    np.testing.assert_allclose(s[3], np.linalg.norm(rel), atol=1e-5)
    np.testing.assert_allclose(s[4:7], [c * k.vel[0] + sn * k.vel[1], -sn * k.vel[0] + c * k.vel[1], k.vel[2]], atol=1e-5)
    np.testing.assert_allclose(np.arctan2(s[7], s[8]), np.arctan2(s[1], s[0]), atol=1e-5)
    np.testing.assert_allclose(s[9:11], [k.pos[2], k.yaw_rate], atol=1e-5)


def test_first_order_velocity_response_and_scaling():
    env = DroneEnv("forest", image_size=8, num_obstacles=0, tau_s=0.25)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([1.0, 1.0, 1.0], np.float32))
    frac = 1 - np.exp(-0.1 / 0.25)                                   # one 0.1 s step of the lag
    np.testing.assert_allclose(obs["state"][[4, 6, 10]], frac * np.array([2.0, 0.3, np.pi / 3]), rtol=0.02)
    for _ in range(30):
        obs, *_ = env.step(np.array([1.0, 1.0, 1.0], np.float32))
    np.testing.assert_allclose(obs["state"][10], np.pi / 3, rtol=1e-3)   # yaw rate settles at the limit
    np.testing.assert_allclose(obs["state"][6], 0.3, rtol=1e-3)
    # the lag acts in the world frame, so a turning drone settles below the commanded 2 m/s
    assert np.hypot(*obs["state"][4:6]) == pytest.approx(2.0 / np.hypot(1.0, np.pi / 3 * 0.25), rel=0.01)


def test_flying_into_an_obstacle_ends_the_episode():
    env = DroneEnv("forest", image_size=32, num_obstacles=1)
    env.reset(seed=1)
    be = env.backend
    (cx, cy, _), r = be.prims.cyl_center[0], be.prims.cyl_radius[0]
    gap = 1.5                                                          # body centre to tree surface
    be.teleport([cx - r - gap, cy, 2.0], 0.0)                          # facing the tree along +x
    obs, _, _, _, info = env.step(np.zeros(3, np.float32))
    teleported = info["path_length"]                                   # the jump counts as path: subtract it
    # the optical axis pixel sees the tree's near side from the front of the body
    assert obs["depth"][0, 15, 16] * env.max_depth == pytest.approx(gap - BODY_RADIUS, abs=1e-3)
    for t in range(30):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0], np.float32))
        if terminated:
            break
    assert terminated and not truncated and info["collision"] == 1.0 and info["success"] == 0.0
    assert reward < -9.0 and 3 <= t <= 15
    assert be.get_state().pos[0] < cx - r                              # stopped at the tree, not through it
    # contact once the sphere touches: within one 0.02 s substep (<= 4 cm) of gap - radius
    assert info["path_length"] - teleported == pytest.approx(gap - BODY_RADIUS, abs=0.05)


def test_descending_into_the_ground_is_a_collision():
    env = DroneEnv("walls", image_size=8)
    env.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0, -1.0], np.float32))
        if terminated:
            break
    assert terminated and info["collision"] == 1.0
    assert obs["state"][9] == pytest.approx(BODY_RADIUS, abs=0.05)


def test_steering_to_the_goal_succeeds_and_collects_the_bonus():
    env = DroneEnv("boxes", image_size=8, num_obstacles=0, goal_distance=(6.0, 6.0), max_episode_steps=200)
    obs, info = env.reset(seed=4)
    start_dist, total = float(info["distance_to_goal"]), 0.0
    for _ in range(200):
        s = obs["state"]   # steer with the state vector alone: heading error and relative height
        a = np.array([1.0, np.clip(3 * np.arctan2(s[7], s[8]), -1, 1), np.clip(2 * s[2], -1, 1)], np.float32)
        obs, reward, terminated, truncated, info = env.step(a)
        total += reward
        if terminated or truncated:
            break
    assert terminated and info["success"] == 1.0 and info["collision"] == 0.0
    assert info["distance_to_goal"] < env.goal_radius and reward > env.goal_bonus - 1.0
    assert info["path_length"] >= start_dist - env.goal_radius - 1e-3
    assert total > start_dist - env.goal_radius + env.goal_bonus - 2.0   # progress terms add up


def test_horizon_truncates():
    env = DroneEnv("forest", image_size=8, max_episode_steps=5)
    env.reset(seed=1)
    for t in range(5):
        _, _, term, trunc, info = env.step(np.zeros(3, np.float32))
        assert trunc == (t == 4) and not term
    assert info["collision"] == 0.0 and info["path_length"] == 0.0


@pytest.mark.parametrize("field", FIELDS)
def test_fields_spawn_clear_with_obstacles_and_a_far_goal(field):
    env = DroneEnv(field, image_size=8)
    for seed in range(4):
        _, info = env.reset(seed=seed)
        p = env.backend.prims
        assert len(p.box_yaw) + len(p.cyl_radius) > 0 and not env.backend._place()
        assert 15.0 - 2.0 <= info["distance_to_goal"] <= 25.0 + 2.0


# ----------------------------------------------------------------------------- AirSim backend
# the stand-in server and the built-in client need msgpack (a dependency of the airsim and dev extras)
HAVE_MSGPACK = importlib.util.find_spec("msgpack") is not None
if HAVE_MSGPACK:
    from airsim_standin import AirSimStandIn, standin_depth
CLIENTS = ["builtin"] + (["auto"] if importlib.util.find_spec("cosysairsim") else [])
needs_msgpack = pytest.mark.skipif(not HAVE_MSGPACK, reason="msgpack is not installed")


@pytest.fixture
def standin():
    with AirSimStandIn(wall_x=3.0, image_hw=(30, 40)) as server:
        yield server


def _airsim_env(server, client="builtin", **cfg):
    return DroneEnv(backend="airsim", image_size=(24, 32), max_episode_steps=100,
                    airsim={"port": server.port, "client": client, "goal": (20.0, 0.0, 3.0), **cfg})


def test_ned_conversion_is_a_rotation_and_its_own_inverse():
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ned_flip(ned_flip(v)), v)
    np.testing.assert_array_equal(ned_flip([0.0, 0.0, -2.0]), [0.0, 0.0, 2.0])      # 2 m up
    yaw_ned = 0.4                                                                  # clockwise from above
    q = quat_ned_flip(np.cos(yaw_ned / 2), 0.0, 0.0, np.sin(yaw_ned / 2))
    assert 2 * np.arctan2(q[3], q[0]) == pytest.approx(-yaw_ned)


@needs_msgpack
@pytest.mark.parametrize("client", CLIENTS)
def test_airsim_images_arrive_resampled_and_change_with_motion(standin, client):
    env = _airsim_env(standin, client)
    obs, _ = env.reset(seed=0)
    assert obs["depth"].shape == (1, 24, 32) and obs["state"].shape == (11,)
    req = standin.called("simGetImages")[-1][0][0]
    assert (req["camera_name"], req["image_type"], req["pixels_as_float"], req["compress"]) == ("0", 2, True, False)
    # the server's 30x40 image, resampled (nearest) to 24x32: 3 m to the wall from the start
    rows, cols = np.arange(24) * 30 // 24, np.arange(32) * 40 // 32
    expected = [[standin_depth(3.0, i, j, 30, 40) / env.max_depth for j in cols] for i in rows]
    np.testing.assert_allclose(obs["depth"][0], expected, rtol=1e-5)
    obs, *_ = env.step(np.array([1.0, 0.0, 0.0], np.float32))
    assert obs["depth"][0, 12, 16] * env.max_depth == pytest.approx(2.8, rel=0.02)   # 0.2 m closer
    env.close()


@needs_msgpack
@pytest.mark.parametrize("client", CLIENTS)
def test_airsim_motion_in_the_converted_frame(standin, client):
    env = _airsim_env(standin, client)
    obs0, _ = env.reset(seed=0)
    assert standin.pos == [0.0, 0.0, -3.0] and obs0["state"][9] == pytest.approx(3.0)   # after takeoff
    obs, *_ = env.step(np.array([1.0, 0.0, 0.0], np.float32))         # forward = north at yaw 0
    vx, vy, vz, duration, drivetrain, yaw_mode, name = standin.called("moveByVelocity")[-1]
    assert (vx, vy, vz, duration) == pytest.approx((2.0, 0.0, 0.0, 0.1)) and yaw_mode["is_rate"]
    assert standin.pos[0] == pytest.approx(0.2) and obs["state"][0] == pytest.approx(19.8)
    obs, *_ = env.step(np.array([0.0, 0.0, 1.0], np.float32))         # up in our frame
    assert standin.called("moveByVelocity")[-1][2] == pytest.approx(-0.3)   # NED z goes down
    assert standin.pos[2] == pytest.approx(-3.03) and obs["state"][9] == pytest.approx(3.03)
    for _ in range(15):                                              # +60 deg/s for 1.5 s: left turn of 90 deg
        obs, *_ = env.step(np.array([0.0, 1.0, 0.0], np.float32))
    assert standin.called("moveByVelocity")[-1][5]["yaw_or_rate"] == pytest.approx(-60.0)   # degrees/s, NED
    assert standin.yaw == pytest.approx(-np.pi / 2) and obs["state"][10] == pytest.approx(np.pi / 3)
    y0 = standin.pos[1]
    env.step(np.array([1.0, 0.0, 0.0], np.float32))                   # forward now = our +y = NED west
    vx, vy = standin.called("moveByVelocity")[-1][:2]
    assert vx == pytest.approx(0.0, abs=1e-9) and vy == pytest.approx(-2.0)
    assert standin.pos[1] == pytest.approx(y0 - 0.2)
    env.close()


@needs_msgpack
@pytest.mark.parametrize("client", CLIENTS)
def test_airsim_collision_terminates_and_reset_restores_the_start(standin, client):
    env = _airsim_env(standin, client)
    first, _ = env.reset(seed=0)
    for t in range(40):
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0], np.float32))
        if terminated:
            break
    assert terminated and info["collision"] == 1.0 and reward < -9.0 and t == 14   # 3 m at 0.2 m/step
    n_calls = len(standin.calls)
    again, info = env.reset(seed=0)
    calls = [m for m, _ in standin.calls[n_calls:]]
    assert calls[:4] == ["reset", "enableApiControl", "armDisarm", "takeoff"]
    assert standin.called("enableApiControl")[-1][0] is True and standin.called("armDisarm")[-1][0] is True
    assert standin.pos == [0.0, 0.0, -3.0] and info["collision"] == 0.0
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    _, _, terminated, _, info = env.step(np.zeros(3, np.float32))
    assert not terminated and info["collision"] == 0.0
    env.close()


@needs_msgpack
def test_airsim_configured_start_pose_and_goals(standin):
    goals = [[20.0, 0.0, 3.0], [0.0, 20.0, 3.0]]
    env = _airsim_env(standin, start=(1.0, 2.0, 4.0, np.pi / 2), goal=goals)
    seen = set()
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        assert standin.pos == pytest.approx([1.0, -2.0, -4.0]) and standin.yaw == pytest.approx(-np.pi / 2)
        assert obs["state"][9] == pytest.approx(4.0)
        seen.add(tuple(env.backend.goal))
    assert seen == {tuple(g) for g in goals}                        # one goal per reset, drawn from the seed
    env.step(np.array([1.0, 0.0, 0.0], np.float32))                  # facing our +y: forward = NED -y
    assert standin.called("moveByVelocity")[-1][1] == pytest.approx(-2.0)
    env.close()


@needs_msgpack
def test_airsim_collision_from_before_takeoff_is_ignored():
    with AirSimStandIn(wall_x=50.0, ground_contact_at_takeoff=True) as server:
        env = _airsim_env(server)
        env.reset(seed=0)
        assert server.rpc_simGetCollisionInfo("")["has_collided"]       # stale ground contact
        _, _, terminated, _, info = env.step(np.array([1.0, 0.0, 0.0], np.float32))
        assert not terminated and info["collision"] == 0.0
        env.close()


def test_airsim_unreachable_port_raises_a_clear_error_fast():
    with socket.socket() as s:                                       # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = DroneEnv(backend="airsim", airsim=dict(port=port))
    t0 = time.monotonic()
    with pytest.raises(AirSimConnectionError) as err:
        env.reset(seed=0)
    assert time.monotonic() - t0 < 5.0
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, RuntimeError)
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "Cosys-AirSim" in msg and "backend='pybullet'" in msg


@needs_msgpack
def test_airsim_silent_server_times_out_with_the_same_error():
    with socket.socket() as s:                                       # accepts TCP, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        env = DroneEnv(backend="airsim", airsim=dict(port=s.getsockname()[1], connect_timeout_s=0.5))
        t0 = time.monotonic()
        with pytest.raises(AirSimConnectionError, match="cannot reach AirSim"):
            env.reset(seed=0)
        assert time.monotonic() - t0 < 2.0


def test_straight_line_controller_reaches_every_goal_of_an_empty_field():
    """benchmarks/drone_straight_line.py, the vision-free bound of the drone reports: with no
    obstacles its goal seeking must reach every goal (a sign error in yaw, forward or climb cannot)."""
    from benchmarks.drone_straight_line import fly

    result = fly("configs/drone/gpu_forest.yaml", "mambazoo/DroneForest-v0", episodes=3, seed=0,
                 overrides=("env.num_obstacles=0", "env.image_size=16"))
    assert (result["success"], result["collision"], result["timeout"]) == (3, 0, 0)


def test_eval_layouts_do_not_depend_on_rendering():
    """The straight-line bound pairs its episodes with --eval's by building the same env with the
    same seed; --eval renders (a video) and the bound does not, so the layouts must not depend on it."""
    import torch

    from agents.drone.build import make_env
    from agents.drone.config import Config
    from agents.runtime.config import load_config

    cfg = load_config(Config, "configs/drone/gpu_forest.yaml", ["env.image_size=16"])
    starts = []
    for render in (False, True):
        env = make_env(cfg, seed=123, render=render)
        starts.append([env.reset()["observation"].clone() for _ in range(3)])
        env.close()
    assert all(torch.equal(a, b) for a, b in zip(*starts))
    assert not torch.equal(starts[0][0], starts[0][1])          # and the episodes differ
