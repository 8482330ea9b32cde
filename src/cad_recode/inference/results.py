"""Typed results of a reconstruction; the JSON report is written from these fields, never read back.

Every Chamfer distance here is on the protocol's scale: CD x10^3 with both shapes
normalized into the unit cube (:func:`cad_recode.geometry.metrics.protocol_cd`).
``CD_UNITS`` says so in each report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import trimesh

from cad_recode.geometry.normalize import Transform
from cad_recode.inference.decoding import Decoding

CD_UNITS = "CD x10^3, both shapes normalized to the unit cube (the evaluation protocol's scale)"
FLAT_SHARE = 0.01
"""An input whose depth (or width) along its principal axes is under this share of its size is flat (a line)."""


@dataclass
class Candidate:
    """One generated program: which point draw, how decoded, what happened when it ran, how close it is."""

    seed: int
    code: str
    tokens: int  # generated tokens, up to the end token
    finished: bool  # ended with <|endoftext|> (False: cut at max_new_tokens, or as a runaway)
    status: str = ""
    reason: str = ""
    cd_input: float | None = None  # to the input points
    # the mean distance to the input points both ways (x10^3, unit-cube scale): best of N's key
    distance_input: float | None = None
    pose: str | None = None  # --pose auto: the orientation it was decoded under (None: the input as given)
    sampled: bool = False  # sampled (Decoding.sampling) rather than greedy

    def to_dict(self) -> dict[str, Any]:
        keys = ("seed", "sampled", "status", "reason", "cd_input", "distance_input", "tokens", "finished") + (
            ("pose",) if self.pose else ())
        return {k: getattr(self, k) for k in keys}


@dataclass
class TruthComparison:
    """The chosen solid against a ground truth (only measured, never used to choose)."""

    name: str
    cd: float | None = None
    iou: float | None = None  # None: not measurable (iou_error says why)
    iou_error: str = ""
    error: str = ""  # the comparison failed altogether


@dataclass
class RefinementSummary:
    """What refinement did to the winner; the program as the model wrote it is kept."""

    model_code: str
    cd_input_before: float | None
    cd_input_after: float | None
    literals_changed: int
    evaluations: int
    seconds: float
    model_truth: TruthComparison | None = None  # the program as written, against the ground truth
    structure_edits: list[str] = field(default_factory=list)  # e.g. ["removed .circle(66,mode='s')"]
    started_from: str = "model"  # or the fitted program it started from, e.g. "a sketch on ZX extruded"

    def describe(self) -> str:
        return describe_refinement(self.literals_changed, self.structure_edits, self.evaluations)


def describe_refinement(literals_changed: int, structure_edits: Sequence[str], evaluations: int) -> str:
    """One phrase: what refinement changed and what it cost (the CLI's line, the web app's summary)."""
    edits = "".join(f"; {edit}" for edit in structure_edits)
    return f"refinement changed {literals_changed} numbers in {evaluations} runs{edits}"


@dataclass
class Timings:
    """Seconds per stage for one input (batch stages are shared out evenly)."""

    encode: float = 0.0
    generate: float = 0.0
    execute: float = 0.0
    refine: float = 0.0
    metrics: float = 0.0

    @property
    def total(self) -> float:
        return self.encode + self.generate + self.execute + self.refine + self.metrics

    def to_dict(self) -> dict[str, float]:
        stages = dict(encode=self.encode, generate=self.generate, execute=self.execute, refine=self.refine,
                      metrics=self.metrics, total=self.total)
        return {k: round(v, 6) for k, v in stages.items()}


@dataclass
class Reconstruction:
    """The result for one input. ``code`` is the winner's program ('' if no candidate was valid)."""

    input_name: str
    model: str
    code: str
    result: Any  # the winner's ExecResult, or None
    mesh: trimesh.Trimesh | None  # the winner's solid, in input units if restored_units, else model units
    candidates: list[Candidate]
    best: int | None
    cd_input: float | None
    transform: Transform
    decoding: Decoding
    input_points: np.ndarray  # the first draw's normalized model points (for the picture)
    prompt_tokens: int
    restored_units: bool = False
    truth: TruthComparison | None = None
    refinement: RefinementSummary | None = None
    timings: Timings = field(default_factory=Timings)
    outputs: dict[str, Path] = field(default_factory=dict)  # filled in by export.save
    step_units: str = ""  # "model" when part.py and the STEP could not be put in input units (no ``r``)
    input_cloud: np.ndarray | None = None  # the dense input cloud CD is measured to, input units (the picture)
    input_mesh: trimesh.Trimesh | None = None  # the input as given when it was a mesh, input units (the picture)
    input_noise: float | None = None  # a point cloud's noise statistic (None for a mesh); see scan_noise
    input_stray_points: int = 0  # a point cloud's points dropped as strays before anything read it; see stray_points
    input_stray_islands: int = 0  # a mesh's islands beyond its main body, dropped likewise
    input_turned: float | None = None  # its box over its tightest box (pose.turned_ratio); None under pose "auto"
    input_extents: tuple[float, float, float] = (1.0, 1.0, 1.0)  # along its principal axes, over the largest

    @property
    def looks_turned(self) -> bool:
        """The input's axes are not the frame's (``if_turned`` then tried the pose candidates)."""
        from cad_recode.geometry.pose import TURNED_BOX_RATIO

        return self.input_turned is not None and self.input_turned > TURNED_BOX_RATIO

    @property
    def input_warning(self) -> str | None:
        """What makes the input a poor one to read, in words (a line, a plane), else None."""
        _, width, depth = self.input_extents
        if width < FLAT_SHARE:
            return (f"the input lies along a line (its width is {width:.1%} of its length): there is no solid to "
                    "read, so the program is a guess")
        if depth < FLAT_SHARE:
            return (f"the input is flat (its depth is {depth:.1%} of its size): the model reads parts with depth, "
                    "so the thickness it wrote is a guess; a scan of one side only?")
        return None

    @property
    def noisy_input(self) -> bool:
        """The input read as a noisy scan: it was normalized by the box of its smoothed points."""
        from cad_recode.geometry.scan_noise import is_noisy

        return is_noisy(self.input_noise)

    @property
    def valid(self) -> bool:
        return self.mesh is not None

    @property
    def winning_pose(self) -> str | None:
        """The orientation the winner was decoded under (--pose auto), else None."""
        return self.candidates[self.best].pose if self.best is not None else None

    @property
    def num_valid_candidates(self) -> int:
        return sum(c.cd_input is not None for c in self.candidates)

    @property
    def invalid_kind(self) -> str | None:
        """None when valid; else why, by kind (cad_recode.geometry.invalid), of the candidate that got furthest."""
        from cad_recode.geometry.invalid import classify_invalid, invalid_kind_of_input

        if self.valid:
            return None
        return invalid_kind_of_input(classify_invalid(c.status, c.finished) for c in self.candidates) or "other"

    @property
    def reason(self) -> str:
        """Why no candidate was valid ('' when one was)."""
        if self.valid:
            return ""
        reasons = sorted({f"{c.status}: {c.reason}" if c.reason else c.status for c in self.candidates})
        return "; ".join(reasons)[:500]

    def to_report(self) -> dict[str, Any]:
        """The JSON report (part.json)."""
        truth = self.truth
        report: dict[str, Any] = {
            "input": self.input_name,
            "model": self.model,
            "valid": self.valid,
            "best_candidate": self.best,
            "num_candidates": len(self.candidates),
            "num_valid_candidates": self.num_valid_candidates,
            "cd_units": CD_UNITS,
            "cd_input": self.cd_input,
            "ground_truth": truth.name if truth else None,
            "cd_gt": truth.cd if truth else None,
            "iou_gt": truth.iou if truth else None,
            "units": "input" if self.restored_units else "model",
            "program_units": "input" if self.restored_units and self.step_units != "model" else "model",
            "transform": self.transform.to_dict(),
            "input_noise": self.input_noise,
            "box": "smoothed points" if self.noisy_input else "as given",
            "input_stray_points": self.input_stray_points,
            "input_stray_islands": self.input_stray_islands,
            "input_turned": self.input_turned,
            "looks_turned": self.looks_turned,
            "input_extents": list(self.input_extents),
            "input_warning": self.input_warning,
            "pose": self.winning_pose,
            "decoding": self.decoding.to_dict(),
        }
        if truth and truth.iou_error:
            report["iou_error"] = truth.iou_error
        if truth and truth.error:
            report["gt_error"] = truth.error
        if self.refinement is not None:
            refined = self.refinement
            report["refinement"] = dict(
                cd_input_before=refined.cd_input_before, cd_input_after=refined.cd_input_after,
                literals_changed=refined.literals_changed, structure_edits=refined.structure_edits,
                evaluations=refined.evaluations, seconds=round(refined.seconds, 3), started_from=refined.started_from,
                model_code=refined.model_code,
                model_cd_gt=refined.model_truth.cd if refined.model_truth else None,
                model_iou_gt=refined.model_truth.iou if refined.model_truth else None,
            )
        if self.step_units:
            report["step_units"] = self.step_units
        report["timings"] = self.timings.to_dict()
        report["tokens"] = {
            "prompt": self.prompt_tokens,
            "generated": [c.tokens for c in self.candidates],
            "generated_total": sum(c.tokens for c in self.candidates),
            "best": self.candidates[self.best].tokens if self.best is not None else None,
        }
        report["candidates"] = [c.to_dict() for c in self.candidates]
        if not self.valid:
            report["reason"] = self.reason
            report["invalid_kind"] = self.invalid_kind
        if self.outputs:
            report["outputs"] = {k: str(v) for k, v in self.outputs.items()}
        return report
