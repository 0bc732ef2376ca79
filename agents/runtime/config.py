"""Typed, validated configs shared by every agent: nested dataclasses, YAML/JSON files, key=value overrides.

CleanRL-style: every hyper-parameter of an agent lives in one tree of dataclasses whose leaves are
declared with ``field_spec`` (default, bounds, choices, help). Why not argparse alone or a config
framework: leaves need bounds and choices checked before anything runs, errors must name the full
dotted key (``ppo.lr``) and what is allowed, and the resolved config must round-trip through YAML
into the run directory. A couple of hundred lines over dataclasses + PyYAML do that, no new dependency.

Flow: ``read_config_file`` -> optional ``convert`` hook -> ``apply_overrides`` -> ``from_dict``.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import re
import sys
import typing
from pathlib import Path

import yaml

from agents.runtime.atomic_io import atomic_open

_NONE = type(None)


class ConfigError(ValueError):
    """Raised for any invalid config; the message names the full dotted key and what is allowed.
    Agent scripts catch it and exit 2."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars. PyYAML follows YAML 1.1, where ``3e-4`` is a *string* (a float
    needs a dot) and ``yes``/``no``/``on``/``off`` are bools; both silently break hyper-parameters."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5, .5, 1., 1.5e-3
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                      # 3e-4
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader


def field_spec(default, *, choices=None, min=None, max=None, help: str = "", length=None,
               nullable: bool = False) -> dataclasses.Field:
    """A dataclass leaf with validation metadata. min/max are inclusive and, like choices, apply to each
    element of a list; length is the allowed list length (int or tuple of ints); nullable allows None.
    Mutable defaults (lists) become a default_factory so instances never share them."""
    meta = {"choices": choices, "min": min, "max": max, "help": help, "length": length, "nullable": nullable}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp, plural: bool = False) -> str:
    """int -> 'an int', list[list[float]] -> 'a list of lists of floats' (for messages and --help)."""
    args = typing.get_args(tp)
    if _NONE in args:
        return _type_name(next(a for a in args if a is not _NONE), plural) + (" or nulls" if plural else " or null")
    if typing.get_origin(tp) is list:
        return ("lists of " if plural else "a list of ") + _type_name(args[0] if args else typing.Any, True)
    if typing.get_origin(tp) is typing.Literal:
        return f"one of {list(args)}"
    names = {int: ("an int", "ints"), float: ("a float", "floats"), bool: ("a bool (true/false)", "bools"),
             str: ("a string", "strings")}
    return names.get(tp, (getattr(tp, "__name__", str(tp)),) * 2)[plural]


def _bounds(meta) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    return " and ".join(s for s in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if s)


def _check_leaf(key: str, value, tp, meta: dict):
    """Validate one value against annotation tp and the field_spec metadata; returns it normalised
    (int -> float for float keys). Lists recurse per element with keys like 'env.clip_num[2]'."""
    where = f"config key '{key}'"
    args = typing.get_args(tp)
    if _NONE in args or meta.get("nullable"):                       # X | None, or field_spec(nullable=True)
        if value is None:
            return None
        tp = next(a for a in args if a is not _NONE) if _NONE in args else tp
        args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):  # type check: True is not 1
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        length = meta.get("length")
        allowed = (length,) if isinstance(length, int) else tuple(length or ())
        if allowed and len(value) not in allowed:
            raise ConfigError(f"{where}: expected a list of length {' or '.join(map(str, allowed))}, "
                              f"got {len(value)} items: {value!r}")
        inner_meta = {**meta, "length": None, "nullable": False}  # bounds/choices go down to the elements
        return [_check_leaf(f"{key}[{i}]", v, args[0] if args else typing.Any, inner_meta) for i, v in enumerate(value)]
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(tp, lambda v: True)  # other annotations: not checked
    if not ok(value):
        bound = _bounds(meta)
        raise ConfigError(f"{where}: expected {_type_name(tp)}{' ' + bound if bound else ''}, got {value!r}")
    if tp is int and not -2**63 <= value < 2**63:
        raise ConfigError(f"{where}: {value} does not fit in a 64-bit int")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite float, got {value}")
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}: expected {_type_name(tp)} {_bounds(meta)}, got {value!r}")
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {list(meta['choices'])}")
    return value


