"""mambazoo envs: embedded simulators behind gymnasium, registered under the ``mambazoo/`` namespace.

    gymnasium.make("mambazoo/A1Thin-v0")        # A1 quadruped, thin-obstacle course (envs/quadruped/a1_env.py)
    gymnasium.make("mambazoo/DroneForest-v0")   # velocity-commanded drone, cylinder forest (envs/drone/drone_env.py)
    gymnasium.make("mambazoo/POMDP-RepeatPrevious-easy-v0")  # POMDP memory suite (envs/pomdp/suite.py)
"""
import gymnasium as gym

from envs.quadruped.courses import COURSES
from envs.pomdp.suite import POMDP_IDS, register_pomdp_envs

QUADRUPED_IDS = {course: f"mambazoo/A1{course.capitalize()}-v0" for course in COURSES}

for _course, _id in QUADRUPED_IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point="envs.quadruped.a1_env:A1QuadrupedEnv",
                     kwargs={"course": _course}, max_episode_steps=None)

DRONE_IDS = {field: f"mambazoo/Drone{field.capitalize()}-v0" for field in ("forest", "walls", "boxes")}

for _field, _id in DRONE_IDS.items():
    if _id not in gym.registry:  # the env truncates itself at max_episode_steps
        gym.register(_id, entry_point="envs.drone.drone_env:DroneEnv", kwargs={"field": _field},
                     max_episode_steps=None)

register_pomdp_envs()

if "mambazoo/PendulumNoVel-v0" not in gym.registry:  # Pendulum-v1 wrapped: keeps its 200-step limit
    gym.register("mambazoo/PendulumNoVel-v0", entry_point="envs.pomdp.pendulum_novel:make_pendulum_novel")

MANIP_IDS = {"push": "mambazoo/PandaPush-v0", "pick_place": "mambazoo/PandaPickPlace-v0"}
for _task, _id in MANIP_IDS.items():
    if _id not in gym.registry:  # the env truncates itself at its horizon
        gym.register(_id, entry_point="envs.manipulation.panda_env:PandaManipEnv", kwargs={"task": _task},
                     max_episode_steps=None)

NAV_IDS = {d: f"mambazoo/NavTMaze{d}-v0" for d in (1, 2, 3)}  # T-maze depth: 2^depth look-alike leaves
for _d, _id in NAV_IDS.items():
    if _id not in gym.registry:  # the env truncates itself at max_episode_steps
        gym.register(_id, entry_point="envs.navigation.nav_env:NavigationEnv", kwargs={"depth": _d},
                     max_episode_steps=None)
