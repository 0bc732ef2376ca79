"""Expert demonstrations for image-goal navigation (envs/navigation/nav_env.py), as a memory-mapped TensorDict.

    python -m agents.navigation.data generate --out data/nav --episodes 200 --seed 0 [depth=2 image_size=64 ...]
    python -m agents.navigation.data info data/nav

Folder layout (each ``.memmap`` file is the raw C-order bytes of one column, rows back to back):

    manifest.json            format, generation settings (NavDataConfig), seed, env kwargs, counts,
                             dtype and per-row shape of every column
    steps/<key>.memmap       one row per observation, episodes back to back (N rows)
    episodes/<key>.memmap    one row per episode (E rows)
    .lock                    flock'ed by a running generate (a second writer is refused)

steps:     rgb uint8 [3, H, W], action float32 [2] (env action, in [-1, 1]; zero on the last row),
           waypoints float32 [K, 2] (robot frame at this step, metres, x forward / y left: the poses
           at steps t + k * spacing, k = 1..K, clamped to the episode's last pose), waypoint_yaw
           float32 [K] (their headings relative to now), temporal_distance int64 (steps left to the
           end of the episode: ViNT's distance label), pose float32 [3] (x, y, yaw: for plots and
           checks, not an input), episode int64, step int64
episodes:  goal_rgb uint8 [3, H, W], goal_pose float32 [3], cue int64, success bool, collision bool,
           start int64 (first row in steps), length int64, seed int64 (env.reset seed),
           path_length float32, shortest_path_length float32 (metres; SPL = success * shortest / max(path, shortest))

Why per-episode goal images (joined through ``steps["episode"]``): the goal is constant within an
episode, so storing it per step would double the dataset for nothing.
Why append-only raw columns + a manifest rather than one ``TensorDict.memmap`` call: episodes have
unknown lengths and generation must be resumable. Each episode is appended to every column, the
files are fsynced, then the manifest (the commit point) is replaced atomically; rows past the
manifest's counts are an interrupted episode, dropped when generation resumes and ignored by
``load_dataset``. Episode i always uses env seed ``episode_seed(seed, i)`` (and cue i mod 2**depth
when ``balanced_cues``; with ``paired_cues`` the map of ``episode_seed(seed, i // 2**depth)``), so a
resumed run writes exactly what one uninterrupted run would.
Why ``paired_cues``: with one map per episode the map's look (wall and floor colours, corridor
shape) predicts its cue in the training set, so a policy can lower its loss at the junctions by
memorising maps, without memory of the cue, and that does not carry over to new maps
(benchmarks/results/bc_navigation_cue_diagnosis.md).
``load_dataset`` maps the columns with ``MemoryMappedTensor.from_filename``: nothing is read until
indexed, and the mapping is writable - clone a batch before changing it in place.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):            # run as a script: python agents/navigation/data.py ...
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tensordict import MemoryMappedTensor, TensorDict  # noqa: E402

from agents.runtime.atomic_io import atomic_open  # noqa: E402
from agents.runtime.seeds import episode_seed  # noqa: E402,F401  (also imported from here)
from agents.runtime.config import ConfigError, field_spec, from_dict  # noqa: E402

FORMAT = "mambazoo-nav-demos/1"
_DTYPES = {"uint8": (np.uint8, torch.uint8), "float32": (np.float32, torch.float32),
           "int64": (np.int64, torch.int64), "bool": (np.bool_, torch.bool)}


class NavDatasetError(ValueError):
    """A dataset folder is missing, malformed or inconsistent; the message names the path and the problem."""


@dataclass
class NavDataConfig:
    depth: int = field_spec(2, min=1, max=3, help="junction levels per episode (2**depth cues and leaf rooms)")
    image_size: int = field_spec(64, min=16, max=128, help="camera image side (px); ViNT-like: 64-96")
    fov_deg: float = field_spec(90.0, min=30.0, max=150.0, help="horizontal field of view")
    max_episode_steps: int = field_spec(500, min=10, help="episode time limit (control steps of 0.25 s)")
    num_waypoints: int = field_spec(5, min=1, max=16, help="future waypoints per label (ViNT: 5)")
    waypoint_spacing: int = field_spec(1, min=1, max=20, help="steps between label waypoints (~0.2 m at cruise)")
    balanced_cues: bool = field_spec(True, help="episode i gets cue i mod 2**depth (else drawn by the env)")
    paired_cues: bool = field_spec(False, help="drive every map once per cue: episodes i of one block of 2**depth "
                                   "share the map episode_seed(seed, i // 2**depth) and get cue i mod 2**depth, so "
                                   "a map's look (wall colours, shape) cannot stand in for the cue; implies "
                                   "balanced cues (off: one map per episode, whose look then predicts its turns)")
    cue_style: str = field_spec("room", choices=["room", "panel"],
                                help="cue on every start-room wall (room) or on one wall cell (panel: harder)")
    action_noise: float = field_spec(0.0, min=0.0, max=1.0,
                                     help="DART: std of Gaussian noise on the executed expert action (action "
                                          "units); waypoint labels are then the expert's own drive from each "
                                          "visited pose")
    collision_backend: str = field_spec("pybullet", choices=["pybullet", "grid"],
                                        help="wall contacts from PyBullet or the numpy grid test (the same "
                                             "answers, cross-checked in tests; grid needs no pybullet)")

    def episode_env(self, seed: int, i: int) -> tuple[int, int | None]:
        """(env seed, forced cue or None) of episode ``i`` of a dataset of seed ``seed``."""
        cues = 2 ** self.depth
        if self.paired_cues:
            return episode_seed(seed, i // cues), i % cues
        return episode_seed(seed, i), (i % cues if self.balanced_cues else None)

    def env_kwargs(self) -> dict:
        return {"depth": self.depth, "image_size": self.image_size, "fov_deg": self.fov_deg,
                "max_episode_steps": self.max_episode_steps, "cue_style": self.cue_style,
                "collision_backend": self.collision_backend}

    def columns(self):
        """(steps, episodes): {key: (dtype name, row shape)}."""
        img, k = [3, self.image_size, self.image_size], self.num_waypoints
        steps = {"rgb": ("uint8", img), "action": ("float32", [2]), "waypoints": ("float32", [k, 2]),
                 "waypoint_yaw": ("float32", [k]), "temporal_distance": ("int64", []), "pose": ("float32", [3]),
                 "episode": ("int64", []), "step": ("int64", [])}
        episodes = {"goal_rgb": ("uint8", img), "goal_pose": ("float32", [3]), "cue": ("int64", []),
                    "success": ("bool", []), "collision": ("bool", []), "start": ("int64", []),
                    "length": ("int64", []), "seed": ("int64", []), "path_length": ("float32", []),
                    "shortest_path_length": ("float32", [])}
        return steps, episodes


# ----------------------------------------------------------------------------------- reading
@dataclass
class NavDataset:
    path: Path
    manifest: dict
    config: NavDataConfig
    steps: TensorDict        # [N] memory-mapped
    episodes: TensorDict     # [E] memory-mapped

    def __len__(self) -> int:
        return self.steps.batch_size[0]

    @property
    def num_episodes(self) -> int:
        return self.episodes.batch_size[0]

    def goal_rgb(self, episode_ids: torch.Tensor) -> torch.Tensor:
        """Goal images [..., 3, H, W] for a tensor of episode ids (e.g. ``batch["episode"]``)."""
        goals = self.episodes["goal_rgb"]
        return goals[episode_ids.reshape(-1)].reshape(*episode_ids.shape, *goals.shape[1:])

    def make_env(self, **overrides):
        """A NavigationEnv with the settings the demonstrations were generated with."""
        return make_env(self.manifest["env"], **overrides)

    def facts(self) -> dict:
        """What a trained policy needs of its dataset to act and be evaluated without it: the data
        settings (image size, waypoints, depth) and the env settings. Stored in every checkpoint and
        export (``dataset`` key), so a shipped policy evaluates on a machine that has no dataset."""
        return {"config": dataclasses.asdict(self.config), "env": dict(self.manifest["env"])}


def make_env(env_settings: dict, **overrides):
    """A NavigationEnv from a dataset's env settings (``manifest["env"]`` or ``facts()["env"]``)."""
    from envs.navigation.nav_env import NavigationEnv
    return NavigationEnv(**{**env_settings, **overrides})


