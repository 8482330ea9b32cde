"""Pose: orientation candidates of an input, and the program line that puts a posed result back.

The model writes a part in a frame where the part's axes are the frame's axes.
A scan can arrive in any orientation, so ``--pose auto`` decodes the input
under several rotations and keeps the candidate closest to the input points,
like any other best-of-N candidate.

Frames and the one composition (column vectors; ``x`` in the input's units):

    p = T0(x) = (x - c0) * s0        the input's normalization (to_model_points), [-1, 1]^3
    q = R p                          a pose candidate: rotation about p's origin
    n = T1(q) = (q - c1) * s1        to_model_points normalizes the posed input again
    m = 100 n                        model units: the frame the decoded program is written in

So a program decoded under ``R`` is placed back into the input's model-unit
frame ``100 p`` by

    100 p = R^T (m / s1 + 100 c1)

which :func:`place_back` writes as one final line of the program (scale,
translate, rotate; parts that are the identity are left out). After that line
the program is in the same frame as an unposed decode, so the input transform
``T0`` maps it to the input's units exactly as ``restore_units`` already does,
and CD / IoU (which normalize both shapes) judge it in the input's own frame.
For the 24 axis-aligned rotations of an already normalized input, ``T1`` is the
identity up to rounding, so the line is a single ``rotate``.

Candidates (:func:`pose_candidates`): base frames (the input as given, its
minimum-volume oriented bounding box, its principal axes), each oriented by a
deterministic convention, then the 24 rotations of the cube group applied to
each base, most plausible first, cut to a budget.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.optimize import minimize
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.transform import Rotation

from cad_recode.defaults import MODEL_UNITS
from cad_recode.errors import UsageError
from cad_recode.geometry.normalize import Transform, validate_points
from cad_recode.geometry.sampling import (
    NUM_POINT_TOKENS,
    NUM_SURFACE_POINTS,
    ModelPoints,
    to_model_points,
)

DEFAULT_POSE_BUDGET = 4
"""Pose candidates tried by ``--pose auto`` unless told otherwise."""
CUBE_GROUP_SIZE = 24
"""The rotations of the cube group: the orientations a frame can take with its axes on the same lines."""
TURNED_BOX_RATIO = 1.10
"""An input whose box in the given axes is this much larger than its tightest box looks turned (a cube turned
by about 3 degrees). On the broad test split (200 shapes, 8192 surface points): 1.00 for every clean shape, at
most 1.06 under Gaussian noise sigma = 0.02, at least 1.31 under a random rotation (on the model's 64 points:
up to 1.05 clean and 1.10 noisy, hence the dense points)."""

# Two base frames closer than this (modulo the cube group) give the same candidates: keep one.
SAME_FRAME_DEGREES = 2.0
# A base frame whose axis-aligned box is this much larger than the tightest one is not the part's frame
# (on the built-in shapes in random poses, a principal-axes frame that is off by degrees is 3-5 % looser).
BASE_FRAME_SLACK = 0.03
# First step of the local search that settles the oriented box (trimesh's is often 1-2 degrees off).
_REFINE_STEP_DEGREES = 2.0
# The input frame is preferred over a tighter estimated frame within this much volume.
INPUT_FRAME_PREFERENCE = 0.01
# |skewness| below this is no evidence for an axis direction: the tie-break decides.
_SKEW_TIE = 1e-3
# Transform parts this close to the identity are left out of the place-back line
# (1e-9 of a model unit is far below the sandbox's tessellation tolerance).
_IDENTITY_TOL = 1e-9
_AXES = "xyz"


@dataclass(frozen=True, eq=False)
class PoseCandidate:
    """One orientation to decode the input under.

    ``rotation`` (3, 3) maps the input's normalized frame to the posed frame
    (``q = rotation @ p``); ``points`` are the frame-estimation points rotated
    (rows, ``p @ rotation.T``), not yet normalized again.
    """

    rotation: np.ndarray
    name: str
    points: np.ndarray


@dataclass(frozen=True, eq=False)
class PosePlacement:
    """How a program decoded under a pose goes back to the input's model-unit frame.

    ``rotation`` is the candidate's R; ``posed`` is the normalization ``T1`` that
    ``to_model_points`` fitted on the posed input (its ``ModelPoints.transform``).
    """

    rotation: np.ndarray
    posed: Transform
    name: str = ""

    def to_input_frame(self, xyz_model_units) -> np.ndarray:
        """Posed model units -> the input's model units: ``R^T (m / s1 + 100 c1)``; (..., 3) rows."""
        m = np.asarray(xyz_model_units, dtype=np.float64)
        return (m / self.posed.scale + MODEL_UNITS * self.posed.center) @ self.rotation

    @property
    def is_identity(self) -> bool:
        return self.program_line() == ""

    def program_line(self) -> str:
        """The final line that places ``r`` back (no trailing newline); '' when nothing moves."""
        k = 1.0 / self.posed.scale
        shift = MODEL_UNITS * self.posed.center
        axis, degrees = rotation_axis_angle(self.rotation.T)
        parts = ["r=r"]
        if abs(k - 1.0) > _IDENTITY_TOL:
            parts = [f"r=r.newObject([r.findSolid().scale({_float(k)})])"]
        if np.abs(shift).max() > _IDENTITY_TOL:
            parts.append(f".translate({_vector(shift)})")
        if degrees != 0.0:
            parts.append(f".rotate((0.0,0.0,0.0),{_vector(axis)},{_float(degrees)})")
        if parts == ["r=r"]:
            return ""
        label = f" {self.name}" if self.name else ""
        return "".join(parts) + f"  # pose{label}: back to the input's frame"


