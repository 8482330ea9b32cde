"""Procedural CAD-Recode-style programs: `generate_program` draws one, `generate_dataset` a folder.

Two distributions:

``simple`` (the CPU default) -- one or two bodies of few primitives, written in
ONE canonical way, so a shape never has two spellings for the model to choose between:
  * a box is always ``box`` on the XY plane, origin at its bottom, positive offset;
  * a cylinder is always ``cylinder`` on the plane normal to its axis;
  * a sketch plate is a rectangle or circle with 1-2 rectangular or round holes
    strictly inside, extruded by a positive depth from its bottom; holes are listed
    in (u, v) order;
  * a second body is a boss on top of the first (a cylinder, or a box on XY parts),
    strictly inside the top face;
  * every number is an integer; the part is centred with its largest extent 200.

``medium`` -- ``simple`` whose plates may also have outlines drawn as loops of
segments and arcs (a slot, a D shape, a chamfered rectangle, a trapezoid, a
triangle, an L, U or T profile, a hexagon) with 0-2 holes; loops start at their
smallest (u, v) vertex and run counter-clockwise. (Generator version 1 called
this level ``simple``; a seed gives the same programs.)

``full`` -- the published recipe: 1-3 bodies on random XY/YZ/ZX planes with
origins along the normal and signed extrusions; each sketch combines 3 to 8
primitives (circles, rectangles, closed loops of segments and arcs) by union and
subtraction (``mode='s'``); boxes and cylinders too; integer coordinates, each part
centred and scaled so that its largest extent is 200.

All are pure functions of the random generator, so a seed fixes the programs.
Whether a program really yields one valid solid is decided by running it in the
sandbox (`generate_dataset` does that); ``simple`` and ``medium`` programs are
valid by construction, ``full`` ones sometimes are not (disjoint pieces, degenerate arcs).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cad_recode.data.cadcode import (
    PLANE_AXES, PLANES, BoxBody, Circle, CylinderBody, Loop, Rect, SketchBody, canonical_loop,
    centring_offset, face_bounds, loop_outline, part_bounds, render, shift_part,
)
from cad_recode.errors import CadRecodeError, UsageError

GENERATOR_VERSION = "2"
COMPLEXITIES = ("simple", "medium", "full")
EXTENT = 200  # largest extent of every part, as in the public data ([-100, 100])
MARGIN = 4  # smallest wall between a hole or boss and an outline edge, in program units


def generate_program(rng: np.random.Generator, complexity: str = "simple") -> str:
    """One CAD-Recode-style program drawn from `rng` (deterministic for the generator's state)."""
    return render(generate_part(rng, complexity))


def generate_part(rng: np.random.Generator, complexity: str = "simple") -> tuple:
    """The part behind `generate_program`: a tuple of bodies (see `cad_recode.data.cadcode`)."""
    if complexity in SIMPLE_OUTLINES:
        part = _simple_part(rng, SIMPLE_OUTLINES[complexity])
    elif complexity == "full":
        part = _full_part(rng)
    else:
        raise UsageError(f"unknown complexity {complexity!r}; use one of: {', '.join(COMPLEXITIES)}")
    return shift_part(part, centring_offset(part))


def program_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of attempt `index` under `seed`: programs do not depend on batching or workers."""
    return np.random.default_rng([int(seed), int(index)])


def programs_per_second(num: int = 2000, complexity: str = "simple", seed: int = 0) -> float:
    """Generation rate without execution (the figure `benchmarks/bench_data.py` reports)."""
    start = time.perf_counter()
    for i in range(num):
        generate_program(program_rng(seed, i), complexity)
    return num / (time.perf_counter() - start)


# --- geometry helpers (local 2D) ----------------------------------------------------------


def _ri(rng: np.random.Generator, lo: float, hi: float) -> int:
    """Integer uniform in [lo, hi] (bounds rounded inwards, never empty)."""
    lo_i, hi_i = math.ceil(lo), math.floor(hi)
    return int(rng.integers(lo_i, max(lo_i, hi_i) + 1))


def _even(value: float, lo: int = 2) -> int:
    return max(lo, int(value) // 2 * 2)


def _inside(poly, p) -> bool:
    x, y = p
    inside = False
    n = len(poly)
    for i in range(n):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _segment_distance(p, a, b) -> float:
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / length2))
    return math.hypot(p[0] - ax - t * dx, p[1] - ay - t * dy)


def _feature_probe(feature) -> list:
    """Points on a circle/rect feature's boundary, for containment tests."""
    if isinstance(feature, Circle):
        return [(feature.x + feature.r * math.cos(a), feature.y + feature.r * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]
    hw, hh = feature.w / 2, feature.h / 2
    return [(feature.x + sx * hw, feature.y + sy * hh) for sx, sy in
            ((-1, -1), (1, -1), (1, 1), (-1, 1), (0, -1), (1, 0), (0, 1), (-1, 0))]


def _fits(poly, feature, margin: float = MARGIN) -> bool:
    """True when `feature` lies inside polygon `poly` with `margin` to spare on every side."""
    probe = _feature_probe(feature)
    if not all(_inside(poly, p) for p in probe):
        return False
    n = len(poly)
    if any(_segment_distance(p, poly[i], poly[(i + 1) % n]) < margin for p in probe for i in range(n)):
        return False
    u0, v0, u1, v1 = face_bounds(feature)
    # a reflex vertex poking into the feature (L, U, T outlines)
    return not any(u0 - margin < x < u1 + margin and v0 - margin < y < v1 + margin for x, y in poly)


def _apart(a, b, margin: float = MARGIN) -> bool:
    """True when the bounding boxes of two features are at least `margin` apart."""
    a0, a1, a2, a3 = face_bounds(a)
    b0, b1, b2, b3 = face_bounds(b)
    return a2 + margin <= b0 or b2 + margin <= a0 or a3 + margin <= b1 or b3 + margin <= a1


def _circle_polygon(x, y, r, n=32):
    # inscribed polygon: a conservative stand-in for containment tests
    return [(x + r * math.cos(t), y + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]


# --- simple ---------------------------------------------------------------------------------


@dataclass
class _Outline:
    """A plate outline in local coordinates [0, A] x [0, B], with its containment polygon."""

    face: object
    poly: list
    needs_hole: bool  # a bare rectangle / circle would be a box / cylinder: not canonical


def _extents(rng: np.random.Generator, long_normal: bool) -> tuple[int, int, int]:
    """(A, B, H) with max == EXTENT: in-plane sizes and the size along the normal."""
    a, b = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
    h = rng.uniform(0.3, 1.0) if long_normal else rng.uniform(0.04, 0.45)
    top = max(a, b, h)
    return tuple(max(4, round(EXTENT * s / top)) for s in (a, b, h))


# plate outlines and how often each is drawn, per level (the order fixes the random stream)
SIMPLE_OUTLINES = {
    "simple": {"rect": .57, "circle": .43},
    "medium": {"rect": .16, "circle": .12, "slot": .1, "dshape": .08, "chamfer": .1, "trapezoid": .08,
               "triangle": .06, "L": .1, "U": .07, "T": .06, "hexagon": .07},
}


def _outline(rng: np.random.Generator, A: int, B: int, outlines: dict[str, float]) -> _Outline:
    kind = rng.choice(list(outlines), p=list(outlines.values()))
    if kind == "rect":
        A, B = _even(A), _even(B)
        poly = [(0, 0), (A, 0), (A, B), (0, B)]
        return _Outline(Rect(A // 2, B // 2, A, B), poly, True)
    if kind == "circle":
        r = _even(max(A, B)) // 2
        return _Outline(Circle(r, r, r), _circle_polygon(r, r, r), True)
    if kind == "slot":  # obround: two semicircular ends
        A, B = max(A, B), _even(min(A, B) * rng.uniform(0.35, 0.9), 4)
        r = B // 2
        verts, mids = [(r, 0), (A - r, 0), (A - r, B), (r, B)], [None, (A, r), None, (0, r)]
    elif kind == "dshape":  # one side an outward arc no deeper than a semicircle
        B = _even(B, 6)
        s = _ri(rng, 0.2 * B, 0.5 * B)
        A = max(A, s + 6)
        verts, mids = [(0, 0), (A - s, 0), (A - s, B), (0, B)], [None, (A, B // 2), None, None]
    elif kind == "chamfer":
        c = _ri(rng, 0.1 * min(A, B), 0.35 * min(A, B))
        corners = rng.random(4) < 0.6
        corners[rng.integers(4)] = True
        verts = []
        for (x, y), (dx1, dy1), (dx2, dy2), cut in zip(
            [(0, 0), (A, 0), (A, B), (0, B)], [(0, 1), (-1, 0), (0, -1), (1, 0)], [(1, 0), (0, 1), (-1, 0), (0, -1)],
            corners,
        ):
            verts += [(x + c * dx1, y + c * dy1), (x + c * dx2, y + c * dy2)] if cut else [(x, y)]
        mids = None
    elif kind == "trapezoid":
        t1, t2 = _ri(rng, 0, 0.4 * A), _ri(rng, 0, 0.4 * A)
        t1 = t1 if t1 + t2 > 0 else max(1, A // 5)
        verts, mids = [(0, 0), (A, 0), (A - t2, B), (t1, B)], None
    elif kind == "triangle":
        verts, mids = [(0, 0), (A, 0), (_ri(rng, 0, A), B)], None
    elif kind == "L":
        w, h = _ri(rng, 0.25 * A, 0.6 * A), _ri(rng, 0.25 * B, 0.6 * B)
        verts, mids = [(0, 0), (A, 0), (A, h), (w, h), (w, B), (0, B)], None
    elif kind == "U":
        w, d = _ri(rng, 0.15 * A, 0.35 * A), _ri(rng, 0.2 * B, 0.7 * B)
        verts, mids = [(0, 0), (A, 0), (A, B), (A - w, B), (A - w, d), (w, d), (w, B), (0, B)], None
    elif kind == "T":
        w, h = _ri(rng, 0.15 * A, 0.35 * A), _ri(rng, 0.25 * B, 0.6 * B)
        verts = [(w, 0), (A - w, 0), (A - w, h), (A, h), (A, B), (0, B), (0, h), (w, h)]
        mids = None
    else:  # hexagon with integer corners
        A, B = max(8, A // 4 * 4), _even(B)
        verts, mids = [(A // 4, 0), (3 * A // 4, 0), (A, B // 2), (3 * A // 4, B), (A // 4, B), (0, B // 2)], None
    verts, mids = _symmetry(rng, verts, mids, A, B)
    loop = canonical_loop(verts, mids)
    return _Outline(loop, loop_outline(loop) if mids else list(loop.vertices), False)


def _symmetry(rng: np.random.Generator, verts, mids, A: int, B: int):
    """One of the 8 symmetries of the [0, A] x [0, B] box: templates appear in every orientation."""
    swap, flip_u, flip_v = rng.random(3) < 0.5
    W, H = (B, A) if swap else (A, B)

    def move(p):
        if p is None:
            return None
        x, y = (p[1], p[0]) if swap else p
        return (W - x if flip_u else x, H - y if flip_v else y)

    return [move(v) for v in verts], None if mids is None else [move(m) for m in mids]


def _hole(rng: np.random.Generator, out: _Outline, size: float, subtract: bool = True):
    u0, v0, u1, v1 = face_bounds(out.face)
    x, y = _ri(rng, u0, u1), _ri(rng, v0, v1)
    smallest = max(3.0, 0.15 * size)  # smaller holes vanish between 256 sampled points
    if rng.random() < 0.7:
        return Circle(x, y, _ri(rng, smallest, max(smallest, size / 2)), subtract)
    return Rect(x, y, _ri(rng, 2 * smallest, max(2 * smallest, size)), _ri(rng, 2 * smallest, max(2 * smallest, size)),
                subtract)


def _place_features(rng, out: _Outline, count: int, size: float, taken=(), tries: int = 40) -> list:
    """Up to `count` holes inside the outline, clear of the edges and of each other."""
    placed: list = []
    for _ in range(tries):
        if len(placed) == count:
            break
        hole = _hole(rng, out, size)
        if _fits(out.poly, hole) and all(_apart(hole, h) for h in [*taken, *placed]):
            placed.append(hole)
            if len(placed) < count and rng.random() < 0.4:
                # mirror about the outline's centre line: symmetric hole pairs are common in parts
                u0, _, u1, _ = face_bounds(out.face)
                twin = type(hole)(**{**hole.__dict__, "x": u0 + u1 - hole.x})
                if twin != hole and _fits(out.poly, twin) and all(_apart(twin, h) for h in [*taken, *placed]):
                    placed.append(twin)
    return placed


def _simple_base(rng: np.random.Generator, kind: str, plane: str, A: int, B: int, H: int, outlines: dict):
    """First body at n in [0, H]; returns (body, footprint polygon, holes) for placing a boss."""
    if kind == "box":
        return BoxBody("XY", 0, 0, 0, A, B, H), _rect_polygon(A, B), []
    if kind == "cylinder":
        r = max(2, max(A, B) // 2)
        return CylinderBody(plane, 0, 0, 0, r, H), _circle_polygon(0, 0, r), []
    for _ in range(20):
        out = _outline(rng, A, B, outlines)
        want = int(rng.choice([0, 1, 2], p=[.3, .45, .25]))
        want = max(want, 1) if out.needs_hole else want
        size = 0.45 * min(A, B)
        holes = _place_features(rng, out, want, size)
        if len(holes) >= (1 if out.needs_hole else 0):
            faces = (out.face, *sorted(holes, key=lambda h: (h.x, h.y)))
            return SketchBody(plane, 0, faces, H), out.poly, holes
    # an outline too small for a hole: fall back to a box (always valid, canonical)
    return BoxBody("XY", 0, 0, 0, A, B, H), _rect_polygon(A, B), []


def _rect_polygon(A: float, B: float) -> list:
    return [(-A / 2, -B / 2), (A / 2, -B / 2), (A / 2, B / 2), (-A / 2, B / 2)]


def _simple_boss(rng: np.random.Generator, base, poly, holes, top: int, height: int):
    """A cylinder (or, on XY parts, a box) standing on the base's top face, inside it."""
    A = max(p[0] for p in poly) - min(p[0] for p in poly)
    B = max(p[1] for p in poly) - min(p[1] for p in poly)
    box_ok = base.plane == "XY"
    u0, v0 = min(p[0] for p in poly), min(p[1] for p in poly)
    for _ in range(40):
        size = rng.uniform(0.15, 0.7) * min(A, B)
        if isinstance(base, CylinderBody) and rng.random() < 0.5:
            x, y = base.x, base.y  # coaxial: a stepped shaft
        else:
            x, y = _ri(rng, u0, u0 + A), _ri(rng, v0, v0 + B)
        if box_ok and rng.random() < 0.4:
            feature = Rect(x, y, max(4, round(size)), max(4, round(size * rng.uniform(0.5, 1.5))))
        else:
            feature = Circle(x, y, max(2, round(size / 2)))
        if _fits(poly, feature) and all(_apart(feature, h) for h in holes):
            if isinstance(feature, Rect):
                return BoxBody("XY", top, x, y, feature.w, feature.h, height)
            return CylinderBody(base.plane, top, x, y, feature.r, height)
    return None


def _simple_part(rng: np.random.Generator, outlines: dict[str, float]) -> tuple:
    kind = str(rng.choice(["box", "cylinder", "plate"], p=[.17, .17, .66]))
    plane = "XY" if kind == "box" else str(rng.choice(PLANES))
    # a lone cylinder has one free size at extent 200 (a few hundred programs): mostly give it a boss
    two = rng.random() < (0.7 if kind == "cylinder" else 0.4)
    long_normal = kind != "plate" or rng.random() < 0.2
    A, B, H = _extents(rng, long_normal)
    if kind == "cylinder":
        A = B = _even(max(A, B))
    if not two:
        base, _, _ = _simple_base(rng, kind, plane, A, B, H, outlines)
        return (base,)
    top = max(2, round(H * rng.uniform(0.25, 0.7)))
    height = max(2, H - top)
    base, poly, holes = _simple_base(rng, kind, plane, A, B, top, outlines)
    boss = _simple_boss(rng, base, poly, holes, top, height)
    # no room for a boss: the base alone, at full height so the largest extent stays EXTENT
    return (replace(base, depth=H),) if boss is None else (base, boss)


# --- full -----------------------------------------------------------------------------------


def _star_loop(rng: np.random.Generator, cx: float, cy: float, radius: float, edges: int, subtract: bool) -> Loop:
    """A star-shaped loop (simple when its arcs are shallow), some edges bulged into arcs."""
    angles = np.sort(rng.uniform(0, 2 * math.pi, edges))
    # keep vertices from bunching up: at least a fifth of the even spacing apart
    angles = np.linspace(0, 2 * math.pi, edges, endpoint=False) * 0.6 + angles * 0.4
    radii = radius * rng.uniform(0.5, 1.0, edges)
    verts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii)]
    mids = []
    for i in range(edges):
        a, b = verts[i], verts[(i + 1) % edges]
        if rng.random() < 0.35:
            length = math.dist(a, b)
            nx, ny = (b[1] - a[1]) / max(length, 1e-9), (a[0] - b[0]) / max(length, 1e-9)  # outward for CCW
            sag = length * rng.uniform(0.1, 0.45) * (1 if rng.random() < 0.7 else -0.5)
            mids.append(((a[0] + b[0]) / 2 + nx * sag, (a[1] + b[1]) / 2 + ny * sag))
        else:
            mids.append(None)
    return Loop(tuple(verts), tuple(mids), subtract)


def _template_loop(rng: np.random.Generator, cx: float, cy: float, size: float, subtract: bool) -> Loop:
    A, B = max(8, round(size * rng.uniform(0.6, 1.0))), max(8, round(size * rng.uniform(0.3, 1.0)))
    for _ in range(10):
        out = _outline(rng, A, B, SIMPLE_OUTLINES["medium"])
        if isinstance(out.face, Loop):
            loop = out.face
            return Loop(tuple((x + cx - A / 2, y + cy - B / 2) for x, y in loop.vertices),
                        tuple(None if m is None else (m[0] + cx - A / 2, m[1] + cy - B / 2) for m in loop.mids),
                        subtract)
    return _star_loop(rng, cx, cy, size / 2, 4, subtract)


def _full_face(rng, cx, cy, size, subtract, budget):
    """One sketch face of about `size` centred near (cx, cy); uses at most `budget` primitives."""
    kind = rng.choice(["circle", "rect", "loop"], p=[.35, .3, .35]) if budget >= 3 else rng.choice(["circle", "rect"])
    if kind == "circle":
        return Circle(cx, cy, max(1.0, size / 2 * rng.uniform(0.4, 1.0)), subtract), 1
    if kind == "rect":
        return Rect(cx, cy, max(1.0, size * rng.uniform(0.3, 1.0)), max(1.0, size * rng.uniform(0.3, 1.0)), subtract), 1
    if rng.random() < 0.5:
        edges = int(rng.integers(3, min(budget, 8) + 1))
        return _star_loop(rng, cx, cy, size / 2, edges, subtract), edges
    loop = _template_loop(rng, cx, cy, size, subtract)
    if len(loop.vertices) > budget:
        return Circle(cx, cy, max(1.0, size / 2), subtract), 1
    return loop, len(loop.vertices)


def _full_sketch(rng: np.random.Generator, cx: float, cy: float, size: float) -> tuple:
    target = int(rng.integers(3, 9))  # primitives: circles, rects, and each loop edge
    first, used = _full_face(rng, cx, cy, size, False, target)
    faces = [first]
    u0, v0, u1, v1 = face_bounds(first)
    while used < target:
        subtract = rng.random() < 0.5
        # unions overlap the first face so the sketch stays one region; cuts sit inside it
        x, y = rng.uniform(u0, u1), rng.uniform(v0, v1)
        scale = rng.uniform(0.15, 0.5) if subtract else rng.uniform(0.2, 0.8)
        face, n = _full_face(rng, x, y, size * scale, subtract, target - used)
        faces.append(face)
        used += n
    return tuple(faces)


def _world_point(body, rng: np.random.Generator) -> list[float]:
    """A point inside a body's positive geometry (approximately): where the next body attaches."""
    if isinstance(body, SketchBody):
        face = next((f for f in body.faces if not f.subtract), body.faces[0])
        u0, v0, u1, v1 = face_bounds(face)
        local_u, local_v = (u0 + u1) / 2, (v0 + v1) / 2
    else:
        local_u, local_v = body.x, body.y
    n = body.origin + body.depth * rng.uniform(0.2, 0.8)
    point = [0.0, 0.0, 0.0]
    for value, axis in zip((local_u, local_v, n), PLANE_AXES[body.plane]):
        point[axis] = value
    return point


def _full_body(rng: np.random.Generator, anchor: list[float], size: float):
    plane = str(rng.choice(PLANES))
    iu, iv, inn = PLANE_AXES[plane]
    u, v, n = anchor[iu], anchor[iv], anchor[inn]
    depth = size * rng.uniform(0.1, 1.0) * (1 if rng.random() < 0.6 else -1)
    origin = n - depth * rng.uniform(0.1, 0.9)  # the body's span along n contains the anchor
    kind = rng.choice(["sketch", "box", "cylinder"], p=[.7, .15, .15])
    if kind == "box":
        return BoxBody(plane, origin, u, v, size * rng.uniform(0.1, 1.0), size * rng.uniform(0.1, 1.0), depth)
    if kind == "cylinder":
        return CylinderBody(plane, origin, u, v, size / 2 * rng.uniform(0.1, 1.0), depth)
    return SketchBody(plane, origin, _full_sketch(rng, u, v, size), depth)


def _quantize(part: tuple, factor: float) -> tuple | None:
    """Scale every number by `factor` and round to integers; None when something degenerates."""
    q = lambda value: round(value * factor)  # noqa: E731
    size = lambda value: max(1, round(value * factor))  # noqa: E731
    bodies = []
    for body in part:
        depth = q(body.depth)
        if depth == 0:
            return None
        if isinstance(body, BoxBody):
            bodies.append(BoxBody(body.plane, q(body.origin), q(body.x), q(body.y), size(body.w), size(body.h), depth))
        elif isinstance(body, CylinderBody):
            bodies.append(CylinderBody(body.plane, q(body.origin), q(body.x), q(body.y), size(body.r), depth))
        else:
            faces = []
            for face in body.faces:
                if isinstance(face, Circle):
                    faces.append(Circle(q(face.x), q(face.y), size(face.r), face.subtract))
                elif isinstance(face, Rect):
                    faces.append(Rect(q(face.x), q(face.y), size(face.w), size(face.h), face.subtract))
                else:
                    verts = [(q(x), q(y)) for x, y in face.vertices]
                    mids = [None if m is None else (q(m[0]), q(m[1])) for m in face.mids]
                    loop = _clean_loop(verts, mids, face.subtract)
                    if loop is None:
                        return None
                    faces.append(loop)
            bodies.append(SketchBody(body.plane, q(body.origin), tuple(faces), depth))
    return tuple(bodies)


def _clean_loop(verts, mids, subtract) -> Loop | None:
    """Canonical loop from rounded points, or None when rounding made it degenerate."""
    n = len(verts)
    if len(set(verts)) != n or n < 2:
        return None
    for i, mid in enumerate(mids):
        a, b = verts[i], verts[(i + 1) % n]
        if mid is not None:
            cross = (mid[0] - a[0]) * (b[1] - a[1]) - (mid[1] - a[1]) * (b[0] - a[0])
            if mid in (a, b) or abs(cross) < 1:  # collinear: CadQuery cannot make the arc
                mids[i] = None
    if all(m is None for m in mids) and n < 3:
        return None
    return canonical_loop(verts, mids, subtract)


def _full_part(rng: np.random.Generator) -> tuple:
    for _ in range(50):
        count = int(rng.choice([1, 2, 3], p=[.45, .4, .15]))
        bodies = [_full_body(rng, [0.0, 0.0, 0.0], 200.0)]
        for _ in range(count - 1):
            anchor = _world_point(bodies[int(rng.integers(len(bodies)))], rng)
            bodies.append(_full_body(rng, anchor, 200.0 * rng.uniform(0.2, 0.7)))
        lo, hi = part_bounds(tuple(bodies))
        factor = EXTENT / max(max(h - l for l, h in zip(lo, hi)), 1e-6)
        part = _quantize(tuple(bodies), factor)
        if part is not None:
            lo, hi = part_bounds(shift_part(part, centring_offset(part)))
            if max(hi) <= EXTENT / 2 and min(lo) >= -EXTENT / 2:
                return part
    # the loop above practically always succeeds; this keeps the function total
    return (BoxBody("XY", -50, 0, 0, 200, 100, 100),)


# --- statistics of program text ----------------------------------------------------------------

# operation -> regex over program text (the counts `cad-recode data stats` prints)
OPERATION_PATTERNS = {
    "circle": r"\.circle\(", "rect": r"\.rect\(", "segment": r"\.segment\(", "arc": r"\.arc\(",
    "box": r"\.box\(", "cylinder": r"\.cylinder\(", "extrude": r"\.extrude\(", "union": r"\.union\(",
    "mode='s'": r"mode='s'", "plane XY": r"Workplane\('XY'", "plane YZ": r"Workplane\('YZ'",
    "plane ZX": r"Workplane\('ZX'",
}
_OPERATION_RES = {name: re.compile(pattern) for name, pattern in OPERATION_PATTERNS.items()}


def count_operations(code: str) -> dict[str, int]:
    """How often each primitive and operation of `OPERATION_PATTERNS` occurs in a program."""
    return {name: len(pattern.findall(code)) for name, pattern in _OPERATION_RES.items()}


def normalized_code(code: str) -> str:
    """The code with all whitespace removed: the key of code-level deduplication."""
    return "".join(code.split())


# --- datasets -----------------------------------------------------------------------------------------


@dataclass
class GenerateReport:
    """What `generate_dataset` made. `failures` maps a reason to how many programs it dropped."""

    out_dir: str
    seed: int
    complexity: str
    counts: dict[str, int]
    attempts: int
    valid: int
    failures: dict[str, int] = field(default_factory=dict)
    duplicates_code: int = 0
    duplicates_geometry: int = 0
    seconds: float = 0.0

    @property
    def failure_rate(self) -> float:
        """Share of executed programs that did not yield one valid solid."""
        executed = self.attempts - self.duplicates_code
        return sum(self.failures.values()) / executed if executed else 0.0

    @property
    def num(self) -> int:
        return sum(self.counts.values())


class UniquePrograms:
    """Remembers what was kept, to drop programs that repeat one by code or by geometry."""

    def __init__(self):
        self._codes: set[str] = set()
        self._shapes: set[tuple] = set()
        self.duplicates_code = 0
        self.duplicates_geometry = 0

    def new_code(self, code: str) -> bool:
        """True (and remembered) when no earlier program had this code, whitespace aside."""
        key = normalized_code(code)
        if key in self._codes:
            self.duplicates_code += 1
            return False
        self._codes.add(key)
        return True

    def new_shape(self, result) -> bool:
        """True (and remembered) when no earlier solid had this geometric key."""
        key = geometric_key(result)
        if key in self._shapes:
            self.duplicates_geometry += 1
            return False
        self._shapes.add(key)
        return True


def generate_dataset(out_dir, num: int, *, seed: int = 0, workers: int = 1, complexity: str = "simple",
                     val_fraction: float = 0.05, test_fraction: float = 0.05, batch_size: int = 1000,
                     overwrite: bool = False, progress: bool = True, max_attempts: int | None = None,
                     timeout: float = 10.0, sandbox=None, execute: bool = True) -> GenerateReport:
    """Write `num` valid, unique programs to `out_dir` in the public layout and return a report.

    Attempt i draws from ``program_rng(seed, i)`` and runs in the sandbox; a program
    is kept when it yields one valid solid and is new by normalized code and by
    geometric key (volume, area, bounding box, rounded). Drawing stops at `num`
    kept programs, or fails with a UsageError after `max_attempts` (default
    10 * num + 100), writing nothing. Kept programs are split by a permutation
    fixed by `seed` into test, val and train (``train/batch_XX/N.py``, `batch_size`
    per folder) and written with ``manifest.json`` to a temporary folder that is
    renamed into place at the end. An existing dataset in `out_dir` is refused
    unless `overwrite`. `sandbox`: an open `Sandbox` to use instead of starting
    one with `workers` processes and `timeout` seconds per program.

    ``execute=False`` skips the sandbox: programs are kept when new by code. That
    suits ``simple``, whose programs are valid and spelled one way by construction
    (6507 of 6507 ran to one valid solid, none a geometric duplicate, seed 0), and
    halves the CPU default's data time: ``data prepare`` runs every program anyway
    and drops and lists any that fail.
    """
    from cad_recode.data import layout
    from cad_recode.geometry.sandbox import Sandbox

    if complexity not in COMPLEXITIES:
        raise UsageError(f"unknown complexity {complexity!r}; use one of: {', '.join(COMPLEXITIES)}")
    for name, value in (("num", num), ("workers", workers), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    counts = layout.split_counts(num, val_fraction, test_fraction)
    out_dir = Path(out_dir)
    layout.check_output_dir(out_dir, overwrite)
    max_attempts = 10 * num + 100 if max_attempts is None else max_attempts

    start = time.perf_counter()
    kept: list[str] = []
    unique = UniquePrograms()
    report = GenerateReport(str(out_dir), seed, complexity, counts, 0, 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num, desc=f"generating {complexity} programs", unit="prog")
    own_sandbox = sandbox is None and execute
    sandbox = Sandbox(workers=workers, timeout=timeout) if own_sandbox else sandbox
    try:
        while len(kept) < num and report.attempts < max_attempts:
            # a round a little larger than what is missing, so few rounds are needed
            want = min(max_attempts - report.attempts, max(2 * workers, int((num - len(kept)) * 1.1) + 1))
            drawn = [generate_program(program_rng(seed, report.attempts + i), complexity) for i in range(want)]
            report.attempts += want
            fresh = [code for code in drawn if unique.new_code(code)]
            if not execute:
                report.valid += len(fresh)
                added = fresh[: num - len(kept)]
                kept += added
                if bar is not None:
                    bar.update(len(added))
                continue
            results = sandbox.map(fresh)
            if results and all(r.reason.startswith("sandbox workers fail to start") for r in results):
                raise CadRecodeError(f"cannot generate: {results[0].reason}")
            for code, result in zip(fresh, results):
                reason = solid_problem(result)
                if reason:
                    report.failures[reason] = report.failures.get(reason, 0) + 1
                    continue
                report.valid += 1
                if len(kept) < num and unique.new_shape(result):
                    kept.append(code)
                    if bar is not None:
                        bar.update(1)
    finally:
        if own_sandbox:
            sandbox.close()
        if bar is not None:
            bar.close()
    report.duplicates_code, report.duplicates_geometry = unique.duplicates_code, unique.duplicates_geometry
    if len(kept) < num:
        raise UsageError(
            f"only {len(kept)} of {num} valid unique {complexity} programs after {report.attempts} attempts "
            f"(failures: {report.failures or 'none'}); ask for fewer programs or use --complexity full"
        )
    report.seconds = time.perf_counter() - start
    manifest = {
        "format": layout.MANIFEST_FORMAT, "generator_version": GENERATOR_VERSION, "seed": seed,
        "complexity": complexity, "num": num, "counts": counts, "batch_size": batch_size, "executed": execute,
        "val_fraction": val_fraction, "test_fraction": test_fraction, "attempts": report.attempts,
        "valid": report.valid, "failures": report.failures, "failure_rate": round(report.failure_rate, 6),
        "duplicates": {"code": report.duplicates_code, "geometry": report.duplicates_geometry},
        "seconds": round(report.seconds, 3),
    }
    layout.write_dataset(out_dir, layout.assign_splits(kept, counts, seed), manifest,
                         batch_size=batch_size, overwrite=overwrite)
    return report


def solid_problem(result) -> str:
    """'' when a sandbox result is exactly one valid solid, else a short reason (for the report)."""
    if not result.ok:
        return result.status.value
    if result.vertices is None or result.faces is None or len(result.faces) == 0:
        return "no_mesh"
    import trimesh

    mesh = trimesh.Trimesh(result.vertices, result.faces, process=True)  # merges shared vertices
    if mesh.body_count != 1:
        return "several_solids"
    return ""


def geometric_key(result) -> tuple:
    """Volume, area and bounding box, rounded: equal for the same shape written differently."""
    rounded = lambda x: float(f"{x:.4g}")  # noqa: E731
    return (rounded(result.volume), rounded(result.area),
            *(round(c) for c in result.bbox_min), *(round(c) for c in result.bbox_max))
