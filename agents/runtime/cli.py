"""The command line every agent script shares (RL and BC): config file + key=value overrides,
--resume, --eval, --export, --dry-run; one parser (``agent_parser``), one flow (``run_agent``)."""
from __future__ import annotations

import argparse
import logging
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from agents.runtime.config import (ConfigError, apply_overrides, describe, from_dict, load_config,
                                  read_config_file, save_config, to_dict)
from agents.runtime.loggers import check_logger, truncate_csv_metrics
from agents.runtime.nonfinite import NonFiniteLoss
from agents.runtime.run_dir import RunDir, RunDirError


class OverridesParser(argparse.ArgumentParser):
    """argparse that also takes ``key=value`` overrides after options (``a=1 --config F b=2``): the
    positional ``overrides`` list would otherwise stop at the first option ("unrecognized arguments")."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        if hasattr(ns, "overrides") and isinstance(ns.overrides, list):
            late = [a for a in extra if "=" in a and not a.startswith("-")]
            ns.overrides = ns.overrides + late
            extra = [a for a in extra if a not in late]
        return ns, extra


EXIT_CODES = "exit codes: 0 ok; 1 the run failed (a non-finite loss: names the last good checkpoint); " \
             "2 bad input or usage (one line naming it)"
DTYPES = ("float32", "float16", "bfloat16")


class AgentParser(OverridesParser):
    """The one command line of every agent script (``agent_parser`` builds it): after parsing,
    options of a mode given without that mode (``--episodes`` without ``--eval``...) and two modes
    at once are usage errors (exit 2, the message names the option). ``sections``: the argument
    groups ("train", "eval", "export") an agent adds its own options to."""

    sections: dict

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        modes = [f"--{m}" for m in ("resume", "eval", "export") if getattr(ns, m, None)]
        if len(modes) > 1:
            self.error(f"{' and '.join(modes)}: give one of --resume, --eval, --export")
        if ns.dry_run and (ns.eval or ns.export):
            self.error(f"--dry-run applies to training (--config / --resume), not to {modes[0]}")
        if ns.config and (ns.eval or ns.export):
            self.error(f"--config: {modes[0]} uses the config saved in the checkpoint")
        if ns.overrides and (ns.eval or ns.export):
            self.error(f"{ns.overrides[0]}: key=value overrides apply to training; {modes[0]} uses the config "
                       "saved in the checkpoint")
        if ns.out is not None and not (ns.eval or ns.export):
            self.error("--out applies to --eval or --export")
        for mode in ("eval", "export"):        # the section's options need its mode
            if getattr(ns, mode):
                continue
            for action in self.sections[mode]._group_actions:
                if action.dest != mode and getattr(ns, action.dest) != action.default:
                    self.error(f"{action.option_strings[0]} applies to --{mode}")
        if ns.episodes is not None and ns.episodes < 1:
            self.error(f"--episodes must be >= 1, got {ns.episodes}")
        if ns.export and ns.dtype is None:
            ns.dtype = "float16"
        return ns


def agent_parser(prog: str, description: str, config_cls, config_help: str, *,
                 forms: tuple = (), aliases: str = "") -> AgentParser:
    """The parser every agent's ``main`` parses with: one grammar, one help layout.

        PROG [--config FILE] [key=value ...]              train a new run
        PROG --resume RUN_DIR [key=value ...]             continue it from its latest checkpoint
        PROG --eval CHECKPOINT|RUN_DIR [--episodes N]     evaluate (a run directory: its latest)
        PROG --export CHECKPOINT|RUN_DIR [--out FILE]     the acting weights alone (float16)
        PROG ... --dry-run                                validate, build, print, exit

    ``forms``: (command, what it does) lines an agent adds (BC: ``--generate``); ``aliases``: a
    paragraph on older command forms still accepted. Agents add options to
    ``parser.sections["train" | "eval" | "export"]`` or their own groups."""
    name = Path(prog.split()[-1]).name
    lines = [(f"{name} [--config FILE] [key=value ...]", "train a new run (the config file plus overrides)"),
             (f"{name} --resume RUN_DIR [key=value ...]", "continue a run from its latest checkpoint"),
             (f"{name} --eval CHECKPOINT|RUN_DIR [--episodes N]", "evaluate a checkpoint (a run: its latest)"),
             (f"{name} --export CHECKPOINT|RUN_DIR [--out FILE]", "write its acting weights alone (float16)"),
             (f"{name} --config FILE --dry-run", "validate, build, print, exit"), *forms]
    width = max(len(c) for c, _ in lines[:5])     # the shared forms line up the same in every agent
    usage = "\n".join(f"  {c.ljust(width)}  {t}" if len(c) <= width else f"  {c}\n  {'':{width}}  {t}"
                      for c, t in lines)
    text = f"{description}\n\ncommands:\n{usage}\n\n{EXIT_CODES}" + (f"\n\n{aliases}" if aliases else "")
    parser = AgentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, description=text,
        epilog="config keys (set in --config FILE or as key=value overrides):\n" + describe(config_cls))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for training, e.g. "
                        "seed=1 name=test (the keys are listed below)")
    train = parser.add_argument_group("train and resume")
    train.add_argument("--config", metavar="FILE", help=config_help)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint that loads")
    train.add_argument("--dry-run", action="store_true", help="validate, build env and networks, print, exit")
    ev = parser.add_argument_group("eval")
    ev.add_argument("--eval", metavar="CHECKPOINT", help="evaluate a checkpoint or export file, or a run "
                    "directory (its latest checkpoint)")
    ev.add_argument("--episodes", type=int, default=None, metavar="N",
                    help="episodes for --eval (default: the config's)")
    ex = parser.add_argument_group("export")
    ex.add_argument("--export", metavar="CHECKPOINT", help="write the acting weights of a checkpoint file or run "
                    "directory (its latest), without optimiser state; --eval evaluates the file")
    ex.add_argument("--dtype", choices=DTYPES, default=None,
                    help="dtype of the exported weight matrices and filters (default float16; vectors stay float32)")
    parser.add_argument_group("output").add_argument(
        "--out", metavar="PATH", default=None,
        help="--export: the file to write (default RUN/export/<checkpoint>_<dtype>.pt); --eval: the folder "
             "for its files (video, results; default beside the checkpoint)")
    parser.sections = {"train": train, "eval": ev, "export": ex}
    return parser


def format_eval(result: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())


FROZEN_ON_RESUME = ("model",)   # config sections a resumed run cannot change: the weights' shapes


def latest_loadable(run: RunDir, validate=None, flag: str = "--resume") -> tuple[Path, dict]:
    """The newest checkpoint of ``run`` that loads (and passes ``validate(run, state)``, which raises
    RunDirError to reject one, e.g. a replay that does not match); each one skipped is named on stderr."""
    files = run._checkpoint_files()
    if not files:
        raise RunDirError(f"{flag} {run.path}: no checkpoint in {run.checkpoints}")
    skipped = []
    for _, ckpt in reversed(files):
        try:
            state = RunDir.load_checkpoint(ckpt)
            if validate is not None:
                validate(run, state)
        except RunDirError as err:
            if getattr(err, "fatal", False):     # e.g. a planted pickle: stop, do not look for another
                raise
            skipped.append(f"{ckpt.name} ({err})")
            print(f"warning: skipping checkpoint {ckpt}: {err}", file=sys.stderr)
            continue
        if skipped:
            print(f"warning: resuming from {ckpt} (skipped {len(skipped)} newer checkpoint(s) that did not load)",
                  file=sys.stderr)
        return ckpt, state
    raise RunDirError(f"{flag} {run.path}: no checkpoint loads: " + "; ".join(skipped))


def check_frozen(old: dict, new: dict, sections=FROZEN_ON_RESUME, where: str = "") -> None:
    """ConfigError naming the first key of ``sections`` whose value differs between the checkpoint's
    config ``old`` and the resumed run's ``new`` (say model.hidden=64 on a run trained with 32)."""
    for name in sections:
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    raise ConfigError(f"config key '{name}.{key}': the checkpoint{where} was trained with "
                                      f"{a.get(key)!r}, a resumed run cannot change it to {b.get(key)!r} "
                                      "(start a new run for that)")
        elif a is not None and a != b:
            raise ConfigError(f"config key '{name}': the checkpoint{where} was trained with {a!r}, "
                              f"a resumed run cannot change it to {b!r}")


