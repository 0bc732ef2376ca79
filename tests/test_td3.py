"""TD3 agent (agents/vmamba_td3.py): sequence replay, tiny runs, resume, config errors."""
import json
import glob
import os
import re

import pytest
import torch
from tensordict import TensorDict

from agents import vmamba_td3
from agents.runtime.config import load_config
from agents.drone.config import Config
from agents.drone.build import check_slices, make_env, make_replay, windows

PENDULUM = "configs/pendulum/td3_mamba.yaml"
TINY = ["replay.batch_size=8", "replay.seq_len=4", "replay.size=2000", "train.learning_starts=100",
        "train.frames_per_batch=50", "train.updates_per_step=0.2", "train.eval_episodes=1",
        "model.memory_hidden=8", "model.hidden_dim=16"]


def fake_episodes(lengths, obs_dim=2):
    """Consecutive episodes; 'ep' and 't' record where each stored step came from."""
    rows = []
    for ep, n in enumerate(lengths):
        for t in range(n):
            last = t == n - 1
            rows.append(TensorDict({
                "observation": torch.full((obs_dim,), float(ep * 1000 + t)), "action": torch.zeros(1),
                "ep": torch.tensor(ep), "t": torch.tensor(t), "episode": torch.tensor(ep),
                "next": {"observation": torch.full((obs_dim,), float(ep * 1000 + t + 1)),
                         "reward": torch.ones(1), "done": torch.tensor([last]),
                         "terminated": torch.tensor([last]), "truncated": torch.tensor([False])}}, []))
    return torch.stack(rows)


def test_sampled_slices_stay_inside_one_episode_and_have_seq_len_steps():
    cfg = load_config(Config, PENDULUM, ["replay.seq_len=5", "replay.batch_size=64", "replay.size=500"])
    rb = make_replay(cfg)
    rb.extend(fake_episodes([3, 17, 5, 2, 40, 6, 9]))  # 3- and 2-step episodes cannot hold a slice
    seen_starts = set()
    for _ in range(20):
        s = rb.sample()
        check_slices(cfg, s)
        s = s.reshape(-1, 5)
        assert (s["ep"] == s["ep"][:, :1]).all(), "a slice mixes episodes"
        assert ((s["t"][:, 1:] - s["t"][:, :-1]) == 1).all(), "a slice skips or repeats steps"
        assert not set(s["ep"][:, 0].tolist()) & {0, 3}
        seen_starts |= set(zip(s["ep"][:, 0].tolist(), s["t"][:, 0].tolist()))
    assert (4, 35) in seen_starts or any(ep == 4 and t >= 30 for ep, t in seen_starts)  # reaches episode ends


def test_the_eval_env_is_named_cpu_so_a_cuda_actor_s_action_comes_back():
    """evaluate() rolls out with auto_cast_to_device: the action is moved to the env's device, which
    must be a device (an env of device None kept a CUDA action, and RewardSum then mixed cuda and cpu)."""
    env = make_env(load_config(Config, PENDULUM, []), seed=0)
    assert env.device == torch.device("cpu")
    env.close()


def test_windows_shift_by_one_step_for_the_target():
    cfg = load_config(Config, PENDULUM, ["replay.seq_len=4", "replay.batch_size=16", "replay.size=500"])
    rb = make_replay(cfg)
    rb.extend(fake_episodes([30, 30]))
    (now,), (nxt,), action, reward, terminated = windows(cfg, rb.sample(), "cpu")
    assert now.shape == nxt.shape == (16, 4, 2) and action.shape == (16, 1)
    torch.testing.assert_close(nxt[:, :-1], now[:, 1:])
    torch.testing.assert_close(nxt[:, -1], now[:, -1] + 1)   # the last step's next observation
    assert terminated.shape == reward.shape == (16, 1)


def test_check_slices_raises_on_a_crossing_slice():
    cfg = load_config(Config, PENDULUM, ["replay.seq_len=3"])
    bad = fake_episodes([2, 5])[:3]  # the episode ends at the 2nd step of this "slice"
    with pytest.raises(RuntimeError, match="crosses an episode end"):
        check_slices(cfg, bad)


def run(args):
    return vmamba_td3.main(args)


