"""Scan-like augmentations of the model's points: noise, uneven density, a missing side.

A scan is not a clean surface sample: it is noisy, denser where the scanner
looked longest, and one side may be missing. :func:`augmented_model_points` is
``to_model_points`` with those defects drawn per item:

1. the surface sample (normalized, 8192 points) is thinned unevenly: the
   chance to keep a point falls linearly from 1 to ``1 - uneven_strength``
   along a random direction;
2. one side is cut: the ``missing_fraction`` of the surface (area, since the
   sample is area-uniform) that lies furthest along a random signed axis is
   dropped;
3. FPS picks the model's points from what is left (the one FPS of
   ``to_model_points``), then Gaussian noise (the one ``add_noise``), its std in
   normalized units, and the points are clipped to [-1, 1]^3.

The frame stays the whole part's frame (the cut is not normalized away), because
the target program is written in that frame: the model learns to complete a
missing side, not to redraw the part at another scale. Every draw is seeded:
one seed, one result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cad_recode import defaults
from cad_recode.errors import UsageError
from cad_recode.geometry.sampling import (
    DEFAULT_NOISE_PROB,
    DEFAULT_NOISE_STD,
    NUM_POINT_TOKENS,
    NUM_SURFACE_POINTS,
    ModelPoints,
    to_model_points,
)

DEFAULT_UNEVEN_PROB = defaults.UNEVEN_PROB
DEFAULT_UNEVEN_STRENGTH = defaults.UNEVEN_STRENGTH
DEFAULT_MISSING_SIDE_PROB = defaults.MISSING_SIDE_PROB
DEFAULT_MISSING_FRACTION = defaults.MISSING_FRACTION
MAX_UNEVEN_STRENGTH = 0.99  # keep >= 1 % everywhere: a side thinned, never emptied by accident
# Independent random stream for augmentation draws (sampling uses the seed, noise stream 1).
_AUGMENT_STREAM = 2


@dataclass(frozen=True)
class ScanAugmentation:
    """What a training item's points may suffer; each defect has a probability and a strength."""

    noise_prob: float = DEFAULT_NOISE_PROB  # chance that a cloud is noisy
    noise_std: float = DEFAULT_NOISE_STD  # Gaussian std, normalized units ([-1, 1]^3)
    uneven_prob: float = DEFAULT_UNEVEN_PROB  # chance of density falling off along a direction
    uneven_strength: float = DEFAULT_UNEVEN_STRENGTH  # keep chance falls from 1 to 1 - this
    missing_side_prob: float = DEFAULT_MISSING_SIDE_PROB  # chance that one side is cut away
    missing_fraction: float = DEFAULT_MISSING_FRACTION  # share of the surface cut away

    def __post_init__(self) -> None:
        for name in ("noise_prob", "uneven_prob", "missing_side_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"augmentation {name} must be in [0, 1], got {value}")
        if not (np.isfinite(self.noise_std) and self.noise_std >= 0):
            raise UsageError(f"augmentation noise_std must be >= 0 (normalized units), got {self.noise_std}")
        if not 0.0 <= self.uneven_strength <= MAX_UNEVEN_STRENGTH:
            raise UsageError(
                f"augmentation uneven_strength must be in [0, {MAX_UNEVEN_STRENGTH}], got {self.uneven_strength}"
            )
        if not 0.0 <= self.missing_fraction < 1.0:
            raise UsageError(f"augmentation missing_fraction must be in [0, 1), got {self.missing_fraction}")

    @classmethod
    def off(cls) -> ScanAugmentation:
        """No augmentation at all (evaluation, or a clean baseline)."""
        return cls(noise_prob=0.0, uneven_prob=0.0, missing_side_prob=0.0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SideCut:
    """Which side was cut: points with ``sign * xyz[:, axis] > threshold`` were dropped."""

    axis: int  # 0, 1, 2 for x, y, z
    sign: float  # +1.0 or -1.0
    threshold: float

    def removed(self, xyz: np.ndarray) -> np.ndarray:
        """Mask of the rows of ``xyz`` on the cut side."""
        return self.sign * np.asarray(xyz)[:, self.axis] > self.threshold


def random_direction(rng: np.random.Generator) -> np.ndarray:
    """A unit vector uniform on the sphere."""
    v = rng.normal(size=3)
    while np.linalg.norm(v) < 1e-9:  # probability zero, but never divide by it
        v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def uneven_density(xyz: np.ndarray, strength: float, rng: np.random.Generator,
                   direction: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``xyz`` kept with a chance falling linearly from 1 to ``1 - strength`` along ``direction``.

    ``direction`` defaults to a random one. Keeps at least one row.
    """
    direction = random_direction(rng) if direction is None else np.asarray(direction, float)
    along = np.asarray(xyz) @ direction
    span = float(along.max() - along.min())
    t = (along - along.min()) / span if span > 0 else np.zeros(len(along))
    keep = rng.random(len(along)) < 1.0 - strength * t
    if not keep.any():
        keep[int(np.argmin(t))] = True
    return np.asarray(xyz)[keep]


def missing_side(xyz: np.ndarray, fraction: float, rng: np.random.Generator,
                 axis: int | None = None, sign: float | None = None) -> tuple[np.ndarray, SideCut]:
    """Drop the ``fraction`` of rows furthest along a signed axis (random unless given).

    Returns the kept rows and the :class:`SideCut`. On an area-uniform surface
    sample, the fraction of rows is the fraction of the surface. A flat face
    across the cut is dropped whole or kept whole, whichever leaves the share
    removed closer to ``fraction`` (a face is one side, not a random half of it).
    """
    xyz = np.asarray(xyz)
    axis = int(rng.integers(3)) if axis is None else int(axis)
    sign = float(rng.choice((-1.0, 1.0))) if sign is None else float(sign)
    along = sign * xyz[:, axis]
    top = float(along.max())
    if fraction <= 0 or top == float(along.min()):  # nothing to cut, or all points at one coordinate
        return xyz, SideCut(axis, sign, top)
    at = float(np.quantile(along, 1.0 - fraction))
    tie = 1e-6 * (top - float(along.min()))  # a face's points differ in their last bits only
    wanted = fraction * len(along)
    threshold = min((at + tie, at - tie), key=lambda t: abs(int((along > t).sum()) - wanted))
    if threshold < float(along.min()):  # would cut everything: keep the lowest coordinate
        threshold = at + tie
    cut = SideCut(axis, sign, threshold)
    return xyz[~cut.removed(xyz)], cut


def augmented_model_points(
    source, augmentation: ScanAugmentation, *, n_points: int = NUM_POINT_TOKENS,
    n_surface: int = NUM_SURFACE_POINTS, seed: int = 0,
) -> ModelPoints:
    """``to_model_points`` with the scan defects of ``augmentation`` drawn from ``seed``; see the module doc.

    The points stay in [-1, 1]^3 (noise is clipped) and in the whole part's frame.
    """
    rng = np.random.default_rng([seed, _AUGMENT_STREAM])
    uneven = rng.random() < augmentation.uneven_prob
    cut = rng.random() < augmentation.missing_side_prob

    def scan_defects(surface: np.ndarray) -> np.ndarray:
        if uneven:
            surface = uneven_density(surface, augmentation.uneven_strength, rng)
        if cut:
            surface, _ = missing_side(surface, augmentation.missing_fraction, rng)
        return surface

    drawn = to_model_points(
        source, n_points=n_points, n_surface=n_surface, seed=seed, noise_std=augmentation.noise_std,
        noise_prob=augmentation.noise_prob, surface_filter=scan_defects if uneven or cut else None,
    )
    return ModelPoints(points=np.clip(drawn.points, -1.0, 1.0), transform=drawn.transform)
