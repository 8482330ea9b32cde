"""A tiny description of CAD-Recode parts, and the one writer of their program text.

A part is a tuple of bodies that the program unions in order (a body with
``cut=True`` is subtracted instead: pockets and cross holes). Each body sits on
a named workplane ('XY', 'YZ' or 'ZX') whose origin is moved only along the
plane normal, exactly as in the public CAD-Recode data:

    import cadquery as cq
    w0=cq.Workplane('XY',origin=(0,0,-2))
    r=w0.workplane(offset=5/2).box(100,64,5)

Local sketch coordinates (u, v) and the normal n map to world axes as CadQuery
defines the named planes: XY -> (x, y, z), YZ -> (y, z, x), ZX -> (z, x, y).

`render` is the only place that decides how a part is spelled, so one part
always gives one program text. `part_bounds` gives the world bounding box of
the positive geometry (subtractions are assumed not to trim the outer bounds)
and `shift_part` moves a part by an integer world offset, which is how the
generator centres parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Union

PLANES = ("XY", "YZ", "ZX")
# world axis index of (u, v, n) for each named plane
PLANE_AXES = {"XY": (0, 1, 2), "YZ": (1, 2, 0), "ZX": (2, 0, 1)}

Point = tuple[float, float]


@dataclass(frozen=True)
class Circle:
    """Sketch circle of radius r centred at (x, y); subtract=True writes mode='s'."""

    x: float
    y: float
    r: float
    subtract: bool = False


@dataclass(frozen=True)
class Rect:
    """Sketch rectangle of width w (along u) and height h (along v) centred at (x, y)."""

    x: float
    y: float
    w: float
    h: float
    subtract: bool = False


@dataclass(frozen=True)
class Loop:
    """Closed loop through `vertices`; edge i goes from vertex i to vertex i+1 (wrapping).

    mids[i] is None for a straight segment, or the middle point of a three-point
    arc. Build loops with `canonical_loop` so each outline has one spelling.
    """

    vertices: tuple[Point, ...]
    mids: tuple[Point | None, ...]
    subtract: bool = False


Face = Union[Circle, Rect, Loop]


@dataclass(frozen=True)
class SketchBody:
    """Sketch faces combined in order, extruded by `depth` (signed) along the normal."""

    plane: str
    origin: float
    faces: tuple[Face, ...]
    depth: float
    cut: bool = False  # subtracted from the bodies before it (never the first body)


@dataclass(frozen=True)
class BoxBody:
    """Box of size (w, h) in the plane centred at (x, y), spanning [origin, origin+depth] along n."""

    plane: str
    origin: float
    x: float
    y: float
    w: float
    h: float
    depth: float
    cut: bool = False


@dataclass(frozen=True)
class CylinderBody:
    """Cylinder of radius r centred at (x, y), spanning [origin, origin+depth] along n."""

    plane: str
    origin: float
    x: float
    y: float
    r: float
    depth: float
    cut: bool = False


Body = Union[SketchBody, BoxBody, CylinderBody]
Part = tuple  # tuple[Body, ...]


# --- loops -------------------------------------------------------------------


def signed_area(points) -> float:
    """Shoelace area, positive for counter-clockwise points."""
    n = len(points)
    return 0.5 * sum(
        points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n)
    )


def canonical_loop(vertices, mids=None, subtract: bool = False) -> Loop:
    """The one spelling of a loop: counter-clockwise, starting at the smallest (u, v) vertex."""
    verts = [tuple(v) for v in vertices]
    arcs = list(mids) if mids is not None else [None] * len(verts)
    if signed_area(verts) < 0:
        # reverse the walk; edge i (v_i -> v_i+1) becomes edge from v_i+1 to v_i
        n = len(verts)
        verts = [verts[(-i) % n] for i in range(n)]
        arcs = [arcs[(-i - 1) % n] for i in range(n)]
    start = min(range(len(verts)), key=lambda i: verts[i])
    verts = verts[start:] + verts[:start]
    arcs = arcs[start:] + arcs[:start]
    return Loop(tuple(verts), tuple(None if m is None else tuple(m) for m in arcs), subtract)


def arc_circle(a: Point, m: Point, b: Point) -> tuple[Point, float] | None:
    """Centre and radius of the circle through three points, None when collinear."""
    ax, ay = a
    bx, by = m
    cx, cy = b
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(d) < 1e-9:
        return None
    ux = ((ax * ax + ay * ay) * (by - cy) + (bx * bx + by * by) * (cy - ay) + (cx * cx + cy * cy) * (ay - by)) / d
    uy = ((ax * ax + ay * ay) * (cx - bx) + (bx * bx + by * by) * (ax - cx) + (cx * cx + cy * cy) * (bx - ax)) / d
    return (ux, uy), math.hypot(ax - ux, ay - uy)


def arc_points(a: Point, m: Point, b: Point, n: int = 24) -> list[Point]:
    """Points along the three-point arc a -> m -> b (both ends included)."""
    circ = arc_circle(a, m, b)
    if circ is None:
        return [a, m, b]
    (ux, uy), r = circ
    ta, tm, tb = (math.atan2(p[1] - uy, p[0] - ux) for p in (a, m, b))
    sweep = (tb - ta) % (2 * math.pi)
    if (tm - ta) % (2 * math.pi) > sweep:  # the arc runs the other way round
        sweep -= 2 * math.pi
    return [(ux + r * math.cos(ta + sweep * k / n), uy + r * math.sin(ta + sweep * k / n)) for k in range(n + 1)]


def loop_outline(loop: Loop, n_arc: int = 24) -> list[Point]:
    """The loop as a polygon, arcs sampled densely (for bounds and containment tests)."""
    out: list[Point] = []
    verts = loop.vertices
    for i, mid in enumerate(loop.mids):
        a, b = verts[i], verts[(i + 1) % len(verts)]
        out.extend([a] if mid is None else arc_points(a, mid, b, n_arc)[:-1])
    return out


# --- bounds and moves --------------------------------------------------------


def face_bounds(face: Face) -> tuple[float, float, float, float]:
    """(umin, vmin, umax, vmax) of one sketch face."""
    if isinstance(face, Circle):
        return face.x - face.r, face.y - face.r, face.x + face.r, face.y + face.r
    if isinstance(face, Rect):
        return face.x - face.w / 2, face.y - face.h / 2, face.x + face.w / 2, face.y + face.h / 2
    pts = loop_outline(face)
    us, vs = [p[0] for p in pts], [p[1] for p in pts]
    return min(us), min(vs), max(us), max(vs)


def body_local_bounds(body: Body) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """((umin, vmin, nmin), (umax, vmax, nmax)) of a body's positive geometry."""
    if isinstance(body, SketchBody):
        boxes = [face_bounds(f) for f in body.faces if not f.subtract] or [face_bounds(body.faces[0])]
        u0, v0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        u1, v1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    elif isinstance(body, BoxBody):
        u0, v0, u1, v1 = body.x - body.w / 2, body.y - body.h / 2, body.x + body.w / 2, body.y + body.h / 2
    else:
        u0, v0, u1, v1 = body.x - body.r, body.y - body.r, body.x + body.r, body.y + body.r
    n0, n1 = sorted((body.origin, body.origin + body.depth))
    return (u0, v0, n0), (u1, v1, n1)


