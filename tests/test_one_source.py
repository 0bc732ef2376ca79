"""One source for each shared fact (issue "one house", item 3): the copies that were unified
behave as each of them did."""
import typing

import pytest

from agents.runtime.config import ConfigError, from_dict
from networks.memory.factory import KIND_OPTIONS, MEMORY_KINDS, MemoryKind, make_memory


# -- 1. memory kinds: networks.memory.factory.MemoryKind ------------------------------------------

def test_memory_kind_literal_is_the_registry():
    assert typing.get_args(MemoryKind) == tuple(MEMORY_KINDS) == tuple(KIND_OPTIONS)
    for kind in MEMORY_KINDS:   # every listed kind builds
        make_memory(kind, 4, 8, **({"headdim": 4} if kind == "mamba2" else
                                   {"num_heads": 2} if kind in ("transformer", "rmt") else {}))


@pytest.mark.parametrize("module, section", [("agents.quadruped.config", "ModelConfig"),
                                             ("agents.drone.config", "ModelConfig"),
                                             ("agents.pomdp.build", "ModelConfig")])
def test_agent_configs_take_every_memory_kind(module, section):
    import importlib
    cls = getattr(importlib.import_module(module), section)
    assert typing.get_type_hints(cls)["memory"] == MemoryKind
    for kind in MEMORY_KINDS:
        assert from_dict(cls, {"memory": kind}).memory == kind
    with pytest.raises(ConfigError, match="model.memory.*not one of.*'rmt'"):
        from_dict(cls, {"memory": "rnn"}, where="model")


def test_quadruped_builds_with_rmt():
    """rmt was missing from the quadruped's own list; its policy builds with it like any other kind."""
    from agents.quadruped.build import check_config
    from agents.quadruped.config import Config
    cfg = from_dict(Config, {"model": {"memory": "rmt", "memory_hidden": 32, "visual_dim": 32,
                                       "hidden_shapes": [32], "append_hidden_shapes": [32],
                                       "mamba_params": [[32, 4, 4, 1]]},
                             "env": {"image_size": 36, "frame_stack": 1, "num_envs": 2},
                             "train": {"frames_per_batch": 64},
                             "ppo": {"slice_len": 8, "minibatch_size": 32}})
    check_config(cfg)


# -- 2. atomic writes: agents.runtime.atomic_io ---------------------------------------------------

