"""A PyBullet client made without PyBullet's C-level banner lines in the logs.

PyBullet's C code prints ``pybullet build time: <date>`` when the module is first imported and
``argv[0]=`` when a client connects, with ``printf`` straight to file descriptors 1/2, past
``sys.stdout``/``sys.stderr`` (so ``contextlib.redirect_stdout`` cannot catch them). With 16 envs in
worker processes that is 32 lines at the top of every log. ``bullet_client()`` connects with fds 1
and 2 pointed at temporary files, then writes back whatever else arrived there, so only those two
banner lines are dropped: a real message from the C code (or Python) during the import/connect
still reaches the log, just after the connect instead of during it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile

_BANNER = re.compile(rb"^(?:pybullet build time: .*|argv\[0\]=.*)$")


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):         # the C library's own buffers (printf into a file or pipe)
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def without_banners():
    """fds 1 and 2 -> temp files for the block; afterwards every line but PyBullet's two banners is
    written back to where it was going. Without usable fds (closed, not a real file) it does nothing."""
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:
        yield
        return
    _flush_all()
    captured = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    try:
        for fd, tmp in zip((1, 2), captured):
            os.dup2(tmp.fileno(), fd)
        yield
    finally:
        _flush_all()
        for fd, keep in zip((1, 2), saved):
            os.dup2(keep, fd)
            os.close(keep)
        for fd, tmp in zip((1, 2), captured):
            tmp.seek(0)
            rest = b"".join(line for line in tmp.read().splitlines(keepends=True)
                            if not _BANNER.match(line.rstrip(b"\r\n")))
            tmp.close()
            while rest:
                rest = rest[os.write(fd, rest):]


def quiet_import():
    """The ``pybullet`` module; its first import in the process (the one that prints the build-time
    banner) runs inside ``without_banners``. For code that needs pybullet before any client exists."""
    if "pybullet" not in sys.modules:
        with without_banners():
            import pybullet  # noqa: F401
    import pybullet

    return pybullet


def bullet_client(connection_mode=None):
    """``pybullet_utils.bullet_client.BulletClient`` (DIRECT unless told otherwise), imported and
    connected without the banner lines."""
    p = quiet_import()
    with without_banners():
        from pybullet_utils import bullet_client as bc

        return bc.BulletClient(connection_mode=p.DIRECT if connection_mode is None else connection_mode)
