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

from cad_recode.defaults import NUM_SURFACE_POINTS
from cad_recode.errors import InputError
from cad_recode.geometry.sampling import ModelPoints, sample_surface, to_model_points


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
    mesh: trimesh.Trimesh | None = None  # the input itself when it is a mesh (input units), for the picture


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
    return "points", np.asarray(source, dtype=np.float64)


def load_ground_truth(truth, sandbox) -> tuple[str, trimesh.Trimesh]:
    """(name, mesh) of a ground truth: a mesh, ("name", mesh), or a path through load_shape."""
    from cad_recode.geometry.load_shape import load_shape

    if isinstance(truth, tuple):
        return truth[0], truth[1]
    if isinstance(truth, trimesh.Trimesh):
        return "mesh", truth
    return str(truth), load_shape(truth, sandbox, what="ground truth")


def encode_input(source, num_candidates: int, *, num_point_tokens: int, num_surface_points: int,
                 seed: int = 0, ground_truth=None, sandbox=None) -> EncodedInput:
    """Load one input; its N point draws (seeds seed..seed+N-1), dense cloud and ground truth.

    The draws use the model's own ``num_point_tokens`` and ``num_surface_points`` (its
    config records them), so inference samples exactly as training did.
    """
    started = time.perf_counter()
    name, geometry = load_input(source)
    draws = [to_model_points(geometry, n_points=num_point_tokens, n_surface=num_surface_points, seed=seed + k)
             for k in range(num_candidates)]
    if isinstance(geometry, trimesh.Trimesh):
        dense = sample_surface(geometry, NUM_SURFACE_POINTS, seed=seed)  # the protocol's density for CD
    else:
        dense = np.asarray(geometry, dtype=np.float64)
    encoded = time.perf_counter()
    truth, truth_name = (None, None)
    if ground_truth is not None:
        truth_name, truth = load_ground_truth(ground_truth, sandbox)
    mesh = geometry if isinstance(geometry, trimesh.Trimesh) else None
    return EncodedInput(name, draws, dense, truth, truth_name, encoded - started, time.perf_counter() - encoded,
                        mesh=mesh)


def shape_input(name: str, sandbox) -> tuple[tuple[str, trimesh.Trimesh], tuple[str, trimesh.Trimesh]]:
    """A built-in example: its program is the ground truth; its solid (sampled later) is the input."""
    from cad_recode.geometry.shapes import example_program

    result = sandbox.run(example_program(name))
    if not result.ok:
        raise InputError(f"built-in shape {name!r} failed in the sandbox: {result.status.value}: {result.reason}")
    mesh = result.to_trimesh()
    return (f"shape:{name}", mesh), (f"shape:{name}", mesh)
