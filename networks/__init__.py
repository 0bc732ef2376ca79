"""mambazoo networks: memory modules (Mamba1/2, GRU, LSTM, transformer, none) and their parts.

Importing this package never imports mamba-ssm or needs CUDA; see ``networks.ssm.kernels``.
"""
from networks.memory.factory import MEMORY_KINDS, make_memory, memory_options

__all__ = ["MEMORY_KINDS", "make_memory", "memory_options"]
