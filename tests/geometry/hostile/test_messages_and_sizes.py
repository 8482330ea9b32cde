"""Exception messages that fight back, terminal escapes, and results too large to send."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cad_recode.geometry.sandbox import Sandbox
from hostile_common import assert_contained  # noqa: E402


def test_exception_whose_message_raises(pool, marker):
    code = "class E(Exception):\n    def __str__(self):\n        raise ValueError('no')\nraise E()\n"
    result = pool.run(code, profile="cadquery", _unchecked=True)  # (a dunder def: rejected when checked)
    assert result.status.value == "error"
    assert result.reason.startswith("E: <the exception's message could not be formatted>")
    assert_contained(pool, result, marker)


def test_control_characters_are_escaped(pool, marker):
    code = "raise ValueError('\\x1b[2K\\rok 1.0\\x9b31m \\u202e')\n"
    result = pool.run(code, profile="cadquery")
    assert "\\x1b[2K" in result.reason and "\\x9b" in result.reason and "\\u202e" in result.reason
    assert_contained(pool, result, marker)


def test_a_mesh_over_the_triangle_cap_is_a_failure():
    with Sandbox(max_triangles=200, timeout=10) as small:
        result = small.run("import cadquery as cq\nr = cq.Workplane().cylinder(10, 5)\n")
        assert result.status.value == "invalid"
        assert "the limit is 200 (max_triangles)" in result.reason
        assert small.run("import cadquery as cq\nr = cq.Workplane().box(1, 1, 1)\n").ok


def test_font_path_is_refused_in_both_profiles(pool, marker):
    code = "import cadquery as cq\nr = cq.Workplane().text('a', 5, 1, fontPath='/etc/ld.so.cache')\n"
    assert pool.run(code).status.value == "rejected"  # strict: 'text' is not on its allowlist at all
    result = pool.run(code, profile="cadquery")
    assert result.status.value == "rejected" and "keyword 'fontPath' is not allowed" in result.reason
    assert_contained(pool, result, marker)
