"""PPO quadruped agent: config validation (exit 2), LocoTransformer JSON import, a short run with
checkpoint, --resume, --eval with a video, --dry-run."""
import json
import logging

import pytest
import torch

from agents import ppo_locomamba
from agents.runtime.config import ConfigError, from_dict
from agents.runtime.run_dir import RunDir
from agents.quadruped.build import check_config
from agents.quadruped.config import Config, from_locotransformer

TINY = ["env.course=flat", "env.num_envs=1", "env.horizon=40", "env.num_obstacles=0",
        "model.hidden_shapes=[16]", "model.visual_dim=16", "model.mamba_params=[[16,4,4,2]]",
        "model.transformer_params=[[2,32]]", "model.append_hidden_shapes=[16]", "model.memory_hidden=16",
        "ppo.minibatch_size=32", "ppo.slice_len=16", "ppo.epochs=1", "train.frames_per_batch=64",
        "train.total_frames=128", "train.checkpoint_every_iters=1", "train.eval_episodes=1"]

# LocoTransformer's schema (config/rl/moving/locotransformer/thin.json in vision4leg), abridged
LOCOTRANSFORMER_THIN = {
    "env_name": "A1MoveGround",
    "env": {"reward_scale": 1, "obs_norm": True, "horizon": 1000, "env_build": {
        "z_constrain": False, "motor_control_mode": "POSITION", "other_direction_penalty": 0,
        "z_penalty": 1, "clip_num": [0.05, 0.5, 0.5] * 4, "time_step_s": 0.0025, "num_action_repeat": 16,
        "add_last_action_input": True, "no_displacement": True, "diagonal_act": True, "get_image": True,
        "depth_image": True, "depth_norm": True, "rgbd": False, "grayscale": False, "alive_reward": -0.05,
        "fall_reward": -20, "fric_coeff": [1, 0.01, 0.01], "moving": True, "target_vel": 1.0,
        "random_init_range": 1.0, "domain_randomization": True, "enable_action_interpolation": False,
        "enable_action_filter": False, "terrain_type": "random_blocks_sparse", "frame_extract": 1,
        "get_image_interval": 1}},
    "replay_buffer": {"size": 16384, "time_limit_filter": True},
    "policy": {},
    "encoder": {"hidden_shapes": [256, 256], "visual_dim": 256},
    "net": {"transformer_params": [[1, 256], [1, 256]], "append_hidden_shapes": [256, 256]},
    "collector": {"epoch_frames": 16384, "max_episode_frames": 999, "eval_episodes": 2},
    "general_setting": {"discount": 0.99, "num_epochs": 1500, "batch_size": 1024, "gae": True,
                        "save_interval": 100, "eval_interval": 10},
    "ppo": {"plr": 1e-4, "vlr": 1e-4, "clip_para": 0.2, "opt_epochs": 3, "tau": 0.95, "shuffle": True,
            "entropy_coeff": 0.005},
}