def test_tiny_pendulum_run_writes_checkpoint_and_resumes(tmp_path, capsys):
    assert run(["--config", PENDULUM, *TINY, "train.total_frames=300", "train.checkpoint_every_frames=200",
                f"run_root={tmp_path}"]) == 0
    (run_dir,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    assert ckpts[-1] == "ckpt_000000000300.pt"
    assert os.path.isdir(os.path.join(run_dir, "replay"))
    capsys.readouterr()
    assert run(["--resume", run_dir, "train.total_frames=400"]) == 0
    out = capsys.readouterr().out
    assert "resumed at frame 300" in out and "replay 300 steps" in out
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints")))[-1] == "ckpt_000000000400.pt"
    final = open(os.path.join(run_dir, "metrics", "scalars", "eval", "return.csv")).read().split()[-1]
    assert final.startswith("400,")
    # --eval-seed seed + EVAL_SEED_OFFSET flies the final eval's own episodes: its return, to the digit;
    # the default flies others (seed + HELDOUT_SEED_OFFSET)
    capsys.readouterr()
    assert run(["--eval", run_dir, "--episodes", "1", "--eval-seed", str(vmamba_td3.EVAL_SEED_OFFSET)]) == 0
    out = capsys.readouterr().out
    assert f"(seed {vmamba_td3.EVAL_SEED_OFFSET}): return {float(final.split(',')[1]):.3f}" in out, (final, out)
    assert run(["--eval", run_dir, "--episodes", "1"]) == 0
    assert f"(seed {vmamba_td3.HELDOUT_SEED_OFFSET}): return" in capsys.readouterr().out
    # the export holds the acting weights alone (no optimiser, OU or replay state) and evaluates
    export = str(tmp_path / "policy.pt")
    assert run(["--export", run_dir, "--out", export]) == 0
    state = torch.load(export, weights_only=True)
    assert not {k for k in state if k.startswith("optim_") or k in ("ou", "replay", "rng")}, sorted(state)
    assert run(["--eval", export, "--episodes", "1"]) == 0
    capsys.readouterr()
    assert run(["--eval", export, "--episodes", "1", "--eval-env", "mambazoo/DroneWalls-v0"]) == 2
    err = capsys.readouterr().err                        # a Pendulum policy has no drone field to change
    assert "--eval-env mambazoo/DroneWalls-v0: " in err and "trained on mambazoo/PendulumNoVel-v0, not a drone field" in err


def test_tiny_drone_run_with_vmamba_writes_eval_video_and_attention_plots(tmp_path, monkeypatch):
    shifted = []   # td3.image_shift reaches the update: both windows (t and t+1) of every update
    monkeypatch.setattr(vmamba_td3, "random_shift", lambda x, pad: shifted.append(pad) or x)
    args = ["--config", "configs/drone/quick_vmamba.yaml", "env.image_size=32", "env.max_episode_steps=15",
            "model.depths=[1,1,1,1]", "model.dims=[8,8,8,8]", "model.d_model=16", "model.hidden_dim=16",
            "replay.batch_size=2", "replay.seq_len=2", "replay.size=200", "train.total_frames=40",
            "train.learning_starts=20", "train.frames_per_batch=20", "train.updates_per_step=0.1",
            "train.eval_episodes=1", "td3.image_shift=2", f"run_root={tmp_path}"]
    assert run(args) == 0
    assert shifted and set(shifted) == {2} and len(shifted) % 2 == 0
    (run_dir,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    files = {os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "videos", "*", "*"))}
    assert {"attention.png", "feature_maps.png"} <= files
    assert files & {"eval_episode.mp4", "eval_episode.gif"}
    # a loose export (a shipped policy) writes eval_<name>/ beside itself, not a shared videos/ folder
    export = tmp_path / "shipped" / "policy.pt"
    export.parent.mkdir()
    assert run(["--export", run_dir, "--out", str(export)]) == 0
    assert run(["--eval", str(export), "--episodes", "1"]) == 0
    assert sorted(os.listdir(export.parent)) == ["eval_policy", "policy.pt"]
    assert {"attention.png", "feature_maps.png"} <= set(os.listdir(export.parent / "eval_policy"))
    # --eval-env flies the policy in another field (Walls here), into its own folder
    flown = []
    real_make_env = vmamba_td3.make_env
    monkeypatch.setattr(vmamba_td3, "make_env", lambda cfg, **kw: flown.append(cfg.env.id) or real_make_env(cfg, **kw))
    assert run(["--eval", str(export), "--episodes", "1", "--eval-env", "mambazoo/DroneWalls-v0"]) == 0
    assert flown == ["mambazoo/DroneWalls-v0"]
    assert "eval_policy_DroneWalls-v0" in os.listdir(export.parent)


