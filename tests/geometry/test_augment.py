"""Scan augmentations and robustness conditions: in the frame, seeded, and really defective."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from cad_recode.errors import UsageError
from cad_recode.geometry.augment import (
    ScanAugmentation,
    augmented_model_points,
    missing_side,
    uneven_density,
)
from cad_recode.geometry.metrics import mesh_iou
from cad_recode.geometry.normalize import fit_normalization
from cad_recode.geometry.robustness import (
    CONDITION_NAMES,
    condition_by_name,
    condition_shape,
    shape_seed,
)
from cad_recode.geometry.sampling import sample_surface, to_model_points

HARSH = ScanAugmentation(noise_prob=1.0, noise_std=0.05, uneven_prob=1.0, uneven_strength=0.99,
                         missing_side_prob=1.0, missing_fraction=0.5)


def part() -> trimesh.Trimesh:
    """An L made of two boxes: nothing symmetric about it."""
    base = trimesh.creation.box((100.0, 60.0, 10.0))
    wall = trimesh.creation.box((10.0, 60.0, 50.0))
    wall.apply_translation((45.0, 0.0, 30.0))
    return trimesh.util.concatenate([base, wall])


@pytest.mark.parametrize("seed", range(6))
def test_augmented_points_stay_in_the_frame(seed):
    points = augmented_model_points(part(), HARSH, seed=seed).points
    assert points.shape == (256, 3) and points.dtype == np.float32
    assert np.abs(points).max() <= 1.0


def test_augmentation_is_deterministic_by_seed_and_varies_with_it():
    a = augmented_model_points(part(), HARSH, seed=4).points
    b = augmented_model_points(part(), HARSH, seed=4).points
    c = augmented_model_points(part(), HARSH, seed=5).points
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_noise_only_matches_the_training_sampler_clipped():
    """Uneven density and cut off: the very points (and noise) of to_model_points, only clipped."""
    only_noise = ScanAugmentation(noise_prob=1.0, noise_std=0.02, uneven_prob=0.0, missing_side_prob=0.0)
    ours = augmented_model_points(part(), only_noise, seed=7).points
    theirs = to_model_points(part(), seed=7, noise_std=0.02, noise_prob=1.0).points
    assert np.abs(theirs).max() > 1.0  # noise alone leaves the frame ...
    assert np.array_equal(ours, np.clip(theirs, -1.0, 1.0))  # ... the augmentation keeps it in


def test_off_is_the_clean_sampler():
    ours = augmented_model_points(part(), ScanAugmentation.off(), seed=2).points
    assert np.allclose(ours, to_model_points(part(), seed=2).points, atol=1e-7)


def test_missing_side_really_lacks_that_side():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, size=(9000, 3))
    kept, cut = missing_side(xyz, 1.0 / 3.0, rng, axis=1, sign=-1.0)
    assert cut.axis == 1 and cut.sign == -1.0
    assert len(kept) == pytest.approx(6000, abs=2)
    assert kept[:, 1].min() >= -1.0 / 3.0 - 0.01  # the -y third is gone
    assert not cut.removed(kept).any() and cut.removed(xyz).sum() == pytest.approx(3000, abs=2)


def test_a_flat_face_is_cut_whole_not_split():
    points = sample_surface(trimesh.creation.box((100.0, 60.0, 10.0)), seed=0) / 50.0
    top = points[:, 2].max()
    kept, cut = missing_side(points, 1.0 / 3.0, np.random.default_rng(0), axis=2, sign=1.0)
    assert cut.axis == 2 and cut.sign == 1.0
    assert not np.isclose(kept[:, 2], top, atol=1e-4).any()  # the top face went whole: 6000 of 15200 area
    assert 1 - len(kept) / len(points) == pytest.approx(6000 / 15200, abs=0.02)


def test_missing_side_in_the_model_points():
    """With the cut certain, one end of the frame holds no model point on some axis."""
    cut_only = ScanAugmentation(noise_prob=0.0, uneven_prob=0.0, missing_side_prob=1.0)
    box = trimesh.creation.box((100.0, 90.0, 80.0))
    for seed in range(3):
        points = augmented_model_points(box, cut_only, seed=seed).points
        reach = np.concatenate([points.max(axis=0), -points.min(axis=0)])
        assert np.sort(reach)[0] < 0.5 < np.sort(reach)[1]  # exactly one side is cut back


def test_uneven_density_thins_along_the_direction():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-1, 1, size=(20000, 3))
    kept = uneven_density(xyz, 0.9, rng, direction=np.array([1.0, 0.0, 0.0]))
    low, high = (kept[:, 0] < -0.5).sum(), (kept[:, 0] > 0.5).sum()
    assert low > 3 * high  # the +x end keeps about 10 % to 32 %, the -x end 77 % to 100 %


@pytest.mark.parametrize("field, value", [("noise_prob", 1.5), ("noise_std", -0.1), ("uneven_strength", 1.0),
                                          ("missing_fraction", 1.0), ("missing_side_prob", -0.1)])
def test_bad_augmentation_settings_are_one_clear_error(field, value):
    with pytest.raises(UsageError, match=field):
        ScanAugmentation(**{field: value})


# --------------------------------------------------------------------------- evaluation conditions


def test_conditions_are_the_issue_targets_and_seeded():
    assert CONDITION_NAMES == ("clean", "rotated", "noise_0.01", "noise_0.02", "missing_side", "clean_cloud",
                               "stray_points")
    with pytest.raises(UsageError, match="choose one of: clean, rotated"):
        condition_by_name("rotate")
    assert shape_seed(0, "17") == shape_seed(0, "17") != shape_seed(0, "18")


def test_rotated_condition_turns_input_and_truth_together():
    mesh = part()
    shaped = condition_shape(mesh, condition_by_name("rotated"), seed=shape_seed(0, "a"))
    assert shaped.input is shaped.truth
    assert np.isclose(np.linalg.det(shaped.rotation), 1.0) and not np.allclose(shaped.rotation, np.eye(3))
    assert np.allclose(np.asarray(shaped.truth.bounds).mean(0), np.asarray(mesh.bounds).mean(0), atol=20)
    assert mesh_iou(shaped.truth, mesh) < 0.9  # really turned ...
    assert np.isclose(shaped.truth.volume, mesh.volume)  # ... and not deformed


@pytest.mark.parametrize("std", [0.01, 0.02])
def test_noise_condition_is_a_noisy_cloud_in_input_units(std):
    mesh = part()
    shaped = condition_shape(mesh, condition_by_name(f"noise_{std}"), seed=5)
    assert shaped.truth is mesh and shaped.input.shape == (8192, 3)
    transform = fit_normalization(np.asarray(mesh.bounds))
    normalized = transform.apply(shaped.input)
    assert np.abs(normalized).max() < 1.0 + 6 * std and np.abs(normalized).max() > 1.0  # noise in normalized units
    bottom = transform.apply([[0, 0, -5.0]])[0, 2]
    inside = (np.abs(normalized[:, 0]) < 0.7) & (np.abs(normalized[:, 1]) < 0.4)  # away from the edges
    face_z = normalized[inside & (np.abs(normalized[:, 2] - bottom) < 4 * std)]
    assert np.std(face_z[:, 2]) == pytest.approx(std, rel=0.25)  # the bottom face, blurred by std


def test_missing_side_condition_drops_a_third_of_the_surface():
    mesh = part()
    shaped = condition_shape(mesh, condition_by_name("missing_side"), seed=9)
    assert len(shaped.input) == pytest.approx(8192 * 2 / 3, abs=2)
    normalized = fit_normalization(np.asarray(mesh.bounds)).apply(shaped.input)
    assert not shaped.cut.removed(normalized).any()


def test_stray_points_condition_strews_half_a_percent_around_the_clean_surface_and_infer_drops_them():
    from cad_recode.geometry.stray_points import drop_stray_points

    mesh = part()
    shaped = condition_shape(mesh, condition_by_name("stray_points"), seed=4)
    assert shaped.truth is mesh and shaped.input.shape == (8192 + 41, 3)
    transform = fit_normalization(np.asarray(mesh.bounds))
    normalized = transform.apply(shaped.input)
    assert np.abs(normalized[:8192]).max() <= 1.0 + 1e-9 and 2.0 < np.abs(normalized[8192:]).max() <= 3.0
    kept = drop_stray_points(shaped.input)
    assert kept.dropped == 41
    assert fit_normalization(kept.points) == fit_normalization(shaped.input[:8192])  # not the strays' box, 3x wider


def test_clean_cloud_condition_is_the_surface_sample_the_other_clouds_start_from():
    mesh = part()
    cloud = condition_shape(mesh, condition_by_name("clean_cloud"), seed=4)
    strays = condition_shape(mesh, condition_by_name("stray_points"), seed=4)
    assert cloud.truth is mesh and cloud.input.shape == (8192, 3)
    np.testing.assert_allclose(strays.input[:8192], cloud.input)
