"""POMDP memory suite throughput (envs/pomdp/tasks.py, envs/pomdp/suite.py): env steps/s, random actions.

    python benchmarks/pomdp_speed.py           # N = 1024, 4096, 16384 -> benchmarks/results/pomdp_speed.*
    python benchmarks/pomdp_speed.py --quick   # N = 4096 only, fewer steps, results under runs/

Two paths per task and N, same process, same random-action pool (pre-drawn, so only the env is timed):
  raw     task.step(action) then task.reset(done): the batched tensors, no TensorDict
  EnvBase POMDPEnv.step_and_maybe_reset(td), as TorchRL collectors and rollout() call it
env steps/s = N x steps / seconds; median of --repeats timed blocks after a warm-up. N = 16 shows the
fixed per-step cost (Python + op dispatch; TorchRL's step/reset machinery on the EnvBase path).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

POOL = 64   # distinct random action batches, cycled


def _action_pool(task, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    if task.n_actions:
        return [torch.randint(0, task.n_actions, (n,), generator=gen) for _ in range(POOL)]
    return [(torch.rand(n, task.act_dim, generator=gen) * 2 - 1) * task.act_high for _ in range(POOL)]


def time_raw(name: str, level: str, n: int, steps: int, warmup: int, repeats: int) -> float:
    from envs.pomdp.tasks import make_task

    task = make_task(name, level, n, seed=0)
    pool = _action_pool(task, n, torch.Generator().manual_seed(0))
    task.reset()

    def block(k):
        for i in range(k):
            _, _, term, trunc = task.step(pool[i % POOL])
            task.reset(term | trunc)

    block(warmup)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(steps)
        times.append(time.perf_counter() - t0)
    return n * steps / statistics.median(times)


def time_envbase(name: str, level: str, n: int, steps: int, warmup: int, repeats: int) -> float:
    from envs.pomdp.suite import POMDPEnv

    env = POMDPEnv(name, level, num_envs=n, seed=0)
    pool = _action_pool(env.task, n, torch.Generator().manual_seed(0))
    if env.task.n_actions:   # the env's one-hot encoding, built outside the timed loop
        pool = [torch.nn.functional.one_hot(a, env.task.n_actions) for a in pool]
    td = env.reset()

    def block(k, td):
        for i in range(k):
            td.set("action", pool[i % POOL])
            _, td = env.step_and_maybe_reset(td)
        return td

    td = block(warmup, td)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        td = block(steps, td)
        times.append(time.perf_counter() - t0)
    return n * steps / statistics.median(times)


def main(argv=None) -> int:
    from envs.pomdp.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[16, 1024, 4096, 16384])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--level", default="easy")
    parser.add_argument("--env-steps", type=float, default=2e6,
                        help="env steps per timed block (N x steps, at most 5000 steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="N=4096, 2e5 env steps per block, results under runs/")
    parser.add_argument("--out", default=None, help="output stem (default benchmarks/results/pomdp_speed)")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.env_steps = [4096], 2e5
    torch.set_num_threads(args.threads)
    out = Path(args.out or (ROOT / ("runs/pomdp_speed_quick/pomdp_speed" if args.quick
                                    else "benchmarks/results/pomdp_speed")))
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]

    rows = []
    for name in args.tasks:
        for n in args.num_envs:
            steps = min(max(int(args.env_steps // n), 10), 5000)
            warmup = max(steps // 4, 5)
            raw = time_raw(name, args.level, n, steps, warmup, args.repeats)
            envbase = time_envbase(name, args.level, n, steps, warmup, args.repeats)
            rows.append({"task": name, "level": args.level, "num_envs": n, "raw_steps_per_s": round(raw),
                         "envbase_steps_per_s": round(envbase), "envbase_over_raw": round(envbase / raw, 3),
                         "raw_us_per_step": round(n / raw * 1e6, 1),
                         "envbase_us_per_step": round(n / envbase * 1e6, 1)})
            print(f"{name:<26} N={n:<6} raw {raw / 1e6:7.2f} M/s   EnvBase {envbase / 1e6:7.2f} M/s "
                  f"({envbase / raw:.2f}x)", flush=True)

    load_end = os.getloadavg()[0]
    cmd = "python benchmarks/pomdp_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# POMDP suite throughput (level {args.level}, torch threads {args.threads}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__})", "", f"Command: `{cmd.strip()}`", "",
             f"Load average (1 min): {load:.2f} at start, {load_end:.2f} at end (this run adds ~1-2). Random "
             f"actions from a pre-drawn pool; env steps/s = N x steps / s, median of {args.repeats} blocks of "
             f"~{args.env_steps:.0e} env steps after a warm-up.", "",
             "| task | N | raw step+reset (M env steps/s) | TorchRL EnvBase step_and_maybe_reset (M/s) "
             "| EnvBase / raw | raw / EnvBase us per batched step |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['task']} | {r['num_envs']} | {r['raw_steps_per_s'] / 1e6:.2f} | "
              f"{r['envbase_steps_per_s'] / 1e6:.2f} | {r['envbase_over_raw']:.2f} | "
              f"{r['raw_us_per_step']:.0f} / {r['envbase_us_per_step']:.0f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