def _fail(path, problem: str):
    raise NavDatasetError(f"navigation dataset {path}: {problem}")


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        raise NavDatasetError(f"no navigation dataset at {path}: the folder does not exist "
                              f"(create one with: python -m agents.navigation.data generate --out {path} --episodes N)")
    if not path.is_dir():
        raise NavDatasetError(f"no navigation dataset at {path}: it is a file, expected a dataset folder")
    mpath = path / "manifest.json"
    if not mpath.is_file():
        _fail(path, "manifest.json is missing, so this is not a dataset folder (or generation never "
                    "finished an episode); generate with: python -m agents.navigation.data generate --out DIR --episodes N")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as err:
        _fail(path, f"manifest.json cannot be read as JSON: {err}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        _fail(path, f"manifest.json has format {found!r}, expected {FORMAT!r}")
    for key in ("config", "seed", "env", "num_episodes", "num_steps", "columns"):
        if key not in manifest:
            _fail(path, f"manifest.json lacks the entry {key!r}")
    return manifest


def _map_table(path: Path, table: str, spec: dict, stored: dict, rows: int) -> TensorDict:
    """Check one table's columns against the expected spec and map them: TensorDict [rows]."""
    out = {}
    for key, (dtype, shape) in spec.items():
        if key not in stored:
            _fail(path, f"{table} column {key!r} is missing from manifest.json")
        if list(stored[key]) != [dtype, shape]:
            _fail(path, f"{table} column {key!r} is {stored[key][0]} {stored[key][1]} in manifest.json, "
                        f"expected {dtype} {shape} for these settings")
        f = path / table / f"{key}.memmap"
        if not f.is_file():
            _fail(path, f"{table}/{key}.memmap is missing")
        need = rows * int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype][0]).itemsize
        if f.stat().st_size < need:      # longer is an interrupted episode past the commit point
            _fail(path, f"{table}/{key}.memmap holds {f.stat().st_size} bytes, but {rows} rows of {dtype} "
                        f"{shape} need {need} (truncated or inconsistent lengths)")
        out[key] = MemoryMappedTensor.from_filename(f, _DTYPES[dtype][1], torch.Size([rows, *shape]))
    extra = set(stored) - set(spec)
    if extra:
        _fail(path, f"{table} has unexpected columns {sorted(extra)} for format {FORMAT}")
    return TensorDict(out, batch_size=[rows])


