"""Sketch-and-extrude programs fitted to a point cloud: model-free starting points for refinement.

Most simple parts are one outline, perhaps with through holes, extruded along a
frame axis, or a few such extrusions stacked (a boss on a plate, a step, a
pocket). For each of the three base planes this module finds the heights where
the points show a face across the axis, and for the part between two such
heights projects the points onto the plane, rasterizes them, closes the gaps
between samples, traces the outer boundary into a polygon (each edge then
fitted to the points along it, a round boundary read as a circle) and reads
each hole of an end face as a circle or a rectangle. The result is written as
the generator's own program (``cq.Workplane(plane, origin=...)`` per level, a
sketch of segments with ``mode='s'`` holes, ``extrude``, ``union``), so it runs
in the sandbox, is judged against the input like a model's candidate and
refined like one (:mod:`cad_recode.inference.fitted_start`).

A part that is not a stack of extrusions along a frame axis gives programs that
miss, and the judge keeps the model's. Nothing here is trusted: every fitted
program is only a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

# (name, normal axis, sketch u axis, sketch v axis): cadquery's named planes
PLANES = (("XY", 2, 0, 1), ("ZX", 1, 2, 0), ("YZ", 0, 1, 2))
CELL = 1.5  # raster cell, model units (the frame is +-100)
MIN_HEIGHT = 1.0  # thinner than this along the axis: no extrusion to fit
MIN_HOLE_CELLS = 6  # smaller empty regions are sampling gaps, not holes
# a face across the axis between the ends: a band of LEVEL_BIN units holding LEVEL_SHARE of the points
# (and 5x a typical band); levels closer than MIN_STEP merge; at most MAX_STEPS extrusions stacked
LEVEL_BIN = 1.0
LEVEL_SHARE = 0.015
MIN_STEP = 3.0
MAX_STEPS = 3


@dataclass(frozen=True)
class ExtrusionFit:
    """One fitted program, the base plane it extrudes from and how many extrusions it stacks."""

    plane: str
    code: str
    steps: int = 1


def extrusion_programs(points: np.ndarray) -> list[ExtrusionFit]:
    """Fitted programs for ``points`` ((N, 3), model units): per base plane, one extrusion, and a stack
    of extrusions when the points show faces at heights between the ends (a boss on a plate, a step)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 64 or not np.isfinite(points).all():
        return []
    fits = []
    for plane, normal, u, v in PLANES:
        height, uv = points[:, normal], points[:, (u, v)]
        if height.max() - height.min() < MIN_HEIGHT:
            continue
        levels = _levels(height)
        stacks = [[levels[0], levels[-1]]] + ([levels] if len(levels) > 2 else [])  # one extrusion, then the stack
        for stack in stacks:
            slabs = [_slab(uv, height, lo, hi, levels) for lo, hi in zip(stack, stack[1:])]
            if all(slabs):
                fits.append(ExtrusionFit(plane, _program(plane, normal, stack, slabs), len(slabs)))
    return fits


def _levels(height: np.ndarray) -> list[float]:
    """The two ends, and the heights between them where the points show a face across the axis."""
    bottom, top = float(height.min()), float(height.max())
    counts, edges = np.histogram(height, bins=max(1, int(np.ceil((top - bottom) / LEVEL_BIN))))
    threshold = max(LEVEL_SHARE * len(height), 5 * float(np.median(counts)))
    peaks = [k for k in range(1, len(counts) - 1)
             if counts[k] >= threshold and counts[k] >= counts[k - 1] and counts[k] >= counts[k + 1]]
    peaks.sort(key=lambda k: -counts[k])
    levels = [bottom, top]
    for k in peaks:
        inside = height[(height >= edges[k]) & (height <= edges[k + 1])]
        level = float(inside.mean())
        if len(levels) < MAX_STEPS + 1 and min(abs(level - other) for other in levels) > MIN_STEP:
            levels.append(level)
    return sorted(levels)


