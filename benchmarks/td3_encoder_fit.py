"""Do the drone's temporal encoders fit a value target equally well? The Forest runs' critic loss says no.

    python benchmarks/td3_encoder_fit.py --policy RUN_OR_CHECKPOINT [--episodes 24] [--steps 400]
        [--temporal mamba none gru mamba:concat none:attention] [--config configs/drone/gpu_forest.yaml] [key=value ...]

Why: on the GPU host (2026-12-02, seed 0, configs/drone/gpu_forest.yaml) the VMamba run's critic loss
stayed 3-5x above the frame stack's and the GRU's from 6k env steps on, while its success lagged
(4% vs 80% at 20k). TD3's targets move with each critic, so that alone cannot say whether the
TemporalMamba encoder fits worse or just sees other data. This probe removes the moving targets:

1. data: --episodes episodes of the drone env, acted by the --policy checkpoint's actor plus
   Gaussian noise (--noise, clipped to the action box), each step's K-step window (what the actor
   and critic read) with its discounted Monte-Carlo return G_t (gamma of the config; an episode cut
   at max_episode_steps keeps its truncated tail, the same for every encoder); every 4th episode
   is held out;
2. fit: for each --temporal KIND[:POOL], the agent's critic (agents.drone.build.build_nets on --config
   with model.temporal=KIND and model.pool=POOL, auto if not given; the same seed, so the same backbone init) regressed on G_t by MSE through both Q
   heads, Adam at td3.critic_lr, batch replay.batch_size windows, DrQ's random shift (td3.image_shift),
   --steps steps; train and held-out loss every --every steps, and the time.

Writes td3_encoder_fit.md/.json/.png under --out (the command and the load average are in the file).
CPU is enough: the nets are the 0.65M-parameter Forest critic (a step ~0.2-0.5 s on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def collect(policy_path: str, episodes: int, noise: float, seed: int):
    """-> depth uint8 [N, K, 1, H, W], state [N, K, S], action [N, A], G [N], episode [N]."""
    from tensordict.nn import TensorDictModule
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from agents.drone.build import build_nets, make_env, seq_keys
    from agents.drone.config import Config
    from agents.runtime.cli import config_for_eval_here, eval_checkpoint
    from agents.runtime.config import from_dict

    ckpt, state = eval_checkpoint(policy_path)
    cfg = from_dict(Config, {**config_for_eval_here(state["config"], ckpt), "device": "cpu"})
    env = make_env(cfg, seed=seed)
    nets = build_nets(cfg, env)
    nets.load_state_dict(state["model"])
    actor = TensorDictModule(nets.actor, in_keys=seq_keys(cfg), out_keys=["action"])
    gen = torch.Generator().manual_seed(seed)

    def act(td):
        actor(td)
        td["action"] = (td["action"] + noise * torch.randn(td["action"].shape, generator=gen)).clamp(-1, 1)
        return td

    parts, gamma = [], cfg.td3.gamma
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for ep in range(episodes):
            r = env.rollout(100_000, act, break_when_any_done=True)
            rew = r["next", "reward"].reshape(-1)
            G, g = torch.zeros_like(rew), 0.0
            for t in range(len(rew) - 1, -1, -1):
                g = float(rew[t]) + gamma * g
                G[t] = g
            parts.append(dict(depth=(r["depth_seq"] * 255).round().to(torch.uint8), state=r["observation_seq"].float(),
                              action=r["action"].float(), G=G, episode=torch.full_like(G, ep, dtype=torch.long),
                              success=float(r["next", "success"][-1]) if ("next", "success") in r.keys(True) else 0.0))
            print(f"episode {ep}: {len(rew)} steps, return {float(rew.sum()):.2f}", flush=True)
    env.close()
    data = {k: torch.cat([p[k] for p in parts]) for k in ("depth", "state", "action", "G", "episode")}
    data["success"] = sum(p["success"] for p in parts) / episodes
    return data, str(ckpt)


def fit(cfg, data, train_idx, val_idx, steps: int, every: int, seed: int, label: str) -> dict:
    from agents.drone.build import build_nets, make_env, random_shift

    torch.manual_seed(seed)
    env = make_env(cfg, seed=cfg.seed)
    critic = build_nets(cfg, env).critic
    env.close()
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.td3.critic_lr)
    gen = torch.Generator().manual_seed(seed)
    B = cfg.replay.batch_size

    def batch(idx):
        return data["depth"][idx].float() / 255.0, data["state"][idx], data["action"][idx], data["G"][idx]

    def loss_of(idx, shift: bool):
        depth, state, action, G = batch(idx)
        if shift:
            depth = random_shift(depth, cfg.td3.image_shift)
        q1, q2 = critic(depth, state, action)
        return F.mse_loss(q1.squeeze(-1), G) + F.mse_loss(q2.squeeze(-1), G)

    def mean_loss(idx):                        # no shift, in chunks of 256 windows
        return sum(float(loss_of(idx[i:i + 256], False)) * len(idx[i:i + 256]) for i in range(0, len(idx), 256)) / len(idx)

    curve, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = train_idx[torch.randint(len(train_idx), (B,), generator=gen)]
        loss = loss_of(idx, shift=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                val, train = mean_loss(val_idx), mean_loss(train_idx[:2048])
            curve.append({"step": step, "train": train, "val": val, "time_s": time.perf_counter() - t0})
            print(f"  {label:14s} step {step}: train {train:.3f} held-out {val:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"curve": curve, "parameters": sum(p.numel() for p in critic.parameters())}


def main(argv=None) -> int:
    from agents.drone.config import Config
    from agents.runtime.config import load_config
    from networks.models.vmamba import POOLS, TEMPORAL

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="the behaviour policy: a TD3 run directory or checkpoint")
    p.add_argument("--config", default="configs/drone/gpu_forest.yaml", help="the critic's config (model, td3, replay)")
    p.add_argument("--temporal", nargs="+", default=["mamba", "none", "gru"], metavar="KIND[:POOL]",
                   help="model.temporal kinds, each with its model.pool after a colon (default: auto)")
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("overrides", nargs="*", help="key=value for the critic's config")
    args = p.parse_args(argv)
    if args.episodes < 4:
        p.error(f"--episodes must be >= 4 (every 4th episode is held out), got {args.episodes}")
    if args.steps < 1 or args.every < 1:
        p.error(f"--steps and --every must be >= 1, got {args.steps} and {args.every}")
    variants = [(kind, *kind.partition(":")[::2]) for kind in args.temporal]
    for _, kind, pool in variants:                   # before the data is collected, not after it
        if kind not in TEMPORAL or (pool and pool not in POOLS):
            p.error(f"--temporal: {kind}:{pool or 'auto'} must be KIND[:POOL] with KIND in {list(TEMPORAL)} "
                    f"and POOL in {list(POOLS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    data, ckpt = collect(args.policy, args.episodes, args.noise, args.seed + 777)
    held = data["episode"] % 4 == 3
    train_idx, val_idx = torch.nonzero(~held).squeeze(1), torch.nonzero(held).squeeze(1)
    print(f"{len(data['G'])} windows ({len(train_idx)} train, {len(val_idx)} held out), G mean "
          f"{float(data['G'].mean()):.2f} var {float(data['G'].var()):.2f}, behaviour success {data['success']:.2f}")
    results = {}
    for label, kind, pool in variants:
        cfg = load_config(Config, args.config, [*args.overrides, f"model.temporal={kind}",
                                                f"model.pool={pool or 'auto'}", "device=cpu", f"seed={args.seed}"])
        results[label] = fit(cfg, data, train_idx, val_idx, args.steps, args.every, args.seed, label)
    report = {"command": "python benchmarks/td3_encoder_fit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "policy": ckpt, "windows": len(data["G"]), "train": len(train_idx), "held_out": len(val_idx),
              "G_var_held_out": float(data["G"][val_idx].var()), "behaviour_success": data["success"],
              "load_average_start": load, "load_average_end": os.getloadavg(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "td3_encoder_fit.json").write_text(json.dumps(report, indent=1))
    lines = ["# Value-fit probe of the drone's temporal encoders (benchmarks/td3_encoder_fit.py)", "",
             f"`{report['command']}`", "",
             f"Behaviour policy {ckpt} + N(0, {args.noise}) noise, {args.episodes} episodes "
             f"(success {data['success']:.2f}); {len(data['G'])} windows, {len(val_idx)} held out "
             f"(every 4th episode), held-out Var(G) {report['G_var_held_out']:.2f} (the loss of predicting the mean, "
             "per head: the table's losses are the sum of both heads' MSE). Load average "
             f"{load[0]:.2f} at the start, {report['load_average_end'][0]:.2f} at the end; torch {torch.__version__}, "
             f"{report['threads']} threads.", "",
             "| temporal | critic parameters | " + " | ".join(f"held-out @ {c['step']}" for c in next(iter(results.values()))["curve"])
             + " | train @ end | s / step |", "|---|---:|" + "---:|" * (len(next(iter(results.values()))["curve"]) + 2)]
    for kind, r in results.items():
        c = r["curve"]
        lines.append(f"| {kind} | {r['parameters']:,} | " + " | ".join(f"{x['val']:.3f}" for x in c)
                     + f" | {c[-1]['train']:.3f} | {c[-1]['time_s'] / c[-1]['step']:.2f} |")
    (out / "td3_encoder_fit.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kind, r in results.items():
        ax.plot([c["step"] for c in r["curve"]], [c["val"] for c in r["curve"]], label=f"{kind} held-out")
        ax.plot([c["step"] for c in r["curve"]], [c["train"] for c in r["curve"]], "--", alpha=0.6, label=f"{kind} train")
    ax.set(xlabel="Adam step", ylabel="MSE of Q1 + Q2 vs G", yscale="log", title="critic value fit, fixed data")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "td3_encoder_fit.png", dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