def resolve_run(args, config_cls, load_new=None, *, validate=None, frozen=FROZEN_ON_RESUME):
    """(config, run dir, checkpoint state) for ``--resume RUN_DIR``; (config, None, None) for a new run.

    A resumed run takes the config its newest loadable checkpoint was trained with (config.yaml
    when the checkpoint has none) plus the command's overrides, which may not change the
    ``frozen`` sections; the run directory is locked first (a second process on it exits 2). A
    new run reads ``--config`` with ``load_config`` unless the agent passes ``load_new(args) -> config``.
    """
    if args.resume:
        run = RunDir.existing(args.resume).lock()
        try:
            ckpt, state = latest_loadable(run, validate)
            on_disk = read_config_file(run.config_path)
            if not on_disk:
                raise RunDirError(f"cannot resume: {run.config_path} is empty")
            base = state["config"] if isinstance(state.get("config"), dict) else on_disk
            cfg = from_dict(config_cls, apply_overrides(base, args.overrides, config_cls))   # old key names too
            if isinstance(state.get("config"), dict):
                # the checkpoint's config with the defaults of keys added since it was written (a key it
                # lacks was trained with its default's behaviour), so that a new key does not stop a resume
                trained = to_dict(from_dict(config_cls, apply_overrides(state["config"], [], config_cls)))
                check_frozen(trained, to_dict(cfg), frozen, f" {ckpt.name}")
        except BaseException:
            run.unlock()
            raise
        return cfg, run, state
    if load_new is not None:
        return load_new(args), None, None
    return load_config(config_cls, args.config, args.overrides), None, None


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def check_common(cfg, logger_key: str = "logger") -> None:
    """Keys every agent has, checked before a run directory exists: ``name`` is one plain path
    component (no ``..``, no ``/``, not empty) and the ``logger`` backend's package is installed."""
    name = getattr(cfg, "name", None)
    if name is not None and (not _NAME.match(name) or len(name) > 100):
        raise ConfigError(f"config key 'name': {name!r} must be a non-empty plain name of letters, digits and "
                          "_ . + - (no path separators, not starting with '.')")
    backend = getattr(cfg, logger_key, None)
    if backend is not None:
        check_logger(backend, logger_key)


