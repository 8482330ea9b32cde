"""Multi-body families of the ``broad`` level: stacked and unioned bodies, pockets, through-cuts.

Spelling rules (one per geometry): the base comes first; every body stands on a plane
whose normal is its own axis; a boss or pocket stands on the base's plane, a cross rod
or cross cut on the plane normal to its direction; a cut is ``.cut(<body>)`` of a box or
cylinder that grows from its origin (positive depth). Pockets end flush with the top
face; through-cuts span the base exactly, so nothing leaves the frame.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cad_recode.data.cadcode import PLANE_AXES, PLANES, BoxBody, Circle, CylinderBody, Rect
from cad_recode.data.generator.bodies import box_part, cylinder_part, outline_part, plate_part
from cad_recode.data.generator.plane2d import EXTENT, MARGIN, even, extents, ri
from cad_recode.data.generator.simple import simple_boss

_BASES = {"box": box_part, "cylinder": cylinder_part, "plate": plate_part, "outline": outline_part}


def _base(rng: np.random.Generator, plane: str, kinds: dict[str, float]):
    kind = str(rng.choice(list(kinds), p=list(kinds.values())))
    return _BASES[kind](rng, plane)


def _feature(body) -> Circle | Rect:
    """The footprint of a box or cylinder on its plane (to keep later features apart from it)."""
    if isinstance(body, CylinderBody):
        return Circle(body.x, body.y, body.r)
    return Rect(body.x, body.y, body.w, body.h)


def _split_height(rng: np.random.Generator, base) -> tuple[object, int, int]:
    """(base, top, height): a thin base keeps its thickness `top` and gains a boss of `height` above
    it; a thick one is cut to a lower `top` so base and boss together keep its height."""
    total = max(8, round(base.depth))
    if total <= EXTENT // 2:
        return base, total, ri(rng, max(8, 0.3 * EXTENT - total), EXTENT - total)
    top = round(total * rng.uniform(0.25, 0.7))
    return replace(base, depth=top), top, total - top


def stacked_part(rng: np.random.Generator, plane: str):
    """A boss standing on a base (stepped shafts, studs on plates), or a rod crossing a box."""
    if rng.random() < 0.35:
        return cross_rod_part(rng, plane)
    for _ in range(20):  # a base with no room for a boss (2 % of them) is drawn again
        part, poly, holes = _base(rng, plane, {"box": .3, "cylinder": .3, "plate": .2, "outline": .2})
        base, top, height = _split_height(rng, part[0])
        boss = simple_boss(rng, base, poly, holes, top, height, box_ok=True)
        if boss is not None:
            return (base, boss), poly, holes
    return cross_rod_part(rng, plane)


def pocket_part(rng: np.random.Generator, plane: str):
    """1-2 blind pockets (round or rectangular) sunk into the top face of a base."""
    while True:  # a base with no room for a pocket is drawn again (rare: pockets are small)
        part, poly, holes = _base(rng, plane, {"box": .4, "cylinder": .25, "outline": .35})
        base = part[0]
        if base.depth < 12:
            base = replace(base, depth=ri(rng, 12, 40))
        bodies, taken = [base], list(holes)
        for _ in range(1 if rng.random() < 0.6 else 2):
            depth = ri(rng, max(3, 0.25 * base.depth), min(base.depth - 4, 0.75 * base.depth))
            pocket = simple_boss(rng, base, poly, taken, base.depth - depth, depth, box_ok=True)
            if pocket is None:
                break
            bodies.append(replace(pocket, cut=True))
            taken.append(_feature(pocket))
        if len(bodies) > 1:
            return tuple(bodies), poly, holes


def _plane_normal_to(axis: int) -> str:
    return next(p for p in PLANES if PLANE_AXES[p][2] == axis)


def _cross_body(kind: str, axis: int, start: float, length: float, centre: list, sizes: list, cut: bool):
    """A box or cylinder along world `axis` from `start`, its cross-section centred at `centre` (world)."""
    plane = _plane_normal_to(axis)
    iu, iv, _ = PLANE_AXES[plane]
    if kind == "cylinder":
        return CylinderBody(plane, start, centre[iu], centre[iv], sizes[iu] / 2, length, cut)
    return BoxBody(plane, start, centre[iu], centre[iv], sizes[iu], sizes[iv], length, cut)


def cross_rod_part(rng: np.random.Generator, plane: str):
    """A box with a cylinder through it, sticking out of one or both sides."""
    A, B, H = (even(s, 8) for s in extents(rng, rng.random() < 0.5))
    iu, iv, inn = PLANE_AXES[plane]
    along, other = (iu, iv) if rng.random() < 0.5 else (iv, iu)
    half = {iu: A / 2, iv: B / 2}
    if 2 * half[along] > EXTENT - 4 * MARGIN:  # leave room to stick out
        half[along] = even(2 * half[along] * rng.uniform(0.4, 0.8), 8) / 2
    size_n, size_t = H, 2 * half[other]
    r = ri(rng, max(2, 0.1 * min(size_n, size_t)), max(2, 0.4 * min(size_n, size_t) - MARGIN))
    centre = [0.0, 0.0, 0.0]
    centre[other] = ri(rng, -size_t / 2 + r + MARGIN, size_t / 2 - r - MARGIN)
    centre[inn] = ri(rng, r + MARGIN, size_n - r - MARGIN)
    both = rng.random() < 0.6
    room = EXTENT - 2 * half[along]
    before = ri(rng, MARGIN, room / 2) if both else 0
    # the rod sets the largest extent when the box no longer does
    after = room - before if max(size_t, size_n) < EXTENT else ri(rng, max(MARGIN, room / 4), room - before)
    sizes = [2 * r] * 3
    box = BoxBody(plane, 0, 0, 0, 2 * half[iu], 2 * half[iv], H)
    rod = _cross_body("cylinder", along, -half[along] - before, 2 * half[along] + before + after, centre, sizes, False)
    return (box, rod), None, []


def _cut_section(rng: np.random.Generator, size_t: float, size_n: float):
    """(kind, t centre, n centre, t size, n size) of one cross cut in a (size_t x [0, size_n]) section."""
    kind = str(rng.choice(["hole", "window", "notch"], p=[.5, .2, .3]))
    if kind == "hole":
        r = ri(rng, max(3, 0.1 * min(size_t, size_n)), max(3, 0.4 * min(size_t, size_n) - MARGIN))
        return "cylinder", ri(rng, -size_t / 2 + r + MARGIN, size_t / 2 - r - MARGIN), \
            ri(rng, r + MARGIN, size_n - r - MARGIN), 2 * r, 2 * r
    w = even(ri(rng, 0.15 * size_t, 0.6 * size_t), 6)
    t = ri(rng, -size_t / 2 + w / 2 + MARGIN, size_t / 2 - w / 2 - MARGIN)
    if kind == "notch":  # open at the top face
        d = ri(rng, max(3, 0.2 * size_n), max(3, 0.6 * size_n))
        return "box", t, size_n - d / 2, w, d
    h = even(ri(rng, 0.2 * size_n, max(6, 0.6 * size_n - 2 * MARGIN)), 6)
    return "box", t, ri(rng, h / 2 + MARGIN, size_n - h / 2 - MARGIN), w, h


def _cuts_clash(a, b) -> bool:
    """True when two cross cuts would meet (then their faces might touch tangentially)."""
    (axis_a, lo_a, hi_a, n_a), (axis_b, lo_b, hi_b, n_b) = a, b
    apart_n = n_a[1] + MARGIN <= n_b[0] or n_b[1] + MARGIN <= n_a[0]
    if axis_a != axis_b:
        return not apart_n
    return not (apart_n or hi_a + MARGIN <= lo_b or hi_b + MARGIN <= lo_a)


def through_cut_part(rng: np.random.Generator, plane: str):
    """A box with 1-2 cuts straight through it across its axis: round holes, windows, top notches."""
    A, B, H = (even(s, 24) for s in extents(rng, rng.random() < 0.6))
    iu, iv, inn = PLANE_AXES[plane]
    sizes = {iu: A, iv: B}
    bodies, spans = [BoxBody(plane, 0, 0, 0, A, B, H)], []
    for _ in range(1 if rng.random() < 0.6 else 2):
        along = iu if rng.random() < 0.5 else iv
        other = iv if along == iu else iu
        kind, t, n, wt, wn = _cut_section(rng, sizes[other], H)
        span = (along, t - wt / 2, t + wt / 2, (n - wn / 2, n + wn / 2))
        if any(_cuts_clash(span, s) for s in spans):
            continue
        centre, extent = [0.0] * 3, [0.0] * 3
        centre[other], centre[inn], extent[other], extent[inn] = t, n, wt, wn
        bodies.append(_cross_body(kind, along, -sizes[along] / 2, sizes[along], centre, extent, True))
        spans.append(span)
    return tuple(bodies), None, []
