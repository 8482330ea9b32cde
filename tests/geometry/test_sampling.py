"""Surface sampling, FPS, noise and to_model_points: determinism, coverage, units."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.normalize import Transform, fit_normalization
from cad_recode.geometry.sampling import (
    NUM_POINT_TOKENS,
    NUM_SURFACE_POINTS,
    ModelPoints,
    add_noise,
    farthest_point_sample,
    sample_surface,
    to_model_points,
)


@pytest.fixture(scope="module")
def bracket() -> trimesh.Trimesh:
    """An L-shaped part in mm, off the origin: long thin arms make coverage matter."""
    base = trimesh.creation.box(extents=[100, 60, 10]).apply_translation([50, 30, 5])
    wall = trimesh.creation.box(extents=[10, 60, 80]).apply_translation([5, 30, 50])
    return trimesh.util.concatenate([base, wall]).apply_translation([200, -40, 15])


@pytest.fixture(scope="module")
def dense(bracket) -> np.ndarray:
    return sample_surface(bracket, NUM_SURFACE_POINTS, seed=0)


def test_constants_match_the_protocol():
    assert (NUM_SURFACE_POINTS, NUM_POINT_TOKENS) == (8192, 256)


# --- sample_surface ---------------------------------------------------------------------------


def test_sample_surface_is_seeded_and_on_the_surface():
    box = trimesh.creation.box(extents=[2.0, 4.0, 6.0])
    a = sample_surface(box, seed=7)
    assert a.shape == (8192, 3) and a.dtype == np.float64
    np.testing.assert_array_equal(a, sample_surface(box, seed=7))
    assert not np.array_equal(a, sample_surface(box, seed=8))
    # Every sample lies on one of the six faces: |coordinate| == half extent on some axis.
    on_face = np.isclose(np.abs(a), [1.0, 2.0, 3.0], atol=1e-9).any(axis=1)
    assert on_face.all()
    # Area-weighted: the two 4x6 faces (x = +-1) hold 48 of the 88 units of area.
    share = np.isclose(np.abs(a[:, 0]), 1.0).mean()
    assert share == pytest.approx(48 / 88, abs=0.02)


def test_sample_surface_rejects_zero_area():
    flat = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [2, 0, 0]], faces=[[0, 1, 2]], process=False)
    with pytest.raises(InputError, match="no surface area"):
        sample_surface(flat, 10)


# --- farthest_point_sample ----------------------------------------------------------------------


def _coverage_radius(dense: np.ndarray, chosen: np.ndarray) -> float:
    """Largest distance from any dense point to its nearest chosen point."""
    return float(cKDTree(chosen).query(dense)[0].max())


def test_fps_covers_the_shape_better_than_random(dense):
    fps = dense[farthest_point_sample(dense, 256, seed=0)]
    fps_radius = _coverage_radius(dense, fps)
    rng = np.random.default_rng(0)
    random_radii = [
        _coverage_radius(dense, dense[rng.choice(len(dense), 256, replace=False)]) for _ in range(5)
    ]
    assert fps_radius < 0.75 * min(random_radii)
    # FPS reaches the far ends of the part: its bounding box is (nearly) the dense one.
    span = dense.max(0) - dense.min(0)
    np.testing.assert_allclose(fps.max(0) - fps.min(0), span, rtol=0.05)


def test_fps_is_greedy_farthest_point(dense):
    sub = dense[::4]
    idx = farthest_point_sample(sub, 64, seed=3)
    dist = np.linalg.norm(sub - sub[idx[0]], axis=1)
    for i in idx[1:]:
        assert dist[i] == pytest.approx(dist.max(), rel=1e-5)  # float32 inside fpsample
        dist = np.minimum(dist, np.linalg.norm(sub - sub[i], axis=1))


def test_fps_deterministic_per_seed_and_varies_across_seeds(dense):
    a = farthest_point_sample(dense, 256, seed=11)
    assert a.shape == (256,) and a.dtype == np.int64
    assert len(np.unique(a)) == 256
    np.testing.assert_array_equal(a, farthest_point_sample(dense, 256, seed=11))
    others = [farthest_point_sample(dense, 256, seed=s) for s in (12, 13, 14)]
    assert all(not np.array_equal(np.sort(a), np.sort(b)) for b in others)


def test_fps_pads_short_clouds_by_repeating_its_order():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=float)
    idx = farthest_point_sample(pts, 12, seed=0)
    assert idx.shape == (12,)
    assert sorted(idx[:5]) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(idx[5:10], idx[:5])
    np.testing.assert_array_equal(idx[10:], idx[:2])
    np.testing.assert_array_equal(farthest_point_sample(pts[:1], 4), [0, 0, 0, 0])


def test_fps_rejects_bad_requests():
    with pytest.raises(UsageError, match="n must be a positive integer"):
        farthest_point_sample(np.eye(3), 0)
    with pytest.raises(InputError, match="contains no points"):
        farthest_point_sample(np.zeros((0, 3)), 4)
    with pytest.raises(UsageError, match="seed must be an integer >= 0, got -1"):
        farthest_point_sample(np.eye(3), 2, seed=-1)


# --- add_noise ------------------------------------------------------------------------------------


def test_noise_std_in_the_given_units():
    clean = np.zeros((50_000, 3), dtype=np.float32)
    noisy = add_noise(clean, std=0.01, prob=1.0, rng=np.random.default_rng(0))
    assert noisy.dtype == np.float32
    assert noisy.std() == pytest.approx(0.01, rel=0.02)
    assert abs(noisy.mean()) < 1e-3
    assert not clean.any()  # input untouched


def test_noise_probability_is_per_cloud():
    rng = np.random.default_rng(1)
    clean = np.zeros((8, 3))
    noisy = [add_noise(clean, std=0.01, prob=0.3, rng=rng).any() for _ in range(2000)]
    assert np.mean(noisy) == pytest.approx(0.3, abs=0.04)
    never = add_noise(clean + 1, std=0.5, prob=0.0, rng=rng)
    np.testing.assert_array_equal(never, clean + 1)


@pytest.mark.parametrize("std, prob, message", [(-0.1, 0.5, "std must be >= 0"), (0.01, 1.5, r"in \[0, 1\]")])
def test_noise_rejects_bad_settings(std, prob, message):
    with pytest.raises(UsageError, match=message):
        add_noise(np.zeros((3, 3)), std=std, prob=prob, rng=np.random.default_rng())


# --- to_model_points --------------------------------------------------------------------------------


def test_mesh_to_model_points(bracket):
    mp = to_model_points(bracket, seed=5)
    assert isinstance(mp, ModelPoints)
    assert mp.points.shape == (256, 3) and mp.points.dtype == np.float32
    assert np.abs(mp.points).max() <= 1.0 + 1e-6
    assert mp.transform == fit_normalization(bracket.vertices)
    # The way back lands on the part in mm.
    back = mp.transform.invert(mp.points)
    lo, hi = bracket.bounds
    assert (back >= lo - 1e-3).all() and (back <= hi + 1e-3).all()
    again = to_model_points(bracket, seed=5)
    np.testing.assert_array_equal(mp.points, again.points)
    assert not np.array_equal(mp.points, to_model_points(bracket, seed=6).points)


def test_mesh_bbox_ignores_unreferenced_vertices(bracket):
    stray = trimesh.Trimesh(
        vertices=np.vstack([bracket.vertices, [[1e4, 1e4, 1e4]]]), faces=bracket.faces, process=False
    )
    assert to_model_points(stray).transform == to_model_points(bracket).transform


def test_cloud_is_reduced_then_fps(dense):
    big = np.vstack([dense, dense + [0.0, 0.0, 0.5]])  # 16384 points > n_surface
    mp = to_model_points(big, n_points=128, n_surface=4096, seed=2)
    assert mp.points.shape == (128, 3)
    assert mp.transform == fit_normalization(big)  # normalized by the whole cloud
    np.testing.assert_array_equal(mp.points, to_model_points(big, n_points=128, n_surface=4096, seed=2).points)


def test_small_cloud_is_padded_and_tiny_cloud_rejected():
    pts = np.random.default_rng(0).normal(size=(10, 3))
    mp = to_model_points(pts)
    assert mp.points.shape == (256, 3)
    assert len(np.unique(mp.points, axis=0)) == 10
    with pytest.raises(InputError, match="only 2 point"):
        to_model_points(pts[:2])
    with pytest.raises(InputError, match="zero extent"):
        to_model_points(np.ones((50, 3)))


def test_noise_is_in_normalized_units(dense):
    """Scaling the input by 1000 must not change the noise: it is added after normalization."""
    kwargs = dict(seed=4, noise_std=0.01, noise_prob=1.0)
    small = to_model_points(dense, **kwargs)
    huge = to_model_points(dense * 1000.0 + 5.0, **kwargs)
    np.testing.assert_allclose(small.points, huge.points, atol=1e-5)
    clean = to_model_points(dense, seed=4)
    delta = small.points - clean.points
    assert delta.std() == pytest.approx(0.01, rel=0.15)
    # Noise draws do not shift which points are chosen.
    assert np.abs(delta).max() < 0.06


def test_point_cloud_object_is_accepted(dense):
    via_object = to_model_points(trimesh.PointCloud(dense), seed=1)
    np.testing.assert_array_equal(via_object.points, to_model_points(dense, seed=1).points)


def test_a_transform_fitted_by_the_caller_is_used_as_given():
    """Inference fits a cloud's normalization once and hands it to every draw."""
    cloud = np.random.default_rng(5).uniform(-30.0, 30.0, size=(3000, 3))
    given = Transform(center=(1.0, 2.0, 3.0), scale=0.02)
    drawn = to_model_points(cloud, n_points=64, seed=0, transform=given)
    assert drawn.transform == given
    distances, _ = cKDTree(cloud).query(given.invert(drawn.points.astype(np.float64)))
    assert distances.max() < 1e-3  # every point is an input row, placed by the given transform
