"""Run directories, atomic checkpoints and RNG-state capture shared by every agent script.

Layout of one run::

    runs/<agent>/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml        written by the caller (the resolved config of the run)
        <exp_name>/...     metrics written by the logger (see ``agents.runtime.loggers``)
        checkpoints/ckpt_<step:012d>.pt
        videos/

Checkpoints are plain nested dicts loadable with ``torch.load(weights_only=True)``: only
tensors, ``state_dict()`` outputs, python scalars / str / bytes / None, ``torch.dtype`` /
``torch.device`` and dicts, lists and tuples of those are allowed. No numpy arrays, numpy
scalars, TensorDicts or custom classes: convert them first (``torch.as_tensor(arr)``,
``float(x)``, ``td.state_dict()``). ``save_checkpoint`` checks this before writing, so a bad
entry fails at save time with its key path instead of at resume time.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from agents.runtime.atomic_io import torch_save_atomic

CKPT_PREFIX, CKPT_SUFFIX = "ckpt_", ".pt"
_LEAF_TYPES = (torch.Tensor, bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


def checkpoint_files(checkpoints: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``ckpt_<step>.pt`` in the folder ``checkpoints``, oldest first; without
    creating anything (a RunDir creates its folders), so scripts may look into runs they do not own."""
    found = []
    for p in Path(checkpoints).glob(f"{CKPT_PREFIX}*{CKPT_SUFFIX}"):
        try:
            found.append((int(p.name[len(CKPT_PREFIX) : -len(CKPT_SUFFIX)]), p))
        except ValueError:  # someone else's file, e.g. ckpt_best.pt
            continue
    return sorted(found)


class RunDirError(ValueError):
    """A run directory or checkpoint is missing or unreadable (the message names the path)."""