def from_dict(cls, data: dict, *, where: str = ""):
    """Nested plain dict -> validated dataclass instance; missing keys take their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{where or '<top level>'}': expected a mapping of keys "
                          f"(a section of {cls.__name__}), got {data!r}")
    data = rename_keys(cls, data)           # a checkpoint's config written under old names
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key '{prefix}{key}' (allowed: {', '.join(sorted(fields))}){hint}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"config key '{prefix}{name}' is required")
            continue
        tp = hints[name]
        kwargs[name] = (from_dict(tp, data[name], where=prefix + name) if dataclasses.is_dataclass(tp)
                        else _check_leaf(prefix + name, data[name], tp, dict(f.metadata)))
    return cls(**kwargs)


def to_dict(instance) -> dict:
    """Instance -> plain nested dict of YAML-safe scalars and lists."""
    return dataclasses.asdict(instance)


# ------------------------------------------------------------------ what agents' configs share
Device = typing.Literal["auto", "cpu", "cuda"]
Logger = typing.Literal["csv", "tensorboard", "wandb", "none"]


@dataclasses.dataclass
class RunConfig:
    """The keys every agent's top-level Config starts with. An agent's Config subclasses it, sets
    its own ``name`` default (and ``device`` where it differs) and adds its sections."""
    name: str = field_spec("run", help="run name (run directory prefix)")
    seed: int = field_spec(0, min=0)
    device: Device = field_spec("auto", help="auto: CUDA when present")
    run_root: str = field_spec("runs", help="runs go to <run_root>/<agent>/<name>-<time>")
    logger: Logger = field_spec("csv")


def with_defaults(cls, name: str, **defaults):
    """A dataclass subclass of ``cls`` named ``name``: the same keys, types, bounds, choices and
    help, other defaults (e.g. the POMDP agent's PPO section: PPOConfig with the suite's defaults)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise TypeError(f"with_defaults: {cls.__name__} has no key(s) {unknown}")
    hints = typing.get_type_hints(cls)
    spec_keys = ("choices", "min", "max", "help", "length", "nullable")
    new = [(key, hints[key], field_spec(value, **{k: fields[key].metadata.get(k) for k in spec_keys
                                                   if k in fields[key].metadata}))
           for key, value in defaults.items()]
    out = dataclasses.make_dataclass(name, new, bases=(cls,))
    out.__module__ = cls.__module__
    return out


