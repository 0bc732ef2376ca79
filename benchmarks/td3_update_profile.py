"""Where a TD3 drone update's GPU time goes: eager and CUDA-graphed update times and a kernel table.

    python benchmarks/td3_update_profile.py --config configs/drone/gpu_forest.yaml [key=value ...]
    python benchmarks/td3_update_profile.py --config configs/drone/seed_vmamba.yaml --out DIR

Builds the agent's nets for the config (agents.drone.build), fills a replay with random-action steps of
the agent's own env, then on the config's device:
  acting      the actor on one K-step window at batch env.num_envs (ms, eager, median of 50)
  eager       agents.vmamba_td3.td3_update, mean of --updates after 3 warm-ups (ms)
  graphed     agents.drone.graphed_update.GraphedTD3Update (what train.cuda_graph=true runs), mean of --updates (ms)
  kernels     torch.profiler over --profile eager updates: CUDA kernels per update and the top rows by
              GPU time (name, calls per update, GPU ms per update)
Prints everything and writes td3_update_profile_<config stem>.md/.json under --out (the command is in the file).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.td3_throughput import acting_ms, env_stack_and_replay, update_ms  # noqa: E402


def timed(fn, repeats: int, sync) -> float:
    for _ in range(3):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return 1e3 * (time.perf_counter() - t0) / repeats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", default="configs/drone/gpu_forest.yaml")
    ap.add_argument("--updates", type=int, default=20, help="timed updates per row")
    ap.add_argument("--profile", type=int, default=4, help="profiled eager updates")
    ap.add_argument("--top", type=int, default=30, help="kernel rows printed")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-tf32", action="store_true", help="float32 matmuls without TF32 (the old default)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from agents.drone.build import build_nets, make_env
    from agents.drone.config import Config
    from agents.runtime.config import load_config
    from agents.drone.graphed_update import GraphedTD3Update
    from agents.vmamba_td3 import make_optims, td3_step, td3_update
    from agents.algos.cuda_graph_train import make_capturable
    from agents.runtime.cli import use_tf32_matmuls

    cfg = load_config(Config, args.config, args.overrides)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    tf32 = use_tf32_matmuls(device) if not args.no_tf32 else False   # what training does on CUDA
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows: dict = {"command": "python benchmarks/td3_update_profile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "machine": f"{platform.node()} {os.cpu_count()} cpus" +
                             (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
                  "torch": torch.__version__, "load_average_start": os.getloadavg(),
                  "batch": f"{cfg.replay.batch_size} x K={cfg.replay.seq_len}", "temporal": cfg.model.temporal, "tf32": tf32}
    fill = max(cfg.replay.batch_size * cfg.replay.seq_len * 2, 1000)
    _, replay = env_stack_and_replay(cfg, 1.0, fill)
    env = make_env(cfg, seed=0)
    nets = build_nets(cfg, env).to(device)
    env.close()
    rows["parameters"] = nets.num_trainable()
    rows["acting_ms"] = acting_ms(cfg, nets, replay, device, repeats=50)
    print(f"{args.config}: {rows['parameters']:,} parameters, acting {rows['acting_ms']:.2f} ms", flush=True)

    optims = make_optims(cfg, nets)   # kept for the profiled and graphed updates after these
    rows["eager_ms"] = update_ms(cfg, nets, replay, device, args.updates, optims)
    step = iter(range(1, 10 ** 9))    # update indices (their parity picks the actor's turns)
    print(f"eager update: {rows['eager_ms']:.1f} ms", flush=True)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.profile):
            td3_update(cfg, nets, optims, replay.sample(), next(step), device)
        sync()
    events = prof.key_averages()
    if device.type == "cuda":   # kernels: device-side events
        kern = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        key = "device_time_total" if hasattr(kern[0], "device_time_total") else "cuda_time_total"
    else:
        kern = [e for e in events if e.self_cpu_time_total > 0]
        key = "self_cpu_time_total"
    total_ms = sum(getattr(e, key) for e in kern) / 1e3 / args.profile
    calls = sum(e.count for e in kern) / args.profile
    rows["kernels_per_update"], rows["kernel_ms_per_update"] = calls, total_ms
    table = sorted(kern, key=lambda e: -getattr(e, key))[:args.top]
    rows["top"] = [{"name": e.key[:120], "calls": e.count / args.profile,
                    "ms": getattr(e, key) / 1e3 / args.profile} for e in table]
    print(f"kernels per update: {calls:.0f}, their GPU time {total_ms:.1f} ms", flush=True)

    if device.type == "cuda":
        for o in optims.values():
            make_capturable(o, device)
        try:
            graphed = GraphedTD3Update(cfg, nets, optims, replay.sample(), device, td3_step)
            rows["graphed_ms"] = timed(lambda: graphed(cfg, nets, optims, replay.sample(), next(step), device),
                                       args.updates, sync)
            print(f"graphed update: {rows['graphed_ms']:.1f} ms", flush=True)
        except Exception as exc:   # a cuDNN GRU: reported, the table above still stands
            rows["graphed_ms"] = None
            rows["graphed_error"] = f"{type(exc).__name__}: {exc}"[:300]
            print(f"graphed update: not captured ({rows['graphed_error']})", flush=True)
    rows["load_average_end"] = os.getloadavg()

    stem = Path(args.config).stem + ("_fp32" if args.no_tf32 else "") + ("_" + "_".join(a.replace("=", "-").replace(".", "-") for a in args.overrides)
                                     if args.overrides else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"td3_update_profile_{stem}.json").write_text(json.dumps(rows, indent=1))
    g = rows.get("graphed_ms")
    lines = [f"# TD3 update profile: {args.config} {' '.join(args.overrides)}", "",
             f"Command: `{rows['command']}`", "",
             f"Machine: {rows['machine']}; torch {rows['torch']}; load average {rows['load_average_start'][0]:.2f}.", "",
             f"{rows['parameters']:,} trainable parameters, batch {rows['batch']}, temporal {rows['temporal']}, "
             f"TF32 {'on' if tf32 else 'off'}: "
             f"acting {rows['acting_ms']:.2f} ms, eager update {rows['eager_ms']:.1f} ms, graphed "
             f"{'-' if g is None else f'{g:.1f} ms'}; {calls:.0f} kernels per update, {total_ms:.1f} ms of kernel time.", "",
             "| kernel | calls / update | ms / update |", "|---|---:|---:|"]
    lines += [f"| `{r['name'][:90]}` | {r['calls']:.0f} | {r['ms']:.2f} |" for r in rows["top"]]
    (out / f"td3_update_profile_{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
