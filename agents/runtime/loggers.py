"""Metric loggers for agent scripts, thin wrappers over ``torchrl.record.loggers``.

Where each backend writes, for ``make_logger(backend, run_dir, exp_name)``:

* ``csv``: ``<run_dir>/<exp_name>/scalars/<name>.csv``, one ``step,value`` line per call (a
  name such as ``train/reward`` becomes the sub-path ``scalars/train/reward.csv``); the config
  goes to ``<run_dir>/<exp_name>/texts/hparams0.txt``.
* ``tensorboard``: event files in ``<run_dir>/<exp_name>/`` (``tensorboard --logdir <run_dir>``).
* ``wandb``: ``<run_dir>/wandb/``; offline unless ``WANDB_MODE`` is already set in the
  environment (then ``wandb sync <run_dir>/wandb/offline-run-*`` uploads later).
"""
from __future__ import annotations

import os
from pathlib import Path

from agents.runtime.atomic_io import write_text_atomic

LOGGER_BACKENDS = ("csv", "tensorboard", "wandb", "none")


def _flat_hparams(cfg: dict, prefix: str = "") -> dict:
    # TensorBoard's add_hparams only takes flat int/float/str/bool values.
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_hparams(v, f"{key}."))
        else:
            out[key] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def make_logger(backend: str, run_dir: str | Path, exp_name: str, project: str = "mambazoo", config: dict | None = None):
    """A TorchRL ``Logger`` writing under ``run_dir`` (``None`` for backend "none")."""
    if backend not in LOGGER_BACKENDS:
        raise ValueError(f"unknown logger backend {backend!r}; expected one of {', '.join(LOGGER_BACKENDS)}")
    if backend == "none":
        return None
    run_dir = str(run_dir)
    if backend == "csv":
        from torchrl.record.loggers.csv import CSVLogger

        logger = CSVLogger(exp_name=exp_name, log_dir=run_dir)
    elif backend == "tensorboard":
        # Import ourselves: TorchRL only says "torch.utils.tensorboard could not be imported".
        try:
            import tensorboard  # noqa: F401
        except ImportError as e:
            raise ImportError("logger=tensorboard needs the tensorboard package: pip install tensorboard") from e
        from torchrl.record.loggers.tensorboard import TensorboardLogger

        logger = TensorboardLogger(exp_name=exp_name, log_dir=run_dir)
    else:
        try:
            import wandb  # noqa: F401
        except ImportError as e:
            raise ImportError("logger=wandb needs wandb: pip install -e '.[wandb]'") from e
        from torchrl.record.loggers.wandb import WandbLogger

        # Offline by default so runs work without network or login. TorchRL's offline=True
        # forces WANDB_MODE=dryrun, so only pass it when the user did not choose a mode.
        mode = os.environ.setdefault("WANDB_MODE", "offline")
        logger = WandbLogger(exp_name=exp_name, offline=mode in ("offline", "dryrun"), save_dir=run_dir, project=project)
    if config is not None:
        try:
            logger.log_hparams(_flat_hparams(config) if backend == "tensorboard" else dict(config))
        except NotImplementedError:  # a backend without hparams support
            pass
    return logger


def log_scalars(logger, scalars: dict, step: int) -> None:
    """Log each ``name -> number`` (python / numpy / 1-element tensor) at ``step``; no-op without a logger."""
    if logger is None:
        return
    for name, value in scalars.items():
        logger.log_scalar(name, float(value), step=step)


def check_logger(backend: str, key: str = "logger") -> None:
    """ConfigError naming ``key`` when ``backend``'s package is missing: checked before a run
    directory exists, rather than an ImportError from ``make_logger`` inside it."""
    import importlib.util

    from agents.runtime.config import ConfigError

    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(backend)
    if package is not None and importlib.util.find_spec(package) is None:
        hint = "pip install tensorboard" if backend == "tensorboard" else "pip install -e '.[wandb]'"
        raise ConfigError(f"config key '{key}': {backend} needs the {package} package ({hint}), "
                          "or use logger=csv")


def truncate_csv_metrics(run_dir: str | Path, step: int) -> int:
    """Resume: in every ``<run_dir>/*/scalars/**.csv`` (the csv backend's ``step,value`` lines) drop the
    rows with a step after ``step`` (logged after the checkpoint the run resumes from, so logged
    again) and lines that do not parse (half written at a kill). Atomic per file; returns the rows
    dropped."""
    dropped = 0
    for path in sorted(Path(run_dir).glob("*/scalars/**/*.csv")):
        keep = []
        lines = path.read_text().splitlines(keepends=True)
        for line in lines:
            head, sep, value = line.rstrip("\n").partition(",")
            try:
                ok = line.endswith("\n") and sep and int(head) <= step and (float(value) or True)
            except ValueError:
                ok = False
            if ok:
                keep.append(line)
        if len(keep) != len(lines):
            dropped += len(lines) - len(keep)
            write_text_atomic(path, "".join(keep))
    return dropped
