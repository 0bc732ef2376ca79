"""The algorithms shared by agents: PPO, behaviour cloning, CUDA-graph training steps."""
