"""Evaluation inputs under the conditions a scan brings: a random pose, noise, a missing side.

Issue 16's robustness targets measure the same test set under each condition
of :data:`ROBUSTNESS_CONDITIONS`. :func:`condition_shape` turns one ground-truth
mesh into what inference reads under a condition, plus the ground truth to
measure against, in the same frame:

- ``rotated``: a random rotation per shape (seeded) about the mesh's bounding-box
  centre, applied to the input AND the ground truth (the placed-back program
  must match the part where the scan shows it);
- ``noise_0.01`` / ``noise_0.02``: a dense surface sample with Gaussian noise of
  that std in the input's normalized units (the one ``add_noise``), returned in
  the input's units; the ground truth is the clean mesh;
- ``missing_side``: a dense surface sample without the third of the surface
  furthest along a random signed axis (the one ``missing_side``);
- ``clean_cloud``: the clean dense surface sample alone, as a point cloud: what the conditions
  below change, where ``clean`` hands inference the mesh itself;
- ``stray_points``: a clean dense surface sample with 0.5 % more points strewn uniformly over
  [-3, 3]^3 of the normalized frame (reflections, dust: mostly off the part, up to two of its sizes away).

The seed of a shape comes from :func:`shape_seed` (the run's seed and the
shape's id), so every condition and every rerun sees the same draw.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from cad_recode.errors import UsageError
from cad_recode.geometry.augment import DEFAULT_MISSING_FRACTION, SideCut, missing_side
from cad_recode.geometry.normalize import fit_normalization
from cad_recode.geometry.sampling import NUM_SURFACE_POINTS, add_noise, sample_surface


@dataclass(frozen=True)
class EvalCondition:
    """One robustness condition: which defects the input gets."""

    name: str
    rotate: bool = False
    noise_std: float = 0.0  # normalized units
    missing_fraction: float = 0.0
    stray_share: float = 0.0  # extra points strewn around the part, as a share of the surface sample
    cloud: bool = False  # the input is a dense surface sample even without the defects above


CLEAN = EvalCondition("clean")
ROBUSTNESS_CONDITIONS = (
    CLEAN,
    EvalCondition("rotated", rotate=True),
    EvalCondition("noise_0.01", noise_std=0.01),
    EvalCondition("noise_0.02", noise_std=0.02),
    EvalCondition("missing_side", missing_fraction=DEFAULT_MISSING_FRACTION),
    EvalCondition("clean_cloud", cloud=True),
    EvalCondition("stray_points", stray_share=0.005),
)
STRAY_REACH = 3.0  # stray points lie in [-STRAY_REACH, STRAY_REACH]^3 of the normalized frame
CONDITION_NAMES = tuple(c.name for c in ROBUSTNESS_CONDITIONS)


def condition_by_name(name: str) -> EvalCondition:
    """The condition called ``name``; UsageError listing the valid names."""
    for condition in ROBUSTNESS_CONDITIONS:
        if condition.name == name:
            return condition
    raise UsageError(f"unknown condition {name!r}; choose one of: {', '.join(CONDITION_NAMES)}")


@dataclass
class ConditionedShape:
    """What inference reads under a condition, and the ground truth in the same frame."""

    input: trimesh.Trimesh | np.ndarray  # a mesh (clean or rotated) or an (N, 3) cloud, input units
    truth: trimesh.Trimesh
    rotation: np.ndarray  # (3, 3) applied about the bbox centre; identity when the condition does not rotate
    cut: SideCut | None = None  # the side removed (in the normalized frame), for missing_side


def shape_seed(seed: int, shape_id: str) -> int:
    """A per-shape seed, stable across runs and processes (not Python's salted ``hash``)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(str(shape_id).encode())]).generate_state(1)[0])


def rotate_about_center(mesh: trimesh.Trimesh, rotation: np.ndarray) -> trimesh.Trimesh:
    """A copy of ``mesh`` rotated about its bounding-box centre."""
    center = np.asarray(mesh.bounds).mean(axis=0)
    out = mesh.copy()
    out.vertices = (np.asarray(mesh.vertices) - center) @ np.asarray(rotation).T + center
    return out


def condition_shape(
    mesh: trimesh.Trimesh, condition: EvalCondition, *, seed: int, n_surface: int = NUM_SURFACE_POINTS
) -> ConditionedShape:
    """Apply ``condition`` to ground-truth ``mesh`` with this shape's ``seed``; see the module docstring."""
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(random_state=rng).as_matrix() if condition.rotate else np.eye(3)
    truth = rotate_about_center(mesh, rotation) if condition.rotate else mesh
    if not (condition.cloud or condition.noise_std or condition.missing_fraction or condition.stray_share):
        return ConditionedShape(truth, truth, rotation)
    transform = fit_normalization(np.asarray(truth.bounds), where="ground truth mesh")
    dense = transform.apply(sample_surface(truth, n_surface, seed=seed))
    cut = None
    if condition.missing_fraction > 0:
        dense, cut = missing_side(dense, condition.missing_fraction, rng)
    if condition.noise_std > 0:
        dense = add_noise(dense, std=condition.noise_std, prob=1.0, rng=rng)
    if condition.stray_share > 0:
        strays = rng.uniform(-STRAY_REACH, STRAY_REACH, (max(1, round(condition.stray_share * len(dense))), 3))
        dense = np.vstack([dense, strays])
    return ConditionedShape(transform.invert(dense), truth, rotation, cut)
