"""Obstacle courses for the A1 quadruped: layouts as primitives, built into a PyBullet scene.

The robot starts at the origin facing +x. Obstacles fill a field ahead of it
(x in [x_start, length], |y| <= half_width); the layout is drawn from the env's seeded RNG, so
one seed gives one course. The same ``Primitives`` arrays feed PyBullet (collisions) and the
ray-cast depth camera (envs/scene/depth_camera.py), which is why obstacles are plain boxes and
vertical cylinders.

Courses (after LocoTransformer's environments):
  flat    no obstacles
  thin    many thin pillars and posts (LocoTransformer "thin")
  wide    fewer, wide blocks and wall segments (LocoTransformer "wide")
  moving  blocks sliding sideways and bouncing between the field's edges
  goal    thin obstacles plus a goal point to reach (reward is progress towards it)
"""
from __future__ import annotations


import numpy as np

from envs.scene.depth_camera import Primitives
from envs.scene.obstacles import CourseLayout

COURSES = ("flat", "thin", "wide", "moving", "goal")
DEFAULT_OBSTACLES = {"flat": 0, "thin": 60, "wide": 24, "moving": 24, "goal": 40}


def make_layout(course: str, rng: np.random.Generator, num_obstacles: int | None = None,
                length: float = 30.0, half_width: float = 3.0, x_start: float = 1.5) -> CourseLayout:
    if course not in COURSES:
        raise ValueError(f"course must be one of {list(COURSES)}, got {course!r}")
    n = DEFAULT_OBSTACLES[course] if num_obstacles is None else int(num_obstacles)
    boxes, cyls, vel, goal = [], [], [], None

    def xy():
        return rng.uniform(x_start, length), rng.uniform(-half_width, half_width)

    if course in ("thin", "goal"):
        for _ in range(n):
            x, y = xy()
            h = rng.uniform(0.4, 1.2)
            if rng.random() < 0.5:     # round pillar
                cyls.append((x, y, h / 2, rng.uniform(0.04, 0.1), h / 2))
            else:                      # thin post, randomly turned
                boxes.append((x, y, h / 2, rng.uniform(0.03, 0.08), rng.uniform(0.03, 0.3), h / 2,
                              rng.uniform(-np.pi, np.pi)))
                vel.append(0.0)
        if course == "goal":
            goal = np.array([rng.uniform(8.0, 15.0), rng.uniform(-half_width, half_width)])
    elif course in ("wide", "moving"):
        for _ in range(n):
            x, y = xy()
            h = rng.uniform(0.3, 1.0)
            if course == "wide":
                boxes.append((x, y, h / 2, rng.uniform(0.15, 0.4), rng.uniform(0.4, 1.2), h / 2,
                              rng.uniform(-0.5, 0.5)))
                vel.append(0.0)
            else:
                boxes.append((x, y, h / 2, rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.4), h / 2, 0.0))
                vel.append(rng.choice([-1, 1]) * rng.uniform(0.2, 0.6))
    b = np.array(boxes, dtype=np.float64).reshape(-1, 7)
    c = np.array(cyls, dtype=np.float64).reshape(-1, 5)
    prims = Primitives(b[:, 0:3].copy(), b[:, 3:6].copy(), b[:, 6].copy(),
                       c[:, 0:3].copy(), c[:, 3].copy(), c[:, 4].copy())
    return CourseLayout(prims, np.array(vel, dtype=np.float64), goal, half_width)
