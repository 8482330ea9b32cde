"""Shape metrics of the CAD-Recode / cadrille evaluation protocol: CD, IoU, IR, best-of-N.

The protocol, as this module implements it:

- **Chamfer distance (CD), reported ×10³.** Each shape is first normalized to the
  unit cube: its bounding-box centre moves to the origin and it is scaled by
  ``1 / max extent`` (so its longest side is 1). Then 8192 points are sampled
  uniformly on each surface (area-weighted, seeded, so a rerun gives the same
  number), and

      CD = mean_a min_b |a - b|²  +  mean_b min_a |b - a|²

  i.e. squared nearest-neighbour distances in both directions, each direction
  averaged, the two averages summed (not halved). The published tables print
  this value ×1000. Nearest neighbours come from ``scipy.spatial.cKDTree``.
  Sampling is not free of noise: two different samplings of one and the same
  surface of area A (after normalization) give CD ≈ 2·A / (π·n) (×10³:
  ≈ 0.47 for a cube, whose normalized area is 6), so CD of two different
  shapes is only meaningful above that floor. Both shapes are sampled with the
  same seed, which makes the metric exactly symmetric and gives 0 for two
  copies of one mesh.
- **IoU.** ``volume(A ∩ B) / volume(A ∪ B)`` with the intersection computed by
  manifold3d's exact mesh boolean and the union as ``vol A + vol B − vol(A ∩ B)``
  (the same number as the union boolean, at half the cost). ``iou`` takes the
  meshes as given; ``mesh_iou`` first normalizes both to the unit cube, like
  CD. IoU is only defined for closed solids: a mesh that is not a closed,
  consistently oriented 2-manifold (after welding duplicated vertices), or is
  inside out, raises ``ValueError`` naming the reason; it is never silently 0.
- **Invalid ratio (IR).** The fraction of inputs that got no valid output
  (``invalid_ratio`` returns a fraction in [0, 1]; the CLI and reports print
  it as a percentage, as the papers do).
- **Best of N.** With several candidates per input, the one kept is the valid
  candidate closest to the **input point cloud**, both normalized the way the
  model's input is (bounding-box centre, 2 / max extent). Closest by the mean
  nearest-neighbour *distance* both ways (an L1 Chamfer), not the squared one:
  squaring lets a few far points (a small feature missed or added) outweigh the
  whole surface, and on the quickstart model's 600 test shapes picking by plain
  distances came 0.006 IoU closer to the truth (BENCHMARKS.md). Choosing against
  the ground truth would be an oracle and is never done here.

Compared with the public cadrille evaluation script: the CD formula (8192
``trimesh`` surface samples each, squared cKDTree distances, the two means
summed, ×1000 when printed) and the IoU definition (intersection volume over
``vol A + vol B − intersection``) are the same. Two choices differ on purpose:
that script brings the prediction into the ground truth's unit cube with a
fixed map from program units (÷200, +0.5) instead of normalizing each shape by
its own bounding box, and it picks the best of N candidates by CD and IoU
against the ground truth (an oracle), which this module refuses to do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import manifold3d
import numpy as np
import trimesh
from scipy.spatial import cKDTree

from cad_recode.geometry.normalize import Transform, fit_normalization
from cad_recode.geometry.sampling import NUM_SURFACE_POINTS, sample_surface
from cad_recode.geometry.scan_noise import cloud_normalization

# The published tables report CD multiplied by this factor.
CD_SCALE = 1e3


# --------------------------------------------------------------------------- normalization


def mesh_normalization(mesh: trimesh.Trimesh, where: str):
    """The model-input transform (bbox centre, 2 / max extent) of a mesh's used vertices."""
    if len(mesh.faces) == 0:
        raise ValueError(f"{where} has no faces")
    # trimesh's bounds cover only vertices that faces reference, as in to_model_points.
    return fit_normalization(np.asarray(mesh.bounds), where=where)


def normalize_to_unit_cube(mesh: trimesh.Trimesh, where: str = "mesh") -> trimesh.Trimesh:
    """Return a copy of ``mesh`` with its bbox centre at 0 and its longest side 1.

    This is the evaluation frame of the protocol (the model's input frame is
    twice as large: [-1, 1]³). ValueError for a mesh without faces, InputError
    for one with zero extent.
    """
    transform = mesh_normalization(mesh, where)
    unit = mesh.copy()
    # fit_normalization maps the longest side to 2; half of it gives 1.
    unit.vertices = (np.asarray(mesh.vertices) - transform.center) * (transform.scale / 2.0)
    return unit


