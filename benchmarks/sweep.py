"""Sweep runner: algorithm x memory kind x env x model size x seed, in a local process pool or on Ray.

    python benchmarks/sweep.py configs/sweeps/pomdp_ppo.yaml --workers 2    # -> runs/sweeps/pomdp_ppo/results
    python benchmarks/sweep.py configs/sweeps/pomdp_ppo.yaml --ray                       # local Ray instance
    python benchmarks/sweep.py configs/sweeps/pomdp_ppo.yaml --ray --ray-address auto   # a running cluster
    python benchmarks/report.py runs/sweeps/pomdp_ppo/results
    python benchmarks/sweep.py configs/sweeps/pomdp_ppo.yaml --committed --list   # the committed results
    python benchmarks/report.py benchmarks/results/sweep_pomdp                      # ... re-reported

Sweep file (YAML)::

    name: pomdp_ppo
    results: benchmarks/results/sweep_pomdp      # the committed JSON rows + curves (--committed)
    run_root: runs/sweeps/pomdp_ppo              # the agents' run directories; <run_root>/results:
                                                 # this machine's rows + curves (the default; --out DIR)
    seeds: [0, 1, 2]
    overrides: [threads=1]                       # every run
    algorithms:
      ppo:                                       # agents/ppo_memory.py
        kinds: [mamba2, gru, none]
        sizes: {h32: [model.embed=32, model.hidden=32]}
        overrides: [logger=none]
        kind_overrides: {mamba2: ["model.options={d_state: 16, headdim: 16}"]}
      sb3_recurrent_ppo:                         # benchmarks/sb3_baseline.py (external baseline)
        kinds: [lstm]
    envs:                                        # an env runs the algorithms it names
      repeat_previous:
        ppo: {config: configs/pomdp/repeat_previous.yaml, overrides: [train.total_frames=30000]}
      stateless_cartpole_500:
        ppo: {config: configs/pomdp/stateless_cartpole_500.yaml}
        sb3_recurrent_ppo: {overrides: [train.total_frames=100000]}

Overrides apply in this order (later wins): the env's config file, sweep overrides, algorithm
overrides, size, kind_overrides, the env's overrides, then the run's kind, seed, name, run_root.
Every run writes ``<results>/runs/<run_id>.json`` (atomically: temp file + rename) and
``<results>/curves/<run_id>.csv``; a run whose JSON row says status "ok" is skipped on restart,
failed runs (status "error", with the message) and runs a SIGTERM or Ctrl-C stopped (status "stopped", no
curve; with ``--workers 0`` the sweep ends there) are run again from the start. The default results
folder is ``<run_root>/results`` (under runs/, not committed), so a fresh clone runs the whole sweep
instead of finding the committed rows finished; ``--committed`` reads and extends the sweep file's
``results``.
Runs of an algorithm whose optional package is missing (``REQUIRES``: sb3-contrib for the sb3
baseline) are skipped with one line, not failed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.runtime.atomic_io import write_text_atomic
from agents.runtime.config import ConfigError, read_config_file
from agents.runtime.run_dir import exclusive_lock

REPO = Path(__file__).resolve().parents[1]
SWEEP_KEYS = {"name", "results", "run_root", "seeds", "overrides", "algorithms", "envs"}
ALGO_KEYS = {"kinds", "sizes", "overrides", "kind_overrides"}


# ------------------------------------------------------------------------------ runners
def run_ppo(spec: dict) -> dict:
    """agents/ppo_memory.py's train() on the run's resolved config."""
    from agents import ppo_memory
    from agents.runtime.config import load_config
    from agents.pomdp.build import Config

    cfg = load_config(Config, spec["config"], spec["overrides"])
    result = ppo_memory.train(cfg, verbose=False)
    env = cfg.env
    return {**result, "task": env.task, "level": env.level, "task_options": env.options}


def run_sb3(spec: dict) -> dict:
    from benchmarks import sb3_baseline

    return sb3_baseline.run(spec["overrides"])


ALGORITHMS = {"ppo": run_ppo, "sb3_recurrent_ppo": run_sb3}
# optional packages an algorithm needs: (module, the install command); runs without it are skipped
REQUIRES = {"sb3_recurrent_ppo": ("sb3_contrib", "pip install -e '.[sb3]'")}


def missing_requirements(specs: list[dict]) -> dict:
    """{algorithm: (module, install)} for the algorithms of ``specs`` whose optional package is absent."""
    return {a: REQUIRES[a] for a in sorted({s["algorithm"] for s in specs})
            if a in REQUIRES and importlib.util.find_spec(REQUIRES[a][0]) is None}


# ------------------------------------------------------------------------------ the sweep
def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"sweep key '{where}': expected a list, got {value!r}")
    return [str(v) for v in value]


def load_sweep(path) -> dict:
    sweep = read_config_file(path)
    unknown = set(sweep) - SWEEP_KEYS
    if unknown:
        raise ConfigError(f"unknown sweep key(s) {sorted(unknown)} (allowed: {sorted(SWEEP_KEYS)})")
    for key in ("algorithms", "envs"):
        if not isinstance(sweep.get(key), dict) or not sweep[key]:
            raise ConfigError(f"sweep key '{key}': expected a non-empty mapping")
    for name, algo in sweep["algorithms"].items():
        if name not in ALGORITHMS:
            raise ConfigError(f"sweep key 'algorithms.{name}': unknown algorithm (allowed: {sorted(ALGORITHMS)})")
        bad = set(algo or {}) - ALGO_KEYS
        if bad:
            raise ConfigError(f"sweep key 'algorithms.{name}': unknown key(s) {sorted(bad)} (allowed: {sorted(ALGO_KEYS)})")
    for env, per_algo in sweep["envs"].items():
        for algo in per_algo or {}:
            if algo not in sweep["algorithms"]:
                raise ConfigError(f"sweep key 'envs.{env}.{algo}': not an algorithm of this sweep "
                                  f"({sorted(sweep['algorithms'])})")
    return sweep


def expand(sweep: dict) -> list[dict]:
    """Every run of the sweep as a plain dict (picklable, JSON-able)."""
    specs = []
    seeds = sweep.get("seeds", [0])
    run_root = str(sweep.get("run_root", f"runs/sweeps/{sweep.get('name', 'sweep')}"))
    for env_name, per_algo in sweep["envs"].items():
        for algo_name, env_entry in (per_algo or {}).items():
            env_entry = env_entry or {}
            algo = sweep["algorithms"][algo_name] or {}
            kinds = _list(algo.get("kinds", ["default"]), f"algorithms.{algo_name}.kinds")
            sizes = algo.get("sizes") or {"default": []}
            config = env_entry.get("config")
            if config is not None and not Path(config).is_absolute() and not Path(config).exists():
                config = str(REPO / config)
            for kind in kinds:
                for size, size_overrides in sizes.items():
                    for seed in seeds:
                        run_id = f"{algo_name}__{env_name}__{kind}__{size}__s{seed}"
                        overrides = [
                            *_list(sweep.get("overrides"), "overrides"),
                            *_list(algo.get("overrides"), f"algorithms.{algo_name}.overrides"),
                            *_list(size_overrides, f"algorithms.{algo_name}.sizes.{size}"),
                            *_list((algo.get("kind_overrides") or {}).get(kind), f"kind_overrides.{kind}"),
                            *_list(env_entry.get("overrides"), f"envs.{env_name}.{algo_name}.overrides"),
                            f"seed={seed}", f"name={run_id}"]
                        if algo_name == "ppo":
                            overrides += [f"model.memory={kind}", f"run_root={run_root}"]
                        specs.append({"run_id": run_id, "algorithm": algo_name, "env": env_name, "kind": kind,
                                      "size": size, "seed": int(seed), "config": config, "overrides": overrides})
    ids = [s["run_id"] for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError("sweep: two runs share a run id (duplicate env, kind, size or seed names)")
    return specs


def row_path(results: Path, run_id: str) -> Path:
    return Path(results) / "runs" / f"{run_id}.json"


def is_finished(results: Path, run_id: str) -> bool:
    path = row_path(results, run_id)
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def execute(spec: dict, results: str) -> dict:
    """Run one spec; write its curve CSV and then its JSON row (the row marks it finished)."""
    if str(REPO) not in sys.path:      # Ray workers on other machines: the repo must be importable
        sys.path.insert(0, str(REPO))
    results = Path(results)
    row = {k: spec[k] for k in ("run_id", "algorithm", "env", "kind", "size", "seed")}
    # the machine's load next to the timings: wall-clock figures from a shared CPU need it
    row.update(overrides=spec["overrides"], config=spec["config"], host=socket.gethostname(),
               load_avg_start=os.getloadavg()[0])
    start = time.time()
    try:
        result = ALGORITHMS[spec["algorithm"]](spec)
        from agents.ppo_memory import write_curve

        curve = result.pop("curve")
        if result.get("stopped"):       # a SIGTERM ended it early: not a finished run, no curve of one
            row.update(result, status="stopped", error=f"stopped by a signal at frame {result['frames']}")
        else:
            write_curve(results / "curves" / f"{spec['run_id']}.csv", curve)     # atomic
            row.update(result, status="ok")
    except Exception as err:    # noqa: BLE001 -- a failed run is recorded and the sweep goes on
        row.update(status="error", error=f"{type(err).__name__}: {err}",
                   traceback=traceback.format_exc()[-3000:])
    row["total_s"] = round(time.time() - start, 3)
    row["load_avg_end"] = os.getloadavg()[0]
    row["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_text_atomic(row_path(results, spec["run_id"]), json.dumps(row, indent=1, default=str) + "\n")
    return row


def _describe(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['run_id']}: FAILED {row['error']}"
    reach = row.get("steps_to_threshold")
    return (f"{row['run_id']}: return {row['final_return']:.3f} (best {row['best_return']:.3f}), "
            f"threshold at {reach if reach is not None else '-'} steps, {row['total_s']:.0f} s")


LOCK, WORKERS_LOCK = ".sweep.lock", ".sweep_workers.lock"


class SweepLocked(RuntimeError):
    """Another sweep (or the workers of one killed a moment ago) still uses the results folder."""


def lock_results(results: Path, wait_s: float = 15.0):
    """Exclusive ``results/.sweep.lock`` (fcntl.flock; the kernel drops it when the holder dies,
    kill -9 included), then wait up to ``wait_s`` for pool workers of a killed sweep to notice and
    exit (each holds ``.sweep_workers.lock`` shared while it lives). Returns the open lock file."""
    import fcntl

    f = exclusive_lock(results / LOCK, lambda holder: SweepLocked(
        f"results folder {results} is in use by another sweep (pid {holder})"))
    with open(results / WORKERS_LOCK, "a+") as w:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(w.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(w.fileno(), fcntl.LOCK_UN)
                break
            except OSError:
                if time.monotonic() > deadline:
                    f.close()
                    raise SweepLocked(f"results folder {results}: workers of an earlier sweep are still "
                                      "running") from None
                time.sleep(0.2)
    return f


def _worker_init(parent: int, results: str) -> None:
    """Pool worker: hold the workers' lock shared, and exit as soon as the sweep process is gone
    (kill -9 of the sweep reparents its workers instead of ending them)."""
    import fcntl
    import threading

    lock = open(Path(results) / WORKERS_LOCK, "a+")
    fcntl.flock(lock.fileno(), fcntl.LOCK_SH)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="sweep-parent-watch").start()
    _worker_init.lock = lock


def run_local(specs: list[dict], results: Path, workers: int) -> list[dict]:
    """workers 0: one after the other in this process; else a spawn-started process pool."""
    rows = []
    if workers == 0:
        for i, spec in enumerate(specs):
            rows.append(execute(spec, str(results)))
            print(f"[{i + 1}/{len(specs)}] {_describe(rows[-1])}", flush=True)
            if rows[-1]["status"] == "stopped":     # the signal was this process's: the sweep stops too
                break
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: fresh interpreters, no torch/OpenMP state forked from this process
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(os.getpid(), str(results))) as pool:
        futures = [pool.submit(execute, spec, str(results)) for spec in specs]
        for i, fut in enumerate(as_completed(futures)):
            rows.append(fut.result())
            print(f"[{i + 1}/{len(specs)}] {_describe(rows[-1])}", flush=True)
    return rows


def run_ray(specs: list[dict], results: Path, address: str | None, workers: int) -> list[dict]:
    """The same runs as Ray tasks (one CPU each). Uses an already initialised Ray, else connects to
    ``address`` (e.g. "auto" or "ray://head:10001"), else starts a local instance with ``workers``
    CPUs. Results are written by the tasks: on a cluster, point --out at a shared filesystem."""
    import ray

    if not ray.is_initialized():
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}}
        if address:
            ray.init(address=address, runtime_env=env)
        else:
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, runtime_env=env)
    task = ray.remote(num_cpus=1, max_retries=0)(execute)
    pending = {task.remote(spec, str(results.resolve())): spec for spec in specs}
    rows = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            pending.pop(ref)
            rows.append(ray.get(ref))
            print(f"[{len(rows)}/{len(specs)}] {_describe(rows[-1])}", flush=True)
    return rows


def results_folder(sweep: dict, committed: bool = False) -> Path:
    """The sweep file's ``results`` (the committed figures) with ``committed``, else ``<run_root>/results``."""
    name = sweep.get("name", "sweep")
    if committed:
        return Path(sweep.get("results", f"benchmarks/results/{name}"))
    return Path(sweep.get("run_root", f"runs/sweeps/{name}")) / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep YAML file")
    parser.add_argument("--out", help="results folder (default: <run_root>/results, a folder of this machine's own)")
    parser.add_argument("--committed", action="store_true",
                        help="use the sweep file's 'results' folder (the committed results): list, extend or "
                             "re-run them there")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (0: in this process)")
    parser.add_argument("--ray", action="store_true", help="run on Ray instead of a local process pool")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--only", nargs="*", default=(), help="run only run ids containing all these substrings")
    parser.add_argument("--list", action="store_true", help="print the runs (done/todo) and exit")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        specs = [s for s in expand(sweep) if all(o in s["run_id"] for o in args.only)]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out and args.committed:
        print("error: --out and --committed both name the results folder: give one", file=sys.stderr)
        return 2
    results = Path(args.out) if args.out else results_folder(sweep, args.committed)
    results.mkdir(parents=True, exist_ok=True)
    done = [s for s in specs if is_finished(results, s["run_id"])]
    todo = [s for s in specs if not is_finished(results, s["run_id"])]
    missing = missing_requirements(todo)
    skipped = [s for s in todo if s["algorithm"] in missing]
    todo = [s for s in todo if s["algorithm"] not in missing]
    # external baselines are the longest runs: start them first so they do not straggle at the end
    todo.sort(key=lambda s: s["algorithm"] == "ppo")
    print(f"sweep {sweep.get('name', args.sweep)}: {len(specs)} runs, {len(done)} finished (skipped), "
          f"{len(todo)} to run -> {results}")
    for algo, (module, install) in missing.items():
        n = sum(s["algorithm"] == algo for s in skipped)
        print(f"skipping {n} {algo} run(s): the optional package {module} is not installed ({install})")
    if args.list:
        for s in specs:
            print(("done " if s in done else "skip " if s in skipped else "todo ") + s["run_id"])
        return 0
    if args.ray and importlib.util.find_spec("ray") is None:
        print("error: --ray needs ray: pip install -e '.[ray]'", file=sys.stderr)
        return 2
    try:
        lock = lock_results(results)
    except SweepLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        # re-read after taking the lock: a sweep that held it may have finished runs meanwhile
        todo = [s for s in todo if not is_finished(results, s["run_id"])]
        rows = (run_ray(todo, results, args.ray_address, args.workers) if args.ray
                else run_local(todo, results, args.workers))
    finally:
        lock.close()
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"finished {len(rows) - len(failed)} runs, {len(failed)} failed; report: "
          f"python benchmarks/report.py {results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