def load_dataset(path) -> NavDataset:
    """Validate a dataset folder and memory-map it. Raises NavDatasetError naming the problem: a bad
    path, a missing or foreign manifest, missing columns or files, wrong shapes or dtypes, files
    shorter than the counts, or episode tables that disagree with the step rows."""
    path = Path(path)
    manifest = _read_manifest(path)
    try:
        config = from_dict(NavDataConfig, manifest["config"], where="config")
    except ConfigError as err:
        _fail(path, f"manifest.json has invalid settings: {err}")
    n, e = int(manifest["num_steps"]), int(manifest["num_episodes"])
    if e == 0:
        _fail(path, "it holds no episodes yet (resume generation to add some)")
    spec_steps, spec_eps = config.columns()
    cols = manifest["columns"]
    for table in ("steps", "episodes"):
        if not isinstance(cols.get(table), dict):
            _fail(path, f"manifest.json lacks the column list of table {table!r}")
    steps = _map_table(path, "steps", spec_steps, cols["steps"], n)
    episodes = _map_table(path, "episodes", spec_eps, cols["episodes"], e)
    # consistency of the small index columns (8 bytes per row: cheap even for millions of rows)
    start, length = episodes["start"].clone(), episodes["length"].clone()
    if (length < 1).any() or int(length.sum()) != n:
        _fail(path, f"episode lengths sum to {int(length.sum())}, but there are {n} step rows")
    if not torch.equal(start, torch.cumsum(length, 0) - length):
        _fail(path, "episode starts are not the running sum of episode lengths")
    ep_ids = torch.repeat_interleave(torch.arange(e), length)
    if not torch.equal(steps["episode"].clone(), ep_ids):
        bad = int((steps["episode"].clone() != ep_ids).nonzero()[0, 0])
        _fail(path, f"step row {bad} says episode {int(steps['episode'][bad])}, but the episode table puts "
                    f"it in episode {int(ep_ids[bad])}")
    step_idx = torch.arange(n) - start[ep_ids]
    if not torch.equal(steps["step"].clone(), step_idx):
        _fail(path, "the step column does not count 0.. within each episode")
    if not torch.equal(steps["temporal_distance"].clone(), length[ep_ids] - 1 - step_idx):
        _fail(path, "temporal_distance is not the number of steps left in each episode")
    return NavDataset(path, manifest, config, steps, episodes)


