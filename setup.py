"""mambazoo: memory-based robot learning on TorchRL + TensorDict, with Mamba memory.

CPU-only users: install ``torch`` first from a CPU wheel (see README), otherwise pip
resolves ``torch`` to the newest CUDA build and downloads several GB.
"""
from setuptools import find_packages, setup

# Versions known to work together (torchrl 0.14 needs tensordict 0.14.x).
CORE = [
    "torch>=2.6",
    "torchrl==0.14.1",
    "tensordict>=0.14.1,<0.15",
    "gymnasium>=1.0,<1.5",
    "pybullet>=3.2.6",
    "numpy>=1.26",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "matplotlib>=3.8",
]
# DDPM/DDIM schedulers of the diffusion-policy agent (agents/bc_diffusion.py); pulls
# huggingface_hub, but nothing is downloaded at run time. An extra: the other agents do not need it.
DIFFUSION = ["diffusers>=0.30"]

EXTRAS = {
    # Compiled on a CUDA machine from sdists; see README "GPU".
    "cuda": ["mamba-ssm==2.3.2.post1", "causal-conv1d==1.7.0"],
    # Cosys-AirSim client: same MultirotorClient API as `airsim`, installs on py3.11+.
    "airsim": ["cosysairsim", "msgpack>=1.0"],
    "wandb": ["wandb>=0.17"],
    "tensorboard": ["tensorboard>=2.14"],
    # mp4 videos; without these, evaluation videos are written as GIFs (Pillow)
    "video": ["imageio>=2.31", "imageio-ffmpeg>=0.5"],
    # benchmarks/sweep.py --ray and collector.backend=ray; ~240 MB, so not part of "dev" (the Ray
    # test skips without it)
    "ray": ["ray>=2.9"],
    # the external RecurrentPPO baseline of benchmarks/sb3_baseline.py (its test skips without it)
    "sb3": ["sb3-contrib>=2.3"],
    "diffusion": DIFFUSION,
    "dev": ["pytest>=8.0", "pytest-xdist>=3.5", "msgpack>=1.0", *DIFFUSION],
}

setup(
    name="mambazoo",
    version="0.1.0",
    description="A TorchRL agent zoo whose memory is Mamba (selective state-space models)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["agents", "agents.*", "envs", "envs.*", "networks", "networks.*", "benchmarks"]),
    # the C++ sources of the CPU kernels, compiled on first use (networks/ssm/cpu_scan.py, cpu_mamba2.py), and the
    # shipped policies
    package_data={"networks.ssm": ["csrc/*.cpp", "csrc/*.h"], "agents": ["policies/*/*.pt"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    license="MIT",
)
