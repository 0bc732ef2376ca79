"""Navigation env speed: the grid ray caster against PyBullet's TinyRenderer on the same scene, and
whole-env / expert-rollout throughput.

    python benchmarks/nav_speed.py            # writes benchmarks/results/nav_speed.md
    python benchmarks/nav_speed.py --quick    # fewer frames, prints only

Times are CPU seconds of this process (time.process_time), so other jobs sharing the machine
inflate them less than wall time; one core, numpy single-threaded. TinyRenderer draws the same
walls plus a floor and a ceiling box (flat colours, its default lighting); the ray caster adds
seams, floor grid lines and fog on top.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def _poses(layout, n, rng):
    free = np.argwhere(layout.free)
    cells = free[rng.integers(len(free), size=n)]
    return [(c[1] + rng.uniform(0.3, 0.7), c[0] + rng.uniform(0.3, 0.7), rng.uniform(-np.pi, np.pi)) for c in cells]


def render_speed(size: int, frames: int) -> tuple[float, float]:
    """(ray caster, TinyRenderer) frames per CPU second at size x size."""
    import pybullet as p
    from pybullet_utils import bullet_client

    from envs.navigation.maps import make_layout
    from envs.navigation.render import GridCamera, tiny_renderer_rgb

    layout = make_layout(np.random.default_rng(0))
    cam, poses = GridCamera(size), _poses(layout, frames, np.random.default_rng(1))
    t = time.process_time()
    for q in poses:
        cam.render(layout, q)
    ray = frames / (time.process_time() - t)
    client = bullet_client.BulletClient(connection_mode=p.DIRECT)
    tiny_renderer_rgb(client, layout, poses[0], cam)
    ny, nx = layout.grid.shape
    for z, rgba in ((-0.05, [0.37, 0.34, 0.31, 1]), (cam.wall_h + 0.05, [0.8, 0.8, 0.82, 1])):
        vis = client.createVisualShape(p.GEOM_BOX, halfExtents=[nx / 2, ny / 2, 0.05], rgbaColor=rgba)
        client.createMultiBody(0, -1, vis, [nx / 2, ny / 2, z])
    n = max(frames // 4, 10)
    t = time.process_time()
    for q in poses[:n]:
        tiny_renderer_rgb(client, layout, q, cam, boxes_built=True)
    tiny = n / (time.process_time() - t)
    client.disconnect()
    return ray, tiny


def env_speed(size: int, steps: int) -> tuple[float, float, float]:
    """(env steps/s with random actions, expert rollout steps/s, mean expert episode length)."""
    from envs.navigation.expert import NavExpert, rollout
    from envs.navigation.nav_env import NavigationEnv

    env = NavigationEnv(image_size=size)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    done, t = 0, time.process_time()
    while done < steps:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        done += 1
        if term or trunc:
            env.reset()
    rand = done / (time.process_time() - t)
    expert, done, eps, t = NavExpert(env), 0, 0, time.process_time()
    while done < steps:
        done += len(rollout(env, expert, seed=1000 + eps)["action"])
        eps += 1
    exp = done / (time.process_time() - t)
    env.close()
    return rand, exp, done / eps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames; print only")
    args = parser.parse_args(argv)
    frames, steps = (200, 1000) if args.quick else (1000, 4000)
    lines = ["# Navigation env speed (CPU seconds, one core)", "",
             "| image | ray caster frames/s | TinyRenderer frames/s | ratio | env steps/s (random) | "
             "expert rollout steps/s | expert steps/episode |", "|---|---|---|---|---|---|---|"]
    for size in (64, 96):
        ray, tiny = render_speed(size, frames)
        rand, exp, length = env_speed(size, steps)
        lines.append(f"| {size}x{size} | {ray:.0f} | {tiny:.0f} | {ray / tiny:.1f}x | {rand:.0f} | {exp:.0f} "
                     f"| {length:.0f} |")
        print(lines[-1], flush=True)
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / "nav_speed.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
