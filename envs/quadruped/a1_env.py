"""Unitree A1 on obstacle courses in PyBullet (after LocoTransformer's A1MoveGround).

Control: the policy outputs joint position targets around the standing pose at 25 Hz; a PD law
(Kp 80, Kd 0.4) turns them into torques at every 0.0025 s physics step (16 repeats). With
``diagonal_act`` the action is 6-dim and the diagonal leg pairs (FR, RL) and (FL, RR) share it.

Observation (gymnasium Dict):
  proprio [33 + act_dim]: joint positions relative to standing (12), joint velocities x 0.05
      (12), gravity in the body frame (3), body angular velocity x 0.25 (3), previous action
      (act_dim), command (3): heading to the target direction in the body frame (cos, sin) and
      min(distance to goal, 10)/10 (1.0 when there is no goal); with a gait prior, + the
      reference gait's phase (sin, cos) (2)
  depth [frame_stack, S, S]: the last frame_stack depth frames of the head camera, metres / far,
      in [0, 1]; present when depth=True
Gait prior (``gait="trot"``, off by default; LocoTransformer has none): the PD targets are
  STAND_POSE + the policy's offset + a periodic trot reference (diagonal pairs half a cycle apart,
  each foot lifted by flexing thigh and calf, thigh +h and calf -2h, which keeps the foot under the
  hip), updated at every physics step. This is the trajectory-generator prior of PMTG (Iscen et al.
  2018) and of Tan et al. 2018's Minitaur gaits: the policy learns how to modulate a stepping
  pattern instead of discovering stepping from noise. Measured here it did not speed learning up
  (README, flat course on the GPU host): the run without it moved first.
Reward (LocoTransformer's MoveForwardTask): target_vel^2 - (min(v_dir, target_vel) - target_vel)^2
  - z_penalty * v_z^2 - other_direction_penalty * v_side^2 - energy_weight * sum(tau^2) * time_step
  + alive_reward, and fall_reward on a fall; the goal course adds goal_reward on arrival. ``info`` has distance (metres along the
  target direction since reset), collisions (control steps touching an obstacle, this episode),
  fall and goal_reached.
"""
from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.quadruped.courses import COURSES, make_layout
from envs.scene.obstacles import build_bodies, move_obstacles
from envs.scene.depth_camera import DepthCamera, orbit_rgb

STAND_POSE = np.array([0.0, 0.9, -1.8] * 4)   # hip, thigh, calf per leg (FR, FL, RR, RL)
DEFAULT_CLIP = np.array([0.05, 0.5, 0.5] * 4)  # LocoTransformer's clip_num: max offset per joint
JOINT_NAMES = [f"{leg}_{j}_joint" for leg in ("FR", "FL", "RR", "RL") for j in ("hip", "upper", "lower")]
TORQUE_LIMIT = 33.5                            # A1 motor peak torque (N m)
CAMERA_OFFSET = np.array([0.28, 0.0, 0.03])    # head camera in the body frame (m)
CAMERA_PITCH = np.radians(15.0)                # looking down
FALL_HEIGHT, FALL_UPRIGHT = 0.15, 0.6          # body height (m) / body-z . world-z below -> fall
DEPTH_BACKENDS = ("raycast", "tiny")
GAITS = ("none", "trot")
TROT_OFFSET = np.array([0.0, np.pi, np.pi, 0.0])   # FR, FL, RR, RL: diagonal pairs in phase


