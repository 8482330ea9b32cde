"""Shared pieces of the hostile-program suite (its fixtures are in conftest.py).

Every hostile program tries to write a marker file outside its scratch directory.
A test asserts: no marker, a failure value with a reason, and that the next good
program in the SAME pool returns the right volume. Many attacks run with the
static check off (``_unchecked``, test-only) and reach ``os`` through the classic
``__subclasses__`` walk, to prove the OS layer holds on its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cad_recode
from cad_recode.geometry.sandbox import ExecResult, Sandbox

GOOD = "import cadquery as cq\nr = cq.Workplane('XY').box(10, 20, 30).faces('>Z').hole(4)\n"
GOOD_VOLUME = 10 * 20 * 30 - np.pi * 2**2 * 30
# Inside the sandbox the package's own directory is visible (read-only): a marker there proves a write got out.
MARKER_DIR = Path(cad_recode.__file__).resolve().parent.parent
# The os module's namespace, reached without an import (only possible with the static check off).
REACH_OS = "o = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0].__init__.__globals__\n"


def assert_contained(pool: Sandbox, result: ExecResult, marker: Path) -> None:
    """The attack left no marker, failed as a value with a reason, and the pool still measures right."""
    assert not marker.exists(), "the hostile program wrote outside the sandbox"
    assert not result.ok
    assert result.reason and "\n" not in result.reason and "\x1b" not in result.reason
    good = pool.run(GOOD)
    assert good.ok, good.reason
    assert good.volume == pytest.approx(GOOD_VOLUME, rel=1e-6)
