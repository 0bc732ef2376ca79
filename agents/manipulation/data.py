"""Scripted demonstrations for envs/manipulation/panda_env.py as a memory-mapped TensorDict dataset.

    python -m agents.manipulation.data generate --out data/push --episodes 100 --seed 0 task=push
    python -m agents.manipulation.data generate --task push --episodes 100 --out data/push --seed 0  # older form
    python -m agents.manipulation.data info data/push

Layout of a dataset directory::

    config.json            what generated it (task, seed, env and expert settings); a resume
                           with other settings is refused instead of mixing two datasets
    pending/ep_000007/     one memmapped TensorDict per finished episode not merged yet
    data/                  every merged step, episode by episode (TensorDict.memmap):
        point_cloud [N, P, 3] float32, agent_pos [N, 11] float32, action [N, 4] float32,
        episode [N] int64 (episode index), step [N] int64 (0 .. length-1)
      dataset.json         the settings plus one record per episode (seed, attempts, length,
                           success, start row)

Row t of an episode is the observation before action t. Why pending/ + one merge at the end: an
episode appears under its final name only once complete (written to a temp dir, then renamed),
so a crash loses at most the episode in progress and a rerun skips what exists; the merged
``data/`` is contiguous so a trainer indexes windows without gathers across files. The merge
writes a new ``data/`` beside the old and swaps them with renames; ``dataset.json`` lives inside
``data/`` so the steps and their index swap together.

Seeds: episode i, attempt a runs the env and the expert from SeedSequence([seed, i, a]); with
--keep-failed off (the default) a failed attempt is retried (up to --max-attempts) so the
dataset holds successes only. Same arguments -> the same dataset, whether or not resumed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from agents.runtime.atomic_io import write_text_atomic
from agents.runtime.seeds import episode_seed  # noqa: F401  (also imported from here)
from agents.runtime.config import field_spec, from_dict

FORMAT, VERSION = "mambazoo.manip_demos", 1
KEYS = ("point_cloud", "agent_pos", "action", "episode", "step")


class DatasetError(ValueError):
    """A dataset directory is missing, incomplete or malformed (the message names the problem)."""


@dataclass
class GenerateConfig:
    task: str = field_spec("push", choices=("push", "pick_place"), help="manipulation task")
    seed: int = field_spec(0, min=0, help="dataset seed (the --seed option sets it too)")
    noise: float = field_spec(0.0, min=0.0, help="expert action noise (std, in action units)")
    keep_failed: bool = field_spec(False, help="store failed episodes instead of retrying them")
    max_attempts: int = field_spec(5, min=1, help="attempts per episode index when keep_failed is off")
    horizon: int | None = field_spec(None, min=1, help="env step limit (null: the task's default)")
    num_points: int = field_spec(512, min=1, help="points per point cloud")
    sampling: str = field_spec("fps", choices=("fps", "random"), help="point-cloud subsampling")
    image_size: int = field_spec(128, min=8, help="depth camera resolution")

    def env_kwargs(self) -> dict:
        return dict(task=self.task, horizon=self.horizon, num_points=self.num_points,
                    sampling=self.sampling, image_size=self.image_size)


def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1))


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what}: {path} is missing") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{what}: cannot read {path}: {e}") from e


# ------------------------------------------------------------------------------- generation
def _record_episode(env, expert, cfg: GenerateConfig, index: int) -> tuple[TensorDict, dict]:
    from envs.manipulation.expert import rollout

    for attempt in range(cfg.max_attempts if not cfg.keep_failed else 1):
        seed = episode_seed(cfg.seed, index, attempt)
        expert.rng = np.random.default_rng(seed)
        ep = rollout(env, expert, seed, record=True)
        if ep["success"] or cfg.keep_failed:
            break
    else:
        raise RuntimeError(f"episode {index}: the expert failed {cfg.max_attempts} attempts "
                           f"(last seed {seed}); raise --max-attempts or pass --keep-failed")
    T = ep["length"]
    td = TensorDict({
        "point_cloud": torch.from_numpy(ep["point_cloud"]),
        "agent_pos": torch.from_numpy(ep["agent_pos"]),
        "action": torch.from_numpy(ep["action"]),
        "episode": torch.full((T,), index, dtype=torch.int64),
        "step": torch.arange(T, dtype=torch.int64),
    }, batch_size=[T])
    return td, {"episode": index, "seed": seed, "attempts": attempt + 1, "length": T,
                "success": bool(ep["success"])}


def _merged_records(root: Path) -> list[dict]:
    data = root / "data"
    if not data.is_dir():
        return []
    return _read_json(data / "dataset.json", "merged dataset")["episodes"]


def _recover_swap(root: Path) -> None:
    """Finish or undo a merge that crashed between its two renames."""
    old, data, tmp = root / "data.old", root / "data", root / "data.tmp"
    if old.is_dir() and not data.is_dir():
        os.replace(old, data)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _pending(root: Path) -> dict[int, Path]:
    found = {}
    for p in (root / "pending").glob("ep_*"):
        if p.is_dir() and (p / "record.json").is_file():   # tmp dirs start with '.'
            found[int(p.name[3:])] = p
    return found


def _merge(root: Path, cfg: GenerateConfig) -> list[dict]:
    """Concatenate data/ and pending/ (episode order) into a new data/; returns the records."""
    merged = {r["episode"]: r for r in _merged_records(root)}
    pending = {i: p for i, p in _pending(root).items() if i not in merged}  # merged already: stale
    if not pending and (root / "data").is_dir():
        return list(merged.values())
    old = _load_memmap(root / "data") if merged else None
    parts = {i: _load_memmap(p) for i, p in pending.items()}
    records = {**merged, **{i: _read_json(p / "record.json", "episode record") for i, p in pending.items()}}
    order = sorted(records)
    total = sum(records[i]["length"] for i in order)
    template = (old if old is not None else next(iter(parts.values())))[0]
    tmp = root / "data.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    out = TensorDict(batch_size=[total])
    out.memmap_(prefix=tmp)
    for key, value in template.items():
        out.make_memmap(key, shape=(total, *value.shape), dtype=value.dtype)
    old_start = {r["episode"]: r["start"] for r in merged.values()}
    row = 0
    for i in order:
        n = records[i]["length"]
        src = old[old_start[i]: old_start[i] + n] if i in merged else parts[i]
        out[row: row + n] = src
        records[i] = {**records[i], "start": row}
        row += n
    records = [records[i] for i in order]
    _write_json(tmp / "dataset.json", {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(cfg),
                                       "num_steps": total, "episodes": records})
    del old, parts, out
    if (root / "data").is_dir():
        os.replace(root / "data", root / "data.old")
    os.replace(tmp, root / "data")
    shutil.rmtree(root / "data.old", ignore_errors=True)
    for p in pending.values():
        shutil.rmtree(p, ignore_errors=True)
    for i, p in _pending(root).items():   # stale copies of merged episodes (crash after a swap)
        shutil.rmtree(p, ignore_errors=True)
    return records


def _write_pending(root: Path, i: int, td: TensorDict, rec: dict) -> None:
    """Episode i under pending/, complete or not at all (a temp dir, then one rename)."""
    tmp = root / "pending" / f".ep_{i:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    td.memmap(prefix=tmp)
    _write_json(tmp / "record.json", rec)
    os.replace(tmp, root / "pending" / f"ep_{i:06d}")


_WORKER: dict = {}      # a --workers process's own env and expert (_worker_start), reused for its episodes


def _worker_start(cfg: GenerateConfig) -> None:
    from envs.manipulation.expert import make_expert
    from envs.manipulation.panda_env import PandaManipEnv

    torch.set_num_threads(1)
    _WORKER.update(cfg=cfg, env=PandaManipEnv(**cfg.env_kwargs()), expert=make_expert(cfg.task, noise=cfg.noise))


def _worker_episode(job: tuple[str, int]) -> dict:
    root, i = Path(job[0]), job[1]
    td, rec = _record_episode(_WORKER["env"], _WORKER["expert"], _WORKER["cfg"], i)
    _write_pending(root, i, td, rec)
    return rec


def generate(out: str | Path, episodes: int, cfg: GenerateConfig, progress: bool = True,
             workers: int = 1) -> "ManipDemos":
    """Generate (or resume generating) ``episodes`` demonstrations into ``out``; returns the dataset.
    ``workers`` > 1: that many processes record episodes side by side, each writing its own
    pending/ep_i; each episode is seeded on its own and replays the same in a fresh env, so the
    dataset does not depend on the worker count (tests/test_manip_data.py checks it)."""
    import multiprocessing

    from tqdm import tqdm

    from envs.manipulation.expert import make_expert
    from envs.manipulation.panda_env import TASKS, PandaManipEnv

    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {cfg.task!r}")
    if episodes < 1 or cfg.max_attempts < 1:
        raise ValueError(f"episodes and max_attempts must be >= 1, got {episodes} and {cfg.max_attempts}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"--out {root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(cfg)
    if (root / "config.json").is_file():
        saved = _read_json(root / "config.json", "generation settings")
        if saved != settings:
            diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
            raise DatasetError(f"{root} was generated with other settings (saved, requested): {diff}; "
                               "use another --out or the same settings to resume")
    elif any(root.iterdir()):
        raise DatasetError(f"--out {root} is a non-empty directory without config.json: not a demo dataset")
    else:
        _write_json(root / "config.json", settings)
    _recover_swap(root)
    (root / "pending").mkdir(exist_ok=True)
    done = {r["episode"] for r in _merged_records(root)} | set(_pending(root))
    todo = [i for i in range(episodes) if i not in done]
    workers = min(workers, max(1, len(todo)))
    env = expert = pool = None
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_start, initargs=(cfg,))
        records = pool.imap_unordered(_worker_episode, [(str(root), i) for i in todo])
    else:
        env, expert = PandaManipEnv(**cfg.env_kwargs()), make_expert(cfg.task, noise=cfg.noise)

        def record_here():
            for i in todo:
                td, rec = _record_episode(env, expert, cfg, i)
                _write_pending(root, i, td, rec)
                yield rec
        records = record_here()
    bar = tqdm(total=episodes, initial=episodes - len(todo), desc=f"{cfg.task} demos",
               unit="ep", disable=None if progress else True)   # a bar only on a terminal
    wins = attempts = 0
    try:
        for rec in records:
            wins, attempts = wins + rec["success"], attempts + rec["attempts"]
            bar.set_postfix(success=f"{wins}/{attempts}", steps=rec["length"])
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()      # after a failure: the other workers' episodes in progress are dropped
        if env is not None:
            env.close()
    _merge(root, cfg)
    return load_dataset(root)


# ----------------------------------------------------------------------------------- loading
@dataclass
class ManipDemos:
    """A loaded dataset: ``data`` [N] (memory-mapped TensorDict), ``meta`` (dataset.json)."""

    data: TensorDict
    meta: dict
    path: Path

    @property
    def episodes(self) -> list[dict]:
        return self.meta["episodes"]

    def __len__(self) -> int:
        return self.data.batch_size[0]

    def window_indices(self, horizon: int, pad_before: int = 0, pad_after: int = 0) -> torch.Tensor:
        """Row indices [W, horizon] of every training window (Diffusion Policy's SequenceSampler).

        Windows start at steps -pad_before .. length - horizon + pad_after of each episode and
        never cross it: indices outside the episode are clamped to its first/last row, i.e. the
        first observation and the last action repeat. DP3 uses pad_before = n_obs_steps - 1 and
        pad_after = n_action_steps - 1.
        """
        if horizon < 1 or pad_before < 0 or pad_after < 0:
            raise ValueError(f"need horizon >= 1 and pads >= 0, got {horizon}, {pad_before}, {pad_after}")
        offsets = torch.arange(horizon)
        out = []
        for r in self.episodes:
            first, n = r["start"], r["length"]
            starts = torch.arange(-pad_before, max(n - horizon + pad_after, -pad_before) + 1)
            out.append(first + (starts[:, None] + offsets).clamp(0, n - 1))
        return torch.cat(out)

    def stats(self, keys=("agent_pos", "action")) -> dict:
        """Per-dimension min and max of each key (for DP3's [-1, 1] normaliser)."""
        return {k: {"min": self.data[k].amin(0), "max": self.data[k].amax(0)} for k in keys}


def load_dataset(path: str | Path) -> ManipDemos:
    """Open a generated dataset (its directory or its data/ directory) memory-mapped, validated."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"dataset path {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a directory")
    data_dir = root if (root / "dataset.json").is_file() else root / "data"
    if not data_dir.is_dir():
        n = len(_pending(root)) if (root / "pending").is_dir() else 0
        if n or (root / "config.json").is_file():
            raise DatasetError(f"{root} is an unfinished dataset ({n} episodes generated, none merged): "
                               "rerun the same `python -m agents.manipulation.data generate` command to resume")
        raise DatasetError(f"{root} is not a demo dataset: no data/ directory or dataset.json in it")
    meta = _read_json(data_dir / "dataset.json", "dataset index")
    if meta.get("format") != FORMAT or "episodes" not in meta:
        raise DatasetError(f"{data_dir / 'dataset.json'} is not a {FORMAT} index (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise DatasetError(f"{data_dir}: dataset version {meta.get('version')} but this code reads {VERSION}")
    _check_files(data_dir)
    try:
        data = _load_memmap(data_dir)
    except DatasetError:
        raise
    except Exception as e:  # missing meta.json, truncated .memmap files, ...
        raise DatasetError(f"cannot memory-map {data_dir}: {type(e).__name__}: {e}") from e
    _validate(data, meta, data_dir)
    return ManipDemos(data, meta, data_dir)


def _load_memmap(path: Path) -> TensorDict:
    """TensorDict.load_memmap that never unpickles: a dataset someone else made must not run code.
    A pickle file anywhere in the folder (tensordict's other.pickle for non-tensor fields, or any
    *.pkl) is refused by name first; allow_pickle=False backs that up inside tensordict."""
    from agents.runtime.replay_io import ReplayError, refuse_pickles

    try:
        refuse_pickles(path, "dataset folder")
    except ReplayError as err:
        raise DatasetError(str(err)) from None
    return TensorDict.load_memmap(path, allow_pickle=False)


def _check_files(data_dir: Path) -> None:
    """Every tensor file at least as long as TensorDict's meta.json says: load_memmap would
    silently zero-extend a truncated file (and so hand back zeros as data)."""
    layout = _read_json(data_dir / "meta.json", "tensor layout")
    for key, spec in layout.items():
        if not (isinstance(spec, dict) and "shape" in spec and "dtype" in spec):
            continue
        f = data_dir / f"{key}.memmap"
        dtype = getattr(torch, str(spec["dtype"]).removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise DatasetError(f"{data_dir / 'meta.json'}: {key} has unknown dtype {spec['dtype']!r}")
        need = int(np.prod(spec["shape"])) * torch.empty(0, dtype=dtype).element_size()
        size = f.stat().st_size if f.is_file() else None
        if size is None or size < need:
            raise DatasetError(f"cannot memory-map {data_dir}: {f.name} is "
                               f"{'missing' if size is None else f'{size} bytes'}, {key} "
                               f"{spec['shape']} {spec['dtype']} needs {need} bytes")


def _validate(data: TensorDict, meta: dict, where: Path) -> None:
    missing = [k for k in KEYS if k not in data.keys()]
    if missing:
        raise DatasetError(f"{where}: missing keys {missing} (has {sorted(data.keys())})")
    n = data.batch_size[0] if data.batch_dims else -1
    points = meta.get("config", {}).get("num_points")
    expected = {"point_cloud": (n, points, 3), "agent_pos": (n, 11), "action": (n, 4), "episode": (n,), "step": (n,)}
    for key, shape in expected.items():
        got = tuple(data[key].shape)
        if len(got) != len(shape) or any(s is not None and g != s for g, s in zip(got, shape)):
            want = [s if s is not None else "*" for s in shape]
            raise DatasetError(f"{where}: {key} has shape {list(got)}, expected {want}")
    for key, dtype in (("point_cloud", torch.float32), ("agent_pos", torch.float32), ("action", torch.float32),
                       ("episode", torch.int64), ("step", torch.int64)):
        if data[key].dtype != dtype:
            raise DatasetError(f"{where}: {key} has dtype {data[key].dtype}, expected {dtype}")
    episodes = meta["episodes"]
    total = sum(r["length"] for r in episodes)
    if total != n or meta.get("num_steps") != n:
        raise DatasetError(f"{where}: inconsistent lengths: {n} rows stored, dataset.json says "
                           f"num_steps {meta.get('num_steps')} and episode lengths sum to {total}")
    start = 0
    for r in episodes:
        if r["start"] != start:
            raise DatasetError(f"{where}: episode {r['episode']} starts at row {r['start']}, expected {start}")
        ep, step = data["episode"][start: start + r["length"]], data["step"][start: start + r["length"]]
        if not (ep == r["episode"]).all() or not torch.equal(step, torch.arange(r["length"])):
            raise DatasetError(f"{where}: rows {start}..{start + r['length'] - 1} do not hold episode "
                               f"{r['episode']} steps 0..{r['length'] - 1}")
        start += r["length"]


# --------------------------------------------------------------------------------------- CLI
# the older flag forms of the settings (generate --task push --num-points 64 ...): aliases of task=push ...
ALIASES = {"--task": ("task", str), "--noise": ("noise", float), "--max-attempts": ("max_attempts", int),
           "--horizon": ("horizon", int), "--num-points": ("num_points", int), "--sampling": ("sampling", str),
           "--image-size": ("image_size", int)}


def main(argv=None) -> int:
    """``generate --out DIR --episodes N [--seed S] [--config FILE] [key=value ...]``, the
    navigation data module's form (settings as key=value or in a YAML/JSON file); ``info DIR``."""
    from agents.runtime.cli import dataset_parser, generate_settings   # the navigation data's too

    parser, g = dataset_parser("python -m agents.manipulation.data", __doc__.split("\n\n")[0], GenerateConfig,
                               example="task=pick_place num_points=256", seed_default=None,
                               seed_help="dataset seed (default 0, or the seed setting)",
                               epilog_extra="\n\nolder forms, still accepted: --task T, --noise X, --keep-failed, "
                                            "--max-attempts N, --horizon N, --num-points N, --sampling S, "
                                            "--image-size N (= task=T, noise=X, ...)")
    for flag, (key, tp) in ALIASES.items():
        g.add_argument(flag, dest=f"alias_{key}", type=tp, default=None, help=argparse.SUPPRESS)
    g.add_argument("--keep-failed", dest="alias_keep_failed", action="store_const", const=True, default=None,
                   help=argparse.SUPPRESS)
    g.add_argument("--workers", type=int, default=1, metavar="N", help="processes recording episodes side by side (the "
                   "data do not depend on it)")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            data = generate_settings(parser, args)
            data.update({k[len("alias_"):]: v for k, v in vars(args).items() if k.startswith("alias_") and v is not None})
            if args.seed is not None:
                data["seed"] = args.seed
            cfg = from_dict(GenerateConfig, data)
            demos = generate(args.out, args.episodes, cfg, progress=not args.quiet, workers=args.workers)
        else:
            demos = load_dataset(args.path)
    except (DatasetError, ValueError, RuntimeError) as e:    # ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    eps = demos.episodes
    size = sum(f.stat().st_size for f in demos.path.iterdir())
    print(f"{demos.path}: task {demos.meta['config']['task']}, {len(eps)} episodes, {len(demos)} steps "
          f"(mean length {len(demos) / max(len(eps), 1):.1f}), success {np.mean([r['success'] for r in eps]):.2f} "
          f"(expert: {len(eps)}/{sum(r['attempts'] for r in eps)} attempts), "
          f"{size / 2**20:.1f} MiB ({size / max(len(eps), 1) / 2**10:.0f} KiB per episode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
