"""Parameters and batch-1 CPU latency of the TD3 actor (what one control step costs the drone).

    python benchmarks/td3_actor_latency.py                       # seed-size networks + the quick CPU config
    python benchmarks/td3_actor_latency.py --out benchmarks/results/td3_actor_latency.md

Builds the networks from each config (no env stepping), then times the actor's forward on one
K-step window: warm-up, then the median of --repeats calls, for 1 and 2 torch threads. Load
from other processes inflates these figures: the 1-min load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from agents.runtime.config import load_config  # noqa: E402
from agents.drone.config import Config  # noqa: E402
from agents.drone.build import TD3Nets  # noqa: E402
from networks.params import count_parameters  # noqa: E402

CONFIGS = {"seed size (default config)": None, "quick_vmamba": "configs/drone/quick_vmamba.yaml",
           "quick_framestack": "configs/drone/quick_framestack.yaml"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = p.parse_args(argv)
    rows = ["| config | actor params | critic params | trainable total | batch-1 actor ms, 1 thread | 2 threads |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, path in CONFIGS.items():
        cfg = load_config(Config, path, [])
        nets = TD3Nets(cfg, obs_dim=11, action_dim=3).eval()
        K, S = cfg.replay.seq_len, cfg.env.image_size
        depth, state = torch.rand(1, K, 1, S, S), torch.randn(1, K, 11)
        ms = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                for _ in range(5):
                    nets.actor(depth, state)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    nets.actor(depth, state)
                    times.append((time.perf_counter() - t0) * 1e3)
            ms.append(statistics.median(times))
        a, c = count_parameters(nets.actor), count_parameters(nets.critic)
        rows.append(f"| {name} | {a:,} | {c:,} | {a + c:,} | {ms[0]:.1f} | {ms[1]:.1f} |")
    load = os.getloadavg()[0]
    text = (f"Command: `python benchmarks/td3_actor_latency.py {' '.join(argv or sys.argv[1:])}`\n\n"
            f"{os.cpu_count()} CPUs, torch {torch.__version__}, 1-min load average {load:.2f} at the end\n\n"
            + "\n".join(rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