def truncate_metrics_after(run: RunDir, step: int) -> int:
    """On resume: drop the CSV metric rows logged after the checkpoint at ``step`` (the resumed run
    logs them again) and any half-written last line; returns the rows removed."""
    return truncate_csv_metrics(run.path, step)


def pick_device(value: str, key: str) -> torch.device:
    """Config key ``key`` ("auto", "cpu" or "cuda") -> the torch device; cuda without CUDA is an error."""
    if value == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key {key!r}: 'cuda' asked for but torch.cuda.is_available() is False; "
                          "use cpu or auto")
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if value == "auto" else value)


def use_tf32_matmuls(device: torch.device) -> bool:
    """On CUDA, float32 matmuls and convolutions on TF32 tensor cores (10-bit mantissa products, float32
    sums). Why: without it cuBLAS picks FFMA kernels whose 32x32 tiles leave most of an H200 idle on the
    long-reduction weight gradients of a VMamba encoder (the drone update's largest kernel, 17 of 50 ms:
    benchmarks/results/td3_update_profile_gpu_forest_two_encoders_fp32.md). Training only; CPU runs are untouched."""
    if device.type != "cuda":
        return False
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    return True


def checkpoint_path(arg, flag: str = "--eval", exports: bool = False) -> Path:
    """``flag`` takes a checkpoint file or a run directory: its latest checkpoint, or with
    ``exports`` else its latest exported one. ``flag`` names the option or subcommand in errors."""
    path = Path(arg)
    if not path.is_dir():
        return path
    ckpt = None
    if (path / "checkpoints").is_dir() or (exports and (path / "export").is_dir()):   # RunDir() creates folders
        run = RunDir(path)
        ckpt = run.latest_checkpoint() or (run.latest_export() if exports else None)
    if ckpt is None:
        where = f"{path / 'checkpoints'}" + (f" or {path / 'export'}" if exports else "")
        raise RunDirError(f"{flag} {arg}: no checkpoint found in {where}")
    return ckpt


def output_root(ckpt: Path) -> Path:
    """Where eval/export files of checkpoint ``ckpt`` go: its run directory when it lies in one
    (RUN/checkpoints/x.pt, RUN/export/x.pt), else the folder holding the file."""
    ckpt = Path(ckpt)
    if ckpt.parent.name in ("checkpoints", "export") and (ckpt.parent.parent / "config.yaml").is_file():
        return ckpt.parent.parent
    return ckpt.parent


