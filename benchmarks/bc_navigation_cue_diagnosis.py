"""Why does plain MambaViNT not use the cue? Measurements on a navigation dataset and on models.

    python benchmarks/bc_navigation_cue_diagnosis.py data data/nav_d1_dart [--chunks 32 64 128 256 512]
    python benchmarks/bc_navigation_cue_diagnosis.py decay data/nav_d1_dart [RUN_DIR ...] [--set key=value ...]
    python benchmarks/bc_navigation_cue_diagnosis.py losses data/nav_d1_dart RUN_DIR [...] [--episodes 40]
    python benchmarks/bc_navigation_cue_diagnosis.py shortcut data/nav_d1_dart RUN_DIR [...] [--maps 50]

``data``: per episode, from the dataset alone plus the map (rebuilt from the episode's env seed):
- cue-visible steps: the stored image differs from the same pose rendered with the other cue(s);
- shared steps: the robot's cell has the same expert cost-to-go to the goal of another cue as to
  its own (start room, stem corridor and J1 for every cue; at depth 2 the arms after J1 for the two
  cues of that subtree): places whose position does not tell the cue;
- cue-dependent steps: shared steps where the cue is out of view (the image is the same for every
  cue) and the expert's waypoint label from that pose differs between cues (relabelled from the pose
  with each cue's expert, as the DART data are). Only these steps need memory; their label spread
  gives an upper bound on the loss a memoryless policy cannot remove (it must predict the cues' mean
  where it cannot tell the cue). Strictly ambiguous: the cue-dependent steps up to the first step
  where the expert's own action differs by cue (the turn); until then the executed actions, hence
  the poses and images, have the same distribution under every cue; later frames show the turn
  begun, which a memoryless policy can read.
Then: the gap (first cue-dependent step - last cue-visible step) and, for each chunk length, the
share of cue-dependent steps whose TBPTT chunk (chunks start at episode starts) holds a cue-visible
step, i.e. whose loss can send gradient to a cue frame at all (the carried state is detached).

``decay``: per SSM head, the per-step decay exp(dt * A) of each Mamba2 layer measured on dataset
frames (dt is input-dependent), its e-folding horizon 1 / (dt |A|) in steps, and the share of a
state written at the last cue-visible step that is left at the first cue-dependent step; for a
fresh model (``--set`` the model keys of the runs) and for each RUN_DIR's checkpoint.

``losses``: each run's per-step waypoint loss (nav_loss's term) on training and held-out episodes,
by kind of step, next to the label variance of those steps (what a memoryless policy that predicts
the cues' mean would score there).

``shortcut``: the memory probe on maps of the training set (see cmd_shortcut).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _targets(wp: np.ndarray, yaw: np.ndarray, scale: float = 0.25) -> np.ndarray:
    """The regression target of nav_loss: [..., K, 4] (x / scale, y / scale, cos, sin)."""
    return np.concatenate([wp / scale, np.cos(yaw)[..., None], np.sin(yaw)[..., None]], -1)


def episode_cue_profile(ds, e: int, env, tol: float = 1e-3) -> dict:
    """One episode's cue-visible, shared and cue-dependent steps (see the module docstring)."""
    from envs.navigation.expert import NavExpert, expert_labels
    from envs.navigation.expert import ORTH, DIAG, WALL_PENALTY
    from envs.navigation.maps import distance_field

    ep = ds.episodes[e]
    start, n, cue, seed = int(ep["start"]), int(ep["length"]), int(ep["cue"]), int(ep["seed"])
    steps = ds.steps[start:start + n]
    pose, rgb = steps["pose"].numpy().astype(np.float64), steps["rgb"].numpy()
    target = _targets(steps["waypoints"].numpy(), steps["waypoint_yaw"].numpy())
    cues = 2 ** ds.config.depth
    visible = np.zeros(n, bool)
    fields, labels = [], {}
    expert = NavExpert(env)
    for c in range(cues):
        env.reset(seed=seed, options={"cue": c})
        expert.reset()
        fields.append(distance_field(env.layout.free, expert.goal_cell, ORTH, DIAG, WALL_PENALTY))
        if c != cue:
            other = np.stack([env.view(p) for p in pose])
            visible |= (other != rgb).any(axis=(1, 2, 3))
    cells = np.floor(pose[:, :2]).astype(int)
    d = np.stack([f[cells[:, 1], cells[:, 0]] for f in fields])               # [cues, n]
    # the cues the robot's place cannot tell from its own: the same cost-to-go to their goals (the
    # start room, the stem and J1 for every cue; at depth 2 also the arms after J1 for the two cues
    # of that subtree)
    group = d == d[cue]                                                        # [cues, n]
    shared = group.sum(0) > 1
    spread = np.zeros(n)
    dependent = np.zeros(n, bool)
    ambiguous = np.zeros(n, bool)
    turns = []
    idx = np.nonzero(shared & ~visible)[0]
    if len(idx):
        per_cue, acts = [], []
        for c in range(cues):
            env.reset(seed=seed, options={"cue": c})
            expert.reset()
            wp, yaw = expert_labels(expert, pose[idx], ds.config.num_waypoints, ds.config.waypoint_spacing)
            per_cue.append(_targets(wp, yaw))
            acts.append(np.stack([expert.act(q) for q in pose[idx]]))
        per_cue, acts = np.stack(per_cue), np.stack(acts)                         # [cues, m, K, 4], [cues, m, 2]
        np.testing.assert_allclose(per_cue[cue], target[idx], atol=1e-4)         # the stored labels
        g = group[:, idx]                                                         # [cues, m]
        w = g[..., None, None]
        mean = (per_cue * w).sum(0) / g.sum(0)[:, None, None]
        # a memoryless policy's best answer is the mean over the cues it cannot tell apart: its
        # loss there is their label variance
        spread[idx] = (((per_cue - mean) ** 2) * w).sum(0).mean((-1, -2)) / g.sum(0)
        dependent[idx] = (np.abs(per_cue - per_cue[cue]) * w).max(axis=(0, 2, 3)) > tol
        act_differs = (np.abs(acts - acts[cue]) * g[..., None]).max(axis=(0, 2)) > 1e-6
        key, turned = None, False
        for j, t in enumerate(idx):       # strictly ambiguous: up to the expert's first differing action
            if key != tuple(g[:, j]):     # within the group (a new group after each junction)
                key, turned = tuple(g[:, j]), False
            ambiguous[t] = dependent[t] and not turned
            if act_differs[j] and not turned:
                turned = True
                turns.append(int(t))
    return {"n": n, "visible": visible, "shared": shared, "dependent": dependent, "spread": spread,
            "ambiguous": ambiguous, "turns": turns, "turn": turns[0] if turns else n}