# --------------------------------------------------------------------------- Chamfer distance


def _mean_squared_nn(query: np.ndarray, tree: cKDTree) -> float:
    distances, _ = tree.query(query, k=1)
    return float(np.mean(np.square(distances)))


@dataclass(frozen=True)
class CloudGap:
    """A mesh against an input cloud in [-1, 1]^3, nearest-neighbour distances both ways."""

    squared: float  # mean squared distance each way, the two summed: the protocol's raw CD
    plain: float  # the same of plain distances (an L1 Chamfer): what best of N picks by

    @classmethod
    def between(cls, a: np.ndarray, b: np.ndarray, tree_a: cKDTree | None = None) -> "CloudGap":
        a_to_b = cKDTree(b).query(a, k=1)[0]
        b_to_a = (tree_a or cKDTree(a)).query(b, k=1)[0]
        return cls(float(np.mean(np.square(a_to_b)) + np.mean(np.square(b_to_a))),
                   float(np.mean(a_to_b) + np.mean(b_to_a)))


def _as_points(xyz: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(xyz, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"{name} must be a non-empty (N, 3) array, got shape {points.shape}")
    return points


def chamfer_distance(a_xyz: np.ndarray, b_xyz: np.ndarray) -> float:
    """Raw Chamfer distance of two point sets (not ×10³, no normalization).

    ``mean_a min_b |a-b|² + mean_b min_a |a-b|²``: squared nearest-neighbour
    distances, averaged per direction, the two directions summed. Symmetric.
    """
    a = _as_points(a_xyz, "a_xyz")
    b = _as_points(b_xyz, "b_xyz")
    return _mean_squared_nn(a, cKDTree(b)) + _mean_squared_nn(b, cKDTree(a))


def mesh_chamfer(
    mesh_a: trimesh.Trimesh,
    mesh_b: trimesh.Trimesh,
    n: int = NUM_SURFACE_POINTS,
    seed: int = 0,
) -> float:
    """Protocol CD ×10³: both meshes to the unit cube, ``n`` seeded surface samples each."""
    points_a = sample_surface(normalize_to_unit_cube(mesh_a, "mesh A"), n=n, seed=seed)
    points_b = sample_surface(normalize_to_unit_cube(mesh_b, "mesh B"), n=n, seed=seed)
    return chamfer_distance(points_a, points_b) * CD_SCALE


# --------------------------------------------------------------------------- IoU


def _to_manifold(mesh: trimesh.Trimesh, name: str) -> manifold3d.Manifold:
    """Convert to a manifold3d solid, or raise ValueError saying why IoU is undefined."""
    if len(mesh.faces) == 0:
        raise ValueError(f"{name} has no faces; IoU needs a closed solid")
    # Copies: manifold3d refuses read-only arrays, and trimesh caches them read-only.
    data = manifold3d.Mesh64(
        vert_properties=np.array(mesh.vertices, dtype=np.float64, order="C"),
        tri_verts=np.array(mesh.faces, dtype=np.uint64, order="C"),
    )
    # Weld vertices that tessellators and STL files duplicate along edges.
    data.merge()
    solid = manifold3d.Manifold(data)
    status = solid.status()
    if status != manifold3d.Error.NoError:
        raise ValueError(
            f"{name} is not a closed, consistently oriented solid ({status.name}); "
            "IoU needs watertight meshes"
        )
    if solid.volume() <= 0.0:
        raise ValueError(f"{name} has no positive volume (inside out or flat); IoU needs a solid")
    return solid


def iou(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh) -> float:
    """Volume IoU of two closed meshes as given (no normalization), in [0, 1].

    Intersection by manifold3d's boolean; union = vol A + vol B − intersection.
    Raises ValueError (with the reason) if either mesh is not a closed solid.
    """
    solid_a = _to_manifold(mesh_a, "mesh A")
    solid_b = _to_manifold(mesh_b, "mesh B")
    intersection = (solid_a ^ solid_b).volume()
    union = solid_a.volume() + solid_b.volume() - intersection
    return float(min(max(intersection / union, 0.0), 1.0))


def mesh_iou(mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh) -> float:
    """Protocol IoU: both meshes normalized to the unit cube first, then ``iou``."""
    return iou(normalize_to_unit_cube(mesh_a, "mesh A"), normalize_to_unit_cube(mesh_b, "mesh B"))


@dataclass(frozen=True)
class ShapeComparison:
    """CD ×10³ and IoU of two shapes under the protocol.

    ``iou`` is NaN when it is undefined (a mesh that is not a closed solid);
    ``iou_error`` then says why, and CD is still reported.
    """

    cd: float
    iou: float
    iou_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_meshes(
    mesh_a: trimesh.Trimesh, mesh_b: trimesh.Trimesh, n: int = NUM_SURFACE_POINTS, seed: int = 0
) -> ShapeComparison:
    """Both protocol metrics at once: ``mesh_chamfer`` and ``mesh_iou``."""
    cd = mesh_chamfer(mesh_a, mesh_b, n=n, seed=seed)
    try:
        return ShapeComparison(cd=cd, iou=mesh_iou(mesh_a, mesh_b))
    except ValueError as err:
        return ShapeComparison(cd=cd, iou=math.nan, iou_error=str(err))


# --------------------------------------------------------------------------- invalid ratio


def _is_valid(result: Any) -> bool:
    """None/False = invalid; objects with ``.ok`` (ExecResult) use it; anything else (a mesh) is valid."""
    if result is None or result is False:
        return False
    return bool(getattr(result, "ok", True))


def invalid_ratio(results: Iterable[Any]) -> float:
    """Fraction in [0, 1] of inputs with no valid output (print ×100 as a percentage).

    Each item stands for one input: ``None`` or ``False`` (nothing valid), an
    ``ExecResult`` (valid when ``.ok``), or a mesh / ``True`` (valid). For
    best-of-N, pass one item per input: its selected candidate, None if no
    candidate was valid. An empty sequence is an error, not 0 %.
    """
    flags = [_is_valid(r) for r in results]
    if not flags:
        raise ValueError("invalid_ratio of no results is undefined")
    return flags.count(False) / len(flags)


# --------------------------------------------------------------------------- best of N


class CloudDistance:
    """Raw CD of meshes to one input point cloud: the best-of-N criterion.

    The input cloud and each mesh are normalized separately the way the model's
    input is (bbox centre at 0, scale 2 / max extent; a noisy cloud's box from its smoothed
    points, :mod:`cad_recode.geometry.scan_noise`); the mesh contributes ``n``
    seeded surface samples, the input cloud all its points. The cloud is
    normalized and indexed once, so scoring many meshes against it is cheap.

    ``normalization``: the input's own, when it is known (a mesh input's box, which
    the model's points were normalized by). Samples of a clean mesh must never be
    read as a noisy scan: a thin-walled tube sampled more coarsely than its wall
    measured as noise σ ≈ 0.01, and its smoothed box shrank the wall.
    """

    def __init__(self, input_points: np.ndarray, normalization: Transform | None = None):
        cloud = _as_points(input_points, "input_points")
        if normalization is None:
            normalization = cloud_normalization(cloud, where="input point cloud")
        self.cloud = normalization.apply(cloud)
        self.tree = cKDTree(self.cloud)

    def __call__(self, mesh: trimesh.Trimesh | None, n: int = NUM_SURFACE_POINTS, seed: int = 0,
                 where: str = "candidate") -> float:
        """The raw CD; ``inf`` for a missing or empty mesh."""
        return self.gap(mesh, n=n, seed=seed, where=where).squared

    def gap(self, mesh: trimesh.Trimesh | None, n: int = NUM_SURFACE_POINTS, seed: int = 0,
            where: str = "candidate") -> CloudGap:
        """Both distances from one sampling; ``inf`` for a missing or empty mesh."""
        if mesh is None or len(mesh.faces) == 0:
            return CloudGap(math.inf, math.inf)
        samples = mesh_normalization(mesh, where).apply(sample_surface(mesh, n=n, seed=seed))
        return CloudGap.between(self.cloud, samples, tree_a=self.tree)


INTERIOR_SAMPLES = 8192  # surface samples that rule out the points near the surface


def interior_fraction(mesh: trimesh.Trimesh, points: np.ndarray, depth: float) -> float:
    """The share of ``points`` inside the closed ``mesh`` and at least ``depth`` from its surface (one frame).

    A scan's points lie on the part's outer surface, so a solid that fits has almost none inside it,
    whatever side the scan misses; the inner wall of a tube written as a solid lies inside it, at the
    depth of the wall.
    """
    import trimesh.proximity

    points = _as_points(points, "points")
    # A point's nearest surface sample is never nearer than the surface itself, so only the points that
    # far from every sample can be that deep: the exact (slow) tests run on those few alone.
    samples = sample_surface(mesh, n=INTERIOR_SAMPLES, seed=0)
    far = points[cKDTree(samples).query(points)[0] >= depth]
    if len(far) == 0:
        return 0.0
    far = far[mesh.contains(far)]
    if len(far) == 0:
        return 0.0
    _, distances, _ = trimesh.proximity.closest_point(mesh, far)
    return float(np.count_nonzero(distances >= depth)) / len(points)


def protocol_cd(raw: float) -> float:
    """A raw ``CloudDistance`` (measured in [-1, 1]^3) in the protocol's unit-cube scale, x10^3."""
    return raw / 4.0 * CD_SCALE


def protocol_distance(raw: float) -> float:
    """A ``CloudGap.plain`` (measured in [-1, 1]^3) in the unit-cube scale, x10^3 like CD."""
    return raw / 2.0 * CD_SCALE


def candidate_distances(
    candidate_meshes: Sequence[trimesh.Trimesh | None],
    input_points: np.ndarray,
    n: int = NUM_SURFACE_POINTS,
    seed: int = 0,
) -> list[float]:
    """Raw plain distance (``CloudGap.plain``) of each candidate to the input cloud (``inf`` for an
    invalid one), best of N's key; see ``CloudDistance``. The ground truth plays no part.
    """
    distance = CloudDistance(input_points)
    return [distance.gap(mesh, n=n, seed=seed, where=f"candidate {index}").plain
            for index, mesh in enumerate(candidate_meshes)]


def select_best(
    candidate_meshes: Sequence[trimesh.Trimesh | None],
    input_points: np.ndarray,
    n: int = NUM_SURFACE_POINTS,
    seed: int = 0,
) -> int | None:
    """Index of the valid candidate closest (plain distances) to the INPUT point cloud; None if none is valid.

    Invalid candidates are passed as None and skipped. Ties keep the earliest
    candidate. See ``candidate_distances`` for the normalization.
    """
    distances = candidate_distances(candidate_meshes, input_points, n=n, seed=seed)
    best = int(np.argmin(distances)) if distances else 0
    return best if distances and math.isfinite(distances[best]) else None


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class MetricSummary:
    """The four numbers of the published tables for one test set.

    ``mean_cd`` / ``median_cd`` (×10³) and ``mean_iou`` (fraction) are over the
    inputs with a valid output; ``invalid_ratio`` is a fraction of all inputs.
    NaN where no input was valid.
    """

    count: int
    valid: int
    mean_cd: float
    median_cd: float
    mean_iou: float
    invalid_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """One line in the papers' units: IoU and IR in percent, CD ×10³."""
        return (
            f"IoU {self.mean_iou * 100:.1f}% | mean CD {self.mean_cd:.3f} | "
            f"median CD {self.median_cd:.3f} | IR {self.invalid_ratio * 100:.1f}% "
            f"({self.count - self.valid}/{self.count} invalid)"
        )


def _finite(values: Iterable[float | None]) -> np.ndarray:
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(kept, dtype=np.float64)


def summarize(cds: Sequence[float | None], ious: Sequence[float | None]) -> MetricSummary:
    """Summarize per-input results: ``cds[i]`` is input i's CD ×10³ (None/NaN if invalid).

    ``ious[i]`` is its IoU (None/NaN if invalid or undefined; such inputs are
    left out of the mean IoU, not counted as 0). Validity, and hence IR, is
    decided by the CD entry.
    """
    if len(cds) != len(ious):
        raise ValueError(f"cds and ious differ in length ({len(cds)} vs {len(ious)})")
    if not cds:
        raise ValueError("summarize of no results is undefined")
    valid_cd = _finite(cds)
    valid_iou = _finite(ious)
    nan = math.nan
    return MetricSummary(
        count=len(cds),
        valid=len(valid_cd),
        mean_cd=float(valid_cd.mean()) if len(valid_cd) else nan,
        median_cd=float(np.median(valid_cd)) if len(valid_cd) else nan,
        mean_iou=float(valid_iou.mean()) if len(valid_iou) else nan,
        invalid_ratio=(len(cds) - len(valid_cd)) / len(cds),
    )