def _slab(uv: np.ndarray, height: np.ndarray, lo: float, hi: float, levels: list[float]) -> str | None:
    """The sketch (outline and through holes) of the part between two of its ``levels``, or None.

    A face at an inner level belongs to whichever side is wider there, so the
    points of inner levels are left out; the ends' faces are kept.
    """
    is_bottom, is_top = lo == levels[0], hi == levels[-1]
    lower = lo - 0.5 if is_bottom else lo + MIN_STEP / 2
    upper = hi + 0.5 if is_top else hi - MIN_STEP / 2
    inside = (height >= lower) & (height <= upper)
    if inside.sum() < 32:
        return None
    uv, height = uv[inside], height[inside]
    caps = (height - lo < 1.0) & is_bottom | (hi - height < 1.0) & is_top
    region = _region(uv, _gap_cells(uv[caps] if caps.sum() >= 8 else uv))
    if region is None:
        return None
    grid, origin = region
    filled = ndimage.binary_fill_holes(grid)
    loop = _boundary_loop(filled)
    if loop is None or len(loop) < 4:
        return None
    loop = loop * CELL + origin
    outline = _circle(loop, uv) or _outer_polygon(loop, uv)
    if outline is None:
        return None
    holes = []
    if is_bottom or is_top:  # a hole shows as a gap in an end face; between two inner levels there is none
        # side walls only: a face across the axis at an inner level (the top of a plate under a
        # boss) covers the gaps between an end face's samples too
        across = np.zeros(len(height), dtype=bool)
        for level in levels[1:-1]:
            across |= np.abs(height - level) < MIN_STEP / 2
        walls = uv[_mid_height(height, lo, hi) & ~across]
        holes = [hole for hole in _holes(filled & ~grid, origin, walls) if outline.contains(hole[1])]
    return _sketch(outline, holes)


def _gap_cells(caps: np.ndarray) -> int:
    """Closing radius in cells: about the spacing of the samples on the end faces."""
    spacing = float(np.median(cKDTree(caps).query(caps, k=2)[0][:, 1]))
    return int(np.clip(np.ceil(1.5 * spacing / CELL), 1, 8))


def _region(uv: np.ndarray, gap: int):
    """The largest 4-connected region of occupied cells after closing, and the grid's origin."""
    pad = gap + 2
    origin = uv.min(axis=0) - pad * CELL
    shape = np.ceil((uv.max(axis=0) - origin) / CELL).astype(int) + pad + 1
    cells = np.floor((uv - origin) / CELL).astype(int)
    grid = np.zeros(shape, dtype=bool)
    grid[cells[:, 0], cells[:, 1]] = True
    disk = _disk(gap)
    grid = ndimage.binary_closing(grid, structure=disk)
    labels, count = ndimage.label(grid)
    if count == 0:
        return None
    sizes = ndimage.sum(grid, labels, index=range(1, count + 1))
    return labels == 1 + int(np.argmax(sizes)), origin


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2 + radius


# ---------------------------------------------------------------------------- the outline


@dataclass(frozen=True)
class _Outline:
    """The outer boundary: a polygon's corners, or a circle (centre and radius)."""

    corners: np.ndarray | None = None
    centre: np.ndarray | None = None
    radius: float = 0.0

    def contains(self, point: np.ndarray) -> bool:
        if self.corners is None:
            return float(np.linalg.norm(point - self.centre)) < self.radius
        return _inside(point, self.corners)


