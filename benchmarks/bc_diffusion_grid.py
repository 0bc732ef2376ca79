"""Train the DP3-UNet vs Mamba Policy grid (tasks x denoisers x seeds) at once on one machine, at an
equal step budget, then export each run's acting weights; benchmarks/bc_diffusion_table.py makes
the table from the evaluated runs.

    python benchmarks/bc_diffusion_grid.py --tasks push pick_place --seeds 0 1 --steps 4000 \\
        --unet-dims 64 128 256 --mamba-dims 16 32 64 --runs runs/manip_grid
    python benchmarks/bc_diffusion_grid.py ... --budget-s 420     # steps from a timed calibration
    python agents/bc_diffusion.py eval RUN --episodes 20 --no-video        # each run, then:
    python benchmarks/bc_diffusion_table.py runs/manip_grid/bc_diffusion/* --out benchmarks/results/...

Every run is ``agents/bc_diffusion.py train --config configs/manip/<task>_<denoiser>.yaml`` with
``seed``, ``name=<task>_<denoiser>_s<seed>``, the widths and ``--set`` overrides; all run in
parallel (``--parallel``), which suits a GPU: these small denoisers leave it mostly idle, one at a
time. ``--budget-s S`` first trains every run for ``--calibration-steps`` steps (all at once, as
the real runs will be), reads the slowest run's steps/s and picks the step count that fits S
seconds for all (roughly: the short calibration overlaps the runs less than the real runs do);
the budget is equal in steps, set by the slowest denoiser. Datasets must exist
(``agents/bc_diffusion.py generate``).

A denoiser name may be a variant (``VARIANTS``): ``mamba1_noattn`` is ``<task>_mamba1.yaml`` with
``policy.attention=false``, run as ``<task>_mamba1_noattn_s<seed>``. Across calls of a time-limited
machine (benchmarks/device_bc_diffusion.sh): ``--resume`` continues each run found under RUNS
(``train --resume RUN train.steps=N``; a finished run is skipped, one without a checkpoint started
again), and ``--stop-s S`` stops the training S seconds after it began: a SIGTERM STOP_GRACE_S before
(each run saves the step it is on), then a kill; runs stopped so are not exported.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.runtime.run_dir import checkpoint_files  # noqa: E402
from benchmarks.bc_navigation_compare import run_parallel  # noqa: E402

AGENT = [sys.executable, str(ROOT / "agents" / "bc_diffusion.py")]
DENOISERS = ("unet", "mamba1", "mamba2", "bidirectional", "hydra")
# variant name -> (the config's denoiser, overrides): run like a denoiser, named after the variant
VARIANTS = {"mamba1_noattn": ("mamba1", ["policy.attention=false"])}
# --stop-s: the runs get a SIGTERM this long before the kill (bc_diffusion train saves the step it is
# on: a graphed step takes milliseconds, a save well under a second of it)
STOP_GRACE_S = 20.0


def existing_run(root: Path, name: str) -> Path | None:
    """The newest run directory of run ``name`` under root (names end in _s<seed>, so the glob
    ``<name>-*`` never takes another run's: push_mamba1_s0-* is not push_mamba1_noattn_s0-*)."""
    found = sorted((root / "bc_diffusion").glob(f"{name}-*"))
    return found[-1] if found else None


def checkpoint_step(run: Path) -> int | None:
    """Step of the run's latest training checkpoint (checkpoints/ckpt_<step>.pt), None without one."""
    found = checkpoint_files(run / "checkpoints")
    return found[-1][0] if found else None


def jobs(args, root: Path, steps: int, extra: list[str], resume: bool = False) -> list[tuple[str, list[str]]]:
    out = []
    for task in args.tasks:
        for den in args.denoisers:
            base, variant = VARIANTS.get(den, (den, []))
            dims = args.unet_dims if base == "unet" else args.mamba_dims
            for seed in args.seeds:
                name = f"{task}_{den}_s{seed}"
                run = existing_run(root, name) if resume else None
                done = checkpoint_step(run) if run else None
                if run and done is None:       # stopped before its first checkpoint: start it again
                    print(f"{name}: {run.name} has no checkpoint, starting it again", flush=True)
                    shutil.rmtree(run)
                elif run and done >= steps:
                    print(f"{name}: {run.name} is done ({done} steps)", flush=True)
                    continue
                elif run:
                    print(f"{name}: resuming {run.name} from step {done}", flush=True)
                    out.append((name, [*AGENT, "train", "--resume", str(run), f"train.steps={steps}", *extra]))
                    continue
                argv = [*AGENT, "train", "--config", str(ROOT / "configs" / "manip" / f"{task}_{base}.yaml"),
                        f"seed={seed}", f"name={name}", f"run_root={root}", f"train.steps={steps}",
                        *([f"policy.down_dims=[{','.join(map(str, dims))}]"] if dims else []), *variant,
                        *([f"data.val_path={Path(args.val_root) / task}",
                           f"train.val_every_steps={args.val_every}"] if args.val_root else []),
                        *args.set, *extra]
                out.append((name, argv))
    return out


def slowest_rate(root: Path) -> float:
    """Min over runs of the last logged steps/s (the steady rate: start-up is in the first rows)."""
    rates = []
    for f in (root / "bc_diffusion").glob("*/bc_diffusion/scalars/train/steps_per_s.csv"):
        rows = list(csv.reader(f.open()))
        rates.append(float(rows[-1][1]))
        print(f"  {f.parents[3].name}: {rates[-1]:.1f} steps/s")
    if not rates:
        raise SystemExit(f"calibration wrote no steps/s logs under {root}")
    return min(rates)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["push", "pick_place"], choices=["push", "pick_place"])
    p.add_argument("--denoisers", nargs="+", default=list(DENOISERS), choices=[*DENOISERS, *VARIANTS])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--unet-dims", nargs="+", type=int, default=None, help="default: the configs' widths")
    p.add_argument("--mamba-dims", nargs="+", type=int, default=None, help="default: the configs' widths")
    p.add_argument("--steps", type=int, default=None, help="gradient steps per run (or --budget-s)")
    p.add_argument("--budget-s", type=float, default=None, help="wall seconds for the whole grid at once")
    p.add_argument("--calibration-steps", type=int, default=60)
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every run")
    p.add_argument("--runs", default="runs/manip_grid", help="run root (runs go to RUNS/bc_diffusion/)")
    p.add_argument("--val-root", default=None, metavar="DIR",
                   help="held-out demos per task, DIR/<task> (`generate` with another --seed): each new run "
                        "validates on them every --val-every steps (data.val_path, train.val_every_steps)")
    p.add_argument("--val-every", type=int, default=300, help="steps between validations (with --val-root)")
    p.add_argument("--parallel", type=int, default=None, help="runs at once (default: all)")
    p.add_argument("--resume", action="store_true", help="continue the runs found under --runs (with --steps; "
                   "on resume --set is not applied, the run keeps its config but train.steps)")
    p.add_argument("--stop-s", type=float, default=None,
                   help=f"stop the training this many seconds after it began (SIGTERM {STOP_GRACE_S:.0f} s before: a checkpoint at the step each run is on)")
    p.add_argument("--export", default="float16", choices=["none", "float32", "float16", "bfloat16"],
                   help="export each run's acting weights in this dtype (RUN/export/)")
    args = p.parse_args(argv)
    if (args.steps is None) == (args.budget_s is None):
        p.error("give exactly one of --steps and --budget-s")
    if args.resume and args.steps is None:
        p.error("--resume needs --steps (the runs' cosine schedule is fixed by it)")
    if args.val_root:
        missing = [t for t in args.tasks if not (Path(args.val_root) / t / "config.json").is_file()]
        if missing:
            p.error(f"--val-root {args.val_root}: no dataset for {', '.join(missing)} (expected "
                    f"{args.val_root}/<task>/config.json, as `bc_diffusion.py generate --out DIR` writes)")
        if args.val_every < 1:
            p.error(f"--val-every must be >= 1, got {args.val_every}")
    root = Path(args.runs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    n = len(args.tasks) * len(args.denoisers) * len(args.seeds)
    limit = args.parallel or n
    steps = args.steps
    if steps is None:
        calib = root / "_calibration"
        t0 = time.perf_counter()
        run_parallel(jobs(args, calib, args.calibration_steps, ["train.log_every_steps=20", "logger=csv"]),
                     calib / "logs", limit, env)
        rate = slowest_rate(calib)
        startup = time.perf_counter() - t0 - args.calibration_steps / rate   # imports, data, graph capture
        waves = -(-n // limit)
        # 0.7: the calibration's short runs overlap less than full ones (on the H100, 8 runs at once,
        # 60-step calibration: 0.92 x its rate took 460 s against a 330 s budget)
        steps = max(args.calibration_steps, int(0.7 * rate * (args.budget_s / waves - startup)))
        shutil.rmtree(calib)
        print(f"calibration: slowest {rate:.1f} steps/s with {limit} at once -> {steps} steps per run", flush=True)
    t0 = time.perf_counter()
    failed, stopped = None, []
    todo = jobs(args, root, steps, [], resume=args.resume)
    deadline = None if args.stop_s is None else time.time() + args.stop_s
    try:
        stopped = run_parallel(todo, root / "logs", limit, env, deadline=deadline,
                               grace=STOP_GRACE_S if deadline is not None else 0.0)
    except SystemExit as e:            # the other runs' results are still worth exporting
        failed = str(e)
    print(f"trained {len(todo)} of {n} runs towards {steps} steps in {time.perf_counter() - t0:.0f} s"
          + (f"; stopped unfinished: {' '.join(stopped)}" if stopped else ""), flush=True)
    if args.export != "none":
        exports = [(f"export_{run.name}", [*AGENT, "export", str(run), "--dtype", args.export])
                   for run in sorted((root / "bc_diffusion").glob("*_s*-*"))
                   if run.name.split("-", 1)[0] not in stopped]
        try:
            run_parallel(exports, root / "logs", limit, env)
        except SystemExit as e:
            failed = f"{failed or ''} {e}".strip()
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
