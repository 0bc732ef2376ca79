"""The command line and training glue both behaviour-cloning agents share.

    python agents/bc_<name>.py --generate --out DIR --episodes N [--seed S] [key=value ...]   expert demos
    python agents/bc_<name>.py --info DIR            validate a dataset, print a summary
    python agents/bc_<name>.py [--config FILE] [key=value ...] [--resume RUN_DIR] [--dry-run]
    python agents/bc_<name>.py --eval CHECKPOINT|RUN_DIR [--episodes N] [--seed S] [--no-video] [--out DIR]
    python agents/bc_<name>.py --export CHECKPOINT|RUN_DIR [--dtype float16] [--out FILE]

The RL agents' grammar (agents/runtime/cli.py) plus the dataset commands; the older subcommand
forms (``generate ...``, ``info DIR``, ``train ARGS``, ``eval CHECKPOINT ARGS``, ``export
CHECKPOINT ARGS``) are still accepted and mean the same. An agent supplies its typed config class, its data module's ``main``, the functions
``train(cfg, run, state)``, ``evaluate(cfg, state, args, out_dir) -> dict`` and ``dry_run(cfg)``,
and optionally ``check(cfg)``, run before a run directory is created. The glue turns the errors a user can cause (config, dataset, run directory) into one line on stderr
and exit code 2, and a non-finite loss into exit code 1 naming the last good checkpoint.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from agents.runtime.cli import (agent_parser, config_for_eval_here, eval_checkpoint, eval_out_dir, format_eval,
                                output_root, run_agent)
from agents.runtime.config import ConfigError, from_dict
from agents.runtime.run_dir import RunDirError, set_rng_state


def warmup_cosine(optim: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  final_fraction: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up (from 1e-3 of the optimiser's lr) to its lr, then cosine decay to
    ``final_fraction`` of it: Diffusion Policy's and ViNT's schedule shape, the same curve as torch's
    LinearLR + CosineAnnealingLR in a SequentialLR. A LambdaLR because its state is just the step:
    a run resumed with a larger train.steps then decays over the new length, where SequentialLR
    would restore the old cosine length from the checkpoint."""
    from torch.optim.lr_scheduler import LambdaLR

    warmup_steps = max(1, min(warmup_steps, total_steps - 1)) if total_steps > 1 else 1
    decay_steps = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 1e-3 + (1.0 - 1e-3) * step / warmup_steps
        t = min(step - warmup_steps, decay_steps) / decay_steps
        return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t))

    return LambdaLR(optim, factor)


def restore_training(state: dict, **stateful) -> int:
    """Resume: ``obj.load_state_dict(state[name])`` for each ``name=obj`` (model, optimiser, lr
    schedule, sampler, EMA...), then the RNG streams; returns the step the checkpoint was taken at."""
    if "exported" in state:
        raise RunDirError(f"this checkpoint was written by `export` from {state['exported']['from']}: it holds "
                          "the acting weights only (no optimiser state) and can be evaluated, not resumed")
    for name, obj in stateful.items():
        try:
            obj.load_state_dict(state[name])
        except (KeyError, ValueError, RuntimeError) as e:   # a checkpoint of an older layout
            raise RunDirError(f"checkpoint entry {name!r} does not load into this version's "
                              f"{type(obj).__name__} ({type(e).__name__}: {e}); start a new run") from e
    set_rng_state(state["rng"])
    return int(state["step"])



SUBCOMMANDS = ("generate", "info", "train", "eval", "export")   # the older forms, still accepted


def bc_parser(prog: str, description: str, config_cls, config_help: str) -> argparse.ArgumentParser:
    """The shared agent grammar (agents/runtime/cli.agent_parser) plus BC's dataset commands
    (``--generate``, ``--info``) and eval options (``--seed``, ``--no-video``)."""
    name = Path(prog.split()[-1]).name
    pairs = (("generate ARGS", "--generate ARGS"), ("info DIR", "--info DIR"), ("train ARGS", "ARGS"),
             ("eval CHECKPOINT ARGS", "--eval CHECKPOINT ARGS"), ("export CHECKPOINT ARGS", "--export CHECKPOINT ARGS"))
    aliases = "older forms, still accepted:\n" + "\n".join(f"  {name} {old:<22} = {name} {new}" for old, new in pairs)
    forms = ((f"{name} --generate --out DIR --episodes N [--seed S] [key=value ...]",
              "write or continue a dataset of expert demos (settings: --generate --help)"),
             (f"{name} --info DIR", "validate a dataset, print a summary"))
    parser = agent_parser(prog, description, config_cls, config_help, forms=forms, aliases=aliases)
    ev = parser.sections["eval"]
    ev.add_argument("--seed", type=int, default=None, metavar="S", help="first env seed for --eval (default: the config's eval.seed)")
    ev.add_argument("--no-video", action="store_true", help="--eval without the video and plots")
    data = parser.add_argument_group("data")
    data.add_argument("--generate", action="store_true",
                      help="write or continue a dataset of expert demonstrations: --out DIR --episodes N [--seed S] "
                           "[--config FILE] [key=value ...] are the generator's (--generate --help lists them)")
    data.add_argument("--info", metavar="DIR", help="validate a dataset and print a summary")
    return parser


