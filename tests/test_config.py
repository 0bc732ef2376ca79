"""The shared config system: validation messages name the dotted key and what is allowed; files,
overrides and save/load round-trip."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from agents.runtime.config import (ConfigError, apply_overrides, describe, field_spec, from_dict, load_config,
                                  parse_override, read_config_file, save_config, to_dict)


@dataclass
class EnvCfg:
    course: Literal["flat", "thin"] = field_spec("thin", help="obstacle course")
    horizon: int = field_spec(1000, min=1, help="steps per episode")
    clip_num: list[float] = field_spec([0.05, 0.5, 0.5], min=0.0, max=2.0, length=(3, 12))
    obstacles: int | None = field_spec(None, min=0, nullable=True)
    parallel: bool = field_spec(True)


@dataclass
class PPOCfg:
    lr: float = field_spec(3e-4, min=0.0, max=1.0)
    clip: float = field_spec(0.2, min=0.0)
    epochs: int = field_spec(4, min=1, max=100)
    arch: str = field_spec("locomamba", choices=["locomamba", "locotransformer"])
    hidden: list[list[int]] = field_spec([[64, 64], [32]], min=1)


@dataclass
class TrainCfg:
    seed: int = field_spec(0)
    name: str = field_spec("run")
    env: EnvCfg = field(default_factory=EnvCfg)
    ppo: PPOCfg = field(default_factory=PPOCfg)


def test_defaults_and_round_trip():
    cfg = from_dict(TrainCfg, {})
    assert cfg == TrainCfg() and cfg.env.clip_num == [0.05, 0.5, 0.5]
    cfg.env.clip_num.append(1.0)
    assert TrainCfg().env.clip_num == [0.05, 0.5, 0.5]  # list defaults are not shared
    data = {"seed": 3, "name": "x", "env": {"course": "flat", "horizon": 10, "clip_num": [0, 1, 2],
                                            "obstacles": 7, "parallel": False},
            "ppo": {"lr": 1, "clip": 0.1, "epochs": 2, "arch": "locotransformer", "hidden": [[8], [4, 4]]}}
    cfg = from_dict(TrainCfg, data)
    assert cfg.env.horizon == 10 and cfg.ppo.hidden == [[8], [4, 4]] and cfg.env.obstacles == 7
    assert type(cfg.ppo.lr) is float and all(type(v) is float for v in cfg.env.clip_num)  # ints -> floats
    assert to_dict(cfg) == {**data, "env": {**data["env"], "clip_num": [0.0, 1.0, 2.0]},
                            "ppo": {**data["ppo"], "lr": 1.0}}
    assert from_dict(TrainCfg, to_dict(cfg)) == cfg
    assert from_dict(TrainCfg, {"env": {"obstacles": None}}).env.obstacles is None


def test_overrides_parse_yaml_values():
    assert parse_override("ppo.lr=3e-4") == ("ppo.lr", 3e-4)  # PyYAML alone would give the string '3e-4'
    assert parse_override("ppo.hidden=[[64,64],[8]]") == ("ppo.hidden", [[64, 64], [8]])
    assert parse_override("env.parallel=false") == ("env.parallel", False)
    assert parse_override("env.obstacles=null") == ("env.obstacles", None)
    assert parse_override("name=a=b") == ("name", "a=b")
    assert parse_override("name=yes") == ("name", "yes")  # YAML 1.1 would make it a bool
    base = {"env": {"horizon": 5}}
    out = apply_overrides(base, ["env.clip_num=[1, 1, 1]", "ppo.lr=1e-3", "seed=7"])
    assert out == {"env": {"horizon": 5, "clip_num": [1, 1, 1]}, "ppo": {"lr": 1e-3}, "seed": 7}
    assert base == {"env": {"horizon": 5}}  # input untouched
    cfg = from_dict(TrainCfg, out)
    assert cfg.ppo.lr == 1e-3 and cfg.env.clip_num == [1.0, 1.0, 1.0] and cfg.seed == 7


@pytest.mark.parametrize("data, expected", [
    ({"ppo": {"lrr": 0.1}}, ["unknown key 'ppo.lrr'", "clip, epochs", "did you mean 'ppo.lr'?"]),
    ({"ppoo": {}}, ["unknown key 'ppoo'", "allowed: env, name, ppo, seed", "did you mean 'ppo'?"]),
    ({"env": {"horizon": -5}}, ["config key 'env.horizon': expected an int >= 1, got -5"]),
    ({"env": {"horizon": 2.5}}, ["config key 'env.horizon': expected an int", "got 2.5"]),
    ({"env": {"horizon": True}}, ["config key 'env.horizon': expected an int", "got True"]),
    ({"ppo": {"lr": "fast"}}, ["config key 'ppo.lr': expected a float", "got 'fast'"]),
    ({"ppo": {"lr": False}}, ["config key 'ppo.lr': expected a float", "got False"]),
    ({"ppo": {"lr": 2.0}}, ["config key 'ppo.lr': expected a float >= 0.0 and <= 1.0, got 2.0"]),
    ({"ppo": {"clip": float("nan")}}, ["config key 'ppo.clip': expected a finite float, got nan"]),
    ({"ppo": {"clip": float("inf")}}, ["config key 'ppo.clip': expected a finite float, got inf"]),
    ({"env": {"parallel": 1}}, ["config key 'env.parallel': expected a bool (true/false), got 1"]),
    ({"env": {"parallel": "true"}}, ["config key 'env.parallel': expected a bool", "got 'true'"]),
    ({"name": 5}, ["config key 'name': expected a string, got 5"]),
    ({"name": None}, ["config key 'name': expected a string, got None"]),
    ({"env": {"course": "hilly"}}, ["config key 'env.course': 'hilly' is not one of ['flat', 'thin']"]),
    ({"ppo": {"arch": "mambo"}}, ["config key 'ppo.arch': 'mambo' is not one of ['locomamba', 'locotransformer']"]),
    ({"env": {"clip_num": "abc"}}, ["config key 'env.clip_num': expected a list of floats, got 'abc'"]),
    ({"env": {"clip_num": [0.1, 0.2]}}, ["config key 'env.clip_num': expected a list of length 3 or 12", "2 items"]),
    ({"env": {"clip_num": [0.1, 0.2, 3.0]}}, ["config key 'env.clip_num[2]': expected a float >= 0.0 and <= 2.0"]),
    ({"env": {"clip_num": [0.1, "x", 0.3]}}, ["config key 'env.clip_num[1]': expected a float"]),
    ({"ppo": {"hidden": [64, 64]}}, ["config key 'ppo.hidden[0]': expected a list of ints, got 64"]),
    ({"ppo": {"hidden": [[64, 0]]}}, ["config key 'ppo.hidden[0][1]': expected an int >= 1, got 0"]),
    ({"env": {"obstacles": -1}}, ["config key 'env.obstacles': expected an int >= 0, got -1"]),
    ({"env": {"obstacles": 1.5}}, ["config key 'env.obstacles': expected an int", "got 1.5"]),
    ({"env": 3}, ["config key 'env': expected a mapping of keys", "got 3"]),
    ({"ppo": [1, 2]}, ["config key 'ppo': expected a mapping of keys", "got [1, 2]"]),
])
def test_malformed_values_name_key_and_allowed(data, expected):
    with pytest.raises(ConfigError) as err:
        from_dict(TrainCfg, data)
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


def test_bad_overrides():
    for text in ("ppo.lr", "=3", ""):
        with pytest.raises(ConfigError, match=r"expected the form key=value"):
            parse_override(text)
    with pytest.raises(ConfigError, match=r"'seed' is not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])
    with pytest.raises(ConfigError, match=r"cannot parse the value"):
        parse_override("ppo.hidden=[1, 2")
    with pytest.raises(ConfigError, match=r"unknown key 'ppo\.lrr'.*did you mean 'ppo\.lr'"):
        load_config(TrainCfg, overrides=["ppo.lrr=0.1"])


def test_files(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        read_config_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nenv:\n  horizon: [1, 2\nname: x\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*line \d+") as err:
        read_config_file(bad)
    assert "line 4" in str(err.value) or "line 3" in str(err.value)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"seed": 1,\n "name": }')
    with pytest.raises(ConfigError, match=r"(?s)bad\.json.*line 2"):
        read_config_file(bad_json)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"top level must be a mapping.*got list"):
        read_config_file(listing)
    toml = tmp_path / "c.toml"
    toml.write_text("seed = 1\n")
    with pytest.raises(ConfigError, match=r"allowed: \.yaml, \.yml, \.json"):
        read_config_file(toml)
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing\n")
    assert read_config_file(empty) == {}

    js = tmp_path / "c.json"
    js.write_text(json.dumps({"seed": 2, "ppo": {"lr": 0.01, "hidden": [[16]]}}))
    cfg = load_config(TrainCfg, js, ["ppo.epochs=9"])
    assert (cfg.seed, cfg.ppo.lr, cfg.ppo.hidden, cfg.ppo.epochs) == (2, 0.01, [[16]], 9)
    yml = tmp_path / "c.yaml"
    yml.write_text("env:\n  horizon: 0\n")
    with pytest.raises(ConfigError, match=r"'env\.horizon': expected an int >= 1, got 0"):
        load_config(TrainCfg, yml)
    yml.write_text("ppo:\n  lr: 3e-4\nenv:\n  parallel: no\n")  # YAML 1.1 traps: 3e-4 a string, no a bool
    assert load_config(TrainCfg, yml, ["env.parallel=false"]).ppo.lr == 3e-4
    with pytest.raises(ConfigError, match=r"'env\.parallel': expected a bool .*got 'no'"):
        load_config(TrainCfg, yml)


def test_convert_hook_runs_before_overrides_and_validation():
    seen = {}

    def convert(data):
        seen.update(data)
        return {"ppo": {"lr": data["learning_rate"]}}

    cfg = load_config(TrainCfg, None, ["ppo.epochs=3"], convert=lambda d: convert({"learning_rate": 0.5, **d}))
    assert seen == {"learning_rate": 0.5} and (cfg.ppo.lr, cfg.ppo.epochs) == (0.5, 3)
    with pytest.raises(ConfigError, match=r"'ppo\.lr': expected a float"):
        load_config(TrainCfg, convert=lambda d: {"ppo": {"lr": "x"}})


def test_save_config_round_trip(tmp_path):
    cfg = load_config(TrainCfg, overrides=["ppo.lr=1e-5", "env.obstacles=4", "env.clip_num=[0.1,0.2,0.3]",
                                           "name=yes"])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temp file left behind
    assert read_config_file(path) == to_dict(cfg)
    assert load_config(TrainCfg, path) == cfg
    save_config(TrainCfg(), path)  # overwrite in place
    assert load_config(TrainCfg, path) == TrainCfg()


def test_describe_lists_every_dotted_key():
    text = describe(TrainCfg)
    lines = {line.split(":")[0].strip(): line for line in text.splitlines()}
    assert set(lines) == {"seed", "name", "env.course", "env.horizon", "env.clip_num", "env.obstacles",
                          "env.parallel", "ppo.lr", "ppo.clip", "ppo.epochs", "ppo.arch", "ppo.hidden"}
    assert ">= 1" in lines["env.horizon"] and "1000" in lines["env.horizon"] and "steps per episode" in lines["env.horizon"]
    assert "['locomamba', 'locotransformer']" in lines["ppo.arch"]
    assert "['flat', 'thin']" in lines["env.course"]
    assert "a list of floats" in lines["env.clip_num"] and "length (3, 12)" in lines["env.clip_num"]
    assert "a list of lists of ints" in lines["ppo.hidden"]
    assert "or null" in lines["env.obstacles"]


# ------------------------------------------------------------------ renamed keys (one release of grace)
@dataclass
class SectionCfg:
    checkpoint_every_iters: int = field_spec(10, min=1)
    steps: int = field_spec(5, min=1)


@dataclass
class RenamedCfg:
    device: str = field_spec("auto")
    train: SectionCfg = field(default_factory=SectionCfg)

    RENAMED = {"train.checkpoint_every": "train.checkpoint_every_iters", "train.device": "device"}


@pytest.fixture
def fresh_warnings(monkeypatch):
    from agents.runtime import config

    monkeypatch.setattr(config, "_warned", set())


def test_old_key_names_load_from_files_and_overrides_with_one_warning(tmp_path, capsys, fresh_warnings):
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  checkpoint_every: 3\n  device: cpu\n  steps: 7\n")
    cfg = load_config(RenamedCfg, path, [])
    assert (cfg.train.checkpoint_every_iters, cfg.device, cfg.train.steps) == (3, "cpu", 7)
    err = capsys.readouterr().err
    assert ("warning: config key 'train.checkpoint_every' is renamed 'train.checkpoint_every_iters' (the old name "
            "still works in this release, not in the next)") in err
    assert "config key 'train.device' is renamed 'device'" in err and err.count("\n") == 2
    # once per old name: the same names again (file, override, checkpoint dict) stay quiet
    cfg = load_config(RenamedCfg, path, ["train.checkpoint_every=4"])
    assert cfg.train.checkpoint_every_iters == 4
    assert from_dict(RenamedCfg, {"train": {"checkpoint_every": 5}}).train.checkpoint_every_iters == 5
    assert capsys.readouterr().err == ""
    # the file's old name, an override under the new one (and the other way round): the override wins
    assert load_config(RenamedCfg, path, ["train.checkpoint_every_iters=9"]).train.checkpoint_every_iters == 9
    new = tmp_path / "new.yaml"
    new.write_text("device: cuda\ntrain:\n  checkpoint_every_iters: 2\n")
    cfg = load_config(RenamedCfg, new, ["train.checkpoint_every=8", "train.device=cpu"])
    assert (cfg.train.checkpoint_every_iters, cfg.device) == (8, "cpu")
    # a resumed run: the saved config (old names) + overrides, through apply_overrides with the class
    saved = {"train": {"checkpoint_every": 3}, "device": "auto"}
    assert from_dict(RenamedCfg, apply_overrides(saved, ["train.checkpoint_every_iters=6"], RenamedCfg)) \
        .train.checkpoint_every_iters == 6


def test_old_and_new_key_names_together(tmp_path, fresh_warnings):
    with pytest.raises(ConfigError, match=r"'train.checkpoint_every' is the old name of "
                                          r"'train.checkpoint_every_iters', and both are given \(3 and 4\)"):
        from_dict(RenamedCfg, {"train": {"checkpoint_every": 3, "checkpoint_every_iters": 4}})
    assert from_dict(RenamedCfg, {"train": {"checkpoint_every": 3, "checkpoint_every_iters": 3}}) \
        .train.checkpoint_every_iters == 3
    with pytest.raises(ConfigError, match="'train.checkpoint_every_iters' is given twice"):
        load_config(RenamedCfg, None, ["train.checkpoint_every=1", "train.checkpoint_every_iters=2"])
    with pytest.raises(ConfigError, match="unknown key 'train.checkpoint_every'"):   # no table: no grace
        from_dict(SectionCfg, {"checkpoint_every": 3}, where="train")


def test_agent_configs_rename_units_into_their_keys(capsys, fresh_warnings):
    """Every *_every key says its unit (the unit of the key that says how long the run is), the device
    is top-level in every agent, and each old name maps to an existing key."""
    import dataclasses

    from agents.drone.config import Config as TD3
    from agents.manipulation.config import Config as Diffusion
    from agents.navigation.config import Config as Nav
    from agents.pomdp.build import Config as POMDP
    from agents.quadruped.config import Config as Quadruped

    for cls in (Quadruped, POMDP, TD3, Nav, Diffusion):
        assert "device" in {f.name for f in dataclasses.fields(cls)}, cls
        top = to_dict(cls())
        flat = {f"{s}.{k}" for s, v in top.items() if isinstance(v, dict) for k in v} | set(top)
        for old, new in cls.RENAMED.items():
            assert new in flat and old not in flat, (cls, old, new)
        for key in flat:
            if key.split(".")[-1].endswith("_every"):
                raise AssertionError(f"{cls.__module__}: {key} does not say its unit")
    assert load_config(Quadruped, None, ["train.checkpoint_every=3"]).train.checkpoint_every_iters == 3
    assert load_config(TD3, None, ["train.eval_every=300"]).train.eval_every_frames == 300
    nav = load_config(Nav, None, ["train.device=cpu", "train.val_every=7"])
    assert (nav.device, nav.train.val_every_steps, nav.eval.device) == ("cpu", 7, "cpu")
    assert load_config(Diffusion, None, ["train.warmup=3"]).train.warmup_steps == 3
