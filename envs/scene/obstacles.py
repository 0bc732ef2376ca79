"""Obstacle layouts shared by the quadruped courses and the drone fields: the same ``Primitives``
arrays (boxes and vertical cylinders) feed PyBullet (collisions) and the ray-cast depth camera
(envs/scene/depth_camera.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.scene.depth_camera import Primitives


@dataclass
class CourseLayout:
    prims: Primitives
    box_velocity: np.ndarray        # [Nb] lateral speed (m/s); non-zero only on "moving"
    goal: np.ndarray | None         # [2] xy of the goal on "goal", else None
    half_width: float



def build_bodies(client, layout: CourseLayout) -> tuple[list[int], list[int]]:
    """Create static PyBullet bodies for the layout; returns (box ids, cylinder ids)."""
    import pybullet as p

    p_ = layout.prims
    box_ids, cyl_ids = [], []
    for center, half, yaw in zip(p_.box_center, p_.box_half, p_.box_yaw):
        shape = client.createCollisionShape(p.GEOM_BOX, halfExtents=half.tolist())
        visual = client.createVisualShape(p.GEOM_BOX, halfExtents=half.tolist(), rgbaColor=[0.6, 0.6, 0.65, 1])
        box_ids.append(client.createMultiBody(0, shape, visual, center.tolist(),
                                              client.getQuaternionFromEuler([0, 0, float(yaw)])))
    for center, radius, hh in zip(p_.cyl_center, p_.cyl_radius, p_.cyl_half_height):
        shape = client.createCollisionShape(p.GEOM_CYLINDER, radius=float(radius), height=float(2 * hh))
        visual = client.createVisualShape(p.GEOM_CYLINDER, radius=float(radius), length=float(2 * hh),
                                          rgbaColor=[0.55, 0.6, 0.55, 1])
        cyl_ids.append(client.createMultiBody(0, shape, visual, center.tolist()))
    return box_ids, cyl_ids


def move_obstacles(client, layout: CourseLayout, box_ids: list[int], dt: float) -> None:
    """Slide the moving boxes sideways by dt, bouncing off the field's edges (kinematic bodies)."""
    moving = np.nonzero(layout.box_velocity)[0]
    if moving.size == 0:
        return
    p_ = layout.prims
    y = p_.box_center[moving, 1] + layout.box_velocity[moving] * dt
    out = np.abs(y) > layout.half_width
    layout.box_velocity[moving[out]] *= -1
    p_.box_center[moving, 1] = np.clip(y, -layout.half_width, layout.half_width)
    for i in moving:
        client.resetBasePositionAndOrientation(box_ids[i], p_.box_center[i].tolist(), [0, 0, 0, 1])
