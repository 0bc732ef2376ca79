"""The drone state every backend (PyBullet, AirSim) reports, in the env's world frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Kinematics:
    """Drone state in the env's world frame (z up): what every backend reports."""
    pos: np.ndarray        # [3] m
    vel: np.ndarray        # [3] m/s, world frame
    yaw: float             # rad, counter-clockwise from +x
    yaw_rate: float        # rad/s
