"""--pose auto: a rotated part is decoded in its own axes and placed back into the input's frame.

The memorizer writes the axis-aligned cube program for cube points; a cube turned
off the axes is where the pose matters: decoded as given, the cube comes back
axis-aligned (IoU well under 1), decoded under the part's own box frame and
placed back, it matches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/infer_artifacts.py
import infer_artifacts as art  # noqa: E402

from cad_recode.cli import main  # noqa: E402
from cad_recode.errors import UsageError  # noqa: E402
from cad_recode.geometry.metrics import mesh_iou  # noqa: E402
from cad_recode.geometry.robustness import rotate_about_center  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TURN = Rotation.from_euler("zx", [30, 20], degrees=True).as_matrix()


@pytest.fixture(scope="module")
def rotated_cube(cube_mesh):
    return rotate_about_center(cube_mesh, TURN)


def reconstruct(models, sandbox, mesh, **kwargs):
    model = CADRecoder.from_pretrained(models["full"], sandbox=sandbox, device="cpu")
    return model.reconstruct(mesh, num_candidates=2, restore_units=True, max_new_tokens=art.MAX_NEW_TOKENS, **kwargs)


def test_pose_auto_recovers_a_rotated_cube(models, sandbox, cube_mesh, rotated_cube):
    rec = reconstruct(models, sandbox, rotated_cube, pose="auto", pose_budget=2)
    assert rec.valid and rec.winning_pose is not None
    # the memorizer writes an 80 mm cube for a cube filling the frame: IoU is the protocol's, both normalized
    back = rotate_about_center(rec.mesh, TURN.T)  # the inverse transform, about the same centre (the origin)
    assert mesh_iou(back, cube_mesh) >= 0.95
    assert "# pose" in rec.code and ".rotate(" in rec.code  # placed back by a line of the program itself
    report = rec.to_report()
    assert report["pose"] == rec.winning_pose and report["decoding"]["pose"] == "auto"
    assert all(c["pose"] for c in report["candidates"])
    assert np.allclose(report["transform"]["scale"], rec.transform.scale)
    # T0, the input's own normalization, puts the input points into [-1, 1]^3
    assert np.abs(rec.input_points).max() <= 1.0 + 1e-9

    as_given = reconstruct(models, sandbox, rotated_cube, pose="none")
    assert as_given.valid and as_given.winning_pose is None and "pose" not in as_given.to_report()["candidates"][0]
    assert mesh_iou(rotate_about_center(as_given.mesh, TURN.T), cube_mesh) < 0.9  # the pose is what made it match
    assert as_given.looks_turned

    by_default = reconstruct(models, sandbox, rotated_cube, pose_budget=2)  # "if_turned": it looks turned
    assert by_default.looks_turned and by_default.to_report()["decoding"]["pose"] == "if_turned"
    assert by_default.winning_pose is not None and mesh_iou(rotate_about_center(by_default.mesh, TURN.T), cube_mesh) >= 0.95
    upright = reconstruct(models, sandbox, cube_mesh)
    assert not upright.looks_turned and upright.winning_pose is None and upright.code == reconstruct(
        models, sandbox, cube_mesh, pose="none").code  # an upright part is read exactly as with --pose none


def test_pose_flags_on_infer(models, tmp_path, rotated_cube, capsys):
    source = tmp_path / "turned.stl"
    rotated_cube.export(source)
    out = tmp_path / "turned.py"
    assert main(["infer", "--base_model", str(models["full"]), "--point_cloud_file", str(source), "--pose", "auto",
                 "--pose_budget", "2", "--num_candidates", "2", "--output", str(out),
                 "--max_new_tokens", str(art.MAX_NEW_TOKENS)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["pose"] and report["decoding"]["pose_budget"] == 2
    assert f"pose {report['pose']}" in capsys.readouterr().err


def test_bad_pose_settings_say_so():
    with pytest.raises(UsageError, match="pose must be one of if_turned, none, auto"):
        Decoding(pose="sideways")
    with pytest.raises(UsageError, match="pose_budget must be a positive integer"):
        Decoding(pose="auto", pose_budget=0)
