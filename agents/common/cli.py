"""The command line every agent script shares: config file + key=value overrides, resume, eval."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from agents.common.config import ConfigError, describe, load_config, save_config
from agents.common.nonfinite import NonFiniteLoss
from agents.common.run_dir import RunDir, RunDirError


def agent_parser(prog: str, description: str, config_cls, config_help: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, description=description,
        epilog="config keys (set in --config FILE or as key=value overrides):\n" + describe(config_cls))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. seed=1 train.total_frames=1000")
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    parser.add_argument("--eval", metavar="CHECKPOINT", help="evaluate a checkpoint file or a run directory")
    parser.add_argument("--episodes", type=int, default=None, help="episodes for --eval (default train.eval_episodes)")
    parser.add_argument("--dry-run", action="store_true", help="validate, build env and networks, print, exit")
    return parser


def format_eval(result: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())


def resolve_run(args, config_cls, load_new=None):
    """(config, run dir, checkpoint state) for ``--resume RUN_DIR``; (config, None, None) for a new run.

    A resumed run reads its own config.yaml (plus the command's overrides); a new run reads
    ``--config`` with ``load_config`` unless the agent passes ``load_new(args) -> config``.
    """
    if args.resume:
        run = RunDir.existing(args.resume)
        ckpt = run.latest_checkpoint()
        if ckpt is None:
            raise RunDirError(f"--resume {args.resume}: no checkpoint in {run.checkpoints}")
        return load_config(config_cls, run.config_path, args.overrides), run, RunDir.load_checkpoint(ckpt)
    if load_new is not None:
        return load_new(args), None, None
    return load_config(config_cls, args.config, args.overrides), None, None


def pick_device(value: str, key: str) -> torch.device:
    """Config key ``key`` ("auto", "cpu" or "cuda") -> the torch device; cuda without CUDA is an error."""
    if value == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key {key!r}: 'cuda' asked for but torch.cuda.is_available() is False; "
                          "use cpu or auto")
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if value == "auto" else value)


def checkpoint_path(arg, flag: str = "--eval", exports: bool = False) -> Path:
    """``flag`` takes a checkpoint file or a run directory: its latest checkpoint, or with
    ``exports`` else its latest exported one. ``flag`` names the option or subcommand in errors."""
    path = Path(arg)
    if not path.is_dir():
        return path
    run = RunDir(path)
    ckpt = run.latest_checkpoint() or (run.latest_export() if exports else None)
    if ckpt is None:
        where = f"{run.checkpoints}" + (f" or {path / 'export'}" if exports else "")
        raise RunDirError(f"{flag} {arg}: no checkpoint found in {where}")
    return ckpt


def eval_checkpoint(arg, flag: str = "--eval", exports: bool = False) -> tuple[Path, dict]:
    """checkpoint_path(...) and the state it holds."""
    ckpt = checkpoint_path(arg, flag, exports)
    return ckpt, RunDir.load_checkpoint(ckpt)


def run_agent(args, *, config_cls, agent: str, check, run_eval, dry_run, train, load_new=None,
              save_config_on_resume: bool = False, launch_errors: tuple = ()) -> int:
    """The flow of every RL agent script's ``main``: ``--eval``, or resolve the config and run
    directory (``--resume``) and ``check(cfg)`` them (a user error: one line on stderr, exit 2);
    then ``dry_run(cfg)``, or create the run directory, write its config.yaml and
    ``train(cfg, run, state) -> exit code``. A NonFiniteLoss that reaches here exits 1 naming the
    last good checkpoint; ``launch_errors`` raised by dry_run/train exit 2 with one line.
    ``save_config_on_resume``: rewrite config.yaml on resume too, so overrides (say a larger
    total_frames) stick for the next resume."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(levelname)s %(message)s")
    try:
        if args.eval:
            return run_eval(args)
        cfg, run, state = resolve_run(args, config_cls, load_new)
        check(cfg)
        pick_device(cfg.device, "device")        # device=cuda without CUDA: one line, before a run dir
    except (ConfigError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            return dry_run(cfg)
        new = run is None
        if new:
            run = RunDir.create(cfg.run_root, agent, cfg.name)
        if new or save_config_on_resume:
            save_config(cfg, run.config_path)
        print(f"run directory: {run.path}")
        return train(cfg, run, state)
    except launch_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        print(f"error: {err}; stopping. Last good checkpoint: {run.latest_checkpoint() or 'none yet'}",
              file=sys.stderr)
        return 1
