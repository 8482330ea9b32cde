"""A strict worker serves many programs: one of them must not change what the next ones build.

A third review found that cadquery's multimethods (``cq.Sketch.arc``, ``cq.Sketch.segment``) are
dicts shared by every program of a worker, reachable with the strict allowlist, and that ``|=`` changed
one in place, unseen by the tamper check: a later program's arc became a straight segment. Strict
programs now run ``x op= y`` as ``x = x op y``.
"""

from __future__ import annotations

import pytest

from cad_recode.geometry.sandbox import Sandbox

POISON = """import cadquery as cq
A = cq.Sketch.arc
S = cq.Sketch.segment
seg = [S[k] for k in S if len(k) == 4][0]
A |= {k: seg for k in A if len(k) == 5}
r = cq.Workplane().box(1, 1, 1)
"""
# a D-shaped plate: two segments, a three-point arc through (15, 5), and the closing segment
VICTIM = """import cadquery as cq
w0 = cq.Workplane('XY')
r = w0.sketch().segment((0, 0), (10, 0)).arc((15, 5), (10, 10)).segment((0, 10)).close().assemble().finalize().extrude(1)
"""


def test_an_in_place_operator_changes_nothing_a_later_program_uses():
    with Sandbox(workers=1, timeout=5.0, memory_mb=1024) as pool:
        before = pool.run(VICTIM)
        assert before.ok and before.volume == pytest.approx(139.27, abs=0.01), before.reason
        poison = pool.run(POISON)
        assert poison.ok, poison.reason
        after = [pool.run(VICTIM) for _ in range(2)]
    assert [r.volume for r in after] == pytest.approx([before.volume] * 2)


def test_augmented_assignment_still_computes_in_strict():
    with Sandbox(workers=1) as pool:
        result = pool.run("import cadquery as cq\nx = 2\nx += 3\nx *= 2\nr = cq.Workplane().box(1, 1, x)\n")
    assert result.ok and result.volume == pytest.approx(10.0)
