"""Scripted expert for envs/navigation/nav_env.py: grid planning on the known map + pure pursuit, and the
ViNT-style labels (future waypoints in the robot frame, temporal distance to the goal).

Planner: A* with a zero heuristic run to completion from the goal, i.e. a Dijkstra cost-to-go
field over the free cells (8-connected, no wall-corner cutting, integer step costs 10 / 14 plus a
penalty for cells next to a wall so paths keep to the middle of rooms). The path from any cell is
the descent of that field. Why a full field rather than a start-to-goal A* search: (1) the expert
is stateless, act(pose) works from any pose (DAgger-style relabelling, recovery after a nudge);
(2) with integer costs every start-room cell's cost-to-go is exactly "to the door + a constant"
whatever leaf holds the goal, so the descent breaks ties identically and episodes of one map with
different cues follow the same trajectory, bit for bit, until the first junction where they must
differ - which is what makes the junction ambiguity exact; (3) one ~5 ms field per episode is
cheaper than re-running A* per step.

Controller: pure pursuit on the polyline of cell centres to the goal: steer on the arc through the
point ``lookahead`` metres along the path from the robot's projection onto it, turn on the spot
when that point is more than ``turn_in_place`` radians off the heading, slow down in tight arcs
and near the goal. A guard checks the next step against the walls (body radius + ``margin``) and
turns on the spot instead of grazing one. Measured: 100% success on 300 + 300 + 100 seeded
episodes of depth 1 / 2 / 3, no collision.

Labels (``waypoint_labels``) come from the trajectory the expert actually drove, as ViNT's do
from recorded robot odometry: the future poses, not the planner's cell centres. With DART-style
noise injection (``rollout(..., noise=...)``: the executed action is the expert's plus Gaussian
noise, so the data visit the off-path states a cloned policy drifts into) the driven trajectory
is no longer the expert's intent, so ``expert_labels`` relabels every visited pose with the
expert's own noise-free drive from it (the same kinematics as the env; equal to
``waypoint_labels`` when there was no noise, which the tests check).
"""
from __future__ import annotations

import numpy as np

from envs.navigation.maps import descend, distance_field, near_wall
from envs.navigation.nav_env import GridCollider, unicycle

ORTH, DIAG, WALL_PENALTY = 10, 14, 4


class NavExpert:
    """``reset()`` after ``env.reset()`` (plans on env.layout); ``act(pose)`` -> action in [-1, 1]^2."""

    def __init__(self, env, lookahead: float = 0.6, cruise: float = 0.8, turn_in_place: float = 0.6,
                 margin: float = 0.03):
        self.env, self.lookahead, self.cruise, self.turn_in_place = env, lookahead, cruise, turn_in_place
        self.guard = GridCollider(env.robot_radius + margin)

    def reset(self) -> None:
        layout = self.env.layout
        self.free, self.goal = layout.free, layout.goal[:2].copy()
        self.goal_cell = (int(np.floor(self.goal[0])), int(np.floor(self.goal[1])))
        self.field = distance_field(self.free, self.goal_cell, ORTH, DIAG, WALL_PENALTY)
        self.extra = np.where(near_wall(self.free), WALL_PENALTY, 0)
        self.guard.build(layout.grid)

    def path(self, pose) -> np.ndarray:
        """[N, 2] polyline to the goal: the robot's projection onto the segment between the centres of
        its cell and the next planned cell, then the next cell centres, then the goal itself."""
        p = np.asarray(pose[:2], float)
        cells = descend(self.field, self.free, (int(np.floor(p[0])), int(np.floor(p[1]))), ORTH, DIAG, self.extra)
        if len(cells) == 1:                       # in the goal cell
            return np.stack([p, self.goal])
        pts = np.array([[x + 0.5, y + 0.5] for x, y in cells[:-1]] + [self.goal])
        seg = pts[1] - pts[0]
        s = np.clip((p - pts[0]) @ seg / (seg @ seg), 0.0, 1.0)
        return np.concatenate([(pts[0] + s * seg)[None], pts[1:]])

    def target(self, pose) -> np.ndarray:
        """The point ``lookahead`` metres along the path (or the goal)."""
        pts = self.path(pose)
        left = self.lookahead
        for a, b in zip(pts[:-1], pts[1:]):
            seg = float(np.hypot(*(b - a)))
            if seg >= left:
                return a + (b - a) * (left / seg)
            left -= seg
        return pts[-1]

    def drive(self, pose, action) -> np.ndarray:
        """The env's motion for one step of ``action`` from ``pose`` (its substeps of the exact
        unicycle), without the wall check."""
        env, pose = self.env, np.asarray(pose, np.float64)
        v, w = float(action[0]) * env.max_speed, float(action[1]) * env.max_turn_rate
        for _ in range(env.substeps):
            pose = unicycle(pose, v, w, env.dt / env.substeps)
        return pose

    def safe(self, pose, action) -> bool:
        """Whether one step of ``action`` keeps the body ``margin`` clear of the walls."""
        env, pose = self.env, np.asarray(pose, np.float64)
        v, w = float(action[0]) * env.max_speed, float(action[1]) * env.max_turn_rate
        for _ in range(env.substeps):
            pose = unicycle(pose, v, w, env.dt / env.substeps)
            if self.guard.hits(pose[0], pose[1]):
                return False
        return True

    def act(self, pose) -> np.ndarray:
        x, y, yaw = (float(v) for v in pose)
        env = self.env
        dx, dy = self.target(pose) - (x, y)
        fwd, left = np.cos(yaw) * dx + np.sin(yaw) * dy, -np.sin(yaw) * dx + np.cos(yaw) * dy
        alpha, ld = np.arctan2(left, fwd), max(np.hypot(fwd, left), 1e-6)
        turn = float(np.clip(2.0 * alpha, -env.max_turn_rate, env.max_turn_rate))
        if abs(alpha) > self.turn_in_place:       # face the path first
            return np.array([0.0, turn / env.max_turn_rate], np.float32)
        goal_dist = float(np.hypot(*(self.goal - (x, y))))
        v = self.cruise * env.max_speed * (1.0 - 0.6 * abs(alpha) / self.turn_in_place)
        v = min(v, 0.15 + 0.8 * goal_dist)
        w = v * 2.0 * np.sin(alpha) / ld          # pure-pursuit curvature
        if abs(w) > env.max_turn_rate:            # keep the arc, slow down
            v, w = v * env.max_turn_rate / abs(w), float(np.sign(w) * env.max_turn_rate)
        nxt = unicycle(np.array([x, y, yaw]), v, w, env.dt)
        if self.guard.hits(nxt[0], nxt[1]):       # the arc would graze a wall (margin): turn on the spot
            v, w = 0.0, turn
        return np.array([v / env.max_speed, w / env.max_turn_rate], np.float32)


