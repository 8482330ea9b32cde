"""Ordinary CadQuery programs build under the ``cadquery`` profile, inside the same OS confinement.

``cadquery_programs/`` holds programs written the way CadQuery users write them:
loops, functions, classes, lambdas, try/while, selectors, fillets, shells, lofts,
sweeps, revolves, sketches, assemblies, ``show_object``/``debug``/``print``,
``math``/``numpy``/``random``/``itertools``/``functools``/``typing``/``copy`` imports, an export into the
scratch directory. At least 90 % must yield a valid solid, and the same programs
are refused by the strict profile (the model's language) with a reason that points
to ``cadquery``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cad_recode.geometry.sandbox import Sandbox

PROGRAMS = {p.stem: p.read_text() for p in sorted((Path(__file__).parent / "cadquery_programs").glob("*.py"))}


@pytest.fixture(scope="module")
def results():
    with Sandbox(workers=2, timeout=30.0, profile="cadquery") as sandbox:
        return dict(zip(PROGRAMS, sandbox.map(list(PROGRAMS.values()))))


def test_at_least_90_percent_build(results):
    failed = {name: f"{r.status.value}: {r.reason}" for name, r in results.items() if not r.ok}
    assert len(PROGRAMS) >= 20
    assert (len(PROGRAMS) - len(failed)) / len(PROGRAMS) >= 0.9, failed


@pytest.mark.parametrize("name", ["loops_and_functions", "class_based", "assembly", "revolve", "type_hints",
                                  "tagged_and_copied"])
def test_each_kind_gives_the_solid_it_describes(results, name):
    result = results[name]
    assert result.ok, result.reason
    assert result.volume > 0 and result.num_faces > 2


def test_what_cadquery_caches_on_first_use_is_not_tampering():
    """cadquery's multimethods resolve some methods on their first call (Face.trim, Shape.move), and copying a
    Workplane (workplaneFromTagged) stores Workplane.__slotnames__: in a worker each changed a shared class,
    and the program was failed as one that modified the sandbox."""
    code = ("import cadquery as cq\nface = cq.Workplane().rect(4, 4).extrude(1).faces('>Z').val()\n"
            "patch = face.trim(0, 1, 0, 1).moved(cq.Location((0, 0, 1)))\n"
            "r = cq.Workplane().add(cq.Solid.extrudeLinear(patch, cq.Vector(0, 0, 2)))\n"
            "top = r.faces('>Z').tag('top').workplaneFromTagged('top')\n"
            "r = top.box(1, 1, 1, centered=(True, True, False), combine=False).union(r)\n")
    with Sandbox(timeout=30.0, profile="cadquery") as sandbox:
        results = [sandbox.run(code) for _ in range(2)]
    for result in results:
        assert result.ok, result.reason
        assert result.volume == pytest.approx(3.0)


def test_strict_profile_refuses_them_and_names_the_other_profile():
    with Sandbox(timeout=30.0) as strict:
        result = strict.run(PROGRAMS["loops_and_functions"])
    assert result.status.value == "rejected"
    assert "profile 'cadquery'" in result.reason


def test_measured_in_a_second_process_the_mesh_is_the_one_strict_makes():
    """The second stage reads the shape from exact binary BREP: the same mesh, triangle for triangle."""
    from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program

    codes = [example_program(name) for name in EXAMPLE_SHAPES]
    with Sandbox(workers=2) as sandbox:
        strict = sandbox.map(codes)
        two_stage = sandbox.map(codes, profile="cadquery")
    for name, a, b in zip(EXAMPLE_SHAPES, strict, two_stage):
        assert a.ok and b.ok, (name, a.reason, b.reason)
        assert (a.volume, a.area, a.num_faces, a.bbox_min, a.bbox_max) == (b.volume, b.area, b.num_faces, b.bbox_min,
                                                                           b.bbox_max), name
        assert (a.vertices == b.vertices).all() and (a.faces == b.faces).all(), name


def test_a_cq_editor_script_runs_under_its_name():
    """CQ-editor runs scripts as ``__cq_main__``: the guarded ``show_object`` and a literal's ``format`` both run."""
    import math

    # no variable holds the part afterwards, so only the guarded show_object can have picked it
    program = PROGRAMS["cq_editor_script"] + "part = None\n"
    with Sandbox(timeout=30.0, profile="cadquery") as sandbox:
        result = sandbox.run(program)
    assert result.ok, result.reason
    expected = math.pi * (30**2 - 10**2) * 8 - 6 * math.pi * 2.5**2 * 8
    assert result.volume == pytest.approx(expected, rel=1e-6)
