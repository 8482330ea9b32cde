"""The tiny models of tests/infer_artifacts.py, shared by the inference test modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/infer_artifacts.py
import infer_artifacts as art  # noqa: E402

from cad_recode.geometry.shapes import example_program  # noqa: E402


@pytest.fixture(scope="module")
def cube_mesh(sandbox):
    return sandbox.run(example_program("cube")).to_trimesh()


@pytest.fixture(scope="module")
def models(tmp_path_factory, cube_mesh):
    """``full``: a full model that writes the cube program; ``run``: an adapter on it that writes invalid ones."""
    root = tmp_path_factory.mktemp("models")
    full = art.save_memorizer(cube_mesh, root / "full")
    points = art.shape_points(cube_mesh)
    broken = art.adapter_run(full, root / "run", points, example_program("cylinder"), merged=True)
    return {"full": full, "run": broken}
