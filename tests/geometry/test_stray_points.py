"""A scan's stray points (a scanned mesh's islands) are dropped before its box is fitted; a surface sample
and a CAD mesh lose nothing."""

import numpy as np
import trimesh

from cad_recode.geometry.normalize import fit_normalization
from cad_recode.geometry.sampling import add_noise, sample_surface, to_model_points
from cad_recode.geometry.stray_points import MIN_POINTS, drop_mesh_islands, drop_stray_points, without_stray_points

PLATE = trimesh.creation.box(extents=(200.0, 120.0, 30.0))


def plate_cloud(n: int = 8192, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    clean = sample_surface(PLATE, n, seed=seed)
    return add_noise(clean, std=noise * 100.0, prob=1.0, rng=np.random.default_rng(seed))


def with_strays(cloud: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The cloud with 12 lone points and a clump of 5 (a reflection) far off it, shuffled in; the strays' rows."""
    rng = np.random.default_rng(seed)
    lone = rng.uniform(-600.0, 600.0, (12, 3)) + np.array([0.0, 0.0, 400.0])  # all above the plate (z >= -200)
    clump = np.array([500.0, -300.0, 50.0]) + rng.normal(0.0, 1.0, (5, 3))
    merged = np.vstack([cloud, lone, clump])
    order = rng.permutation(len(merged))
    return merged[order], np.flatnonzero(order >= len(cloud))


def test_lone_points_and_a_small_clump_off_the_surface_are_dropped_and_the_box_is_the_part_s():
    cloud = plate_cloud()
    scan, stray_rows = with_strays(cloud)
    assert fit_normalization(scan).scale < 0.5 * fit_normalization(cloud).scale  # the strays' box, before
    kept = drop_stray_points(scan)
    assert kept.dropped == 17
    assert np.array_equal(kept.points, np.delete(scan, stray_rows, axis=0))  # exactly the strays, order kept
    assert fit_normalization(kept.points) == fit_normalization(cloud)


def test_a_surface_sample_loses_nothing_clean_noisy_uneven_or_small():
    uneven = plate_cloud(20000)
    keep = np.random.default_rng(1).random(len(uneven)) < np.exp((uneven[:, 0] - 100.0) / 200.0 * np.log(10.0))
    for cloud in (plate_cloud(), plate_cloud(2000), plate_cloud(noise=0.02), uneven[keep]):
        kept = drop_stray_points(cloud)
        assert kept.dropped == 0 and np.array_equal(kept.points, cloud)
    apart = plate_cloud()  # a piece of the surface that a scan's missing side cut off, within the part's box
    piece = sample_surface(trimesh.creation.box(extents=(20.0, 20.0, 1.0)), 150, seed=2) + (0.0, 0.0, 5.0)
    kept = drop_stray_points(np.vstack([apart, piece]))
    assert kept.dropped == 0
    few = plate_cloud(MIN_POINTS - 1)
    few[0] = (1e4, 1e4, 1e4)
    assert drop_stray_points(few).dropped == 0  # too few points to judge a gap by


def test_the_vertices_of_a_cad_tessellation_are_not_read_as_strays(sandbox):
    """A plate's 8 corners lie far from its holes' many vertices: several large components, so nothing goes."""
    plate = sandbox.run("import cadquery as cq\nr=cq.Workplane('XY').box(200,150,20)"
                        ".faces('>Z').workplane().rarray(100,60,2,2).hole(30)").to_trimesh()
    vertices = np.asarray(plate.vertices)
    assert len(vertices) >= MIN_POINTS
    assert drop_stray_points(vertices).dropped == 0


def test_repeated_points_leave_no_spacing_to_judge():
    # 97 % of the points on one spot: every gap is wider than zero spacings, so without the guard the rest would go
    repeated = np.vstack([np.zeros((200, 3)), [[1.0, 2.0, 3.0]] * 5, [[500.0, 0.0, 0.0]]])
    assert drop_stray_points(repeated).dropped == 0
    scan, _ = with_strays(plate_cloud())
    points, dropped = without_stray_points(scan)
    assert dropped == 17 and to_model_points(points).transform == fit_normalization(plate_cloud())


def test_a_scanned_mesh_s_floating_islands_beyond_the_part_are_dropped_and_the_box_is_the_part_s():
    debris = [trimesh.creation.icosphere(radius=r, subdivisions=2) for r in (3.0, 1.0)]
    debris[0].apply_translation((600.0, 0.0, 0.0))  # far off: it would set the box
    debris[1].apply_translation((-150.0, 90.0, 0.0))  # just beyond the plate's corner
    inside = trimesh.creation.icosphere(radius=2.0, subdivisions=1)  # a small body within the plate's box
    scan = trimesh.util.concatenate([PLATE, *debris, inside])
    assert sum(len(d.faces) for d in debris) > len(PLATE.faces)  # islands of many faces but little area
    kept, dropped = drop_mesh_islands(scan)
    assert dropped == 2
    assert len(kept.faces) == len(PLATE.faces) + len(inside.faces)
    np.testing.assert_allclose(kept.bounds, PLATE.bounds)
    points, islands = without_stray_points(scan)
    assert islands == 2 and len(points.faces) == len(kept.faces)


def test_a_cad_mesh_keeps_every_face_merged_or_one_face_per_component(sandbox):
    """CadQuery tessellates face by face (no shared vertices), with a flange beyond the tube's own box; a solid,
    its vertices merged, is one component: nothing goes."""
    tube = sandbox.run("import cadquery as cq\nr=cq.Workplane('XY').circle(10).circle(8).extrude(400)"
                       ".faces('>Z').workplane().circle(30).extrude(3)").to_trimesh()
    for mesh in (tube, trimesh.Trimesh(tube.vertices, tube.faces, process=True)):
        kept, dropped = drop_mesh_islands(mesh)
        assert kept is mesh and dropped == 0
    two_bodies = trimesh.util.concatenate([PLATE, trimesh.creation.box(extents=(200.0, 120.0, 30.0)).apply_translation(
        (0.0, 0.0, 100.0))])
    kept, dropped = drop_mesh_islands(two_bodies)
    assert kept is two_bodies and dropped == 0  # neither holds 95 % of the area
