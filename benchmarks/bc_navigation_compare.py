"""MambaViNT vs the ViNT baseline on the ambiguous-junction T-mazes: one dataset, the same training
budget (steps x positions per step), >= 2 seeds each, closed-loop eval on maps not in the data.

    python benchmarks/bc_navigation_compare.py all --data data/nav_depth2 --episodes 800 --workers 16 \\
        --seeds 0 1 --steps 3000 --eval-episodes 100
    python benchmarks/bc_navigation_compare.py hz          # batch-1 control rate on this CPU, both models

Phases: generate (the dataset, in parallel worker processes), train (every kind x seed at once,
each `agents/bc_navigation.py train`; finished runs are skipped, interrupted ones resumed), eval
(each run's latest checkpoint, in parallel CPU processes), report (benchmarks/results/
bc_navigation.{md,json,png}: mean and std over seeds of success, SPL, collisions, control rate),
all (the four in order). ``--set key=value`` passes config overrides to every training run.
Memoryless ceiling: at depth D the goal image and every junction look alike, so a policy that
cannot remember the cue reaches the goal in 1 / 2**D of the episodes (25% at depth 2).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AGENT = [sys.executable, str(ROOT / "agents" / "bc_navigation.py")]


def run_parallel(jobs: list[tuple[str, list[str]]], logs: Path, limit: int, env: dict,
                 deadline: float | None = None, grace: float = 0.0) -> list[str]:
    """Run (name, argv) jobs, at most ``limit`` at once, each logging to logs/<name>.log. At
    ``deadline`` (a time.time()) the running jobs are killed and the pending ones not started:
    their names are returned (stopped, not failed). With ``grace`` > 0 the running jobs get a
    SIGTERM ``grace`` seconds before the deadline (an agent that checkpoints on it, say
    bc_diffusion train, saves the step it is on and exits) and no job starts after that; a job that
    exits after its SIGTERM counts as stopped too."""
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, stopped, termed = list(jobs), {}, [], [], set()
    while pending or running:
        if deadline is not None and grace > 0 and time.time() >= deadline - grace and not termed:
            for name, proc in running.items():
                proc.terminate()
                termed.add(name)
                print(f"[{time.strftime('%H:%M:%S')}] {name}: SIGTERM, {grace:.0f} s before the deadline", flush=True)
            stopped += [name for name, _ in pending]
            pending = []
            termed.add("")                   # sent: once
        if deadline is not None and time.time() >= deadline:
            for name, proc in running.items():
                proc.kill()
                proc.wait()
                print(f"[{time.strftime('%H:%M:%S')}] {name} stopped at the deadline", flush=True)
            stopped += [*running, *(name for name, _ in pending)]
            break
        while pending and len(running) < limit:
            name, argv = pending.pop(0)
            print(f"[{time.strftime('%H:%M:%S')}] start {name}", flush=True)
            running[name] = subprocess.Popen(argv, stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                             env=env, cwd=ROOT)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                print(f"[{time.strftime('%H:%M:%S')}] {name} exited {proc.returncode}", flush=True)
                if name in termed:
                    stopped.append(name)
                elif proc.returncode:
                    failed.append(name)
                    print((logs / f"{name}.log").read_text()[-2000:], flush=True)
                del running[name]
        time.sleep(1.0)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (logs in {logs})")
    return stopped


def run_dir(args, kind: str, seed: int) -> Path | None:
    found = sorted((Path(args.runs) / "bc_navigation").glob(f"{kind}_s{seed}-*"))
    return found[-1] if found else None


def phase_generate(args) -> None:
    from agents.navigation.data import main as data_main
    code = data_main(["generate", "--out", args.data, "--episodes", str(args.episodes), "--seed", str(args.data_seed),
                      "--workers", str(args.workers), f"depth={args.depth}", "collision_backend=grid", *args.data_set])
    if code:
        raise SystemExit(code)


def phase_train(args) -> None:
    jobs = []
    for kind in args.kinds:
        for seed in args.seeds:
            existing = run_dir(args, kind, seed)
            common = [f"train.steps={args.steps}", f"device={args.device}", *args.set]
            if existing is None:
                argv = [*AGENT, "train", f"data.path={args.data}", f"model.kind={kind}", f"seed={seed}",
                        f"name={kind}_s{seed}", f"run_root={args.runs}", "train.val_every_steps=1000", *common]
            else:
                argv = [*AGENT, "train", "--resume", str(existing), *common]
            jobs.append((f"train_{kind}_s{seed}", argv))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // len(jobs)))}
    run_parallel(jobs, Path(args.runs) / "logs", args.parallel or len(jobs), env)


def phase_eval(args) -> None:
    jobs = []
    for kind in args.kinds:
        for seed in args.seeds:
            rd = run_dir(args, kind, seed)
            if rd is None:
                raise SystemExit(f"no run for {kind} seed {seed} under {args.runs}: run the train phase")
            jobs.append((f"eval_{kind}_s{seed}", [*AGENT, "eval", str(rd), "--episodes", str(args.eval_episodes),
                                                  "--seed", str(args.eval_seed)]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_parallel(jobs, Path(args.runs) / "logs", args.parallel or len(jobs), env)


def phase_report(args) -> None:
    import numpy as np
    rows = []
    for kind in args.kinds:
        for seed in args.seeds:
            rd = run_dir(args, kind, seed)
            evals = sorted((rd / "eval").glob("eval_ckpt_*.json")) if rd else []
            if not evals:
                raise SystemExit(f"no eval result for {kind} seed {seed}: run the eval phase")
            r = json.loads(evals[-1].read_text())
            val = (rd / "bc_navigation" / "scalars" / "val_waypoint_loss.csv")
            r["val_waypoint_loss"] = float(val.read_text().split()[-1].split(",")[1]) if val.exists() else float("nan")
            rows.append({"kind": kind, "seed": seed, "run": str(rd), **r})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ("success_rate", "direct_success_rate", "spl", "collision_rate", "control_hz", "val_waypoint_loss")
    summary = {}
    for kind in args.kinds:
        sel = [r for r in rows if r["kind"] == kind]
        # direct_success_rate: nan for evals written before it existed
        summary[kind] = {k: (float(np.mean([r.get(k, np.nan) for r in sel])), float(np.std([r.get(k, np.nan) for r in sel])))
                         for k in keys}
        summary[kind]["parameters"] = sel[0]["parameters"]
    cmd = "python benchmarks/bc_navigation_compare.py " + " ".join(sys.argv[1:])
    lines = [f"# MambaViNT vs ViNT on ambiguous T-mazes (depth {args.depth})", "",
             f"Command: `{cmd}`", "",
             f"Dataset {args.data}: {args.episodes} expert episodes (seed {args.data_seed}); each model "
             f"{args.steps} steps; eval: {args.eval_episodes} closed-loop episodes per run on unseen maps "
             f"(seeds from {args.eval_seed}, cues balanced). Memoryless ceiling: {100 / 2 ** args.depth:.0f}% success.",
             "Direct success: success without entering a wrong leaf room first (a guess at a junction "
             "can otherwise be undone within the time limit).",
             "", "| model | params | success | direct success | SPL | collisions | control Hz (eval CPU, batch 1) | "
             "val waypoint loss | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, s in summary.items():
        f = lambda k, scale=100, d=1: f"{s[k][0] * scale:.{d}f} ± {s[k][1] * scale:.{d}f}"   # noqa: E731
        lines.append(f"| {kind} | {s['parameters']:,} | {f('success_rate')}% | {f('direct_success_rate')}% | "
                     f"{f('spl')}% | {f('collision_rate')}% | "
                     f"{f('control_hz', 1, 0)} | {f('val_waypoint_loss', 1, 4)} | {len(args.seeds)} |")
    lines += ["", "Per run:", "", "| model | seed | success | SPL | collisions | success by cue | control Hz |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['seed']} | {100 * r['success_rate']:.0f}% | {100 * r['spl']:.1f}% | "
                     f"{100 * r['collision_rate']:.0f}% | {r['success_by_cue']} | {r['control_hz']:.0f} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{args.name}.json").write_text(json.dumps({"command": cmd, "summary": summary, "runs": rows}, indent=1))
    plot(summary, rows, out / f"{args.name}.png", 100 / 2 ** args.depth)
    print("\n".join(lines))


def plot(summary, rows, path: Path, ceiling: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    kinds = list(summary)
    for i, kind in enumerate(kinds):
        vals = [100 * r["success_rate"] for r in rows if r["kind"] == kind]
        ax.bar(i, summary[kind]["success_rate"][0] * 100, color=["tab:gray", "tab:blue"][i % 2], alpha=0.7)
        ax.plot([i] * len(vals), vals, "ko", ms=4)
    ax.axhline(ceiling, ls="--", color="tab:red", lw=1, label=f"memoryless ceiling {ceiling:.0f}%")
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("closed-loop success (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def phase_hz(args) -> None:
    """Batch-1 control rate of each model's step() on this CPU (weights do not change the cost)."""
    import torch
    from agents.navigation.config import Config
    from agents.bc_navigation import build_model
    from networks.params import count_parameters
    torch.set_num_threads(args.threads)
    lines = ["| model | params | ms per step | Hz | threads |", "|---|---|---|---|---|"]
    for kind in args.kinds:
        cfg = Config()
        cfg.model.kind = kind
        model = build_model(cfg, 64, 5).eval()
        rgb = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
        state, init = model.initial_state(1), torch.zeros(1, dtype=torch.bool)
        for _ in range(20):
            _, state = model.step(rgb, rgb, state, init)
        best = float("inf")
        for _ in range(5):                      # best of 5 blocks: the machine is shared
            t0 = time.perf_counter()
            for _ in range(100):
                _, state = model.step(rgb, rgb, state, init)
            best = min(best, (time.perf_counter() - t0) / 100)
        n = count_parameters(model)
        lines.append(f"| {kind} | {n:,} | {best * 1e3:.2f} | {1 / best:.0f} | {args.threads} |")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("phase", choices=["generate", "train", "eval", "report", "all", "hz"])
    p.add_argument("--data", default="data/nav_depth2")
    p.add_argument("--episodes", type=int, default=800, help="dataset episodes")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--data-set", nargs="*", default=[], metavar="key=value",
                   help="generate: dataset settings, e.g. paired_cues=true action_noise=0.3 (every map once per "
                        "cue, DART noise: benchmarks/results/bc_navigation_cue_diagnosis.md)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--kinds", nargs="+", default=["vint", "mambavint"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every training run")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--eval-seed", type=int, default=1000)
    p.add_argument("--runs", default="runs/bc_nav_compare")
    p.add_argument("--parallel", type=int, default=0, help="processes at once (0: all)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="bc_navigation", help="report: file names under --out")
    p.add_argument("--threads", type=int, default=1, help="hz: torch threads")
    args = p.parse_args()
    phases = ["generate", "train", "eval", "report"] if args.phase == "all" else [args.phase]
    for ph in phases:
        globals()[f"phase_{ph}"](args)


if __name__ == "__main__":
    main()