def eval_checkpoint(arg, flag: str = "--eval", exports: bool = False) -> tuple[Path, dict]:
    """checkpoint_path(...) and the state it holds."""
    ckpt = checkpoint_path(arg, flag, exports)
    return ckpt, RunDir.load_checkpoint(ckpt)


def eval_out_dir(args, ckpt: Path, default: Path) -> Path:
    """Where ``--eval`` of ``ckpt`` writes its files: ``--out DIR`` if given, else ``default``."""
    return Path(args.out) if getattr(args, "out", None) else default


def dataset_parser(prog: str, description: str, settings_cls, *, example: str, seed_default, seed_help: str,
                   epilog_extra: str = "") -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The data modules' command line (manipulation, navigation): ``generate [key=value ...] --out
    DIR --episodes N [--seed S] [--config FILE] [--quiet]`` (settings of ``settings_cls``) and
    ``info DIR``. Returns the parser and its ``generate`` subparser (for a module's own options);
    ``generate_settings`` reads the settings of a parsed ``generate``."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OverridesParser)
    gen = sub.add_parser("generate", formatter_class=fmt, help="write or continue a dataset of expert demonstrations",
                         description="Write expert demonstrations to DIR, continuing after the episodes already "
                                     "there (same seed and settings required).",
                         epilog="settings (key=value overrides or --config FILE):\n" + describe(settings_cls)
                                + epilog_extra)
    gen.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")
    gen.add_argument("--out", required=True, metavar="DIR", help="dataset directory (created, or resumed if it exists)")
    gen.add_argument("--episodes", type=int, required=True, metavar="N", help="total episodes wanted in the dataset")
    gen.add_argument("--seed", type=int, default=seed_default, metavar="S", help=seed_help)
    gen.add_argument("--config", metavar="FILE", help="YAML/JSON file of settings")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    info = sub.add_parser("info", help="validate a dataset and print a summary")
    info.add_argument("path", metavar="DIR")
    return parser, gen


def generate_settings(parser: argparse.ArgumentParser, args) -> dict:
    """A parsed ``generate``'s settings: the --config file, then the key=value overrides."""
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    return apply_overrides(read_config_file(args.config) if args.config else {}, args.overrides)


def eval_run(args, config_cls) -> tuple[Path, dict, object, int]:
    """What every RL agent's ``--eval`` starts from: the checkpoint, its state, its config (as
    ``config_cls``) and the episodes to run (``--episodes``, else the config's train.eval_episodes)."""
    ckpt, state = eval_checkpoint(args.eval)
    cfg = from_dict(config_cls, config_for_eval_here(state["config"], ckpt))
    return ckpt, state, cfg, args.episodes or cfg.train.eval_episodes


def config_for_eval_here(saved, ckpt: Path):
    """A checkpoint's saved config, as ``--eval`` runs it on this machine: where a run trained is not
    where it must be evaluated, so a GPU host's run (device=cuda) evaluates on the CPU of a machine
    without CUDA (logged) instead of failing pick_device. Every agent's --eval (RL and BC) goes through here."""
    if isinstance(saved, dict) and saved.get("device") == "cuda" and not torch.cuda.is_available():
        logging.getLogger("mambazoo").warning("--eval: %s trained with device=cuda; no CUDA here, evaluating on "
                                              "the CPU", ckpt)
        return {**saved, "device": "cpu"}
    return saved


def run_export(args, prog: str, config_cls=None, add_facts=None) -> int:
    """``--export CHECKPOINT|RUN_DIR [--out FILE] [--dtype D]``, the same for every agent: the acting
    weights alone (agents/runtime/export.py), written atomically; prints the ``--eval`` command.
    With ``config_cls`` the exported config is rewritten in today's key names (a checkpoint saved
    under renamed keys exports a file that loads without the rename warnings). ``add_facts(state) ->
    state`` lets an agent fill in task facts a checkpoint predating them lacks (BC navigation: the
    dataset's settings, so that the export evaluates without the dataset)."""
    from agents.runtime.atomic_io import torch_save_atomic
    from agents.runtime.export import export_checkpoint

    ckpt, state = eval_checkpoint(args.export, "--export")
    if config_cls is not None and isinstance(state.get("config"), dict):
        state = {**state, "config": to_dict(from_dict(config_cls, state["config"]))}
    if add_facts is not None:
        state = add_facts(state)
    dtype = getattr(args, "dtype", None) or "float16"
    dest = Path(args.out) if args.out else output_root(ckpt) / "export" / f"{ckpt.stem}_{dtype}.pt"
    try:
        exported = export_checkpoint(state, str(ckpt), getattr(torch, dtype))
    except ValueError as err:                      # no weights to export
        raise RunDirError(f"--export {args.export}: {err}") from None
    torch_save_atomic(exported, dest)
    print(f"exported {ckpt} -> {dest} ({dest.stat().st_size / 2**20:.1f} MiB, {dtype} weights); "
          f"evaluate with: python {prog} --eval {dest}")
    return 0


def run_agent(args, *, config_cls, agent: str, check, run_eval, dry_run, train, load_new=None,
              save_config_on_resume: bool = False, launch_errors: tuple = (), validate_checkpoint=None,
              frozen_on_resume=FROZEN_ON_RESUME, device_key: str = "device", prog: str | None = None,
              add_facts=None) -> int:
    """The flow of every agent script's ``main`` (RL and BC alike): ``--export`` (``run_export``),
    ``--eval`` (``run_eval(args)``), or resolve the config and run directory (``--resume``) and
    ``check(cfg)`` them (a user error: one line on stderr, exit 2); then ``dry_run(cfg)``, or create
    the run directory, write its config.yaml and ``train(cfg, run, state) -> exit code``. A
    NonFiniteLoss that reaches here exits 1 naming the last good checkpoint; ``launch_errors``
    (say a dataset error) raised by check/dry_run/train exit 2 with one line.
    ``save_config_on_resume``: rewrite config.yaml on resume too, so overrides (say a larger
    total_frames) stick for the next resume. ``validate_checkpoint(run, state)`` rejects a
    checkpoint (RunDirError) so that resume falls back to an older one; ``frozen_on_resume``: the
    config sections overrides of a resume may not change; ``device_key``: the dotted config key of
    the device; ``prog``: the script, for the command printed after an export; ``add_facts``: see
    ``run_export``."""
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(levelname)s %(message)s")
    box = []
    with threads_restored():
        try:
            return _run_agent(args, box, config_cls=config_cls, agent=agent, check=check, run_eval=run_eval,
                              dry_run=dry_run, train=train, load_new=load_new,
                              save_config_on_resume=save_config_on_resume, launch_errors=launch_errors,
                              validate_checkpoint=validate_checkpoint, frozen_on_resume=frozen_on_resume,
                              device_key=device_key, prog=prog or f"agents/{agent}.py", add_facts=add_facts)
        finally:
            for run in box:
                run.unlock()


@contextmanager
def threads_restored():
    """torch's intra-op thread count as it was on entry, also after an error. An agent sets its own for
    its run (the `threads` keys); a caller in the same process (tests, notebooks, a --workers 0 sweep)
    gets its own back: measured, ppo_memory's threads=1 left in the process changed the numerics of
    the next test's runs."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_agent(args, box, *, config_cls, agent, check, run_eval, dry_run, train, load_new, save_config_on_resume,
               launch_errors, validate_checkpoint, frozen_on_resume, device_key, prog, add_facts) -> int:
    run = None
    try:
        if getattr(args, "export", None):
            return run_export(args, prog, config_cls, add_facts)
        if args.eval:
            try:
                return run_eval(args)
            except ConfigError as err:   # the checkpoint's config: another agent's, or an older schema
                raise ConfigError(f"--eval {args.eval}: its config does not fit {agent} (a checkpoint of another "
                                  f"agent, or of an older version?): {err}") from None
        cfg, run, state = resolve_run(args, config_cls, load_new, validate=validate_checkpoint,
                                      frozen=frozen_on_resume)
        if run is not None:
            box.append(run)
        check(cfg)
        check_common(cfg)
        device = cfg
        for part in device_key.split("."):
            device = getattr(device, part)
        pick_device(device, device_key)          # device=cuda without CUDA: one line, before a run dir
    except (ConfigError, RunDirError, *launch_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            return dry_run(cfg)
        new = run is None
        if new:
            run = RunDir.create(cfg.run_root, agent, cfg.name).lock()
            box.append(run)
        else:
            truncate_metrics_after(run, int(state.get("frames", state.get("step", 0))))
        if new or save_config_on_resume:
            save_config(cfg, run.config_path)
        print(f"run directory: {run.path}")
        return train(cfg, run, state)
    except (RunDirError, *launch_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        last = run.latest_checkpoint() if run is not None else None
        print(f"error: {err}; stopping. Last good checkpoint: {last or 'none yet'}", file=sys.stderr)
        return 1