def test_atomic_write_that_raises_leaves_no_file(tmp_path):
    import torch

    from agents.runtime.atomic_io import atomic_open, atomic_path, torch_save_atomic, write_text_atomic
    dest = tmp_path / "sub" / "f.json"
    write_text_atomic(dest, "old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_open(dest, "w") as f:
            f.write("half")
            raise Boom
    with pytest.raises(Boom):
        with atomic_path(dest, suffix=".gif") as tmp:
            tmp.write_text("half")
            raise Boom
    with pytest.raises((AttributeError, TypeError)):
        torch_save_atomic({"f": lambda: 0}, dest)   # torch.save cannot pickle a lambda
    assert dest.read_text() == "old"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.json"]   # no temp file left
    torch_save_atomic({"w": torch.ones(2)}, tmp_path / "new" / "c.pt")
    assert torch.equal(torch.load(tmp_path / "new" / "c.pt")["w"], torch.ones(2))
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(dest, "a"):
            pass


def test_atomic_files_get_plain_open_permissions(tmp_path):
    import os

    from agents.runtime.atomic_io import write_bytes_atomic
    (tmp_path / "plain").write_bytes(b"x")
    write_bytes_atomic(tmp_path / "atomic", b"x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(tmp_path / "plain").st_mode


def test_writers_go_through_atomic_io(tmp_path):
    """save_config, checkpoints, the sweep's rows and the PPO curve leave no temp file and read back."""
    import yaml

    from agents.algos.ppo import PPOConfig
    from agents.runtime.config import save_config
    from agents.runtime.run_dir import RunDir
    from agents.ppo_memory import CURVE_FIELDS, write_curve
    save_config(PPOConfig(), tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["lr"] == PPOConfig().lr
    rd = RunDir.create(tmp_path / "runs", "x")
    ckpt = rd.save_checkpoint({"step": 1}, 1)
    assert RunDir.load_checkpoint(ckpt)["step"] == 1 and rd.latest_checkpoint() == ckpt
    write_curve(tmp_path / "curves" / "c.csv", [{k: 0 for k in CURVE_FIELDS}])
    assert (tmp_path / "curves" / "c.csv").read_text().splitlines()[0] == ",".join(CURVE_FIELDS)
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp")]


# -- 3. parameter counts: networks.params -----------------------------------------------------------

def test_parameter_counter_matches_the_old_sums():
    from torch import nn

    from networks.params import count_parameters, parameter_counts, parameter_table
    a, b = nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 2), nn.LayerNorm(2))
    b[1].weight.requires_grad_(False)
    assert count_parameters(a) == sum(p.numel() for p in a.parameters()) == 16
    assert count_parameters(a, b) == 16 + 10 + 4
    assert count_parameters(b, trainable=True) == sum(p.numel() for p in b.parameters() if p.requires_grad) == 12
    assert parameter_counts({"a": a, "b": b}) == {"a": 16, "b": 14, "total": 30}
    assert parameter_table({"a": a, "b": b}).splitlines() == ["a                16", "b                14",
                                                             "total            30"]


def test_agent_reports_count_through_networks_params():
    from agents.pomdp.build import Config, MemoryPolicy
    from networks.params import count_parameters
    nets = MemoryPolicy(from_dict(Config, {"model": {"memory": "gru", "hidden": 8}}))
    counts = nets.parameter_counts()
    assert counts["memory"] == count_parameters(nets.memory)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


# -- 4. episode seeds: agents.runtime.seeds.episode_seed ---------------------------------------------

def test_one_episode_seed_gives_both_old_seeds():
    import numpy as np

    from agents.manipulation import data as manip_data
    from agents.navigation import data as nav_data
    from agents.runtime.seeds import episode_seed
    assert manip_data.episode_seed is nav_data.episode_seed is episode_seed
    for seed in (0, 1, 7, 1000, 2000, 2**31 + 5):
        for i in range(40):
            nav_old = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            assert episode_seed(seed, i) == nav_old                       # navigation's (seed, index)
            for attempt in range(3):                                      # manipulation's (seed, i, attempt)
                manip_old = int(np.random.SeedSequence([seed, i, attempt]).generate_state(1)[0])
                assert episode_seed(seed, i, attempt) == manip_old


# -- 5. a stateless Mamba call: mixer(x) / MambaStack.sequence(x) start from zero state --------------

@pytest.mark.parametrize("kind", ["mamba1", "mamba2"])
def test_mixer_without_state_equals_explicit_zeros(kind):
    import torch

    from networks.memory.mamba import MambaStack
    from networks.ssm.mamba1 import Mamba1Mixer
    from networks.ssm.mamba2 import Mamba2Mixer
    torch.manual_seed(0)
    mixer = Mamba1Mixer(8, d_state=4) if kind == "mamba1" else Mamba2Mixer(8, d_state=4, headdim=4)
    x = torch.randn(3, 7, 8)
    shapes = mixer.state_shapes()
    is_init = torch.zeros(3, 7, dtype=torch.bool)
    is_init[:, 0] = True
    zeros = (torch.zeros(3, *shapes["conv"]), torch.zeros(3, *shapes["ssm"]))
    for scan in ("chunked", "reference"):
        want = mixer(x, is_init, *zeros, scan=scan)
        for got in (mixer(x, scan=scan), mixer(x, is_init, scan=scan),
                    mixer(x, torch.zeros_like(is_init), *zeros, scan=scan)):   # a reset at 0 of a zero state: no-op
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=0) if scan == "reference" else \
                    torch.testing.assert_close(a, b)
    stack = MambaStack(kind, 5, 8, num_layers=2, d_state=4, **({"headdim": 4} if kind == "mamba2" else {}))
    x = torch.randn(3, 7, 5)
    states = {k: torch.zeros(3, *s) for k, s in stack.state_shapes().items()}
    want = stack.sequence(x, is_init, states)
    got = stack.sequence(x)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    for k in states:
        torch.testing.assert_close(got[1][k], want[1][k], rtol=0, atol=0)


