"""The POMDP memory suite and the velocity-masked pendulum."""