def place_back(code: str, placement: PosePlacement) -> str:
    """``code`` (its result in ``r``, CAD-Recode style) plus the line that undoes the pose.

    The identity placement returns ``code`` unchanged. Every number on the line is
    a float literal, so refinement (which nudges integer literals) leaves it alone.
    """
    line = placement.program_line()
    return code if not line else f"{code.rstrip()}\n{line}\n"


# --------------------------------------------------------------------------- rotations


def rotation_axis_angle(rotation) -> tuple[np.ndarray, float]:
    """(axis (3,), angle in degrees) of a proper rotation; ((0, 0, 1), 0.0) for the identity.

    scipy's quaternion route is stable at 0 and 180 degrees. The axis is scaled so
    its largest component is +-1 and near-integers are snapped (the cube group reads
    ``(1.0, 1.0, 0.0), 180.0``); the direction is all that a rotation axis needs.
    """
    matrix = np.asarray(rotation, dtype=np.float64)
    check_rotation(matrix)
    rotvec = Rotation.from_matrix(matrix).as_rotvec()
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.array([0.0, 0.0, 1.0]), 0.0
    axis = rotvec / np.abs(rotvec).max()
    snapped = np.round(axis)
    axis = np.where(np.abs(axis - snapped) < 1e-12, snapped, axis) + 0.0  # + 0.0: no -0.0
    degrees = math.degrees(angle)
    if abs(degrees - round(degrees)) < 1e-9:
        degrees = float(round(degrees))
    return axis, degrees


def check_rotation(matrix: np.ndarray, tol: float = 1e-6) -> None:
    """UsageError unless ``matrix`` is a proper rotation (3x3, orthonormal, det +1)."""
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise UsageError(f"a rotation must be a finite 3x3 matrix, got shape {matrix.shape}")
    if np.abs(matrix @ matrix.T - np.eye(3)).max() > tol or abs(np.linalg.det(matrix) - 1.0) > tol:
        raise UsageError("a rotation must be orthonormal with determinant +1 (a reflection or a scale was given)")


def cube_rotations() -> list[np.ndarray]:
    """The 24 proper rotations that map the axes onto the axes, most plausible first.

    Relative to a canonical frame (longest extent on x, shortest on z, so a plate
    lies on XY): first those keeping every axis on its line, then those keeping
    the z line, then the rest; within each, z up before z down, smaller angles
    first. The identity is first.
    """
    group = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            matrix[range(3), perm] = signs
            if np.linalg.det(matrix) > 0:
                group.append(matrix)
    return sorted(group, key=_plausibility)


