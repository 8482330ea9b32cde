"""Protocol metrics against values that can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from cad_recode.geometry.metrics import (
    CD_SCALE,
    CloudDistance,
    CloudGap,
    MetricSummary,
    candidate_distances,
    chamfer_distance,
    compare_meshes,
    interior_fraction,
    invalid_ratio,
    iou,
    mesh_chamfer,
    mesh_iou,
    normalize_to_unit_cube,
    select_best,
    summarize,
)
from cad_recode.geometry.normalize import fit_normalization
from cad_recode.geometry.sampling import sample_surface
from cad_recode.geometry.sandbox import ExecResult, ExecStatus


def cube(side: float = 1.0, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.box((side, side, side))
    mesh.apply_translation(at)
    return mesh


def box(extents, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents)
    mesh.apply_translation(at)
    return mesh


def sampling_floor(area: float, n: int) -> float:
    """Expected CD ×10³ of two independent n-point samplings of one surface.

    For uniform points of density n/A the mean squared nearest-neighbour
    distance is A/(π n); the protocol adds both directions.
    """
    return 2 * area / (math.pi * n) * CD_SCALE


# ----------------------------------------------------------------- normalization


def test_unit_cube_normalization_centres_and_scales_longest_side_to_one():
    mesh = box((4.0, 2.0, 1.0), at=(10.0, -3.0, 7.0))
    unit = normalize_to_unit_cube(mesh)
    np.testing.assert_allclose(unit.bounds, [[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125]], atol=1e-12)
    np.testing.assert_allclose(mesh.bounds[0], [8.0, -4.0, 6.5])  # input untouched


# ----------------------------------------------------------------- Chamfer distance


def grid(spacing: float = 1.0, size: int = 6) -> np.ndarray:
    axis = np.arange(size) * spacing
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def test_chamfer_of_known_offset_is_twice_its_square():
    # Every shifted point's nearest neighbour is its original (0.1 < spacing / 2),
    # so each direction averages 0.1² and the protocol sums the two directions.
    points = grid()
    assert chamfer_distance(points, points + [0.1, 0.0, 0.0]) == pytest.approx(2 * 0.1**2, rel=1e-12)


def test_chamfer_of_identical_points_is_zero_and_asymmetric_sets_are_symmetric():
    points = grid()
    assert chamfer_distance(points, points) == 0.0
    subset = points[::3] + 0.05
    assert chamfer_distance(points, subset) == chamfer_distance(subset, points)


def test_chamfer_with_one_point_each_is_their_squared_distance_twice():
    assert chamfer_distance(np.zeros((1, 3)), np.array([[3.0, 4.0, 0.0]])) == pytest.approx(50.0)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros((5, 2)), np.zeros(3)])
def test_chamfer_rejects_arrays_that_are_not_point_sets(bad):
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        chamfer_distance(bad, np.zeros((4, 3)))


def test_mesh_chamfer_of_one_mesh_with_itself_is_zero():
    mesh = trimesh.creation.cylinder(radius=1.0, height=3.0, sections=48)
    assert mesh_chamfer(mesh, mesh.copy()) == pytest.approx(0.0, abs=1e-12)


def test_mesh_chamfer_ignores_placement_and_size():
    # The protocol normalizes both shapes, so a moved, scaled copy scores as identical.
    mesh = box((3.0, 2.0, 1.0))
    moved = mesh.copy()
    moved.apply_scale(25.0)
    moved.apply_translation((40.0, -7.0, 3.0))
    assert mesh_chamfer(mesh, moved) == pytest.approx(0.0, abs=1e-9)


def test_mesh_chamfer_of_one_surface_sampled_differently_stays_under_the_sampling_floor():
    # A re-triangulated cube is the same surface but gets different samples:
    # its CD is sampling noise only (floor ≈ 0.47 for a unit cube, area 6).
    mesh = cube()
    retriangulated = mesh.subdivide().subdivide()
    floor = sampling_floor(area=6.0, n=8192)
    cd = mesh_chamfer(mesh, retriangulated)
    assert 0.0 < cd < 1.5 * floor
    # A cube with one side 10 % longer is clearly above that floor.
    assert mesh_chamfer(mesh, box((1.0, 1.0, 1.1))) > 3 * floor


def test_mesh_chamfer_is_symmetric_and_seeded():
    a = cube()
    b = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=64)
    forward = mesh_chamfer(a, b, seed=3)
    assert forward == pytest.approx(mesh_chamfer(b, a, seed=3), rel=1e-12)
    assert forward == mesh_chamfer(a, b, seed=3)
    assert forward > 1.0


def test_mesh_chamfer_matches_direct_computation_on_protocol_samples():
    a, b = cube(), box((1.0, 1.0, 0.5))
    points_a = sample_surface(normalize_to_unit_cube(a), n=2048, seed=1)
    points_b = sample_surface(normalize_to_unit_cube(b), n=2048, seed=1)
    distance_ab = np.min(np.linalg.norm(points_a[:, None] - points_b[None], axis=-1), axis=1)
    distance_ba = np.min(np.linalg.norm(points_b[:, None] - points_a[None], axis=-1), axis=1)
    expected = (np.mean(distance_ab**2) + np.mean(distance_ba**2)) * 1e3
    assert mesh_chamfer(a, b, n=2048, seed=1) == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------- IoU


def test_iou_of_cube_and_copy_shifted_by_half_a_side_is_one_third():
    # Intersection 0.5, union 1.5.
    assert iou(cube(), cube(at=(0.5, 0.0, 0.0))) == pytest.approx(1 / 3, abs=1e-9)


@pytest.mark.parametrize(
    "other, expected",
    [
        (cube(), 1.0),
        (cube(at=(2.0, 0.0, 0.0)), 0.0),
        (cube(side=2.0), 1 / 8),
        (cube(at=(0.5, 0.5, 0.5)), (1 / 8) / (2 - 1 / 8)),
    ],
    ids=["identical", "disjoint", "nested", "corner-overlap"],
)
def test_iou_analytic_cases(other, expected):
    assert iou(cube(), other) == pytest.approx(expected, abs=1e-9)


def test_iou_counts_every_component_of_a_multi_body_mesh():
    two_cubes = trimesh.util.concatenate([cube(), cube(at=(3.0, 0.0, 0.0))])
    assert iou(two_cubes, cube()) == pytest.approx(0.5, abs=1e-9)


def test_iou_welds_triangle_soup_as_read_from_stl():
    soup = trimesh.Trimesh(
        cube().triangles.reshape(-1, 3), np.arange(36).reshape(-1, 3), process=False
    )
    assert iou(soup, cube(at=(0.5, 0.0, 0.0))) == pytest.approx(1 / 3, abs=1e-9)


def test_mesh_iou_normalizes_both_shapes_first():
    assert mesh_iou(cube(), cube(side=7.0, at=(0.5, 9.0, 0.0))) == pytest.approx(1.0, abs=1e-9)
    # 1 x 1 x 0.5 slab inside the unit cube after normalization: half of it.
    assert mesh_iou(cube(), box((2.0, 2.0, 1.0))) == pytest.approx(0.5, abs=1e-9)


def test_iou_of_an_open_mesh_is_an_error_that_says_why():
    full = cube()
    open_box = trimesh.Trimesh(full.vertices, full.faces[:-2])
    with pytest.raises(ValueError, match="mesh A is not a closed.*watertight"):
        iou(open_box, full)


def test_iou_of_an_inside_out_mesh_is_an_error():
    inverted = cube()
    inverted.invert()
    with pytest.raises(ValueError, match="mesh B has no positive volume"):
        iou(cube(), inverted)


def test_compare_meshes_keeps_cd_when_iou_is_undefined():
    full = cube()
    open_box = trimesh.Trimesh(full.vertices, full.faces[:-2])
    result = compare_meshes(full, open_box)
    assert math.isfinite(result.cd)
    assert math.isnan(result.iou) and "not a closed" in result.iou_error
    good = compare_meshes(full, full.copy())
    assert good.cd == pytest.approx(0.0, abs=1e-12) and good.iou == pytest.approx(1.0)
    assert good.to_dict() == {"cd": good.cd, "iou": good.iou, "iou_error": ""}


# ----------------------------------------------------------------- invalid ratio and summary


def test_invalid_ratio_counts_none_false_and_failed_results():
    ok = ExecResult(status=ExecStatus.OK)
    timeout = ExecResult(status=ExecStatus.TIMEOUT, reason="ran past 3 s")
    assert invalid_ratio([ok, timeout, None, cube()]) == pytest.approx(0.5)
    assert invalid_ratio([True, False, True, True]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no results"):
        invalid_ratio([])


def test_summarize_reports_the_published_table_columns():
    summary = summarize(cds=[0.1, 0.3, None, 0.2], ious=[0.9, 0.7, None, math.nan])
    assert summary == MetricSummary(
        count=4, valid=3, mean_cd=pytest.approx(0.2), median_cd=pytest.approx(0.2),
        mean_iou=pytest.approx(0.8), invalid_ratio=0.25,
    )
    assert summary.format() == "IoU 80.0% | mean CD 0.200 | median CD 0.200 | IR 25.0% (1/4 invalid)"


def test_summarize_with_nothing_valid_gives_nan_and_full_ir():
    summary = summarize(cds=[None, math.nan], ious=[None, None])
    assert summary.valid == 0 and summary.invalid_ratio == 1.0 and math.isnan(summary.mean_cd)
    with pytest.raises(ValueError, match="length"):
        summarize(cds=[1.0], ious=[])


# ----------------------------------------------------------------- best of N


def scan_of(mesh: trimesh.Trimesh, n: int = 2048) -> np.ndarray:
    """An 'input point cloud' in the user's own units (not normalized)."""
    return sample_surface(mesh, n=n, seed=11)