def test_locotransformer_json_converts(tmp_path, caplog, capsys):
    path = tmp_path / "thin.json"
    path.write_text(json.dumps(LOCOTRANSFORMER_THIN))
    with caplog.at_level(logging.WARNING, logger="mambazoo"):
        cfg, _, _ = ppo_locomamba.resolve(ppo_locomamba.parse_args(["--config", str(path)]))
    assert cfg.env.course == "moving" and cfg.env.diagonal_act and cfg.env.domain_randomization
    assert cfg.env.horizon == 1000 and cfg.env.clip_num == [0.05, 0.5, 0.5] * 4
    assert cfg.model.fusion == "mamba" and cfg.model.mamba_params == [[256, 16, 4, 2]] * 2
    assert cfg.model.transformer_params == [[1, 256], [1, 256]] and cfg.model.visual_dim == 256
    assert cfg.train.total_frames == 1500 * 16384 and cfg.train.frames_per_batch == 16384
    assert cfg.train.checkpoint_every_iters == 100 and cfg.train.eval_every_iters == 10
    assert (cfg.ppo.lr, cfg.ppo.clip_epsilon, cfg.ppo.epochs, cfg.ppo.gae_lambda, cfg.ppo.entropy_coef,
            cfg.ppo.minibatch_size, cfg.ppo.gamma) == (1e-4, 0.2, 3, 0.95, 0.005, 1024, 0.99)
    assert "model.mamba_params [[256, 16, 4, 2], [256, 16, 4, 2]]" in capsys.readouterr().out
    warnings = [r.getMessage() for r in caplog.records if "no counterpart" in r.getMessage()]
    assert len(warnings) == 1       # one warning naming every unmapped key
    for key in ("env.reward_scale", "env.obs_norm", "env.env_build.z_constrain", "env.env_build.frame_extract",
                "replay_buffer.size", "ppo.shuffle", "env.env_build.random_init_range"):
        assert key in warnings[0]
    for mapped in ("clip_num", "env.env_build.diagonal_act", "ppo.plr", "env.env_build.moving"):
        assert mapped not in warnings[0]


def test_locotransformer_terrains_and_overrides():
    data = json.loads(json.dumps(LOCOTRANSFORMER_THIN))
    data["env"]["env_build"].update(moving=False, terrain_type="random_blocks_sparse_thin_wide")
    assert from_locotransformer(data)["env"]["course"] == "wide"
    data["env"]["env_build"].update(terrain_type="plane")
    assert from_locotransformer(data)["env"]["course"] == "flat"
    data["env_name"] = "HalfCheetah"
    with pytest.raises(ConfigError, match="env_name"):
        from_locotransformer(data)


def test_every_shipped_config_resolves():
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[1].glob("configs/quadruped/*.yaml"))
    assert len(files) >= 16
    for f in files:
        cfg, _, _ = ppo_locomamba.resolve(ppo_locomamba.parse_args(["--config", str(f)]))
        check_config(cfg)


MALFORMED = [
    (["env.corse=thin"], "did you mean 'env.course'"),
    (["env.course=mountain"], "env.course"),
    (["env.horizon=0"], "env.horizon"),
    (["env.horizon=ten"], "env.horizon"),
    (["ppo.lr=-1"], "ppo.lr"),
    (["ppo.gamma=1.5"], "ppo.gamma"),
    (["env.clip_num=[0.1,0.2]"], "env.clip_num"),
    (["env.diagonal_act=1"], "env.diagonal_act"),
    (["model.fusion=lstm"], "model.fusion"),
    (["model.memory=rnn"], "model.memory"),
    (["model.mamba_params=[[64,16,4]]"], "model.mamba_params[0]"),
    (["model.transformer_params=[[3,64]]", "model.visual_dim=64"], "model.transformer_params[0]"),
    (["ppo.slice_len=30"], "ppo.slice_len"),
    (["train.frames_per_batch=1000", "env.num_envs=3"], "train.frames_per_batch"),
    (["nonsense"], "key=value"),
    (["ppo.entropy_coef=nan"], "ppo.entropy_coef"),
    (["model.memory=mamba2", "model.memory_hidden=10"], "model.memory_hidden=10"),
    (["env.image_size=16"], "env.image_size=16"),
]


def test_network_shape_errors_exit_2_before_a_run_directory(tmp_path, capsys):
    assert ppo_locomamba.main(["model.memory=mamba2", "model.memory_hidden=10", f"run_root={tmp_path}"]) == 2
    assert "headdim" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.parametrize("overrides, needle", MALFORMED)
def test_malformed_config_exits_2_naming_the_key(overrides, needle, capsys):
    assert ppo_locomamba.main(["--dry-run", *overrides]) == 2
    assert needle in capsys.readouterr().err


