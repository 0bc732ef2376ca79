"""What the env families share: obstacle primitives (PyBullet bodies and their ray-cast
geometry) and the sensors that see them (ray-cast depth camera, point clouds)."""