def body_bounds(body: Body) -> tuple[list[float], list[float]]:
    """World (min, max) corners of one body."""
    lo, hi = body_local_bounds(body)
    wlo, whi = [0.0] * 3, [0.0] * 3
    for local, world in enumerate(PLANE_AXES[body.plane]):
        wlo[world], whi[world] = lo[local], hi[local]
    return wlo, whi


def part_bounds(part: Part) -> tuple[list[float], list[float]]:
    """World (min, max) corners of the union of a part's bodies (cut bodies are assumed to lie inside)."""
    boxes = [body_bounds(b) for b in part if not b.cut]
    return (
        [min(b[0][k] for b in boxes) for k in range(3)],
        [max(b[1][k] for b in boxes) for k in range(3)],
    )


def _move_face(face: Face, du: float, dv: float) -> Face:
    if isinstance(face, Loop):
        verts = tuple((p[0] + du, p[1] + dv) for p in face.vertices)
        mids = tuple(None if m is None else (m[0] + du, m[1] + dv) for m in face.mids)
        return Loop(verts, mids, face.subtract)
    return replace(face, x=face.x + du, y=face.y + dv)


def shift_body(body: Body, offset) -> Body:
    """Move one body by the world vector `offset`."""
    iu, iv, inn = PLANE_AXES[body.plane]
    du, dv, dn = offset[iu], offset[iv], offset[inn]
    if isinstance(body, SketchBody):
        return replace(body, origin=body.origin + dn, faces=tuple(_move_face(f, du, dv) for f in body.faces))
    return replace(body, origin=body.origin + dn, x=body.x + du, y=body.y + dv)