def parse_override(text: str) -> tuple[str, object]:
    """'ppo.lr=3e-4' -> ('ppo.lr', 0.0003); the value is YAML, so 'model.hidden=[64,64]' gives a list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected the form key=value, e.g. ppo.lr=3e-4")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: cannot parse the value as YAML: {err}") from None
    return key.strip(), value


# ------------------------------------------------------------------ renamed keys
# A Config class may carry ``RENAMED = {"old.dotted.key": "new.dotted.key", ...}`` (a plain class
# attribute, not a field): for one release the old name is still read, from a file, an override or a
# checkpoint's saved config, and moved to the new key with one warning per old name and process.
_warned: set = set()


def _warn_renamed(old: str, new: str) -> None:
    if (old, new) not in _warned:
        _warned.add((old, new))
        print(f"warning: config key '{old}' is renamed '{new}' (the old name still works in this release, "
              "not in the next)", file=sys.stderr, flush=True)


def _lookup(data: dict, dotted: str):
    """(parent mapping, last key) of a dotted key when every section on the way is a mapping, else None."""
    *path, last = dotted.split(".")
    node = data
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return (node, last) if isinstance(node, dict) else None


def _section(data: dict, dotted: str, not_a_section) -> tuple[dict, str]:
    """(mapping, last key) where ``dotted`` goes in ``data``, creating missing sections; a value on the
    way that is not a mapping is a ConfigError with ``not_a_section(section key, value)``."""
    *path, last = dotted.split(".")
    node = data
    for i, part in enumerate(path):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(not_a_section(".".join(path[:i + 1]), node))
    return node, last


def rename_keys(cls, data: dict) -> dict:
    """``data`` with each old key of ``cls.RENAMED`` moved to its new name (warning once per old name);
    both names given with different values is a ConfigError. ``data`` itself is not changed."""
    table = getattr(cls, "RENAMED", None) or {}
    hits = [(old, new) for old, new in table.items()
            if (spot := _lookup(data, old)) is not None and spot[1] in spot[0]]
    if not hits:
        return data
    out = copy.deepcopy(data)
    for old, new in hits:
        parent, last = _lookup(out, old)
        value = parent.pop(last)
        _warn_renamed(old, new)
        node, leaf = _section(out, new, lambda key, got: f"config key '{key}': expected a mapping of keys, got {got!r}")
        if leaf in node and node[leaf] != value:
            raise ConfigError(f"config key '{old}' is the old name of '{new}', and both are given "
                              f"({value!r} and {node[leaf]!r}): keep '{new}'")
        node[leaf] = value
    return out


def rename_override(cls, text: str) -> str:
    """'old.key=value' -> 'new.key=value' (with the warning) for an old name of ``cls.RENAMED``."""
    key, sep, raw = text.partition("=")
    new = (getattr(cls, "RENAMED", None) or {}).get(key.strip()) if sep else None
    if new is None:
        return text
    _warn_renamed(key.strip(), new)
    return f"{new}={raw}"


def apply_overrides(data: dict, overrides, cls=None) -> dict:
    """New dict with each 'a.b.c=value' set (sections created); validation is left to from_dict.
    With the Config class ``cls``, old key names (``cls.RENAMED``) in ``data`` and in the overrides are
    moved to their new names first, so an override under either name replaces the file's value."""
    out = copy.deepcopy(rename_keys(cls, data) if cls is not None else data)
    seen = {}
    for given in overrides:
        text = rename_override(cls, given) if cls is not None else given
        key, value = parse_override(text)
        if key in seen:
            raise ConfigError(f"config key '{key}' is given twice ({seen[key]!r} and {given!r}): keep one")
        seen[key] = given
        node, last = _section(out, key, lambda section, _: f"override {text!r}: config key '{section}' is not a section")
        node[last] = value
    return out


def read_config_file(path) -> dict:
    """.yaml/.yml or .json file -> dict (an empty file gives {})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {path}: unknown format '{path.suffix}' (allowed: .yaml, .yml, .json)")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else _yaml_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse config file {path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls, path=None, overrides=(), *, convert=None):
    """File (optional) -> convert hook (foreign schemas, e.g. LocoTransformer JSON) -> overrides -> validation."""
    data = read_config_file(path) if path else {}
    if path and not data:
        raise ConfigError(f"config file {path} holds no keys (empty): refusing to run on all defaults; "
                          "leave out --config for that")
    if convert is not None:
        data = convert(data)
    return from_dict(cls, apply_overrides(data, overrides, cls))


def save_config(instance, path) -> None:
    """YAML dump, atomic (agents.runtime.atomic_io) so a crash never leaves half a config."""
    with atomic_open(path, "w") as f:
        yaml.safe_dump(to_dict(instance), f, sort_keys=False)


def describe(cls, prefix: str = "") -> str:
    """One line per dotted key: type, default, choices/bounds/length, help (argparse epilog)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp, m = prefix + f.name, hints[f.name], f.metadata
        if dataclasses.is_dataclass(tp):
            lines.append(describe(tp, key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = [s for s in (_bounds(m),
                             f"one of {list(m['choices'])}" if m.get("choices") is not None else "",
                             f"length {m['length']}" if m.get("length") is not None else "",
                             "or null" if m.get("nullable") else "") if s]
        text = f"  {key}: {_type_name(tp)} = {json.dumps(default)}"
        text += f" ({', '.join(extra)})" if extra else ""
        lines.append(text + (f"  -- {m['help']}" if m.get("help") else ""))
    return "\n".join(lines)
