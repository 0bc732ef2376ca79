"""Velocity-commanded quadrotor navigating to a goal through an obstacle field (VMamba-TD3's drone task).

Two backends behind one gymnasium API (``backend=``):
  "pybullet"  embedded, no downloads: a sphere body in PyBullet DIRECT mode, obstacle fields drawn
              from the seed, depth from the numpy ray caster of envs/scene/depth_camera.py
  "airsim"    AirSim / Cosys-AirSim over msgpack-RPC (envs/drone/airsim_env.py); the scene lives in Unreal,
              the goal comes from config

Action Box(-1, 1, (3,)), scaled inside: [forward speed +-2 m/s (body x), yaw rate +-pi/3 rad/s,
vertical speed +-0.3 m/s]; one control step is ``control_period_s`` (0.1 s).
Observation Dict: "depth" [1, H, W] (metres / max_depth, in [0, 1]) and "state" [11]; with
``seq_len=K > 1`` the last K steps, oldest first: "depth" [K, 1, H, W], "state" [K, 11] (the first
frame is repeated at reset). State entries (SI units, body frame = yaw-only frame, x forward, y left, z up):
  0-2  goal position relative to the drone in the body frame (m)
  3    distance to the goal (m)
  4-6  velocity in the body frame (m/s)
  7-8  sin, cos of the heading error (bearing of the goal in the body frame)
  9    altitude above the ground (m)
  10   yaw rate (rad/s)
Reward: progress (decrease of the distance to the goal, m) - step_cost; + goal_bonus and terminated
when within goal_radius; + collision_penalty and terminated on a collision (obstacle or ground);
truncated after max_episode_steps. info: success, collision, distance_to_goal, path_length (float32).
"""
from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.drone.kinematics import Kinematics
from envs.scene.obstacles import CourseLayout, build_bodies
from envs.scene.depth_camera import DepthCamera, Primitives

FIELDS = ("forest", "walls", "boxes")
DEFAULT_OBSTACLES = {"forest": 45, "walls": 4, "boxes": 30}   # trees / max walls / boxes
ACTION_SCALE = np.array([2.0, np.pi / 3, 0.3])                  # m/s, rad/s, m/s
STATE_DIM = 11
BODY_RADIUS = 0.25                                              # collision sphere (m)


