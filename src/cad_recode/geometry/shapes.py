"""Built-in example parts for ``--shape``, each a CAD-Recode-style CadQuery program.

Because each example is a program, it carries its own ground truth: run it in
the sandbox (:mod:`cad_recode.geometry.sandbox`) to get the solid, sample points
from that solid, and compare the model's program against it.

The style follows the CAD-Recode training data: integer coordinates in
[-100, 100], ``cq.Workplane('XY'|'YZ'|'ZX', origin=(x, y, z))`` workplanes,
sketches from ``segment``/``arc``/``push(...).circle``/``rect`` (``mode='s'``
subtracts), closed with ``.assemble().finalize().extrude(d)``, boxes,
cylinders, ``.union(...)``, and the result in ``r``. Each builds one valid solid.
"""

from __future__ import annotations

import difflib

from cad_recode.errors import UsageError

_HEADER = "import cadquery as cq\n"

EXAMPLE_SHAPES: dict[str, str] = {
    # 80 mm cube centred at the origin.
    "cube": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-40))
r=w0.workplane(offset=80/2).box(80,80,80)
""",
    # Solid round bar, radius 40, height 100.
    "cylinder": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-50))
r=w0.sketch().push([(0,0)]).circle(40).finalize().extrude(100)
""",
    # 100 x 60 x 10 plate with four corner holes.
    "plate_with_holes": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-5))
r=w0.sketch().push([(0,0)]).rect(100,60).push([(-35,-18),(35,-18),(-35,18),(35,18)]).circle(6,mode='s').finalize().extrude(10)
""",
    # Base plate and upright wall, each with a mounting hole.
    "l_bracket": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-50))
w1=cq.Workplane('YZ',origin=(35,0,0))
r=w0.sketch().push([(0,0)]).rect(100,60).push([(-10,0)]).circle(8,mode='s').finalize().extrude(15).union(w1.sketch().push([(0,0)]).rect(60,100).push([(0,20)]).circle(8,mode='s').finalize().extrude(15))
""",
    # Pipe section: outer radius 30, inner 22, length 100.
    "tube": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-50))
r=w0.sketch().push([(0,0)]).circle(30).circle(22,mode='s').finalize().extrude(100)
""",
    # Bolted disc with a central bore and a hub.
    "flange": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-20))
r=w0.sketch().push([(0,0)]).circle(60).circle(20,mode='s').push([(42,0),(-42,0),(0,42),(0,-42)]).circle(6,mode='s').finalize().extrude(12).union(w0.sketch().push([(0,0)]).circle(30).circle(20,mode='s').finalize().extrude(40))
""",
    # Three coaxial cylinders along X, shrinking in steps.
    "stepped_shaft": _HEADER
    + """w0=cq.Workplane('YZ',origin=(-80,0,0))
w1=cq.Workplane('YZ',origin=(-20,0,0))
w2=cq.Workplane('YZ',origin=(40,0,0))
r=w0.sketch().push([(0,0)]).circle(30).finalize().extrude(60).union(w1.sketch().push([(0,0)]).circle(22).finalize().extrude(60)).union(w2.sketch().push([(0,0)]).circle(14).finalize().extrude(40))
""",
    # Block with an open slot along its length, from a segment profile.
    "slotted_block": _HEADER
    + """w0=cq.Workplane('YZ',origin=(-50,0,0))
r=w0.sketch().segment((-40,-25),(40,-25)).segment((40,25)).segment((10,25)).segment((10,5)).segment((-10,5)).segment((-10,25)).segment((-40,25)).close().assemble().finalize().extrude(100)
""",
    # Obround plate: straight sides joined by arcs, two holes at the arc centres.
    "rounded_plate": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-6))
r=w0.sketch().segment((-50,-30),(50,-30)).arc((80,0),(50,30)).segment((-50,30)).arc((-80,0),(-50,-30)).assemble().push([(-50,0),(50,0)]).circle(12,mode='s').finalize().extrude(12)
""",
    # Hexagonal nut with a through bore (integer vertices, nearly regular).
    "hex_nut": _HEADER
    + """w0=cq.Workplane('XY',origin=(0,0,-15))
r=w0.sketch().segment((40,0),(20,35)).segment((-20,35)).segment((-40,0)).segment((-20,-35)).segment((20,-35)).close().assemble().push([(0,0)]).circle(20,mode='s').finalize().extrude(30)
""",
    # T-section beam: flange and web unioned, 100 long.
    "t_beam": _HEADER
    + """w0=cq.Workplane('ZX',origin=(0,-50,0))
r=w0.sketch().push([(20,0)]).rect(10,60).finalize().extrude(100).union(w0.sketch().push([(-10,0)]).rect(50,10).finalize().extrude(100))
""",
}


def example_program(name: str) -> str:
    """The program of the built-in shape ``name``; UsageError naming the valid ones if unknown."""
    try:
        return EXAMPLE_SHAPES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), EXAMPLE_SHAPES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(
            f"unknown shape {name!r}; {hint}choose one of: {', '.join(EXAMPLE_SHAPES)}"
        ) from None
