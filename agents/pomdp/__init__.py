"""ppo_memory's own code: config, POMDP envs and memory policy builders."""
