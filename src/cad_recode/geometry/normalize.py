"""The one normalization of points and meshes, shared by training and inference.

Protocol (CAD-Recode): centre on the axis-aligned bounding-box centre, then scale
by ``2 / max extent`` so the shape fits in [-1, 1]^3 with its longest side
exactly 2 long. The returned :class:`Transform` maps results back to the
user's units (``invert``), and serializes to JSON (``to_dict``/``from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cad_recode.errors import InputError

# Beyond this no part's coordinates lie (a 10 m part in nanometres is 1e10); past about 1e154 the
# squared distances of every neighbour search overflow to inf, so the checks stop it here, with its row.
MAX_COORDINATE = 1e12


def validate_points(
    xyz, *, where: str = "point cloud", min_points: int = 1, require_extent: bool = True
) -> np.ndarray:
    """Return ``xyz`` as a float64 (N, 3) array, or raise one clear InputError.

    Checks, in order: shape (N, 3), not empty, at least ``min_points`` points,
    all finite, none beyond ``MAX_COORDINATE``, and (if ``require_extent``) not all at one spot. ``where`` names
    the file or object in the message.
    """
    arr = np.asarray(xyz)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(
            f"{where}: expected an (N, 3) array of x y z points, got shape {arr.shape}; "
            "pass 3 columns (x y z) per point"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{where}: points must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if len(arr) == 0:
        raise InputError(f"{where}: contains no points; give a cloud with at least {max(min_points, 1)}")
    if len(arr) < min_points:
        raise InputError(
            f"{where}: only {len(arr)} point(s), at least {min_points} are needed; "
            "give a denser point cloud"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(
            f"{where}: {int(bad.sum())} of {len(arr)} points contain NaN or inf "
            f"(first at row {int(np.argmax(bad))}); remove or repair those rows"
        )
    far = np.abs(arr).max(axis=1) > MAX_COORDINATE
    if far.any():
        first = int(np.argmax(far))
        raise InputError(
            f"{where}: {int(far.sum())} of {len(arr)} points lie beyond ±{MAX_COORDINATE:.0e} (first at row {first}: "
            f"{' '.join(f'{v:.3g}' for v in arr[first])}); no part is this large: check the units, "
            "or remove stray points"
        )
    if require_extent:
        extent = _max_extent(arr)
        if extent == 0.0:
            raise InputError(
                f"{where}: all points coincide (zero extent), so there is no shape to scale; "
                "give points spread out in space"
            )
        if not np.isfinite(2.0 / extent):  # so tiny (denormal) that scaling it to the unit cube overflows
            raise InputError(f"{where}: extent {extent:g} is too small to scale; check the units of the file")
    return arr


def _max_extent(xyz: np.ndarray) -> float:
    return float((xyz.max(axis=0) - xyz.min(axis=0)).max())


@dataclass(frozen=True, eq=False)
class Transform:
    """``normalized = (x - center) * scale``; ``invert`` is its exact inverse."""

    center: np.ndarray  # (3,) float64, bounding-box centre in input units
    scale: float  # 2 / max bounding-box extent

    def __post_init__(self) -> None:
        center = np.array(self.center, dtype=np.float64).reshape(-1)
        if center.shape != (3,) or not np.isfinite(center).all():
            raise InputError(f"normalization transform: center must be 3 finite numbers, got {self.center!r}")
        scale = float(self.scale)
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(f"normalization transform: scale must be a finite positive number, got {self.scale!r}")
        center.flags.writeable = False  # frozen means frozen, arrays included
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "scale", scale)

    def apply(self, xyz) -> np.ndarray:
        """Input units -> normalized units. Accepts (..., 3); returns float64."""
        return (np.asarray(xyz, dtype=np.float64) - self.center) * self.scale

    def invert(self, xyz) -> np.ndarray:
        """Normalized units -> input units. Accepts (..., 3); returns float64."""
        return np.asarray(xyz, dtype=np.float64) / self.scale + self.center

    def to_dict(self) -> dict:
        """Plain floats, ready for ``json.dump``."""
        return {"center": [float(c) for c in self.center], "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        try:
            return cls(center=d["center"], scale=d["scale"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"normalization transform: expected {{'center': [x, y, z], 'scale': s}}, got {d!r} ({exc})"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return self.scale == other.scale and bool(np.array_equal(self.center, other.center))

    def __hash__(self) -> int:
        return hash((tuple(self.center), self.scale))


def fit_normalization(xyz, *, where: str = "point cloud") -> Transform:
    """The transform that puts ``xyz`` (N, 3) in [-1, 1]^3 with max extent 2.

    InputError if ``xyz`` is empty, non-finite, or has zero extent.
    """
    arr = validate_points(xyz, where=where)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    return Transform(center=(lo + hi) / 2.0, scale=2.0 / float((hi - lo).max()))


def normalize(xyz, *, where: str = "point cloud") -> tuple[np.ndarray, Transform]:
    """Fit the transform on ``xyz`` and apply it: returns (normalized float64 (N, 3), transform)."""
    transform = fit_normalization(xyz, where=where)
    return transform.apply(xyz), transform
