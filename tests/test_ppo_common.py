"""The one PPO of both PPO agents (agents/algos/ppo.py): GAE and slices against plain per-step
reference loops, the resume-lr fix, the logged diagnostics, and exact resume of ppo_locomamba."""

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from agents.algos.ppo import (PPOConfig, adapt_kl_scale, compute_advantages, lr_scale, make_optimizer, restore_optimizer,
                               slices)

GAMMA, LMBDA = 0.9, 0.8


class _Trunk(nn.Module):
    """A stateless trunk: memory = observation (so V is a plain function of the observation)."""
    in_keys, out_keys = ["obs"], ["memory"]

    def forward(self, td):
        td["memory"] = td["obs"]
        return td


class _Value(nn.Module):
    in_keys, out_keys = ["memory"], ["state_value"]

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, td):
        td["state_value"] = self.lin(td["memory"])
        return td


def _batch(E=2, T=6, seed=0):
    """[E, T] with a termination and a truncation inside row 0 and a truncation in row 1."""
    g = torch.Generator().manual_seed(seed)
    obs, nxt = torch.randn(E, T, 3, generator=g), torch.randn(E, T, 3, generator=g)
    reward = torch.randn(E, T, 1, generator=g)
    terminated = torch.zeros(E, T, 1, dtype=torch.bool)
    truncated = torch.zeros(E, T, 1, dtype=torch.bool)
    terminated[0, 1] = True          # row 0: episode ends by termination at t=1 ...
    truncated[0, 3] = True           # ... and by truncation at t=3
    truncated[1, 2] = True           # row 1: truncation at t=2
    done = terminated | truncated
    is_init = torch.zeros(E, T, 1, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[:, 1:] = done[:, :-1]    # a new episode starts after every end
    for e in range(E):               # a continuing step's next observation is the next step's observation
        for t in range(T - 1):
            if not done[e, t]:
                nxt[e, t] = obs[e, t + 1]
    return TensorDict({"obs": obs, "is_init": is_init,
                       "next": {"obs": nxt, "reward": reward, "done": done, "terminated": terminated,
                                "truncated": truncated, "is_init": torch.zeros_like(is_init)}}, [E, T])


def _reference_gae(batch, value):
    """Per-step loop: delta_t = r_t + gamma * V(s'_t) * (1 - terminated_t) - V(s_t); the trace is cut at
    every episode end (termination or truncation); V(s'_t) always from the stored next observation."""
    E, T = batch.shape
    adv = torch.zeros(E, T, 1)
    with torch.no_grad():
        v = value.lin(batch["obs"])
        v_next = value.lin(batch["next", "obs"])
    for e in range(E):
        running = 0.0
        for t in reversed(range(T)):
            term = float(batch["next", "terminated"][e, t])
            delta = batch["next", "reward"][e, t] + GAMMA * v_next[e, t] * (1 - term) - v[e, t]
            cut = float(batch["next", "done"][e, t])
            running = delta + GAMMA * LMBDA * (1 - cut) * running
            adv[e, t] = running
    return adv, adv + v


def test_compute_advantages_matches_a_per_step_loop_with_truncation_and_termination():
    torch.manual_seed(0)
    trunk, value = _Trunk(), _Value()
    batch = _batch()

    def value_step(td):
        return value(trunk(td))

    out = compute_advantages(batch.clone(), trunk, value, value_step, GAMMA, LMBDA)
    adv, target = _reference_gae(batch, value)
    torch.testing.assert_close(out["advantage"], adv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["value_target"], target, rtol=1e-5, atol=1e-6)


def test_slices_cover_each_frame_once_per_epoch_in_contiguous_pieces():
    E, T, L = 3, 8, 4
    batch = TensorDict({"idx": torch.arange(E * T).reshape(E, T)}, [E, T])
    gen = torch.Generator().manual_seed(1)
    seen = []
    for mb in slices(batch, L, 2, gen):
        assert mb.shape == (2, L)
        for row in mb["idx"]:
            # contiguous, and inside one env's row of the batch
            assert torch.equal(row, torch.arange(row[0], row[0] + L)) and row[0] // T == row[-1] // T
            seen += row.tolist()
    assert sorted(seen) == list(range(E * T))       # (E*T/L) = 6 slices, 3 minibatches of 2, nothing lost
    order1 = [mb["idx"][:, 0].tolist() for mb in slices(batch, L, 2, torch.Generator().manual_seed(1))]
    order2 = [mb["idx"][:, 0].tolist() for mb in slices(batch, L, 2, torch.Generator().manual_seed(2))]
    assert order1 != order2                          # the generator decides the order


class _Nets(nn.Module):
    def __init__(self):
        super().__init__()
        self.front, self.memory, self.actor_head, self.value_head = (nn.Linear(2, 2) for _ in range(4))


def test_resume_takes_the_configured_lr_not_the_checkpoints():
    nets = _Nets()
    old = make_optimizer(nets, PPOConfig(lr=1e-4, value_lr=2e-4))
    nets.front.weight.sum().backward()
    old.step()
    new = make_optimizer(nets, PPOConfig(lr=5e-4, value_lr=6e-4))
    restore_optimizer(new, old.state_dict(), PPOConfig(lr=5e-4, value_lr=6e-4))
    assert [g["lr"] for g in new.param_groups] == [5e-4, 6e-4]
    assert [g["initial_lr"] for g in new.param_groups] == [5e-4, 6e-4]
    assert new.param_groups[0]["eps"] == 1e-5
    assert len(new.state) == len(old.state) > 0      # the moments came along
    # plain load_state_dict (the old behaviour) would keep 1e-4: the bug this guards against
    plain = make_optimizer(nets, PPOConfig(lr=5e-4))
    plain.load_state_dict(old.state_dict())
    assert plain.param_groups[0]["lr"] == 1e-4


def test_lr_schedule():
    assert lr_scale(PPOConfig(anneal_lr=False), 500, 1000) == 1.0
    assert lr_scale(PPOConfig(anneal_lr=True), 250, 1000) == pytest.approx(0.75)
    assert lr_scale(PPOConfig(anneal_lr=True), 2000, 1000) == 0.0


def test_kl_adaptive_lr_follows_rsl_rl_and_survives_a_resume():
    nets = _Nets()
    cfg = PPOConfig(lr=1e-3, value_lr=2e-3, desired_kl=0.01)
    opt = make_optimizer(nets, cfg)
    assert [g["kl_scale"] for g in opt.param_groups] == [1.0, 1.0]
    adapt_kl_scale(opt, 0.05, 0.01)                    # KL > 2 x desired: / 1.5
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 / 1.5, 2e-3 / 1.5])
    adapt_kl_scale(opt, 0.015, 0.01)                   # inside [desired/2, 2 desired]: unchanged
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 1.5)
    adapt_kl_scale(opt, 0.001, 0.01)                   # KL < desired / 2: x 1.5
    adapt_kl_scale(opt, 0.001, 0.01)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.5e-3)
    assert opt.param_groups[0]["kl_scale"] == pytest.approx(1.5)
    for _ in range(40):                                # bounded as in rsl_rl
        adapt_kl_scale(opt, 0.0, 0.01)
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-2)
    for _ in range(80):
        adapt_kl_scale(opt, 1.0, 0.01)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    # the factor is training state: a resume keeps it (and a changed base lr scales with it)
    adapt_kl_scale(opt, 0.0, 0.01)
    scale = opt.param_groups[0]["kl_scale"]
    new = make_optimizer(nets, cfg)
    restore_optimizer(new, opt.state_dict(), cfg)
    assert new.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert new.param_groups[0]["kl_scale"] == pytest.approx(scale)
    off = make_optimizer(nets, PPOConfig(lr=1e-3))     # the schedule switched off on resume: base lr
    restore_optimizer(off, opt.state_dict(), PPOConfig(lr=1e-3))
    assert off.param_groups[0]["lr"] == 1e-3


