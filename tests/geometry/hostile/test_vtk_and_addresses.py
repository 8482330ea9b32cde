"""The VTK route (raw memory via toVtkPolyData), hash/id address leaks and ``wrapped``: shut at every layer."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest

from hostile_common import assert_contained  # noqa: E402

SHUT = {
    "vtk_strict": ("import cadquery as cq\nv = cq.Workplane().box(1, 1, 1).val().toVtkPolyData()\n", "strict"),
    "vtk_cadquery": ("import cadquery as cq\nv = cq.Workplane().box(1, 1, 1).val().toVtkPolyData()\n", "cadquery"),
    "hash_strict": ("x = hash(1)\n", "strict"),
    "wrapped_strict": ("import cadquery as cq\nw = cq.Workplane().box(1, 1, 1).val().wrapped\n", "strict"),
    "wrapped_cadquery": ("import cadquery as cq\nw = cq.Workplane().box(1, 1, 1).val().wrapped\n", "cadquery"),
    "map_with_builtins_strict": ("import cadquery as cq\nr = cq.Workplane().box(1, 1, 1).map(print)\n", "strict"),
}


@pytest.mark.parametrize("code, profile", SHUT.values(), ids=SHUT.keys())
def test_shut(pool, marker, code, profile):
    result = pool.run(code, profile=profile)
    assert result.status.value in ("rejected", "error"), result.reason
    assert_contained(pool, result, marker)


def test_vtk_write_primitive_cannot_write_outside(pool, marker):
    # With the static check off, VTK's numpy view of the points can be written to a file: not outside scratch.
    code = "import cadquery as cq\n" + (f"p = cq.Workplane().box(1, 1, 1).val().toVtkPolyData()\n"
             f"import numpy as np\nnp.zeros(3).tofile({str(marker)!r})\n")
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert_contained(pool, result, marker)


def test_printf_formatting_is_refused_in_strict(pool):
    """``'%r' % (w,)`` prints an object's repr, address and all, where repr is refused (a fifth review's find)."""
    result = pool.run("import cadquery as cq\nx = int('%r' % (cq.Workplane(),))\n")
    assert result.status.value == "rejected" and "'%' in a string is not allowed" in result.reason, result.reason


@pytest.mark.parametrize("profile", ["strict", "cadquery"])
def test_an_error_message_names_no_address(pool, profile):
    """A KeyError's message is the key's repr: the reason the caller gets keeps the words, not the address."""
    result = pool.run("import cadquery as cq\nx = {}[cq.Workplane()]\n", profile=profile)
    assert result.status.value == "error"
    assert "KeyError: <cadquery.cq.Workplane object at 0x…>" in result.reason, result.reason
