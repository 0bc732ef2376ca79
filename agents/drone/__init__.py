"""vmamba_td3's own code (drone, and the pendulum configs): config, env/network/replay builders."""
