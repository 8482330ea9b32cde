from __future__ import annotations

from typing import List, Optional, Tuple

import cadquery as cq

Point = Tuple[float, float]


def plate(outline: List[Point], thickness: float, hole: Optional[float] = None) -> cq.Workplane:
    """A plate on an outline, with an optional centred hole."""
    body = cq.Workplane("XY").polyline(outline).close().extrude(thickness)
    return body.faces(">Z").workplane().hole(hole) if hole else body


result = plate([(0, 0), (40, 0), (40, 10), (10, 10), (10, 30), (0, 30)], 5.0)
