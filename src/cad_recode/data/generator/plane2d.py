"""Local 2D helpers of the generator: integer draws, containment and clearance tests, part sizes."""

from __future__ import annotations

import math

import numpy as np

from cad_recode.data.cadcode import Circle, face_bounds

EXTENT = 200  # largest extent of every part, as in the public data ([-100, 100])
MARGIN = 4  # smallest wall between a hole or boss and an outline edge, in program units


def ri(rng: np.random.Generator, lo: float, hi: float) -> int:
    """Integer uniform in [lo, hi] (bounds rounded inwards, never empty)."""
    lo_i, hi_i = math.ceil(lo), math.floor(hi)
    return int(rng.integers(lo_i, max(lo_i, hi_i) + 1))


def even(value: float, lo: int = 2) -> int:
    """`value` rounded down to an even integer, at least `lo`: centres of even sizes stay integers."""
    return max(lo, int(value) // 2 * 2)


def inside(poly, p) -> bool:
    """Even-odd test of point `p` against polygon `poly`."""
    x, y = p
    result = False
    n = len(poly)
    for i in range(n):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            result = not result
    return result


def segment_distance(p, a, b) -> float:
    """Distance from point `p` to segment a-b."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / length2))
    return math.hypot(p[0] - ax - t * dx, p[1] - ay - t * dy)


def feature_probe(feature) -> list:
    """Points on a circle/rect feature's boundary, for containment tests."""
    if isinstance(feature, Circle):
        return [(feature.x + feature.r * math.cos(a), feature.y + feature.r * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]
    hw, hh = feature.w / 2, feature.h / 2
    return [(feature.x + sx * hw, feature.y + sy * hh) for sx, sy in
            ((-1, -1), (1, -1), (1, 1), (-1, 1), (0, -1), (1, 0), (0, 1), (-1, 0))]


def fits(poly, feature, margin: float = MARGIN) -> bool:
    """True when `feature` lies inside polygon `poly` with `margin` to spare on every side."""
    probe = feature_probe(feature)
    if not all(inside(poly, p) for p in probe):
        return False
    n = len(poly)
    if any(segment_distance(p, poly[i], poly[(i + 1) % n]) < margin for p in probe for i in range(n)):
        return False
    u0, v0, u1, v1 = face_bounds(feature)
    # a reflex vertex poking into the feature (L, U, T outlines)
    return not any(u0 - margin < x < u1 + margin and v0 - margin < y < v1 + margin for x, y in poly)


def apart(a, b, margin: float = MARGIN) -> bool:
    """True when the bounding boxes of two features are at least `margin` apart."""
    a0, a1, a2, a3 = face_bounds(a)
    b0, b1, b2, b3 = face_bounds(b)
    return a2 + margin <= b0 or b2 + margin <= a0 or a3 + margin <= b1 or b3 + margin <= a1


def circle_polygon(x, y, r, n=32):
    """Inscribed polygon: a conservative stand-in for a circle in containment tests."""
    return [(x + r * math.cos(t), y + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, n, endpoint=False)]


def rect_polygon(A: float, B: float) -> list:
    """The centred A x B rectangle as a polygon."""
    return [(-A / 2, -B / 2), (A / 2, -B / 2), (A / 2, B / 2), (-A / 2, B / 2)]


def extents(rng: np.random.Generator, long_normal: bool) -> tuple[int, int, int]:
    """(A, B, H) with max == EXTENT: in-plane sizes and the size along the normal."""
    a, b = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
    h = rng.uniform(0.3, 1.0) if long_normal else rng.uniform(0.04, 0.45)
    top = max(a, b, h)
    return tuple(max(4, round(EXTENT * s / top)) for s in (a, b, h))
