"""Kill -9 loop for the TD3 agent (issue 18): real SIGKILLs at random moments of a tiny pendulum run,
then the same run uninterrupted, compared bit for bit.

    python benchmarks/fault_injection.py                      # ~3-5 minutes on 2 cores
    python benchmarks/fault_injection.py --kills 30 --seed 1 --out benchmarks/results/fault_injection.md
    python benchmarks/fault_injection.py --kills 5 --ab-ppo ppo_memory ppo_locomamba   # + the PPO A/B

Loop: start ``agents/vmamba_td3.py`` (first as a new run, then ``--resume RUN``), SIGKILL it after a
random delay, and check the run directory as a user would find it: every visible checkpoint
(``checkpoints/ckpt_*.pt``) loads with ``weights_only=True``; the newest one names a replay folder whose
manifest and columns match it (sha256 and sizes) and hold exactly the steps of that checkpoint; no
pickle file anywhere. ``MAMBAZOO_FAULT_PAUSE`` makes each stage boundary of a save (mid replay
column, before its manifest, before the checkpoint, before pruning) sleep, so that a fair share of
the kills land inside a save. When the kill budget is spent (or the run finished) the last resume runs
to the end, and its final checkpoint and replay are compared with an uninterrupted run of the same
config: every tensor and number equal (A/B).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY = ["--config", "configs/pendulum/td3_mamba.yaml", "replay.batch_size=8", "replay.seq_len=4",
        "replay.size=4000", "train.learning_starts=100", "train.frames_per_batch=50", "train.updates_per_step=0.2",
        "train.eval_episodes=1", "model.memory_hidden=8", "model.hidden_dim=16", "train.checkpoint_every_frames=50",
        "logger=csv"]


# A/B of the PPO agents: tiny configs (their tests'), 10 iterations of 64 frames, a checkpoint each
PPO_TINY = {
    "ppo_memory": ["env.num_envs=4", "model.embed=8", "model.hidden=8", "model.head_hidden=8", "ppo.slice_len=8",
                   "ppo.minibatch_size=32", "ppo.epochs=2", "train.frames_per_batch=64", "train.checkpoint_every_iters=1",
                   "train.eval_episodes=1", "threads=1", "env.task=repeat_first", "model.memory=mamba1"],
    "ppo_locomamba": ["env.course=flat", "env.num_envs=1", "env.horizon=40", "env.num_obstacles=0",
                      "model.hidden_shapes=[16]", "model.visual_dim=16", "model.mamba_params=[[16,4,4,2]]",
                      "model.transformer_params=[[2,32]]", "model.append_hidden_shapes=[16]",
                      "model.memory_hidden=16", "ppo.minibatch_size=32", "ppo.slice_len=16", "ppo.epochs=2",
                      "train.frames_per_batch=64", "train.checkpoint_every_iters=1", "train.eval_episodes=1"],
}
WALL_CLOCK = ("elapsed_s", "wall_s")


def ab_ppo(agent: str, root: Path, env: dict, rng: random.Random, frames: int = 640) -> dict:
    """Uninterrupted run A vs run B SIGKILLed at a random moment after its first checkpoint, then
    resumed (once more if the kill came before a second checkpoint). Entries that hold wall-clock
    times are not compared."""
    import torch

    from agents.runtime.run_dir import RunDir, differing_entries, flatten_state

    def start(args):
        return subprocess.Popen([sys.executable, str(REPO / "agents" / f"{agent}.py"), *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    base = [*PPO_TINY[agent], f"train.total_frames={frames}", "logger=csv"]
    a = start([*base, f"run_root={root / agent / 'a'}", "name=straight"])
    b = start([*base, f"run_root={root / agent / 'b'}", "name=killed"])
    killed = False
    while b.poll() is None:
        found = list((root / agent / "b" / agent).glob("killed-*")) if (root / agent / "b" / agent).is_dir() else []
        if found and RunDir(found[0]).latest_checkpoint():
            time.sleep(rng.uniform(0.0, 0.5))
            if b.poll() is None:
                b.send_signal(signal.SIGKILL)
                killed = True
            break
        time.sleep(0.05)
    b.wait()
    rc_a = a.wait()
    (run_b,) = (root / agent / "b" / agent).glob("killed-*")
    killed_at = RunDir.load_checkpoint(RunDir(run_b).latest_checkpoint())["frames"]
    rc_b = start(["--resume", str(run_b)]).wait()
    (run_a,) = (root / agent / "a" / agent).glob("straight-*")
    sa = RunDir.load_checkpoint(RunDir(run_a).latest_checkpoint())
    sb = RunDir.load_checkpoint(RunDir(run_b).latest_checkpoint())
    fa, fb = flatten_state(sa), flatten_state(sb)
    keys = [k for k in fa if k not in ("/config/name", "/config/run_root") and not any(w in k for w in WALL_CLOCK)]
    differ = differing_entries(sa, sb, skip=set(fa) - set(keys))
    tensors = [k for k in keys if torch.is_tensor(fa[k])]
    max_abs = max((float((fa[k].double() - fb[k].double()).abs().max()) for k in differ
                   if torch.is_tensor(fa[k]) and k in fb and fa[k].is_floating_point()
                   and fa[k].shape == fb[k].shape), default=0.0)
    return {"agent": agent, "rc": (rc_a, rc_b), "killed": killed, "resumed_from": killed_at,
            "frames": (sa["frames"], sb["frames"]), "entries": len(keys), "tensors": len(tensors),
            "differ": differ, "tensors_differ": sum(1 for k in differ if k in tensors), "max_abs": max_abs}


def check_run(run: Path) -> dict:
    """What a user finds after a kill: counts of checkpoints that load / do not, and whether the
    newest one's replay matches it."""
    from agents.runtime import replay_io
    from agents.runtime.config import from_dict
    from agents.runtime.run_dir import RunDir, RunDirError
    from agents.drone.config import Config
    from agents.drone.build import make_replay

    rd = RunDir(run)
    out = {"visible": 0, "unloadable": 0, "replay_ok": None, "pickles": 0, "interrupted_save": False}
    files = rd._checkpoint_files()
    newest = None
    for _, ckpt in files:
        out["visible"] += 1
        try:
            newest = RunDir.load_checkpoint(ckpt)
        except RunDirError:
            out["unloadable"] += 1
    out["pickles"] = sum(1 for p in run.rglob("*") if p.suffix in replay_io.PICKLE_SUFFIXES)
    names = {replay_io.folder_name(s) for s, _ in files}
    replay_root = run / "replay"
    leftovers = [p for p in replay_root.iterdir() if p.name not in names] if replay_root.is_dir() else []
    out["interrupted_save"] = bool(leftovers) or any(rd.checkpoints.glob(".*.tmp"))
    if newest is not None:
        replay = make_replay(from_dict(Config, newest["config"]))
        try:
            rows = replay_io.load(replay, replay_root, newest["replay"])
            out["replay_ok"] = rows == min(int(newest["frames"]), replay.storage.max_size)
        except RunDirError as err:
            out["replay_ok"] = False
            out["replay_error"] = str(err)
    return out


