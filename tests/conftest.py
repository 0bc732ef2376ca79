import os

import torch

# Under pytest-xdist each worker is a process; one torch thread each avoids
# oversubscribing the 2-core CI machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (and mamba-ssm for the kernel tests)")
