"""Depth camera for the embedded simulators: vectorised ray casting and PyBullet's renderer.

Why a hand-written ray caster: rendering dominates the quadruped's step cost. PyBullet's
TinyRenderer costs ~10 ms per 64x64 frame on one core and ``rayTestBatch`` ~5 ms (most of it
building Python lists), while our courses are made of a few known primitives (ground plane,
yawed boxes, vertical cylinders). Casting the camera's rays against those primitives in numpy,
after culling the ones outside the view, costs well under a millisecond. ``tiny_renderer_depth``
is kept as the reference the ray caster is tested against pixel by pixel (tests/test_quadruped.py)
and as the baseline of benchmarks/env_speed.py.

Depth convention (both paths): z-depth along the optical axis in metres, clipped to
[near, far]; pixels that see nothing read ``far``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# the 8 corners of a unit box, as signs of the half extents  [8, 3]
_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)


@dataclass
class Primitives:
    """Static-shape obstacle description shared by the ray caster and the PyBullet scene.

    boxes:     centre [Nb, 3], half extents [Nb, 3], yaw [Nb] (rotation about world z)
    cylinders: centre [Nc, 3] (of the cylinder), radius [Nc], half height [Nc]; axis = world z
    The ground is the plane z = 0.
    """

    box_center: np.ndarray
    box_half: np.ndarray
    box_yaw: np.ndarray
    cyl_center: np.ndarray
    cyl_radius: np.ndarray
    cyl_half_height: np.ndarray

    @staticmethod
    def empty() -> "Primitives":
        z3, z1 = np.zeros((0, 3)), np.zeros(0)
        return Primitives(z3.copy(), z3.copy(), z1.copy(), z3.copy(), z1.copy(), z1.copy())


class DepthCamera:
    """Pinhole camera with a square image; ``pose`` gives eye position and a rotation matrix
    whose columns are the camera's (forward, left, up) axes in world coordinates."""

    def __init__(self, size: int = 64, fov_deg: float = 70.0, near: float = 0.05, far: float = 4.0):
        self.size, self.fov_deg, self.near, self.far = size, fov_deg, near, far
        tan = np.tan(np.radians(fov_deg) / 2)
        # PyBullet's TinyRenderer samples pixel (row i, column j) at integer screen coordinates
        # (x = j, y = size-1-i), not at pixel centres; we cast through the same points so the
        # two paths agree pixel by pixel (measured: <1e-5 m on the bare ground plane)
        u = np.broadcast_to((2 * np.arange(size) / size - 1)[None, :], (size, size))        # right [H, W]
        v = np.broadcast_to((1 - 2 * (np.arange(size) + 1) / size)[:, None], (size, size))  # up    [H, W]
        self._dirs_cam = np.stack([np.ones_like(u), -u * tan, v * tan], -1).reshape(-1, 3)  # [P, 3]

    # ----------------------------------------------------------------------------- ray caster
    def raycast(self, eye: np.ndarray, rot: np.ndarray, prims: Primitives) -> np.ndarray:
        """Depth image [size, size] (float32, metres) of ground + primitives seen from eye."""
        dirs = self._dirs_cam @ rot.T                        # [P, 3] world directions
        # ground plane z = 0: only rays that go down can reach it
        down = dirs[:, 2] < -1e-9
        depth = np.where(down, -eye[2] / np.where(down, dirs[:, 2], -1.0), self.far)
        depth = np.where(depth > 0, depth, self.far)
        for centers, corners, hit in (
            (prims.box_center, self._box_corners(prims), self._hit_boxes),
            (prims.cyl_center, self._cylinder_corners(prims), self._hit_cylinders),
        ):
            if len(centers) == 0:
                continue
            obj, pix = self._candidate_pixels(eye, rot, corners)
            if pix.size:
                t = hit(eye, dirs[pix], prims, obj)           # [M] nearest hit per (object, pixel)
                ok = np.isfinite(t)
                np.minimum.at(depth, pix[ok], t[ok])
        return np.clip(depth, self.near, self.far).reshape(self.size, self.size).astype(np.float32)

    @staticmethod
    def _box_corners(prims: Primitives) -> np.ndarray:
        local = _CORNER_SIGNS[None] * prims.box_half[:, None]                                          # [N, 8, 3]
        c, s = np.cos(prims.box_yaw)[:, None], np.sin(prims.box_yaw)[:, None]
        x, y = c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1]
        return prims.box_center[:, None] + np.stack([x, y, local[..., 2]], -1)

    @staticmethod
    def _cylinder_corners(prims: Primitives) -> np.ndarray:
        half = np.stack([prims.cyl_radius, prims.cyl_radius, prims.cyl_half_height], -1)
        return prims.cyl_center[:, None] + _CORNER_SIGNS[None] * half[:, None]

    def _candidate_pixels(self, eye, rot, corners):
        """(object index, pixel index) pairs whose ray may hit the object: the pixels inside the
        screen rectangle bounding the object's projected corners [N, 8, 3]. Objects beyond ``far``
        or behind the camera are skipped; an object reaching behind the image plane gets every
        pixel. Only these pairs are ray-tested, which keeps the cost proportional to the image
        area objects cover rather than to (objects x pixels)."""
        cam = (corners - eye) @ rot                           # [N, 8, 3] (forward, left, up)
        fwd = cam[..., 0]
        keep = (fwd.max(1) > self.near) & (np.linalg.norm(cam, axis=-1).min(1) < self.far * 1.8)
        tan = np.tan(np.radians(self.fov_deg) / 2)
        S = self.size
        with np.errstate(divide="ignore", invalid="ignore"):
            u = -cam[..., 1] / fwd / tan                      # right, [-1, 1] on screen  [N, 8]
            v = cam[..., 2] / fwd / tan                       # up
        c0 = np.floor((u.min(1) + 1) * S / 2) - 1
        c1 = np.ceil((u.max(1) + 1) * S / 2) + 1
        r0 = np.floor((1 - v.max(1)) * S / 2) - 2
        r1 = np.ceil((1 - v.min(1)) * S / 2) + 1
        whole = fwd.min(1) <= self.near
        c0, r0 = np.where(whole, 0, np.clip(c0, 0, S)), np.where(whole, 0, np.clip(r0, 0, S))
        c1, r1 = np.where(whole, S - 1, np.clip(c1, -1, S - 1)), np.where(whole, S - 1, np.clip(r1, -1, S - 1))
        keep &= (c1 >= c0) & (r1 >= r0)
        objs, pixs = [], []
        for n in np.nonzero(keep)[0]:
            p = (np.arange(r0[n], r1[n] + 1, dtype=np.int64)[:, None] * S
                 + np.arange(c0[n], c1[n] + 1, dtype=np.int64)[None]).ravel()
            pixs.append(p)
            objs.append(np.full(p.size, n))
        if not pixs:
            return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
        return np.concatenate(objs), np.concatenate(pixs)

    @staticmethod
    def _hit_boxes(eye, dirs, prims: Primitives, idx) -> np.ndarray:
        """Slab test in each box's frame, per (box idx [M], ray dirs [M, 3]) pair -> t [M] (inf = miss)."""
        c, s = np.cos(prims.box_yaw), np.sin(prims.box_yaw)                # [N]
        rel = eye[None] - prims.box_center                                   # [N, 3]
        # camera position in each box's axes (rotation by -yaw), per box then gathered per pair
        o = np.stack([c * rel[:, 0] + s * rel[:, 1], c * rel[:, 1] - s * rel[:, 0], rel[:, 2]])[:, idx]
        h = prims.box_half.T[:, idx]                                         # [3, M]
        c, s = c[idx], s[idx]
        d = (c * dirs[:, 0] + s * dirs[:, 1], c * dirs[:, 1] - s * dirs[:, 0], dirs[:, 2])
        lo, hi = np.full(len(idx), -np.inf), np.full(len(idx), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                inv = 1.0 / d[k]
                t1, t2 = (-h[k] - o[k]) * inv, (h[k] - o[k]) * inv
                # fmin/fmax skip the nan of a ray parallel to a slab through its edge
                lo = np.fmax(lo, np.fmin(t1, t2))
                hi = np.fmin(hi, np.fmax(t1, t2))
        return np.where((hi >= lo) & (lo > 0), lo, np.inf)

    @staticmethod
    def _hit_cylinders(eye, dirs, prims: Primitives, idx) -> np.ndarray:
        """Vertical capped cylinders per (cylinder idx [M], ray dirs [M, 3]) pair: side and caps."""
        r, hh = prims.cyl_radius[idx], prims.cyl_half_height[idx]
        o = eye[None] - prims.cyl_center[idx]                                # [M, 3]
        dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
        a = dx**2 + dy**2
        b = 2 * (o[:, 0] * dx + o[:, 1] * dy)
        cc = o[:, 0] ** 2 + o[:, 1] ** 2 - r**2
        disc = b**2 - 4 * a * cc
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
            side = (disc >= 0) & (a > 0) & (t_side > 0) & (np.abs(o[:, 2] + t_side * dz) <= hh)
            best = np.where(side, t_side, np.inf)
            for cap in (hh, -hh):
                t_cap = (cap - o[:, 2]) / dz
                px, py = o[:, 0] + t_cap * dx, o[:, 1] + t_cap * dy
                ok = (t_cap > 0) & (px**2 + py**2 <= r**2)
                best = np.minimum(best, np.where(ok, t_cap, np.inf))
        return best

    # ------------------------------------------------------------------ PyBullet's renderer
    def view_projection(self, eye: np.ndarray, rot: np.ndarray):
        from envs.scene.bullet import quiet_import

        p = quiet_import()  # local import: the ray caster needs no simulator (nor its banner in the logs)

        target = eye + rot[:, 0]
        view = p.computeViewMatrix(eye.tolist(), target.tolist(), rot[:, 2].tolist())
        proj = p.computeProjectionMatrixFOV(self.fov_deg, 1.0, self.near, self.far)
        return view, proj

    def tiny_renderer_depth(self, client, eye: np.ndarray, rot: np.ndarray) -> np.ndarray:
        """The same image through PyBullet's TinyRenderer (z-buffer linearised to metres)."""
        import pybullet as p

        view, proj = self.view_projection(eye, rot)
        _, _, _, zbuf, _ = client.getCameraImage(
            self.size, self.size, view, proj, renderer=p.ER_TINY_RENDERER,
            flags=p.ER_NO_SEGMENTATION_MASK)
        zbuf = np.asarray(zbuf, dtype=np.float64).reshape(self.size, self.size)
        n, f = self.near, self.far
        depth = f * n / (f - (f - n) * zbuf)
        return np.clip(depth, n, f).astype(np.float32)


def orbit_rgb(client, target, distance: float, yaw: float, pitch: float, fov: float, far: float,
              height: int = 240, width: int = 320) -> np.ndarray:
    """RGB frame [height, width, 3] uint8 of a camera orbiting ``target`` (for videos; TinyRenderer)."""
    import pybullet as p

    view = client.computeViewMatrixFromYawPitchRoll(list(target), distance, yaw, pitch, 0, 2)
    proj = client.computeProjectionMatrixFOV(fov, width / height, 0.05, far)
    _, _, rgb, _, _ = client.getCameraImage(width, height, view, proj, renderer=p.ER_TINY_RENDERER,
                                            flags=p.ER_NO_SEGMENTATION_MASK)
    return np.asarray(rgb, dtype=np.uint8).reshape(height, width, 4)[..., :3]
