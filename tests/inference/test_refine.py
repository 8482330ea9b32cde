"""Refinement: which numbers it may touch, and that it fits a real solid to real input points."""

import math

import pytest

from cad_recode.errors import UsageError
from cad_recode.geometry.metrics import CloudDistance, compare_meshes
from cad_recode.geometry.sampling import sample_surface
from cad_recode.inference.refine import integer_literals, refine_program, removable_features, with_values, without

PLATE = """import cadquery as cq
w0=cq.Workplane('XY',origin=(0,0,-25))
r=w0.box({width},200,50).union(w0.workplane(offset=50/2).moveTo(-60,0).cylinder(30,24))
"""


def test_integer_literals_take_signed_integers_and_leave_names_floats_text_and_halving_divisors():
    code = ("w0=cq.Workplane('XY',origin=(0,-30,7))  # 12 in a comment\n"
            "r=w0.workplane(offset=44/2).box(200,3-1,1.5).moveTo(-4,0)\n"
            "s='99'\n")
    literals = integer_literals(code)
    assert [lit.value for lit in literals] == [0, -30, 7, 44, 200, 3, 1, -4, 0]
    assert [code[lit.start:lit.end] for lit in literals] == ["0", "-30", "7", "44", "200", "3", "1", "-4", "0"]


def test_with_values_round_trips_and_rewrites_signs():
    code = "r=w0.box(200,-30,5).translate((4,0,-7))\n"
    literals = integer_literals(code)
    assert with_values(code, literals, [lit.value for lit in literals]) == code
    assert with_values(code, literals, [198, 2, 5, -4, 0, 7]) == "r=w0.box(198,2,5).translate((-4,0,7))\n"


def test_integer_literals_reject_text_python_cannot_read():
    with pytest.raises(UsageError, match="cannot read the program's numbers"):
        integer_literals("r=w0.box(200,\n")


def test_refinement_fits_a_dimension_to_the_input_points_and_never_gets_worse(sandbox):
    target = sandbox.run(PLATE.format(width=176)).to_trimesh()
    points = sample_surface(target, n=4096, seed=3)
    written = PLATE.format(width=190)  # the model's kind of miss: the right program, a plate too wide

    refined = refine_program(written, points, sandbox, max_evaluations=120)

    assert refined.distance < 0.7 * refined.start_distance  # what is left is the sampling noise floor
    assert refined.result.ok and refined.changed >= 1
    # both sides are normalized before the distance, so proportions are what it fits: width to depth
    width, depth = (int(v) for v in refined.code.split("box(")[1].split(",")[:2])
    assert abs(200 * width / depth - 176) <= 3, refined.code
    # only numbers change: the program's text outside its literals is what the model wrote
    assert [c for c in refined.code if not c.isdigit() and c != "-"] == [c for c in written if not c.isdigit() and c != "-"]
    assert refined.evaluations <= 120
    assert refined.distance < refined.start_distance


def test_refinement_keeps_its_budget_and_keeps_the_program_when_the_budget_is_too_small(sandbox):
    code = PLATE.format(width=190)
    points = sample_surface(sandbox.run(PLATE.format(width=176)).to_trimesh(), n=2048, seed=0)
    literals = len(integer_literals(code))
    features = len(removable_features(code))
    assert features == 1  # the boss

    nothing = refine_program(code, points, sandbox, max_evaluations=0)
    assert (nothing.code, nothing.evaluations, nothing.changed) == (code, 0, 0)
    assert math.isnan(nothing.start_distance)  # not measured (the report writes it as null)

    # the program as written is scored first (1 run); a poll of k literals then needs 2k + 1 more,
    # and one run per feature is kept back for the pruning: here no poll fits, the pruning does
    short = refine_program(code, points, sandbox, max_evaluations=2 * literals + features)
    assert (short.code, short.evaluations, short.changed, short.removed) == (code, 1 + features, 0, [])
    assert short.distance == short.start_distance  # the boss is there in the points: dropping it lost

    one_poll = refine_program(code, points, sandbox, steps=(4,), max_evaluations=2 * literals + 2 + features)
    assert one_poll.evaluations in (2 * literals + 1 + features, 2 * literals + 2 + features)
    assert one_poll.distance < one_poll.start_distance and one_poll.code != code and one_poll.removed == []