class A1QuadrupedEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, course: str = "flat", horizon: int = 1000, time_step_s: float = 0.0025,
                 num_action_repeat: int = 16, kp: float = 80.0, kd: float = 0.4,
                 diagonal_act: bool = False, clip_num=None, alive_reward: float = -0.05,
                 fall_reward: float = -20.0, target_vel: float = 1.0, z_penalty: float = 1.0,
                 other_direction_penalty: float = 0.0,
                 energy_weight: float = 0.005, goal_reward: float = 10.0,
                 fric_coeff=(1.0, 0.01, 0.01), domain_randomization: bool = False,
                 depth: bool = True, depth_backend: str = "raycast", image_size: int = 64,
                 frame_stack: int = 4, num_obstacles: int | None = None,
                 gait: str = "none", gait_freq: float = 2.0, gait_height: float = 0.25,
                 render_mode: str | None = None):
        if course not in COURSES:
            raise ValueError(f"course must be one of {list(COURSES)}, got {course!r}")
        if depth_backend not in DEPTH_BACKENDS:
            raise ValueError(f"depth_backend must be one of {list(DEPTH_BACKENDS)}, got {depth_backend!r}")
        if gait not in GAITS:
            raise ValueError(f"gait must be one of {list(GAITS)}, got {gait!r}")
        self.gait, self.gait_freq, self.gait_height = gait, float(gait_freq), float(gait_height)
        self.course, self.horizon = course, int(horizon)
        self.dt, self.repeat, self.kp, self.kd = time_step_s, int(num_action_repeat), kp, kd
        self.diagonal_act = diagonal_act
        clip = DEFAULT_CLIP if clip_num is None else np.asarray(clip_num, dtype=np.float64)
        self.clip_num = np.tile(clip, 4) if clip.size == 3 else clip
        if self.clip_num.shape != (12,):
            raise ValueError(f"clip_num must have 3 or 12 values, got {clip.size}")
        self.alive_reward, self.fall_reward, self.goal_reward = alive_reward, fall_reward, goal_reward
        self.target_vel, self.z_penalty, self.energy_weight = target_vel, z_penalty, energy_weight
        self.other_direction_penalty = other_direction_penalty
        self.fric_coeff, self.domain_randomization = tuple(fric_coeff), domain_randomization
        self.use_depth, self.depth_backend, self.frame_stack = depth, depth_backend, frame_stack
        self.num_obstacles, self.render_mode = num_obstacles, render_mode
        self.camera = DepthCamera(image_size)
        self.act_dim = 6 if diagonal_act else 12
        self.action_space = spaces.Box(-1.0, 1.0, (self.act_dim,), np.float32)
        proprio_dim = 33 + self.act_dim + (2 if gait != "none" else 0)
        obs = {"proprio": spaces.Box(-np.inf, np.inf, (proprio_dim,), np.float32)}
        if depth:
            obs["depth"] = spaces.Box(0.0, 1.0, (frame_stack, image_size, image_size), np.float32)
        self.observation_space = spaces.Dict(obs)
        self._client = None

    # ------------------------------------------------------------------------------ scene
    def _connect(self):
        import pybullet_data

        from envs.scene.bullet import bullet_client

        self._client = bullet_client()          # without PyBullet's banner lines in the logs
        self._client.setAdditionalSearchPath(pybullet_data.getDataPath())

    def _build_scene(self):
        import pybullet as p

        c = self._client
        c.resetSimulation()
        c.setGravity(0, 0, -9.8)
        c.setTimeStep(self.dt)
        self._plane = c.loadURDF("plane.urdf")
        lat, spin, roll = self.fric_coeff
        if self.domain_randomization:   # friction and body mass, per episode
            lat *= self.np_random.uniform(0.6, 1.25)
        c.changeDynamics(self._plane, -1, lateralFriction=lat, spinningFriction=spin, rollingFriction=roll)
        self._layout = make_layout(self.course, self.np_random, self.num_obstacles)
        self._box_ids, self._cyl_ids = build_bodies(c, self._layout)
        self._obstacles = set(self._box_ids) | set(self._cyl_ids)
        z = 0.30
        self._robot = c.loadURDF("a1/a1.urdf", [0, 0, z], [0, 0, 0, 1])
        names = {c.getJointInfo(self._robot, j)[1].decode(): j for j in range(c.getNumJoints(self._robot))}
        self._joints = [names[n] for n in JOINT_NAMES]
        if self.domain_randomization:
            mass = c.getDynamicsInfo(self._robot, -1)[0]
            c.changeDynamics(self._robot, -1, mass=mass * self.np_random.uniform(0.9, 1.1))
        # joints are torque-driven by our PD: switch off PyBullet's default velocity motors
        c.setJointMotorControlArray(self._robot, self._joints, p.VELOCITY_CONTROL, forces=[0.0] * 12)
        q0 = STAND_POSE + self.np_random.uniform(-0.05, 0.05, 12)
        for j, q in zip(self._joints, q0):
            c.resetJointState(self._robot, j, q, 0.0)
        # settle on the ground under the standing targets (0.5 s), not part of the episode
        for _ in range(int(0.5 / self.dt)):
            self._pd_substep(STAND_POSE)

    def _gait_reference(self) -> np.ndarray:
        """Joint offsets [12] of the trot reference at the current physics time (zeros when off)."""
        if self.gait == "none":
            return np.zeros(12)
        phase = 2 * np.pi * self.gait_freq * self._sim_time + TROT_OFFSET
        lift = self.gait_height * np.maximum(np.sin(phase), 0.0)        # swing half of the cycle
        ref = np.zeros((4, 3))
        ref[:, 1], ref[:, 2] = lift, -2.0 * lift                          # thigh +h, calf -2h
        return ref.reshape(12)

    def _joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities [12] each, in JOINT_NAMES order."""
        states = self._client.getJointStates(self._robot, self._joints)
        return (np.fromiter((s[0] for s in states), np.float64, 12),
                np.fromiter((s[1] for s in states), np.float64, 12))

    def _pd_substep(self, target) -> np.ndarray:
        import pybullet as p

        q, qd = self._joint_state()
        tau = np.clip(self.kp * (target - q) - self.kd * qd, -TORQUE_LIMIT, TORQUE_LIMIT)
        self._client.setJointMotorControlArray(self._robot, self._joints, p.TORQUE_CONTROL, forces=tau)
        self._client.stepSimulation()
        return tau

    # ------------------------------------------------------------------------ observation
    def _base_state(self):
        c = self._client
        pos, orn = c.getBasePositionAndOrientation(self._robot)
        rot = np.array(c.getMatrixFromQuaternion(orn)).reshape(3, 3)   # columns: body axes in world
        lin, ang = c.getBaseVelocity(self._robot)
        return np.array(pos), rot, np.array(lin), np.array(ang)

    def _target_dir(self, pos) -> tuple[np.ndarray, float]:
        if self._layout.goal is None:
            return np.array([1.0, 0.0]), 10.0
        delta = self._layout.goal - pos[:2]
        dist = float(np.linalg.norm(delta))
        return delta / max(dist, 1e-6), dist

    def _depth_frame(self, pos, rot) -> np.ndarray:
        eye = pos + rot @ CAMERA_OFFSET
        cp, sp = np.cos(CAMERA_PITCH), np.sin(CAMERA_PITCH)
        # camera axes (forward, left, up) = body axes pitched down about the body's y axis
        cam = rot @ np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        if self.depth_backend == "raycast":
            d = self.camera.raycast(eye, cam, self._layout.prims)
        else:
            d = self.camera.tiny_renderer_depth(self._client, eye, cam)
        return d / self.camera.far

    def _phase_obs(self) -> np.ndarray:
        if self.gait == "none":
            return np.zeros(0)
        phase = 2 * np.pi * self.gait_freq * self._sim_time
        return np.array([np.sin(phase), np.cos(phase)])

    def _observe(self, pos, rot, ang):
        q, qd = self._joint_state()
        direction, dist = self._target_dir(pos)
        heading_body = rot[:2, :2].T @ direction                # target direction in the body frame
        heading_body /= max(np.linalg.norm(heading_body), 1e-6)
        proprio = np.concatenate([
            q - STAND_POSE, 0.05 * qd, rot.T @ np.array([0.0, 0.0, -1.0]), 0.25 * (rot.T @ ang),
            self._last_action, heading_body, [min(dist, 10.0) / 10.0], self._phase_obs(),
        ]).astype(np.float32)
        obs = {"proprio": proprio}
        if self.use_depth:
            self._frames.append(self._depth_frame(pos, rot))
            obs["depth"] = np.stack(self._frames)
        return obs

    # -------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._client is None:
            self._connect()
        self._build_scene()
        self._steps, self._collisions, self._distance, self._sim_time = 0, 0, 0.0, 0.0
        self._last_action = np.zeros(self.act_dim)
        pos, rot, _, ang = self._base_state()
        self._prev_pos = pos
        if self.use_depth:
            first = self._depth_frame(pos, rot)
            self._frames = deque([first] * (self.frame_stack - 1), maxlen=self.frame_stack)
        return self._observe(pos, rot, ang), self._info(False, False)

    def _info(self, fall: bool, reached: bool) -> dict:
        # numpy scalars: TorchRL's info reader reads their dtype
        return {"distance": np.float32(self._distance), "collisions": np.float32(self._collisions),
                "fall": np.float32(fall), "goal_reached": np.float32(reached)}

    def step(self, action):
        if self._client is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.act_dim), -1.0, 1.0)
        full = np.concatenate([a[:3], a[3:], a[3:], a[:3]]) if self.diagonal_act else a
        target = STAND_POSE + full * self.clip_num
        energy = 0.0
        for _ in range(self.repeat):
            tau = self._pd_substep(target + self._gait_reference() if self.gait != "none" else target)
            energy += float(tau @ tau) * self.dt
            self._sim_time += self.dt
        move_obstacles(self._client, self._layout, self._box_ids, self.dt * self.repeat)
        self._last_action = a
        self._steps += 1

        pos, rot, _, ang = self._base_state()
        direction, dist = self._target_dir(self._prev_pos)
        vel = (pos - self._prev_pos) / (self.dt * self.repeat)
        along = float(vel[:2] @ direction)
        self._distance += along * self.dt * self.repeat
        self._prev_pos = pos
        capped = min(along, self.target_vel)
        sideways = vel[:2] - along * direction
        reward = (self.target_vel**2 - (capped - self.target_vel) ** 2 - self.z_penalty * vel[2] ** 2
                  - self.other_direction_penalty * float(sideways @ sideways)
                  - self.energy_weight * energy / self.repeat + self.alive_reward)
        touching = any(cp[2] in self._obstacles for cp in self._client.getContactPoints(bodyA=self._robot))
        self._collisions += int(touching)
        fall = bool(pos[2] < FALL_HEIGHT or rot[2, 2] < FALL_UPRIGHT)
        reached = bool(self._layout.goal is not None and self._target_dir(pos)[1] < 0.5)
        if fall:
            reward += self.fall_reward
        if reached:
            reward += self.goal_reward
        obs = self._observe(pos, rot, ang)
        truncated = self._steps >= self.horizon and not (fall or reached)
        return obs, float(reward), fall or reached, truncated, self._info(fall, reached)

    def render(self):
        """RGB frame [240, 320, 3] uint8 from a camera following the robot (for videos)."""
        if self._client is None:
            raise RuntimeError("call reset() before render()")
        pos, _, _, _ = self._base_state()
        return orbit_rgb(self._client, pos.tolist(), 2.2, -35.0, -25.0, fov=60, far=30.0)

    def close(self):
        if self._client is not None:
            self._client.disconnect()
            self._client = None
