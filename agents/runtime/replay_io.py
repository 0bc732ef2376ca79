"""Crash-consistent, pickle-free persistence of a TorchRL replay buffer (TD3's sequence replay).

Why not ``ReplayBuffer.dumps`` / ``loads``: torchrl's loads ``pickle.load``s files of the folder
(``prefetch.pkl`` and friends), so a crafted run directory would run code on ``--resume``; it also
writes every column and the whole capacity (unused recurrent-state columns, empty rows), and a
truncated ``.memmap`` loads as zeros. Here a save writes:

    <root>/<frame:012d>/<i>.bin        raw C-order bytes of one column, rows 0..n-1 of the storage
    <root>/<frame:012d>/manifest.json  format, rows, writer cursor, and per column: key, dtype,
                                       shape, byte count and sha256

every file fsynced, and returns a small dict (folder name, manifest sha256, rows) that the caller
stores *in the checkpoint*. The checkpoint is the commit point: a folder no checkpoint names is
garbage (``prune`` deletes it), and ``load`` checks the manifest against the checkpoint's sha256
and every column against the manifest's size and sha256, so a checkpoint can only ever be paired
with the replay it was written with, and a truncated or altered file is an error naming it.
Only JSON and raw bytes are read: nothing in the folder can execute code, and a pickle file found
in it is refused by name (``refuse_pickles``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from agents.runtime.atomic_io import fsync_dir
from agents.runtime.run_dir import RunDirError

FORMAT, VERSION = "mambazoo-replay", 1
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pck", ".pcl", ".dill", ".joblib")


class ReplayError(RunDirError):
    """A replay folder is missing, altered or truncated (resume falls back to an older checkpoint)."""


class UnsafeFileError(ReplayError):
    """A file that loading could execute (a pickle): a hard stop, never a fallback to another checkpoint."""

    fatal = True


def refuse_pickles(path: str | Path, what: str = "directory") -> None:
    """Raise ReplayError naming the first pickle file under ``path`` (they are never loaded)."""
    path = Path(path)
    if not path.exists():
        return
    for p in sorted(path.rglob("*")):
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise UnsafeFileError(f"{what} {path} holds a pickle file, {p}: refusing to load it (unpickling can "
                              "execute arbitrary code); delete it if you trust nothing else in there")


def fault_pause(stage: str) -> None:
    """benchmarks/fault_injection.py only: with MAMBAZOO_FAULT_PAUSE=<seconds> set, sleep at each
    stage boundary of a save so that its real SIGKILLs land inside saves too (a no-op otherwise)."""
    pause = os.environ.get("MAMBAZOO_FAULT_PAUSE")
    if pause:
        import time

        time.sleep(float(pause))


def folder_name(frame: int) -> str:
    return f"{int(frame):012d}"


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ReplayError(f"unknown dtype {name!r}")
    return dtype


def _key_name(key) -> str:
    return "/".join(key) if isinstance(key, tuple) else key


def save(replay, root: str | Path, frame: int) -> dict:
    """Write the filled rows of ``replay`` (and its writer cursor) to ``root/<frame>/``, durably.

    Returns the checkpoint entry ``{"dir", "manifest_sha256", "rows"}``. An existing folder of the
    same name (left by a crash before its checkpoint was written) is replaced."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / folder_name(frame)
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    n = len(replay)
    columns = []
    if n:
        data = replay.storage.get(torch.arange(n))
        for i, (key, value) in enumerate(sorted(data.items(True, True), key=lambda kv: _key_name(kv[0]))):
            value = value.detach().cpu().contiguous()
            raw = value.view(torch.uint8).numpy().tobytes() if value.numel() else b""
            name = f"{i}.bin"
            with open(final / name, "wb") as f:
                f.write(raw[: len(raw) // 2])
                fault_pause("mid column")
                f.write(raw[len(raw) // 2:])
                f.flush()
                os.fsync(f.fileno())
            columns.append({"key": list(key) if isinstance(key, tuple) else [key], "file": name,
                            "dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                            "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})
    writer = replay._writer.state_dict()
    manifest = {"format": FORMAT, "version": VERSION, "frame": int(frame), "rows": n,
                "cursor": int(writer["_cursor"]), "write_count": int(writer.get("_write_count", n)),
                "columns": columns}
    fault_pause("before manifest")
    text = json.dumps(manifest, indent=1).encode()
    with open(final / "manifest.json", "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(final)
    fsync_dir(root)
    return {"dir": final.name, "manifest_sha256": hashlib.sha256(text).hexdigest(), "rows": n}


def verify(root: str | Path, entry: dict, checksums: bool = False) -> dict:
    """The manifest of the folder ``entry`` (a checkpoint's) names, every file's size checked (and with
    ``checksums`` its sha256, reading it); raises ReplayError."""
    refuse_pickles(root, "replay folder")
    folder = Path(root) / str(entry["dir"])
    if Path(str(entry["dir"])).name != str(entry["dir"]) or str(entry["dir"]) in ("", ".", ".."):
        raise ReplayError(f"replay folder name {entry['dir']!r} is not a plain folder name")
    if not folder.is_dir():
        raise ReplayError(f"replay folder {folder} is missing")
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise ReplayError(f"replay folder {folder} has no manifest.json (the save did not finish)")
    text = mpath.read_bytes()
    if hashlib.sha256(text).hexdigest() != entry["manifest_sha256"]:
        raise ReplayError(f"{mpath} does not match its checkpoint (sha256 differs): altered or from another save")
    manifest = json.loads(text)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ReplayError(f"{mpath}: not a {FORMAT} v{VERSION} manifest")
    for col in manifest["columns"]:
        f = folder / Path(col["file"]).name
        size = f.stat().st_size if f.is_file() else None
        if size != col["bytes"]:
            raise ReplayError(f"replay file {f} is {'missing' if size is None else f'{size} bytes'}, "
                              f"its manifest says {col['bytes']} bytes (truncated?)")
        if checksums and hashlib.sha256(f.read_bytes()).hexdigest() != col["sha256"]:
            raise ReplayError(f"replay file {f} does not match its manifest (sha256 differs): corrupt")
    return manifest


def load(replay, root: str | Path, entry: dict) -> int:
    """Fill an empty ``replay`` from the folder a checkpoint's ``entry`` names; returns the rows loaded.
    Every column's size and sha256 are checked before anything is written into the buffer."""
    from tensordict import TensorDict

    manifest = verify(root, entry)
    folder = Path(root) / str(entry["dir"])
    n = int(manifest["rows"])
    if n == 0:
        return 0
    data = {}
    for col in manifest["columns"]:
        f = folder / Path(col["file"]).name
        raw = f.read_bytes()
        if len(raw) != col["bytes"] or hashlib.sha256(raw).hexdigest() != col["sha256"]:
            raise ReplayError(f"replay file {f} does not match its manifest (sha256 or size differs): corrupt")
        dtype, shape = _dtype(col["dtype"]), tuple(col["shape"])
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        data[tuple(col["key"])] = t.view(dtype).reshape(shape)
    td = TensorDict({}, batch_size=[n])
    for key, value in data.items():
        td.set(key if len(key) > 1 else key[0], value)
    replay.extend(td)
    replay._writer.load_state_dict({"_cursor": int(manifest["cursor"]), "_write_count": int(manifest["write_count"])})
    return n


def prune(root: str | Path, keep_dirs) -> None:
    """Delete every replay folder under ``root`` that no kept checkpoint names (crash leftovers included)."""
    root = Path(root)
    if not root.is_dir():
        return
    keep = {str(d) for d in keep_dirs}
    for p in root.iterdir():
        if p.name not in keep:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
