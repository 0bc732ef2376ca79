"""One command line for all five agents (agents/runtime/cli.agent_parser + run_agent): the same
flags, the same help sections, the same exit codes; the BC agents' older subcommand forms and both
data generators' argument styles keep working."""
from __future__ import annotations

import importlib
import json
import re

import pytest
import torch

AGENTS = ("ppo_locomamba", "ppo_memory", "vmamba_td3", "bc_navigation", "bc_diffusion")
SECTIONS = ("commands:", "exit codes: 0 ok; 1 ", "positional arguments:", "train and resume:", "eval:", "export:",
            "output:", "config keys (set in --config FILE or as key=value overrides):")
FLAGS = ("--config FILE", "--resume RUN_DIR", "--dry-run", "--eval CHECKPOINT", "--episodes N",
         "--export CHECKPOINT", "--dtype", "--out PATH", "key=value")
SHARED_FORMS = ("[--config FILE] [key=value ...]", "--resume RUN_DIR [key=value ...]",
                "--eval CHECKPOINT|RUN_DIR [--episodes N]", "--export CHECKPOINT|RUN_DIR [--out FILE]",
                "--config FILE --dry-run")
# tests/test_ppo_memory.py's and tests/test_ppo_common.py's tiny sizes
PPO_MEMORY_TINY = ["env.num_envs=4", "model.embed=8", "model.hidden=8", "model.head_hidden=8", "ppo.slice_len=8",
                   "ppo.minibatch_size=32", "ppo.epochs=1", "train.frames_per_batch=64", "train.total_frames=64",
                   "train.checkpoint_every_iters=1", "train.eval_episodes=1", "threads=1"]
LOCO_TINY = ["env.course=flat", "env.num_envs=1", "env.parallel=false", "env.horizon=24", "model.hidden_shapes=[16]",
             "model.visual_dim=16", "model.mamba_params=[[16,4,4,2]]", "model.append_hidden_shapes=[16]",
             "model.memory_hidden=16", "env.image_size=40"]


def agent_main(name: str):
    return importlib.import_module(f"agents.{name}").main


