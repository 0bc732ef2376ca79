"""A1 quadruped env throughput: depth backends side by side, single env and parallel envs.

    python benchmarks/env_speed.py                 # thin course, 64x64 depth, writes benchmarks/results/env_speed.*
    python benchmarks/env_speed.py --quick         # fewer steps, writes under runs/env_speed_quick/

Rows (same run, same machine; ratios are against the TinyRenderer row):
  single env, one core: no depth / ray-cast depth / PyBullet TinyRenderer depth (getCameraImage)
  TorchRL SerialEnv / ParallelEnv with N envs, ray-cast depth (random actions, no policy)
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def single_env(course: str, depth_backend: str | None, steps: int, image_size: int, seed: int = 0) -> float:
    from envs.quadruped.a1_env import A1QuadrupedEnv

    env = A1QuadrupedEnv(course, depth=depth_backend is not None, depth_backend=depth_backend or "raycast",
                         image_size=image_size)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(20):   # warm up
        env.step(rng.uniform(-0.3, 0.3, env.act_dim))
    t0, done_steps = time.perf_counter(), 0
    while done_steps < steps:
        _, _, term, trunc, _ = env.step(rng.uniform(-0.3, 0.3, env.act_dim))
        done_steps += 1
        if term or trunc:
            env.reset()
    rate = done_steps / (time.perf_counter() - t0)
    env.close()
    return rate


def batched_envs(course: str, workers: int, steps: int, image_size: int, parallel: bool) -> float:
    import torch
    from torchrl.envs import GymEnv, ParallelEnv, SerialEnv

    import envs  # noqa: F401  (registers the ids in this process)

    def make():
        import envs as _  # noqa: F401  (and in each worker)

        return GymEnv(envs.QUADRUPED_IDS[course], image_size=image_size)

    env = ParallelEnv(workers, make, mp_start_method="spawn") if parallel else SerialEnv(workers, make)
    env.set_seed(0)
    gen = torch.Generator().manual_seed(0)

    def policy(td):   # the same action distribution as the single-env rows
        return td.set("action", (torch.rand(td.shape + env.action_spec.shape[-1:], generator=gen) * 2 - 1) * 0.3)

    env.rollout(10, policy, break_when_any_done=False)          # warm up, workers started
    per_env = max(steps // workers, 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        env.rollout(per_env, policy, break_when_any_done=False)
    rate = per_env * workers / (time.perf_counter() - t0)
    env.close()
    return rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--course", default="thin")
    parser.add_argument("--steps", type=int, default=1000, help="steps per single-env row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="200 steps per row, results under runs/")
    parser.add_argument("--out", default=None, help="output stem (default benchmarks/results/env_speed)")
    args = parser.parse_args(argv)
    steps = 200 if args.quick else args.steps
    out = Path(args.out or (ROOT / ("runs/env_speed_quick/env_speed" if args.quick else "benchmarks/results/env_speed")))
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    rows = []
    for label, backend in (("no depth", None), ("ray-cast depth", "raycast"), ("TinyRenderer depth", "tiny")):
        rate = single_env(args.course, backend, steps, args.image_size)
        rows.append({"setting": f"single env, {label}", "steps_per_s": rate})
        print(f"{rows[-1]['setting']:<40} {rate:8.1f} steps/s", flush=True)
    for parallel in (False, True):
        rate = batched_envs(args.course, args.workers, steps * args.workers, args.image_size, parallel)
        name = "ParallelEnv" if parallel else "SerialEnv"
        rows.append({"setting": f"TorchRL {name} x{args.workers}, ray-cast depth", "steps_per_s": rate})
        print(f"{rows[-1]['setting']:<40} {rate:8.1f} steps/s", flush=True)
    base = next(r["steps_per_s"] for r in rows if "TinyRenderer" in r["setting"])
    for r in rows:
        r["vs_tiny_renderer"] = r["steps_per_s"] / base
    cmd = "python benchmarks/env_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"# A1 env throughput ({args.course} course, {args.image_size}x{args.image_size} depth, "
             f"{os.cpu_count()} CPUs)", "", f"Command: `{cmd.strip()}`", "",
             "| setting | steps/s | vs TinyRenderer |", "|---|---:|---:|"]
    lines += [f"| {r['setting']} | {r['steps_per_s']:.1f} | {r['vs_tiny_renderer']:.2f}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"ray-cast / TinyRenderer (single env, one core): "
          f"{rows[1]['steps_per_s'] / base:.2f}x; wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