def replay_buffer(dataset: NavDataset, slice_len: int, batch_size: int, **sampler_kwargs):
    """TorchRL replay buffer over the memory-mapped steps that samples ``batch_size // slice_len``
    slices of ``slice_len`` consecutive steps, never across episodes (SliceSampler on "episode").
    Add the goal images with ``dataset.goal_rgb(batch["episode"])``. Sample only: the storage is the
    memory-mapped dataset itself, so ``extend`` would write into it. The dataset never changes, so
    the episode boundaries are computed once (cache_values) instead of at every sample."""
    from torchrl.data import ReplayBuffer, SliceSampler, TensorStorage

    sampler_kwargs.setdefault("cache_values", True)
    sampler = SliceSampler(slice_len=slice_len, traj_key="episode", **sampler_kwargs)
    return ReplayBuffer(storage=TensorStorage(dataset.steps), sampler=sampler, batch_size=batch_size)


# ----------------------------------------------------------------------------------- writing
def _atomic_json(path: Path, data: dict) -> None:
    with atomic_open(path, "w") as f:        # fsynced, renamed, folder fsynced; readable by all
        json.dump(data, f, indent=1)


def episode_rows(ep: dict, config: NavDataConfig, index: int, start: int, seed: int):
    """One expert rollout (envs.navigation.expert.rollout) -> (step columns, episode row) as numpy arrays."""
    from envs.navigation.expert import waypoint_labels

    wp, wyaw, dist = waypoint_labels(ep["pose"], config.num_waypoints, config.waypoint_spacing)
    if "labels" in ep:                # DART: the expert's intended waypoints (envs.navigation.expert.expert_labels)
        wp, wyaw = ep["labels"]
    n = len(ep["action"])
    steps = {"rgb": ep["rgb"], "action": ep["action"], "waypoints": wp, "waypoint_yaw": wyaw,
             "temporal_distance": dist, "pose": ep["pose"], "episode": np.full(n, index), "step": np.arange(n)}
    row = {"goal_rgb": ep["goal_rgb"], "goal_pose": ep["goal_pose"], "cue": ep["cue"], "success": ep["success"],
           "collision": ep["collision"], "start": start, "length": n, "seed": seed,
           "path_length": ep["path_length"], "shortest_path_length": ep["shortest_path_length"]}
    return steps, row


_WORKER_ENV: dict = {}


def _rollout_job(job) -> dict:
    """One expert episode (in a worker process or inline); the env is built once per process."""
    from envs.navigation.expert import NavExpert, expert_labels, rollout
    from envs.navigation.nav_env import NavigationEnv

    env_kwargs, config, seed, i = job
    key = repr(sorted(env_kwargs.items()))
    if key not in _WORKER_ENV:
        env = NavigationEnv(**env_kwargs)
        _WORKER_ENV.clear()
        _WORKER_ENV[key] = (env, NavExpert(env))
    env, expert = _WORKER_ENV[key]
    noise = config.action_noise
    env_seed, cue = config.episode_env(seed, i)
    ep = rollout(env, expert, seed=env_seed, options=None if cue is None else {"cue": cue}, noise=noise,
                 rng=np.random.default_rng([seed, i, 7]) if noise > 0 else None)
    if noise > 0:     # the driven trajectory is not the expert's intent: relabel from each pose
        ep["labels"] = expert_labels(expert, ep["pose"], config.num_waypoints, config.waypoint_spacing)
    return ep


