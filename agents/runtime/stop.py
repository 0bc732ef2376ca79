"""A graceful stop on SIGTERM or Ctrl-C (SIGINT): the trainer finishes the batch it is on, writes a
checkpoint at that frame and exits, instead of losing everything since its last periodic checkpoint
to the SIGKILL that follows. SIGTERM is what batch schedulers (SLURM's ``--signal``, Kubernetes'
termination grace) and our device scripts (benchmarks/device_runs.sh: SIGTERM, then SIGKILL a grace
period later) send; a second Ctrl-C ends the process at once (KeyboardInterrupt), as users expect.

A terminal's Ctrl-C reaches the whole foreground process group, env workers included: the agents'
env factories go through ``worker_ignores_sigint``, so a worker ignores it and keeps stepping until
the trainer closes it. A SIGTERM must go to the trainer alone, not to its process group, or the env
worker processes die with it (their pipes break mid-batch).

Written here because the standard library's ``signal`` module is the whole tool: ~20 lines that
set a flag the training loop reads between batches (a Python handler runs in the main thread
between bytecodes, so nothing is torn mid-update).
"""
from __future__ import annotations

import multiprocessing
import os
import signal


class StopOnSignal:
    """``with StopOnSignal() as stop: ... if stop.requested: ...``: SIGTERM or SIGINT sets
    ``requested`` (and ``signal_name``) instead of ending the process; a second SIGINT raises
    KeyboardInterrupt; the previous handlers come back on exit. Outside the main thread (where
    Python cannot install handlers) it never requests a stop."""

    def __init__(self, signals: tuple = (signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.requested = False
        self.signal_name = ""
        self._previous = {}

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:   # Ctrl-C twice: stop now, no checkpoint
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:   # os.write, not print: a handler that prints while the loop prints
            # raises "reentrant call" in the buffered stream
            os.write(2, b"Ctrl-C: stopping after this batch with a checkpoint (Ctrl-C again to quit now)\n")

    def __enter__(self) -> "StopOnSignal":
        for sig in self.signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:       # not the main thread: no handler, no stop
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def worker_ignores_sigint(make, *args, **kwargs):
    """``make(*args, **kwargs)``, and in a child process (an env worker: ParallelEnv's, gymnasium's
    AsyncVectorEnv's) SIGINT ignored from then on, so a Ctrl-C meant for the trainer does not kill
    the worker mid-batch (the trainer stops gracefully and closes it). In the main process (where
    ParallelEnv builds one env for its specs) nothing changes. Pass it as
    ``functools.partial(worker_ignores_sigint, make, ...)``: picklable for the spawn start method."""
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return make(*args, **kwargs)
