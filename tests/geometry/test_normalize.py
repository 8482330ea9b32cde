"""The one normalization: bounding-box centre, 2 / max extent, exact inverse, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cad_recode.errors import InputError
from cad_recode.geometry.normalize import Transform, fit_normalization, normalize, validate_points


@pytest.fixture
def cloud() -> np.ndarray:
    rng = np.random.default_rng(3)
    # Anisotropic, off-centre box of points in "user units".
    return rng.uniform([-12.0, 40.0, 7.0], [30.0, 55.0, 9.5], size=(500, 3))


def test_bbox_centre_and_scale(cloud):
    t = fit_normalization(cloud)
    lo, hi = cloud.min(0), cloud.max(0)
    np.testing.assert_allclose(t.center, (lo + hi) / 2, rtol=0, atol=1e-12)
    assert t.scale == pytest.approx(2.0 / (hi - lo).max(), rel=1e-15)


def test_output_in_unit_cube_with_max_extent_two(cloud):
    out, _ = normalize(cloud)
    assert np.all(np.abs(out) <= 1 + 1e-12)
    extent = out.max(0) - out.min(0)
    assert extent.max() == pytest.approx(2.0, abs=1e-12)
    # The longest axis touches both faces of the cube; the others are centred.
    np.testing.assert_allclose((out.max(0) + out.min(0)) / 2, 0.0, atol=1e-12)
    assert extent[0] == pytest.approx(2.0, abs=1e-12)  # x is the longest side here
    assert extent[1] == pytest.approx(2.0 * 15.0 / 42.0, rel=0.05)


def test_round_trip_exact(cloud):
    out, t = normalize(cloud)
    np.testing.assert_allclose(t.invert(out), cloud, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t.apply(t.invert(out)), out, rtol=1e-12, atol=1e-12)


def test_apply_accepts_float32_and_any_leading_shape(cloud):
    t = fit_normalization(cloud)
    batch = cloud.astype(np.float32).reshape(5, 100, 3)
    out = t.apply(batch)
    assert out.shape == (5, 100, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out.reshape(-1, 3), t.apply(cloud.astype(np.float32)))


def test_transform_json_round_trip(cloud):
    t = fit_normalization(cloud)
    d = json.loads(json.dumps(t.to_dict()))
    assert set(d) == {"center", "scale"}
    back = Transform.from_dict(d)
    assert back == t
    np.testing.assert_array_equal(back.apply(cloud), t.apply(cloud))


def test_transform_is_frozen(cloud):
    t = fit_normalization(cloud)
    with pytest.raises(ValueError):
        t.center[0] = 1.0  # the array itself is read-only
    with pytest.raises(AttributeError):
        t.scale = 3.0


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"center": [0, 0]}, "expected"),
        ({"center": [0, 0, 0], "scale": 0.0}, "scale must be a finite positive number"),
        ({"center": [0, float("nan"), 0], "scale": 1.0}, "center must be 3 finite numbers"),
    ],
)
def test_from_dict_rejects_bad_transforms(bad, message):
    with pytest.raises(InputError, match=message):
        Transform.from_dict(bad)


def test_planar_cloud_is_fine():
    # Zero extent on one axis only: the max extent still sets the scale.
    pts = np.array([[0, 0, 5], [4, 0, 5], [0, 2, 5], [4, 2, 5]], dtype=float)
    out, t = normalize(pts)
    assert t.scale == pytest.approx(0.5)
    np.testing.assert_allclose(out[:, 2], 0.0)
    np.testing.assert_allclose(out.max(0), [1.0, 0.5, 0.0])


@pytest.mark.parametrize(
    "xyz, message",
    [
        (np.zeros((0, 3)), "contains no points"),
        (np.array([[0.0, 0.0, 0.0], [1.0, np.nan, 0.0]]), r"1 of 2 points contain NaN or inf \(first at row 1\)"),
        (np.array([[0.0, 0.0, np.inf], [1.0, 1.0, 0.0]]), "NaN or inf"),
        (np.ones((10, 3)), "zero extent"),
        (np.array([[0.0, 0.0, 0.0], [1e200, 0.0, 0.0], [0.0, 1.0, 0.0]]),
         r"1 of 3 points lie beyond ±1e\+12 \(first at row 1: 1e\+200 0 0\); no part is this large"),
        (np.array([[0.0, 0.0, 0.0], [-1e308, 0.0, 0.0], [1e308, 1.0, 0.0]]), "2 of 3 points lie beyond"),
        (np.zeros((10, 2)), r"expected an \(N, 3\) array.*shape \(10, 2\)"),
        (np.zeros(3), r"shape \(3,\)"),
        (np.array([["a", "b", "c"]]), "real numbers"),
    ],
)
def test_bad_inputs_raise_one_clear_error(xyz, message):
    with pytest.raises(InputError, match=message):
        fit_normalization(xyz)


def test_validate_points_names_the_source_and_minimum():
    with pytest.raises(InputError, match=r"^scan\.xyz: only 2 point\(s\), at least 3 are needed"):
        validate_points(np.eye(3)[:2], where="scan.xyz", min_points=3)
    # Extent is only checked when asked.
    same = validate_points(np.ones((4, 3)), require_extent=False)
    assert same.dtype == np.float64 and same.shape == (4, 3)
