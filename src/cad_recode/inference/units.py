"""Model units <-> the input's own units.

The model reads points normalized to [-1, 1]^3 and writes programs in CAD-Recode
units, where that cube spans [-100, 100] (``MODEL_UNITS``). The way back to the
input's units: ``x_input = transform.invert(x_model / 100) = x_model / (100 * scale) + center``.
"""

from __future__ import annotations

import numpy as np
import trimesh

from cad_recode.defaults import MODEL_UNITS
from cad_recode.geometry.normalize import Transform


def restore_mesh(mesh: trimesh.Trimesh, transform: Transform) -> trimesh.Trimesh:
    """Model units -> the input's units: ``transform.invert(x / 100)``."""
    restored = mesh.copy()
    restored.vertices = transform.invert(np.asarray(mesh.vertices) / MODEL_UNITS)
    return restored


RESTORE_MARK = "# to_input_units"


def restored_program(code: str, transform: Transform) -> str:
    """``code`` plus one named line that scales and moves its solid ``r`` into the input's units.

    The model's lines stay as written (round numbers in model units, easy to edit);
    the last line maps the result: ``x * k + center`` with ``k = 1 / (100 * scale)``
    (Shape.scale works about the origin). Only for programs that keep their result
    in ``r`` (CAD-Recode style); callers fall back to model units when it fails.
    """
    k = 1.0 / (MODEL_UNITS * transform.scale)
    cx, cy, cz = (float(c) for c in transform.center)
    needs_import = "import cadquery as cq" not in code
    return (
        f"{code.rstrip()}\n" + ("import cadquery as cq\n" if needs_import else "")
        + f"{RESTORE_MARK}: the lines above build the part in model units (it fits in [-100, 100]); this one scales\n"
        f"# it by {k:.6g} about the origin and moves it to the input's centre, in the input's own units.\n"
        f"r=cq.Workplane('XY').newObject([r.findSolid().scale({k!r}).translate(cq.Vector({cx!r},{cy!r},{cz!r}))])\n"
    )


def model_program(code: str) -> str:
    """The program without its restore line (back in model units), or ``code`` when it has none."""
    head, mark, _ = code.partition(RESTORE_MARK)
    return head if mark else code
