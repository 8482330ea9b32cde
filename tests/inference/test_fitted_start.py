"""Refinement's fitted start: where the model misread the part, the points' own outline takes over.

No model is needed: the "model's winner" is written here, the input is a real
solid's surface, and the fitted programs run in the real sandbox.
"""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cad_recode.geometry.metrics import CloudDistance, mesh_iou, protocol_cd
from cad_recode.geometry.robustness import rotate_about_center
from cad_recode.inference.decoding import Decoding
from cad_recode.inference.fitted_start import best_fitted_start, fitted_programs
from cad_recode.inference.inputs import encode_input
from cad_recode.inference.judge import judge, refine_winner
from cad_recode.inference.results import Timings

L_PLATE = """import cadquery as cq
w0=cq.Workplane('ZX',origin=(0,-100,0))
r=w0.sketch().segment((-73,-73),(-9,-73)).segment((-9,25)).segment((73,25)).segment((73,74)).segment((-73,74)).close().assemble().push([(-32,-42)]).circle(16,mode='s').finalize().extrude(200)
"""
# the model's kind of miss on it: the right size, the wrong structure
BOX = "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-74))\nr=w0.workplane(offset=148/2).box(146,200,148)\n"


@pytest.fixture(scope="module")
def l_plate(sandbox):
    return sandbox.run(L_PLATE).to_trimesh()


def encoded(sandbox, mesh, **kwargs):
    return encode_input(("part", mesh), kwargs.pop("num_candidates", 1), num_point_tokens=64,
                        num_surface_points=2048, sandbox=sandbox, **kwargs)


def winner(sandbox, item, code):
    """(code, result, protocol CD to the input, the distance) as judge has them for the model's winner."""
    to_input = CloudDistance(item.dense)
    result = sandbox.run(code)
    return code, result, protocol_cd(to_input(result.to_trimesh())), to_input


def in_model_units(mesh, item):
    mesh = mesh.copy()
    mesh.vertices = item.transform.apply(mesh.vertices) * 100
    return mesh


def test_a_box_written_for_an_l_plate_is_replaced_by_the_points_outline(sandbox, l_plate):
    item = encoded(sandbox, l_plate)
    code, result, cd, to_input = winner(sandbox, item, BOX)

    refined, summary = refine_winner(code, result, cd, item, sandbox, 120, to_input)

    assert "Workplane('ZX'" in refined.code and refined.code.count(".segment(") == 5, refined.code
    assert "circle(" in refined.code  # the bore came back too
    assert mesh_iou(refined.result.to_trimesh(), in_model_units(l_plate, item)) > 0.95
    # the report keeps the model's program and says where refinement started
    assert summary.model_code == BOX and summary.cd_input_before == cd
    assert summary.started_from == "a sketch on ZX extruded"
    assert summary.structure_edits[0].startswith("started from the points' own outline: a sketch on ZX extruded")
    assert summary.cd_input_after < 0.2 * cd and summary.evaluations <= 120


def test_a_program_that_already_fits_stays_the_start(sandbox, l_plate):
    item = encoded(sandbox, l_plate)
    code, result, cd, to_input = winner(sandbox, item, L_PLATE)

    refined, summary = refine_winner(code, result, cd, item, sandbox, 40, to_input)

    assert summary.started_from == "model"
    assert not any(edit.startswith("started from") for edit in summary.structure_edits)
    # the model's structure, at most its numbers nudged: the same sketch on the same plane
    assert "Workplane('ZX'" in refined.code and refined.code.count(".segment(") == 5 and "circle(" in refined.code
    assert summary.evaluations <= 40


def test_no_budget_no_fitted_runs(sandbox, l_plate):
    item = encoded(sandbox, l_plate)
    assert best_fitted_start(item, sandbox, CloudDistance(item.dense), budget=0) == (None, 0)


