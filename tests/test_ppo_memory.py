"""PPO + memory on the POMDP suite: a tiny run with checkpoint, --resume and --eval; a SIGTERM's
checkpoint and its exact resume; config errors exit 2 naming the key; and a learning test (a Mamba
policy learns repeat_previous, which a memoryless policy cannot)."""
import csv
import re
from pathlib import Path

import pytest
import torch

from agents import ppo_memory
from agents.runtime.config import load_config
from agents.runtime.run_dir import RunDir
from agents.pomdp.build import Config, check_consistency

TINY = ["env.num_envs=4", "model.embed=8", "model.hidden=8", "model.head_hidden=8", "ppo.slice_len=8",
        "ppo.minibatch_size=32", "ppo.epochs=1", "train.frames_per_batch=64", "train.total_frames=128",
        "train.checkpoint_every_iters=1", "train.eval_episodes=2", "threads=1"]


def _only_run(root: Path) -> RunDir:
    runs = list((root / "ppo_memory").iterdir())
    assert len(runs) == 1
    return RunDir(runs[0])


@pytest.mark.parametrize("task, kind", [("repeat_first", "mamba1"), ("stateless_pendulum", "lstm")])
def test_tiny_run_checkpoint_resume_eval(tmp_path, capsys, task, kind):
    assert ppo_memory.main([*TINY, f"env.task={task}", f"model.memory={kind}", f"run_root={tmp_path}"]) == 0
    run = _only_run(tmp_path)
    state = RunDir.load_checkpoint(run.latest_checkpoint())
    assert state["frames"] == 128 and state["iteration"] == 2
    curve = (run.path / "curve.csv").read_text().splitlines()
    assert curve[0] == "frames,wall_s,return,length,episodes"
    assert list((run.path / "metrics").rglob("loss_objective.csv"))
    out = capsys.readouterr().out
    assert "parameters:" in out and "greedy eval return" in out
    # the progress line's rate is the current one (since the previous line), the average beside it
    assert re.search(r"^frames 128 return \S+ steps/s \d+ \(average \d+\) wall", out, re.M), out
    # resume: continues from 128 to 256 frames with the checkpoint's weights
    assert ppo_memory.main(["--resume", str(run.path), "train.total_frames=256"]) == 0
    resumed = RunDir.load_checkpoint(run.latest_checkpoint())
    assert resumed["frames"] == 256 and resumed["iteration"] == 4
    assert resumed["elapsed_s"] > state["elapsed_s"]
    assert "resumed from frame 128" in capsys.readouterr().out
    assert any(not torch.equal(state["model"][k], resumed["model"][k]) for k in state["model"])
    assert ppo_memory.main(["--eval", str(run.path), "--episodes", "3"]) == 0
    assert "over 3 greedy episodes: return" in capsys.readouterr().out


