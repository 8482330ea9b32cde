"""What a reconstruction starts from: the input's N point draws, its dense cloud and a ground truth.

An input is a path (point cloud, mesh or STEP file), a mesh, an (N, 3) array,
:class:`ModelPoints`, or ``("name", mesh_or_points)``. A ground truth is a mesh,
``("name", mesh)`` or a path (mesh, STEP or .py program, see
:func:`cad_recode.geometry.load_shape.load_shape`); it is only measured, never
used to choose a candidate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import trimesh

from cad_recode.defaults import MODEL_UNITS, NUM_SURFACE_POINTS
from cad_recode.errors import InputError
from cad_recode.geometry.normalize import Transform, validate_points
from cad_recode.geometry.pose import (
    DEFAULT_POSE_BUDGET,
    TURNED_BOX_RATIO,
    PosePlacement,
    posed_draws,
    principal_extents,
    turned_ratio,
)
from cad_recode.geometry.sampling import ModelPoints, sample_surface, to_model_points
from cad_recode.geometry.scan_noise import cloud_box
from cad_recode.geometry.stray_points import without_stray_points


@dataclass
class EncodedInput:
    """An input after encoding: its N point draws and the dense cloud the candidates are judged against."""

    name: str
    draws: list[ModelPoints]
    dense: np.ndarray  # input units; normalized by CloudDistance
    ground_truth: trimesh.Trimesh | None
    ground_truth_name: str | None
    encode_seconds: float
    truth_seconds: float  # loading / running the ground truth: counted under metrics
    # T0: the input's own normalization (input units -> [-1, 1]^3); restore_units maps back with it
    transform: Transform | None = None
    # --pose auto: draw k was decoded under placements[k] (None: every draw reads the input as given)
    placements: list[PosePlacement] | None = None
    mesh: trimesh.Trimesh | None = None  # the input itself when it is a mesh (input units), for the picture
    noise: float | None = None  # a point cloud's noise statistic (cad_recode.geometry.scan_noise); None for a mesh
    stray_points: int = 0  # a point cloud's points dropped as strays (cad_recode.geometry.stray_points)
    stray_islands: int = 0  # a mesh's islands beyond its main body dropped (the same module)
    turned: float | None = None  # its box over its tightest box (pose.turned_ratio); None under pose "auto"
    extents: tuple[float, float, float] = (1.0, 1.0, 1.0)  # along its principal axes, over the largest

    def __post_init__(self) -> None:
        if self.transform is None:
            self.transform = self.draws[0].transform

    def placed_back(self, k: int, code: str) -> str:
        """Candidate ``k``'s program in the input's model-unit frame (unchanged without poses)."""
        from cad_recode.geometry.pose import place_back

        return code if self.placements is None else place_back(code, self.placements[k])

    def first_of_reading(self) -> list[bool]:
        """For each candidate: is it the first decoded from its reading of the input (as given, or its pose)?"""
        if self.placements is None:
            return [k == 0 for k in range(len(self.draws))]
        names = [placement.name for placement in self.placements]
        return [name not in names[:k] for k, name in enumerate(names)]

    def pose_name(self, k: int) -> str | None:
        return None if self.placements is None else self.placements[k].name

    @property
    def input_points(self) -> np.ndarray:
        """The first draw's points in the input's normalized frame (a posed draw is turned back)."""
        first = self.draws[0].points
        if self.placements is None:
            return first
        return self.placements[0].to_input_frame(first * MODEL_UNITS) / MODEL_UNITS


def load_input(source) -> tuple[str, trimesh.Trimesh | np.ndarray]:
    """(name, mesh or (N, 3) cloud in the input's units) of any accepted input."""
    from cad_recode.geometry.loaders import load_geometry

    if isinstance(source, (str, os.PathLike)):
        return str(source), load_geometry(source)
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], str):
        return source[0], source[1]
    if isinstance(source, trimesh.Trimesh):
        return "mesh", source
    if isinstance(source, ModelPoints):
        return "points", source.transform.invert(source.points)
    if isinstance(source, trimesh.PointCloud):
        return "points", np.asarray(source.vertices, dtype=np.float64)
    try:
        return "points", np.asarray(source, dtype=np.float64)
    except (TypeError, ValueError):  # a dict, a Scene, text ...: say what an input may be
        raise InputError(f"an input must be a file path, a trimesh.Trimesh or PointCloud, an (N, 3) array of points "
                         f"or ModelPoints; got a {type(source).__name__}") from None