def test_fusion_layer_and_sequence_mamba_keep_their_outputs():
    """LocoMamba's fusion layer and the diffusion denoiser's SequenceMamba used to build the zero
    state themselves; calling the mixer without one gives the same outputs."""
    import torch

    from networks.models.diffusion_policy import SequenceMamba
    from networks.models.loco_encoder import MambaFusionLayer
    torch.manual_seed(0)
    layer, h = MambaFusionLayer(8, 12, 4, 4, 2), torch.randn(5, 6, 8)
    seq, a = SequenceMamba(32, "mamba2"), torch.randn(5, 6, 32)
    seq1 = SequenceMamba(8, "mamba1")
    for mod, inp, mixer in ((layer, h, layer.mixer), (seq, a, seq.mixer), (seq1, h, seq1.mixer)):
        x = layer.inp(layer.norm(inp)) if mod is layer else inp
        shapes = mixer.state_shapes()
        is_init = torch.zeros(5, 6, dtype=torch.bool)
        is_init[:, 0] = True
        y = mixer(x, is_init, x.new_zeros(5, *shapes["conv"]), x.new_zeros(5, *shapes["ssm"]))[0]
        want = inp + layer.out(y) if mod is layer else y
        torch.testing.assert_close(mod(inp), want, rtol=0, atol=0)


# -- 6. NaN/inf: agents.runtime.nonfinite (check_finite -> NonFiniteLoss -> run_agent exits 1) -------

