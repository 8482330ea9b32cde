"""Built-in example shapes: CAD-Recode style, and each one valid solid in the sandbox."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest

from cad_recode.errors import UsageError
from cad_recode.geometry.sandbox import Sandbox
from cad_recode.geometry.sampling import to_model_points
from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program
from cad_recode.geometry.static_check import check_program

REQUIRED = ["cube", "cylinder", "plate_with_holes", "l_bracket", "tube", "flange", "stepped_shaft", "slotted_block"]

# Volumes worked out by hand from the programs' dimensions.
EXACT_VOLUMES = {
    "cube": 80**3,
    "cylinder": math.pi * 40**2 * 100,
    "plate_with_holes": 100 * 60 * 10 - 4 * math.pi * 6**2 * 10,
    "tube": math.pi * (30**2 - 22**2) * 100,
    "flange": math.pi * (60**2 - 20**2) * 12 - 4 * math.pi * 6**2 * 12 + math.pi * (30**2 - 20**2) * 28,
    "stepped_shaft": math.pi * (30**2 * 60 + 22**2 * 60 + 14**2 * 40),
    "slotted_block": (80 * 50 - 20 * 20) * 100,
    "l_bracket": (100 * 60 - math.pi * 8**2) * 15 + (60 * 85 - math.pi * 8**2) * 15,
    "t_beam": (10 * 60 + 50 * 10) * 100,
}


@pytest.fixture(scope="module")
def results():
    """Run every example once, in the sandbox, as untrusted programs are run."""
    names = list(EXAMPLE_SHAPES)
    with Sandbox(workers=1, timeout=30.0) as sandbox:
        return dict(zip(names, sandbox.map([EXAMPLE_SHAPES[n] for n in names])))


def test_required_shapes_present():
    assert set(REQUIRED) <= set(EXAMPLE_SHAPES)
    assert len(EXAMPLE_SHAPES) >= 8


@pytest.mark.parametrize("name", list(EXAMPLE_SHAPES))
def test_shape_is_a_valid_solid_in_the_sandbox(results, name):
    result = results[name]
    assert result.ok, f"{name}: {result.status.value}: {result.reason}"
    assert result.num_faces > 2 and result.volume > 0
    assert np.all(np.abs(result.bbox_min) <= 100) and np.all(np.abs(result.bbox_max) <= 100)
    mesh = result.to_trimesh()
    mesh.merge_vertices()
    assert mesh.is_watertight
    if name in EXACT_VOLUMES:
        assert result.volume == pytest.approx(EXACT_VOLUMES[name], rel=1e-6)
        assert mesh.volume == pytest.approx(EXACT_VOLUMES[name], rel=1e-2)  # tessellation error only


@pytest.mark.parametrize("name", list(EXAMPLE_SHAPES))
def test_shape_is_in_cad_recode_style(name):
    code = EXAMPLE_SHAPES[name]
    check_program(code)  # passes the sandbox's static check
    tree = ast.parse(code)
    assert code.startswith("import cadquery as cq\n")
    assigned = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    assert assigned[-1] == "r"
    numbers = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    ]
    assert numbers and all(isinstance(v, int) and -100 <= v <= 100 for v in numbers), numbers
    planes = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Workplane"
    ]
    assert planes and set(planes) <= {"XY", "YZ", "ZX"}


def test_shapes_feed_the_model_points(results):
    mp = to_model_points(results["flange"].to_trimesh(), seed=0)
    assert mp.points.shape == (256, 3)
    # The flange is 120 wide and 40 tall: normalized, it spans [-1, 1] in x and y, 2/3 in z.
    np.testing.assert_allclose(mp.points.max(0) - mp.points.min(0), [2.0, 2.0, 2 / 3], atol=0.08)


def test_example_program_returns_the_program():
    assert example_program("tube") == EXAMPLE_SHAPES["tube"]


@pytest.mark.parametrize("name, hint", [("cyllinder", "did you mean 'cylinder'? "), ("l-bracket", "did you mean 'l_bracket'? ")])
def test_unknown_shape_suggests_the_closest(name, hint):
    with pytest.raises(UsageError) as info:
        example_program(name)
    message = str(info.value)
    assert message.startswith(f"unknown shape {name!r}; {hint}choose one of: ")
    for valid in EXAMPLE_SHAPES:
        assert valid in message


def test_unknown_shape_without_a_close_match():
    with pytest.raises(UsageError, match=r"^unknown shape 'zzz'; choose one of: cube, "):
        example_program("zzz")
