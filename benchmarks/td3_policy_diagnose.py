"""What limits a trained drone TD3 policy: diagnostics of its checkpoints on their own eval rollouts (CPU).

    python benchmarks/td3_policy_diagnose.py CKPT_OR_RUN[=LABEL] ... [--episodes 10] [--out PREFIX]

Each checkpoint's deterministic policy flies ``--episodes`` seeded episodes on the layouts of the
in-training evals (seed + 10000, the first ones of the 50), and on every window it visited:
- **value**: the critic's Q1(s, pi(s)) against the discounted return that followed (gamma of the
  run), over the steps of episodes that ended by success or collision (a 200-step timeout leaves
  the return after it unknown): bias (mean Q - return) and correlation. A critic that does not
  rank states by what follows cannot steer the actor. Beside it, the twin heads' disagreement
  |Q1 - Q2| and the bias of min(Q1, Q2), TD3's target: clipped double Q only counters
  overestimation where the heads err differently.
- **dormant units** (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep RL", tau = 0.025):
  the fraction of ReLU units whose mean activation, over the windows, is below tau times their
  layer's mean, per stage: the critic's encoder (the actor's too when shared: model.shared_encoder)
  in its state MLP, fusion and frame-stack pool, the actor head, Q1 (the ReLU stages; the VMamba
  backbone's GELUs are not counted).
- **feature rank** (srank, Kumar et al. 2021, delta = 0.01): how many singular directions hold 99%
  of the encoder feature's spectrum over the windows (of d_model).
- **attention**: entropy of the pool's weights over the K steps (log K = uniform) and the weight
  on the newest step, mean over heads and windows (the frame stack's concat pool: uniform).
- **input reliance**: how far the action moves when the depth windows (or the state windows) are
  shuffled across the batch, mean |delta action| / the action's own spread: near 0 means the policy
  ignores that input (without depth it cannot see trees).

Writes PREFIX.json and PREFIX.md (the table and this command). Written here: the diagnostics are
standard (papers above) but no library computes them on a TorchRL rollout of our networks.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

TAU, DELTA = 0.025, 0.01


def load(spec: str):
    from agents.drone.build import build_nets, make_env
    from agents.drone.config import Config
    from agents.runtime.cli import config_for_eval_here, eval_checkpoint
    from agents.runtime.config import from_dict

    path, _, label = spec.partition("=")
    ckpt, state = eval_checkpoint(path)
    cfg = from_dict(Config, {**config_for_eval_here(state["config"], ckpt), "device": "cpu"})
    env = make_env(cfg, seed=cfg.seed)
    nets = build_nets(cfg, env)
    env.close()
    nets.load_state_dict(state["model"])
    return label or ckpt.parent.parent.name, ckpt, cfg, nets.eval()


def rollouts(cfg, nets, episodes: int) -> list:
    from tensordict.nn import TensorDictModule
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from agents.drone.build import make_env, seq_keys
    from agents.vmamba_td3 import EVAL_SEED_OFFSET

    env = make_env(cfg, seed=cfg.seed + EVAL_SEED_OFFSET)    # the in-training evals' layouts
    actor = TensorDictModule(nets.actor, in_keys=seq_keys(cfg), out_keys=["action"])
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        out = [env.rollout(100_000, actor, break_when_any_done=True) for _ in range(episodes)]
    env.close()
    return out


def relu_activations(module: nn.Module, stage: str, store: dict) -> list:
    """Forward hooks that append each ReLU's output, flattened to [N, units], under (stage, its name)."""
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, nn.ReLU):
            def hook(_m, _i, out, key=(stage, name)):
                store.setdefault(key, []).append(out.detach().reshape(-1, out.shape[-1]))
            hooks.append(m.register_forward_hook(hook))
    return hooks


