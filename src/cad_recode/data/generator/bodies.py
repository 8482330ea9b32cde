"""Single-body families of the ``broad`` level: box, cylinder, plate, outline, ring.

Each builder takes the part's plane and returns ``(part, footprint polygon, holes)``:
the part a tuple of bodies standing at n in [0, H] on that plane (centred later),
the polygon and holes in the same local (u, v) frame, so a boss, pocket or cut can
be placed on the top face. One spelling per geometry:

* a lone box sits on the plane normal to its thinnest side (XY, then YZ, then ZX on a tie
  cannot happen: the thinnest side is made unique); its sizes are even, so it is centred on
  integer coordinates;
* a cylinder sits on the plane normal to its axis;
* a ring or tube is its outer circle (or rectangle) then its concentric bore with ``mode='s'``,
  then any bolt holes in (u, v) order.
"""

from __future__ import annotations

import numpy as np

from cad_recode.data.cadcode import BoxBody, Circle, CylinderBody, Rect, SketchBody
from cad_recode.data.generator.outlines import DRAWN_OUTLINES, SIMPLE_OUTLINES
from cad_recode.data.generator.plane2d import EXTENT, MARGIN, circle_polygon, even, extents, rect_polygon, ri
from cad_recode.data.generator.simple import simple_base

THIN_WALL = 3  # thinnest ring wall: thinner ones vanish between 256 sampled points


def box_sizes(rng: np.random.Generator) -> tuple[int, int, int]:
    """(A, B, H), all even, largest EXTENT, H the unique smallest: the plane is normal to the thinnest side."""
    sizes = sorted(even(s, 4) for s in extents(rng, rng.random() < 0.5))
    if sizes[0] == sizes[1]:
        sizes[0] = sizes[0] - 2 if sizes[0] > 4 else sizes[0]
        sizes[1] = sizes[1] + 2 if sizes[0] == sizes[1] else sizes[1]
    sizes[2] = EXTENT
    thin, a, b = sizes
    return (a, b, thin) if rng.random() < 0.5 else (b, a, thin)


def box_part(rng: np.random.Generator, plane: str):
    A, B, H = box_sizes(rng)
    return (BoxBody(plane, 0, 0, 0, A, B, H),), rect_polygon(A, B), []


def cylinder_part(rng: np.random.Generator, plane: str):
    A, B, H = extents(rng, rng.random() < 0.5)
    r = even(max(A, B)) // 2
    return (CylinderBody(plane, 0, 0, 0, r, H),), circle_polygon(0, 0, r), []


def sketch_part(rng: np.random.Generator, plane: str, outlines: dict[str, float], long_normal: float = 0.2):
    """A plate: an outline from `outlines` with its holes (the ``simple`` level's plate)."""
    A, B, H = extents(rng, rng.random() < long_normal)
    base, poly, holes = simple_base(rng, "plate", plane, A, B, H, outlines)
    if isinstance(base, BoxBody):  # no hole fitted: the plain box, on the part's plane
        base = BoxBody(plane, 0, 0, 0, even(A, 4), even(B, 4), H)
        poly = rect_polygon(base.w, base.h)
    return (base,), poly, holes


def plate_part(rng: np.random.Generator, plane: str):
    return sketch_part(rng, plane, SIMPLE_OUTLINES["simple"])


def outline_part(rng: np.random.Generator, plane: str):
    return sketch_part(rng, plane, DRAWN_OUTLINES)


def _bolt_holes(rng: np.random.Generator, outer: int, bore: int) -> list:
    """2 or 4 holes on the ring's middle circle, on the u and v axes (integer centres)."""
    middle = (outer + bore) // 2
    r = ri(rng, max(2, (outer - bore) * 0.15), (outer - bore) / 2 - THIN_WALL)
    spots = [(-middle, 0), (middle, 0)] + ([(0, -middle), (0, middle)] if rng.random() < 0.5 else [])
    return sorted((Circle(x, y, r, True) for x, y in spots), key=lambda c: (c.x, c.y))


def ring_part(rng: np.random.Generator, plane: str):
    """A washer, ring or tube (round or rectangular), sometimes with bolt holes in its wall."""
    A, B, H = extents(rng, rng.random() < 0.5)
    if rng.random() < 0.25:  # rectangular tube
        A, B = even(A, 12), even(B, 12)
        wall = even(ri(rng, 4, max(4, 0.3 * min(A, B))), 4)
        faces = (Rect(0, 0, A, B), Rect(0, 0, A - 2 * wall, B - 2 * wall, True))
        return (SketchBody(plane, 0, faces, H),), rect_polygon(A, B), [faces[1]]
    outer = max(8, even(max(A, B)) // 2)
    bore = ri(rng, 0.3 * outer, outer - THIN_WALL)
    faces = [Circle(0, 0, outer), Circle(0, 0, bore, True)]
    if outer - bore >= 4 * THIN_WALL + 2 * MARGIN and rng.random() < 0.35:
        faces += _bolt_holes(rng, outer, bore)
    return (SketchBody(plane, 0, tuple(faces), H),), circle_polygon(0, 0, outer), faces[1:]
