"""The velocity-commanded drone: embedded PyBullet env, AirSim backend, shared kinematics."""