TINY = ["env.course=flat", "env.num_envs=2", "env.parallel=false", "env.horizon=24", "model.hidden_shapes=[16]",
        "model.visual_dim=16", "model.mamba_params=[[16,4,4,2]]", "model.append_hidden_shapes=[16]",
        "model.memory_hidden=16", "env.image_size=40", "ppo.minibatch_size=32", "ppo.slice_len=16",
        "ppo.epochs=2", "train.frames_per_batch=64", "train.checkpoint_every_iters=2", "train.eval_episodes=1",
        "logger=csv"]


def _final_state(run_root):
    from agents.runtime.run_dir import RunDir

    run = RunDir(next((run_root / "ppo_locomamba").iterdir()))
    return torch.load(run.latest_checkpoint(), weights_only=True)


def test_ppo_locomamba_resumed_equals_uninterrupted_bit_for_bit(tmp_path, capsys):
    from agents import ppo_locomamba

    a, b = tmp_path / "a", tmp_path / "b"
    # with the KL-adaptive lr on, so that its factor must come back with the optimiser too
    assert ppo_locomamba.main(["--config", "configs/quadruped/quick_flat.yaml", *TINY, "train.total_frames=256",
                               "ppo.desired_kl=0.001", f"run_root={a}", "name=x"]) == 0
    assert ppo_locomamba.main(["--config", "configs/quadruped/quick_flat.yaml", *TINY, "train.total_frames=128",
                               "ppo.desired_kl=0.001", f"run_root={b}", "name=x"]) == 0
    run_b = next((b / "ppo_locomamba").iterdir())
    assert ppo_locomamba.main(["--resume", str(run_b), "train.total_frames=256"]) == 0
    sa, sb = _final_state(a), _final_state(b)
    assert sa["frames"] == sb["frames"] == 256
    diff = [k for k in sa["model"] if not torch.equal(sa["model"][k], sb["model"][k])]
    assert not diff, f"{len(diff)} of {len(sa['model'])} tensors differ after resume, e.g. {diff[:3]}"
    for sa_g, sb_g in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(sa_g["exp_avg_sq"], sb_g["exp_avg_sq"])
    lrs = [(g["lr"], g["kl_scale"]) for g in sa["optimizer"]["param_groups"]]
    assert lrs == [(g["lr"], g["kl_scale"]) for g in sb["optimizer"]["param_groups"]]
    assert lrs[0][1] != 1.0                            # the schedule did move the lr
    # the logged diagnostics PPO users read
    run_a = next((a / "ppo_locomamba").iterdir())
    scal = run_a / "metrics" / "scalars" / "loss"
    for name in ("clip_fraction", "kl_approx", "entropy", "explained_variance", "grad_norm", "lr"):
        assert (scal / f"{name}.csv").exists(), name
    # --export: acting weights only, float16 matrices, and --eval takes the export
    assert ppo_locomamba.main(["--export", str(run_a)]) == 0
    exported = next((run_a / "export").glob("*_float16.pt"))
    ex = torch.load(exported, weights_only=True)
    assert "optimizer" not in ex and "rng" not in ex and "minibatch_rng" not in ex
    assert {v.dtype for v in ex["model"].values() if v.dim() >= 2} == {torch.float16}
    capsys.readouterr()
    assert ppo_locomamba.main(["--eval", str(exported), "--episodes", "1", "--stochastic"]) == 0
    assert "over 1 stochastic episodes: return" in capsys.readouterr().out
    assert ppo_locomamba.main(["--export", str(tmp_path / "nothing")]) == 2


