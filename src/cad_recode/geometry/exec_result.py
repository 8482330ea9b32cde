"""What running one program yields: :class:`ExecResult` (a status, a one-line reason, the measured solid).

Light on purpose (numpy only): the CLI and the metrics import it without CadQuery.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from cad_recode.errors import escape_controls

TESSELLATION_TOLERANCE = 0.001
"""Linear deflection passed to ``Shape.tessellate``, relative to each edge's size (see the sandbox module doc)."""
ANGULAR_TOLERANCE = 0.1
"""Angular deflection (radians) passed to ``Shape.tessellate``."""
DEFAULT_MAX_TRIANGLES = 500_000
"""Most triangles a result's mesh may have (CAD-Recode parts have a few thousand); more is a failure."""
MAX_REASON_CHARS = 300


class ExecStatus(str, Enum):
    OK = "ok"
    REJECTED = "rejected"  # failed the static check
    SYNTAX = "syntax_error"
    ERROR = "error"  # raised an exception
    NO_SOLID = "no_solid"  # produced no Workplane/Shape
    INVALID = "invalid"  # produced a shape that is not a valid solid
    TIMEOUT = "timeout"  # wall-clock or CPU limit
    MEMORY = "memory"  # memory limit
    CRASHED = "crashed"  # the worker died (segfault, exit, ...) or broke the protocol


@dataclass
class ExecResult:
    """Outcome of one program. ``reason`` is one printable line, empty when ``ok``."""

    status: ExecStatus
    reason: str = ""
    vertices: np.ndarray | None = None  # (V, 3) float64, program units
    faces: np.ndarray | None = None  # (F, 3) int64, indices into vertices
    num_faces: int = 0  # B-rep faces of the solid
    volume: float = 0.0
    area: float = 0.0
    bbox_min: tuple[float, float, float] | None = None
    bbox_max: tuple[float, float, float] | None = None
    seconds: float = 0.0  # time spent executing (in the worker)

    @property
    def ok(self) -> bool:
        return self.status is ExecStatus.OK

    def to_trimesh(self):
        """The tessellated solid as a ``trimesh.Trimesh``; ``ValueError`` if not ok or not tessellated."""
        if not self.ok or self.vertices is None or self.faces is None:
            raise ValueError(f"no mesh: program status is {self.status.value}: {self.reason or 'not tessellated'}")
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


def printable_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` on one line, whitespace squeezed, control and format characters escaped, at most ``limit`` chars.

    A reason reaches terminals and web pages: raw escape sequences (``\\x1b[``, ``\\x9b``,
    ``\\r``) or bidi overrides could forge or hide output, so they are shown as ``\\xNN``.
    """
    line = escape_controls(" ".join(str(text).split()))
    return line if len(line) <= limit else line[: limit - 3] + "..."


def failure(status: ExecStatus, reason: str, seconds: float = 0.0) -> ExecResult:
    """An :class:`ExecResult` for a failure, with ``reason`` made one printable line."""
    return ExecResult(status, printable_line(reason), seconds=seconds)