def _plausibility(matrix: np.ndarray) -> tuple:
    moved = int(sum(abs(matrix[i, i]) != 1.0 for i in range(3)))
    z_key = 0 if matrix[2, 2] == 1.0 else 1 if matrix[2, 2] == -1.0 else 2
    angle = math.acos(max(-1.0, min(1.0, (np.trace(matrix) - 1.0) / 2.0)))
    return (moved, z_key, round(angle, 6), tuple(-matrix.reshape(-1)))


def permutation_name(matrix: np.ndarray) -> str:
    """A cube rotation as where each new axis comes from: ``-x-y+z`` is 180 degrees about z."""
    out = []
    for row in matrix:
        j = int(np.argmax(np.abs(row)))
        out.append(("+" if row[j] > 0 else "-") + _AXES[j])
    return "".join(out)


def angle_to_cube_group(relative: np.ndarray) -> float:
    """Degrees from ``relative`` to the nearest cube rotation: 0 when two frames share their axes lines."""
    best = max(float(np.sum(g * relative)) for g in cube_rotations())  # trace(g^T relative)
    return math.degrees(math.acos(max(-1.0, min(1.0, (best - 1.0) / 2.0))))


# --------------------------------------------------------------------------- base frames


def principal_extents(points) -> tuple[float, float, float]:
    """The extents of ``points`` (N, 3) along their principal axes, largest first, over the largest: (1, b, c).

    (1, 0, 0) for points on a line, (1, b, 0) for points in a plane, whatever the orientation.
    """
    centred = np.asarray(points, dtype=np.float64) - np.mean(points, axis=0)
    extents = np.sort(np.ptp(centred @ principal_frame(centred).T, axis=0))[::-1]
    if not extents[0] > 0:
        return (1.0, 0.0, 0.0)
    return tuple(float(e) for e in extents / extents[0])  # type: ignore[return-value]


def principal_frame(points: np.ndarray) -> np.ndarray:
    """Rotation whose rows are the principal axes (largest variance first), signs by convention."""
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return _oriented(vectors[:, ::-1].T, points)


def bounding_box_frame(points: np.ndarray) -> np.ndarray:
    """Rotation whose rows are the minimum-volume box's axes (longest first), signs by convention.

    trimesh's oriented box is searched over hull-face directions and is often a
    degree or two off on a sampled surface; a local Nelder-Mead search on the
    box volume (over the hull's vertices: same box, far fewer points) settles it.
    """
    hull = points[ConvexHull(points).vertices]
    to_origin, _ = trimesh.bounds.oriented_bounds(hull, ordered=False)
    axes = _tightest_near(hull, np.asarray(to_origin)[:3, :3])
    extents = np.ptp(hull @ axes.T, axis=0)
    return _oriented(axes[np.argsort(-extents, kind="stable")], points)


