"""A graceful stop on SIGTERM: the trainer finishes the batch it is on, writes a checkpoint at that
frame and exits, instead of losing everything since its last periodic checkpoint to the SIGKILL
that follows. What batch schedulers (SLURM's ``--signal``, Kubernetes' termination grace) and our
device scripts (benchmarks/device_runs.sh: SIGTERM, then SIGKILL a grace period later) send.

Only the process that gets the signal stops gracefully: send it to the trainer alone, not to its
process group, or the env worker processes die with it (their pipes break mid-batch).

Written here because the standard library's ``signal`` module is the whole tool: ~20 lines that
set a flag the training loop reads between batches (a Python handler runs in the main thread
between bytecodes, so nothing is torn mid-update).
"""
from __future__ import annotations

import signal


class StopOnSignal:
    """``with StopOnSignal() as stop: ... if stop.requested: ...``: SIGTERM sets ``requested``
    (and ``signal_name``) instead of ending the process; the previous handler comes back on exit.
    Outside the main thread (where Python cannot install handlers) it never requests a stop."""

    def __init__(self, signals: tuple = (signal.SIGTERM,)):
        self.signals = signals
        self.requested = False
        self.signal_name = ""
        self._previous = {}

    def _handle(self, signum, _frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name

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