def _shared_nets_and_batch(seed=0):
    from agents.drone.build import build_nets
    cfg = load_config(Config, PENDULUM, [*TINY, "model.shared_encoder=true"])
    env = make_env(cfg, seed=0)
    torch.manual_seed(seed)
    nets = build_nets(cfg, env)
    env.close()
    rb = make_replay(cfg)
    obs_dim = env.observation_spec["observation"].shape[-1]
    rb.extend(fake_episodes([40, 40], obs_dim=obs_dim))
    torch.manual_seed(seed + 1)
    return cfg, nets, windows(cfg, rb.sample(), "cpu")


def test_shared_encoder_is_trained_by_the_critic_alone_and_its_target_moves_once():
    """model.shared_encoder (DrQ-v2's layout): the actor's encoder is the critic's, the target
    actor's the target critic's; the actor's optimiser holds only its head; an actor turn leaves
    the encoder exactly where the critic's step put it; the shared target encoder moves by tau once."""
    import copy
    from agents.vmamba_td3 import td3_step
    cfg, nets, batch = _shared_nets_and_batch()
    assert nets.actor.encoder is nets.critic.encoder and nets.actor_target.encoder is nets.critic_target.encoder
    assert nets.critic_target.encoder is not nets.critic.encoder
    enc_ids = {id(p) for p in nets.critic.encoder.parameters()}
    assert enc_ids and not enc_ids & {id(p) for p in nets.actor_parameters()}
    targets, online = nets.target_pairs()
    assert len(targets) == len({id(t) for t in targets}) == len(list(torch.nn.ModuleList([nets.actor, nets.critic]).parameters()))

    def optims_for(n):
        return {"actor": torch.optim.Adam(n.actor_parameters(), lr=1e-2), "critic": torch.optim.Adam(n.critic.parameters(), lr=1e-2)}

    both, critic_only = nets, copy.deepcopy(nets)
    assert critic_only.actor.encoder is critic_only.critic.encoder   # deepcopy keeps the sharing
    target_before = [p.clone() for p in nets.critic_target.encoder.parameters()]
    head_before = [p.clone() for p in nets.actor.head.parameters()]
    torch.manual_seed(5)
    td3_step(cfg, both, optims_for(both), batch, actor_turn=True)
    torch.manual_seed(5)
    td3_step(cfg, critic_only, optims_for(critic_only), batch, actor_turn=False)
    for a, b in zip(both.critic.encoder.parameters(), critic_only.critic.encoder.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(both.actor.head.parameters(), head_before))
    tau = cfg.td3.tau
    for t, t0, o in zip(both.critic_target.encoder.parameters(), target_before, both.critic.encoder.parameters()):
        torch.testing.assert_close(t, t0 + tau * (o - t0))