def test_one_non_finite_path():
    import torch
    from torch import nn

    from agents.runtime.nonfinite import NonFiniteLoss, check_finite
    check_finite(None, a=torch.tensor(1.0), b=2.0)
    check_finite(3, a=torch.tensor(1.0, requires_grad=True) * 2)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(NonFiniteLoss) as info:
            check_finite(None, loss=torch.tensor(bad), other=torch.tensor(0.5))
        assert set(info.value.detail) == {"loss", "other"} and info.value.detail["other"] == 0.5
    with pytest.raises(NonFiniteLoss, match=r"\{'step': 7, 'x': nan\}"):
        check_finite(7, x=torch.tensor(float("nan")))
    err = NonFiniteLoss({"loss": float("nan")}).at(frame=64)
    assert err.detail == {"frame": 64, "loss": err.detail["loss"]} and "'frame': 64" in str(err)
    # TD3's optimiser step goes through it (it used to raise FloatingPointError), before touching weights
    from agents.vmamba_td3 import step
    net = nn.Linear(2, 1)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NonFiniteLoss):
        step(torch.optim.SGD(net.parameters(), lr=1.0), net(torch.ones(1, 2)).sum() * float("nan"), net, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_ppo_non_finite_loss_exits_1_naming_the_terms(tmp_path, capsys):
    from agents import ppo_memory
    tiny = ["threads=1", "logger=none", "env.num_envs=4", "model.embed=8", "model.hidden=8", "model.head_hidden=8",
            "ppo.slice_len=8", "ppo.minibatch_size=32", "ppo.epochs=1", "train.frames_per_batch=64",
            "train.eval_episodes=2", "model.memory=none", "train.total_frames=64", f"run_root={tmp_path}"]
    assert ppo_memory.main(["--config", "configs/pomdp/stateless_cartpole.yaml", *tiny, "ppo.critic_coef=1e39"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss {'loss': inf" in err and "'loss_critic': inf" in err
    assert "Last good checkpoint: none yet" in err


# -- blocks copied across agents (duplicates --most 60) -------------------------------------------------

AGENT_CONFIGS = [("agents.quadruped.config", "locomamba", "auto"), ("agents.pomdp.build", "pomdp", "cpu"),
                 ("agents.drone.config", "vmamba_td3", "auto"), ("agents.manipulation.config", "bc_diffusion", "auto"),
                 ("agents.navigation.config", "mambavint", "auto")]


@pytest.mark.parametrize("module, name, device", AGENT_CONFIGS)
def test_agent_configs_share_the_run_keys(module, name, device):
    import dataclasses
    import importlib

    from agents.runtime.config import RunConfig, to_dict
    cls = importlib.import_module(module).Config
    assert issubclass(cls, RunConfig)
    cfg = cls()
    assert (cfg.name, cfg.seed, cfg.device, cfg.run_root, cfg.logger) == (name, 0, device, "runs", "csv")
    assert from_dict(cls, to_dict(cfg)) == cfg                       # saved configs load back
    old_order = dict(reversed(list(to_dict(cfg).items())))            # key order does not matter
    assert from_dict(cls, old_order) == cfg
    with pytest.raises(ConfigError, match="config key 'seed'"):
        from_dict(cls, {"seed": -1})
    assert [f.name for f in dataclasses.fields(cls)][:5] == ["name", "seed", "device", "run_root", "logger"]


def test_memory_ppo_config_is_ppo_config_with_the_suites_defaults():
    import dataclasses

    from agents.algos.ppo import PPOConfig
    from agents.pomdp.build import MemoryPPOConfig
    old = dict(lr=1e-3, value_lr=1e-3, epochs=4, minibatch_size=256, slice_len=32, gamma=0.98, gae_lambda=0.8,
               entropy_coef=0.0, max_grad_norm=0.5, anneal_lr=True)
    assert issubclass(MemoryPPOConfig, PPOConfig)
    assert dataclasses.asdict(MemoryPPOConfig()) == {**dataclasses.asdict(PPOConfig()), **old}
    base = {f.name: f.metadata for f in dataclasses.fields(PPOConfig)}
    assert {f.name: f.metadata for f in dataclasses.fields(MemoryPPOConfig)} == base   # same bounds and help
    with pytest.raises(ConfigError, match="ppo.epochs"):
        from_dict(MemoryPPOConfig, {"epochs": 0}, where="ppo")


def test_ppo_agents_dry_run_through_one_function(capsys):
    from agents import ppo_locomamba, ppo_memory
    from agents.algos.ppo import dry_run
    assert ppo_memory.ppo_dry_run is dry_run and ppo_locomamba.ppo_dry_run is dry_run
    assert ppo_memory.main(["--config", "configs/pomdp/stateless_cartpole.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("name: ")                                   # the resolved config first
    assert "parameters: embed" in out and "env ok: stateless_cartpole (easy), observation (2, 2), action (2, 2)" in out


def test_rl_agents_eval_starts_from_one_function(tmp_path):
    import argparse

    from agents import ppo_locomamba, ppo_memory, vmamba_td3
    from agents.pomdp.build import Config
    from agents.runtime.cli import eval_run
    from agents.runtime.config import to_dict
    from agents.runtime.run_dir import RunDir
    assert all(m.eval_run is eval_run for m in (ppo_locomamba, ppo_memory, vmamba_td3))
    run = RunDir.create(tmp_path, "ppo_memory", "x")
    ckpt = run.save_checkpoint({"config": to_dict(Config()), "model": {}}, 0)
    for episodes, want in ((None, Config().train.eval_episodes), (3, 3)):
        got_ckpt, state, cfg, n = eval_run(argparse.Namespace(eval=str(run.path), episodes=episodes), Config)
        assert (got_ckpt, cfg, n) == (ckpt, Config(), want) and state["model"] == {}
