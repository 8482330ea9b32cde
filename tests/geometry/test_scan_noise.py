"""A noisy scan's box comes from its smoothed points; a clean cloud keeps its own box exactly."""

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from cad_recode.geometry.metrics import CloudDistance
from cad_recode.geometry.normalize import fit_normalization
from cad_recode.geometry.sampling import add_noise, sample_surface, to_model_points
from cad_recode.geometry.scan_noise import (
    NOISY_RESIDUAL, cloud_normalization, smooth_keeping_walls, smooth_onto_planes, surface_noise,
)

PLATE = (200.0, 200.0, 40.0)


def plate_cloud(noise: float, seed: int = 0, extents=PLATE) -> np.ndarray:
    """8192 points on a plate's surface with Gaussian noise of ``noise`` (normalized units: the plate is 200 long)."""
    clean = sample_surface(trimesh.creation.box(extents=extents), 8192, seed=seed)
    return add_noise(clean, std=noise * 100.0, prob=1.0, rng=np.random.default_rng(seed))


def test_noise_is_measured_in_normalized_units_and_is_zero_on_flat_clean_faces():
    assert surface_noise(plate_cloud(0.0)) < 1e-6
    assert 0.003 < surface_noise(plate_cloud(0.01)) < 0.005
    assert np.isclose(surface_noise(plate_cloud(0.01) * 1000.0), surface_noise(plate_cloud(0.01)))  # any units
    assert surface_noise(np.eye(3)) == 0.0  # too few points for a neighbourhood


def test_a_clean_cloud_keeps_its_own_box_exactly_thin_walls_included(sandbox):
    thin_ring = sandbox.run("import cadquery as cq\n"
                            "r=cq.Workplane('YZ').sketch().circle(100).circle(97,mode='s').finalize().extrude(61)")
    for part in (trimesh.creation.cylinder(radius=30, height=12, sections=64), thin_ring.to_trimesh()):
        clean = sample_surface(part, 8192, seed=1)
        assert surface_noise(clean) <= NOISY_RESIDUAL
        assert cloud_normalization(clean) == fit_normalization(clean)


def test_a_noisy_cloud_is_scaled_like_the_part_not_like_its_outliers():
    true_scale = 2.0 / PLATE[0]
    noisy = plate_cloud(0.01)
    assert fit_normalization(noisy).scale / true_scale < 0.975  # the outliers' box: 2.5 % and more too wide
    robust = cloud_normalization(noisy)
    assert abs(robust.scale / true_scale - 1.0) < 0.01
    assert np.abs(robust.center).max() < 1.0  # the plate is centred at the origin
    assert to_model_points(noisy, seed=3).transform == robust  # the model reads the part at its size


def test_smoothing_puts_a_face_s_points_back_on_its_plane():
    noisy = plate_cloud(0.01)
    top = (noisy[:, 2] > 15.0) & (np.abs(noisy[:, :2]).max(axis=1) < 90.0)  # inside the top face (z = 20)
    assert np.std(noisy[top, 2]) > 0.8
    assert np.std(smooth_onto_planes(noisy)[top, 2]) < 0.3


def test_judging_a_noisy_scan_prefers_the_part_s_true_proportions():
    """The outliers' box would make a thinner plate fit better; the smoothed box keeps the true one."""
    noisy = plate_cloud(0.01, seed=2)
    plates = {t: trimesh.creation.box(extents=(200.0, 200.0, t)) for t in (40.0, 38.0)}
    to_scan = CloudDistance(noisy)
    assert to_scan(plates[40.0]) < to_scan(plates[38.0])

    raw = CloudDistance.__new__(CloudDistance)  # the same criterion with the outliers' box, to show what changed
    raw.cloud = fit_normalization(noisy).apply(noisy)
    raw.tree = cKDTree(raw.cloud)
    assert raw(plates[38.0]) < raw(plates[40.0])


def test_smoothing_that_keeps_walls_leaves_a_thin_wall_s_faces_apart():
    """A tube 82/76 (200 long) under noise of one unit: onto planes its faces meet in the middle."""
    tube = trimesh.creation.cylinder(radius=82.0, height=200.0, sections=256).difference(
        trimesh.creation.cylinder(radius=76.0, height=240.0, sections=256), engine="manifold")
    clean = sample_surface(tube, 8192, seed=1)
    noisy = add_noise(clean, std=1.0, prob=1.0, rng=np.random.default_rng(0))
    outer = np.linalg.norm(clean[:, :2], axis=1) > 79.0
    along = np.abs(clean[:, 2]) < 95.0  # on the side walls, away from the ends

    def wall(points):  # mean radius of each face's points
        radius = np.linalg.norm(points[:, :2], axis=1)
        return radius[outer & along].mean(), radius[~outer & along].mean()

    merged = wall(smooth_onto_planes(noisy))
    assert merged[0] - merged[1] < 1.5  # the 6-unit wall read as about 1
    smoothed = smooth_keeping_walls(noisy, width=2.0 * surface_noise(noisy) * 100.0)
    kept = wall(smoothed)
    assert kept[0] - kept[1] > 4.5
    assert abs(kept[0] - 82.0) < 1.0 and abs(kept[1] - 76.0) < 1.0
    radial_error = np.linalg.norm(smoothed[:, :2], axis=1) - np.linalg.norm(clean[:, :2], axis=1)
    assert np.std(radial_error[outer & along]) < 0.9  # of the noise's 1.0: it is averaged, if less