def yaw_matrix(yaw: float) -> np.ndarray:
    """[3, 3] rotation whose columns are the body's (forward, left, up) axes in the world."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------- obstacle fields
def make_field(field: str, rng: np.random.Generator, num_obstacles: int | None = None,
               goal_distance=(15.0, 25.0)):
    """Random layout: (Primitives, goal [3], start position [3], start yaw). The goal lies ahead
    along +x (bearing within +-0.3 rad); obstacles fill x in [3, goal x + 2], |y| <= 9, keeping
    clear of the start and the goal so every episode is solvable at spawn."""
    if field not in FIELDS:
        raise ValueError(f"field must be one of {list(FIELDS)}, got {field!r}")
    n = DEFAULT_OBSTACLES[field] if num_obstacles is None else int(num_obstacles)
    dist, bearing = rng.uniform(*goal_distance), rng.uniform(-0.3, 0.3)
    goal = np.array([dist * np.cos(bearing), dist * np.sin(bearing), rng.uniform(1.5, 3.0)])
    start = np.array([0.0, 0.0, rng.uniform(1.5, 2.5)])
    yaw = bearing + rng.uniform(-np.pi / 6, np.pi / 6)
    boxes, cyls = [], []                      # (cx, cy, cz, hx, hy, hz, yaw) / (cx, cy, cz, r, hh)

    def clear(x, y, r):                       # footprint r keeps 2 m from start and goal
        return np.hypot(x, y) > r + 2.0 and np.hypot(x - goal[0], y - goal[1]) > r + 2.0

    if field == "walls":                      # walls across the way, each with 1-2 gaps
        x, walls = 5.0, 0
        while walls < n and x < goal[0] - 2.5:
            wx, wyaw, gaps = x + rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.2), []
            for _ in range(rng.integers(1, 3)):
                w, c = rng.uniform(2.0, 3.5), rng.uniform(-6.0, 6.0)
                gaps.append((c - w / 2, c + w / 2))
            edges = [-12.0] + [e for g in sorted(gaps) for e in g] + [12.0]
            for y0, y1 in zip(edges[::2], edges[1::2]):
                if y1 - y0 > 0.1:             # overlapping gaps leave empty segments
                    cx, cy = wx - np.sin(wyaw) * (y0 + y1) / 2, np.cos(wyaw) * (y0 + y1) / 2
                    boxes.append((cx, cy, 3.0, 0.15, (y1 - y0) / 2, 3.0, wyaw))
            x, walls = x + rng.uniform(4.5, 6.0), walls + 1
    else:
        tries = 0
        while len(boxes) + len(cyls) < n and tries < 50 * max(n, 1):
            tries += 1
            x, y = rng.uniform(3.0, goal[0] + 2.0), rng.uniform(-9.0, 9.0)
            if field == "forest":
                r, h = rng.uniform(0.15, 0.45), rng.uniform(6.0, 10.0)
                if clear(x, y, r):
                    cyls.append((x, y, h / 2, r, h / 2))
            else:
                hx, hy, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0), rng.uniform(1.0, 6.0)
                if clear(x, y, np.hypot(hx, hy)):
                    boxes.append((x, y, h / 2, hx, hy, h / 2, rng.uniform(-np.pi, np.pi)))
    b = np.array(boxes, dtype=np.float64).reshape(-1, 7)
    c = np.array(cyls, dtype=np.float64).reshape(-1, 5)
    prims = Primitives(b[:, 0:3].copy(), b[:, 3:6].copy(), b[:, 6].copy(),
                       c[:, 0:3].copy(), c[:, 3].copy(), c[:, 4].copy())
    return prims, goal, start, float(yaw)


# ----------------------------------------------------------------------------- pybullet backend
class PyBulletDrone:
    """Embedded backend. The body is moved kinematically: a first-order velocity response (time
    constant tau) is integrated in numpy and the sphere is placed with resetBasePositionAndOrientation,
    then PyBullet only runs collision detection (performCollisionDetection + getContactPoints).
    Why not thrust forces: a velocity-commanded multirotor is its flight controller's closed loop,
    which this reproduces exactly, with gravity compensated by construction, no solver tuning, no
    drift, and a step cost of microseconds. Collisions are checked at every integration substep
    (0.02 s, <= 4 cm at 2 m/s), so nothing thinner than the body can be tunnelled through. The body
    stays level: the camera models a gimballed sensor that only yaws with the drone."""

    def __init__(self, field: str, image_hw: tuple[int, int], max_depth: float, fov_deg: float,
                 dt: float, tau: float, num_obstacles: int | None, goal_distance, substeps: int = 5):
        self.field, self.num_obstacles, self.goal_distance = field, num_obstacles, goal_distance
        self.h, self.w = image_hw
        self.camera = DepthCamera(max(image_hw), fov_deg=fov_deg, near=0.05, far=max_depth)
        self.dt, self.tau, self.substeps = dt, tau, substeps
        self.ground_z, self._client = 0.0, None

    def reset(self, rng: np.random.Generator) -> None:
        from envs.scene.bullet import bullet_client

        if self._client is None:
            self._client = bullet_client()      # without PyBullet's banner lines in the logs
        import pybullet as p                    # after the client: the first import prints a banner
        c = self._client
        c.resetSimulation()
        self.prims, self.goal, pos, yaw = make_field(self.field, rng, self.num_obstacles, self.goal_distance)
        self._ground = c.createMultiBody(0, c.createCollisionShape(p.GEOM_PLANE))
        build_bodies(c, CourseLayout(self.prims, np.zeros(len(self.prims.box_yaw)), None, 12.0))
        # mass > 0: Bullet never pairs two static bodies, and stepSimulation is never called anyway
        self._body = c.createMultiBody(1.0, c.createCollisionShape(p.GEOM_SPHERE, radius=BODY_RADIUS))
        self.teleport(pos, yaw)

    def teleport(self, pos, yaw: float) -> None:
        """Put the drone at rest at pos [3] facing yaw (also for tests and demos)."""
        self.state = Kinematics(np.asarray(pos, dtype=np.float64).copy(), np.zeros(3), float(yaw), 0.0)
        self._hit = self._place()

    def _place(self) -> bool:
        """Move the body to the current state; True when it touches an obstacle or the ground."""
        st, c = self.state, self._client
        c.resetBasePositionAndOrientation(self._body, st.pos.tolist(), c.getQuaternionFromEuler([0, 0, st.yaw]))
        c.performCollisionDetection()
        return len(c.getContactPoints(bodyA=self._body)) > 0

    def step(self, cmd: np.ndarray) -> None:
        """cmd [3]: forward speed (m/s), yaw rate (rad/s), vertical speed (m/s)."""
        st, h = self.state, self.dt / self.substeps
        alpha = 1.0 - np.exp(-h / self.tau)        # exact first-order response over one substep
        for _ in range(self.substeps):
            if self._hit:                          # crashed: the drone stays where it hit
                return
            target = np.array([cmd[0] * np.cos(st.yaw), cmd[0] * np.sin(st.yaw), cmd[2]])
            st.vel += alpha * (target - st.vel)
            st.yaw_rate += alpha * (cmd[1] - st.yaw_rate)
            st.pos += st.vel * h
            st.yaw = float((st.yaw + st.yaw_rate * h + np.pi) % (2 * np.pi) - np.pi)   # wrap to [-pi, pi)
            self._hit = self._place()

    def get_state(self) -> Kinematics:
        s = self.state
        return Kinematics(s.pos.copy(), s.vel.copy(), s.yaw, s.yaw_rate)

    def get_depth(self) -> np.ndarray:
        """[H, W] z-depth in metres from a forward camera at the front of the body."""
        rot = yaw_matrix(self.state.yaw)
        d = self.camera.raycast(self.state.pos + rot[:, 0] * BODY_RADIUS, rot, self.prims)
        r0, c0 = (d.shape[0] - self.h) // 2, (d.shape[1] - self.w) // 2   # non-square: central crop
        return d[r0:r0 + self.h, c0:c0 + self.w]

    def collided(self) -> bool:
        return self._hit

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client = None


# ---------------------------------------------------------------------------------------- env
class DroneEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, field: str = "forest", backend: str = "pybullet", image_size=64, seq_len: int = 1,
                 max_episode_steps: int = 300, control_period_s: float = 0.1, tau_s: float = 0.25,
                 max_depth: float = 15.0, fov_deg: float = 90.0, goal_radius: float = 1.5,
                 goal_distance=(15.0, 25.0), num_obstacles: int | None = None,
                 collision_penalty: float = -10.0, goal_bonus: float = 10.0, step_cost: float = 0.01,
                 progress_weight: float = 1.0, airsim=None, render_mode: str | None = None):
        if backend not in ("pybullet", "airsim"):
            raise ValueError(f"backend must be 'pybullet' or 'airsim', got {backend!r}")
        if field not in FIELDS:
            raise ValueError(f"field must be one of {list(FIELDS)}, got {field!r}")
        if int(seq_len) < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        self.image_hw, self.seq_len = (int(h), int(w)), int(seq_len)
        self.field, self.backend_name, self.airsim_config = field, backend, airsim
        self.max_episode_steps, self.dt, self.tau = int(max_episode_steps), control_period_s, tau_s
        self.max_depth, self.fov_deg, self.goal_radius = max_depth, fov_deg, goal_radius
        self.goal_distance, self.num_obstacles = tuple(goal_distance), num_obstacles
        self.collision_penalty, self.goal_bonus = collision_penalty, goal_bonus
        self.step_cost, self.progress_weight, self.render_mode = step_cost, progress_weight, render_mode
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        lead = () if self.seq_len == 1 else (self.seq_len,)
        self.observation_space = spaces.Dict({
            "depth": spaces.Box(0.0, 1.0, lead + (1,) + self.image_hw, np.float32),
            "state": spaces.Box(-np.inf, np.inf, lead + (STATE_DIM,), np.float32)})
        self.backend = None

    def _make_backend(self):
        if self.backend_name == "airsim":   # lazy: the RPC client is only needed on this path
            from envs.drone.airsim_env import AirSimDrone
            return AirSimDrone(self.airsim_config, self.image_hw, self.max_depth, self.dt)
        return PyBulletDrone(self.field, self.image_hw, self.max_depth, self.fov_deg, self.dt,
                             self.tau, self.num_obstacles, self.goal_distance)

    # ------------------------------------------------------------------------ observation
    def _state_vector(self, k: Kinematics) -> tuple[np.ndarray, float]:
        rot = yaw_matrix(k.yaw)
        rel = rot.T @ (self.backend.goal - k.pos)          # goal in the body frame  [3]
        dist = float(np.linalg.norm(rel))
        bearing = np.arctan2(rel[1], rel[0])
        state = np.concatenate([rel, [dist], rot.T @ k.vel, [np.sin(bearing), np.cos(bearing)],
                                [k.pos[2] - self.backend.ground_z, k.yaw_rate]]).astype(np.float32)
        return state, dist

    def _observe(self, state: np.ndarray) -> dict:
        depth = np.clip(self.backend.get_depth() / self.max_depth, 0.0, 1.0).astype(np.float32)[None]
        if self.seq_len == 1:
            return {"depth": depth, "state": state}
        if not self._frames:                               # reset: repeat the first frame
            self._frames.extend([(depth, state)] * self.seq_len)
        self._frames.append((depth, state))
        return {"depth": np.stack([f[0] for f in self._frames]), "state": np.stack([f[1] for f in self._frames])}

    def _info(self, success: bool, collision: bool) -> dict:
        # numpy scalars: TorchRL's info reader reads their dtype
        return {"success": np.float32(success), "collision": np.float32(collision),
                "distance_to_goal": np.float32(self._dist), "path_length": np.float32(self._path)}

    # ---------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.backend is None:
            self.backend = self._make_backend()
        self.backend.reset(self.np_random)
        k = self.backend.get_state()
        state, self._dist = self._state_vector(k)
        self._steps, self._path, self._last_pos = 0, 0.0, k.pos
        self._trail, self._frames, self._map = [k.pos[:2].copy()], deque(maxlen=self.seq_len), None
        return self._observe(state), self._info(False, False)

    def step(self, action):
        if self.backend is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(3), -1.0, 1.0)
        self.backend.step(a * ACTION_SCALE)
        self._steps += 1
        k = self.backend.get_state()
        state, dist = self._state_vector(k)
        self._path += float(np.linalg.norm(k.pos - self._last_pos))
        self._last_pos = k.pos
        self._trail.append(k.pos[:2].copy())
        reward = self.progress_weight * (self._dist - dist) - self.step_cost
        self._dist = dist
        collision = bool(self.backend.collided())
        success = not collision and dist < self.goal_radius
        reward += self.collision_penalty * collision + self.goal_bonus * success
        truncated = self._steps >= self.max_episode_steps and not (collision or success)
        return self._observe(state), float(reward), collision or success, truncated, self._info(success, collision)

    def render(self) -> np.ndarray:
        """RGB [160, 160, 3] uint8: top-down map (obstacles grey, trail blue, goal green, drone red,
        heading line) with the current depth image inset top-left. Pure numpy, ~1 ms."""
        if self.backend is None:
            raise RuntimeError("call reset() before render()")
        S, span = 160, 32.0
        k, goal = self.backend.get_state(), self.backend.goal
        if self._map is None:                              # obstacles rasterised once per episode
            centre = (self._trail[0] + goal[:2]) / 2
            self._px = (S - 1) / span
            self._origin = centre + np.array([-span / 2, span / 2])       # world xy of pixel (0, 0)
            ys, xs = np.mgrid[0:S, 0:S]
            wx, wy = self._origin[0] + xs / self._px, self._origin[1] - ys / self._px
            occ = np.zeros((S, S), bool)
            pr = getattr(self.backend, "prims", Primitives.empty())
            for (cx, cy, _), r in zip(pr.cyl_center, pr.cyl_radius):
                occ |= (wx - cx) ** 2 + (wy - cy) ** 2 <= r * r
            for (cx, cy, _), (hx, hy, _), yaw in zip(pr.box_center, pr.box_half, pr.box_yaw):
                c, s = np.cos(yaw), np.sin(yaw)
                u, v = c * (wx - cx) + s * (wy - cy), -s * (wx - cx) + c * (wy - cy)
                occ |= (np.abs(u) <= hx) & (np.abs(v) <= hy)
            self._map = np.where(occ[..., None], 110, 235).astype(np.uint8).repeat(3, -1)
        img = self._map.copy()

        def pix(xy):                                       # world xy -> (row, col), clipped
            col = int(round((xy[0] - self._origin[0]) * self._px))
            row = int(round((self._origin[1] - xy[1]) * self._px))
            return min(max(row, 0), S - 1), min(max(col, 0), S - 1)

        for xy in self._trail:
            img[pix(xy)] = (40, 90, 220)
        for centre, colour, rad in ((goal[:2], (30, 170, 60), 3), (k.pos[:2], (220, 40, 40), 2)):
            r, c = pix(centre)
            img[max(r - rad, 0):r + rad + 1, max(c - rad, 0):c + rad + 1] = colour
        for t in np.linspace(0.0, 1.5, 8):
            img[pix(k.pos[:2] + t * np.array([np.cos(k.yaw), np.sin(k.yaw)]))] = (220, 40, 40)
        depth = self.backend.get_depth() / self.max_depth
        step = max(1, int(np.ceil(max(depth.shape) / (S // 3))))            # inset at most S/3 wide
        inset = (255 * np.clip(depth[::step, ::step], 0, 1)).astype(np.uint8)
        img[:inset.shape[0], :inset.shape[1]] = inset[..., None]
        return img

    def close(self):
        if self.backend is not None:
            self.backend.close()
            self.backend = None
