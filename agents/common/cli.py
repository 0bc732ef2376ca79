"""The command line every agent script shares: config file + key=value overrides, resume, eval."""
from __future__ import annotations

import argparse

from agents.common.config import describe


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