def data_command(argv: list) -> list | None:
    """The data module's argv for ``--generate ...`` / ``--info DIR`` (or the subcommands
    ``generate ...`` / ``info DIR``), else None."""
    if argv and argv[0] in ("generate", "info"):
        return argv
    for i, a in enumerate(argv):
        if a in ("--generate", "--info"):
            return [a[2:], *argv[:i], *argv[i + 1:]]
        if a.startswith("--info="):
            return ["info", a.split("=", 1)[1], *argv[:i], *argv[i + 1:]]
    return None


def flag_argv(argv: list, parser: argparse.ArgumentParser) -> list:
    """The older subcommand forms in the shared grammar: ``train ARGS`` -> ``ARGS``, ``eval CKPT
    ARGS`` -> ``--eval CKPT ARGS``, ``export CKPT ARGS`` -> ``--export CKPT ARGS`` (the checkpoint
    is the first argument that is neither an option, an option's value nor a key=value)."""
    if not argv or argv[0] not in ("train", "eval", "export"):
        return argv
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        return rest
    takes_value = {o for a in parser._actions if a.option_strings and a.nargs != 0 for o in a.option_strings}
    i = 0
    while i < len(rest):
        if rest[i] in takes_value:
            i += 2
        elif rest[i].startswith("-") or "=" in rest[i]:
            i += 1
        else:
            return [f"--{cmd}", rest[i], *rest[:i], *rest[i + 1:]]
    return [f"--{cmd}", *rest]        # no checkpoint: argparse says "--eval: expected one argument"


def write_json_atomic(path: Path, data: dict | list) -> None:
    from agents.runtime.atomic_io import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def bc_main(argv, *, parser: argparse.ArgumentParser, agent: str, config_cls, data_main, data_errors: tuple,
            train, evaluate, dry_run, check=None, frozen_on_resume=("model", "policy"), add_facts=None) -> int:
    """A BC agent's ``main``: ``--generate`` / ``--info`` go to the data module's CLI; the rest is
    the RL agents' flow (agents/runtime/cli.run_agent): the same modes, errors and exit codes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    data_argv = data_command(argv)
    if data_argv is not None:          # the data module's own CLI (its own --help, --out, --episodes, ...)
        return data_main(data_argv)
    args = parser.parse_args(flag_argv(argv, parser))

    def run_eval(args) -> int:
        ckpt, state = eval_checkpoint(args.eval, "--eval", exports=True)
        cfg = from_dict(config_cls, config_for_eval_here(state["config"], ckpt), where=f"{ckpt} config")
        # a run's checkpoint or export: RUN/eval/; a loose file (a shipped policy): eval_<name>/ beside it,
        # one folder per file (several policies share agents/policies/<task>/), which .gitignore covers
        root = output_root(ckpt)
        out = eval_out_dir(args, ckpt, root / "eval" if root != ckpt.parent else ckpt.parent / f"eval_{ckpt.stem}")
        out.mkdir(parents=True, exist_ok=True)
        result = evaluate(cfg, state, args, out)
        write_json_atomic(out / f"eval_{ckpt.stem}.json", {"checkpoint": str(ckpt), **result})
        print(f"eval of {ckpt}: {format_eval(result)}\nwrote {out}")
        return 0

    def train_cli(cfg, run, state) -> int:
        train(cfg, run, state)
        return 0

    import dataclasses

    device_key = "device" if "device" in {f.name for f in dataclasses.fields(config_cls)} else "train.device"
    return run_agent(args, config_cls=config_cls, agent=agent, check=check or (lambda cfg: None), run_eval=run_eval,
                     dry_run=dry_run, train=train_cli, save_config_on_resume=True,
                     launch_errors=(ConfigError, *data_errors), frozen_on_resume=frozen_on_resume,
                     device_key=device_key, prog=f"agents/{agent}.py", add_facts=add_facts)
