"""The ``simple`` and ``medium`` levels: one plate, box or cylinder, optionally with a boss on top."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cad_recode.data.cadcode import PLANES, BoxBody, Circle, CylinderBody, Rect, SketchBody
from cad_recode.data.generator.outlines import draw_outline, place_features
from cad_recode.data.generator.plane2d import apart, circle_polygon, even, extents, fits, rect_polygon, ri


def simple_base(rng: np.random.Generator, kind: str, plane: str, A: int, B: int, H: int, outlines: dict):
    """First body at n in [0, H]; returns (body, footprint polygon, holes) for placing a boss."""
    if kind == "box":
        return BoxBody("XY", 0, 0, 0, A, B, H), rect_polygon(A, B), []
    if kind == "cylinder":
        r = max(2, max(A, B) // 2)
        return CylinderBody(plane, 0, 0, 0, r, H), circle_polygon(0, 0, r), []
    for _ in range(20):
        out = draw_outline(rng, A, B, outlines)
        want = int(rng.choice([0, 1, 2], p=[.3, .45, .25]))
        want = max(want, 1) if out.needs_hole else want
        size = 0.45 * min(A, B)
        holes = place_features(rng, out, want, size)
        if len(holes) >= (1 if out.needs_hole else 0):
            faces = (out.face, *sorted(holes, key=lambda h: (h.x, h.y)))
            return SketchBody(plane, 0, faces, H), out.poly, holes
    # an outline too small for a hole: fall back to a box (always valid, canonical)
    return BoxBody("XY", 0, 0, 0, A, B, H), rect_polygon(A, B), []


def simple_boss(rng: np.random.Generator, base, poly, holes, top: int, height: int, box_ok: bool | None = None):
    """A cylinder (or, on XY parts, a box) standing on the base's top face, inside it; None if none fits."""
    A = max(p[0] for p in poly) - min(p[0] for p in poly)
    B = max(p[1] for p in poly) - min(p[1] for p in poly)
    box_ok = base.plane == "XY" if box_ok is None else box_ok
    u0, v0 = min(p[0] for p in poly), min(p[1] for p in poly)
    for _ in range(40):
        size = rng.uniform(0.15, 0.7) * min(A, B)
        if isinstance(base, CylinderBody) and rng.random() < 0.5:
            x, y = base.x, base.y  # coaxial: a stepped shaft
        else:
            x, y = ri(rng, u0, u0 + A), ri(rng, v0, v0 + B)
        if box_ok and rng.random() < 0.4:
            feature = Rect(x, y, max(4, round(size)), max(4, round(size * rng.uniform(0.5, 1.5))))
        else:
            feature = Circle(x, y, max(2, round(size / 2)))
        if fits(poly, feature) and all(apart(feature, h) for h in holes):
            if isinstance(feature, Rect):
                return BoxBody(base.plane, top, x, y, feature.w, feature.h, height)
            return CylinderBody(base.plane, top, x, y, feature.r, height)
    return None


def simple_part(rng: np.random.Generator, outlines: dict[str, float]) -> tuple:
    """A part of the ``simple`` (or, with the medium outlines, ``medium``) level, not yet centred."""
    kind = str(rng.choice(["box", "cylinder", "plate"], p=[.17, .17, .66]))
    plane = "XY" if kind == "box" else str(rng.choice(PLANES))
    # a lone cylinder has one free size at extent 200 (a few hundred programs): mostly give it a boss
    two = rng.random() < (0.7 if kind == "cylinder" else 0.4)
    long_normal = kind != "plate" or rng.random() < 0.2
    A, B, H = extents(rng, long_normal)
    if kind == "cylinder":
        A = B = even(max(A, B))
    if not two:
        base, _, _ = simple_base(rng, kind, plane, A, B, H, outlines)
        return (base,)
    top = max(2, round(H * rng.uniform(0.25, 0.7)))
    height = max(2, H - top)
    base, poly, holes = simple_base(rng, kind, plane, A, B, top, outlines)
    boss = simple_boss(rng, base, poly, holes, top, height)
    # no room for a boss: the base alone, at full height so the largest extent stays EXTENT
    return (replace(base, depth=H),) if boss is None else (base, boss)
