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


def restored_program(code: str, transform: Transform) -> str:
    """``code`` plus one line that scales and moves its solid ``r`` into the input's units.

    Shape.scale works about the origin: ``x * k + center`` with ``k = 1 / (100 * scale)``.
    Only for programs that keep their result in ``r`` (CAD-Recode style); callers fall
    back to the model-unit STEP when this program fails.
    """
    k = 1.0 / (MODEL_UNITS * transform.scale)
    cx, cy, cz = (float(c) for c in transform.center)
    return (
        f"{code.rstrip()}\nimport cadquery as cq\n"
        f"r=cq.Workplane('XY').newObject([r.findSolid().scale({k!r}).translate(cq.Vector({cx!r},{cy!r},{cz!r}))])\n"
    )
