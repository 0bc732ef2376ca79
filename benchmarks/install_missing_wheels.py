"""Install the given wheels into --target, each only if this Python cannot import it already.

    python3 benchmarks/install_missing_wheels.py --target /tmp/site gpu_carry/diffusion/*.whl

For the GPU host (benchmarks/device_site.sh): its Python has some of diffusers' dependencies
(requests, packaging, filelock...) and lacks others. ``pip install --target`` resolves against the
target alone, so it would reinstall (and, first on PYTHONPATH, shadow) what the host has, numpy
included; ``--no-deps`` of every wheel would shadow them too. So: a wheel's top-level modules come
from its RECORD, and it goes in only when none of them imports from the host's own path (the
target excluded). Prints one line naming what went in and what was the host's.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path


def top_level_modules(wheel: Path) -> set[str]:
    """Importable top-level names a wheel installs: first path parts of its RECORD, less metadata."""
    with zipfile.ZipFile(wheel) as z:
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        names = set()
        for line in z.read(record).decode().splitlines():
            first = line.split(",")[0].split("/")[0]
            if not first or first.endswith((".dist-info", ".data")) or first.startswith("__"):
                continue
            if first.endswith((".py", ".so")):       # a top-level module, or a compiled one (name.cpython-...so)
                names.add(first.split(".")[0])
            elif "." not in first:                     # a package folder (not a .pth or other file)
                names.add(first)
    return names


def split_by_host(wheels, target: str) -> tuple[list[Path], list[Path]]:
    """(wheels to install, wheels whose modules this Python imports already), ``target`` left off
    sys.path while looking (what an earlier call put there must not count as the host's)."""
    target = Path(target).resolve().as_posix()
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve().as_posix() != target]
    importlib.invalidate_caches()
    try:
        missing, present = [], []
        for wheel in map(Path, wheels):
            names = top_level_modules(wheel)
            if not names:
                raise SystemExit(f"{wheel}: no importable top-level module in its RECORD")
            (present if any(importlib.util.find_spec(n) for n in names) else missing).append(wheel)
        return missing, present
    finally:
        sys.path[:] = saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="the folder put first on PYTHONPATH (e.g. /tmp/site)")
    ap.add_argument("wheels", nargs="+", type=Path)
    args = ap.parse_args(argv)
    missing, present = split_by_host(args.wheels, args.target)
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--target", args.target, *map(str, missing)], check=True)
    print(f"installed into {args.target}: {' '.join(w.name.split('-')[0] for w in missing) or 'nothing'}; "
          f"the host's own: {' '.join(w.name.split('-')[0] for w in present) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