def test_under_pose_auto_a_turned_part_is_fitted_in_its_own_axes_and_placed_back(sandbox, l_plate):
    turned = rotate_about_center(l_plate, Rotation.from_euler("zx", [30, 20], degrees=True).as_matrix())
    item = encoded(sandbox, turned, num_candidates=4, pose="auto")
    labels = [label for label, _ in fitted_programs(item)]
    unposed = [label for label in labels if "pose" not in label]
    assert {f"a sketch on {plane} extruded" for plane in ("XY", "ZX", "YZ")} <= set(unposed)
    assert any("pose" in label for label in labels)

    best, runs = best_fitted_start(item, sandbox, CloudDistance(item.dense), budget=len(labels))

    assert runs == len(labels) and "pose" in best.label
    assert "# pose" in best.code  # the line that places it back into the input's frame
    assert mesh_iou(best.result.to_trimesh(), in_model_units(turned, item)) > 0.9
    assert np.isfinite(best.cd_input)


@pytest.mark.parametrize("outline_fit", [True, False])
def test_when_every_model_program_fails_the_fit_alone_gives_the_part(sandbox, l_plate, outline_fit):
    item = encoded(sandbox, l_plate, ground_truth=("truth", l_plate))
    broken = "import cadquery as cq\nr=cq.Workplane('XY').box(10,10,0)\n"  # a box of no height: no solid
    rows = [((broken, 20, True), sandbox.run(broken))]
    assert not rows[0][1].ok

    rec = judge(item, rows, first_seed=0, decoding=Decoding(refine_evaluations=40, outline_fit=outline_fit),
                restore_units=False, sandbox=sandbox, model_name="written here", prompt_tokens=65, timings=Timings())

    assert rec.best is None  # no candidate of the model's won
    if not outline_fit:
        assert not rec.valid and rec.refinement is None
        return
    assert rec.valid and rec.truth.iou > 0.95
    assert rec.refinement.model_code == "" and rec.refinement.model_truth.iou is None
    assert rec.refinement.structure_edits[0].endswith("; no program of the model's was valid)")
    assert rec.refinement.evaluations <= 40


def test_a_noisy_scan_is_fitted_from_its_smoothed_points(sandbox, l_plate):
    from cad_recode.geometry.sampling import sample_surface
    from cad_recode.geometry.scan_noise import is_noisy

    points = sample_surface(l_plate, 8192, seed=0)
    # sigma 0.01 of the normalized frame: the part spans 200 units, so 1 unit
    scan = points + np.random.default_rng(0).normal(0.0, 1.0, points.shape)
    item = encoded(sandbox, scan)
    assert is_noisy(item.noise)

    best, _ = best_fitted_start(item, sandbox, CloudDistance(item.dense), budget=12)

    assert best.label == "a sketch on ZX extruded" and "circle(" in best.code, best.code
    assert mesh_iou(best.result.to_trimesh(), in_model_units(l_plate, item)) > 0.93


def test_a_noisy_thin_tube_is_fitted_as_a_tube_with_its_wall(sandbox):
    """Smoothing onto planes alone merged the faces of a 6-unit wall: the best fit was 77/76."""
    import re

    from cad_recode.geometry.sampling import sample_surface

    tube = sandbox.run("import cadquery as cq\nw0=cq.Workplane('ZX',origin=(0,-100,0))\n"
                       "r=w0.sketch().circle(82).circle(76,mode='s').finalize().extrude(200)\n").to_trimesh()
    points = sample_surface(tube, 8192, seed=3)
    scan = points + np.random.default_rng(5).normal(0.0, 1.0, points.shape)  # sigma 0.01 of the frame
    item = encoded(sandbox, scan)

    best, _ = best_fitted_start(item, sandbox, CloudDistance(item.dense, item.transform), budget=24)

    radii = re.search(r"circle\((\d+)\)\.circle\((\d+),mode='s'\)", best.code)
    assert radii, best.code
    outer, inner = (int(r) for r in radii.groups())
    assert 4 <= outer - inner <= 9, best.code
