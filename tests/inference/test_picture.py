"""part.png: the input as the user gave it, the reconstruction and both overlaid, with units, CD and IoU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/infer_artifacts.py
import infer_artifacts as art  # noqa: E402

from cad_recode.geometry.sampling import sample_surface  # noqa: E402
from cad_recode.inference import CADRecoder  # noqa: E402
from cad_recode.inference.export import write_picture  # noqa: E402
from cad_recode.inference.picture import MAX_POINTS, MAX_TRIANGLES, render_comparison  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(models, sandbox):
    return CADRecoder.from_pretrained(models["full"], sandbox=sandbox, device="cpu")


def millimetre_part(cube_mesh) -> trimesh.Trimesh:
    """The cube as a real part: 8 mm across, away from the origin."""
    part = cube_mesh.copy()
    part.vertices = np.asarray(part.vertices) / 10 + [50.0, -20.0, 5.0]
    return part


def test_mesh_input_three_panels_cd_and_iou_in_title_model_units(model, cube_mesh, tmp_path):
    rec = model.reconstruct(millimetre_part(cube_mesh), ground_truth=millimetre_part(cube_mesh),
                            max_new_tokens=art.MAX_NEW_TOKENS)
    picture = write_picture(rec, tmp_path / "part.png")
    assert picture.panels == ("input (mesh)", "reconstruction", "overlay: input points on the reconstruction")
    assert f"CD to input {rec.cd_input:.3f} (x10^3)" in picture.title and "IoU vs ground truth 100.0%" in picture.title
    assert picture.axis_labels == tuple(f"{a} (model units (the part spans 200))" for a in "xyz")
    assert picture.num_input_triangles == len(cube_mesh.faces)  # the mesh as given, not 64 sampled points
    assert len(rec.input_cloud) == 8192 and 64 < picture.num_input_points <= MAX_POINTS  # dense, subsampled
    with Image.open(picture.path) as png:
        assert png.size == (1200, 440)


def test_point_input_restored_units_is_drawn_in_input_units(model, cube_mesh, tmp_path):
    points = sample_surface(millimetre_part(cube_mesh), 3000, seed=1)
    rec = model.reconstruct(points, restore_units=True, max_new_tokens=art.MAX_NEW_TOKENS)
    picture = write_picture(rec, tmp_path / "part.png")
    assert picture.panels[0] == "input (points)" and len(picture.panels) == 3
    assert picture.axis_labels[0] == "x (input units)" and "IoU" not in picture.title
    assert picture.num_input_triangles == 0 and picture.num_input_points == 3000


def test_every_panel_shares_one_box_and_large_meshes_are_subsampled(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    big = trimesh.creation.icosphere(subdivisions=6).apply_scale(50)  # 81920 faces
    assert len(big.faces) > 4 * MAX_TRIANGLES
    saved = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), original(self, *a, **k))[1])
    picture = render_comparison(np.asarray(big.vertices)[:9000], None, tmp_path / "x.png", input_mesh=big, units="mm")
    assert picture.num_input_triangles <= MAX_TRIANGLES and picture.num_input_points <= MAX_POINTS
    assert picture.axis_labels == ("x (mm)", "y (mm)", "z (mm)")
    (figure,) = saved
    assert len(figure.axes) == 3
    assert all(np.allclose(a.get_xlim(), (-50, 50), atol=0.01) for a in figure.axes)
    assert "no valid solid" in [t.get_text() for t in figure.axes[1].texts]
