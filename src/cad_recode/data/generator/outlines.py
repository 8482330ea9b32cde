"""Plate outlines (rectangle, circle, and loops of segments and arcs) and the holes placed inside them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cad_recode.data.cadcode import Circle, Rect, canonical_loop, face_bounds, loop_outline
from cad_recode.data.generator.plane2d import apart, circle_polygon, even, fits, ri


@dataclass
class Outline:
    """A plate outline in local coordinates [0, A] x [0, B], with its containment polygon."""

    face: object
    poly: list
    needs_hole: bool  # a bare rectangle / circle would be a box / cylinder: not canonical


# plate outlines and how often each is drawn, per level (the order fixes the random stream)
SIMPLE_OUTLINES = {
    "simple": {"rect": .57, "circle": .43},
    "medium": {"rect": .16, "circle": .12, "slot": .1, "dshape": .08, "chamfer": .1, "trapezoid": .08,
               "triangle": .06, "L": .1, "U": .07, "T": .06, "hexagon": .07},
}
# the drawn outlines alone (the `outline` family of the broad level)
_DRAWN = {name: p for name, p in SIMPLE_OUTLINES["medium"].items() if name not in ("rect", "circle")}
DRAWN_OUTLINES = {name: p / sum(_DRAWN.values()) for name, p in _DRAWN.items()}


def _chamfer_vertices(rng: np.random.Generator, A: int, B: int) -> list:
    c = ri(rng, 0.1 * min(A, B), 0.35 * min(A, B))
    corners = rng.random(4) < 0.6
    corners[rng.integers(4)] = True
    verts = []
    for (x, y), (dx1, dy1), (dx2, dy2), cut in zip(
        [(0, 0), (A, 0), (A, B), (0, B)], [(0, 1), (-1, 0), (0, -1), (1, 0)], [(1, 0), (0, 1), (-1, 0), (0, -1)],
        corners,
    ):
        verts += [(x + c * dx1, y + c * dy1), (x + c * dx2, y + c * dy2)] if cut else [(x, y)]
    return verts


def _drawn(rng: np.random.Generator, kind: str, A: int, B: int):
    """(vertices, arc mids or None, A, B) of one drawn template in [0, A] x [0, B]."""
    if kind == "slot":  # obround: two semicircular ends
        A, B = max(A, B), even(min(A, B) * rng.uniform(0.35, 0.9), 4)
        r = B // 2
        return [(r, 0), (A - r, 0), (A - r, B), (r, B)], [None, (A, r), None, (0, r)], A, B
    if kind == "dshape":  # one side an outward arc no deeper than a semicircle
        B = even(B, 6)
        s = ri(rng, 0.2 * B, 0.5 * B)
        A = max(A, s + 6)
        return [(0, 0), (A - s, 0), (A - s, B), (0, B)], [None, (A, B // 2), None, None], A, B
    if kind == "chamfer":
        return _chamfer_vertices(rng, A, B), None, A, B
    if kind == "trapezoid":
        t1, t2 = ri(rng, 0, 0.4 * A), ri(rng, 0, 0.4 * A)
        t1 = t1 if t1 + t2 > 0 else max(1, A // 5)
        return [(0, 0), (A, 0), (A - t2, B), (t1, B)], None, A, B
    if kind == "triangle":
        return [(0, 0), (A, 0), (ri(rng, 0, A), B)], None, A, B
    if kind == "L":
        w, h = ri(rng, 0.25 * A, 0.6 * A), ri(rng, 0.25 * B, 0.6 * B)
        return [(0, 0), (A, 0), (A, h), (w, h), (w, B), (0, B)], None, A, B
    if kind == "U":
        w, d = ri(rng, 0.15 * A, 0.35 * A), ri(rng, 0.2 * B, 0.7 * B)
        return [(0, 0), (A, 0), (A, B), (A - w, B), (A - w, d), (w, d), (w, B), (0, B)], None, A, B
    if kind == "T":
        w, h = ri(rng, 0.15 * A, 0.35 * A), ri(rng, 0.25 * B, 0.6 * B)
        return [(w, 0), (A - w, 0), (A - w, h), (A, h), (A, B), (0, B), (0, h), (w, h)], None, A, B
    # hexagon with integer corners
    A, B = max(8, A // 4 * 4), even(B)
    return [(A // 4, 0), (3 * A // 4, 0), (A, B // 2), (3 * A // 4, B), (A // 4, B), (0, B // 2)], None, A, B


def draw_outline(rng: np.random.Generator, A: int, B: int, outlines: dict[str, float]) -> Outline:
    """One outline drawn from `outlines` (name -> probability), about A x B."""
    kind = rng.choice(list(outlines), p=list(outlines.values()))
    if kind == "rect":
        A, B = even(A), even(B)
        poly = [(0, 0), (A, 0), (A, B), (0, B)]
        return Outline(Rect(A // 2, B // 2, A, B), poly, True)
    if kind == "circle":
        r = even(max(A, B)) // 2
        return Outline(Circle(r, r, r), circle_polygon(r, r, r), True)
    verts, mids, A, B = _drawn(rng, kind, A, B)
    verts, mids = symmetry(rng, verts, mids, A, B)
    loop = canonical_loop(verts, mids)
    return Outline(loop, loop_outline(loop) if mids else list(loop.vertices), False)


def symmetry(rng: np.random.Generator, verts, mids, A: int, B: int):
    """One of the 8 symmetries of the [0, A] x [0, B] box: templates appear in every orientation."""
    swap, flip_u, flip_v = rng.random(3) < 0.5
    W, H = (B, A) if swap else (A, B)

    def move(p):
        if p is None:
            return None
        x, y = (p[1], p[0]) if swap else p
        return (W - x if flip_u else x, H - y if flip_v else y)

    return [move(v) for v in verts], None if mids is None else [move(m) for m in mids]


def draw_hole(rng: np.random.Generator, out: Outline, size: float, subtract: bool = True):
    """A round (70 %) or rectangular hole of about `size` somewhere in the outline's bounds."""
    u0, v0, u1, v1 = face_bounds(out.face)
    x, y = ri(rng, u0, u1), ri(rng, v0, v1)
    smallest = max(3.0, 0.15 * size)  # smaller holes vanish between 256 sampled points
    if rng.random() < 0.7:
        return Circle(x, y, ri(rng, smallest, max(smallest, size / 2)), subtract)
    return Rect(x, y, ri(rng, 2 * smallest, max(2 * smallest, size)), ri(rng, 2 * smallest, max(2 * smallest, size)),
                subtract)


def place_features(rng, out: Outline, count: int, size: float, taken=(), tries: int = 40) -> list:
    """Up to `count` holes inside the outline, clear of the edges and of each other."""
    placed: list = []
    for _ in range(tries):
        if len(placed) == count:
            break
        hole = draw_hole(rng, out, size)
        if fits(out.poly, hole) and all(apart(hole, h) for h in [*taken, *placed]):
            placed.append(hole)
            if len(placed) < count and rng.random() < 0.4:
                # mirror about the outline's centre line: symmetric hole pairs are common in parts
                u0, _, u1, _ = face_bounds(out.face)
                twin = type(hole)(**{**hole.__dict__, "x": u0 + u1 - hole.x})
                if twin != hole and fits(out.poly, twin) and all(apart(twin, h) for h in [*taken, *placed]):
                    placed.append(twin)
    return placed