def test_select_best_picks_the_candidate_closest_to_the_input_and_skips_invalid():
    # The input is a long bar, in millimetres and off-centre; candidates are in
    # other units: normalization must make the bar-shaped one win.
    input_points = scan_of(box((40.0, 10.0, 10.0), at=(100.0, 5.0, 0.0)))
    candidates = [
        None,
        cube(),
        box((4.0, 1.0, 1.0)),
        trimesh.creation.cylinder(radius=0.5, height=4.0, sections=48),
        None,
    ]
    assert select_best(candidates, input_points) == 2
    distances = candidate_distances(candidates, input_points)
    assert math.isinf(distances[0]) and math.isinf(distances[4])
    assert distances[2] == min(distances)


def test_select_best_uses_the_input_not_a_ground_truth():
    # The program the user wanted (a cube) is not what was scanned (a slightly
    # longer box): best-of-N must follow the scan, the only thing it may see.
    scanned = scan_of(box((1.0, 1.0, 1.3)))
    candidates = [cube(), box((1.0, 1.0, 1.3))]
    assert select_best(candidates, scanned) == 1


def test_cloud_gap_sums_the_mean_distances_both_ways_squared_and_plain():
    a = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.0]])
    # a -> b: 0 and 2 (squared 0 and 4); b -> a: 0
    assert CloudGap.between(a, b) == CloudGap(squared=2.0, plain=1.0)
    assert CloudGap.between(b, a) == CloudGap(squared=2.0, plain=1.0)