def _circle(loop: np.ndarray, uv: np.ndarray) -> _Outline | None:
    """The boundary as a circle when it is one: every traced corner near one radius."""
    x, y = loop[:, 0], loop[:, 1]
    # algebraic fit: x^2 + y^2 = 2 a x + 2 b y + c
    solution = np.linalg.lstsq(np.column_stack([2 * x, 2 * y, np.ones_like(x)]), x**2 + y**2, rcond=None)[0]
    centre = solution[:2]
    radius = float(np.sqrt(max(solution[2] + centre @ centre, 0.0)))
    if radius < 3 * CELL or np.abs(np.linalg.norm(loop - centre, axis=1) - radius).max() > max(2 * CELL, 0.04 * radius):
        return None
    distances = np.linalg.norm(uv - centre, axis=1)
    rim = distances[np.abs(distances - radius) < 2 * CELL]
    return _Outline(centre=centre, radius=float(np.median(rim)) if len(rim) >= 8 else radius)


def _outer_polygon(loop: np.ndarray, uv: np.ndarray) -> _Outline | None:
    """The traced boundary simplified to corners, each edge fitted to the points along it."""
    corners = _simplify(loop, tolerance=1.2 * CELL)
    if len(corners) < 3:
        return None
    corners = _fit_edges(corners, uv)
    return _Outline(corners) if len(corners) >= 3 and abs(_area(corners)) > 4 * CELL**2 else None


def _boundary_loop(filled: np.ndarray) -> np.ndarray | None:
    """The longest closed loop of cell edges between filled and empty cells, filled on its left."""
    padded = np.pad(filled, 1)
    inner = padded[1:-1, 1:-1]
    edges = []
    # (neighbour offset, edge start, edge end) in the cell's corner coordinates
    for (di, dj), start, end in (((0, -1), (0, 0), (1, 0)), ((1, 0), (1, 0), (1, 1)),
                                 ((0, 1), (1, 1), (0, 1)), ((-1, 0), (0, 1), (0, 0))):
        empty = ~padded[1 + di: padded.shape[0] - 1 + di, 1 + dj: padded.shape[1] - 1 + dj]
        ii, jj = np.nonzero(inner & empty)
        edges += [((i + start[0], j + start[1]), (i + end[0], j + end[1])) for i, j in zip(ii.tolist(), jj.tolist())]
    following: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for start, end in edges:
        following.setdefault(start, []).append(end)
    best: list[tuple[int, int]] = []
    while following:
        start = next(iter(following))
        loop, here = [start], start
        while True:
            ends = following.get(here)
            if not ends:
                break
            nxt = ends.pop()
            if not ends:
                del following[here]
            if nxt == start:
                break
            loop.append(nxt)
            here = nxt
        if len(loop) > len(best):
            best = loop
    return np.asarray(best, dtype=np.float64) if best else None


