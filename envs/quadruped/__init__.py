"""Unitree A1 in PyBullet and its obstacle courses."""
