"""A strict worker serves many programs: one of them must not change what the next ones build.

A third review found that cadquery's multimethods (``cq.Sketch.arc``, ``cq.Sketch.segment``) are
dicts shared by every program of a worker, reachable with the strict allowlist, and that ``|=`` changed
one in place, unseen by the tamper check: a later program's arc became a straight segment. Strict
programs now run ``x op= y`` as ``x = x op y``.

A fifth review found that reading a missing key (``cq.Sketch.segment[(key, ...)]``) stores a new entry, whose
key may hold any object: 500 MB kept by one program was missing from the memory limit of every later one,
and an ordinary plate crashed OCCT. The multimethods' entries are now put back after each program, and a
worker that still holds 64 MB more than before its first program retires. A sixth review stored 250 MB as an
attribute of the function ``cq.Sketch.rect`` (``cq.Sketch.push(cq.Sketch.rect, [...])``: a method read from its
class takes any ``self``); the tamper check now covers the attributes of cadquery's methods too.
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


# Keeps `size` MB alive in a key of cq.Sketch.segment's cache (a generic alias holds the object).
HOARD = """import cadquery as cq
big = "x" * ({size} * 1024 * 1024)
f = cq.Sketch.segment[(tuple[(reversed(big),)], cq.Vector, cq.Vector)]
r = cq.Workplane().box(1, 1, 1)
"""
COUNT_ENTRIES = "import cadquery as cq\nr = cq.Workplane().box(1, 1, len(list(cq.Sketch.segment)))\n"
NEEDS_MEMORY = "import cadquery as cq\nbig = 'y' * (400 * 1024 * 1024)\nr = cq.Workplane().box(1, 1, 2)\n"


def test_a_program_that_fills_a_multimethod_cache_leaves_the_next_one_all_its_memory():
    with Sandbox(workers=1, timeout=5.0, memory_mb=800) as pool:
        entries = pool.run(COUNT_ENTRIES).volume
        worker = pool.worker_pids
        hoard = pool.run(HOARD.format(size=350))
        assert hoard.ok, hoard.reason
        assert pool.run(COUNT_ENTRIES).volume == entries  # the entry is gone, the same worker kept
        victim = pool.run(NEEDS_MEMORY)
        assert victim.ok and victim.volume == pytest.approx(2.0), victim.reason
        assert pool.worker_pids == worker


def test_an_attribute_set_on_a_multimethod_retires_the_worker():
    with Sandbox(workers=1, timeout=5.0, memory_mb=1024) as pool:
        pool.run(COUNT_ENTRIES)
        worker = pool.worker_pids
        marked = pool.run("import cadquery as cq\ncq.Sketch.reset(cq.Sketch.arc)\nr = cq.Workplane().box(1, 1, 1)\n")
        assert marked.status.value == "error" and "Sketch.arc._selection" in marked.reason, marked.reason
        assert pool.run(VICTIM).ok
        assert pool.worker_pids != worker


def test_a_method_called_on_another_method_is_caught_and_its_memory_goes_with_the_worker():
    hoard = ("import cadquery as cq\nloc = cq.Location()\ncq.Sketch.push(cq.Sketch.rect, [loc] * 25000000)\n"
             "r = cq.Workplane().box(1, 1, 1)\n")
    with Sandbox(workers=1, timeout=10.0, memory_mb=600) as pool:
        pool.run(COUNT_ENTRIES)
        worker = pool.worker_pids
        result = pool.run(hoard)
        assert result.status.value == "error" and "Sketch.rect._selection" in result.reason, result.reason
        victim = pool.run(NEEDS_MEMORY)
        assert victim.ok and victim.volume == pytest.approx(2.0), victim.reason
        assert pool.worker_pids != worker
