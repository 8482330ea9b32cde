"""Mesh or cloud -> the 256 normalized points the model reads.

:func:`to_model_points` is THE function that training and inference both call,
so the two can never drift apart. Its protocol (CAD-Recode):

1. normalize by the bounding box (:mod:`cad_recode.geometry.normalize`) into [-1, 1]^3;
2. a mesh is sampled uniformly on its surface (8192 points); a cloud larger than
   8192 points is reduced to 8192 by a seeded random choice;
3. farthest point sampling (FPS) down to 256 points, with the maintained
   ``fpsample`` library;
4. optional Gaussian noise, its std in NORMALIZED units, applied to a whole
   cloud with probability ``noise_prob``.

Every step is deterministic for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import fpsample
import numpy as np
import trimesh

from cad_recode import defaults
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.normalize import Transform, fit_normalization, validate_points
from cad_recode.geometry.scan_noise import cloud_normalization

NUM_SURFACE_POINTS = defaults.NUM_SURFACE_POINTS
NUM_POINT_TOKENS = defaults.NUM_POINT_TOKENS
DEFAULT_NOISE_STD = defaults.NOISE_STD
DEFAULT_NOISE_PROB = defaults.NOISE_PROB

# Tree height of fpsample's bucket KD-line FPS (buckets of 2**h points). It picks
# exactly the farthest point at every step, like vanilla FPS, but prunes the
# distance updates with a KD tree, so 8192 -> 256 is several times faster;
# the library advises h = 5..7 for a workload of this size.
_KDLINE_HEIGHT = 6
# Independent random stream for the noise, so noise never shifts the sampling.
_NOISE_STREAM = 1


def sample_surface(mesh: trimesh.Trimesh, n: int = NUM_SURFACE_POINTS, seed: int = 0) -> np.ndarray:
    """``n`` points uniform on the mesh surface (area-weighted), float64 (n, 3); same seed, same points."""
    _check_count("n", n)
    _check_seed(seed)
    if len(mesh.faces) == 0 or not mesh.area > 0:
        raise InputError(
            f"mesh with {len(mesh.faces)} faces has no surface area to sample; "
            "give a mesh with non-degenerate triangles"
        )
    points, _ = trimesh.sample.sample_surface(mesh, int(n), seed=int(seed))
    return np.asarray(points, dtype=np.float64)


def farthest_point_sample(xyz, n: int = NUM_POINT_TOKENS, seed: int = 0) -> np.ndarray:
    """Indices (n,) int64 of ``n`` farthest-point-sampled rows of ``xyz`` (N, 3), in FPS order.

    The start index is drawn from ``seed``, so a seed gives one answer.
    fpsample's KD-line variant does not return that index first (it starts
    from its own tree order), but the result is a fixed function of the seed,
    and each point after the first is the farthest from those before it.

    Fewer points than asked (N < n): FPS orders all N points, then that order
    is repeated cyclically until n indices are filled, so every point appears
    and the far-apart ones first.
    """
    _check_count("n", n)
    _check_seed(seed)
    arr = validate_points(xyz, where="farthest point sampling input", require_extent=False)
    n_pts = len(arr)
    take = min(n, n_pts)
    start = int(np.random.default_rng(seed).integers(n_pts))
    if n_pts == 1:  # nothing to choose (the KD-line tree needs 2**h <= N with h >= 1)
        order = np.zeros(1, dtype=np.int64)
    else:
        height = min(_KDLINE_HEIGHT, int(np.log2(n_pts)))
        pc = np.ascontiguousarray(arr, dtype=np.float32)
        order = fpsample.bucket_fps_kdline_sampling(pc, take, h=height, start_idx=start).astype(np.int64)
    if take < n:
        order = order[np.arange(n) % take]
    return order


def add_noise(
    xyz, std: float = DEFAULT_NOISE_STD, prob: float = DEFAULT_NOISE_PROB, *, rng: np.random.Generator
) -> np.ndarray:
    """With probability ``prob``, add N(0, std^2) noise to every coordinate; else return a copy.

    ``std`` is in normalized units (the cloud spans [-1, 1]), so call this after
    normalization. One coin per call: the whole cloud is noisy or clean.
    """
    if not (np.isfinite(std) and std >= 0):
        raise UsageError(f"noise std must be >= 0, got {std}")
    if not (0.0 <= prob <= 1.0):
        raise UsageError(f"noise probability must be in [0, 1], got {prob}")
    arr = np.array(xyz, copy=True)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if std > 0 and rng.random() < prob:
        arr += rng.normal(0.0, std, size=arr.shape).astype(arr.dtype, copy=False)
    return arr


@dataclass
class ModelPoints:
    """What the model reads, plus the way back to the input's units."""

    points: np.ndarray  # (n, 3) float32, normalized
    transform: Transform  # transform.invert(points) gives input units


def to_model_points(
    source: trimesh.Trimesh | np.ndarray,
    *,
    n_points: int = NUM_POINT_TOKENS,
    n_surface: int = NUM_SURFACE_POINTS,
    seed: int = 0,
    noise_std: float = 0.0,
    noise_prob: float = 0.0,
    surface_filter: Callable[[np.ndarray], np.ndarray] | None = None,
    transform: Transform | None = None,
) -> ModelPoints:
    """Mesh or (N, 3) cloud -> :class:`ModelPoints`; see the module docstring for the protocol.

    A mesh is normalized by the bounding box of its referenced vertices; a
    cloud by its own. Clouds need at least 3 points (InputError otherwise);
    with fewer than ``n_points`` the FPS order is repeated (see
    :func:`farthest_point_sample`).

    ``surface_filter`` (optional) takes the normalized surface points and returns
    the rows to keep, before FPS: scan augmentations that thin or cut the surface
    (:mod:`cad_recode.geometry.augment`). It must keep at least one point.

    ``transform`` (optional): the normalization, when the caller has fitted it already (inference
    fits a cloud's once for all its draws; a noisy cloud's box costs about 0.1 s).
    """
    _check_count("n_points", n_points)
    _check_count("n_surface", n_surface)
    _check_seed(seed)
    if isinstance(source, trimesh.PointCloud):
        source = np.asarray(source.vertices)
    if isinstance(source, trimesh.Trimesh):
        used = np.unique(np.asarray(source.faces).reshape(-1))
        if len(used) == 0:
            raise InputError("mesh has no faces; give a mesh with triangles, or pass its vertices as a point cloud")
        if transform is None:
            transform = fit_normalization(source.vertices[used], where="mesh")
        surface = transform.apply(sample_surface(source, n_surface, seed=seed))
    else:
        cloud = validate_points(source, where="point cloud", min_points=3)
        if transform is None:
            transform = cloud_normalization(cloud)  # a noisy scan's box from its smoothed points
        surface = transform.apply(cloud)
        if len(surface) > n_surface:  # match the training density before FPS
            keep = np.random.default_rng(seed).choice(len(surface), n_surface, replace=False)
            surface = surface[np.sort(keep)]
    if surface_filter is not None:
        surface = surface_filter(surface)
        if len(surface) == 0:
            raise UsageError("the surface filter kept no points; weaken the augmentation")
    points = surface[farthest_point_sample(surface, n_points, seed=seed)]
    noise_rng = np.random.default_rng([seed, _NOISE_STREAM])
    points = add_noise(points, std=noise_std, prob=noise_prob, rng=noise_rng)
    return ModelPoints(points=points.astype(np.float32), transform=transform)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
