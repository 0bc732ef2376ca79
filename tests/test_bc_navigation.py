"""Navigation behaviour cloning (agents/bc_navigation.py, networks/models/vint.py, agents/navigation/batches.py):
chunked MambaViNT with carried state == one full-sequence pass == step-by-step deployment, ViNT's
windowed step == its batched forward, TBPTT chunk streams, the waypoint controller, a tiny training
run that lowers the loss, resume, closed-loop eval, and clear errors for bad inputs.
(The dataset's write -> memory-map -> read round trip is tests/test_nav_data.py.)"""
import json
from pathlib import Path
import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from agents.bc_navigation import main
from agents.navigation.batches import ContextWindows, TrajectoryChunks, context_rows
from agents.navigation.data import NavDataConfig, generate
from envs.navigation.nav_env import unicycle
from networks.models.vint import MambaViNT, ViNT, waypoint_to_action

TINY = NavDataConfig(depth=1, image_size=16, max_episode_steps=300, collision_backend="grid")
SMALL_MODEL = ["model.dim=32", "model.cnn_width=8", "model.transformer_layers=1", "model.memory_layers=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("navbc") / "ds", 6, seed=3, config=TINY, progress=False)


def _images(*shape):
    return torch.randint(0, 256, (*shape, 3, 16, 16), dtype=torch.uint8)


def test_mambavint_chunks_with_carried_state_equal_one_full_pass_and_step_by_step():
    torch.manual_seed(0)
    model = MambaViNT(16, 32, layers=2, cnn_width=8).double().eval()
    B, T = 2, 24
    rgb, goal = _images(B, T), _images(B, 1).expand(B, T, 3, 16, 16)
    is_init = torch.zeros(B, T, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[1, 13] = True                                   # a new trajectory starts mid-sequence in row 1
    with torch.no_grad():
        full, final = model(rgb, goal, is_init, model.initial_state(B).double())
        state, parts = model.initial_state(B).double(), []
        for a, b in ((0, 7), (7, 16), (16, 24)):            # chunks that cut through the reset too
            out, state = model(rgb[:, a:b], goal[:, a:b], is_init[:, a:b], state)
            parts.append(out)
        state_step, steps = model.initial_state(B).double(), []
        for t in range(T):
            out, state_step = model.step(rgb[:, t], goal[:, t], state_step, is_init[:, t])
            steps.append(out)
    for key in ("waypoints", "distance"):
        chunked = torch.cat([p[key] for p in parts], 1)
        stepped = torch.stack([s[key] for s in steps], 1)
        torch.testing.assert_close(chunked, full[key], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(stepped, full[key], rtol=1e-7, atol=1e-7)
    for name in final.keys():
        torch.testing.assert_close(state[name], final[name], rtol=1e-9, atol=1e-9)
    # the state matters: without the reset at t=13 row 1's tail would differ
    no_reset = is_init.clone()
    no_reset[1, 13] = False
    with torch.no_grad():
        other, _ = model(rgb, goal, no_reset, model.initial_state(B).double())
    assert not torch.allclose(other["waypoints"][1, 13:], full["waypoints"][1, 13:])
    torch.testing.assert_close(other["waypoints"][0], full["waypoints"][0])


def test_vint_step_matches_batched_context_windows():
    torch.manual_seed(0)
    model = ViNT(16, 32, context=5, layers=1, heads=4, cnn_width=8, dropout=0.0).double().eval()
    T = 9
    rgb, goal = _images(1, T)[0], _images(1)[0]
    rows = torch.arange(T)
    ctx = context_rows(rows, torch.zeros(T, dtype=torch.long), 5)
    assert ctx[0].tolist() == [0, 0, 0, 0, 0] and ctx[6].tolist() == [2, 3, 4, 5, 6]
    with torch.no_grad():
        batched = model(rgb[ctx], goal.expand(T, 3, 16, 16))
        state, stepped = model.initial_state(1).double(), []
        for t in range(T):
            out, state = model.step(rgb[t:t + 1], goal[None], state, torch.tensor([t == 0]))
            stepped.append(out["waypoints"][0])
    torch.testing.assert_close(torch.stack(stepped), batched["waypoints"], rtol=1e-7, atol=1e-7)


def test_trajectory_chunks_walk_whole_episodes_in_order_and_resume():
    starts, lengths = torch.tensor([0, 10, 35, 40]), torch.tensor([10, 25, 5, 30])
    ids = torch.tensor([0, 1, 2, 3])
    sampler = TrajectoryChunks(starts, lengths, ids, batch_size=2, chunk_len=8, seed=1)
    seen = {0: [], 1: []}
    batches = [sampler.sample() for _ in range(12)]
    for batch in batches:
        for b in range(2):
            if batch["is_init"][b, 0]:
                seen[b].append([])
            assert not batch["is_init"][b, 1:].any()          # episodes start only at a chunk start
            seen[b][-1] += batch["rows"][b][batch["valid"][b]].tolist()
    episodes = [ep for b in seen for ep in seen[b]]
    complete = [ep for b in seen for ep in seen[b][:-1]]     # a stream's last episode may be unfinished
    assert len(complete) >= 4
    for ep in complete:
        e = int(np.searchsorted(starts.numpy(), ep[0], side="right") - 1)
        assert ep == list(range(int(starts[e]), int(starts[e] + lengths[e])))  # consecutive, whole episode
    # every episode is drawn once per shuffled epoch: the first four starts are four different episodes
    firsts = sorted((i, b) for b in seen for i, batch in enumerate(batches) if batch["is_init"][b, 0])[:4]
    drawn = {int(np.searchsorted(starts.numpy(), int(batches[i]["rows"][b, 0]), side="right") - 1) for i, b in firsts}
    assert drawn == {0, 1, 2, 3}
    # padding rows repeat the last row and are marked invalid
    pad = [b for b in batches if not b["valid"].all()][0]
    r, t = torch.nonzero(~pad["valid"])[0].tolist()
    assert pad["rows"][r, t] == pad["rows"][r, t - 1] if t else True
    # resume: same batches after load_state_dict
    state = sampler.state_dict()
    expect = [sampler.sample() for _ in range(3)]
    again = TrajectoryChunks(starts, lengths, ids, batch_size=2, chunk_len=8, seed=99)
    again.load_state_dict(state)
    for a, b in zip(expect, [again.sample() for _ in range(3)]):
        assert torch.equal(a["rows"], b["rows"]) and torch.equal(a["is_init"], b["is_init"])


def test_training_chunks_carry_the_state_within_an_episode_and_reset_at_a_new_one(dataset):
    """The trainer's TBPTT path (TrajectoryChunks -> chunk_forward, the final state of each chunk
    handed to the stream's next one): every episode's outputs, stitched from its chunks, equal one
    pass over the whole episode from a fresh state. So an episode cut over several chunks gets the
    carried state, and a stream that moves to a new episode is reset; the carried state is detached."""
    from agents.bc_navigation import NavData, chunk_forward
    from agents.navigation.config import Config
    from agents.runtime.config import from_dict

    cfg = from_dict(Config, {"data": {"path": str(dataset), "val_episodes": 0}})
    data = NavData(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = MambaViNT(16, 32, layers=2, cnn_width=8).double().eval()
    B, L = 2, 40                            # episodes of ~100 steps: 2-4 chunks each, mid-chunk ends padded
    sampler = TrajectoryChunks(data.starts, data.lengths, data.train_ids, B, L, seed=0)
    carried = model.initial_state(B).double()
    streams = [[] for _ in range(B)]        # per stream: [episode, [outputs chunk after chunk]] per episode walked
    with torch.no_grad():
        for _ in range(12):
            batch = sampler.sample()
            out, labels, carried = chunk_forward(model, data, batch, carried, torch.device("cpu"))
            assert not any(v.requires_grad for v in carried.values())
            for b in range(B):
                e, keep = int(labels["episode"][b, 0]), batch["valid"][b]
                if batch["is_init"][b, 0]:        # a reset exactly where the stream starts an episode
                    streams[b].append([e, []])
                assert streams[b] and streams[b][-1][0] == e     # otherwise the chunk continues the stream's episode
                streams[b][-1][1].append(out["waypoints"][b][keep])
        whole, got = {}, {}
        for e, parts in (item for stream in streams for item in stream):
            s, n = int(data.starts[e]), int(data.lengths[e])
            if sum(len(p) for p in parts) < n:                            # still running when we stopped
                continue
            got[e] = parts
            rows = torch.arange(s, s + n)[None]
            td = data.gather(rows, torch.device("cpu"))
            is_init = torch.zeros(1, n, dtype=torch.bool)
            is_init[0, 0] = True
            ref, _ = model(td["rgb"], td["goal_rgb"], is_init, model.initial_state(1).double())
            whole[e] = ref["waypoints"][0]
            torch.testing.assert_close(torch.cat(parts), whole[e], rtol=1e-9, atol=1e-9)
    assert len(whole) >= 4 and any(len(got[e]) >= 3 for e in whole)
    # the check has teeth: a chunk run from a fresh state instead of the carried one differs
    e = next(e for e in whole if len(got[e]) >= 2)
    s = int(data.starts[e])
    rows = torch.arange(s + L, s + 2 * L)[None]
    td = data.gather(rows, torch.device("cpu"))
    with torch.no_grad():
        fresh, _ = model(td["rgb"], td["goal_rgb"], torch.zeros(1, L, dtype=torch.bool), model.initial_state(1).double())
    assert not torch.allclose(fresh["waypoints"][0], whole[e][L:2 * L])


def test_context_windows_stay_inside_their_episode():
    starts, lengths = torch.tensor([0, 10]), torch.tensor([10, 20])
    windows = ContextWindows(starts, lengths, torch.tensor([0, 1]), batch_size=256, context=5, seed=0).sample()
    first = torch.where(windows["rows"] >= 10, 10, 0)
    assert (windows["context"] >= first[:, None]).all() and (windows["context"][:, -1] == windows["rows"]).all()
    assert (windows["context"].diff(dim=1) >= 0).all()


@pytest.mark.parametrize("v,w", [(0.8, 0.0), (0.5, 1.2), (0.0, -1.5), (1.0, -0.7)])
def test_waypoint_controller_inverts_one_unicycle_step(v, w):
    dt = 0.25
    pose = unicycle(np.zeros(3), v, w, dt)
    wp = torch.tensor([[pose[0], pose[1], math.cos(pose[2]), math.sin(pose[2])]], dtype=torch.float64)
    action = waypoint_to_action(wp[None], 0, dt, max_speed=1.0, max_turn_rate=1.5)[0]
    torch.testing.assert_close(action, torch.tensor([v, w / 1.5], dtype=torch.float64), atol=1e-6, rtol=0)


def test_expert_labels_through_the_controller_reproduce_the_demonstration(dataset):
    """The eval path's waypoint -> action step, fed the dataset's own labels, drives the robot along
    the expert's trajectory to the goal: control error in eval is the policy's alone."""
    from agents.navigation.data import load_dataset
    ds = load_dataset(dataset)
    env = ds.make_env()
    for e in range(2):
        s, n = int(ds.episodes["start"][e]), int(ds.episodes["length"][e])
        env.reset(seed=int(ds.episodes["seed"][e]), options={"cue": int(ds.episodes["cue"][e])})
        yaw = ds.steps["waypoint_yaw"][s:s + n].double()
        wp = torch.cat([ds.steps["waypoints"][s:s + n].double(), torch.stack([yaw.cos(), yaw.sin()], -1)], -1)
        actions = waypoint_to_action(wp, 0, env.dt, env.max_speed, env.max_turn_rate)
        for t in range(n - 1):
            _, _, term, trunc, info = env.step(actions[t].numpy())
            if term or trunc:
                break
        assert info["success"] and t == n - 2
        torch.testing.assert_close(actions[: n - 1].float(), ds.steps["action"][s:s + n - 1], atol=1e-4, rtol=0)
    env.close()


def _csv(run, name):
    rows = (next(run.rglob(f"scalars/{name}.csv"))).read_text().split()
    return [float(r.split(",")[1]) for r in rows]


def test_tiny_training_lowers_the_loss_resumes_and_evaluates(dataset, tmp_path, capsys):
    root = tmp_path / "runs"
    common = [f"data.path={dataset}", f"run_root={root}", "data.val_episodes=1", "train.batch_size=2",
              "train.chunk_len=32", "train.log_every_steps=5", "train.val_every_steps=60", "train.warmup_steps=5",
              "train.lr=1e-3", *SMALL_MODEL]
    assert main(["train", *common, "name=m", "train.steps=40", "train.checkpoint_every_steps=20"]) == 0
    run = next((root / "bc_navigation").glob("m-*"))
    loss = _csv(run, "loss")
    assert len(loss) == 8 and loss[-1] < 0.5 * loss[0], loss
    # AdamW without weight decay on the SSM's A_log, D and dt bias (networks/ssm/param_groups.py)
    from agents.runtime.run_dir import RunDir

    groups = RunDir.load_checkpoint(RunDir(run).latest_checkpoint())["optim"]["param_groups"]
    assert [g["weight_decay"] for g in groups][1] == 0.0 and groups[0]["weight_decay"] > 0
    assert len(groups[1]["params"]) == 3          # A_log, D, dt_bias of the one Mamba2 layer (memory_layers=1)
    # resume to 60 steps: continues from step 40, not from scratch
    assert main(["train", "--resume", str(run), "train.steps=60"]) == 0
    assert "resumed at step 40" in capsys.readouterr().out
    assert len(_csv(run, "loss")) == 12 and len(_csv(run, "val_loss")) == 2   # at the end of each part
    # closed-loop eval on unseen maps, with video and trajectory plot
    assert main(["eval", str(run), "--episodes", "2", "--seed", "5"]) == 0
    result = json.loads((run / "eval" / "eval_ckpt_000000000060.json").read_text())
    for key in ("success_rate", "spl", "collision_rate", "control_hz", "mean_steps"):
        assert key in result
    assert 0.0 <= result["spl"] <= result["success_rate"] <= 1.0 and result["control_hz"] > 0
    assert 0.0 <= result["direct_success_rate"] <= result["success_rate"]
    assert (run / "eval" / "trajectories.png").stat().st_size > 1000
    assert len(json.loads((run / "eval" / "episodes.json").read_text())) == 2
    assert any((run / "eval").glob("episode_0.*"))
    # the float16 export carries the dataset's settings: it evaluates with the dataset gone
    export = tmp_path / "policy.pt"
    assert main(["--export", str(run), "--out", str(export)]) == 0
    moved = dataset.with_name("moved")
    dataset.rename(moved)
    try:
        assert main(["--eval", str(export), "--episodes", "1", "--seed", "5", "--no-video"]) == 0
    finally:
        moved.rename(dataset)
    # a loose file evaluates into eval_<name>/ beside it (a shipped policy's folder stays clean)
    assert json.loads(next((tmp_path / "eval_policy").glob("eval_*.json")).read_text())["episodes"] == 1
    # a checkpoint from before checkpoints held them: --export reads the settings from its data.path
    old = RunDir.load_checkpoint(RunDir(run).latest_checkpoint())
    facts = old.pop("dataset")
    torch.save(old, tmp_path / "old.pt")
    assert main(["--export", str(tmp_path / "old.pt"), "--out", str(tmp_path / "old_export.pt")]) == 0
    assert torch.load(tmp_path / "old_export.pt", weights_only=True)["dataset"] == facts


def test_wrong_leaf_detection():
    """Direct success needs the trail to stay out of every leaf room but the goal's."""
    from agents.bc_navigation import entered_wrong_leaf
    from envs.navigation.nav_env import NavigationEnv

    env = NavigationEnv(depth=2, image_size=16, collision_backend="grid")
    for cue in range(4):
        env.reset(seed=3, options={"cue": cue})
        L = env.layout
        for leaf in range(4):
            trail = np.stack([L.start[:2], L.leaf_goals[leaf][:2]])
            assert entered_wrong_leaf(L, trail) == (leaf != cue), (cue, leaf)
        assert not entered_wrong_leaf(L, L.start[None, :2])          # the start room is no leaf
    env.close()


def test_vint_trains_through_the_same_cli(dataset, tmp_path):
    args = [f"data.path={dataset}", f"run_root={tmp_path}", "data.val_episodes=1", "train.batch_size=2",
            "train.chunk_len=16", "train.steps=3", "model.kind=vint", *SMALL_MODEL]
    assert main(["train", *args]) == 0
    ckpt = next(tmp_path.rglob("ckpt_*.pt"))
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3 and state["config"]["model"]["kind"] == "vint" and state["carried"] is None


def test_cue_auxiliary_loss_is_trained_and_logged(dataset, tmp_path):
    args = [f"data.path={dataset}", f"run_root={tmp_path}", "data.val_episodes=1", "train.batch_size=2",
            "train.chunk_len=16", "train.steps=4", "train.log_every_steps=2", "train.cue_weight=1.0", *SMALL_MODEL]
    assert main(["train", *args]) == 0
    run = next((tmp_path / "bc_navigation").glob("mambavint-*"))
    cue = _csv(run, "cue_loss")
    assert len(cue) == 2 and all(0.0 < c < 5.0 for c in cue)
    state = torch.load(next(run.rglob("ckpt_*.pt")), weights_only=True)
    assert state["model"]["cue_head.weight"].shape == (2, 32)        # depth 1: two cues, read from the history
    assert main(["eval", str(run), "--episodes", "1", "--no-video"]) == 0   # eval rebuilds the same model


def test_a_non_finite_loss_stops_training_naming_the_step():
    from agents.runtime.nonfinite import NonFiniteLoss, check_finite
    check_finite(3, loss=torch.tensor(0.5), cue_loss=torch.tensor(1.0))          # finite: no error
    with pytest.raises(NonFiniteLoss, match=r"'step': 7.*'cue_loss': nan"):
        check_finite(7, loss=torch.tensor(0.5), cue_loss=torch.tensor(float("nan")))


def test_bad_inputs_give_clear_errors(dataset, tmp_path, capsys):
    assert main(["train", f"data.path={tmp_path / 'nowhere'}", f"run_root={tmp_path}"]) == 2
    assert "nowhere" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert main(["train", f"data.path={broken}", f"run_root={tmp_path}"]) == 2
    assert "broken" in capsys.readouterr().err
    assert main(["train", f"data.path={dataset}", "model.kind=lstm", f"run_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "model.kind" in err and "mambavint" in err
    assert main(["train", f"data.path={dataset}", "data.val_episodes=6", f"run_root={tmp_path}"]) == 2
    assert "data.val_episodes" in capsys.readouterr().err
    assert main(["train", f"data.path={dataset}", "data.val_episodes=1", "train.batch_size=50",
                 f"run_root={tmp_path}"]) == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert not (tmp_path / "bc_navigation").exists()         # nothing half-made is left behind
    assert main(["eval", str(tmp_path / "no_run")]) == 2
    assert "no_run" in capsys.readouterr().err


def test_dry_run_prints_parameter_counts(dataset, capsys):
    assert main(["train", "--dry-run", f"data.path={dataset}", "data.val_episodes=1", "train.batch_size=2", *SMALL_MODEL]) == 0
    out = capsys.readouterr().out
    assert "mambavint: " in out and "total" in out and "6 episodes" in out


def test_the_shipped_depth2_policy_reaches_the_cued_leaf(tmp_path):
    """The README's shipped MambaViNT, guarded against env or network changes that would silently
    break it: the float16 export through the public --eval, no dataset, on the first 4 eval maps
    (one per cue). Measured: 4/4 (80 episodes: 78.8%; a memoryless policy: 25%)."""
    export = Path("agents/policies/navigation/mambavint_cue_depth2_6k.pt")
    assert main(["--eval", str(export), "--episodes", "4", "--no-video", "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("eval_*.json")).read_text())
    assert result["episodes"] == 4 and result["success_rate"] >= 0.75, result


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine must lack CUDA")
def test_a_checkpoint_trained_on_cuda_evaluates_on_a_cpu_machine(dataset, tmp_path, caplog):
    """BC's --eval goes through the same cli.config_for_eval_here as the RL agents': a GPU host's
    checkpoint (config device=cuda) evaluates on this CPU, saying so, instead of refusing its config."""
    root = tmp_path / "runs"
    assert main(["train", f"data.path={dataset}", f"run_root={root}", "data.val_episodes=1", "train.batch_size=2",
                 "train.chunk_len=32", "train.steps=2", "train.checkpoint_every_steps=2", "train.val_every_steps=2",
                 "train.warmup_steps=1", *SMALL_MODEL]) == 0
    (ckpt,) = (root / "bc_navigation").glob("*/checkpoints/*.pt")
    state = torch.load(ckpt, weights_only=True)
    state["config"]["device"] = "cuda"
    torch.save(state, ckpt)
    with caplog.at_level("WARNING", logger="mambazoo"):
        assert main(["--eval", str(ckpt), "--episodes", "1", "--seed", "5", "--no-video"]) == 0
    assert any("trained with device=cuda" in r.getMessage() for r in caplog.records)


def test_a_sigterm_checkpoints_that_step_and_the_resumed_run_equals_the_uninterrupted_one(dataset, tmp_path, capsys,
                                                                                       sigterm_after_log):
    """A real SIGTERM after the step-4 log (checkpoints every 20): the run writes ckpt 4 and returns;
    resumed, it ends at 6 with the weights, optimiser, sampler and carried Mamba state of a run never
    stopped (Ctrl-C takes the same path: tests/test_stop_signals.py)."""
    import signal

    import agents.bc_navigation as bcn
    from agents.runtime.run_dir import RunDir, differing_entries

    common = [f"data.path={dataset}", "data.val_episodes=1", "train.batch_size=2", "train.chunk_len=32",
              "train.log_every_steps=1", "train.val_every_steps=100", "train.warmup_steps=2", "train.steps=6",
              "train.checkpoint_every_steps=20", *SMALL_MODEL]
    assert main(["train", *common, f"run_root={tmp_path / 'a'}", "name=a"]) == 0
    capsys.readouterr()
    with sigterm_after_log(bcn, 4, key=None):
        assert main(["train", *common, f"run_root={tmp_path / 'b'}", "name=b"]) == 0
    assert "stopped by SIGTERM at step 4" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    (b,) = (tmp_path / "b" / "bc_navigation").iterdir()
    assert RunDir(b).latest_checkpoint().name == "ckpt_000000000004.pt"
    assert main(["train", "--resume", str(b)]) == 0
    (a,) = (tmp_path / "a" / "bc_navigation").iterdir()
    sa, sb = (RunDir.load_checkpoint(RunDir(p).latest_checkpoint()) for p in (a, b))
    assert sa["step"] == sb["step"] == 6
    assert differing_entries(sa, sb, ("/config/name", "/config/run_root")) == []