def _simplify(loop: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed loop, split at its two most distant corners."""
    far = int(np.argmax(np.linalg.norm(loop - loop[0], axis=1)))
    first = _douglas_peucker(loop[: far + 1], tolerance)
    second = _douglas_peucker(np.vstack([loop[far:], loop[:1]]), tolerance)
    return np.vstack([first[:-1], second[:-1]])


def _douglas_peucker(path: np.ndarray, tolerance: float) -> np.ndarray:
    keep = np.zeros(len(path), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(path) - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        distances = _line_distance(path[a + 1: b], path[a], path[b])
        k = int(np.argmax(distances))
        if distances[k] > tolerance:
            keep[a + 1 + k] = True
            stack += [(a, a + 1 + k), (a + 1 + k, b)]
    return path[keep]


def _line_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = b - a
    length = float(np.hypot(*direction))
    if length == 0:
        return np.linalg.norm(points - a, axis=1)
    return np.abs(_cross(direction, points - a)) / length


def _fit_edges(corners: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Each edge moved onto the points along it (a total least-squares line); corners where lines meet.

    The traced boundary runs along cell edges, up to a cell outside the part;
    the points on the side walls say where the outline really is.
    """
    tree = cKDTree(uv)
    lines = []
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        lines.append(_edge_line(a, b, uv, tree))
    fitted = []
    for k, corner in enumerate(corners):
        meet = _intersect(lines[k - 1], lines[k])
        fitted.append(corner if meet is None or np.linalg.norm(meet - corner) > 3 * CELL else meet)
    fitted = np.asarray(fitted)
    return _drop_short(fitted)


def _edge_line(a: np.ndarray, b: np.ndarray, uv: np.ndarray, tree: cKDTree):
    """(point, unit direction) of the line through the points near segment ab (ab itself if too few)."""
    direction = b - a
    length = float(np.hypot(*direction))
    if length < 2 * CELL:
        return a, direction / max(length, 1e-9)
    middle, reach = (a + b) / 2, length / 2
    near = uv[tree.query_ball_point(middle, reach)]
    if len(near) >= 4:
        along = (near - a) @ direction / length**2
        near = near[(along > 0.15) & (along < 0.85) & (_line_distance(near, a, b) < 1.5 * CELL)]
    if len(near) < 4:
        return a, direction / length
    centre = near.mean(axis=0)
    _, _, vt = np.linalg.svd(near - centre, full_matrices=False)
    fitted = vt[0] if vt[0] @ direction >= 0 else -vt[0]
    if abs(float(_cross(fitted, direction / length))) > 0.1:  # the points disagree with the edge: keep it
        return a, direction / length
    return centre, fitted


def _intersect(first, second) -> np.ndarray | None:
    (p, d), (q, e) = first, second
    denominator = float(_cross(d, e))
    if abs(denominator) < 1e-3:
        return None
    return p + d * float(_cross(q - p, e)) / denominator


def _cross(a: np.ndarray, b: np.ndarray):
    """The z of the cross product of 2-D vectors (rows broadcast)."""
    a, b = np.asarray(a), np.asarray(b)
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _drop_short(corners: np.ndarray, shortest: float = 2.0) -> np.ndarray:
    """Corners closer than ``shortest`` to the previous kept one are merged into it."""
    kept = [corners[0]]
    for corner in corners[1:]:
        if np.linalg.norm(corner - kept[-1]) >= shortest:
            kept.append(corner)
    if len(kept) > 1 and np.linalg.norm(kept[-1] - kept[0]) < shortest:
        kept.pop()
    return np.asarray(kept)


def _area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _inside(point: np.ndarray, polygon: np.ndarray) -> bool:
    x, y = point
    inside = False
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


# ---------------------------------------------------------------------------- the holes


def _mid_height(height: np.ndarray, bottom: float, top: float) -> np.ndarray:
    """Points off both end faces: the side walls, outer and inner."""
    margin = 0.05 * (top - bottom) + 0.5
    return (height > bottom + margin) & (height < top - margin)


def _walled(labels: np.ndarray, index: int, centre: np.ndarray, origin: np.ndarray, walls: np.ndarray) -> bool:
    """A hole has a wall all round it; a gap between the samples of an end face has none."""
    rim = ndimage.binary_dilation(labels == index, iterations=2) & (labels != index)
    cells = np.floor((walls - origin) / CELL).astype(int)
    on_grid = (cells >= 0).all(axis=1) & (cells[:, 0] < rim.shape[0]) & (cells[:, 1] < rim.shape[1])
    cells, around = cells[on_grid], walls[on_grid]
    around = around[rim[cells[:, 0], cells[:, 1]]] - centre
    if len(around) < 8:
        return False
    octants = np.floor((np.arctan2(around[:, 1], around[:, 0]) + np.pi) / (np.pi / 4)).astype(int) % 8
    return len(np.unique(octants)) >= 7


def _holes(empty: np.ndarray, origin: np.ndarray, walls: np.ndarray) -> list[tuple[str, np.ndarray, tuple[float, ...]]]:
    """Each through hole as ("circle", centre, (r,)) or ("rect", centre, (w, h)), model units."""
    labels, _ = ndimage.label(empty)
    holes = []
    for index, cells in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[cells] == index
        area = int(mask.sum())
        if area < MIN_HOLE_CELLS:
            continue
        ii, jj = np.nonzero(mask)
        centre = origin + CELL * (np.array([ii.mean() + cells[0].start, jj.mean() + cells[1].start]) + 0.5)
        if not _walled(labels, index, centre, origin, walls):
            continue
        # the wall samples that mark a hole's edge fill the cells they fall in: half a cell each side
        width, height = (mask.shape[0] + 1) * CELL, (mask.shape[1] + 1) * CELL
        fill = area / (mask.shape[0] * mask.shape[1])
        if fill > (1 + np.pi / 4) / 2:
            holes.append(("rect", centre, (width, height)))
        else:
            holes.append(("circle", centre, (np.sqrt(area / np.pi) * CELL + CELL / 2,)))
    return holes


# ---------------------------------------------------------------------------- the program


def _program(plane: str, normal: int, levels: list[float], sketches: list[str]) -> str:
    """The generator's spelling: one workplane per level, each sketch extruded to the next, unioned."""
    heights = [int(round(level)) for level in levels]
    lines, bodies = ["import cadquery as cq"], []
    for k, sketch in enumerate(sketches):
        origin = [0, 0, 0]
        origin[normal] = heights[k]
        lines.append(f"w{k}=cq.Workplane('{plane}',origin=({origin[0]},{origin[1]},{origin[2]}))")
        bodies.append(f"w{k}.sketch(){sketch}.finalize().extrude({max(1, heights[k + 1] - heights[k])})")
    lines.append("r=" + bodies[0] + "".join(f".union({body})" for body in bodies[1:]))
    return "\n".join(lines) + "\n"


def _sketch(outline: _Outline, holes: list[tuple[str, np.ndarray, tuple[float, ...]]]) -> str | None:
    sketch = _outline_sketch(outline)
    if sketch is None:
        return None
    for kind, centre, size in holes:
        where = _at(_rounded(centre), sketch)
        if kind == "circle":
            radius = int(round(size[0]))
            if radius >= 1:
                sketch += f"{where}.circle({radius},mode='s')"
        else:
            w, h = (int(round(s)) for s in size)
            if w >= 1 and h >= 1:
                sketch += f"{where}.rect({w},{h},mode='s')"
    return sketch


def _at(centre: tuple[int, int], sketch: str = "") -> str:
    """Where the next element goes: nothing at the origin before any push (the generator's spelling,
    ``circle(100).circle(88,mode='s')``); after a push the origin must be pushed too."""
    if centre == (0, 0) and ".push(" not in sketch:
        return ""
    return f".push([{_pair(centre)}])"


def _outline_sketch(outline: _Outline) -> str | None:
    if outline.corners is None:
        radius = int(round(outline.radius))
        return f"{_at(_rounded(outline.centre))}.circle({radius})" if radius >= 1 else None
    corners = [_rounded(corner) for corner in outline.corners]
    corners = [c for k, c in enumerate(corners) if c != corners[k - 1]]
    if len(corners) < 3:
        return None
    rectangle = _as_rectangle(corners)
    if rectangle is not None:
        return rectangle
    sketch = f".segment({_pair(corners[0])},{_pair(corners[1])})"
    sketch += "".join(f".segment({_pair(c)})" for c in corners[2:])
    return sketch + ".close().assemble()"


def _as_rectangle(corners: list[tuple[int, int]]) -> str | None:
    """Four corners on two x and two y values: the sketch's own rectangle, as a person writes it."""
    xs, ys = sorted({x for x, _ in corners}), sorted({y for _, y in corners})
    if len(corners) != 4 or len(xs) != 2 or len(ys) != 2:
        return None
    centre = ((xs[0] + xs[1]) / 2, (ys[0] + ys[1]) / 2)
    return f"{_at(_rounded(centre))}.rect({xs[1] - xs[0]},{ys[1] - ys[0]})"


def _rounded(point) -> tuple[int, int]:
    return int(round(point[0])), int(round(point[1]))


def _pair(point: tuple[int, int]) -> str:
    return f"({point[0]},{point[1]})"
