import contextlib
import os
import signal

import pytest
import torch

# Under pytest-xdist each worker is a process; one torch thread each avoids
# oversubscribing the 2-core CI machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_float32_precision():
    """An agent's main() on CUDA turns on TF32 matmuls for the process (runtime.cli.use_tf32_matmuls);
    a test that runs one must not leave them on for the float32 parity tests that follow in the same
    worker (seen on the H200: a Triton step and an unrolled GRU off by 3e-5 and 3e-4 after one)."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (and mamba-ssm for the kernel tests)")


@pytest.fixture
def sigterm_after_log(monkeypatch):
    """``with sigterm_after_log(agent_module, frame): ...``: the agent's ``log_scalars`` sends this
    process a real SIGTERM right after it logs the scalars of ``frame`` that hold ``key`` (any, with
    key=None): the stop tests of the agents that checkpoint on SIGTERM."""
    @contextlib.contextmanager
    def patch(module, frame: int, key: str | None = "time/steps_per_s"):
        real_log = module.log_scalars

        def signalling_log(logger, scalars, step):
            real_log(logger, scalars, step)
            if step == frame and (key is None or key in scalars):
                os.kill(os.getpid(), signal.SIGTERM)

        with monkeypatch.context() as m:
            m.setattr(module, "log_scalars", signalling_log)
            yield
    return patch
