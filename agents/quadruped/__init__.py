"""ppo_locomamba's own code: its config and its env/policy builders."""