def last_cue_before(visible: np.ndarray, first_dependent: int) -> int:
    """The last cue-visible step before ``first_dependent`` (-1 if none; all steps if it is < 0)."""
    v = np.nonzero(visible[:first_dependent] if first_dependent >= 0 else visible)[0]
    return int(v.max()) if len(v) else -1


def cmd_data(args) -> None:
    from agents.navigation.data import load_dataset

    ds = load_dataset(args.dataset)
    env = ds.make_env(collision_backend="grid")
    E = ds.num_episodes if args.episodes is None else min(args.episodes, ds.num_episodes)
    profiles = [episode_cue_profile(ds, e, env) for e in range(E)]
    total = sum(p["n"] for p in profiles)
    n_vis = np.array([p["visible"].sum() for p in profiles])
    dep = [np.nonzero(p["dependent"])[0] for p in profiles]
    first_dep = np.array([d[0] if len(d) else -1 for d in dep])
    last_cue = np.array([last_cue_before(p["visible"], f) for p, f in zip(profiles, first_dep)])
    late = np.array([p["visible"][f:].any() if f >= 0 else False for p, f in zip(profiles, first_dep)])
    n_dep = np.array([len(d) for d in dep])
    has = first_dep >= 0
    gap = first_dep[has] - last_cue[has]
    pct = lambda a: " / ".join(f"{np.percentile(a, q):.0f}" for q in (0, 10, 50, 90, 100))  # noqa: E731
    lines = [f"dataset {args.dataset}: {E} episodes, {total} steps (mean {total / E:.1f}, "
             f"min/p10/median/p90/max length {pct([p['n'] for p in profiles])})",
             f"cue visible: {n_vis.sum()} steps ({n_vis.sum() / total:.1%}); steps per episode "
             f"min/p10/median/p90/max {pct(n_vis)}; last cue-visible step before the first cue-dependent one "
             f"{pct(last_cue)}; episodes where the cue comes into view again later: {late.mean():.0%}",
             f"shared (the place does not tell the cue) and cue out of view: "
             f"{sum((p['shared'] & ~p['visible']).sum() for p in profiles) / total:.1%} of steps",
             f"cue-dependent steps (label differs by cue where the image does not): {n_dep.sum()} = "
             f"{n_dep.sum() / total:.2%} of all steps; per episode {pct(n_dep)}; episodes with any: {has.mean():.0%}",
             f"first cue-dependent step: {pct(first_dep[has])}",
             f"gap first cue-dependent step - last cue-visible step: {pct(gap)} (min/p10/median/p90/max)"]
    spread = np.concatenate([p["spread"] for p in profiles])
    lines.append(f"loss a memoryless policy cannot remove (label variance across cues, averaged over all "
                 f"steps as nav_loss averages): {spread.sum() / total:.4f}; on the cue-dependent steps alone "
                 f"{spread.sum() / max(n_dep.sum(), 1):.4f} per step")
    amb = np.concatenate([p["ambiguous"] for p in profiles])
    turn = np.array([p["turn"] for p in profiles])
    lines.append(f"strictly ambiguous steps (cue-dependent, up to the expert's first cue-dependent action): "
                 f"{amb.sum()} = {amb.sum() / total:.2%} of all steps, {pct([p['ambiguous'].sum() for p in profiles])} "
                 f"per episode; their label variance averaged over all steps: {spread[amb].sum() / total:.4f} "
                 f"({spread[amb].sum() / max(amb.sum(), 1):.4f} per such step); first cue-dependent action at "
                 f"step {pct(turn)}, gap to the last cue-visible step {pct(turn - last_cue)}")
    last_turn = np.array([p["turns"][-1] if p["turns"] else p["n"] for p in profiles])
    lines.append(f"expert turns per episode {pct([len(p['turns']) for p in profiles])}; the last one at step "
                 f"{pct(last_turn)}, {pct(last_turn - last_cue)} steps after the last cue-visible step")
    lines.append("| chunk_len | cue-dependent steps whose chunk holds a cue-visible step | strictly ambiguous ones "
                 "| episodes whose first cue-dependent step is in chunk 0 |")
    lines.append("|---:|---:|---:|---:|")
    for L in args.chunks:
        same, count, same_a, count_a = 0, 0, 0, 0
        for p, d in zip(profiles, dep):
            vis_chunks = set((np.nonzero(p["visible"])[0] // L).tolist())
            same += sum(int(t // L in vis_chunks) for t in d)
            count += len(d)
            a = np.nonzero(p["ambiguous"])[0]
            same_a += sum(int(t // L in vis_chunks) for t in a)
            count_a += len(a)
        lines.append(f"| {L} | {same / max(count, 1):.1%} | {same_a / max(count_a, 1):.1%} | "
                     f"{(first_dep[has] < L).mean():.1%} |")
    print("\n".join(lines))


def _mixer_dt(model, rgb, goal):
    """Per Mamba2 layer: dt * A [T, H] over one trajectory (batch 1, the chunked forward's inputs)."""
    from networks.ssm.mamba2 import Mamba2Mixer
    got = []

    def hook(mixer, inputs):
        x = inputs[0]
        _, _, dt = mixer._split(mixer.in_proj(x))
        dt = torch.nn.functional.softplus(dt + mixer.dt_bias)
        got.append((dt * -torch.exp(mixer.A_log))[0])

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, Mamba2Mixer)]
    is_init = torch.zeros(1, rgb.shape[0], dtype=torch.bool)
    is_init[0, 0] = True
    with torch.no_grad():
        model(rgb[None], goal[None].expand(rgb.shape[0], *goal.shape)[None], is_init, model.initial_state(1))
    for h in handles:
        h.remove()
    return got


def cmd_decay(args) -> None:
    from agents.bc_navigation import build_model
    from agents.navigation.config import Config
    from agents.navigation.data import load_dataset
    from agents.runtime.config import apply_overrides, from_dict, to_dict

    ds = load_dataset(args.dataset)
    env = ds.make_env(collision_backend="grid")
    models = []
    cfg = from_dict(Config, apply_overrides(to_dict(Config()), args.set, Config))
    torch.manual_seed(args.seed)
    models.append((f"fresh (seed {args.seed})", build_model(cfg, ds.config.image_size, ds.config.num_waypoints,
                                                            ds.config.depth)))
    for run in args.runs:
        models.append((Path(run).name, load_run(run, ds)[1]))
    episodes = range(min(args.episodes, ds.num_episodes))
    profiles = {e: episode_cue_profile(ds, e, env) for e in episodes}
    print("| model | layer | head | median decay per step | e-fold horizon (steps) | kept from last cue frame "
          "to first cue-dependent step (median over episodes) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models:
        model.eval()
        per = {}
        for e in episodes:
            p = profiles[e]
            dep = np.nonzero(p["dependent"])[0]
            if not len(dep) or not p["visible"].any():
                continue
            a, b = last_cue_before(p["visible"], int(dep[0])), int(dep[0])
            if a < 0:
                continue
            s, n = int(ds.episodes["start"][e]), int(ds.episodes["length"][e])
            rgb, goal = ds.steps["rgb"][s:s + n], ds.episodes["goal_rgb"][e]
            for layer, dtA in enumerate(_mixer_dt(model, rgb, goal)):
                kept = torch.exp(dtA[a + 1:b + 1].sum(0))                  # [H]: decay from step a to step b
                per.setdefault(layer, []).append((dtA, kept))
        for layer, rows in per.items():
            dtA = torch.cat([r[0] for r in rows])                          # [sum T, H]
            kept = torch.stack([r[1] for r in rows])                       # [episodes, H]
            for h in range(dtA.shape[1]):
                med = float(dtA[:, h].median())
                print(f"| {name} | {layer} | {h} | {np.exp(med):.4f} | {1 / max(-med, 1e-12):.1f} | "
                      f"{float(kept[:, h].median()):.3g} |")


def load_run(run: str, ds):
    """A run's config and model (its latest checkpoint, else its export), in eval mode."""
    from agents.bc_navigation import build_model
    from agents.navigation.config import Config
    from agents.runtime.cli import eval_checkpoint
    from agents.runtime.config import from_dict

    _, state = eval_checkpoint(run)
    cfg = from_dict(Config, state["config"])
    model = build_model(cfg, ds.config.image_size, ds.config.num_waypoints, ds.config.depth)
    model.load_state_dict(state["model"])
    return cfg, model.eval()


def cmd_losses(args) -> None:
    """Per-step waypoint loss of trained runs by kind of step, on training and held-out episodes."""
    from agents.navigation.batches import context_rows, split_episodes
    from agents.navigation.data import load_dataset
    from networks.models.vint import ViNT

    ds = load_dataset(args.dataset)
    env = ds.make_env(collision_backend="grid")
    print("| run | episodes | cue visible | cue-dependent | its label variance | strictly ambiguous | its label "
          "variance | other | all |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    cache = {}
    for run in args.runs:
        cfg, model = load_run(run, ds)
        train_ids, val_ids = split_episodes(ds.num_episodes, cfg.data.val_episodes)
        for label, ids in (("training", train_ids[:args.episodes]), ("held out", val_ids)):
            sums = {k: [0.0, 0] for k in ("visible", "dependent", "floor", "ambiguous", "amb_floor", "other", "all")}
            for e in ids.tolist():
                if e not in cache:
                    cache[e] = episode_cue_profile(ds, e, env)
                p = cache[e]
                s, n = int(ds.episodes["start"][e]), int(ds.episodes["length"][e])
                steps = ds.steps[s:s + n]
                labels = {"waypoints": steps["waypoints"], "waypoint_yaw": steps["waypoint_yaw"]}
                goal = ds.episodes["goal_rgb"][e]
                with torch.no_grad():
                    if isinstance(model, ViNT):
                        rows = torch.arange(n)
                        ctx = context_rows(rows, torch.zeros_like(rows), cfg.model.context, cfg.model.context_spacing)
                        out = model(steps["rgb"][ctx], goal.expand(n, *goal.shape))
                    else:
                        is_init = torch.zeros(1, n, dtype=torch.bool)
                        is_init[0, 0] = True
                        out, _ = model(steps["rgb"][None], goal.expand(1, n, *goal.shape), is_init,
                                       model.initial_state(1))
                        out = {k: v[0] for k, v in out.items()}
                yaw = labels["waypoint_yaw"]
                target = torch.cat([labels["waypoints"] / cfg.train.waypoint_scale,
                                    torch.stack([yaw.cos(), yaw.sin()], -1)], -1)
                wp = (out["waypoints"] - target).pow(2).mean((-1, -2)).numpy()
                masks = {"visible": p["visible"], "dependent": p["dependent"], "ambiguous": p["ambiguous"],
                         "other": ~(p["visible"] | p["dependent"]), "all": np.ones(n, bool)}
                for k, m in masks.items():
                    sums[k][0] += float(wp[m].sum())
                    sums[k][1] += int(m.sum())
                sums["floor"][0] += float(p["spread"][p["dependent"]].sum())
                sums["floor"][1] += int(p["dependent"].sum())
                sums["amb_floor"][0] += float(p["spread"][p["ambiguous"]].sum())
                sums["amb_floor"][1] += int(p["ambiguous"].sum())
            cell = lambda k: f"{sums[k][0] / max(sums[k][1], 1):.4f}"  # noqa: E731
            print(f"| {Path(run).name} | {label} ({len(ids)}) | {cell('visible')} | {cell('dependent')} | "
                  f"{cell('floor')} | {cell('ambiguous')} | {cell('amb_floor')} | {cell('other')} | {cell('all')} |", flush=True)


def cmd_shortcut(args) -> None:
    """The memory probe (benchmarks/bc_navigation_memory_probe.py) on maps of the training set: each
    map's noise-free expert drive with every cue, the policy's turn at the first junction. A model
    that memorised "this map -> the dataset cue's turn" answers that turn whatever cue it was shown."""
    from benchmarks.bc_navigation_memory_probe import decision_sign, expert_runs
    from agents.navigation.batches import split_episodes
    from agents.navigation.data import load_dataset

    ds = load_dataset(args.dataset)
    print("| run | training maps | correct turn for the episode's own cue | correct for the other cue | "
          "answers the dataset cue's turn whatever the cue | cue-dependent answers |")
    print("|---|---:|---:|---:|---:|---:|")
    decisions = {}
    for run in args.runs:
        cfg, model = load_run(run, ds)
        train_ids, _ = split_episodes(ds.num_episodes, cfg.data.val_episodes)
        own = other = memorised = distinct = maps = 0
        for e in train_ids[:args.maps].tolist():
            seed, cue = int(ds.episodes["seed"][e]), int(ds.episodes["cue"][e])
            if seed not in decisions:
                runs = expert_runs(ds, seed)
                acts = [r["action"] for r in runs]
                n = min(len(a) for a in acts)
                differ = np.nonzero(np.any([np.abs(a[:n] - acts[0][:n]).max(-1) > 1e-6 for a in acts[1:]], axis=0))[0]
                decisions[seed] = (runs, int(differ[0]) if len(differ) else None)
            runs, t = decisions[seed]
            if t is None:
                continue
            signs, wants = [], []
            for r in runs:
                signs.append(np.sign(decision_sign(model, r["rgb"], r["goal_rgb"], t)))
                future = r["pose"][min(t + 5, len(r["pose"]) - 1), 2] - r["pose"][t, 2]
                wants.append(np.sign((future + np.pi) % (2 * np.pi) - np.pi))
            maps += 1
            own += int(signs[cue] == wants[cue])
            others = [c for c in range(len(runs)) if c != cue]
            other += np.mean([signs[c] == wants[c] for c in others])
            memorised += int(all(sg == wants[cue] for sg in signs))
            distinct += int(len(set(signs)) > 1)
        f = lambda x: f"{100 * x / max(maps, 1):.0f}%"  # noqa: E731
        print(f"| {Path(run).name} | {maps} | {f(own)} | {f(other)} | {f(memorised)} | {f(distinct)} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("dataset")
    d.add_argument("--episodes", type=int, default=None, help="first N episodes (default: all)")
    d.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    k = sub.add_parser("decay")
    k.add_argument("dataset")
    k.add_argument("runs", nargs="*")
    k.add_argument("--episodes", type=int, default=20)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config of the fresh model")
    lo = sub.add_parser("losses")
    lo.add_argument("dataset")
    lo.add_argument("runs", nargs="+")
    lo.add_argument("--episodes", type=int, default=40, help="training episodes to score (the first N)")
    sc = sub.add_parser("shortcut")
    sc.add_argument("dataset")
    sc.add_argument("runs", nargs="+")
    sc.add_argument("--maps", type=int, default=50, help="the first N training episodes' maps")
    args = p.parse_args(argv)
    {"data": cmd_data, "decay": cmd_decay, "losses": cmd_losses, "shortcut": cmd_shortcut}[args.cmd](args)


if __name__ == "__main__":
    main()