def in_batches(fn, *tensors, size: int = 256) -> torch.Tensor:
    """fn over the windows in batches of ``size`` (the visited windows of 20 episodes do not fit one pass)."""
    return torch.cat([fn(*(t[i:i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)])


def dormant_fraction(acts: torch.Tensor) -> float:
    score = acts.abs().mean(0)                             # [units]
    return float((score / score.mean().clamp_min(1e-12) <= TAU).float().mean())


def srank(x: torch.Tensor) -> int:
    s = torch.linalg.svdvals(x - x.mean(0))
    c = torch.cumsum(s, 0) / s.sum()
    return int((c < 1 - DELTA).sum()) + 1


def diagnose(cfg, nets, episodes: int) -> dict:
    from agents.drone.build import seq_keys

    t0 = time.perf_counter()
    eps = rollouts(cfg, nets, episodes)
    depth_key, state_key = seq_keys(cfg)
    depth = torch.cat([r[depth_key] for r in eps])
    state = torch.cat([r[state_key] for r in eps])
    # discounted return that followed each step, and which episodes ended by success or collision
    returns, ended = [], []
    for r in eps:
        rew = r["next", "reward"].reshape(-1)
        g, acc = torch.zeros_like(rew), 0.0
        for t in range(len(rew) - 1, -1, -1):
            acc = float(rew[t]) + cfg.td3.gamma * acc
            g[t] = acc
        returns.append(g)
        done_by_event = bool(r["next", "terminated"].reshape(-1)[-1])
        ended.append(torch.full_like(rew, float(done_by_event)))
    returns, ended = torch.cat(returns), torch.cat(ended).bool()
    acts: dict[tuple, list] = {}
    enc = nets.critic.encoder                  # the actor's too with model.shared_encoder
    hooks = relu_activations(enc.state_mlp, "encoder/state", acts) + relu_activations(enc.fusion, "encoder/fusion", acts)
    hooks += relu_activations(enc.pool, "encoder/pool", acts) + relu_activations(nets.actor.head, "actor_head", acts)
    hooks += relu_activations(nets.critic.q1, "q1", acts)

    def critic_pass(d, s):    # -> [n, d_model + action_dim + 2 + K]: feature, action, q1, q2, attention
        f, extras = enc(d, s, return_attention=True)
        a = nets.actor.act(f) if nets.shared else nets.actor(d, s)
        q1, q2 = nets.critic.q_heads(f, a)
        return torch.cat([f, a, q1, q2, extras["attention"].mean(1)], -1)

    with torch.no_grad():
        out = in_batches(critic_pass, depth, state)
    for h in hooks:
        h.remove()
    feat, base, q1, q2, att = out.split([enc.d_model, nets.critic.action_dim, 1, 1, depth.shape[1]], -1)
    q1, q2 = q1.reshape(-1), q2.reshape(-1)
    K = att.shape[-1]
    entropy = float(-(att.clamp_min(1e-12).log() * att).sum(-1).mean())
    # input reliance: shuffle one input's windows across the batch (a fixed permutation)
    perm = torch.randperm(len(depth), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        no_depth = in_batches(nets.actor, depth[perm], state)
        no_state = in_batches(nets.actor, depth, state[perm])
    spread = (base - base.mean(0)).abs().mean()
    q_e, g_e, q2_e = q1[ended], returns[ended], q2[ended]
    dormant = {}
    for (stage, _name), chunks in acts.items():
        dormant.setdefault(stage, []).append(dormant_fraction(torch.cat(chunks)))
    info = {k: [float(r["next", k].reshape(-1)[-1]) for r in eps] for k in ("success", "collision")}
    return {
        "episodes": episodes, "windows": len(depth), "success_rate": sum(info["success"]) / episodes,
        "collision_rate": sum(info["collision"]) / episodes,
        "value_windows": int(ended.sum()),
        "q_bias": float((q_e - g_e).mean()) if len(q_e) else math.nan,
        "q_return_corr": float(torch.corrcoef(torch.stack([q_e, g_e]))[0, 1]) if len(q_e) > 2 else math.nan,
        "q_min_bias": float((torch.minimum(q_e, q2_e) - g_e).mean()) if len(q_e) else math.nan,
        "q_heads_gap": float((q1 - q2).abs().mean()),
        "dormant": {k: sum(v) / len(v) for k, v in dormant.items()},
        "feature_srank": srank(feat), "d_model": feat.shape[-1],
        "attention_entropy": entropy, "attention_max_entropy": math.log(K),
        "attention_newest": float(att[:, -1].mean()),
        "action_change_depth_shuffled": float((no_depth - base).abs().mean() / spread),
        "action_change_state_shuffled": float((no_state - base).abs().mean() / spread),
        "seconds": time.perf_counter() - t0,
    }


def table(results: dict) -> str:
    stages = sorted({s for r in results.values() for s in r["dormant"]})
    head = ["run", "success / collisions", "windows", "Q1 - return (corr)", "min(Q1,Q2) - return", "abs(Q1 - Q2)",
            *[f"dormant {s}" for s in stages],
            "feature srank", "attention entropy / newest", "action change: depth / state shuffled"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in results.items():
        cells = [label, f"{r['success_rate']:.0%} / {r['collision_rate']:.0%}", str(r["windows"]),
                 f"{r['q_bias']:+.2f} ({r['q_return_corr']:.2f}, {r['value_windows']} windows)",
                 f"{r['q_min_bias']:+.2f}", f"{r['q_heads_gap']:.2f}",
                 *[f"{r['dormant'][s]:.0%}" if s in r["dormant"] else "-" for s in stages],
                 f"{r['feature_srank']} / {r['d_model']}",
                 f"{r['attention_entropy']:.2f} of {r['attention_max_entropy']:.2f} / {r['attention_newest']:.2f}",
                 f"{r['action_change_depth_shuffled']:.2f} / {r['action_change_state_shuffled']:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("checkpoints", nargs="+", metavar="CKPT_OR_RUN[=LABEL]")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/td3_policy_diagnose")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    torch.manual_seed(0)
    results = {}
    for spec in args.checkpoints:
        label, ckpt, cfg, nets = load(spec)
        print(f"{label}: {ckpt}", flush=True)
        results[label] = {"checkpoint": str(ckpt), **diagnose(cfg, nets, args.episodes)}
        print(json.dumps(results[label]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    cmd = "python benchmarks/td3_policy_diagnose.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out.with_suffix(".md").write_text(f"Command: `{cmd}`\n\n{table(results)}\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
