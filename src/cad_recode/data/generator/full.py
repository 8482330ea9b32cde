"""The ``full`` level: the published recipe, 1-3 bodies of 3-8 combined sketch primitives on any plane."""

from __future__ import annotations

import math

import numpy as np

from cad_recode.data.cadcode import (
    PLANE_AXES,
    PLANES,
    BoxBody,
    Circle,
    CylinderBody,
    Loop,
    Rect,
    SketchBody,
    canonical_loop,
    centring_offset,
    face_bounds,
    part_bounds,
    shift_part,
)
from cad_recode.data.generator.outlines import SIMPLE_OUTLINES, draw_outline
from cad_recode.data.generator.plane2d import EXTENT


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
        out = draw_outline(rng, A, B, SIMPLE_OUTLINES["medium"])
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
        last = faces[-1]
        if isinstance(last, Circle) and not last.subtract and used + 1 == target and rng.random() < 0.6:
            # a concentric bore, written circle(a).circle(b,mode='s') after one push as in the public data;
            # last, so no later union can land inside it as an island
            faces.append(Circle(last.x, last.y, last.r * rng.uniform(0.3, 0.8), True))
            used += 1
            continue
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
    """Scale every number by `factor` and round (centres to halves, the rest to integers); None if degenerate."""
    q = lambda value: round(value * factor)
    # centres on half units (-38.5), as the public data writes them
    half = lambda value: round(value * factor * 2) / 2
    size = lambda value: max(1, round(value * factor))
    bodies = []
    for body in part:
        depth = q(body.depth)
        if depth == 0:
            return None
        if isinstance(body, BoxBody):
            bodies.append(BoxBody(body.plane, q(body.origin), half(body.x), half(body.y), size(body.w), size(body.h),
                                  depth))
        elif isinstance(body, CylinderBody):
            bodies.append(CylinderBody(body.plane, q(body.origin), half(body.x), half(body.y), size(body.r), depth))
        else:
            faces = _quantize_faces(body.faces, q, half, size)
            if faces is None:
                return None
            bodies.append(SketchBody(body.plane, q(body.origin), faces, depth))
    return tuple(bodies)


def _quantize_faces(faces, q, half, size) -> tuple | None:
    out: list = []
    for face in faces:
        if isinstance(face, Circle):
            circle = Circle(half(face.x), half(face.y), size(face.r), face.subtract)
            previous = out[-1] if out else None
            if (isinstance(previous, Circle) and (previous.x, previous.y) == (circle.x, circle.y)
                    and circle.r >= previous.r):
                return None  # a bore as large as its circle: nothing left
            out.append(circle)
        elif isinstance(face, Rect):
            out.append(Rect(half(face.x), half(face.y), size(face.w), size(face.h), face.subtract))
        else:
            verts = [(q(x), q(y)) for x, y in face.vertices]
            mids = [None if m is None else (q(m[0]), q(m[1])) for m in face.mids]
            loop = _clean_loop(verts, mids, face.subtract)
            if loop is None:
                return None
            out.append(loop)
    return tuple(out)


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


def full_part(rng: np.random.Generator) -> tuple:
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