def _check_loadable(obj, where: str = "state") -> None:
    """Raise TypeError naming the key path of the first value weights_only loading would reject."""
    # numpy first: np.float64 subclasses float but pickles as a numpy scalar that weights_only rejects.
    if isinstance(obj, _LEAF_TYPES) and not isinstance(obj, (np.ndarray, np.generic)):
        return
    if isinstance(obj, dict):  # also OrderedDict (state_dicts)
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}[{key!r}] has type {type(key).__name__}; use str or int keys")
            _check_loadable(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_loadable(value, f"{where}[{i}]")
        return
    hint = " (convert with torch.as_tensor / .item())" if isinstance(obj, (np.ndarray, np.generic)) else ""
    raise TypeError(
        f"checkpoint value {where} has type {type(obj).__module__}.{type(obj).__qualname__}, which "
        f"torch.load(weights_only=True) cannot load{hint}; allowed: tensors, python scalars, str, "
        "None and dict/list/tuple of those"
    )


def exclusive_lock(path: Path, busy):
    """An exclusive fcntl.flock on ``path`` (the kernel drops it when the holder dies, kill -9
    included, so a stale lock file never blocks), holding this pid; raises ``busy(holder_pid)``
    when another process has it. Returns the open file: the lock lasts while it stays open."""
    import fcntl

    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise busy(holder) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class RunDir:
    """One directory per run: config.yaml (written by the caller), metrics (logger), checkpoints/, videos/."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.videos = self.path / "videos"
        for p in (self.path, self.checkpoints, self.videos):
            p.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @classmethod
    def create(cls, root: str | Path = "runs", agent: str = "ppo_locomamba", name: str = "run") -> "RunDir":
        """New run at ``root/agent/name-YYYYmmdd-HHMMSS`` (``-1``, ``-2``... if two start in the same second)."""
        base = Path(root) / agent / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        base.parent.mkdir(parents=True, exist_ok=True)
        path, n = base, 0
        while True:
            try:
                path.mkdir()  # exist_ok=False: claiming the name is atomic even with concurrent launches
                return cls(path)
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")

    @classmethod
    def existing(cls, path: str | Path) -> "RunDir":
        """Reopen a run for ``--resume``; it must exist and hold its config.yaml."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"cannot resume: run directory {path} does not exist")
        if not (path / "config.yaml").is_file():
            raise RunDirError(f"cannot resume: {path} has no config.yaml (is it a run directory?)")
        return cls(path)

    # ---- one process per run ----------------------------------------------------------------
    def lock(self) -> "RunDir":
        """Take ``<run>/.lock`` (fcntl.flock, exclusive, non-blocking) for this process: a second
        training process on the same run gets RunDirError naming the holder's pid. The kernel drops
        the lock when the holder dies (even by kill -9), so a stale lock file never blocks."""
        if getattr(self, "_lock_file", None) is not None:
            return self
        f = exclusive_lock(self.path / ".lock", lambda holder: RunDirError(
            f"run directory {self.path} is in use by another process (pid {holder}); "
            "wait for it to finish or stop it first"))
        self._lock_file = f
        return self

    def unlock(self) -> None:
        f = getattr(self, "_lock_file", None)
        if f is not None:
            self._lock_file = None
            f.close()          # closing the file drops the flock

    # ---- checkpoints -------------------------------------------------------------------------
    def _checkpoint_files(self) -> list[tuple[int, Path]]:
        return checkpoint_files(self.checkpoints)

    def save_checkpoint(self, state: dict, step: int, keep: int = 3) -> Path:
        """Atomically write ``checkpoints/ckpt_<step>.pt`` and delete all but the newest ``keep``.

        The file only ever appears under its final name complete (agents.runtime.atomic_io),
        so a crash mid-save leaves the previous checkpoint as the latest one.
        """
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if not isinstance(state, dict):
            raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
        _check_loadable(state)
        final = self.checkpoints / f"{CKPT_PREFIX}{int(step):012d}{CKPT_SUFFIX}"
        torch_save_atomic(state, final)
        for _, old in self._checkpoint_files()[:-keep]:
            if old != final:
                old.unlink(missing_ok=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        files = self._checkpoint_files()
        return files[-1][1] if files else None

    def latest_export(self) -> Path | None:
        """The last of export/*.pt (``bc_*.py export``): acting weights alone, as a run trained on
        another machine comes back without its training checkpoints."""
        files = sorted((self.path / "export").glob("*.pt"))
        return files[-1] if files else None

    @staticmethod
    def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
        path = Path(path)
        if not path.is_file():
            raise RunDirError(f"checkpoint {path} does not exist")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, garbage bytes, disallowed globals...
            text = str(e)
            if "Weights only load failed" in text:
                # torch's message advises weights_only=False, i.e. running whatever the file holds:
                # never the advice here; keep only what the unpickler objected to
                detail = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0] if \
                    "WeightsUnpickler error:" in text else ""
                raise RunDirError(f"could not load checkpoint {path}: it holds objects other than tensors and "
                                  f"plain values ({detail or 'unsupported content'}); mambazoo loads with "
                                  "weights_only=True and never unpickles objects, so this is not a mambazoo "
                                  "checkpoint") from None
            raise RunDirError(f"could not load checkpoint {path}: {type(e).__name__}: {e}") from e


# ---- comparing checkpoints ---------------------------------------------------------------------
def flatten_state(state, prefix: str = "") -> dict:
    """A nested checkpoint dict (dicts, lists, tuples) -> {"/key/0/...": leaf}: one entry per
    tensor or plain value, for comparing two checkpoints entry by entry."""
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(flatten_state(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(flatten_state(v, f"{prefix}/{i}"))
    else:
        out[prefix] = state
    return out


def differing_entries(a: dict, b: dict, skip=()) -> list[str]:
    """The flattened keys of ``a`` (minus ``skip``) missing from ``b`` or not equal there, bit for
    bit for tensors (the resumed == uninterrupted checks of the tests and benchmarks/fault_injection.py)."""
    fa, fb = flatten_state(a), flatten_state(b)
    return [k for k in fa if k not in skip and (k not in fb or not (
        torch.equal(fa[k], fb[k]) if torch.is_tensor(fa[k]) else fa[k] == fb[k]))]


# ---- RNG state ----------------------------------------------------------------------------------
def rng_state() -> dict:
    """Python ``random``, numpy global and torch (CPU + CUDA) RNG states, weights_only-loadable."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        # MT19937 words are < 2**32, so int64 tensors hold them exactly.
        "python": {"version": py_version, "state": torch.tensor(py_internal, dtype=torch.int64), "gauss_next": py_gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`; a saved CUDA state is restored only if CUDA is available."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def keep_rng(fn, *args, **kwargs):
    """``fn(...)`` without touching the training RNG streams (an eval must not shift the run)."""
    state = rng_state()
    try:
        return fn(*args, **kwargs)
    finally:
        set_rng_state(state)