def test_refinement_refuses_an_invalid_program_and_bad_settings(sandbox):
    points = sample_surface(sandbox.run(PLATE.format(width=176)).to_trimesh(), n=512, seed=0)
    with pytest.raises(UsageError, match="only a valid program can be refined"):
        refine_program("import cadquery as cq\nr=cq.Workplane('XY').box(0,10,10)\n", points, sandbox)
    with pytest.raises(UsageError, match="steps must be >= 1"):
        refine_program(PLATE.format(width=176), points, sandbox, steps=(2, 0))


RING = """import cadquery as cq
w0=cq.Workplane('XY',origin=(0,0,-100))
r=w0.sketch().circle(72).circle({bore},mode='s').finalize().extrude(200)
"""
HOLED_PLATE = """import cadquery as cq
w0=cq.Workplane('XY',origin=(0,0,-20))
r=w0.sketch().rect(200,160).push([({x},30)]).circle(24,mode='s').finalize().extrude(40)
"""


def test_removable_features_are_body_operations_and_subtractive_elements_with_their_locations():
    code = ("import cadquery as cq\nw0=cq.Workplane('ZX',origin=(0,-61,0))\nw1=cq.Workplane('ZX',origin=(0,11,0))\n"
            "r=w0.sketch().rect(200,142).push([(38,25)]).rect(26,28,mode='s').circle(23,mode='s')"
            ".finalize().extrude(72).union(w1.workplane(offset=51/2).moveTo(-17,31).cylinder(51,12))\n")
    features = removable_features(code)
    assert [f.text for f in features] == [".push([(38,25)]).rect(26,28,mode='s')", ".circle(23,mode='s')",
                                          ".union(w1.workplane(offset=51/2).moveTo(-17,31).cylinder(51,12))"]
    assert without(code, features[0]).splitlines()[-1] == (
        "r=w0.sketch().rect(200,142).circle(23,mode='s').finalize().extrude(72)"
        ".union(w1.workplane(offset=51/2).moveTo(-17,31).cylinder(51,12))")
    assert removable_features("import cadquery as cq\nr=cq.Workplane('XY').box(10,10,10)\n") == []
    with pytest.raises(UsageError, match="cannot read the program's steps"):
        removable_features("r=w0.box(200,\n")


def test_refinement_removes_a_bore_the_part_does_not_have(sandbox):
    solid = sandbox.run(RING.format(bore=1).replace(".circle(1,mode='s')", "")).to_trimesh()
    points = sample_surface(solid, n=4096, seed=2)
    written = RING.format(bore=66)  # the model's other kind of miss: a tube for a solid cylinder

    refined = refine_program(written, points, sandbox, max_evaluations=120)

    assert refined.removed == [".circle(66,mode='s')"]
    assert ".circle(72).finalize().extrude(200)" in refined.code and refined.result.ok
    assert refined.distance < 0.2 * refined.start_distance and refined.evaluations <= 120
    numbers_only = refine_program(written, points, sandbox, max_evaluations=120, prune=False)
    assert numbers_only.removed == [] and "mode='s'" in numbers_only.code
    assert numbers_only.distance > refined.distance
    assert compare_meshes(refined.result.to_trimesh(), solid).iou > 0.97


def test_refinement_moves_a_real_hole_into_place_rather_than_removing_it(sandbox):
    target = sandbox.run(HOLED_PLATE.format(x=-40)).to_trimesh()
    points = sample_surface(target, n=4096, seed=4)
    written = HOLED_PLATE.format(x=-20)  # the hole written 20 units off
    to_points = CloudDistance(points)
    no_hole = HOLED_PLATE.format(x=-20).replace(".push([(-20,30)]).circle(24,mode='s')", "")
    assert to_points(sandbox.run(written).to_trimesh()) > to_points(sandbox.run(no_hole).to_trimesh())  # worse than none

    refined = refine_program(written, points, sandbox, max_evaluations=120)

    assert refined.removed == [] and "mode='s'" in refined.code, refined.code
    x = int(refined.code.split("push([(")[1].split(",")[0])
    radius = int(refined.code.split(".circle(")[1].split(",")[0])
    assert abs(x - (-40)) <= 3 and abs(radius - 24) <= 3, refined.code
