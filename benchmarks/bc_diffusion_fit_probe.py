"""Fit probe for the diffusion denoisers: the same windows, the same noise and the same diffusion
steps for every model, so per-step training losses are directly comparable (CPU, a few minutes).

    python agents/bc_diffusion.py generate --out /tmp/fitdiag/push --episodes 12 --seed 0 num_points=128 image_size=64
    nice -n 10 python benchmarks/bc_diffusion_fit_probe.py /tmp/fitdiag/push --steps 400 \
        --model unet:64,128,256 --model mamba1:16,32,64 --model unet:16,32,64 --out /tmp/fitdiag/probe.json

Each --model is DENOISER:WIDTHS[:noattn][:decayall]. Per model: AdamW (networks/ssm/param_groups
groups, betas 0.95/0.999, weight decay ``--weight-decay``, default 1e-6 as the configs; ``decayall``:
one decayed group, A_log / D / dt bias included, as before the marker existed; issue 20 asks whether
that matters), warm-up + cosine lr as agents/bc_diffusion.py, batch
``--batch`` windows of horizon 16. Logged every ``--every`` steps: the mean training loss since
the last log, wall-clock seconds, and a fixed evaluation loss (256 training windows, fixed noise
and diffusion steps, no gradient) so that the curves are not batch noise.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from agents.algos.bc import warmup_cosine
from agents.manipulation.data import load_dataset
from networks.models.diffusion_policy import DiffusionPolicy
from networks.params import count_parameters
from networks.ssm.param_groups import weight_decay_groups


def loss_of(policy: DiffusionPolicy, batch: dict, noise, k):
    """compute_loss with given noise [B, T, A] and diffusion steps k [B] (the same for every model)."""
    cond = policy.condition(batch["point_cloud"], batch["agent_pos"])
    x0 = policy.action_norm(batch["action"])
    noisy = policy.noise_scheduler.add_noise(x0, noise, k)
    return F.mse_loss(policy.denoiser(noisy, k, cond), noise)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", action="append", required=True, help="DENOISER:W1,W2,W3[:noattn]")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=1e-6, help="AdamW's (configs: 1e-6; navigation: 0.01)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--time-rounds", type=int, default=0,
                    help="timing only: N rounds of one training step per model, interleaved (so a shared, "
                         "loaded CPU slows every model alike); prints each model's median ms/step")
    args = ap.parse_args(argv)

    for spec in args.model:                                  # before the dataset is read
        unknown = set(spec.split(":")[2:]) - {"noattn", "decayall"}
        if unknown:
            raise SystemExit(f"--model {spec}: unknown flag(s) {sorted(unknown)}; allowed: noattn, decayall")
    torch.set_num_threads(1)
    demos = load_dataset(args.data)
    horizon, n_obs, n_act = 16, 2, 8
    index = demos.window_indices(horizon, n_obs - 1, n_act - 1)
    d = demos.data
    pc, pos, act = (d[k].clone() for k in ("point_cloud", "agent_pos", "action"))
    num_points = int(demos.meta["config"]["num_points"])

    def windows(pick):
        rows = index[pick]
        obs = rows[:, :n_obs]
        return {"point_cloud": pc[obs], "agent_pos": pos[obs], "action": act[rows]}

    g = torch.Generator().manual_seed(args.seed)           # one stream of batches/noise/steps for all
    picks = [torch.randint(len(index), (args.batch,), generator=g) for _ in range(args.steps)]
    noises = [torch.randn(args.batch, horizon, 4, generator=g) for _ in range(args.steps)]
    ks = [torch.randint(0, 100, (args.batch,), generator=g) for _ in range(args.steps)]
    eval_pick = torch.randint(len(index), (256,), generator=g)
    eval_batch, eval_noise = windows(eval_pick), torch.randn(256, horizon, 4, generator=g)
    eval_k = torch.randint(0, 100, (256,), generator=g)

    def build(spec):
        parts = spec.split(":")
        denoiser, dims = parts[0], [int(w) for w in parts[1].split(",")]
        attention = "noattn" not in parts[2:]
        torch.manual_seed(args.seed)
        policy = DiffusionPolicy(denoiser, down_dims=dims, horizon=horizon, n_obs_steps=n_obs,
                                 n_action_steps=n_act, num_points=num_points, attention=attention)
        policy.fit_normalizers(demos.stats())
        return policy, denoiser, dims, attention

    if args.time_rounds:
        import statistics

        built = {spec: build(spec)[0] for spec in args.model}
        optims = {spec: torch.optim.AdamW(weight_decay_groups(p, 1e-6), lr=args.lr) for spec, p in built.items()}
        times = {spec: [] for spec in built}
        for r in range(args.time_rounds + 2):                       # 2 warm-up rounds, not timed
            for spec, policy in built.items():
                t0 = time.perf_counter()
                loss = loss_of(policy, windows(picks[r % args.steps]), noises[r % args.steps], ks[r % args.steps])
                optims[spec].zero_grad(set_to_none=True)
                loss.backward()
                optims[spec].step()
                if r >= 2:
                    times[spec].append(time.perf_counter() - t0)
        for spec, ts in times.items():
            print(f"{spec:28s} median {1000 * statistics.median(ts):7.1f} ms/step (batch {args.batch}, "
                  f"{len(ts)} interleaved steps)", flush=True)
        if args.out:
            args.out.write_text(json.dumps({spec: statistics.median(ts) for spec, ts in times.items()}, indent=1))
        return 0

    results = {}
    for spec in args.model:
        policy, denoiser, dims, attention = build(spec)
        n_params = count_parameters(policy.denoiser)
        groups = weight_decay_groups(policy, args.weight_decay)
        ssm = groups[1]["params"]                                # A_log, D, dt bias (the marked ones)
        if "decayall" in spec.split(":")[2:]:                    # the marker ignored: everything decayed
            groups = [{"params": groups[0]["params"] + ssm, "weight_decay": args.weight_decay}]
        ssm_before = [p.detach().clone() for p in ssm]
        optim = torch.optim.AdamW(groups, lr=args.lr, betas=(0.95, 0.999))
        sched = warmup_cosine(optim, args.warmup, args.steps)
        rows, running, n, t_train = [], 0.0, 0, 0.0
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            loss = loss_of(policy, windows(picks[step - 1]), noises[step - 1], ks[step - 1])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            t_train += time.perf_counter() - t0
            running, n = running + float(loss.detach()), n + 1
            if step % args.every == 0 or step == args.steps:
                with torch.no_grad():
                    ev = float(loss_of(policy, eval_batch, eval_noise, eval_k))
                rows.append({"step": step, "train_loss": running / n, "eval_loss": ev, "train_s": t_train})
                running, n = 0.0, 0
        name = spec
        # how far training moved the marked SSM parameters (A_log, D, dt bias), decayed or not: the
        # scale that decay's pull must be compared with
        moved = (sum(float((p.detach() - b).abs().sum()) for p, b in zip(ssm, ssm_before))
                 / max(1, sum(p.numel() for p in ssm)))
        results[name] = {"denoiser": denoiser, "down_dims": dims, "attention": attention,
                         "denoiser_params": n_params, "rows": rows, "weight_decay": args.weight_decay,
                         "ssm_params_mean_abs_change": moved if ssm else None,
                         "s_per_step": t_train / args.steps}
        last = rows[-1]
        print(f"{name:28s} params {n_params:>10,}  {1000 * t_train / args.steps:6.1f} ms/step  "
              f"loss@{last['step']} train {last['train_loss']:.4f} eval {last['eval_loss']:.4f}  "
              f"eval@{rows[len(rows) // 2]['step']} {rows[len(rows) // 2]['eval_loss']:.4f}"
              + (f"  A_log/D/dt-bias moved {moved:.4f} (mean |change|)" if ssm else ""), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