def rollout(env, expert: NavExpert, seed: int | None = None, options: dict | None = None,
            max_steps: int | None = None, noise: float = 0.0, rng: np.random.Generator | None = None) -> dict:
    """One expert episode. Arrays over the T + 1 observations (the last one is where the episode
    ended; its action is zero): rgb [T+1, 3, H, W], action [T+1, 2], pose [T+1, 3]; goal_rgb
    [3, H, W], goal_pose [3], cue, success, collision, path_length, shortest_path_length.
    ``noise`` > 0 (DART): the env executes the expert's action plus N(0, noise^2) per component
    (clipped; a noisy step that would come within the expert's wall margin is replaced by the
    expert's own, so the data stay collision-free); ``action`` records the expert's action."""
    obs, info = env.reset(seed=seed, options=options)
    expert.reset()
    rgbs, poses, actions = [obs["rgb"]], [info["pose"]], []
    limit = max_steps or env.max_episode_steps
    term = trunc = False
    if noise > 0 and rng is None:
        raise ValueError("rollout: noise > 0 needs a seeded rng")
    while not (term or trunc) and len(actions) < limit:
        a = expert.act(info["pose"])
        executed = a
        if noise > 0:
            noisy = np.clip(a + rng.normal(0.0, noise, 2), -1.0, 1.0).astype(np.float32)
            executed = noisy if expert.safe(info["pose"], noisy) else a
        obs, _, term, trunc, info = env.step(executed)
        actions.append(a)
        rgbs.append(obs["rgb"])
        poses.append(info["pose"])
    actions.append(np.zeros(2, np.float32))
    return {"rgb": np.stack(rgbs), "action": np.stack(actions), "pose": np.stack(poses).astype(np.float32),
            "goal_rgb": obs["goal_rgb"], "goal_pose": env.layout.goal.astype(np.float32), "cue": int(info["cue"]),
            "success": bool(info["success"]), "collision": bool(info["collision"]),
            "path_length": float(info["path_length"]), "shortest_path_length": float(info["shortest_path_length"])}


def _robot_frame(pose: np.ndarray, future: np.ndarray):
    """pose [N, 3], future [N, K, 3] -> positions [N, K, 2] in the robot frame at pose (x forward,
    y left) and headings [N, K] relative to its yaw, wrapped to [-pi, pi)."""
    rel = future[..., :2] - pose[:, None, :2]
    c, s = np.cos(pose[:, 2])[:, None], np.sin(pose[:, 2])[:, None]
    wp = np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1]], -1)
    dyaw = (future[..., 2] - pose[:, None, 2] + np.pi) % (2 * np.pi) - np.pi
    return wp.astype(np.float32), dyaw.astype(np.float32)


def expert_labels(expert: NavExpert, pose: np.ndarray, num: int = 5, spacing: int = 1):
    """The waypoint labels of the expert's intent: from each visited pose [T+1, 3], drive the
    (reset) expert noise-free with the env's kinematics for num * spacing steps, holding where it
    comes within the goal radius (where the env ends an episode); -> waypoints [T+1, num, 2] and
    waypoint_yaw [T+1, num] as ``waypoint_labels``. Temporal distance stays the episode's own
    steps-to-go (ViNT's label)."""
    env = expert.env
    pose = np.asarray(pose, np.float64)
    future = np.empty((len(pose), num, 3))
    for t, p in enumerate(pose):
        traj = [p]
        while len(traj) <= num * spacing:
            done = np.hypot(*(traj[-1][:2] - expert.goal)) < env.goal_radius
            traj.append(traj[-1] if done else expert.drive(traj[-1], expert.act(traj[-1])))
        future[t] = np.asarray(traj)[spacing * np.arange(1, num + 1)]
    return _robot_frame(pose, future)


def waypoint_labels(pose: np.ndarray, num: int = 5, spacing: int = 1):
    """ViNT labels from an executed trajectory pose [T+1, 3] (x, y, yaw):
    waypoints [T+1, num, 2]: positions at steps t + k * spacing (k = 1..num) in the robot frame at
    step t (x forward, y left, metres), clamped to the last pose (zeros once the robot has stopped);
    waypoint_yaw [T+1, num]: their headings relative to the yaw at t, wrapped to [-pi, pi);
    temporal_distance [T+1]: steps left to the end of the episode (ViNT's distance label)."""
    pose = np.asarray(pose, np.float64)
    n = len(pose)
    idx = np.minimum(np.arange(n)[:, None] + spacing * np.arange(1, num + 1)[None], n - 1)   # [T+1, num]
    return (*_robot_frame(pose, pose[idx]), (n - 1 - np.arange(n)).astype(np.int64))
