"""Image-goal navigation through T-maze trees whose junctions look alike (MambaViNT's task).

A wheeled robot (a unicycle of radius ``robot_radius``) drives through a map of rooms and corridors
from envs/navigation/maps.py: it starts in a room facing a coloured cue panel, then passes ``depth``
visually identical T-junctions; the colour of the cue tells which way to turn at each of them, and
the goal image (the camera view at the goal pose) is the same in every leaf room. So the right
action at a junction is ambiguous without memory of the start of the episode.

Why 2-D kinematics with PyBullet only for collisions: a ViNT-style robot is driven by velocity
commands its base controller tracks; integrating the unicycle exactly in numpy reproduces that with
no wheel slip, solver tuning or drift, costs microseconds and is bit-for-bit deterministic (the
ambiguity tests compare images bitwise). PyBullet (DIRECT) holds the walls as merged boxes and a
sphere for the body and answers contact queries (~20 us each, exact for sphere vs box); the numpy
``GridCollider`` answers the same question and cross-checks it in the tests (and needs no
PyBullet: ``collision_backend="grid"``). Images come from the grid ray caster in envs/navigation/render.py,
3.6x cheaper than TinyRenderer on the same scene at 64 px and with the shading the CNN needs.

Action Box(-1, 1, (2,)), scaled inside: [linear speed * max_speed (m/s), turn rate * max_turn_rate
(rad/s, counter-clockwise)], held for ``control_period_s``. Observation Dict: "rgb" and "goal_rgb",
uint8 [3, H, W]. Success: within ``goal_radius`` of the goal position (terminates). Collision: the
body touches a wall; it stops at its last free pose of the step, and the episode terminates unless
``terminate_on_collision=False``. Wrong leaf: with ``terminate_on_wrong_leaf=True`` the episode also
terminates (unsuccessfully) when the body's centre enters a leaf room other than the goal's, so a
policy that guessed wrong at a junction cannot turn back and succeed: success then measures memory
of the cue (off by default: the demonstrations and DART data never need it). Reward: decrease of the geodesic distance to the goal (m) -
step_cost, + goal_bonus on success, + collision_penalty on a collision (the demonstrations do not
use it). info: success, collision, distance_to_goal (straight line, m), geodesic_distance (m, cell
resolution), wrong_leaf (1 when the centre is in a wrong leaf room), path_length (m), shortest_path_length (m: the geodesic at reset through cell centres,
~4% above what the expert drives since it cannot cut corners; SPL against the expert's path length
for the same seed is the tighter reference), cue, and pose [x, y, yaw] (world frame; for the
scripted expert and for plots, never for the policy).
``reset(options={"cue": c})`` forces the cue without changing the map. ``cue_style`` "room" paints
the start room's walls in the cue colour, "panel" one wall cell (see nav_maps.make_layout).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.navigation.maps import FREE, NavLayout, distance_field, make_layout
from envs.navigation.render import GridCamera, wall_boxes


class GridCollider:
    """Exact disc-versus-wall-cells test in numpy (the reference for the PyBullet query)."""

    def __init__(self, radius: float):
        self.radius = radius

    def build(self, grid: np.ndarray) -> None:
        self.grid = grid

    def hits(self, x: float, y: float) -> bool:
        r, g = self.radius, self.grid
        for iy in range(int(np.floor(y - r)), int(np.floor(y + r)) + 1):
            for ix in range(int(np.floor(x - r)), int(np.floor(x + r)) + 1):
                if g[iy, ix] != FREE:
                    px, py = min(max(x, ix), ix + 1), min(max(y, iy), iy + 1)   # closest point of the cell
                    if (x - px) ** 2 + (y - py) ** 2 < r * r:
                        return True
        return False

    def close(self) -> None:
        pass


class BulletCollider:
    """Walls as static PyBullet boxes (merged runs of wall cells), the robot as a sphere of the body
    radius at mid-height: ``hits`` places the sphere, runs collision detection and looks for
    penetrating contacts. One body per box: PyBullet silently keeps only the first 16 children of a
    compound shape (createCollisionShapeArray), which would leave most walls out."""

    def __init__(self, radius: float, wall_height: float = 1.0):
        self.radius, self.wall_h, self._client = radius, wall_height, None

    def build(self, grid: np.ndarray) -> None:
        from envs.scene.bullet import bullet_client

        if self._client is None:
            self._client = bullet_client()      # without PyBullet's banner lines in the logs
        import pybullet as p                    # after the client: the first import prints a banner
        c = self._client
        c.resetSimulation()
        for x0, y0, x1, y1, _ in wall_boxes(grid):
            shape = c.createCollisionShape(p.GEOM_BOX, halfExtents=[(x1 - x0) / 2, (y1 - y0) / 2, self.wall_h / 2])
            c.createMultiBody(0, shape, basePosition=[(x0 + x1) / 2, (y0 + y1) / 2, self.wall_h / 2])
        # mass > 0: Bullet never pairs two static bodies (stepSimulation is never called)
        self._robot = c.createMultiBody(1.0, c.createCollisionShape(p.GEOM_SPHERE, radius=self.radius))

    def hits(self, x: float, y: float) -> bool:
        c = self._client
        c.resetBasePositionAndOrientation(self._robot, [x, y, self.wall_h / 2], [0, 0, 0, 1])
        c.performCollisionDetection()
        # contact manifolds also hold points a little apart (the breaking threshold): keep penetrations
        return any(pt[8] < 0 for pt in c.getContactPoints(bodyA=self._robot))

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client = None


def unicycle(pose: np.ndarray, v: float, w: float, dt: float) -> np.ndarray:
    """Exact integration of x' = v cos(yaw), y' = v sin(yaw), yaw' = w over dt."""
    x, y, yaw = pose
    if abs(w) < 1e-9:
        x, y = x + v * dt * np.cos(yaw), y + v * dt * np.sin(yaw)
    else:
        x = x + v / w * (np.sin(yaw + w * dt) - np.sin(yaw))
        y = y - v / w * (np.cos(yaw + w * dt) - np.cos(yaw))
    return np.array([x, y, (yaw + w * dt + np.pi) % (2 * np.pi) - np.pi])


class NavigationEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, depth: int = 2, image_size=64, fov_deg: float = 90.0, max_episode_steps: int = 500,
                 control_period_s: float = 0.25, max_speed: float = 1.0, max_turn_rate: float = 1.5,
                 goal_radius: float = 0.4, robot_radius: float = 0.2, terminate_on_collision: bool = True,
                 collision_backend: str = "pybullet", substeps: int = 4, step_cost: float = 0.01,
                 goal_bonus: float = 10.0, collision_penalty: float = -10.0, cue_style: str = "room",
                 terminate_on_wrong_leaf: bool = False, render_mode: str | None = None):
        if collision_backend not in ("pybullet", "grid"):
            raise ValueError(f"collision_backend must be 'pybullet' or 'grid', got {collision_backend!r}")
        if not 1 <= int(depth) <= 3:
            raise ValueError(f"depth must be 1, 2 or 3, got {depth}")
        if cue_style not in ("room", "panel"):
            raise ValueError(f"cue_style must be 'room' or 'panel', got {cue_style!r}")
        self.depth, self.max_episode_steps, self.dt = int(depth), int(max_episode_steps), control_period_s
        self.max_speed, self.max_turn_rate, self.goal_radius = max_speed, max_turn_rate, goal_radius
        self.robot_radius, self.terminate_on_collision, self.substeps = robot_radius, terminate_on_collision, substeps
        self.step_cost, self.goal_bonus, self.collision_penalty = step_cost, goal_bonus, collision_penalty
        self.render_mode, self.collision_backend, self.cue_style = render_mode, collision_backend, cue_style
        self.terminate_on_wrong_leaf = bool(terminate_on_wrong_leaf)
        self.camera = GridCamera(image_size, fov_deg=fov_deg)
        img = spaces.Box(0, 255, (3, self.camera.h, self.camera.w), np.uint8)
        self.observation_space = spaces.Dict({"rgb": img, "goal_rgb": img})
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.collider = (BulletCollider if collision_backend == "pybullet" else GridCollider)(robot_radius)
        self.layout: NavLayout | None = None

    # ------------------------------------------------------------------------------- helpers
    def view(self, pose) -> np.ndarray:
        """Camera image uint8 [3, H, W] at any pose of the current map (tests, goal images)."""
        return self.camera.render(self.layout, pose)

    def geodesic(self, xy) -> float:
        """Shortest free-space distance to the goal (m), at cell resolution: via the best neighbouring
        cell centre of the distance field, or straight when in the goal cell."""
        x, y = xy
        ix, iy = int(np.floor(x)), int(np.floor(y))
        gx, gy = self.layout.goal[:2]
        best = np.hypot(x - gx, y - gy) if (ix, iy) == (int(np.floor(gx)), int(np.floor(gy))) else np.inf
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                u, v = ix + dx, iy + dy
                if self._free[v, u] and (not (dx and dy) or (self._free[iy, u] and self._free[v, ix])):
                    best = min(best, self._field[v, u] + np.hypot(x - u - 0.5, y - v - 0.5))
        return float(best)

    def in_wrong_leaf(self) -> bool:
        """Whether the body's centre is in a leaf room other than the goal's (NavLayout.in_wrong_leaf)."""
        return bool(self.layout.in_wrong_leaf(self.pose[:2]))

    def _info(self, success: bool, collision: bool) -> dict:
        # numpy scalars: TorchRL's info reader reads their dtype
        return {"success": np.float32(success), "collision": np.float32(collision),
                "wrong_leaf": np.float32(self.in_wrong_leaf()),
                "distance_to_goal": np.float32(np.hypot(*(self.pose[:2] - self.layout.goal[:2]))),
                "geodesic_distance": np.float32(self._geo), "path_length": np.float32(self._path),
                "shortest_path_length": np.float32(self._shortest), "cue": np.int64(self.layout.cue),
                "pose": self.pose.astype(np.float32)}

    def _observe(self) -> dict:
        return {"rgb": self.view(self.pose), "goal_rgb": self._goal_rgb.copy()}

    # ------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        self.layout = make_layout(self.np_random, self.depth, options.get("cue"), self.cue_style)
        self.collider.build(self.layout.grid)
        self._free = self.layout.free
        gx, gy = self.layout.goal[:2]
        self._field = distance_field(self._free, (int(np.floor(gx)), int(np.floor(gy))))
        self._goal_rgb = self.view(self.layout.goal)
        self.pose = self.layout.start.copy()
        self._geo = self._shortest = self.geodesic(self.pose[:2])
        self._steps, self._path, self._trail = 0, 0.0, [self.pose[:2].copy()]
        return self._observe(), self._info(False, False)

    def step(self, action):
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        v, w, h = a[0] * self.max_speed, a[1] * self.max_turn_rate, self.dt / self.substeps
        collision, start = False, self.pose
        for _ in range(self.substeps):       # stop at the last free pose (<= 6 cm at full speed)
            nxt = unicycle(self.pose, v, w, h)
            if self.collider.hits(nxt[0], nxt[1]):
                collision = True
                break
            self.pose = nxt
        self._steps += 1
        self._path += float(np.hypot(*(self.pose[:2] - start[:2])))
        self._trail.append(self.pose[:2].copy())
        geo = self.geodesic(self.pose[:2])
        success = not collision and np.hypot(*(self.pose[:2] - self.layout.goal[:2])) < self.goal_radius
        reward = (self._geo - geo) - self.step_cost + self.goal_bonus * success + self.collision_penalty * collision
        self._geo = geo
        wrong = self.terminate_on_wrong_leaf and not success and self.in_wrong_leaf()
        terminated = bool(success or (collision and self.terminate_on_collision) or wrong)
        truncated = self._steps >= self.max_episode_steps and not terminated
        return self._observe(), float(reward), terminated, truncated, self._info(success, collision)

    def render(self) -> np.ndarray:
        """RGB uint8: top-down map (walls in their colours, trail blue, goal green, robot red with a
        heading tick), and under it the camera view and the goal image at 2x. Pure numpy."""
        if self.layout is None:
            raise RuntimeError("call reset() before render()")
        L, s = self.layout, max(2, min(8, 320 // max(self.layout.grid.shape)))   # px per cell
        top = np.where((L.grid == FREE)[..., None], np.uint8(235), (L.colours[L.grid] * 0.7).astype(np.uint8))
        top = top.repeat(s, 0).repeat(s, 1)

        def dot(xy, colour, r):
            c, row = int(xy[0] * s), int(xy[1] * s)
            top[max(row - r, 0):row + r + 1, max(c - r, 0):c + r + 1] = colour

        for xy in self._trail:
            dot(xy, (40, 90, 220), 0)
        dot(L.goal[:2], (30, 170, 60), max(1, s // 2))
        dot(self.pose[:2], (220, 40, 40), max(1, s // 3))
        for t in np.linspace(0.0, 0.8, 6):
            dot(self.pose[:2] + t * np.array([np.cos(self.pose[2]), np.sin(self.pose[2])]), (220, 40, 40), 0)
        top = top[::-1]                       # north up
        views = np.concatenate([self.view(self.pose), self._goal_rgb], 2).transpose(1, 2, 0).repeat(2, 0).repeat(2, 1)
        w = max(top.shape[1], views.shape[1])
        pad = lambda im: np.pad(im, ((0, 0), (0, w - im.shape[1]), (0, 0)), constant_values=255)  # noqa: E731
        return np.ascontiguousarray(np.concatenate([pad(top), pad(views)], 0))

    def close(self):
        self.collider.close()