def test_malformed_files_exit_2(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("env:\n  course: thin\n   horizon: 3\n")
    assert ppo_locomamba.main(["--config", str(bad_yaml), "--dry-run"]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert ppo_locomamba.main(["--config", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2
    assert "not found" in capsys.readouterr().err
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert ppo_locomamba.main(["--config", str(listed), "--dry-run"]) == 2
    assert "mapping" in capsys.readouterr().err


def test_dry_run_builds_everything_and_exits_0(capsys):
    assert ppo_locomamba.main(["--dry-run", *TINY, "model.fusion=transformer"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "env ok" in out and "fusion: transformer" in out


def _run_dir(root):
    runs = list((root / "ppo_locomamba").iterdir())
    assert len(runs) == 1
    return RunDir(runs[0])


def test_short_run_checkpoint_resume_and_eval(tmp_path, capsys):
    assert ppo_locomamba.main([*TINY, f"run_root={tmp_path}", "seed=3"]) == 0
    run = _run_dir(tmp_path)
    ckpt = run.latest_checkpoint()
    state = RunDir.load_checkpoint(ckpt)
    assert state["frames"] == 128 and state["iteration"] == 2
    assert from_dict(Config, state["config"]).seed == 3
    scalars = list((run.path / "metrics").rglob("*.csv"))
    assert any("loss_objective" in str(p) for p in scalars)
    # resume to 256 frames: continues from 128 (two more iterations), weights start from the checkpoint
    assert ppo_locomamba.main(["--resume", str(run.path), "train.total_frames=256"]) == 0
    resumed = RunDir.load_checkpoint(run.latest_checkpoint())
    assert resumed["frames"] == 256 and resumed["iteration"] == 4
    assert "resumed from frame 128" in capsys.readouterr().out
    changed = [k for k in state["model"] if not torch.equal(state["model"][k], resumed["model"][k])]
    assert changed          # training went on
    # evaluation writes a video next to the run
    assert ppo_locomamba.main(["--eval", str(run.path), "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "return" in out and "distance" in out and "collisions" in out and "falls" in out
    videos = [v for v in run.videos.glob("eval_*") if v.suffix != ".json"]
    assert videos and all(v.stat().st_size > 1000 for v in videos)
    # and its figures as JSON (what the README's tables are made from), matching the printed line
    (summary_path,) = run.videos.glob("eval_*_deterministic.json")
    summary = json.loads(summary_path.read_text())
    assert summary["episodes"] == 1 and summary["mode"] == "deterministic"
    assert f"distance {summary['distance']:.3f}" in out and summary["length"] >= 1


def test_resume_without_checkpoint_and_eval_of_missing_file_exit_2(tmp_path, capsys):
    run = RunDir(tmp_path / "empty")
    (run.path / "config.yaml").write_text("seed: 1\n")
    assert ppo_locomamba.main(["--resume", str(run.path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert ppo_locomamba.main(["--eval", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_stochastic_eval_samples_with_the_std_cap_of_the_checkpoint(tmp_path, monkeypatch):
    """The cap is not a weight: --eval --stochastic of a capped run (and of its export) must sample
    the distribution the run collected with at that checkpoint's frames, not the uncapped one."""
    assert ppo_locomamba.main([*TINY, f"run_root={tmp_path}", "train.std_cap=[0.3,0.05]"]) == 0
    run = _run_dir(tmp_path)
    export = tmp_path / "policy.pt"
    assert ppo_locomamba.main(["--export", str(run.path), "--out", str(export)]) == 0
    seen = []

    def fake_evaluate(cfg, nets, episodes, video=None, seed=None, stochastic=False):
        seen.append((stochastic, nets.std_cap.cap.item()))
        return {"return": 0.0, "distance": 0.0}

    monkeypatch.setattr(ppo_locomamba, "evaluate", fake_evaluate)
    for target in (run.path, export):
        assert ppo_locomamba.main(["--eval", str(target), "--episodes", "1", "--stochastic",
                                   "--out", str(tmp_path / "ev")]) == 0
    # 128 of train.total_frames=128 frames done: the cap is at its end value
    assert seen == [(True, pytest.approx(0.05)), (True, pytest.approx(0.05))]