def test_tiny_pendulum_run_with_a_shared_encoder_trains_and_resumes(tmp_path, capsys):
    assert run(["--config", PENDULUM, *TINY, "model.shared_encoder=true", "train.total_frames=300",
                "train.checkpoint_every_frames=200", f"run_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "actor (head; encoder: the critic's)" in out
    (run_dir,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    assert run(["--resume", run_dir, "train.total_frames=400"]) == 0
    assert "resumed at frame 300" in capsys.readouterr().out
    assert run(["--eval", run_dir, "--episodes", "1"]) == 0


def test_resume_without_its_replay_refills_it_only_when_asked(tmp_path, capsys):
    """Replay buffers need not travel with a run (a GPU host's disk goes with the host): without its
    replay folder a resume is an error naming train.refill_replay; with it, the resumed policy collects
    train.learning_starts steps before the updates go on."""
    import shutil
    assert run(["--config", PENDULUM, *TINY, "train.total_frames=300", "train.checkpoint_every_frames=300",
                f"run_root={tmp_path}"]) == 0
    (run_dir,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    before = torch.load(os.path.join(run_dir, "checkpoints", "ckpt_000000000300.pt"), weights_only=True)["updates"]
    shutil.rmtree(os.path.join(run_dir, "replay"))
    capsys.readouterr()
    assert run(["--resume", run_dir, "train.total_frames=500"]) != 0
    assert "train.refill_replay=true" in capsys.readouterr().err
    assert run(["--resume", run_dir, "train.total_frames=500", "train.refill_replay=true"]) == 0
    out = capsys.readouterr().out
    assert "collects 100 steps with the resumed policy before updating again (until frame 400)" in out
    assert "the refill reaches" not in out
    after = torch.load(os.path.join(run_dir, "checkpoints", "ckpt_000000000500.pt"), weights_only=True)
    # batches of 50 frames at 0.2 updates a frame: only those ending at 400, 450 and 500 update
    assert after["updates"] - before == 3 * 10 and after["refill_until"] == 400
    # a refill that reaches the end says the rest of the run does not update
    shutil.rmtree(os.path.join(run_dir, "replay"))
    assert run(["--resume", run_dir, "train.total_frames=550", "train.refill_replay=true"]) == 0
    out = capsys.readouterr().out
    assert "warning: the refill reaches train.total_frames=550: no update runs" in out
    final = torch.load(os.path.join(run_dir, "checkpoints", "ckpt_000000000550.pt"), weights_only=True)
    assert final["updates"] == after["updates"]


def test_config_errors_name_the_key(capsys):
    assert run(["--config", PENDULUM, "model.encoder=vmamba", "--dry-run"]) == 2
    assert "model.encoder" in capsys.readouterr().err
    assert run(["--config", PENDULUM, "td3.policy_delay=0", "--dry-run"]) == 2
    assert "td3.policy_delay" in capsys.readouterr().err
    assert run(["--config", PENDULUM, "env.id=mambazoo/NoSuchEnv-v0", "--dry-run"]) == 2
    assert "env.id" in capsys.readouterr().err


def test_plain_command_trains_the_cpu_config_without_cuda(capsys):
    from agents import vmamba_td3

    plain = vmamba_td3.parse_args([])
    assert vmamba_td3.use_cpu_default(plain, cuda=False) and not vmamba_td3.use_cpu_default(plain, cuda=True)
    for given in (["--config", "configs/drone/seed_vmamba.yaml"], ["--resume", "x"], ["--eval", "x"]):
        assert not vmamba_td3.use_cpu_default(vmamba_td3.parse_args(given), cuda=False)
    if not torch.cuda.is_available():
        assert vmamba_td3.main(["--dry-run", "train.total_frames=100"]) == 0
        out = capsys.readouterr().out
        assert "no CUDA device: training the CPU-sized configs/drone/quick_vmamba.yaml" in out
        assert "name: drone_quick_vmamba" in out and "total_frames: 100" in out
    from agents.runtime.config import load_config
    from agents.drone.config import Config

    seed, defaults = load_config(Config, "configs/drone/seed_vmamba.yaml", []), Config()
    assert seed.model == defaults.model and seed.train == defaults.train     # the seed size is the defaults


def test_progress_shows_the_current_rate_not_the_running_average(tmp_path, capsys, monkeypatch):
    """Without a terminal a line comes at least every PROGRESS_EVERY_S (and at the end) with the
    steps/s since the previous line: 1000 frames in 10 s then 1000 in 100 s read 100 then 10 (the
    average since the start would say 18). The bar's postfix is the last batch's rate."""
    from agents.runtime import progress as progress_module

    progress = progress_module.ProgressRate(0.0, 0, every_s=20.0)
    assert progress.line_rate(5.0, 500) is None                    # not due yet
    assert progress.line_rate(10.0, 1000, final=True) == 100.0     # the end of the run is always a line
    assert progress.line_rate(29.0, 1100) is None
    assert progress.line_rate(110.0, 2000) == 10.0
    assert progress.batch_rate(1.0, 100) == 100.0 and progress.batch_rate(3.0, 200) == 50.0
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_S", 0.0)    # a line per batch
    assert run(["--config", PENDULUM, *TINY, "train.total_frames=150", f"run_root={tmp_path}", "logger=none"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("frames ")]
    assert [line.split()[1] for line in lines] == ["50", "100", "150"]
    assert all(re.search(r"steps/s \d+ \(average \d+\) updates \d+$", line) for line in lines), lines


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("memory", ["mamba1", "gru", "mamba1+shared"])
def test_cuda_graph_updates_match_eager_and_checkpoints_stay_portable(tmp_path, memory, caplog):
    """train.cuda_graph replays the critic-only and the critic+actor+targets updates as CUDA graphs:
    the same run as eager (weights after ~70 updates, same RNG streams), its checkpoint an ordinary
    one (float lr, capturable off, CPU step counters) that resumes on the CPU. A GRU memory (cuDNN,
    not capturable) is said to be updated eagerly before any capture is tried, and trains the same."""
    memory, shared = memory.split("+")[0], memory.endswith("+shared")   # +shared: model.shared_encoder
    args = ["--config", PENDULUM, *TINY, "train.total_frames=400", "train.checkpoint_every_frames=400",
            f"model.memory={memory}", f"model.shared_encoder={str(shared).lower()}", "device=cuda", "logger=none"]
    states = []
    for graph in ("false", "true"):
        root = tmp_path / graph
        with caplog.at_level("WARNING", logger="mambazoo"):
            assert run([*args, f"run_root={root}", f"train.cuda_graph={graph}"]) == 0
        (run_dir,) = glob.glob(str(root / "vmamba_td3" / "*"))
        states.append(torch.load(os.path.join(run_dir, "checkpoints", "ckpt_000000000400.pt"), map_location="cpu",
                                 weights_only=True))
    messages = [r.getMessage() for r in caplog.records]
    if memory == "gru":   # cuDNN's GRU cannot be captured: said, then the same updates eagerly
        assert any("train.cuda_graph skipped" in m and "cuDNN GRU" in m for m in messages), messages
    else:
        assert any("replayed as CUDA graphs" in m for m in messages), "the graphed run fell back to eager"
    eager, graphed = states
    assert eager["updates"] == graphed["updates"] >= 50
    for name, a in eager["model"].items():
        torch.testing.assert_close(graphed["model"][name], a, rtol=1e-3, atol=1e-5, msg=name)
    for k in ("optim_actor", "optim_critic"):
        group = graphed[k]["param_groups"][0]
        assert type(group["lr"]) is float and group["capturable"] is False
        assert all(st["step"].device.type == "cpu" for st in graphed[k]["state"].values())
    assert run(["--resume", run_dir, "device=cpu", "train.total_frames=450"]) == 0


# ---- env.num_envs > 1: a ParallelEnv of make_env envs in the one collector --------------------------
TWO_ENVS = [*TINY, "env.num_envs=2"]


def test_num_envs_must_divide_frames_per_batch_before_anything_is_made(tmp_path, capsys):
    assert run(["--config", PENDULUM, "train.frames_per_batch=50", "env.num_envs=3", f"run_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "env.num_envs" in err and "train.frames_per_batch" in err
    assert not (tmp_path / "vmamba_td3").exists()          # refused before a run directory


def test_two_envs_windows_never_cross_an_episode_or_an_env():
    """Two worker envs, batches [2, 25], stored flat (each env's episode lies in pieces of 25 between
    the other env's): every sampled K-step window is K consecutive steps of one episode of one env
    (episode ids mapped back to the env whose batch row wrote them), and windows do span two of an
    env's batches (the fragmented sampler joins its pieces)."""
    from agents.drone.build import acting_policy, build_nets, close_env, make_train_env, to_storage

    cfg = load_config(Config, PENDULUM, TWO_ENVS)
    cfg.train.learning_starts = 600                              # random actions: 300 steps per env
    env = make_train_env(cfg, seed=7)
    policy, _ = acting_policy(cfg, build_nets(cfg, env), env.action_spec)
    collector = vmamba_td3.make_collector(cfg, env, policy, "cpu", 600, 0)
    rb, env_of, episode = make_replay(cfg), {}, 0
    try:
        for batch in collector:
            assert batch.shape == (2, 25)
            stored, episode = to_storage(cfg, batch, 1000)        # an offset, as a later segment's
            for i, row in enumerate(stored["episode"].reshape(2, -1).tolist()):
                for ep in row:
                    assert env_of.setdefault(ep, i) == i, "an episode id is used by both envs"
            rb.extend(stored)
    finally:
        collector.shutdown(close_env=False)
        close_env(env)
    assert set(env_of.values()) == {0, 1} and len(env_of) >= 4     # 200-step episodes: each env finished one
    assert episode == max(env_of) >= 1000
    across = 0
    for _ in range(30):
        s, info = rb.sample(return_info=True)
        check_slices(cfg, s)
        s, index = s.reshape(-1, 4), info["index"][0].reshape(-1, 4)     # storage slots (a 1-d storage's tuple)
        assert (s["episode"] == s["episode"][:, :1]).all()
        assert all(len({env_of[ep] for ep in row}) == 1 for row in s["episode"].tolist()), "a window mixes envs"
        assert ((s["step_count"][:, 1:] - s["step_count"][:, :-1]) == 1).all(), "a window skips or repeats steps"
        torch.testing.assert_close(s["next", "observation"][:, :-1], s["observation"][:, 1:])   # one trajectory
        across += int(((index[:, 1:] - index[:, :-1]) != 1).any(1).sum())
    assert across > 0, "no window spans two batches of an env"


def test_two_envs_tiny_run_writes_its_checkpoint(tmp_path):
    assert run(["--config", PENDULUM, *TWO_ENVS, "train.total_frames=300", "train.checkpoint_every_frames=200",
                f"run_root={tmp_path}", "logger=none"]) == 0
    (run_dir,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints")))[-1] == "ckpt_000000000300.pt"
    state = torch.load(os.path.join(run_dir, "checkpoints", "ckpt_000000000300.pt"), weights_only=True)
    assert state["frames"] == 300 and state["updates"] > 0 and state["replay"]["rows"] == 300


def test_two_envs_killed_and_resumed_equals_the_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch):
    """As tests/test_reliability.py's one-env test: run A 300 frames straight; run B killed at 250
    (50 frames past its checkpoint at 200), resumed to 300. With two worker envs re-made (and
    re-seeded seed + frames + i) at every checkpoint, every tensor and number of the final
    checkpoints and the replay are the same."""
    from agents.runtime.run_dir import RunDir

    args = ["--config", PENDULUM, *TWO_ENVS, "train.total_frames=300", "train.checkpoint_every_frames=100",
            "logger=none"]
    assert run([*args, f"run_root={tmp_path / 'a'}", "name=a"]) == 0
    real_log = vmamba_td3.log_scalars

    class Crash(BaseException):
        pass

    def dying_log(logger, scalars, step):
        real_log(logger, scalars, step)
        if step == 250:
            raise Crash("kill -9")

    with monkeypatch.context() as m:
        m.setattr(vmamba_td3, "log_scalars", dying_log)
        with pytest.raises(Crash):
            run([*args, f"run_root={tmp_path / 'b'}", "name=b"])
    (b,) = glob.glob(str(tmp_path / "b" / "vmamba_td3" / "*"))
    assert RunDir(b).latest_checkpoint().name == "ckpt_000000000200.pt"
    assert_resumed_equals_run_a(tmp_path, b)


def assert_resumed_equals_run_a(tmp_path, b, ignore=()):
    """Resume run B to its end: its final checkpoint (every tensor and number) and replay equal run A's."""
    from agents.runtime.run_dir import RunDir, differing_entries, flatten_state

    assert run(["--resume", b]) == 0
    (a,) = glob.glob(str(tmp_path / "a" / "vmamba_td3" / "*"))
    sa, sb = (RunDir.load_checkpoint(RunDir(p).latest_checkpoint()) for p in (a, b))
    assert sa["frames"] == sb["frames"] == 300 and sa["updates"] == sb["updates"] > 0
    assert set(flatten_state(sa)) == set(flatten_state(sb))
    assert differing_entries(sa, sb, ("/config/name", "/config/run_root", *ignore)) == []
    assert sa["replay"]["manifest_sha256"] == sb["replay"]["manifest_sha256"]


def test_an_export_writes_a_shared_encoder_once(tmp_path):
    """The float16 export casts each tensor once: a shared encoder's two state-dict names (actor and
    critic, and their targets) keep sharing one tensor, so the file holds it once."""
    import io
    from agents.runtime.export import export_checkpoint
    cfg, nets, _ = _shared_nets_and_batch()
    out = export_checkpoint({"model": nets.state_dict(), "config": {}}, "test")["model"]
    name = next(k for k in out if k.startswith("actor.encoder.") and out[k].dim() >= 2)
    assert out[name] is out["critic." + name.removeprefix("actor.")]
    assert out[name].dtype == torch.float16
    sizes = []
    for shared in (True, False):   # as exported, and with every entry a tensor of its own
        buf = io.BytesIO()
        torch.save(out if shared else {k: v.clone() for k, v in out.items()}, buf)
        sizes.append(buf.tell())
    assert sizes[0] < sizes[1]


def test_random_shift_crops_one_offset_per_window_from_the_edge_padded_images():
    """td3.image_shift (DrQ): every frame of a window moves by the same (dy, dx) in [-pad, pad], the
    border repeats edge pixels, offsets differ between windows, and pad 0 is the identity."""
    from agents.drone.build import random_shift

    torch.manual_seed(0)
    B, K, H, W, pad = 64, 3, 8, 8, 2
    x = torch.rand(B, K, 1, H, W)
    y = random_shift(x, pad)
    assert y.shape == x.shape and random_shift(x, 0) is x
    padded = torch.nn.functional.pad(x.reshape(B, K, H, W), (pad,) * 4, mode="replicate")
    offsets = set()
    for b in range(B):
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(padded[b, :, dy:dy + H, dx:dx + W], y[b, :, 0])]
        assert len(found) == 1, f"window {b}: its K frames are not one crop of the padded images"
        offsets.add(found[0])
    assert len(offsets) > 10   # 25 possible offsets, 64 windows


def test_image_shift_needs_depth_images(capsys):
    assert run(["--config", PENDULUM, *TINY, "td3.image_shift=4", "--dry-run"]) == 2
    assert "td3.image_shift" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine must lack CUDA")
def test_a_checkpoint_trained_on_cuda_evaluates_on_a_cpu_machine(tmp_path, caplog):
    """A GPU host's run (config device=cuda) is evaluated where it lands: --eval on a CPU-only
    machine says so and runs on the CPU instead of refusing the saved config."""
    assert run(["--config", PENDULUM, *TINY, "train.total_frames=150", "train.checkpoint_every_frames=150",
                f"run_root={tmp_path}"]) == 0
    (ckpt,) = glob.glob(str(tmp_path / "vmamba_td3" / "*" / "checkpoints" / "*.pt"))
    state = torch.load(ckpt, weights_only=True)
    state["config"]["device"] = "cuda"
    torch.save(state, ckpt)
    with caplog.at_level("WARNING", logger="mambazoo"):
        assert run(["--eval", ckpt, "--episodes", "1"]) == 0
    assert any("trained with device=cuda" in r.getMessage() for r in caplog.records)


def test_a_sigterm_checkpoints_at_that_frame_and_the_resumed_run_equals_one_checkpointed_there(tmp_path, capsys,
                                                                                           sigterm_after_log):
    """A real SIGTERM (to this process, from the frame-250 log call) during run B, whose periodic
    checkpoint is only at 300: B finishes that batch, writes ckpt 250 and exits 0. Resumed, it trains
    to 300. Run A, never signalled, checkpoints at 250 by its config: its final checkpoint, replay
    and eval records (at 150 and the final one) equal B's, bit for bit."""
    import signal

    from agents.runtime.run_dir import RunDir

    args = ["--config", PENDULUM, *TINY, "train.total_frames=300", "train.eval_every_frames=150", "logger=csv"]
    assert run([*args, "train.checkpoint_every_frames=250", f"run_root={tmp_path / 'a'}", "name=a"]) == 0
    capsys.readouterr()
    with sigterm_after_log(vmamba_td3, 250):
        assert run([*args, "train.checkpoint_every_frames=300", f"run_root={tmp_path / 'b'}", "name=b"]) == 0
    out = capsys.readouterr().out
    assert "stopped by SIGTERM at frame 250" in out and "eval at 150" in out, out[-2000:]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL          # the handler is given back
    (b,) = glob.glob(str(tmp_path / "b" / "vmamba_td3" / "*"))
    assert RunDir(b).latest_checkpoint().name == "ckpt_000000000250.pt"
    assert_resumed_equals_run_a(tmp_path, b, ignore=("/config/train/checkpoint_every_frames",))
    (a,) = glob.glob(str(tmp_path / "a" / "vmamba_td3" / "*"))
    evals = [open(os.path.join(p, "metrics", "scalars", "eval", "return.csv")).read() for p in (a, b)]
    assert evals[0] == evals[1] and [row.split(",")[0] for row in evals[0].split()] == ["150", "300"], evals


def test_a_sigterm_during_an_eval_cuts_it_off_and_the_checkpoint_keeps_it_due(tmp_path, monkeypatch, capsys):
    """The signal arrives inside the eval at 200 (the periodic checkpoint's frame too): the eval stops
    before its next episode and logs nothing, the checkpoint at 200 is written with the eval still
    due, and a resume that is stopped again during that eval leaves the checkpoint as it was."""
    import signal

    from agents.drone import build

    args = ["--config", PENDULUM, *TINY, "train.total_frames=300", "train.eval_every_frames=200",
            "train.checkpoint_every_frames=200", "logger=csv"]
    real_evaluate = build.evaluate
    calls = []

    def signalled_evaluate(*a, should_stop=None, **k):
        calls.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*a, should_stop=should_stop, **k)

    for attempt in range(2):
        capsys.readouterr()
        with monkeypatch.context() as m:
            m.setattr(vmamba_td3, "evaluate", signalled_evaluate)
            first = [*args, f"run_root={tmp_path}", "name=r"]
            assert run(first if attempt == 0 else ["--resume", glob.glob(str(tmp_path / "vmamba_td3" / "*"))[0]]) == 0
        out = capsys.readouterr().out
        (r,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
        state = torch.load(os.path.join(r, "checkpoints", "ckpt_000000000200.pt"), weights_only=True)
        assert state["frames"] == 200 and state["last_eval"] == 0, (attempt, state["last_eval"])
        assert not os.path.exists(os.path.join(r, "metrics", "scalars", "eval", "return.csv"))
        assert ("stopped by SIGTERM at frame 200" if attempt == 0 else "stopped by SIGTERM during the eval at frame 200") in out
    assert len(calls) == 2
    assert run(["--resume", r]) == 0                                   # no signal: the due eval, then on to 300
    rows = open(os.path.join(r, "metrics", "scalars", "eval", "return.csv")).read().split()
    assert [row.split(",")[0] for row in rows] == ["200", "300"], rows


def test_the_best_eval_s_policy_is_exported_and_a_resume_keeps_the_record(tmp_path, monkeypatch, capsys):
    """Evals scripted as success 0.5 (frame 100), 0.8 (200), 0.3 (250, the first run's final eval), then
    after a resume 0.8 with a lower return (300: a tie lost) and 0.6 (400): RUN/export/best_float16.pt
    stays the float16 export of the checkpoint at 200, since the checkpoint carried the record across
    the resume (without it the first eval after the resume would have replaced the export)."""
    from agents.runtime.best_export import BEST_EXPORT, BEST_RECORD
    from agents.runtime.export import export_checkpoint

    script = {100: (0.5, 1.0), 200: (0.8, 0.0), 250: (0.3, 2.0), 300: (0.8, -1.0), 400: (0.6, 3.0)}
    frames_at = []

    def scripted_evaluate(cfg, nets, episodes, seed, should_stop=None, out_dir=None):
        frame = frames_at[-1]
        return {"return": script[frame][1], "success_rate": script[frame][0]}

    real_log = vmamba_td3.log_scalars
    monkeypatch.setattr(vmamba_td3, "log_scalars", lambda lg, s, f: frames_at.append(f) or real_log(lg, s, f))
    monkeypatch.setattr(vmamba_td3, "evaluate", scripted_evaluate)
    monkeypatch.setattr(vmamba_td3, "KEEP_CHECKPOINTS", 10)
    args = ["--config", PENDULUM, *TINY, "train.total_frames=250", "train.eval_every_frames=100",
            "train.checkpoint_every_frames=100", "logger=csv", f"run_root={tmp_path}", "name=r"]
    assert run(args) == 0
    (r,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    assert json.load(open(os.path.join(r, "export", BEST_RECORD)))["frame"] == 200
    assert run(["--resume", r, "train.total_frames=400"]) == 0
    assert "best eval so far (success_rate 0.800 at frame 200)" in capsys.readouterr().out
    record = json.load(open(os.path.join(r, "export", BEST_RECORD)))
    assert record == {"frame": 200, "return": 0.0, "success_rate": 0.8}, record
    best = torch.load(os.path.join(r, "export", BEST_EXPORT), weights_only=True)
    assert best["best_eval"] == record and best["frames"] == 200
    at_200 = export_checkpoint(torch.load(os.path.join(r, "checkpoints", "ckpt_000000000200.pt"), weights_only=True),
                               "ckpt 200")["model"]
    assert best["model"].keys() == at_200.keys()
    assert all(torch.equal(best["model"][k], at_200[k]) for k in at_200), "not the policy of frame 200"
    monkeypatch.undo()
    assert run(["--eval", os.path.join(r, "export", BEST_EXPORT), "--episodes", "1"]) == 0


def test_extending_a_finished_run_does_not_repeat_its_final_eval(tmp_path, capsys):
    """A run done at 100 frames (evals at 50 and the final one at 100), resumed with
    train.total_frames=150: its final eval stands for the one due at 100, so the next eval is the new
    end's (eval rows at 50, 100, 150; before, 100 was evaluated and logged twice)."""
    args = ["--config", PENDULUM, *TINY, "train.total_frames=100", "train.eval_every_frames=50", "logger=csv",
            f"run_root={tmp_path}"]
    assert run(args) == 0
    (r,) = glob.glob(str(tmp_path / "vmamba_td3" / "*"))
    capsys.readouterr()
    assert run(["--resume", r, "train.total_frames=150"]) == 0
    assert "eval at 100" not in capsys.readouterr().out
    rows = open(os.path.join(r, "metrics", "scalars", "eval", "return.csv")).read().split()
    assert [row.split(",")[0] for row in rows] == ["50", "100", "150"], rows
