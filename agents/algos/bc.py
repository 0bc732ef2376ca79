"""The command line and training glue both behaviour-cloning agents share.

    python agents/bc_<name>.py generate ...        expert demonstrations (the data module's CLI)
    python agents/bc_<name>.py info DIR            validate a dataset, print a summary
    python agents/bc_<name>.py train [key=value ...] [--config FILE] [--resume RUN_DIR] [--dry-run]
    python agents/bc_<name>.py eval CHECKPOINT|RUN_DIR [--episodes N] [--seed S] [--no-video]
    python agents/bc_<name>.py export CHECKPOINT|RUN_DIR [--dtype float16] [--out FILE]

An agent supplies its typed config class, its data module's ``main``, the functions
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

from agents.runtime.cli import (OverridesParser, check_common, eval_checkpoint, format_eval, output_root,
                               pick_device, resolve_run, truncate_metrics_after)
from agents.runtime.config import ConfigError, describe, from_dict, save_config
from agents.runtime.nonfinite import NonFiniteLoss
from agents.runtime.run_dir import RunDir, RunDirError, set_rng_state


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


def parameter_count(module: torch.nn.Module) -> int:
    """Trainable parameters (networks.params, the one counter)."""
    from networks.params import count_parameters

    return count_parameters(module, trainable=True)


from agents.runtime.export import TRAINING_ONLY, export_checkpoint, save_atomic  # noqa: E402,F401  (shared with the RL agents)


def bc_parser(prog: str, description: str, config_cls, config_help: str) -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,info,train,eval,export}",
                                parser_class=OverridesParser)
    for name, text in (("generate", "write or continue a dataset of expert demonstrations (generate --help)"),
                       ("info", "validate a dataset and print a summary")):
        p = sub.add_parser(name, help=text, add_help=False)      # the data module parses its own --help
        p.add_argument("rest", nargs=argparse.REMAINDER)
    train = sub.add_parser("train", help="train a policy on a dataset", formatter_class=fmt,
                           epilog="config keys (set in --config FILE or as key=value overrides):\n"
                                  + describe(config_cls))
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. seed=1 train.steps=2000")
    train.add_argument("--config", help=config_help)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    train.add_argument("--dry-run", action="store_true", help="validate, load the dataset, build, print, exit")
    ev = sub.add_parser("eval", help="closed-loop evaluation of a checkpoint in the env")
    ev.add_argument("checkpoint", metavar="CHECKPOINT|RUN_DIR",
                    help="checkpoint or export file, or run directory (its latest checkpoint, else its latest export/)")
    ev.add_argument("--episodes", type=int, default=None, help="episodes (default: the config's eval.episodes)")
    ev.add_argument("--seed", type=int, default=None, help="first env seed (default: the config's eval.seed)")
    ev.add_argument("--no-video", action="store_true", help="skip the video and plots")
    ev.add_argument("--out", metavar="DIR", default=None, help="where eval files go (default RUN_DIR/eval)")
    ex = sub.add_parser("export", help="write the acting weights alone (no optimiser state), e.g. in float16")
    ex.add_argument("checkpoint", metavar="CHECKPOINT|RUN_DIR", help="checkpoint file or run directory (latest)")
    ex.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16",
                    help="dtype of weight matrices/filters (vectors stay float32)")
    ex.add_argument("--out", metavar="FILE", default=None,
                    help="default RUN_DIR/export/<checkpoint>_<dtype>.pt; `eval FILE` evaluates it")
    return parser


def write_json_atomic(path: Path, data: dict) -> None:
    from agents.runtime.atomic_io import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def bc_main(argv, *, parser: argparse.ArgumentParser, agent: str, config_cls, data_main, data_errors: tuple,
            train, evaluate, dry_run, check=None, frozen_on_resume=("model", "policy")) -> int:
    run_box = []
    try:
        return _bc_main(argv, run_box, parser=parser, agent=agent, config_cls=config_cls, data_main=data_main,
                        data_errors=data_errors, train=train, evaluate=evaluate, dry_run=dry_run, check=check,
                        frozen_on_resume=frozen_on_resume)
    finally:
        for run in run_box:
            run.unlock()


def _bc_main(argv, run_box, *, parser, agent, config_cls, data_main, data_errors, train, evaluate, dry_run, check,
             frozen_on_resume) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("generate", "info"):    # the data module's own CLI (argparse's REMAINDER
        return data_main(argv)                       # would not pass options such as --out through)
    args = parser.parse_args(argv)
    user_errors = (ConfigError, RunDirError, *data_errors)
    run = None
    try:
        if args.command == "eval":
            if args.episodes is not None and args.episodes < 1:
                parser.error("--episodes must be >= 1")
            ckpt, state = eval_checkpoint(args.checkpoint, "eval", exports=True)
            cfg = from_dict(config_cls, state["config"], where=f"{ckpt} config")
            out = Path(args.out) if args.out else output_root(ckpt) / "eval"
            out.mkdir(parents=True, exist_ok=True)
            result = evaluate(cfg, state, args, out)
            write_json_atomic(out / f"eval_{ckpt.stem}.json", {"checkpoint": str(ckpt), **result})
            print(f"eval of {ckpt}: {format_eval(result)}\nwrote {out}")
            return 0
        if args.command == "export":
            ckpt, state = eval_checkpoint(args.checkpoint, "export")
            dest = Path(args.out) if args.out else output_root(ckpt) / "export" / f"{ckpt.stem}_{args.dtype}.pt"
            save_atomic(export_checkpoint(state, str(ckpt), getattr(torch, args.dtype)), dest)
            print(f"exported {ckpt} -> {dest} ({dest.stat().st_size / 2**20:.1f} MiB, {args.dtype} weights); "
                  f"evaluate with: eval {dest}")
            return 0
        cfg, run, state = resolve_run(args, config_cls, frozen=frozen_on_resume)   # locks a resumed run
        if run is not None:
            run_box.append(run)
        if check is not None:             # dataset and config problems before a run directory exists
            check(cfg)
        check_common(cfg)
        pick_device(cfg.device, "device")   # cuda without CUDA: one line, before a run dir
        if args.dry_run:
            return dry_run(cfg)
        if run is None:
            run = RunDir.create(cfg.run_root, agent, cfg.name).lock()
            run_box.append(run)
        else:
            truncate_metrics_after(run, int(state.get("step", 0)))
        save_config(cfg, run.config_path)
        print(f"run directory: {run.path}")
        train(cfg, run, state)
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        last = run.latest_checkpoint() if run is not None else None
        print(f"error: {err}; stopping. Last good checkpoint: {last or 'none yet'}", file=sys.stderr)
        return 1
    return 0
