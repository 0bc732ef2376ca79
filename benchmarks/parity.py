"""The memory contract's parity check over random episode-reset patterns, from the command line
(the harness is networks/memory/parity.py).

    python -m benchmarks.parity --patterns 1000            # every kind, float64
    python -m benchmarks.parity --kinds mamba2 --dtype float32
"""
from __future__ import annotations

import argparse
import sys

import torch

from networks import MEMORY_KINDS
from networks.memory.parity import run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patterns", type=int, default=1000, help="random reset patterns per kind")
    p.add_argument("--kinds", nargs="+", default=list(MEMORY_KINDS), choices=MEMORY_KINDS)
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    results = run(args.kinds, args.patterns, getattr(torch, args.dtype), args.seed)
    failed = sum(f for f, _ in results.values())
    print(f"{sum(args.patterns for _ in results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
