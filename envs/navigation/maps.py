"""Procedural T-maze trees for the navigation env: rooms and corridors on a grid, with repeated,
visually identical junctions whose correct turn is told only by a coloured cue seen at the start.

Grid: ``grid[iy, ix]`` is a material id per 1 m cell (0 = free), cell (ix, iy) spans
[ix, ix + 1] x [iy, iy + 1] m, and the map has a solid border. Layout (before a random rotation
by a multiple of 90 degrees), for ``depth`` D junction levels:

    start room (walls, or one panel, in the cue colour) -> stem corridor (maybe a dogleg) -> T-junction
    -> each arm runs sideways a_1 cells, turns north, rises r_1 cells -> T-junction of level 2 -> ...
    -> after level D each arm leads to a leaf room: 2**D leaves, one goal per episode.

Why this shape: the geometry never depends on the cue. Two episodes from one map seed with
different cues differ only in the colour of the cue (out of view once the robot leaves the start room)
and in which leaf holds the goal, so every junction view is pixel-identical between them while
the correct turn differs. All junctions share their local shape (arms >= 4 cells, one wall
material) and all leaves are translated copies with the goal at the same offset, so the goal
image is the same whichever leaf holds it: only memory of the cue tells the way. Poses are
multiples of 1/64 m where identity matters, so translated views are bitwise equal.
Cue c (0 .. 2**D - 1) encodes the turns msb first: bit 0 = left, 1 = right (heading north).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

FREE, CORRIDOR, START_ROOM, LEAF_ROOM, CUE_BASE = 0, 1, 2, 3, 4
CUE_COLOURS = np.array([[215, 35, 35], [35, 160, 55], [40, 75, 220], [235, 200, 25],
                        [200, 50, 200], [30, 195, 200], [245, 125, 20], [250, 250, 250]], np.uint8)
WALL_PALETTE = np.array([[150, 150, 150], [165, 155, 135], [135, 145, 165], [160, 140, 130],
                         [140, 160, 140], [175, 170, 160], [120, 125, 135]], np.uint8)
_Q = 64.0                                # pose quantum: 1/64 m keeps translated views bitwise equal
_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))  # fixed tie order


@dataclass
class NavLayout:
    grid: np.ndarray          # [ny, nx] uint8 material per cell (0 free)
    colours: np.ndarray       # [CUE_BASE + 2**depth, 3] uint8 base colour per material
    floor: np.ndarray         # [3] uint8
    ceiling: np.ndarray       # [3] uint8
    start: np.ndarray         # [3] x, y, yaw of the robot at reset
    goal: np.ndarray          # [3] pose of the goal image (in leaf ``cue``)
    cue: int
    depth: int
    turns: tuple              # correct turn per junction on the way, 0 left / 1 right
    junctions: np.ndarray     # [2**depth - 1, 2] centres of every T-junction, breadth first
    leaf_goals: np.ndarray    # [2**depth, 3] the goal pose in each leaf (leaf index = cue)
    cue_cell: tuple           # (ix, iy) of the cue panel the robot faces at the start
    cue_cells: np.ndarray     # [n, 2] (ix, iy) of every cue-coloured wall cell
    zone: np.ndarray          # [ny, nx] int8: -1 wall, 0 corridor, 1 start room, 2 + k leaf room k

    @property
    def free(self) -> np.ndarray:
        return self.grid == FREE

    def in_wrong_leaf(self, xy) -> np.ndarray:
        """Whether positions xy [..., 2] (world, cells) lie in a leaf room other than the goal's
        (zone 2 + k is leaf k; the goal is in leaf ``cue``): bool [...]."""
        xy = np.asarray(xy)
        zone = self.zone[np.floor(xy[..., 1]).astype(int), np.floor(xy[..., 0]).astype(int)]
        return (zone >= 2) & (zone != 2 + self.cue)


def _walk(x: int, y: int, moves) -> list:
    """Cells visited from (x, y) (excluded) by moves [(dx, dy, n), ...]."""
    out = []
    for dx, dy, n in moves:
        for _ in range(n):
            x, y = x + dx, y + dy
            out.append((x, y))
    return out


def make_layout(rng: np.random.Generator, depth: int = 2, cue: int | None = None,
                cue_style: str = "room") -> NavLayout:
    """One map from rng. ``cue`` forces the cue; the map itself is the same for every cue.
    cue_style "room": every start-room wall cell that faces only the start room shows the cue colour
    (in view for 6-25 frames, median 16, measured over 20 seeds); "panel": one such cell (2-15
    frames, median 3: a harder memory task). Both draw the same random numbers: the same map."""
    if not 1 <= depth <= 3:
        raise ValueError(f"depth must be 1, 2 or 3, got {depth}")
    if cue_style not in ("room", "panel"):
        raise ValueError(f"cue_style must be 'room' or 'panel', got {cue_style!r}")
    n_cues = 2 ** depth
    drawn = int(rng.integers(n_cues))    # always drawn, so forcing the cue leaves the map unchanged
    cue = drawn if cue is None else int(cue)
    if not 0 <= cue < n_cues:
        raise ValueError(f"cue must be in [0, {n_cues}), got {cue}")
    free: dict = {}                      # (ix, iy) -> material of the region (CORRIDOR / rooms)
    zones: dict = {}                     # (ix, iy) -> zone id (see NavLayout.zone)

    def carve(cells, region, zone=0):
        for c in cells:
            if c in free:                # the lengths below are chosen so this never happens
                raise AssertionError(f"map generator overlap at {c}")
            free[c], zones[c] = region, zone

    # start room [0, sw) x [0, sh), door in its top wall
    sw, sh = int(rng.integers(3, 6)), int(rng.integers(3, 5))
    carve([(x, y) for x in range(sw) for y in range(sh)], START_ROOM, 1)
    xd = int(rng.integers(0, sw))
    carve([(xd, sh)], CORRIDOR)
    if rng.random() < 0.5:               # dogleg: north, sideways, north (>= 3 straight before J1)
        side = int(rng.choice([-1, 1]))
        stem = _walk(xd, sh, [(0, 1, int(rng.integers(2, 4))), (side, 0, int(rng.integers(2, 5))),
                              (0, 1, int(rng.integers(3, 5)))])
    else:
        stem = _walk(xd, sh, [(0, 1, int(rng.integers(4, 7)))])
    carve(stem, CORRIDOR)
    j1 = (stem[-1][0], stem[-1][1] + 1)

    # leaf rooms (one shape for all) and arm lengths from the leaves up, so subtrees never touch
    rw, rh = int(rng.integers(3, 6)), int(rng.integers(3, 5))
    od = int(rng.integers(0, rw))        # door column inside the leaf room
    ext = max(od, rw - 1 - od) + 1       # half-width of a subtree incl. its wall
    arms, rises = [0] * depth, [0] * depth
    for lvl in reversed(range(depth)):
        arms[lvl] = max(4, ext + 2 + int(rng.integers(0, 2)))   # >= 4: junction views identical
        rises[lvl] = int(rng.integers(2, 4))
        ext += arms[lvl]
    gdx = np.round(rng.uniform(-od + 0.45 - 0.5, rw - od - 0.5 - 0.45) * _Q) / _Q   # goal offset from
    gdy = np.round(rng.uniform(1.5, rh + 0.5 - 0.45) * _Q) / _Q                     # the leaf door centre
    gyaw = float(np.arctan2(gdy, gdx) + rng.uniform(-0.3, 0.3))  # facing away from the door

    junctions, leaf_goals = [], []
    level_nodes = [j1]
    for lvl in range(depth):             # breadth first: junction order J1, J2L, J2R, ...
        nxt = []
        for jx, jy in level_nodes:
            carve([(jx, jy)], CORRIDOR)
            junctions.append((jx + 0.5, jy + 0.5))
            for s in (-1, 1):            # west (left) first: child index = turn bit
                cells = _walk(jx, jy, [(s, 0, arms[lvl]), (0, 1, rises[lvl])])
                carve(cells, CORRIDOR)
                nxt.append((cells[-1][0], cells[-1][1] + 1))
        level_nodes = nxt
    for k, (cx, cy) in enumerate(level_nodes):   # leaves, left to right = cue order
        carve([(cx, cy)], CORRIDOR)
        carve([(x, y) for x in range(cx - od, cx - od + rw) for y in range(cy + 1, cy + 1 + rh)], LEAF_ROOM, 2 + k)
        leaf_goals.append((cx + 0.5 + gdx, cy + 0.5 + gdy, gyaw))

    # grid with a solid border; walls take the material of the room they face
    cells = np.array(list(free.keys()))
    lo = cells.min(0) - 1
    nx, ny = cells.max(0) - lo + 2
    region, zone = np.zeros((ny, nx), np.uint8), np.full((ny, nx), -1, np.int8)
    for (x, y), m in free.items():
        region[y - lo[1], x - lo[0]], zone[y - lo[1], x - lo[0]] = m, zones[x, y]
    grid = np.full((ny, nx), CORRIDOR, np.uint8)
    grid[region > 0] = FREE
    pad = np.pad(region, 1)
    for m in (LEAF_ROOM, START_ROOM):    # a wall 8-adjacent to a room shows that room's colour
        near = np.zeros_like(region, bool)
        for dx, dy in _NEIGHBOURS:
            near |= pad[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx] == m
        grid[(region == 0) & near] = m
    # cue panels: start-room wall cells that face only start-room cells (never the door side)
    cands = []
    for y in range(ny):
        for x in range(nx):
            if region[y, x] == 0:
                n4 = [pad[1 + y + dy, 1 + x + dx] for dx, dy in _NEIGHBOURS[:4]]
                if START_ROOM in n4 and CORRIDOR not in n4:
                    cands.append((x, y))
    cue_cell = cands[int(rng.integers(len(cands)))]
    cue_cells = np.array(cands if cue_style == "room" else [cue_cell], float)
    grid[cue_cells[:, 1].astype(int), cue_cells[:, 0].astype(int)] = CUE_BASE + cue

    # start pose: inside the start room, facing the cue panel
    sx = np.round(rng.uniform(0.45, sw - 0.45) * _Q) / _Q - lo[0]
    sy = np.round(rng.uniform(0.45, sh - 0.45) * _Q) / _Q - lo[1]
    face = np.array(cue_cell, float) + 0.5
    for dx, dy in _NEIGHBOURS[:4]:       # the face of the cue cell that borders the room
        if pad[1 + cue_cell[1] + dy, 1 + cue_cell[0] + dx] == START_ROOM:
            face += 0.5 * np.array([dx, dy])
    syaw = float(np.arctan2(face[1] - sy, face[0] - sx) + rng.uniform(-0.25, 0.25))
    start = np.array([sx, sy, syaw])
    shift = np.array([-lo[0], -lo[1], 0.0])
    junctions = np.array(junctions) + shift[:2]
    leaf_goals = np.array(leaf_goals) + shift

    colours = np.zeros((CUE_BASE + n_cues, 3), np.uint8)
    walls = rng.choice(len(WALL_PALETTE), 3, replace=False)
    colours[CORRIDOR], colours[START_ROOM], colours[LEAF_ROOM] = WALL_PALETTE[walls]
    colours[CUE_BASE:] = CUE_COLOURS[:n_cues]
    floor = np.clip(np.array([95, 88, 80]) + rng.integers(-15, 16, 3), 0, 255).astype(np.uint8)
    ceiling = np.clip(np.array([205, 205, 210]) + rng.integers(-15, 16, 3), 0, 255).astype(np.uint8)

    k = int(rng.integers(4))             # random rotation: corridors run along either axis
    cue_cell = np.array(cue_cell, float)
    for _ in range(k):                   # 90 deg counter-clockwise: (x, y) -> (ny - y, x), exact
        ny = grid.shape[0]
        grid, zone = np.ascontiguousarray(grid[::-1, :].T), np.ascontiguousarray(zone[::-1, :].T)
        rot = lambda p: np.stack([ny - p[..., 1], p[..., 0]], -1)  # noqa: E731
        start = np.array([*rot(start[:2]), start[2] + np.pi / 2])
        junctions = rot(junctions)
        leaf_goals = np.concatenate([rot(leaf_goals[:, :2]), leaf_goals[:, 2:] + np.pi / 2], 1)
        cue_cell, cue_cells = rot(cue_cell + 0.5) - 0.5, rot(cue_cells + 0.5) - 0.5
    wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi   # noqa: E731
    start[2], leaf_goals[:, 2] = wrap(start[2]), wrap(leaf_goals[:, 2])
    turns = tuple((cue >> (depth - 1 - lvl)) & 1 for lvl in range(depth))
    return NavLayout(grid, colours, floor, ceiling, start, leaf_goals[cue].copy(), cue, depth, turns,
                     junctions, leaf_goals, (int(round(cue_cell[0])), int(round(cue_cell[1]))),
                     np.round(cue_cells).astype(np.int64), zone)


# ---------------------------------------------------------------------------------- planning
def near_wall(free: np.ndarray) -> np.ndarray:
    """[ny, nx] bool: free cells with a wall among their 8 neighbours."""
    ny, nx = free.shape
    pad = np.pad(free, 1)
    out = np.zeros_like(free)
    for dx, dy in _NEIGHBOURS:
        out |= ~pad[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
    return out & free


def distance_field(free: np.ndarray, goal_cell, orth: float = 1.0, diag: float = np.sqrt(2),
                   wall_penalty: float = 0.0) -> np.ndarray:
    """Dijkstra from goal_cell (ix, iy) over free cells, 8-connected without cutting wall corners.
    [ny, nx] cost to reach the goal (inf where unreachable). Cost of entering a cell next to a wall
    (8-neighbourhood) is raised by wall_penalty. With integer costs the sums are exact, so ties
    between equal paths break the same way whatever the goal (see nav_expert)."""
    extra = np.where(near_wall(free), wall_penalty, 0.0)
    dist = np.full(free.shape, np.inf)
    gx, gy = goal_cell
    dist[gy, gx] = 0.0
    heap = [(0.0, gx, gy)]
    while heap:
        d, x, y = heapq.heappop(heap)
        if d > dist[y, x]:
            continue
        for dx, dy in _NEIGHBOURS:
            u, v = x + dx, y + dy
            if not free[v, u] or (dx and dy and not (free[y, u] and free[v, x])):
                continue
            nd = d + (diag if dx and dy else orth) + extra[y, x]   # (u, v) -> (x, y) enters (x, y)
            if nd < dist[v, u]:
                dist[v, u] = nd
                heapq.heappush(heap, (nd, u, v))
    return dist


def descend(field: np.ndarray, free: np.ndarray, cell, orth=10, diag=14, extra=None, max_len=10_000) -> list:
    """Cells from ``cell`` to the field's zero, each step to the neighbour minimising
    (field + cost of the step as distance_field counts it; ``extra`` [ny, nx] = its wall penalty
    per cell, 0 if None); ties go to the first neighbour in _NEIGHBOURS order."""
    extra = np.zeros(free.shape) if extra is None else extra
    path = [tuple(cell)]
    x, y = cell
    while field[y, x] > 0 and len(path) < max_len:
        best, arg = np.inf, None
        for dx, dy in _NEIGHBOURS:
            u, v = x + dx, y + dy
            if not free[v, u] or (dx and dy and not (free[y, u] and free[v, x])):
                continue
            c = field[v, u] + (diag if dx and dy else orth) + extra[v, u]
            if c < best:
                best, arg = c, (u, v)
        if arg is None:
            break
        x, y = arg
        path.append(arg)
    return path

