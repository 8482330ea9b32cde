"""Refinement's other starting point: a sketch-and-extrude program fitted to the input points.

The model's winner is the usual start of refinement. Where the model misread the
part (an L-plate written as a box, an outline on the wrong base plane), fitting
numbers cannot mend it; a program fitted to the points
(:mod:`cad_recode.geometry.extrusion_fit`) often can. So, with refinement on, the
fitted programs run in one sandbox batch: fitted in the input's frame and, under
``--pose auto``, in each pose's frame too (placed back like a posed candidate);
a noisy scan's points are first smoothed, once onto their local planes and once
keeping a thin wall's faces apart (:mod:`cad_recode.geometry.scan_noise`), and
both readings are fitted. The one closest to the input points
becomes refinement's start when it is clearly closer than the model's winner
(``judge.FIT_MARGIN``). The ground truth plays no part; the report keeps the
model's program and says which start refinement took.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cad_recode.defaults import MODEL_UNITS
from cad_recode.errors import InputError
from cad_recode.geometry.extrusion_fit import ExtrusionFit, extrusion_programs
from cad_recode.geometry.metrics import CloudDistance, protocol_cd
from cad_recode.geometry.pose import PosePlacement, place_back
from cad_recode.geometry.scan_noise import is_noisy, smooth_keeping_walls, smooth_onto_planes
from cad_recode.inference.inputs import EncodedInput

FIT_POINTS = 8192  # input points a fit reads: a scan of millions adds nothing to an outline
# the width of smooth_keeping_walls in units of the cloud's noise statistic (which reads σ = 0.01 as about
# 0.005): about one σ, so a face 6σ away weighs nothing
WALL_KEEPING_WIDTH = 2.0


@dataclass
class FittedStart:
    """The fitted program closest to the input, with its run and its distance to the input."""

    code: str
    result: object  # its ExecResult
    cd_input: float  # protocol CD to the input points
    label: str  # e.g. "a sketch on ZX extruded"

    def describe(self, model_cd: float | None) -> str:
        against = f" against {model_cd:.3g} for the model's" if model_cd is not None else \
            "; no program of the model's was valid"
        return f"started from the points' own outline: {self.label} (CD {self.cd_input:.3g}{against})"


def fitted_programs(item: EncodedInput) -> list[tuple[str, str]]:
    """(label, program in the input's model-unit frame) of every fit, in every frame the input was read in."""
    points = np.asarray(item.dense, dtype=np.float64)
    if len(points) > FIT_POINTS:
        points = points[np.random.default_rng(0).choice(len(points), FIT_POINTS, replace=False)]
    model_units = item.transform.apply(points) * MODEL_UNITS
    readings = [model_units]
    if is_noisy(item.noise):
        # An outline traced through noise is ragged and its ends overshoot, so the fits read smoothed
        # points. Smoothing onto planes averages the noise best but merges the faces of a thin wall;
        # the second reading keeps them apart. The distance to the input decides between their fits.
        readings = [smooth_onto_planes(model_units),
                    smooth_keeping_walls(model_units, WALL_KEEPING_WIDTH * item.noise * MODEL_UNITS)]
    programs: dict[str, str] = {}  # program -> label: two readings often give the same fit
    for reading in readings:
        for fit in extrusion_programs(reading):
            programs.setdefault(fit.code, _label(fit))
        for placement in _distinct_poses(item.placements or []):
            for fit in extrusion_programs(_to_pose_frame(reading, placement)):
                programs.setdefault(place_back(fit.code, placement), f"{_label(fit)}, pose {placement.name}")
    return [(label, code) for code, label in programs.items()]


def _label(fit: ExtrusionFit) -> str:
    if fit.steps == 1:
        return f"a sketch on {fit.plane} extruded"
    return f"{fit.steps} sketches on {fit.plane} extruded and stacked"


def best_fitted_start(item: EncodedInput, sandbox, to_input: CloudDistance,
                      budget: int) -> tuple[FittedStart | None, int]:
    """Run up to ``budget`` fitted programs: (the valid one closest to the input or None, the runs spent)."""
    programs = fitted_programs(item)[: max(budget, 0)]
    if not programs:
        return None, 0
    best = None
    for (label, code), result in zip(programs, sandbox.map([code for _, code in programs])):
        if not result.ok:
            continue
        try:
            cd = protocol_cd(to_input(result.to_trimesh(), where=f"fitted program ({label})"))
        except (ValueError, InputError):  # a degenerate solid is no start
            continue
        if math.isfinite(cd) and (best is None or cd < best.cd_input):
            best = FittedStart(code, result, cd, label)
    return best, len(programs)


def _distinct_poses(placements: list[PosePlacement]) -> list[PosePlacement]:
    seen, distinct = set(), []
    for placement in placements:
        if placement.is_identity or placement.name in seen:
            continue
        seen.add(placement.name)
        distinct.append(placement)
    return distinct


def _to_pose_frame(model_units: np.ndarray, placement: PosePlacement) -> np.ndarray:
    """The inverse of ``placement.to_input_frame``: input model units -> the pose's model units."""
    return (model_units @ placement.rotation.T - MODEL_UNITS * placement.posed.center) * placement.posed.scale
