"""Franka Panda table-top manipulation in PyBullet with point-cloud observations (DP3's setting).

Scene: a table whose top is the plane z = 0, the Panda's base at the origin, one cube, and per
task a goal: ``push`` slides a 5 cm cube onto a green target pad (a visual-only disc, 12 mm tall so
the depth camera sees it above the table crop); ``pick_place`` lifts a 4 cm cube into an open bin.
Object yaw, object and goal positions and the start pose of the gripper come from the seed.

Action [4] in [-1, 1]: end-effector position delta (x, y, z) in units of ``max_delta`` metres per
step, and the gripper command (-1 open .. +1 closed; the fingers track it continuously, a closed
command on an object stops at the object). The delta is applied to the *measured* gripper
position, turned into joint targets by PyBullet's IK (gripper pointing down, fixed yaw, null
space pulled towards a ready pose) and tracked by position control for 1/control_hz seconds.

Observation (Dict):
  point_cloud [num_points, 3] float32: world-frame points (metres) of one fixed depth camera,
      back-projected, cropped to WORKSPACE (which excludes the table top), downsampled by seeded
      farthest-point sampling (envs/scene/point_cloud.py)
  agent_pos [11] float32: gripper position (3), finger opening in metres (1), arm joints (7)
Reward: 1.0 while the task is solved, else 0 (demonstrations need no more); by default the
episode terminates on success, and truncates after ``horizon`` steps (push 80, pick_place 100).
info: success (float32 0/1), task (name), task_id (int64 index into TASKS).

Rendering cost: the Panda's visual meshes have ~10^5 triangles, on which TinyRenderer spends
~17 ms of CPU a frame at any resolution; the robot is loaded with its collision meshes as visuals
(written once to a temp URDF), which brings a 128x128 depth frame to ~3.5-4 ms (measured on a
loaded 2-core machine). A whole observation (render, back-projection + crop ~1 ms, FPS ~2 ms)
costs ~7.5 ms of CPU, a step ~9.5 ms (physics + IK alone ~1.8 ms); reset ~0.1 s.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.scene.depth_camera import orbit_rgb
from envs.scene.point_cloud import SAMPLING, PointCloudCamera, crop, downsample

TASKS = ("push", "pick_place")
# point-cloud crop: the table region in front of the robot from 5 mm above the table top (the
# table itself would take most of the points) to 30 cm: the gripper at any commanded height
# stays in, most of the arm above it is left out, so objects keep their share of the 512 points
WORKSPACE_LOW = np.array([0.25, -0.35, 0.005])
WORKSPACE_HIGH = np.array([0.85, 0.35, 0.30])
# where the gripper (grasp target between the fingertips) may be commanded; the fingertips reach
# ~11 mm below it, so EE_LOW[2] keeps them off the table
EE_LOW = np.array([0.30, -0.30, 0.015])
EE_HIGH = np.array([0.80, 0.30, 0.30])
AGENT_POS_DIM = 11
# agent_pos bounds: the arm's reach, the finger range and the URDF joint limits, with margin
# for the small limit violations of a soft-constrained simulator
_JOINT_LIMIT = np.array([2.9671, 1.8326, 2.9671, 3.1416, 2.9671, 3.8223, 2.9671])
AGENT_POS_LOW = np.concatenate([[-1.0, -1.0, -0.2, -0.01], -_JOINT_LIMIT - 0.1]).astype(np.float32)
AGENT_POS_HIGH = np.concatenate([[1.0, 1.0, 1.3, 0.09], _JOINT_LIMIT + 0.1]).astype(np.float32)
DOWN = (1.0, 0.0, 0.0, 0.0)                   # gripper z axis along world -z
ARM_JOINTS, FINGER_JOINTS, EE_LINK = list(range(7)), [9, 10], 11
REST_POSE = [0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4]
ARM_FORCES = [87.0] * 4 + [12.0] * 3          # Panda joint torque limits (N m)
FINGER_FORCE, FINGER_MAX = 20.0, 0.04         # per finger (N, m)
# IK over the 9 movable joints (7 arm + 2 fingers)
_IK_LOW = [-2.9, -1.8, -2.9, -3.0, -2.9, -0.08, -2.9, 0.0, 0.0]
_IK_HIGH = [2.9, 1.8, 2.9, 0.0, 2.9, 3.8, 2.9, 0.04, 0.04]
_IK_REST = REST_POSE + [0.02, 0.02]

CUBE_HALF = {"push": 0.025, "pick_place": 0.02}
PAD_RADIUS, PAD_HEIGHT = 0.045, 0.012
SUCCESS_RADIUS = 0.03                         # push: cube centre within this of the pad centre (m)
BIN_INNER, BIN_WALL, BIN_HEIGHT = 0.06, 0.008, 0.05   # half inner width, wall thickness, wall height
CAMERA = dict(eye=(1.05, 0.0, 0.75), target=(0.5, 0.0, 0.0), fov_deg=45.0)


def light_panda_urdf() -> str:
    """pybullet_data's panda.urdf with the collision meshes also used as visuals (see module doc).
    Written once per process into a private temp folder (removed at exit)."""
    import pybullet_data

    root = os.path.join(pybullet_data.getDataPath(), "franka_panda")
    with open(os.path.join(root, "panda.urdf"), encoding="utf-8") as f:
        text = f.read()
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    text = text.replace("package://meshes/", os.path.join(root, "meshes") + os.sep)
    global _LIGHT_URDF
    if _LIGHT_URDF is None or not os.path.isfile(_LIGHT_URDF):
        # a private folder per process (mkdtemp: unpredictable name, mode 0700), removed at exit: no
        # shared /tmp name another user could plant or swap
        folder = tempfile.mkdtemp(prefix="mambazoo_panda_")
        atexit.register(shutil.rmtree, folder, True)
        path = os.path.join(folder, "panda_light.urdf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        _LIGHT_URDF = path
    return _LIGHT_URDF


_LIGHT_URDF = None


class PandaManipEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: str = "push", horizon: int | None = None, num_points: int = 512,
                 sampling: str = "fps", fps_pool: int = 1024, image_size: int = 128,
                 point_cloud: bool = True, control_hz: float = 10.0, sim_hz: float = 240.0,
                 max_delta: float = 0.02, terminate_on_success: bool = True,
                 render_mode: str | None = None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {list(SAMPLING)}, got {sampling!r}")
        if sim_hz % control_hz:
            raise ValueError(f"sim_hz ({sim_hz}) must be a multiple of control_hz ({control_hz})")
        self.task, self.task_id = task, TASKS.index(task)
        self.horizon = int(horizon if horizon is not None else {"push": 80, "pick_place": 100}[task])
        self.num_points, self.sampling, self.fps_pool = int(num_points), sampling, int(fps_pool)
        self.use_cloud, self.max_delta = point_cloud, float(max_delta)
        self.sim_dt, self.repeat = 1.0 / sim_hz, int(round(sim_hz / control_hz))
        self.terminate_on_success, self.render_mode = terminate_on_success, render_mode
        self.camera = PointCloudCamera(size=image_size, **CAMERA)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        obs = {"agent_pos": spaces.Box(AGENT_POS_LOW, AGENT_POS_HIGH, dtype=np.float32)}
        if point_cloud:
            lo = np.broadcast_to(WORKSPACE_LOW.astype(np.float32), (self.num_points, 3))
            hi = np.broadcast_to(WORKSPACE_HIGH.astype(np.float32), (self.num_points, 3))
            obs["point_cloud"] = spaces.Box(lo, hi, dtype=np.float32)
        self.observation_space = spaces.Dict(obs)
        self._client = None

    # ------------------------------------------------------------------------------ scene
    def _connect(self):
        from envs.scene.bullet import bullet_client

        self._client = bullet_client()          # without PyBullet's banner lines in the logs
        self._urdf = light_panda_urdf()

    def _box(self, half, pos, rgba, mass=0.0, yaw=0.0):
        import pybullet as p

        c = self._client
        return c.createMultiBody(mass, c.createCollisionShape(p.GEOM_BOX, halfExtents=half),
                                 c.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba),
                                 basePosition=pos, baseOrientation=c.getQuaternionFromEuler([0, 0, yaw]))

    def _sample_layout(self):
        """Object xy, yaw and goal xy from np_random: rejection-sample the goal at a distance."""
        rng = self.np_random
        obj = np.array([rng.uniform(0.42, 0.62), rng.uniform(-0.15, 0.15)])
        lo, hi = (0.12, 0.25) if self.task == "push" else (0.18, 0.30)
        while True:
            goal = np.array([rng.uniform(0.40, 0.66), rng.uniform(-0.20, 0.20)])
            if lo <= np.linalg.norm(goal - obj) <= hi:
                return obj, rng.uniform(-np.pi / 4, np.pi / 4), goal

    def _build_scene(self):
        import pybullet as p

        c = self._client
        # a fresh world per episode: nothing (contact caches, solver warm starts) leaks across
        # resets, so an episode depends on its seed only
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(self.sim_dt)
        self._table = self._box([0.55, 0.7, 0.02], [0.35, 0.0, -0.02], [0.75, 0.6, 0.45, 1])
        self._robot = c.loadURDF(self._urdf, [0, 0, 0], useFixedBase=True)
        for j in FINGER_JOINTS:   # grip: rubbery fingertips
            c.changeDynamics(self._robot, j, lateralFriction=1.5, spinningFriction=0.01)
        obj_xy, yaw, goal_xy = self._sample_layout()
        self._goal = np.array([goal_xy[0], goal_xy[1], 0.0])
        half = CUBE_HALF[self.task]
        self._cube = self._box([half] * 3, [obj_xy[0], obj_xy[1], half], [0.85, 0.15, 0.1, 1],
                               mass=0.1, yaw=yaw)
        c.changeDynamics(self._cube, -1, lateralFriction=1.0, spinningFriction=0.001)
        if self.task == "push":   # visual only: the cube slides over it
            vis = c.createVisualShape(p.GEOM_CYLINDER, radius=PAD_RADIUS, length=PAD_HEIGHT,
                                      rgbaColor=[0.2, 0.7, 0.3, 1])
            self._pad = c.createMultiBody(0, -1, vis, [goal_xy[0], goal_xy[1], PAD_HEIGHT / 2])
        else:
            self._bin = self._make_bin(goal_xy)
        # start: gripper open, above the table at a seeded spot; the ready pose seeds IK
        start = np.array([0.45, 0.0, 0.22]) + self.np_random.uniform(-1, 1, 3) * [0.03, 0.05, 0.02]
        for j, q in zip(ARM_JOINTS, REST_POSE):
            c.resetJointState(self._robot, j, q)
        for _ in range(8):  # IK iterations on the reset pose converge to the start point
            q = self._ik(start)
            for j, qj in zip(ARM_JOINTS, q):
                c.resetJointState(self._robot, j, qj)
        for j in FINGER_JOINTS:
            c.resetJointState(self._robot, j, FINGER_MAX)
        self._arm_target, self._finger_target = q, FINGER_MAX
        self._apply_targets()

    def _make_bin(self, xy):
        import pybullet as p

        c = self._client
        w, t, h = BIN_INNER, BIN_WALL, BIN_HEIGHT
        o = w + t / 2
        halves = [[w + t, w + t, 0.0025], [t / 2, w + t, h / 2], [t / 2, w + t, h / 2],
                  [w, t / 2, h / 2], [w, t / 2, h / 2]]
        pos = [[0, 0, 0.0025], [o, 0, h / 2], [-o, 0, h / 2], [0, o, h / 2], [0, -o, h / 2]]
        col = c.createCollisionShapeArray([p.GEOM_BOX] * 5, halfExtents=halves, collisionFramePositions=pos)
        vis = c.createVisualShapeArray([p.GEOM_BOX] * 5, halfExtents=halves, visualFramePositions=pos)
        body = c.createMultiBody(0, col, vis, [xy[0], xy[1], 0.0])
        c.changeVisualShape(body, -1, rgbaColor=[0.3, 0.4, 0.8, 1])
        return body

    # -------------------------------------------------------------------------- control
    def _ik(self, pos) -> list[float]:
        q = self._client.calculateInverseKinematics(
            self._robot, EE_LINK, list(pos), DOWN, lowerLimits=_IK_LOW, upperLimits=_IK_HIGH,
            jointRanges=[h - l for l, h in zip(_IK_LOW, _IK_HIGH)], restPoses=_IK_REST,
            maxNumIterations=50, residualThreshold=1e-5)
        return list(q[:7])

    def _apply_targets(self):
        import pybullet as p

        c = self._client
        c.setJointMotorControlArray(self._robot, ARM_JOINTS, p.POSITION_CONTROL,
                                    targetPositions=self._arm_target, forces=ARM_FORCES)
        c.setJointMotorControlArray(self._robot, FINGER_JOINTS, p.POSITION_CONTROL,
                                    targetPositions=[self._finger_target] * 2, forces=[FINGER_FORCE] * 2)

    def ee_pos(self) -> np.ndarray:
        return np.array(self._client.getLinkState(self._robot, EE_LINK, computeForwardKinematics=True)[4])

    def finger_width(self) -> float:
        return float(sum(s[0] for s in self._client.getJointStates(self._robot, FINGER_JOINTS)))

    # ---------------------------------------------------------------------- observation
    def point_cloud(self) -> np.ndarray:
        """[num_points, 3] float32 inside WORKSPACE (see module doc)."""
        pts = crop(self.camera.back_project(self.camera.zbuffer(self._client)), WORKSPACE_LOW, WORKSPACE_HIGH)
        return downsample(pts, self.num_points, self._cloud_rng, self.sampling, self.fps_pool,
                          fill=(WORKSPACE_LOW + WORKSPACE_HIGH) / 2)

    def _observe(self) -> dict:
        arm = [s[0] for s in self._client.getJointStates(self._robot, ARM_JOINTS)]
        agent = np.concatenate([self.ee_pos(), [self.finger_width()], arm]).astype(np.float32)
        obs = {"agent_pos": agent}
        if self.use_cloud:
            obs["point_cloud"] = self.point_cloud()
        return obs

    def privileged_state(self) -> dict:
        """Simulator state the scripted expert plans with (never part of the observation)."""
        pos, orn = self._client.getBasePositionAndOrientation(self._cube)
        lin, _ = self._client.getBaseVelocity(self._cube)
        return {"task": self.task, "ee_pos": self.ee_pos(), "finger_width": self.finger_width(),
                "object_pos": np.array(pos), "object_quat": np.array(orn), "object_vel": np.array(lin),
                "object_half": CUBE_HALF[self.task], "goal_pos": self._goal.copy(),
                "max_delta": self.max_delta}

    def is_success(self) -> bool:
        s = self.privileged_state()
        obj, goal = s["object_pos"], self._goal
        if self.task == "push":
            return bool(np.linalg.norm(obj[:2] - goal[:2]) < SUCCESS_RADIUS)
        # in the bin: centre over the floor, below the wall tops, at rest and let go of
        inside = bool(np.all(np.abs(obj[:2] - goal[:2]) < BIN_INNER - 0.5 * CUBE_HALF[self.task]))
        return (inside and obj[2] < BIN_HEIGHT and np.linalg.norm(s["object_vel"]) < 0.05
                and s["finger_width"] > 2 * CUBE_HALF[self.task] + 0.005)

    # -------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._client is None:
            self._connect()
        self._build_scene()
        # downsampling draws from its own stream: the layout does not depend on num_points etc.
        self._cloud_rng = np.random.default_rng(int(self.np_random.integers(2**63)))
        self._steps = 0
        return self._observe(), self._info(False)

    def _info(self, success: bool) -> dict:
        # numpy scalars: TorchRL's info reader reads their dtype (it skips the string unless asked)
        return {"success": np.float32(success), "task_id": np.int64(self.task_id), "task": self.task}

    def step(self, action):
        if self._client is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        target = np.clip(self.ee_pos() + a[:3] * self.max_delta, EE_LOW, EE_HIGH)
        self._arm_target = self._ik(target)
        self._finger_target = FINGER_MAX * (1.0 - a[3]) / 2
        self._apply_targets()
        for _ in range(self.repeat):
            self._client.stepSimulation()
        self._steps += 1
        success = self.is_success()
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.horizon and not terminated
        return self._observe(), float(success), terminated, truncated, self._info(success)

    def render(self):
        """RGB frame [240, 320, 3] uint8 from a fixed three-quarter view (for videos)."""
        if self._client is None:
            raise RuntimeError("call reset() before render()")
        return orbit_rgb(self._client, [0.45, 0.0, 0.1], 1.3, 60.0, -30.0, fov=50, far=5.0)

    def close(self):
        if self._client is not None:
            self._client.disconnect()
            self._client = None