def load_ground_truth(truth, sandbox) -> tuple[str, trimesh.Trimesh]:
    """(name, mesh) of a ground truth: a mesh, ("name", mesh), or a path through load_shape."""
    from cad_recode.geometry.load_shape import load_shape
    from cad_recode.geometry.profiles import USER_PROGRAM_TIMEOUT

    if isinstance(truth, tuple):
        return truth[0], truth[1]
    if isinstance(truth, trimesh.Trimesh):
        return "mesh", truth
    return str(truth), load_shape(truth, sandbox, what="ground truth", timeout=USER_PROGRAM_TIMEOUT)


def encode_input(source, num_candidates: int, *, num_point_tokens: int, num_surface_points: int,
                 seed: int = 0, ground_truth=None, sandbox=None, pose: str = "none",
                 pose_budget: int = DEFAULT_POSE_BUDGET, drop_strays: bool = True) -> EncodedInput:
    """Load one input; its N point draws (seeds seed..seed+N-1), dense cloud and ground truth.

    The draws use the model's own ``num_point_tokens`` and ``num_surface_points`` (its
    config records them), so inference samples exactly as training did. ``pose="auto"``:
    the draws are spread over up to ``pose_budget`` orientations of the input
    (:func:`cad_recode.geometry.pose.posed_draws`); each records how to place its program back.
    ``pose="if_turned"``: the same for an input that looks turned (:func:`~cad_recode.geometry.pose.turned_ratio`
    over :data:`~cad_recode.geometry.pose.TURNED_BOX_RATIO`), else the input as given.
    ``drop_strays``: a cloud's stray points, a mesh's islands beyond its main body, are dropped first
    (:mod:`cad_recode.geometry.stray_points`).
    """
    started = time.perf_counter()
    name, geometry = load_input(source)
    is_cloud = not isinstance(geometry, trimesh.Trimesh)
    if is_cloud:
        geometry = validate_points(geometry, where="point cloud" if name == "points" else name, min_points=3)
    dropped = 0
    if drop_strays:  # a scan's strays (a scanned mesh's islands) would set its box, and FPS picks strays first
        geometry, dropped = without_stray_points(geometry)
    sizes = dict(n_points=num_point_tokens, n_surface=num_surface_points)
    box = cloud_box(geometry) if is_cloud else None  # fitted once for every draw
    if box is None:
        dense = sample_surface(geometry, NUM_SURFACE_POINTS, seed=seed)  # the protocol's density for CD
    else:
        dense = np.asarray(geometry, dtype=np.float64)
    # the input's shape at the protocol's density: a scan's millions of points tell no more, 64 points too little
    shape_sample = dense[:: max(1, len(dense) // NUM_SURFACE_POINTS)]
    turned = None
    if pose != "auto":  # the model writes parts in the frame's axes: does this one look turned from them?
        turned = turned_ratio(shape_sample)
        if pose == "if_turned":
            pose = "auto" if turned > TURNED_BOX_RATIO else "none"
    draws = [to_model_points(geometry, **sizes, seed=seed + k, transform=box.transform if box else None)
             for k in range(1 if pose == "auto" else num_candidates)]
    transform, placements = draws[0].transform, None
    if pose == "auto":
        posed = posed_draws(geometry, dense, transform, num_candidates, budget=pose_budget, seed=seed, **sizes)
        draws, placements = [p.points for p in posed], [p.placement for p in posed]
    encoded = time.perf_counter()
    truth, truth_name = (None, None)
    if ground_truth is not None:
        truth_name, truth = load_ground_truth(ground_truth, sandbox)
    mesh = geometry if isinstance(geometry, trimesh.Trimesh) else None
    return EncodedInput(name, draws, dense, truth, truth_name, encoded - started, time.perf_counter() - encoded,
                        transform, placements, mesh, box.noise if box else None,
                        stray_points=dropped if is_cloud else 0, stray_islands=0 if is_cloud else dropped,
                        turned=turned, extents=principal_extents(shape_sample))


def shape_input(name: str, sandbox) -> tuple[tuple[str, trimesh.Trimesh], tuple[str, trimesh.Trimesh]]:
    """A built-in example: its program is the ground truth; its solid (sampled later) is the input."""
    from cad_recode.geometry.shapes import example_program

    result = sandbox.run(example_program(name))
    if not result.ok:
        raise InputError(f"built-in shape {name!r} failed in the sandbox: {result.status.value}: {result.reason}")
    mesh = result.to_trimesh()
    return (f"shape:{name}", mesh), (f"shape:{name}", mesh)
