"""Scripted experts for envs/manipulation/panda_env.py: closed-loop waypoint machines on privileged state.

Each step the expert reads ``env.privileged_state()`` (gripper, cube and goal positions), picks the
waypoint of its current phase and outputs the env's action: the position error in units of
``max_delta`` (clipped to [-1, 1], so it moves at full speed far away and slows near the
waypoint) plus a gripper command. Closed loop rather than a fixed trajectory: waypoints follow the
cube every step, so a cube that rotates or slips while pushed, or slips out of the fingers, is
recovered from (the push re-aims behind the cube, the grasp starts over).

  push:       close fingers, go above the point behind the cube on the goal->cube line, descend,
              push along the line (re-aiming every step), back off and re-approach if the gripper
              slides off the cube's side
  pick_place: open, go above the cube, descend, close, lift, carry above the bin, lower, open
"""
from __future__ import annotations

import numpy as np

from envs.manipulation.panda_env import TASKS

Z_SAFE = 0.10         # travel height above cubes and bin walls (m)
Z_PUSH = 0.025        # gripper height while pushing: fingertips ~1.4 cm above the table
PUSH_CONTACT = 0.012  # closed fingertips reach this far from the gripper centre
Z_CARRY, Z_RELEASE = 0.15, 0.10
CLOSE_STEPS, OPEN_STEPS = 4, 3


class ScriptedExpert:
    """``act(state) -> action [4]``; ``reset()`` between episodes. noise > 0 adds seeded Gaussian
    noise to the motion part (not the gripper) for more varied demonstrations."""

    def __init__(self, task: str, noise: float = 0.0, seed: int | None = None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        self.task, self.noise = task, float(noise)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self):
        self.phase, self._count = ("approach" if self.task == "push" else "above"), 0

    def act(self, s: dict) -> np.ndarray:
        target, grip = (self._push if self.task == "push" else self._pick_place)(s)
        move = np.clip((target - s["ee_pos"]) / s["max_delta"], -1.0, 1.0)
        if self.noise > 0:
            move = np.clip(move + self.rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        return np.append(move, grip).astype(np.float32)

    # ------------------------------------------------------------------------------- push
    def _push(self, s):
        ee, obj, goal, half = s["ee_pos"], s["object_pos"], s["goal_pos"], s["object_half"]
        to_goal = goal[:2] - obj[:2]
        d = to_goal / max(np.linalg.norm(to_goal), 1e-6)       # push direction
        behind = obj[:2] - d * (half + PUSH_CONTACT + 0.02)
        rel = ee[:2] - obj[:2]
        along = rel @ d                                         # < 0: behind the cube
        lateral = np.linalg.norm(rel - along * d)
        if self.phase == "approach":
            target = np.append(behind, Z_SAFE)
            if np.linalg.norm(ee[:2] - behind) < 0.01:
                self.phase = "descend"
        elif self.phase == "descend":
            target = np.append(behind, Z_PUSH)
            if np.linalg.norm(ee[:2] - behind) > 0.02:         # drifted (or the cube moved)
                self.phase = "approach"
            elif abs(ee[2] - Z_PUSH) < 0.008:
                self.phase = "push"
        elif self.phase == "push":
            if lateral > 0.02 or along > -half:                 # slid off the side or past it
                self.phase, target = "retreat", np.append(ee[:2], Z_SAFE)
            else:   # a point inside the cube on the goal line: pushes and steers at once
                target = np.append(obj[:2] - d * (half + PUSH_CONTACT - 0.02), Z_PUSH)
        else:  # retreat
            target = np.append(ee[:2] - d * 0.02, Z_SAFE)
            if ee[2] > Z_SAFE - 0.01:
                self.phase = "approach"
        return target, 1.0

    # ------------------------------------------------------------------------- pick_place
    def _pick_place(self, s):
        ee, obj, goal, half = s["ee_pos"], s["object_pos"], s["goal_pos"], s["object_half"]
        grasp = np.append(obj[:2], max(obj[2], 0.022))
        if self.phase in ("lift", "carry", "lower") and obj[2] < half + 0.01 and ee[2] > obj[2] + 0.04:
            self.phase = "above"                                # dropped it: start over
        if self.phase == "above":
            target, grip = np.append(obj[:2], Z_SAFE), -1.0
            if np.linalg.norm(ee[:2] - obj[:2]) < 0.006:
                self.phase = "descend"
        elif self.phase == "descend":
            target, grip = grasp, -1.0
            if np.linalg.norm(ee[:2] - obj[:2]) > 0.015:
                self.phase = "above"                            # the cube moved: realign
            elif abs(ee[2] - grasp[2]) < 0.006:
                self.phase, self._count = "close", 0
        elif self.phase == "close":
            target, grip = grasp, 1.0
            self._count += 1
            if self._count >= CLOSE_STEPS:
                self.phase = "lift"
        elif self.phase == "lift":
            target, grip = np.append(ee[:2], Z_CARRY), 1.0
            if ee[2] > Z_CARRY - 0.02:
                self.phase = "carry"
        elif self.phase == "carry":
            target, grip = np.append(goal[:2], Z_CARRY), 1.0
            if np.linalg.norm(ee[:2] - goal[:2]) < 0.01:
                self.phase = "lower"
        elif self.phase == "lower":
            target, grip = np.append(goal[:2], Z_RELEASE), 1.0
            if abs(ee[2] - Z_RELEASE) < 0.01:
                self.phase, self._count = "release", 0
        else:  # release, then hold still above the bin
            target, grip = np.append(goal[:2], Z_RELEASE), -1.0
        return target, grip


def make_expert(task: str, noise: float = 0.0, seed: int | None = None) -> ScriptedExpert:
    return ScriptedExpert(task, noise, seed)


def rollout(env, expert: ScriptedExpert, seed: int, record: bool = True) -> dict:
    """One seeded episode of ``expert`` in ``env`` (a PandaManipEnv, possibly wrapped).

    Returns success (bool) and length; with record, also the per-step arrays the observation
    *before* each action and the action: point_cloud [T, N, 3] (if observed), agent_pos [T, 11],
    action [T, 4].
    """
    base = env.unwrapped
    obs, _ = env.reset(seed=seed)
    expert.reset()
    keys = list(obs) if record else []
    steps = {k: [] for k in keys + ["action"]} if record else None
    success, length = False, 0
    while True:
        action = expert.act(base.privileged_state())
        if record:
            for k in keys:
                steps[k].append(obs[k])
            steps["action"].append(action)
        obs, _, terminated, truncated, info = env.step(action)
        length += 1
        success = success or bool(info["success"])
        if terminated or truncated:
            break
    out = {"success": success, "length": length}
    if record:
        out.update({k: np.stack(v) for k, v in steps.items()})
    return out