def test_plain_distances_do_not_let_one_far_point_outweigh_the_whole_surface():
    """Best of N's key: a solid exact but for one far point beats one that is off everywhere."""
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 10), np.linspace(0, 1, 10), [0.0]), -1).reshape(-1, 3)
    off_everywhere = grid + [0.0, 0.0, 0.05]
    one_far_point = np.vstack([grid, [[0.0, 0.0, 2.0]]])  # 2 above a grid corner
    off, far = CloudGap.between(grid, off_everywhere), CloudGap.between(grid, one_far_point)
    assert (off.squared, off.plain) == pytest.approx((2 * 0.05**2, 2 * 0.05))
    assert (far.squared, far.plain) == pytest.approx((4.0 / 101, 2.0 / 101))
    assert far.squared > off.squared and far.plain < off.plain  # squared picks the wrong one


def test_cloud_distance_gives_both_distances_from_one_sampling():
    mesh = box((2.0, 1.0, 1.0))
    to_scan = CloudDistance(scan_of(mesh))
    gap = to_scan.gap(mesh)
    assert gap.squared == to_scan(mesh) and 0 < gap.squared < gap.plain < 0.1
    assert to_scan.gap(None) == CloudGap(math.inf, math.inf)


def test_select_best_with_no_valid_candidate_is_none():
    points = scan_of(cube())
    assert select_best([None, None], points) is None
    assert select_best([], points) is None


def test_select_best_keeps_the_first_of_equal_candidates():
    points = scan_of(cube())
    assert select_best([None, cube(), cube()], points) == 1


def test_interior_fraction_sees_a_tube_inside_a_solid_and_nothing_inside_a_scan_with_a_side_missing():
    solid = trimesh.creation.cylinder(radius=50, height=120, sections=96)
    tube = trimesh.creation.annulus(r_min=40, r_max=50, height=120, sections=96)
    # the tube's inner wall (10 units under the solid's surface) lies inside the solid: about 4/9 of its area
    assert 0.3 < interior_fraction(solid, sample_surface(tube, n=4096, seed=0), depth=3.0) < 0.6
    points = sample_surface(solid, n=4096, seed=1)
    assert interior_fraction(solid, points, depth=3.0) == 0.0
    assert interior_fraction(solid, points[points[:, 2] < 20], depth=3.0) == 0.0  # a third not scanned
    # noise of a unit leaves nothing 3 deep
    noisy = points + np.random.default_rng(2).normal(scale=1.0, size=points.shape)
    assert interior_fraction(solid, noisy, depth=3.0) < 0.01


def test_cloud_distance_takes_the_inputs_own_normalization_over_a_measured_one(sandbox):
    """Samples of a long thin tube (walls 80/76 of 200) read as a noisy scan, whose box is smoothed;
    a mesh input's own box is what the model's points were normalized by, and the distance uses it."""
    from cad_recode.geometry.scan_noise import cloud_box, is_noisy

    tube = sandbox.run("import cadquery as cq\nw0=cq.Workplane('ZX',origin=(0,-100,0))\n"
                       "r=w0.sketch().circle(80).circle(76,mode='s').finalize().extrude(200)\n").to_trimesh()
    points = sample_surface(tube, n=8192, seed=0)
    assert is_noisy(cloud_box(points).noise)  # the misreading the given normalization avoids
    box = fit_normalization(np.asarray(tube.bounds))
    assert np.allclose(CloudDistance(points, box).cloud, box.apply(points))
    assert not np.allclose(CloudDistance(points).cloud, box.apply(points))
