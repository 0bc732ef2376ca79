"""Atomic file writes: the one write-temp-then-rename of the project.

A file written through these helpers only ever appears under its final name complete: the bytes go
to a temp file beside it (``.<name>.<random>.tmp``, hidden, so globs of the real names never see
it and ``.*.tmp`` finds leftovers), which is flushed and fsynced, then ``os.replace``d over the
destination, then the folder is fsynced (the rename itself survives a power cut on POSIX). When
the write raises (or the process is interrupted with an exception) the temp file is removed and
the destination is untouched. The file gets the permissions a plain ``open(path, "w")`` gives
(0o666 minus the umask), not mkstemp's private 0o600: runs and datasets are shared.

Used by every agent and benchmark that writes files (checkpoints, exports, configs, datasets,
curves, sweep rows, videos). ``networks`` and ``envs`` write no files.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


def fsync_dir(path) -> None:
    """fsync a directory, making the renames in it durable on POSIX (a no-op where directories
    cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reserve(dest: Path, suffix: str) -> Path:
    """Create an empty, new temp file beside ``dest`` (O_EXCL: two writers never share one)."""
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _commit(tmp: Path, dest: Path, fsync_file: bool) -> None:
    if fsync_file:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_path(dest, suffix: str = "") -> Iterator[Path]:
    """Yields a temp path beside ``dest`` for a writer that opens files itself (imageio, Pillow,
    torch.save to a name); on a clean exit it becomes ``dest``. ``suffix`` ends the temp name
    (e.g. ``.mp4``, for writers that pick the format from it)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve(dest, suffix)
    try:
        yield tmp
        _commit(tmp, dest, fsync_file=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(dest, mode: str = "w", **open_kwargs):
    """``open`` for writing (mode "w" or "wb", keywords as ``open``'s) whose file becomes ``dest``
    only once the block ends without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole new file: mode must be 'w' or 'wb', got {mode!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve(dest, "")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, dest, fsync_file=False)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(dest, data: bytes) -> Path:
    with atomic_open(dest, "wb") as f:
        f.write(data)
    return Path(dest)


def write_text_atomic(dest, text: str, newline: str | None = None) -> Path:
    with atomic_open(dest, "w", newline=newline) as f:
        f.write(text)
    return Path(dest)


def torch_save_atomic(obj, dest) -> Path:
    """``torch.save(obj)`` to ``dest``; a reader never sees half a file."""
    import torch

    with atomic_open(dest, "wb") as f:
        torch.save(obj, f)
    return Path(dest)


__all__ = ["atomic_open", "atomic_path", "fsync_dir", "torch_save_atomic", "write_bytes_atomic",
           "write_text_atomic"]
