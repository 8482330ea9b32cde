"""What the API takes as an input, and one clear error for what it does not."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from cad_recode.errors import InputError
from cad_recode.inference.inputs import load_input

CLOUD = np.random.default_rng(0).uniform(-1, 1, size=(50, 3))


@pytest.mark.parametrize("source, name", [
    (CLOUD, "points"),
    (CLOUD.tolist(), "points"),
    (trimesh.PointCloud(CLOUD), "points"),
    (("scan 7", CLOUD), "scan 7"),
])
def test_points_in_any_container_read_the_same(source, name):
    got_name, points = load_input(source)
    assert got_name == name and np.array_equal(points, CLOUD)


@pytest.mark.parametrize("source", [{"points": CLOUD}, trimesh.Scene(), ["a", "b", "c"], object()])
def test_anything_else_is_one_error_that_says_what_an_input_may_be(source):
    with pytest.raises(InputError, match=rf"an input must be a file path, .*; got a {type(source).__name__}$"):
        load_input(source)
