"""Navigation env (envs/navigation/nav_env.py): gymnasium conformance, seeding, maps, collisions, rendering
against TinyRenderer, the scripted expert, and the point of the task: junctions whose views are
pixel-identical across cues while the right turn differs, so a memoryless policy is at chance."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.navigation.expert import NavExpert, rollout, waypoint_labels
from envs.navigation.maps import CUE_BASE, FREE, START_ROOM, distance_field, make_layout
from envs.navigation.render import GridCamera, tiny_renderer_rgb
from envs.navigation.nav_env import BulletCollider, GridCollider, NavigationEnv


@pytest.fixture(scope="module")
def env():
    e = NavigationEnv()
    yield e
    e.close()


def test_gymnasium_env_checker():
    env = NavigationEnv(depth=1, image_size=32, render_mode="rgb_array", max_episode_steps=20)
    check_env(env, skip_render_check=False)
    obs, info = env.reset(seed=0)
    assert obs["rgb"].shape == obs["goal_rgb"].shape == (3, 32, 32) and obs["rgb"].dtype == np.uint8
    assert set(info) >= {"success", "collision", "distance_to_goal", "path_length", "cue", "pose",
                         "geodesic_distance", "shortest_path_length"}
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert ((img[..., 0] > 200) & (img[..., 1] < 60)).any()            # the robot is drawn (red)
    env.close()


def _random_rollout(env, seed, steps=25):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs["rgb"], obs["goal_rgb"], info["pose"]]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        out += [obs["rgb"], info["pose"], np.array([r, info["path_length"], info["collision"]])]
        if term or trunc:
            break
    return out


def test_same_seed_same_episode_other_seed_differs(env):
    other = NavigationEnv()
    a, b, c = _random_rollout(env, 3), _random_rollout(other, 3), _random_rollout(env, 4)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    other.close()


@pytest.mark.parametrize("depth, style", [(1, "room"), (2, "room"), (2, "panel"), (3, "panel")])
def test_maps_are_solvable_symmetric_and_the_cue_faces_only_the_start_room(depth, style):
    for seed in range(12):
        lay = make_layout(np.random.default_rng(seed), depth, cue_style=style)
        free = lay.free
        assert len(lay.junctions) == 2 ** depth - 1 and len(lay.leaf_goals) == 2 ** depth
        sx, sy = (int(v) for v in lay.start[:2])
        field = distance_field(free, (sx, sy))
        leaf = [field[int(g[1]), int(g[0])] for g in lay.leaf_goals]
        assert np.isfinite(leaf).all() and np.ptp(leaf) < 1e-6           # every leaf equally far: no shortcut
        for jx, jy in lay.junctions:                                    # a T: exactly three open sides
            assert free[int(jy), int(jx)] and sum(free[int(jy) + dy, int(jx) + dx]
                                                  for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))) == 3
        col = GridCollider(0.2)
        col.build(lay.grid)
        assert not col.hits(*lay.start[:2]) and not col.hits(*lay.goal[:2])
        assert lay.zone[int(lay.start[1]), int(lay.start[0])] == 1
        assert [lay.zone[int(g[1]), int(g[0])] for g in lay.leaf_goals] == list(range(2, 2 + 2 ** depth))
        # cue panels face the start room only, so they are out of sight once the robot has left
        assert tuple(lay.cue_cell) in set(map(tuple, lay.cue_cells))
        assert (lay.grid >= CUE_BASE).sum() == len(lay.cue_cells) >= 1 + 4 * (style == "room")
        zone = np.pad(lay.zone, 1, constant_values=-1)                 # a panel may be in the border
        for cx, cy in lay.cue_cells:
            assert lay.grid[cy, cx] == CUE_BASE + lay.cue
            near = [zone[1 + cy + dy, 1 + cx + dx] for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
            assert 1 in near and set(near) <= {-1, 1}
        assert (lay.grid == START_ROOM).any() and ((lay.zone >= 0) == free).all()


def test_forcing_the_cue_keeps_the_map_and_the_goal_image(env):
    views = []
    for cue in range(4):
        env.reset(seed=11, options={"cue": cue})
        lay = env.layout
        views.append((lay.grid.copy(), env._goal_rgb.copy(), len(lay.cue_cells), lay.turns))
    g0 = views[0][0]
    for cue, (grid, goal, cell, turns) in enumerate(views):
        assert turns == ((cue >> 1) & 1, cue & 1)
        same = grid == g0
        assert cell == views[0][2] and same.sum() == same.size - cell * (cue != 0)   # only the cue cells differ
        assert np.array_equal(goal, views[0][1])                            # same goal image in every leaf


def test_all_junctions_look_the_same_and_so_do_all_leaves(env):
    cam = GridCamera(64)
    for seed in range(4):
        env.reset(seed=seed)
        lay = env.layout
        for yaw_off, back in ((0.0, 1.0), (0.25, 0.75), (-0.3, 0.5)):
            imgs = []
            for j in lay.junctions:
                ix, iy = int(j[0]), int(j[1])
                d = [(dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)) if not lay.free[iy + dy, ix + dx]][0]
                yaw = np.arctan2(d[1], d[0])                  # facing the T's wall, in its stem
                imgs.append(cam.render(lay, (j[0] - back * d[0], j[1] - back * d[1], yaw + yaw_off)))
            assert all(np.array_equal(imgs[0], im) for im in imgs[1:]), (seed, yaw_off)
        goals = [cam.render(lay, g) for g in lay.leaf_goals]
        assert all(np.array_equal(goals[0], im) for im in goals[1:])


def _first_divergence(a, b):
    n = min(len(a["action"]), len(b["action"]))
    return int(np.nonzero((a["action"][:n] != b["action"][:n]).any(1))[0][0])


def test_junction_views_are_pixel_identical_but_the_right_turn_differs(env):
    expert = NavExpert(env)
    eps = [rollout(env, expert, seed=5, options={"cue": c}) for c in range(4)]
    assert all(e["success"] for e in eps)
    for a, b, level in ((0, 2, 0), (1, 3, 0), (0, 1, 1), (2, 3, 1)):     # cues that differ in one turn
        A, B = eps[a], eps[b]
        t = _first_divergence(A, B)
        assert np.array_equal(A["pose"][:t + 1], B["pose"][:t + 1])     # same trajectory up to the decision
        assert np.array_equal(A["rgb"][t], B["rgb"][t])                 # what the robot sees: identical
        assert np.array_equal(A["goal_rgb"], B["goal_rgb"])             # and the goal image too
        assert not np.array_equal(A["rgb"][0], B["rgb"][0])             # only the cue at the start told them apart
        # ... and the cue was out of sight for a long time before the decision
        last_seen = np.nonzero((A["rgb"][:t] != B["rgb"][:t]).reshape(t, -1).any(1))[0].max()
        assert t - last_seen > 20
        # the turn: heading change 10 steps after the decision has opposite signs
        turn = [np.sign(((E["pose"][t + 10, 2] - E["pose"][t, 2] + np.pi) % (2 * np.pi)) - np.pi) for E in (A, B)]
        assert turn[0] == -turn[1] != 0
        # the junction is the one of this level, the decision within a metre of its centre
        jc = env.layout.junctions[0 if level == 0 else 1 + (a >> 1)]
        assert np.hypot(*(A["pose"][t, :2] - jc)) < 1.0


def test_a_memoryless_policy_is_at_chance_at_the_junctions(env):
    """Best possible policy that maps (current image, goal image) to a turn, fitted on the very data
    it is scored on: at the decision steps it scores exactly 50%; knowing the cue gives 100%."""
    expert = NavExpert(env)
    table, with_memory = {}, []
    for seed in (6, 7):
        eps = [rollout(env, expert, seed=seed, options={"cue": c}) for c in range(4)]
        for a, b, level in ((0, 2, 0), (1, 3, 0), (0, 1, 1), (2, 3, 1)):
            t = _first_divergence(eps[a], eps[b])
            for c in (a, b):
                E = eps[c]
                wp, _, _ = waypoint_labels(E["pose"])
                right = int(wp[t, -1, 1] < 0)                          # the label's last waypoint is to the right
                key = (E["rgb"][t].tobytes(), E["goal_rgb"].tobytes())
                table.setdefault(key, []).append(right)
                with_memory.append(right == (c >> (1 - level)) & 1)    # remembered cue bit of this level
    best = sum(max(v.count(0), v.count(1)) for v in table.values())
    assert best / sum(len(v) for v in table.values()) == 0.5
    assert all(len(set(v)) == 2 for v in table.values())                # every view needs both turns
    assert all(with_memory)                                             # the cue (seen ~40+ steps before) decides


def test_expert_reaches_the_goal(env):
    expert = NavExpert(env)
    wins, spl = 0, []
    for seed in range(100, 120):
        ep = rollout(env, expert, seed=seed)
        wins += ep["success"]
        assert not ep["collision"]
        spl.append(ep["success"] * ep["shortest_path_length"] / max(ep["path_length"], ep["shortest_path_length"]))
    assert wins >= 18, f"expert success {wins}/20"
    assert np.mean(spl) > 0.85


def test_collisions_stop_the_robot_and_terminate(env):
    for terminate in (True, False):
        e = NavigationEnv(terminate_on_collision=terminate, collision_backend="pybullet")
        e.reset(seed=2)
        hit = None
        for _ in range(60):                                           # drive straight at whatever is ahead
            obs, r, term, trunc, info = e.step(np.array([1.0, 0.0], np.float32))
            if info["collision"]:
                hit = (term, r, info["pose"])
                break
        assert hit is not None and hit[0] == terminate and hit[1] < -5
        col = GridCollider(e.robot_radius)
        col.build(e.layout.grid)
        assert not col.hits(*hit[2][:2])                              # stopped at its last free pose
        if not terminate:                                             # still blocked, still no penetration
            obs, r, term, trunc, info = e.step(np.array([1.0, 0.0], np.float32))
            assert info["collision"] and not term and not col.hits(*info["pose"][:2])
        e.close()


def test_a_wrong_leaf_ends_the_episode_only_when_asked():
    """The expert's drive to leaf 1, replayed on the same map with the goal in leaf 0 (forcing the
    cue keeps the map): with terminate_on_wrong_leaf the episode ends unsuccessfully as the robot
    enters leaf 1; without it the robot is in the wrong leaf and the episode goes on."""
    kw = dict(depth=1, image_size=32, collision_backend="grid")
    right = NavigationEnv(**kw)
    ep = rollout(right, NavExpert(right), seed=4, options={"cue": 1})
    assert ep["success"]
    actions = ep["action"]
    right.close()
    for terminate in (True, False):
        e = NavigationEnv(terminate_on_wrong_leaf=terminate, **kw)
        _, info = e.reset(seed=4, options={"cue": 0})
        assert info["wrong_leaf"] == 0
        ended, seen = None, False
        for t, a in enumerate(actions):
            obs, r, term, trunc, info = e.step(a)
            seen |= bool(info["wrong_leaf"])
            assert not info["success"]
            if term or trunc:
                ended = (t, term, info)
                break
        if terminate:
            assert ended is not None and ended[1] and ended[2]["wrong_leaf"] == 1 and not ended[2]["collision"]
            assert ended[0] < len(actions) - 1                          # before the expert's goal
        else:
            assert seen and (ended is None or not ended[2]["wrong_leaf"])
        e.close()


def test_pybullet_and_grid_collisions_agree():
    lay = make_layout(np.random.default_rng(0))
    a, b = BulletCollider(0.2), GridCollider(0.2)
    a.build(lay.grid), b.build(lay.grid)
    rng = np.random.default_rng(1)
    free = np.argwhere(lay.free)
    hits = 0
    near = GridCollider(0.201), GridCollider(0.199)
    near[0].build(lay.grid), near[1].build(lay.grid)
    for iy, ix in free[rng.integers(len(free), size=600)]:
        x, y = ix + rng.uniform(0, 1), iy + rng.uniform(0, 1)
        if near[0].hits(x, y) != near[1].hits(x, y):                    # skip the 1 mm shell around contact
            continue
        assert a.hits(x, y) == b.hits(x, y), (x, y)
        hits += b.hits(x, y)
    assert 30 < hits < 570                                            # both outcomes were exercised
    a.close()


def test_ray_caster_sees_the_walls_tinyrenderer_sees():
    import pybullet as p
    from pybullet_utils import bullet_client

    lay = make_layout(np.random.default_rng(3))
    cam = GridCamera(64)
    client = bullet_client.BulletClient(connection_mode=p.DIRECT)
    rng = np.random.default_rng(0)
    free = np.argwhere(lay.free)
    built = False
    for iy, ix in free[rng.integers(len(free), size=4)]:
        pose = (ix + rng.uniform(0.3, 0.7), iy + rng.uniform(0.3, 0.7), rng.uniform(-np.pi, np.pi))
        tiny = tiny_renderer_rgb(client, lay, pose, cam, boxes_built=built)
        built = True
        t, mat, _, _ = cam.cast(lay.grid, pose)
        z = cam.v[:, None] * t[None]
        ours = (z >= -cam.eye) & (z <= cam.wall_h - cam.eye)          # [H, W] wall pixels
        theirs = ~(tiny == 255).all(0)                                # TinyRenderer: white where no geometry
        assert (ours == theirs).mean() > 0.97
        # and the same walls: TinyRenderer lights colours differently, but the hue (chromaticity) at
        # the horizon names the material our caster hit
        cols = (ours & theirs).all(0)
        if cols.any():
            chroma = lambda c: c / np.maximum(c.sum(-1, keepdims=True), 1)   # noqa: E731
            lit = chroma(tiny[:, cam.h // 2, cols].T.astype(float))         # [n, 3]
            palette = chroma(lay.colours[1:].astype(float))                  # every wall material
            named = 1 + np.abs(lit[:, None] - palette[None]).sum(-1).argmin(1)
            assert np.mean(named == mat[cols]) > 0.9
    client.disconnect()


def test_success_near_the_goal_and_waypoint_labels(env):
    env.reset(seed=1)
    gx, gy, gyaw = env.layout.goal
    env.pose = np.array([gx - 0.5 * np.cos(gyaw), gy - 0.5 * np.sin(gyaw), gyaw])
    _, r, term, _, info = env.step(np.array([0.5, 0.0], np.float32))   # 0.125 m closer: inside 0.4 m
    assert term and info["success"] == 1 and r > 5 and info["distance_to_goal"] < env.goal_radius
    # labels: straight drive at 0.2 m/step along yaw 0.7, then stop
    yaw = 0.7
    pose = np.array([[1 + 0.2 * k * np.cos(yaw), 2 + 0.2 * k * np.sin(yaw), yaw] for k in range(8)])
    wp, wyaw, dist = waypoint_labels(pose, num=5, spacing=1)
    assert wp.shape == (8, 5, 2) and wyaw.shape == (8, 5) and dist.tolist() == list(range(7, -1, -1))
    np.testing.assert_allclose(wp[0], [[0.2 * k, 0] for k in range(1, 6)], atol=1e-5)
    np.testing.assert_allclose(wp[5], [[0.2, 0], [0.4, 0], [0.4, 0], [0.4, 0], [0.4, 0]], atol=1e-5)  # clamped
    np.testing.assert_allclose(wp[7], 0, atol=1e-6)
    wp2, _, _ = waypoint_labels(pose, num=5, spacing=2)
    np.testing.assert_allclose(wp2[0, :3], [[0.4, 0], [0.8, 0], [1.2, 0]], atol=1e-5)


def test_free_cells_only_inside_the_border():
    lay = make_layout(np.random.default_rng(9), 2)
    g = lay.grid
    assert (g[0] != FREE).all() and (g[-1] != FREE).all() and (g[:, 0] != FREE).all() and (g[:, -1] != FREE).all()


def test_torchrl_wrapper_specs():
    from torchrl.envs import GymWrapper
    from torchrl.envs.utils import check_env_specs

    env = GymWrapper(NavigationEnv(image_size=16, max_episode_steps=10))
    env.set_info_dict_reader()                                        # info keys become tensordict entries
    check_env_specs(env)
    td = env.rollout(3)
    assert td["rgb"].shape == (3, 3, 16, 16) and td["next", "pose"].shape == (3, 3)
    env.close()