def exit_code(main, argv) -> int:
    """main's return value, or the code argparse exits with (usage errors, --help)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("agent", AGENTS)
def test_help_has_the_same_sections_and_flags(agent, capsys):
    assert exit_code(agent_main(agent), ["--help"]) == 0
    out = capsys.readouterr().out
    for text in (*SECTIONS, *FLAGS):
        assert text in out, f"{agent} --help lacks {text!r}"
    positions = [out.index(s) for s in SECTIONS]
    assert positions == sorted(positions), f"{agent} --help: sections out of order"
    for form in SHARED_FORMS:
        assert f"  {agent}.py {form}" in out


def test_the_shared_command_lines_read_the_same_in_every_agent(capsys):
    blocks = []
    for agent in AGENTS:
        exit_code(agent_main(agent), ["--help"])
        out = capsys.readouterr().out
        block = out[out.index("commands:"):out.index("exit codes:")]
        blocks.append([line.replace(f"{agent}.py", "AGENT").rstrip() for line in block.splitlines()[1:6]])
    assert all(b == blocks[0] for b in blocks), blocks


@pytest.mark.parametrize("agent", AGENTS)
def test_an_unknown_flag_exits_2_naming_it(agent, capsys):
    assert exit_code(agent_main(agent), ["--no-such-flag", "seed=1"]) == 2
    assert "--no-such-flag" in capsys.readouterr().err


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("mode", ["--eval", "--export"])
def test_a_missing_checkpoint_exits_2_naming_it(agent, mode, tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    assert exit_code(agent_main(agent), [mode, str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.startswith("error: ")
    assert exit_code(agent_main(agent), [mode, str(tmp_path)]) == 2        # a folder without checkpoints
    assert f"{mode} {tmp_path}: no checkpoint found" in capsys.readouterr().err
    assert exit_code(agent_main(agent), ["--resume", str(tmp_path / "no_run")]) == 2
    assert "no_run" in capsys.readouterr().err
    assert not any(p.name != "missing.pt" for p in tmp_path.iterdir())     # nothing written


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("argv, needle", [
    (["--episodes", "3"], "--episodes applies to --eval"),
    (["--dtype", "float32"], "--dtype applies to --export"),
    (["--out", "x"], "--out applies to --eval or --export"),
    (["--eval", "a.pt", "--resume", "r"], "--resume and --eval"),
    (["--eval", "a.pt", "--dry-run"], "--dry-run"),
    (["--eval", "a.pt", "--config", "c.yaml"], "--config"),
    (["--export", "a.pt", "seed=1"], "seed=1"),
    (["--eval", "a.pt", "--episodes", "0"], "--episodes must be >= 1"),
    (["--eval"], "--eval"),
])
def test_misused_flags_exit_2_naming_them(agent, argv, needle, capsys):
    assert exit_code(agent_main(agent), argv) == 2
    assert needle in capsys.readouterr().err


def test_agent_specific_eval_flags_need_eval(capsys):
    assert exit_code(agent_main("ppo_locomamba"), ["--stochastic"]) == 2
    assert "--stochastic applies to --eval" in capsys.readouterr().err
    for flag in (["--seed", "3"], ["--no-video"]):
        assert exit_code(agent_main("bc_diffusion"), flag) == 2
        assert f"{flag[0]} applies to --eval" in capsys.readouterr().err


def test_rl_dry_runs_with_tiny_configs(capsys):
    assert agent_main("ppo_memory")(["--config", "configs/pomdp/stateless_cartpole.yaml", *PPO_MEMORY_TINY,
                                     "--dry-run"]) == 0
    assert "env ok: stateless_cartpole" in capsys.readouterr().out
    assert agent_main("ppo_locomamba")(["--config", "configs/quadruped/quick_flat.yaml", "--dry-run", *LOCO_TINY]) == 0
    assert "env ok" in capsys.readouterr().out
    assert agent_main("vmamba_td3")(["--dry-run", "--config", "configs/pendulum/td3_gru.yaml"]) == 0
    assert "env ok" in capsys.readouterr().out


def test_export_and_eval_the_same_way_in_an_rl_agent(tmp_path, capsys):
    """ppo_memory had no --export before the shared grammar: train, export, evaluate the export."""
    main = agent_main("ppo_memory")
    assert main(["--config", "configs/pomdp/stateless_cartpole.yaml", *PPO_MEMORY_TINY, f"run_root={tmp_path}"]) == 0
    run = next((tmp_path / "ppo_memory").iterdir())
    dest = tmp_path / "policy_f32.pt"
    assert main(["--export", str(run), "--out", str(dest), "--dtype", "float32"]) == 0
    assert f"-> {dest}" in capsys.readouterr().out and dest.is_file()
    assert main(["--export", str(run)]) == 0                         # default: RUN/export/<ckpt>_float16.pt
    assert len(list((run / "export").glob("*_float16.pt"))) == 1
    out_dir = tmp_path / "eval"
    assert main(["--eval", str(dest), "--episodes", "1", "--out", str(out_dir)]) == 0
    result = json.loads(next(out_dir.glob("eval_*.json")).read_text())
    assert result["checkpoint"] == str(dest)


def test_a_run_gives_back_the_torch_threads_it_set(tmp_path):
    """An agent's `threads` key sets torch's intra-op threads for its run; main() called in-process
    must restore them (a leaked threads=1 changed the next test's numerics: run_agent's comment)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        main = agent_main("ppo_memory")
        assert "threads=1" in PPO_MEMORY_TINY
        assert main(["--config", "configs/pomdp/stateless_cartpole.yaml", *PPO_MEMORY_TINY, f"run_root={tmp_path}"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---- the BC agents: datasets in both generators' styles, the older subcommand forms ----------
def test_both_generators_take_the_same_style_and_the_old_forms(tmp_path, capsys):
    from agents import bc_diffusion, bc_navigation

    nav = tmp_path / "nav"
    common = ["--out", str(nav), "--episodes", "2", "--seed", "3", "--quiet"]
    nav_settings = ["depth=1", "image_size=16", "max_episode_steps=300", "collision_backend=grid"]
    assert bc_navigation.main(["--generate", *nav_settings[:2], *common, *nav_settings[2:]]) == 0
    assert bc_navigation.main(["--info", str(nav)]) == 0
    assert "2 episodes" in capsys.readouterr().out
    assert bc_navigation.main(["generate", *common[:3], "4", *common[4:], *nav_settings]) == 0   # old form: continues
    assert bc_navigation.main(["info", str(nav)]) == 0
    assert "4 episodes" in capsys.readouterr().out

    manip = tmp_path / "manip"
    settings = ["task=push", "keep_failed=true", "horizon=12", "num_points=64", "image_size=64"]
    assert bc_diffusion.main(["--generate", "--out", str(manip), "--episodes", "1", "--seed", "1", "--quiet",
                              *settings]) == 0
    old = ["--task", "push", "--keep-failed", "--horizon", "12", "--num-points", "64", "--image-size", "64"]
    assert bc_diffusion.main(["generate", *old, "--episodes", "2", "--out", str(manip), "--seed", "1", "--quiet"]) == 0
    assert bc_diffusion.main(["--info", str(manip)]) == 0           # the old form continued the same dataset
    assert re.search(r"task push, 2 episodes", capsys.readouterr().out)
    assert bc_diffusion.main(["--generate", "--out", str(manip), "--episodes", "3", "--quiet", "--seed", "1",
                              *settings[:-1], "image_size=32"]) == 2                # other settings: refused
    assert bc_diffusion.main(["--generate", "--out", str(manip), "--episodes", "3", "task=lift"]) == 2
    assert "task" in capsys.readouterr().err
    assert exit_code(bc_diffusion.main, ["--generate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--out DIR" in out and "num_points: an int = 512" in out


def test_bc_flags_and_subcommands_are_the_same_commands(tmp_path, capsys):
    """bc_diffusion on a 2-episode dataset: train (flag form) with --dry-run, train, eval and export in
    the flag form and in the older subcommand form (README, configs/manip/*.yaml headers)."""
    from agents import bc_diffusion
    from agents.manipulation.data import GenerateConfig, generate

    data = generate(tmp_path / "push", 2, GenerateConfig(task="push", seed=1, keep_failed=True, horizon=12,
                                                        num_points=64, image_size=64), progress=False)
    args = ["--config", "configs/manip/tiny.yaml", f"data.path={data.path.parent}", f"run_root={tmp_path / 'runs'}"]
    assert bc_diffusion.main([*args, "--dry-run"]) == 0
    assert bc_diffusion.main(["train", *args, "--dry-run"]) == 0
    assert not (tmp_path / "runs").exists()
    assert bc_diffusion.main(args) == 0
    run = next((tmp_path / "runs" / "bc_diffusion").iterdir())
    assert bc_diffusion.main(["--resume", str(run), "train.steps=7"]) == 0
    assert bc_diffusion.main(["train", "--resume", str(run), "train.steps=8"]) == 0
    capsys.readouterr()
    assert bc_diffusion.main(["--eval", str(run), "--episodes", "1", "--no-video", "--out", str(tmp_path / "e1")]) == 0
    assert bc_diffusion.main(["eval", "--episodes", "1", str(run), "--no-video", "--out", str(tmp_path / "e2")]) == 0
    first, second = (json.loads(next((tmp_path / d).glob("eval_*.json")).read_text()) for d in ("e1", "e2"))
    assert first["success_rate"] == second["success_rate"] and first["checkpoint"] == second["checkpoint"]
    half = tmp_path / "half.pt"
    assert bc_diffusion.main(["--export", str(run), "--out", str(half)]) == 0
    assert bc_diffusion.main(["export", str(run), "--dtype", "float32", "--out", str(tmp_path / "f32.pt")]) == 0
    assert f"evaluate with: python agents/bc_diffusion.py --eval {tmp_path / 'f32.pt'}" in capsys.readouterr().out
    assert bc_diffusion.main(["--eval", str(half), "--episodes", "1", "--no-video"]) == 0
    assert bc_diffusion.main(["eval", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert bc_diffusion.main(["train", f"data.path={tmp_path / 'nothing'}", f"run_root={tmp_path}"]) == 2
    assert "nothing" in capsys.readouterr().err


@pytest.mark.parametrize("agent", ["ppo_memory", "bc_diffusion"])
def test_a_non_finite_loss_exits_1_naming_the_last_good_checkpoint(agent, tmp_path, monkeypatch, capsys):
    """The same exit code 1 in an RL and a BC agent (both through run_agent)."""
    from agents.runtime.nonfinite import NonFiniteLoss

    module = importlib.import_module(f"agents.{agent}")

    def diverge(cfg, run, state):
        run.save_checkpoint({"step": 1, "frames": 1, "config": {}}, 1)
        raise NonFiniteLoss({"step": 2, "loss": float("nan")})

    monkeypatch.setattr(module, "train", diverge)
    if agent == "ppo_memory":
        argv = ["--config", "configs/pomdp/stateless_cartpole.yaml", *PPO_MEMORY_TINY]
    else:
        from agents.manipulation.data import GenerateConfig, generate

        data = generate(tmp_path / "push", 1, GenerateConfig(task="push", seed=1, keep_failed=True, horizon=12,
                                                            num_points=64, image_size=64), progress=False)
        argv = ["--config", "configs/manip/tiny.yaml", f"data.path={data.path.parent}"]
    assert module.main([*argv, f"run_root={tmp_path / 'runs'}"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "Last good checkpoint: " in err and "ckpt_" in err


# ---- every command README.md and the configs' header comments show still parses ----------------
def documented_commands() -> list[tuple[str, str, str]]:
    """(where, agent, arguments) of each ``python agents/<agent>.py ...`` in README.md's code blocks
    and in the header comments of configs/**/*.yaml."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", (root / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for m in re.finditer(r"python agents/(\w+)\.py([^#`]*)", line):
                found.append(("README.md", m.group(1), m.group(2).strip()))
    for f in sorted((root / "configs").rglob("*.yaml")):
        for line in f.read_text().splitlines():
            if line.startswith("#"):
                for m in re.finditer(r"python agents/(\w+)\.py([^#`)]*)", line):
                    found.append((str(f.relative_to(root)), m.group(1), m.group(2).strip()))
    return [c for c in found if c[1] in AGENTS and "<agent>" not in c[2] and "[" not in c[2]]


class Parsed(Exception):
    """Raised by the stubs below instead of training, evaluating or generating."""


def test_every_documented_command_still_parses(monkeypatch, capsys):
    import shlex

    from agents.manipulation import data as manip_data
    from agents.navigation import data as nav_data

    def stop(*args, **kwargs):
        raise Parsed

    for module in ("agents.ppo_locomamba", "agents.ppo_memory", "agents.vmamba_td3", "agents.algos.bc"):
        monkeypatch.setattr(f"{module}.run_agent", stop)       # the flow after parsing
    for module in (nav_data, manip_data):
        monkeypatch.setattr(module, "generate", stop)
        monkeypatch.setattr(module, "load_dataset", stop)
    commands = documented_commands()
    assert len(commands) >= 40 and {c[1] for c in commands} == set(AGENTS)
    assert any(c[0].startswith("configs/manip/") and c[2].startswith("generate --task") for c in commands)
    for where, agent, args in commands:
        argv = shlex.split(args)
        try:
            code = agent_main(agent)(argv)
        except Parsed:
            continue
        except SystemExit as e:
            code = e.code
            if code == 0 and "--help" in argv:
                continue
        pytest.fail(f"{where}: python agents/{agent}.py {args} -> {code}\n{capsys.readouterr().err}")
