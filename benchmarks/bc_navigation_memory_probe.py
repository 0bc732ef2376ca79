"""Does a navigation policy use memory? A counterfactual-cue probe at the first junction.

    python benchmarks/bc_navigation_memory_probe.py RUN_DIR [RUN_DIR ...] --maps 40 [--out FILE.md]

For each of ``--maps`` unseen map seeds the expert drives the map once per cue. By construction
(envs/navigation/maps.py, envs/navigation/expert.py) those trajectories are the same, bit for bit, until the
first junction; the camera images differ only where the cue colour is in view. At the first step
where the expert's actions differ (the turn), each policy is run over each cue's image history up
to that step (its own step(), batch 1, from a fresh state), and its predicted heading change over
its K waypoints is read: turning left (positive) or right (negative). Accuracy = how often that
sign matches the expert's turn. The images at the decision step are identical across cues, so a
policy that forgets the cue scores 50% at depth 1 (it must give the same answer for both cues).
Reported as well: the share of maps where the policy gives different answers for different cues.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def expert_runs(ds, seed: int):
    """Expert rollouts of one map for every cue -> (rgb [T+1,3,H,W], goal_rgb, action [T+1,2]) per cue."""
    from envs.navigation.expert import NavExpert, rollout
    env = ds.make_env(collision_backend="grid")
    runs = [rollout(env, NavExpert(env), seed=seed, options={"cue": c}) for c in range(2 ** ds.config.depth)]
    env.close()
    return runs


@torch.no_grad()
def decision_sign(model, rgb: np.ndarray, goal: np.ndarray, upto: int) -> float:
    """Step the policy over frames 0..upto; the predicted heading change of its last waypoint."""
    state = model.initial_state(1)
    g = torch.from_numpy(goal)[None]
    for t in range(upto + 1):
        out, state = model.step(torch.from_numpy(rgb[t])[None], g, state, torch.tensor([t == 0]))
    wp = out["waypoints"][0, -1]
    return float(torch.atan2(wp[3], wp[2]))


def probe(run: Path, maps: int, first_seed: int):
    from agents.navigation.config import Config
    from agents.bc_navigation import build_model
    from agents.runtime.cli import eval_checkpoint
    from agents.runtime.config import from_dict
    from agents.navigation.data import episode_seed, load_dataset

    ckpt, state = eval_checkpoint(run)
    cfg = from_dict(Config, state["config"])
    ds = load_dataset(cfg.data.path)
    model = build_model(cfg, ds.config.image_size, ds.config.num_waypoints, ds.config.depth)
    model.load_state_dict(state["model"])
    model.eval()
    correct, total, distinct = 0, 0, 0
    for i in range(maps):
        runs = expert_runs(ds, episode_seed(first_seed, i))
        acts = [r["action"] for r in runs]
        n = min(len(a) for a in acts)
        differ = np.nonzero(np.any([np.abs(a[:n] - acts[0][:n]).max(-1) > 1e-6 for a in acts[1:]], axis=0))[0]
        if len(differ) == 0:
            continue
        t = int(differ[0])
        signs = []
        for r in runs:
            pred = decision_sign(model, r["rgb"], r["goal_rgb"], t)
            # the expert's turn: its heading change over the next steps
            future = r["pose"][min(t + 5, len(r["pose"]) - 1), 2] - r["pose"][t, 2]
            want = np.sign((future + np.pi) % (2 * np.pi) - np.pi)
            correct += int(np.sign(pred) == want)
            total += 1
            signs.append(np.sign(pred))
        distinct += int(len(set(signs)) > 1)
    return cfg, {"accuracy": correct / max(total, 1), "decisions": total, "cue_dependent": distinct / maps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--maps", type=int, default=40)
    p.add_argument("--seed", type=int, default=2000, help="map seeds episode_seed(seed, i), unseen in training")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    lines = ["| run | model | first-junction accuracy | cue-dependent answers | decisions |", "|---|---|---|---|---|"]
    for run in args.runs:
        cfg, r = probe(run, args.maps, args.seed)
        lines.append(f"| {run.name} | {cfg.model.kind} | {100 * r['accuracy']:.1f}% | {100 * r['cue_dependent']:.1f}% "
                     f"| {r['decisions']} |")
        print(lines[-1], flush=True)
    if args.out:
        cmd = "python benchmarks/bc_navigation_memory_probe.py " + " ".join(sys.argv[1:])
        args.out.write_text(f"# Counterfactual-cue memory probe\n\nCommand: `{cmd}`\n\n" + "\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