def shift_part(part: Part, offset) -> Part:
    return tuple(shift_body(b, offset) for b in part)


def centring_offset(part: Part) -> list[int]:
    """Integer move that centres the part's bounds (an odd extent keeps the extra unit above 0)."""
    lo, hi = part_bounds(part)
    return [-math.floor((lo[k] + hi[k]) / 2 + 1e-9) for k in range(3)]


# --- the writer ----------------------------------------------------------------


def num(value: float) -> str:
    """A number as the CAD-Recode data writes it: integers plain, halves as 12.5."""
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 4))


def _pt(p: Point) -> str:
    return f"({num(p[0])},{num(p[1])})"


def _origin(plane: str, offset: float) -> str:
    coords = ["0", "0", "0"]
    coords[PLANE_AXES[plane][2]] = num(offset)
    return "(" + ",".join(coords) + ")"


def _loop_code(loop: Loop) -> str:
    verts, mids = loop.vertices, loop.mids
    n = len(verts)
    parts = []
    for i in range(n):
        a, b, mid = verts[i], verts[(i + 1) % n], mids[i]
        last = i == n - 1
        if last and mid is None:
            parts.append(".close()")
        elif i == 0:
            parts.append(f".segment({_pt(a)},{_pt(b)})" if mid is None else f".arc({_pt(a)},{_pt(mid)},{_pt(b)})")
        else:
            parts.append(f".segment({_pt(b)})" if mid is None else f".arc({_pt(mid)},{_pt(b)})")
    return "".join(parts) + ".assemble()"


def _sketch_code(body: SketchBody, wp: str) -> str:
    code = [f"{wp}.sketch()"]
    cursor: Point | None = (0, 0)  # where the next circle/rect lands without a push
    for k, face in enumerate(body.faces):
        mode = ",mode='s'" if face.subtract else ""
        if isinstance(face, Loop):
            if k == 0:
                code.append(_loop_code(face))
            else:
                code.append(f".reset().face({wp}.sketch(){_loop_code(face)}{mode})")
            cursor = None
            continue
        if cursor != (face.x, face.y):
            code.append(f".push([{_pt((face.x, face.y))}])")
            cursor = (face.x, face.y)
        if isinstance(face, Circle):
            code.append(f".circle({num(face.r)}{mode})")
        else:
            code.append(f".rect({num(face.w)},{num(face.h)}{mode})")
    code.append(f".finalize().extrude({num(body.depth)})")
    return "".join(code)


def _solid_code(body: BoxBody | CylinderBody, wp: str) -> str:
    depth = abs(body.depth)
    sign = "-" if body.depth < 0 else ""
    code = f"{wp}.workplane(offset={sign}{num(depth)}/2)"
    if (body.x, body.y) != (0, 0):
        code += f".moveTo({num(body.x)},{num(body.y)})"
    if isinstance(body, BoxBody):
        return code + f".box({num(body.w)},{num(body.h)},{num(depth)})"
    return code + f".cylinder({num(depth)},{num(body.r)})"


def render(part: Part) -> str:
    """The program text of a part, in the CAD-Recode style (no trailing newline, as published)."""
    planes: dict[tuple[str, float], str] = {}
    for body in part:
        planes.setdefault((body.plane, body.origin), f"w{len(planes)}")
    lines = ["import cadquery as cq"]
    lines += [f"{wp}=cq.Workplane('{plane}',origin={_origin(plane, o)})" for (plane, o), wp in planes.items()]
    chunks = []
    for body in part:
        wp = planes[(body.plane, body.origin)]
        chunks.append(_sketch_code(body, wp) if isinstance(body, SketchBody) else _solid_code(body, wp))
    if part[0].cut:
        raise ValueError("the first body of a part cannot be a cut")
    operations = [".cut" if body.cut else ".union" for body in part[1:]]
    lines.append("r=" + chunks[0] + "".join(f"{op}({c})" for op, c in zip(operations, chunks[1:])))
    return "\n".join(lines)
