"""Pose candidates, axis-angle, and the place-back line: maths, then real CadQuery in the sandbox."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from cad_recode.errors import UsageError
from cad_recode.geometry.metrics import CloudDistance, mesh_iou
from cad_recode.geometry.normalize import Transform
from cad_recode.geometry.pose import (
    CUBE_GROUP_SIZE,
    MODEL_UNITS,
    TURNED_BOX_RATIO,
    PoseCandidate,
    PosePlacement,
    angle_to_cube_group,
    cube_rotations,
    permutation_name,
    place_back,
    pose_candidates,
    posed_draws,
    posed_model_points,
    principal_extents,
    rotation_axis_angle,
    turned_ratio,
)
from cad_recode.geometry.sampling import sample_surface, to_model_points
from cad_recode.geometry.shapes import example_program
from cad_recode.geometry.static_check import check_program


def normalized_surface(mesh: trimesh.Trimesh, seed: int = 0) -> tuple[np.ndarray, Transform]:
    transform = to_model_points(mesh, seed=seed).transform
    return transform.apply(sample_surface(mesh, seed=seed)), transform


def rotated(mesh: trimesh.Trimesh, rotation: np.ndarray, scale: float = 1.0, shift=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    out = mesh.copy()
    out.vertices = np.asarray(mesh.vertices) @ rotation.T * scale + np.asarray(shift)
    return out


def degrees_between(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(a @ b.T).magnitude()))


# --------------------------------------------------------------------------- the cube group


def test_cube_group_is_24_distinct_proper_rotations_identity_first():
    group = cube_rotations()
    assert len(group) == CUBE_GROUP_SIZE
    assert np.array_equal(group[0], np.eye(3))
    for g in group:
        assert np.allclose(g @ g.T, np.eye(3)) and np.isclose(np.linalg.det(g), 1.0)
    assert len({g.astype(int).tobytes() for g in group}) == CUBE_GROUP_SIZE
    names = [permutation_name(g) for g in group]
    assert names[:4] == ["+x+y+z", "-x-y+z", "+x-y-z", "-x+y-z"]  # axes kept on their lines first, z up first
    assert len(set(names)) == CUBE_GROUP_SIZE


@pytest.mark.parametrize("degrees", [0.0, 1e-9, 37.0, 90.0, 120.0, 179.9999, 180.0])
def test_axis_angle_rebuilds_the_rotation(degrees):
    for axis in ([0, 0, 1], [1, 0, 0], [1, 1, 0], [1, -1, 1], [0.3, -0.2, 0.9]):
        matrix = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis) / np.linalg.norm(axis)).as_matrix()
        got_axis, got_degrees = rotation_axis_angle(matrix)
        rebuilt = Rotation.from_rotvec(np.radians(got_degrees) * got_axis / np.linalg.norm(got_axis)).as_matrix()
        assert np.allclose(rebuilt, matrix, atol=1e-12)
        assert np.abs(got_axis).max() == 1.0


def test_axis_angle_snaps_the_cube_group_to_readable_numbers():
    assert rotation_axis_angle(np.eye(3))[1] == 0.0
    axis, degrees = rotation_axis_angle(np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]))  # 180 about (1, 1, 0)
    assert degrees == 180.0 and list(axis) == [1.0, 1.0, 0.0]


def test_reflections_and_scales_are_refused():
    with pytest.raises(UsageError, match="determinant"):
        rotation_axis_angle(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(UsageError, match="determinant"):
        rotation_axis_angle(2 * np.eye(3))


# --------------------------------------------------------------------------- candidates


def test_axis_aligned_box_keeps_its_own_frame_first():
    points, _ = normalized_surface(trimesh.creation.box((10.0, 60.0, 100.0)))
    candidates = pose_candidates(points, budget=CUBE_GROUP_SIZE)
    assert candidates[0].name == "input" and np.array_equal(candidates[0].rotation, np.eye(3))
    rotations = {np.round(c.rotation).astype(int).tobytes() for c in candidates}
    assert len(rotations) == CUBE_GROUP_SIZE  # all 24 distinct, and all of the cube group
    assert all(angle_to_cube_group(c.rotation) < 1e-9 for c in candidates)
    assert np.allclose(candidates[1].points, points @ candidates[1].rotation.T)


def test_candidates_are_proper_rotations_and_the_first_realigns_a_rotated_part():
    turn = Rotation.from_euler("xyz", [23, -41, 67], degrees=True).as_matrix()
    points, _ = normalized_surface(rotated(trimesh.creation.box((100.0, 60.0, 10.0)), turn))
    candidates = pose_candidates(points, budget=8)
    assert len(candidates) == 8 and len({c.name for c in candidates}) == 8
    for c in candidates:
        assert np.allclose(c.rotation @ c.rotation.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(c.rotation), 1.0)
    assert not candidates[0].name.startswith("input")  # a tilted input frame is not trusted
    assert angle_to_cube_group(candidates[0].rotation @ turn) < 0.5  # the part's axes are the frame's again
    extents = np.ptp(candidates[0].points, axis=0)
    assert extents[0] > extents[1] > extents[2]  # canonical: longest on x, thinnest on z


def test_candidates_are_deterministic_and_budget_is_checked():
    points, _ = normalized_surface(trimesh.creation.cylinder(radius=1.0, height=3.0))
    a, b = pose_candidates(points, budget=5), pose_candidates(points, budget=5)
    assert [c.name for c in a] == [c.name for c in b]
    assert all(np.array_equal(x.rotation, y.rotation) for x, y in zip(a, b))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="pose budget"):
            pose_candidates(points, budget=bad)
    with pytest.raises(UsageError, match="distinct orientations"):
        pose_candidates(points, budget=10_000)


# --------------------------------------------------------------------------- placing back


def test_identity_placement_leaves_the_program_as_it_is():
    code = example_program("cube")
    identity = PosePlacement(np.eye(3), Transform(center=np.zeros(3), scale=1.0), "input")
    assert identity.is_identity and place_back(code, identity) == code


def test_posed_points_map_back_onto_the_input_exactly():
    # a clean scan's points (a volume of random points would read as noise and be boxed smaller)
    cloud = sample_surface(trimesh.creation.box(extents=(80.0, 14.0, 6.0)), 900, seed=3) + [5.0, -2.0, 11.0]
    drawn = to_model_points(cloud, seed=0)
    turn = Rotation.from_euler("zyx", [31, 12, -75], degrees=True).as_matrix()
    posed = posed_model_points(cloud, PoseCandidate(turn, "test", np.zeros((0, 3))), drawn.transform, seed=1)
    assert np.abs(posed.points.points).max() <= 1.0 + 1e-6  # the posed input is normalized again
    back = posed.placement.to_input_frame(MODEL_UNITS * posed.points.points.astype(np.float64))
    distances, _ = cKDTree(MODEL_UNITS * drawn.transform.apply(cloud)).query(back)
    assert distances.max() < 1e-4  # float32 model points; every point is an input row


def test_place_back_line_is_the_exact_inverse_in_cadquery(sandbox):
    code = example_program("l_bracket")
    turn = Rotation.from_euler("xyz", [10, 200, -35], degrees=True).as_matrix()
    placement = PosePlacement(turn, Transform(center=[0.02, -0.1, 0.3], scale=1.37), "obb:+y-x+z")
    placed = place_back(code, placement)
    assert placed.startswith(code.rstrip()) and placed.count("\n") == code.rstrip().count("\n") + 2
    line = placed.rstrip().splitlines()[-1]
    assert line.startswith("r=r.newObject([r.findSolid().scale(") and "# pose obb:+y-x+z" in line
    check_program(placed)
    before, after = sandbox.map([code, placed])
    assert before.ok and after.ok, (before.reason, after.reason)
    expected = placement.to_input_frame(before.vertices)
    assert np.isclose(after.volume, before.volume / placement.posed.scale**3, rtol=1e-6)
    distances, _ = cKDTree(expected).query(after.vertices)
    assert distances.max() < 1e-6 * np.ptp(expected, axis=0).max()


def test_rotated_l_bracket_is_recovered_by_its_pose_and_placed_back(sandbox):
    """A scan of the L-bracket in a random pose, in other units: the matching candidate, judged
    by CD to the input among others, places the ground-truth program back with IoU >= 0.95."""
    program = example_program("l_bracket")
    truth = sandbox.run(program).to_trimesh()
    turn = Rotation.random(random_state=11).as_matrix()
    scan = rotated(truth, turn, scale=0.37, shift=(120.0, -4.0, 9.0))
    points, input_transform = normalized_surface(scan)
    candidates = pose_candidates(points, budget=CUBE_GROUP_SIZE)
    # The candidate under which the part sits as its program was written ("what the model saw").
    matching = min(candidates, key=lambda c: degrees_between(c.rotation @ turn, np.eye(3)))
    assert degrees_between(matching.rotation @ turn, np.eye(3)) < 2.0
    others = [c for c in candidates[:3] if c is not matching]
    tried = [matching, *others]
    placed = [place_back(program, posed_model_points(scan, c, input_transform).placement) for c in tried]
    results = sandbox.map(placed)
    assert all(r.ok for r in results), [r.reason for r in results]
    meshes = [r.to_trimesh() for r in results]
    assert mesh_iou(meshes[0], scan) >= 0.95
    distance = CloudDistance(sample_surface(scan))
    scores = [distance(m) for m in meshes]
    assert int(np.argmin(scores)) == 0  # best-of-N by the input points picks the matching pose
    assert mesh_iou(truth, scan) < 0.9  # without placing back, the program does not match the scan


def test_posed_draws_spread_best_of_n_over_the_poses():
    mesh = rotated(trimesh.creation.box((100.0, 60.0, 10.0)), Rotation.from_euler("z", 30, degrees=True).as_matrix())
    input_transform = to_model_points(mesh).transform
    draws = posed_draws(mesh, sample_surface(mesh), input_transform, 5, budget=2, seed=7, n_points=64)
    names = [d.placement.name for d in draws]
    assert names[0] != names[1] and names[::2] == [names[0]] * 3 and names[1::2] == [names[1]] * 2
    assert all(d.points.points.shape == (64, 3) for d in draws)
    assert not np.array_equal(draws[0].points.points, draws[2].points.points)  # same pose, seed 7 and 9


def test_a_flat_cloud_still_gets_candidates():
    """No solid hull (a sheet of points): the oriented box is skipped, the other frames remain."""
    flat = np.random.default_rng(0).uniform(-1, 1, size=(500, 3)) * [1.0, 0.5, 0.0]
    candidates = pose_candidates(flat, budget=3)
    assert candidates[0].name == "input" and len(candidates) == 3


def test_a_part_whose_axes_are_the_frame_s_reads_as_aligned_and_a_turned_one_as_turned():
    bar = trimesh.creation.box(extents=(100.0, 20.0, 20.0))
    aligned = sample_surface(bar, 8192, seed=0)
    assert turned_ratio(aligned) == pytest.approx(1.0, abs=1e-6)
    assert turned_ratio(aligned * 1e-3 + 5.0) == pytest.approx(1.0, abs=1e-6)  # units and place do not matter
    turn = Rotation.from_euler("z", 20, degrees=True).as_matrix()
    assert turned_ratio(aligned @ turn.T) == pytest.approx((100 * np.cos(np.radians(20)) + 20 * np.sin(np.radians(20)))
                                                           * (100 * np.sin(np.radians(20)) + 20 * np.cos(np.radians(20)))
                                                           / 2000, rel=0.01)
    cube = sample_surface(trimesh.creation.box(extents=(50.0, 50.0, 50.0)), 8192, seed=1)
    slightly = Rotation.from_euler("z", 2, degrees=True).as_matrix()
    assert 1.0 < turned_ratio(cube @ slightly.T) < TURNED_BOX_RATIO < turned_ratio(cube @ turn.T)
    cylinder = sample_surface(trimesh.creation.cylinder(radius=30.0, height=80.0, sections=64), 8192, seed=2)
    assert turned_ratio(cylinder) < TURNED_BOX_RATIO  # a round part's turn about its own axis is no turn
    flat = np.column_stack([np.random.default_rng(0).uniform(-1, 1, (500, 2)), np.zeros(500)])
    assert turned_ratio(flat) == 1.0 and turned_ratio(np.zeros((10, 3))) == 1.0


def test_principal_extents_are_the_part_s_own_in_any_orientation():
    box = sample_surface(trimesh.creation.box(extents=(100.0, 40.0, 10.0)), n=8192, seed=0)
    turned = box @ Rotation.from_euler("xyz", [20, 35, 50], degrees=True).as_matrix().T
    for points in (box, turned):
        assert principal_extents(points) == pytest.approx((1.0, 0.4, 0.1), abs=0.01)
    assert principal_extents(np.c_[np.linspace(0, 5, 50), 2 * np.linspace(0, 5, 50), np.ones(50)]) == \
        pytest.approx((1.0, 0.0, 0.0), abs=1e-9)
    assert principal_extents(np.ones((4, 3))) == (1.0, 0.0, 0.0)  # no extent at all: a point is a line
