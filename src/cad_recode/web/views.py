"""What the page shows: GLB files for the two 3D views, the metrics line and the candidates table.

GLB, not STL: Gradio's Model3D draws a GLB in about 3 s under software WebGL and an
STL in about 9 s, freezing the page meanwhile. A point cloud becomes small
low-poly spheres (one mesh), which every glTF viewer draws, unlike bare GL points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from cad_recode.inference.results import describe_refinement
from cad_recode.web.service import CandidateRow, Outcome
from cad_recode.web.settings import DISPLAY_POINTS

POINT_COLOR = (40, 110, 200, 255)
SOLID_COLOR = (215, 140, 60, 255)
SPHERE_RADIUS = 0.008
"""Of the cloud's largest extent: the spheres touch on a 2048-point part without hiding its shape."""
Z_UP_TO_Y_UP = trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0])
CANDIDATE_HEADERS = ["seed", "status", "CD to input ×10³", "mean distance ×10³ (picks)", "tokens", "finished",
                     "reason"]


def points_glb(points: np.ndarray, path: Path, max_points: int = DISPLAY_POINTS, seed: int = 0) -> Path:
    """The points (a random subset of at most ``max_points``) as one mesh of small spheres, saved as GLB.

    Both views get parts normalized to [-1, 1]^3, so one camera distance suits every part.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) > max_points:
        points = points[np.random.default_rng(seed).choice(len(points), max_points, replace=False)]
    extent = float(np.ptp(points, axis=0).max()) or 1.0
    sphere = trimesh.creation.icosphere(subdivisions=0, radius=SPHERE_RADIUS * extent)  # 20 faces: about 1 MB in all
    count, nv = len(points), len(sphere.vertices)
    vertices = (sphere.vertices[None, :, :] + points[:, None, :]).reshape(-1, 3)
    faces = (sphere.faces[None, :, :] + (np.arange(count) * nv)[:, None, None]).reshape(-1, 3)
    cloud = trimesh.Trimesh(vertices, faces, process=False)
    cloud.visual.face_colors = np.tile(POINT_COLOR, (len(faces), 1))
    return _write_glb(cloud, path)


def mesh_glb(mesh: trimesh.Trimesh, path: Path) -> Path:
    """The reconstructed solid as GLB (flat colour)."""
    solid = mesh.copy()
    solid.visual.face_colors = np.tile(SOLID_COLOR, (len(solid.faces), 1))
    return _write_glb(solid, path)


def _write_glb(mesh: trimesh.Trimesh, path: Path) -> Path:
    """CAD is Z-up, glTF is Y-up: turn the part so its Z axis points up on screen."""
    mesh.apply_transform(Z_UP_TO_Y_UP)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mesh.export(file_type="glb"))
    return path


def metrics_markdown(outcome: Outcome) -> str:
    """CD to the input, and CD / IoU against the input solid when there is one (closed mesh, STEP, example)."""
    report = outcome.report
    if not outcome.valid:
        return f"**No valid solid.** {outcome.reason}"
    parts = [f"CD to the input points ×10³: **{_num(report.get('cd_input'))}**"]
    if report.get("cd_gt") is not None:
        parts.append(f"CD to the input solid ×10³: **{_num(report['cd_gt'])}**")
        iou = report.get("iou_gt")
        parts.append(f"IoU with the input solid: **{'n/a' if iou is None else f'{iou * 100:.1f}%'}**")
    if not report.get("edited") and "num_candidates" in report:
        parts.append(f"valid candidates: **{report['num_valid_candidates']}/{report['num_candidates']}**")
    if report.get("box") == "smoothed points":
        parts.append(f"a noisy scan (noise {_num(report.get('input_noise'))}): boxed by its smoothed points")
    if report.get("input_stray_points"):
        parts.append(f"{report['input_stray_points']} stray points apart from the surface dropped")
    if report.get("input_stray_islands"):
        parts.append(f"{report['input_stray_islands']} mesh islands beyond the part dropped")
    if report.get("input_warning"):
        parts.append(f"**Warning:** {report['input_warning']}")
    if report.get("looks_turned"):
        parts.append(f"the part looked turned from the axes (its box is {report['input_turned']:.2f}× its "
                     f"tightest): decoded in other orientations too, pose {report.get('pose')} won")
    refinement = report.get("refinement")
    if refinement:
        parts.append(describe_refinement(refinement["literals_changed"], refinement.get("structure_edits", []),
                                         refinement["evaluations"]))
    units = "the input's units" if report.get("units") == "input" else "model units (the part spans -100..100)"
    return " · ".join(parts) + f"  \nSolid in {units}."


def candidate_rows(rows: list[CandidateRow]) -> list[list]:
    return [[r.seed, r.status, _rounded(r.cd_input), _rounded(r.distance_input), r.tokens, r.finished, r.reason]
            for r in rows]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def status_markdown(outcome: Outcome, seconds: float, action: str) -> str:
    verdict = "valid solid" if outcome.valid else "no valid solid"
    return f"{action} in **{seconds:.2f} s**: {verdict}."


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