def launch(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "agents" / "vmamba_td3.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to send")
    parser.add_argument("--frames", type=int, default=1500, help="train.total_frames of the run")
    parser.add_argument("--max-delay", type=float, default=10.0, help="a kill comes 0.5..max-delay s after a launch")
    parser.add_argument("--pause", type=float, default=0.15, help="MAMBAZOO_FAULT_PAUSE: sleep at save stages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the summary (markdown) here too")
    parser.add_argument("--keep", action="store_true", help="keep the runs' temp folder (printed) for a look")
    parser.add_argument("--ab-ppo", nargs="*", default=[], choices=sorted(PPO_TINY), metavar="AGENT",
                        help="also the kill-and-resume A/B of these PPO agents (ppo_memory, ppo_locomamba)")
    args = parser.parse_args(argv)
    import logging

    import torch

    from agents.runtime.run_dir import RunDir, differing_entries, flatten_state

    logging.getLogger("torchrl").setLevel(logging.WARNING)

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="mambazoo_fault_"))
    env = {**os.environ, "MAMBAZOO_FAULT_PAUSE": str(args.pause), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cfg = [*TINY, f"train.total_frames={args.frames}", f"run_root={root / 'b'}", "name=killed"]
    counts = {"kills": 0, "kills_in_save": 0, "visible_checkpoints": 0, "unloadable": 0, "replay_mismatch": 0,
              "pickles": 0, "launches": 0, "exit_nonzero": 0}
    run: Path | None = None
    t0 = time.time()
    finished = False
    # the first launch is not killed before its first checkpoint: only then is there a run to resume
    proc = launch(cfg, env)
    counts["launches"] += 1
    while run is None:
        if proc.poll() is not None:
            print(f"first launch exited {proc.returncode}: {proc.stderr.read()[-3000:]}", file=sys.stderr)
            return 1
        found = sorted((root / "b" / "vmamba_td3").glob("killed-*")) if (root / "b" / "vmamba_td3").is_dir() else []
        if found and RunDir(found[0]).latest_checkpoint():
            run = found[0]
        time.sleep(0.05)
    while counts["kills"] < args.kills and not finished:
        if proc is None:
            proc = launch(["--resume", str(run)], env)
            counts["launches"] += 1
        delay = rng.uniform(0.5, args.max_delay)
        try:
            rc = proc.wait(timeout=delay)
            finished = rc == 0
            if rc != 0:
                counts["exit_nonzero"] += 1
                print(f"exit {rc}: {proc.stderr.read()[-2000:]}", file=sys.stderr)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            counts["kills"] += 1
        proc.stderr.close()
        proc = None
        state = check_run(run)
        counts["visible_checkpoints"] += state["visible"]
        counts["unloadable"] += state["unloadable"]
        counts["replay_mismatch"] += int(state["replay_ok"] is False)
        counts["pickles"] += state["pickles"]
        counts["kills_in_save"] += int(state["interrupted_save"])
        if state["replay_ok"] is False:
            print(f"replay mismatch after kill {counts['kills']}: {state.get('replay_error')}", file=sys.stderr)
    # the last resume runs to the end (with no pause: nothing is killed now)
    env_quiet = {k: v for k, v in env.items() if k != "MAMBAZOO_FAULT_PAUSE"}
    if not finished:
        proc = launch(["--resume", str(run)], env_quiet)
        rc = proc.wait()
        err = proc.stderr.read()
        proc.stderr.close()
        if rc != 0:
            print(f"final resume exited {rc}: {err[-3000:]}", file=sys.stderr)
            return 1
    killed_s = time.time() - t0
    proc = launch([*cfg[:-2], f"run_root={root / 'a'}", "name=straight"], env_quiet)
    rc = proc.wait()
    proc.stderr.close()
    (a,) = (root / "a" / "vmamba_td3").glob("straight-*")
    sa = RunDir.load_checkpoint(RunDir(a).latest_checkpoint())
    sb = RunDir.load_checkpoint(RunDir(run).latest_checkpoint())
    fa = flatten_state(sa)
    tensors = [k for k in fa if torch.is_tensor(fa[k])]
    skip = {"/config/name", "/config/run_root"}
    differ = differing_entries(sa, sb, skip=skip)
    same_replay = sa["replay"]["manifest_sha256"] == sb["replay"]["manifest_sha256"]
    ab_failures: list[str] = []
    lines = [
        f"kill -9 loop, vmamba_td3 pendulum tiny config, {args.frames} frames, checkpoint every 50 "
        f"(seed {args.seed}, save-stage pause {args.pause} s, {killed_s:.0f} s):",
        f"  launches {counts['launches']}, SIGKILLs {counts['kills']} ({counts['kills_in_save']} left an "
        f"interrupted save behind), non-zero exits {counts['exit_nonzero']}",
        f"  checkpoints seen after kills {counts['visible_checkpoints']}, unloadable {counts['unloadable']}, "
        f"newest checkpoint + replay mismatched {counts['replay_mismatch']}, pickle files {counts['pickles']}",
        f"A/B: killed-and-resumed vs uninterrupted (exit {rc}), final checkpoint at frame {sb['frames']} vs "
        f"{sa['frames']}: {len(differ)} of {len(fa) - len(skip)} entries differ ({len(tensors)} tensors); "
        f"replay manifest {'identical' if same_replay else 'DIFFERENT'}",
    ]
    for agent in args.ab_ppo:
        r = ab_ppo(agent, root, env_quiet, rng)
        lines.append(f"A/B {agent}: uninterrupted vs SIGKILLed after its first checkpoint "
                     f"({'killed' if r['killed'] else 'finished before the kill'}, resumed from frame "
                     f"{r['resumed_from']}; exits {r['rc']}), final frames {r['frames']}: {len(r['differ'])} of "
                     f"{r['entries']} entries differ ({r['tensors_differ']} of {r['tensors']} tensors, max abs "
                     f"{r['max_abs']:.3g}; wall-clock entries not compared)")
        ab_failures.extend(f"{agent}:{k}" for k in r["differ"][:5])
        if r["rc"] != (0, 0) or r["frames"][0] != r["frames"][1]:
            ab_failures.append(f"{agent}: exits {r['rc']}, frames {r['frames']}")
    ok = (not ab_failures and counts["unloadable"] == 0 and counts["replay_mismatch"] == 0 and counts["pickles"] == 0 and not differ
          and same_replay and sa["frames"] == sb["frames"] and counts["exit_nonzero"] == 0)
    lines.append("result: " + ("OK: nothing lost, nothing mismatched, resume bit-identical" if ok else
                               f"FAILED {(differ + ab_failures)[:10]}"))
    text = "\n".join(lines)
    print(text)
    if args.keep:
        print(f"runs kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    if args.out:
        cmd = "python benchmarks/fault_injection.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(f"# Fault injection (issue 18)\n\n```\n{cmd}\n```\n\n```\n{text}\n```\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
