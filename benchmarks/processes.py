"""The simulator-limit rows of the throughput benchmarks: N independent processes, each putting
its own steps/s on a queue; the machine's rate is their sum."""
from __future__ import annotations

import multiprocessing as mp


def summed_rate(worker, args_per_process: list[tuple]) -> float:
    """Start ``worker(*args, queue)`` in one spawned process per tuple; the sum of the rates they
    put on the queue. Spawn, not fork: each process imports its simulator afresh, one thread each."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(*args, q)) for args in args_per_process]
    for p in procs:
        p.start()
    rates = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)