def generate(out, episodes: int, seed: int = 0, config: NavDataConfig | None = None,
             progress: bool = True, workers: int = 1) -> Path:
    """Write (or continue) a dataset of ``episodes`` expert episodes in ``out``. Re-running on the
    same folder continues after the last committed episode; the settings and seed must match the
    folder's, else NavDatasetError says which differ."""
    from tqdm import tqdm

    out, config, pool = Path(out), config or NavDataConfig(), None
    spec = dict(zip(("steps", "episodes"), config.columns()))
    fresh = {"format": FORMAT, "config": dataclasses.asdict(config), "seed": int(seed), "env": config.env_kwargs(),
             "num_episodes": 0, "num_steps": 0,
             "columns": {t: {k: [d, s] for k, (d, s) in cols.items()} for t, cols in spec.items()}}
    out.mkdir(parents=True, exist_ok=True)
    lock, files = open(out / ".lock", "w"), {}
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise NavDatasetError(f"navigation dataset {out}: another generate process is writing it") from None
    try:
        if (out / "manifest.json").exists():
            manifest = _read_manifest(out)
            # a manifest written before a setting existed holds that setting's default
            stored = {**manifest, "config": dataclasses.asdict(from_dict(NavDataConfig, manifest["config"]))}
            for key in ("config", "seed", "columns"):
                if stored[key] != fresh[key]:
                    _fail(out, f"it was generated with {key} {stored[key]}, not {fresh[key]}; "
                               "resume with the same settings or write to another folder")
        else:
            manifest = fresh
            for table in spec:
                (out / table).mkdir(exist_ok=True)
            _atomic_json(out / "manifest.json", manifest)
        counts = {"steps": manifest["num_steps"], "episodes": manifest["num_episodes"]}
        for table, cols in spec.items():     # drop rows of an interrupted episode, then append
            for key, (dtype, shape) in cols.items():
                f = out / table / f"{key}.memmap"
                need = counts[table] * int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype][0]).itemsize
                size = f.stat().st_size if f.exists() else 0
                if size < need:
                    _fail(out, f"{table}/{key}.memmap holds {size} bytes, fewer than the {need} its "
                               f"{counts[table]} committed rows need; the dataset is damaged")
                fh = open(f, "r+b" if f.exists() else "wb")
                fh.truncate(need)
                fh.seek(need)
                files[table, key] = fh
        done = manifest["num_episodes"]
        if done >= episodes:
            if progress:
                print(f"{out}: already holds {done} episodes (asked for {episodes}); nothing to do")
            return out
        wins = 0
        bar = tqdm(total=episodes, initial=done, desc="episodes", unit="ep",
                   disable=None if progress else True)      # a bar only on a terminal
        jobs = [(manifest["env"], config, seed, i) for i in range(done, episodes)]
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        # rollouts may run in worker processes (each episode is seeded on its own, so the data do not
        # depend on the worker count); this process writes them in episode order, one commit each
        results = pool.imap(_rollout_job, jobs, chunksize=1) if pool else map(_rollout_job, jobs)
        for i, ep in zip(range(done, episodes), results):
            s = config.episode_env(seed, i)[0]
            steps, row = episode_rows(ep, config, i, manifest["num_steps"], s)
            for table, data in (("steps", steps), ("episodes", {k: np.asarray(v)[None] for k, v in row.items()})):
                for key, (dtype, shape) in spec[table].items():
                    arr = np.ascontiguousarray(data[key], dtype=_DTYPES[dtype][0])
                    if arr.shape[1:] != tuple(shape):
                        raise AssertionError(f"{table}/{key}: row shape {arr.shape[1:]} != {shape}")
                    files[table, key].write(arr.tobytes())
            for fh in files.values():         # data first, then the manifest: the commit point
                fh.flush()
                os.fsync(fh.fileno())
            manifest["num_episodes"], manifest["num_steps"] = i + 1, manifest["num_steps"] + len(ep["action"])
            _atomic_json(out / "manifest.json", manifest)
            wins += ep["success"]
            bar.update(1)
            bar.set_postfix(steps=manifest["num_steps"], success=f"{wins / (i + 1 - done):.0%}")
        bar.close()
        return out
    finally:
        if pool is not None:
            pool.terminate()
        for fh in files.values():
            fh.close()
        lock.close()


# --------------------------------------------------------------------------------------- CLI
def summary(ds: NavDataset) -> str:
    e, n = ds.num_episodes, len(ds)
    eps = ds.episodes
    ok = eps["success"].clone()
    ratio = (eps["path_length"] / eps["shortest_path_length"]).mean()
    size = sum(f.stat().st_size for f in ds.path.rglob("*.memmap"))
    cues = torch.bincount(eps["cue"].clone(), minlength=2 ** ds.config.depth).tolist()
    return (f"{ds.path}: {e} episodes, {n} steps (mean {n / e:.1f} per episode), expert success "
            f"{ok.float().mean():.1%}, expert path {ratio:.3f} x the cell geodesic, cues {cues}, "
            f"{size / 2**20:.1f} MiB ({size / e / 2**20:.2f} MiB per episode), images {list(ds.steps['rgb'].shape[1:])}")


def main(argv=None) -> int:
    from agents.runtime.cli import dataset_parser, generate_settings   # the manipulation data's too

    parser, gen = dataset_parser("python -m agents.navigation.data", __doc__.split("\n\n")[0], NavDataConfig,
                                 example="depth=2 image_size=64", seed_default=0,
                                 seed_help="dataset seed; episode i uses episode_seed(seed, i)")
    gen.add_argument("--workers", type=int, default=1, help="processes running expert rollouts (the data "
                     "do not depend on it)")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            config = from_dict(NavDataConfig, generate_settings(parser, args))
            generate(args.out, args.episodes, args.seed, config, progress=not args.quiet, workers=max(1, args.workers))
            print(summary(load_dataset(args.out)))
        else:
            print(summary(load_dataset(args.path)))
    except (ConfigError, NavDatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