def _tightest_near(points: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The frame of least axis-aligned box volume near ``frame`` (a local search, a few degrees wide)."""

    def volume(rotvec: np.ndarray) -> float:
        return _box_volume(points @ (Rotation.from_rotvec(rotvec).as_matrix() @ frame).T)

    start = np.vstack([np.zeros(3), np.radians(_REFINE_STEP_DEGREES) * np.eye(3)])
    found = minimize(volume, np.zeros(3), method="Nelder-Mead",
                     options={"initial_simplex": start, "xatol": 1e-6, "fatol": 1e-12, "maxfev": 2000})
    if found.fun >= volume(np.zeros(3)):
        return frame
    return Rotation.from_rotvec(found.x).as_matrix() @ frame


def _oriented(axes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signs of the first two axes by skewness (the longer tail points +), then z = x cross y."""
    rows = [np.asarray(axes[0], float), np.asarray(axes[1], float)]
    for i, axis in enumerate(rows):
        coord = points @ axis
        coord = coord - coord.mean()
        spread = float(np.sqrt(np.mean(coord**2)))
        skew = float(np.mean(coord**3)) / spread**3 if spread > 0 else 0.0
        if abs(skew) < _SKEW_TIE:  # symmetric along this axis: its largest component positive
            skew = float(axis[np.argmax(np.abs(axis))])
        rows[i] = axis if skew > 0 else -axis
    frame = np.stack([rows[0], rows[1], np.cross(rows[0], rows[1])])
    u, _, vt = np.linalg.svd(frame)  # re-orthonormalize what eigh/trimesh gave to the last bit
    return u @ vt


def _box_volume(points: np.ndarray) -> float:
    return float(np.prod(points.max(axis=0) - points.min(axis=0)))


def turned_ratio(points) -> float:
    """How much larger the box of ``points`` (N, 3) in the given axes is than their tightest box: 1.0 for a
    part whose axes are the frame's (or a flat one); above :data:`TURNED_BOX_RATIO` it looks turned."""
    centred = np.asarray(points, dtype=np.float64) - np.mean(points, axis=0)
    size = float(np.ptp(centred, axis=0).max()) if len(centred) else 0.0
    if size == 0.0:
        return 1.0
    centred /= size  # the local search's tolerances are absolute
    given = _box_volume(centred)
    try:
        tightest = _box_volume(centred @ bounding_box_frame(centred).T)
    except (QhullError, ValueError):  # flat or collinear: no solid hull
        return 1.0
    return given / min(tightest, given) if given > 0 else 1.0


def base_frames(points: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, rotation) of the distinct, tight base frames of normalized ``points``, best first.

    Frames: ``input`` (identity), ``obb`` (minimum-volume box; none for a flat input), ``pca``. A frame whose
    axis-aligned box is over ``BASE_FRAME_SLACK`` larger than the tightest is
    dropped; so is one within ``SAME_FRAME_DEGREES`` of a kept frame (modulo the
    cube group). The input frame wins near-ties: an axis-aligned input is trusted.
    """
    frames = [("input", np.eye(3)), ("pca", principal_frame(points))]
    try:
        frames.insert(1, ("obb", bounding_box_frame(points)))
    except (QhullError, ValueError):  # flat or collinear input: no solid hull, no oriented box
        pass
    volumes = {name: _box_volume(points @ frame.T) for name, frame in frames}
    tightest = min(volumes.values())

    def rank(item):
        name, _ = item
        preferred = name == "input" and volumes[name] <= tightest * (1.0 + INPUT_FRAME_PREFERENCE)
        return (not preferred, volumes[name])

    kept: list[tuple[str, np.ndarray]] = []
    for name, frame in sorted(frames, key=rank):
        if volumes[name] > tightest * (1.0 + BASE_FRAME_SLACK):
            continue
        if any(angle_to_cube_group(frame @ other.T) < SAME_FRAME_DEGREES for _, other in kept):
            continue
        kept.append((name, frame))
    return kept


# --------------------------------------------------------------------------- candidates


def pose_candidates(
    points, budget: int | None = DEFAULT_POSE_BUDGET, *, max_points: int = NUM_SURFACE_POINTS
) -> list[PoseCandidate]:
    """Up to ``budget`` orientation candidates of NORMALIZED input ``points`` (N, 3), most plausible first.

    Base frames (:func:`base_frames`) times the 24 cube rotations, interleaved (the
    first rotation of every base, then the second, ...), so a small budget still
    tries each plausible base. At most ``max_points`` points (a seeded choice) are
    used to estimate the frames. ``budget`` may not exceed the number of distinct
    candidates there are (24 per base frame); ``None`` asks for all of them.
    """
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1):
        raise UsageError(f"pose budget must be a positive integer, got {budget!r}")
    cloud = validate_points(points, where="pose input", min_points=4)
    if len(cloud) > max_points:
        cloud = cloud[np.sort(np.random.default_rng(0).choice(len(cloud), max_points, replace=False))]
    bases = base_frames(cloud)
    if budget is not None and budget > CUBE_GROUP_SIZE * len(bases):
        raise UsageError(
            f"pose budget {budget} is more than the {CUBE_GROUP_SIZE * len(bases)} distinct orientations "
            f"of this input ({len(bases)} base frame(s) x {CUBE_GROUP_SIZE}); give at most that"
        )
    out: list[PoseCandidate] = []
    for turn in cube_rotations():
        for base_name, base in bases:
            rotation = turn @ base
            identity_turn = bool(np.array_equal(turn, np.eye(3)))
            name = base_name if identity_turn else f"{base_name}:{permutation_name(turn)}"
            out.append(PoseCandidate(rotation=rotation, name=name, points=cloud @ rotation.T))
            if len(out) == budget:
                return out
    return out


# --------------------------------------------------------------------------- posed model input


@dataclass
class PosedPoints:
    """A pose candidate's model input and the way back to the input's frame."""

    points: ModelPoints  # what the model reads (its transform is T1, the posed normalization)
    placement: PosePlacement


def posed_geometry(geometry, rotation, input_transform: Transform):
    """The input (mesh or (N, 3) cloud, input units) normalized by ``input_transform`` and rotated.

    A mesh stays a mesh (a copy), a cloud a float64 array.
    """
    matrix = np.asarray(rotation, dtype=np.float64)
    check_rotation(matrix)
    if isinstance(geometry, trimesh.Trimesh):
        posed = geometry.copy()
        posed.vertices = input_transform.apply(geometry.vertices) @ matrix.T
        return posed
    return input_transform.apply(np.asarray(geometry, dtype=np.float64)) @ matrix.T


def posed_model_points(
    geometry, candidate: PoseCandidate, input_transform: Transform, *,
    n_points: int = NUM_POINT_TOKENS, n_surface: int = NUM_SURFACE_POINTS, seed: int = 0,
) -> PosedPoints:
    """The model's points of ``geometry`` under ``candidate``, through the one ``to_model_points``.

    ``input_transform`` must be the transform ``to_model_points`` fitted on the
    unposed input (``ModelPoints.transform``). The identity candidate reads the
    input itself, so its points equal an unposed decode's exactly.
    """
    if np.array_equal(candidate.rotation, np.eye(3)):
        drawn = to_model_points(geometry, n_points=n_points, n_surface=n_surface, seed=seed)
        placement = PosePlacement(np.eye(3), Transform(center=np.zeros(3), scale=1.0), candidate.name)
        return PosedPoints(drawn, placement)
    posed = posed_geometry(geometry, candidate.rotation, input_transform)
    drawn = to_model_points(posed, n_points=n_points, n_surface=n_surface, seed=seed)
    return PosedPoints(drawn, PosePlacement(candidate.rotation, drawn.transform, candidate.name))


def posed_draws(
    geometry, dense, input_transform: Transform, num_candidates: int, *, budget: int = DEFAULT_POSE_BUDGET,
    seed: int = 0, n_points: int = NUM_POINT_TOKENS, n_surface: int = NUM_SURFACE_POINTS,
) -> list[PosedPoints]:
    """The ``num_candidates`` model inputs of ``--pose auto``: best-of-N spread over the poses.

    ``dense`` is the input's dense cloud in INPUT units (what candidates are judged
    against); the poses are estimated from it after ``input_transform``. With
    ``P = min(budget, num_candidates)`` poses, candidate ``k`` reads pose ``k % P``
    with point draw ``seed + k``, so N candidates still cost N generations and
    every pose gets about N / P of them.
    """
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, (int, np.integer)) or num_candidates < 1:
        raise UsageError(f"num_candidates must be a positive integer, got {num_candidates!r}")
    poses = pose_candidates(input_transform.apply(dense), budget=None)[: min(budget, num_candidates)]
    return [
        posed_model_points(geometry, poses[k % len(poses)], input_transform, n_points=n_points,
                           n_surface=n_surface, seed=seed + k)
        for k in range(num_candidates)
    ]


# --------------------------------------------------------------------------- literals


def _float(value: float) -> str:
    """A float literal (repr round-trips exactly and always has '.' or 'e')."""
    return repr(float(value) + 0.0)


def _vector(values) -> str:
    """A tuple of float literals; components within rounding of 0 are written as 0.0."""
    return "(" + ",".join(_float(0.0 if abs(v) < _IDENTITY_TOL else v) for v in values) + ")"
