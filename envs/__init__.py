"""mambazoo envs: embedded simulators behind gymnasium, registered under the ``mambazoo/`` namespace.

    gymnasium.make("mambazoo/A1Thin-v0")   # A1 quadruped, thin-obstacle course (see envs/a1_quadruped.py)
"""
import gymnasium as gym

from .courses import COURSES

QUADRUPED_IDS = {course: f"mambazoo/A1{course.capitalize()}-v0" for course in COURSES}

for _course, _id in QUADRUPED_IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point="envs.a1_quadruped:A1QuadrupedEnv",
                     kwargs={"course": _course}, max_episode_steps=None)