def test_a_sigterm_checkpoints_the_frame_it_arrives_and_the_resume_equals_the_run_that_checkpointed_there(
        tmp_path, capsys, sigterm_after_log):
    """A real SIGTERM (to this process, from the frame-128 log call) during run B, whose periodic
    checkpoint is only at 256: B finishes that batch, writes ckpt 128 and curve.csv, skips the final
    eval and exits 0. Resumed, it trains to 384. Run A, never signalled, checkpoints at 128 and 256
    by its config: its final weights, curve and logged metrics (time aside) equal B's, bit for bit.
    A resume from anything but the stop frame (frame 0 is B's only other start) would differ."""
    import signal

    tiny = [o for o in TINY if not o.startswith(("train.total_frames=", "train.checkpoint_every_iters="))]
    args = [*tiny, "env.task=stateless_cartpole", "model.memory=gru", "train.total_frames=384"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert ppo_memory.main([*args, "train.checkpoint_every_iters=2", f"run_root={a}"]) == 0
    capsys.readouterr()
    with sigterm_after_log(ppo_memory, 128):
        assert ppo_memory.main([*args, "train.checkpoint_every_iters=4", f"run_root={b}"]) == 0
    out = capsys.readouterr().out
    run_a, run_b = _only_run(a), _only_run(b)
    assert (f"stopped by SIGTERM at frame 128: checkpoint {run_b.checkpoints / 'ckpt_000000000128.pt'} written; "
            f"`python agents/ppo_memory.py --resume {run_b.path}` continues the run") in out, out[-2000:]
    assert "greedy eval return" not in out                              # no final eval of a stopped run
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL          # the handler is given back
    assert [p.name for p in run_b.checkpoints.glob("*.pt")] == ["ckpt_000000000128.pt"]
    stopped = RunDir.load_checkpoint(run_b.latest_checkpoint())
    assert stopped["frames"] == 128 and stopped["iteration"] == 2
    assert len((run_b.path / "curve.csv").read_text().splitlines()) == 1 + len(stopped["curve"])
    assert not list((run_b.path / "metrics").rglob("*eval*"))
    assert ppo_memory.main(["--resume", str(run_b.path)]) == 0
    sa, sb = (RunDir.load_checkpoint(r.latest_checkpoint()) for r in (run_a, run_b))
    assert sa["frames"] == sb["frames"] == 384
    diff = [k for k in sa["model"] if not torch.equal(sa["model"][k], sb["model"][k])]
    assert not diff, f"{len(diff)} of {len(sa['model'])} tensors differ after the stop and resume, e.g. {diff[:3]}"

    def logged(run):      # curve.csv and the metrics, less the wall-clock figures (a resume has its own)
        curve = [{k: v for k, v in row.items() if k != "wall_s"}
                 for row in csv.DictReader((run.path / "curve.csv").read_text().splitlines())]
        metrics = {name: p.read_text() for p in (run.path / "metrics").rglob("*.csv")
                   if not (name := p.relative_to(run.path).as_posix()).startswith("metrics/scalars/time")}
        return curve, metrics

    (curve_a, metrics_a), (curve_b, metrics_b) = logged(run_a), logged(run_b)
    assert curve_a == curve_b and len(curve_a) == 6, curve_a          # a point per batch
    assert metrics_a == metrics_b and "metrics/scalars/eval/return.csv" in metrics_a, sorted(metrics_a)


def test_train_returns_the_sweep_row(tmp_path):
    cfg = load_config(Config, None, [*TINY, "model.memory=none", f"run_root={tmp_path}", "logger=none",
                                     "env.task=stateless_cartpole", "model.obs_norm=rollout"])
    result = ppo_memory.train(cfg, verbose=False)
    model = RunDir.load_checkpoint(RunDir(result["run_dir"]).latest_checkpoint())["model"]
    assert 0 < model["embed_net.scale"].max() < 0.5      # measured spread, far inside the bounds 4.8 / 0.42
    for key in ("final_return", "final_train_return", "best_return", "params", "env_steps_per_s", "frames",
                "wall_s", "curve", "run_dir"):
        assert key in result
    assert result["frames"] == 128 and result["params"] > 0 and result["env_steps_per_s"] > 0
    assert "steps_to_threshold" in result and "seconds_to_threshold" in result     # None: < 10 episodes


def test_first_reach_needs_a_window_of_episodes():
    curve = [{"frames": 100, "wall_s": 1.0, "return": 1.0, "episodes": 1.0},     # one lucky episode
             {"frames": 200, "wall_s": 2.0, "return": 0.5, "episodes": 9.0},
             {"frames": 300, "wall_s": 3.0, "return": 1.0, "episodes": 10.0}]
    assert ppo_memory.first_reach(curve, 1.0)["frames"] == 300
    assert ppo_memory.first_reach(curve[:2], 0.6) is None
    assert ppo_memory.first_reach(curve, 0.5)["frames"] == 200


@pytest.mark.parametrize("overrides, needle", [
    (["env.task=pong"], "env.task"), (["model.memory=rnn"], "model.memory"),
    (["model.options={mamba1: {d_stat: 4}}", "model.memory=mamba1"], "model.options"),
    (["model.options={mamba: {d_state: 4}}"], "model.options"),
    (["env.options={max_step: 4}"], "env.options"), (["ppo.slice_len=48"], "ppo.slice_len"),
    (["train.frames_per_batch=1000"], "train.frames_per_batch"), (["ppo.lr=-1"], "ppo.lr"),
    (["collector.backend=spark"], "collector.backend"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, overrides, needle):
    assert ppo_memory.main([*overrides, f"run_root={tmp_path}"]) == 2
    assert needle in capsys.readouterr().err


def test_help_and_shipped_configs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ppo_memory.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "model.memory" in capsys.readouterr().out
    assert ppo_memory.main(["--dry-run", "env.task=stateless_pendulum", "model.memory=rmt"]) == 0
    assert "env ok: stateless_pendulum" in capsys.readouterr().out
    files = sorted(Path(__file__).resolve().parents[1].glob("configs/pomdp/*.yaml"))
    assert len(files) >= 4
    for f in files:
        check_consistency(load_config(Config, f))


def test_mamba_learns_repeat_previous(tmp_path):
    """repeat_previous easy (answer the suit seen 3 steps ago): random play and every memoryless
    policy score about -0.5; a Mamba2 policy clearly beats that within 20k env steps (~10 s)."""
    cfg = load_config(Config, None, ["env.task=repeat_previous", "model.memory=mamba2",
                                     "model.options={mamba2: {d_state: 16, headdim: 16}}",
                                     "train.total_frames=20480",
                                     "train.eval_episodes=64", f"run_root={tmp_path}", "logger=none",
                                     "threads=1", "seed=0"])
    result = ppo_memory.train(cfg, verbose=False)
    first = result["curve"][0]["return"]
    assert first < -0.3, first                      # starts at chance
    assert result["final_return"] > 0.3, result["final_return"]
    assert result["best_return"] > 0.3



def test_resume_of_a_run_saved_under_old_key_names(tmp_path, capsys, monkeypatch):
    """A run trained before train.checkpoint_every was renamed train.checkpoint_every_iters: its
    config.yaml and checkpoint name the old key; --resume reads it (one warning) and takes overrides
    under either name."""
    from agents.runtime import config

    monkeypatch.setattr(config, "_warned", set())
    assert ppo_memory.main([*TINY, "env.task=repeat_first", "model.memory=gru", f"run_root={tmp_path}"]) == 0
    run = _only_run(tmp_path)
    for ckpt in run.checkpoints.glob("*.pt"):           # what an older release wrote
        state = RunDir.load_checkpoint(ckpt)
        state["config"]["train"]["checkpoint_every"] = state["config"]["train"].pop("checkpoint_every_iters")
        torch.save(state, ckpt)
    text = run.config_path.read_text()
    run.config_path.write_text(text.replace("checkpoint_every_iters:", "checkpoint_every:"))
    capsys.readouterr()
    assert ppo_memory.main(["--resume", str(run.path), "train.total_frames=256", "train.checkpoint_every_iters=2"]) == 0
    err = capsys.readouterr().err
    assert err.count("config key 'train.checkpoint_every' is renamed 'train.checkpoint_every_iters'") == 1
    resumed = RunDir.load_checkpoint(run.latest_checkpoint())
    assert resumed["frames"] == 256 and resumed["config"]["train"]["checkpoint_every_iters"] == 2
    assert "checkpoint_every" not in resumed["config"]["train"]
    assert ppo_memory.main(["--eval", str(run.path), "--episodes", "1"]) == 0
    # an export of a checkpoint saved under the old name is written in today's names
    old = run.checkpoints / "old.pt"
    state = RunDir.load_checkpoint(run.latest_checkpoint())
    state["config"]["train"]["checkpoint_every"] = state["config"]["train"].pop("checkpoint_every_iters")
    torch.save(state, old)
    assert ppo_memory.main(["--export", str(old), "--out", str(tmp_path / "exported.pt")]) == 0
    exported = torch.load(tmp_path / "exported.pt", weights_only=True)
    assert exported["config"]["train"]["checkpoint_every_iters"] == 2
    assert "checkpoint_every" not in exported["config"]["train"]
