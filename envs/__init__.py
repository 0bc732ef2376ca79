"""mambazoo envs."""