def test_a_sigterm_checkpoints_the_frame_it_arrives_and_the_resume_equals_the_run_that_checkpointed_there(
        tmp_path, capsys, sigterm_after_log):
    """A real SIGTERM (to this process, from the frame-128 log call) during run B, whose periodic
    checkpoint is only at the end (256): B finishes that batch, writes ckpt 128 with the eval due
    there left pending, and exits 0. Resumed, it runs that eval first and trains to 256. Run A,
    never signalled, checkpoints at 128 by its config: its final state and its eval records (128 and
    the final one) equal B's, bit for bit."""
    import signal

    from agents import ppo_locomamba

    tiny = [o for o in TINY if not o.startswith("train.checkpoint_every_iters=")]
    args = ["--config", "configs/quadruped/quick_flat.yaml", *tiny, "train.total_frames=256",
            "train.eval_every_iters=2", "name=x"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert ppo_locomamba.main([*args, "train.checkpoint_every_iters=2", f"run_root={a}"]) == 0
    capsys.readouterr()
    with sigterm_after_log(ppo_locomamba, 128):
        assert ppo_locomamba.main([*args, "train.checkpoint_every_iters=4", f"run_root={b}"]) == 0
    out = capsys.readouterr().out
    assert "stopped by SIGTERM at frame 128" in out, out[-2000:]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL          # the handler is given back
    run_b = next((b / "ppo_locomamba").iterdir())
    stopped = _final_state(b)
    assert stopped["frames"] == 128 and stopped["eval_pending"] is True
    assert not (run_b / "metrics" / "scalars" / "eval").exists()       # the due eval did not run yet
    assert ppo_locomamba.main(["--resume", str(run_b)]) == 0
    sa, sb = _final_state(a), _final_state(b)
    assert sa["frames"] == sb["frames"] == 256
    diff = [k for k in sa["model"] if not torch.equal(sa["model"][k], sb["model"][k])]
    assert not diff, f"{len(diff)} of {len(sa['model'])} tensors differ after the stop and resume, e.g. {diff[:3]}"
    run_a = next((a / "ppo_locomamba").iterdir())
    evals = [(r / "metrics" / "scalars" / "eval" / "distance.csv").read_text() for r in (run_a, run_b)]
    assert evals[0] == evals[1] and [row.split(",")[0] for row in evals[0].split()] == ["128", "256"], evals


def test_shipped_quadruped_policies_load_into_their_networks():
    from pathlib import Path

    from agents.runtime.config import from_dict
    from agents.quadruped.config import Config
    from agents.quadruped.build import build_policy

    shipped = sorted(Path("agents/policies/quadruped").glob("*.pt"))
    assert shipped, "no shipped quadruped policy"
    for path in shipped:
        state = torch.load(path, weights_only=True)
        nets = build_policy(from_dict(Config, state["config"]))
        nets.load_state_dict(state["model"])            # strict: every weight of the network is there
        assert state["exported"]["dtype"] == "float16"


def test_the_shipped_flat_policy_walks_its_first_six_seconds():
    """The artefact behind the README's walking GIF, guarded against env or network changes that
    would silently break it: the float16 export, deterministic actions, 150 control steps (6 s)
    on the flat course. Measured: 5.5 m (10 full 1000-step episodes: 32.4 m, no falls)."""
    from dataclasses import replace

    from agents.runtime.config import from_dict
    from agents.quadruped.config import Config
    from agents.quadruped.build import build_policy, evaluate

    state = torch.load("agents/policies/quadruped/flat_locomamba_2273k.pt", weights_only=True)
    cfg = from_dict(Config, state["config"])
    cfg = replace(cfg, env=replace(cfg.env, horizon=150))
    nets = build_policy(cfg)
    nets.load_state_dict(state["model"])
    result = evaluate(cfg, nets, 1, seed=cfg.seed + 12345)
    assert result["falls"] == 0 and result["length"] == 150, result
    assert result["distance"] > 3.0, result              # standing still gives ~0.1 m


def test_ppo_memory_resumed_equals_uninterrupted_bit_for_bit(tmp_path):
    from agents import ppo_memory

    tiny = ["env.num_envs=4", "env.task=repeat_previous", "model.memory=mamba1", "model.embed=8", "model.hidden=8",
            "model.head_hidden=8", "ppo.slice_len=8", "ppo.minibatch_size=32", "ppo.epochs=2",
            "train.frames_per_batch=64", "train.checkpoint_every_iters=2", "train.eval_episodes=2", "threads=1",
            "ppo.anneal_lr=false"]  # B trains to 128 first: an lr annealed over total_frames would differ
    a, b = tmp_path / "a", tmp_path / "b"
    assert ppo_memory.main([*tiny, "train.total_frames=256", f"run_root={a}"]) == 0
    assert ppo_memory.main([*tiny, "train.total_frames=128", f"run_root={b}"]) == 0
    run_b = next((b / "ppo_memory").iterdir())
    assert ppo_memory.main(["--resume", str(run_b), "train.total_frames=256"]) == 0
    sa = torch.load(sorted((next((a / "ppo_memory").iterdir()) / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    sb = torch.load(sorted((run_b / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert sa["frames"] == sb["frames"] == 256
    diff = [k for k in sa["model"] if not torch.equal(sa["model"][k], sb["model"][k])]
    assert not diff, f"{len(diff)} of {len(sa['model'])} tensors differ after resume, e.g. {diff[:3]}"
    assert [c["return"] for c in sa["curve"]] == [c["return"] for c in sb["curve"]]


def test_std_cap_bounds_the_sampled_distribution_and_follows_its_schedule():
    from agents.runtime.config import load_config
    from agents.quadruped.config import Config
    from agents.quadruped.build import build_policy, make_env, std_cap_at

    cfg = load_config(Config, "configs/quadruped/quick_flat.yaml",
                      ["train.std_cap=[0.2,0.02]", "train.total_frames=1000", "env.num_envs=1"])
    assert [std_cap_at(cfg, f) for f in (0, 500, 1000, 5000)] == pytest.approx([0.2, 0.11, 0.02, 0.02])
    nets = build_policy(cfg)
    env = make_env(cfg.env, seed=0, num_envs=1, primer=nets.primer())
    td = env.reset()
    env.close()
    free = nets.policy(td.clone())["scale"]
    assert free.min() > 0.02                                  # init_std 0.3: the cap below binds
    nets.std_cap.set(0.02)
    capped = nets.policy(td.clone())
    assert capped["scale"].max() <= 0.02 + 1e-7
    assert torch.equal(capped["loc"], nets.policy(td.clone())["loc"])   # the mean is untouched
    assert "std_cap.cap" not in nets.state_dict()             # old checkpoints and exports still load


def test_eval_of_a_foreign_or_pickled_file_exits_2_with_a_message_of_ours(tmp_path, capsys):
    import pickle

    from agents import ppo_locomamba, ppo_memory

    # another agent's checkpoint: the message names this agent, not only a stray key
    assert ppo_memory.main(["--eval", "agents/policies/quadruped/flat_locomamba_2273k.pt"]) == 2
    assert "does not fit ppo_memory" in capsys.readouterr().err
    # a pickle of objects: refused without passing on torch's advice to use weights_only=False
    bad = tmp_path / "objects.pt"
    bad.write_bytes(pickle.dumps({"a": object}, protocol=2))
    assert ppo_locomamba.main(["--eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "never unpickles" in err and "weights_only=False" not in err and "weights_only` set to `False" not in err
