"""A reconstruction's files: part.py, part.stl, part.step, part.png and part.json, each written atomically.

The solid's STL and STEP are written by the sandbox (the program never runs in
this process); the report is :meth:`Reconstruction.to_report`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cad_recode.atomic import atomic_file
from cad_recode.defaults import MODEL_UNITS
from cad_recode.errors import InputError
from cad_recode.inference.results import Reconstruction
from cad_recode.inference.units import restored_program

OUTPUT_SUFFIXES = (".py", ".stl", ".step", ".png", ".json")


def output_paths(code_path: str | os.PathLike) -> dict[str, Path]:
    """part.py -> {py, stl, step, png, json} beside it."""
    code_path = Path(code_path)
    stem = code_path.with_suffix("") if code_path.suffix == ".py" else code_path
    return {suffix[1:]: stem.with_name(stem.name + suffix) for suffix in OUTPUT_SUFFIXES}


def program_text(rec: Reconstruction) -> str:
    """What part.py holds: the winner, or the first candidate under a comment saying why none was valid."""
    if rec.valid:
        return rec.code if rec.code.endswith("\n") else rec.code + "\n"
    first = rec.candidates[0].code if rec.candidates else ""
    reason = " ".join((rec.reason or "no candidate").split())[:300]
    text = f"# INVALID: no candidate built a valid solid ({reason})\n{first}"
    return text if text.endswith("\n") else text + "\n"


def save(rec: Reconstruction, code_path: str | os.PathLike, sandbox, *, picture: bool = True) -> dict[str, Path]:
    """Write part.py (+ .stl, .step when valid, .png, .json) beside ``code_path``; returns the paths written.

    With ``rec.restored_units`` part.py ends with the line that maps the solid into the
    input's units (:func:`restored_program`), so it builds exactly what part.step holds.
    """
    paths = output_paths(code_path)
    written: dict[str, Path] = {}
    text = program_text(rec)
    if rec.valid:
        text = export_solid(rec, paths, sandbox)
        written.update(stl=paths["stl"], step=paths["step"])
    with atomic_file(paths["py"]) as tmp:
        tmp.write_text(text, encoding="utf-8")
    written = {"py": paths["py"], **written}
    if picture:
        write_picture(rec, paths["png"])
        written["png"] = paths["png"]
    rec.outputs = dict(written)
    with atomic_file(paths["json"]) as tmp:
        tmp.write_text(json.dumps(rec.to_report(), indent=2, default=_json_default) + "\n", encoding="utf-8")
    written["json"] = paths["json"]
    return written


INPUT_UNITS_LABEL = "input units"
MODEL_UNITS_LABEL = f"model units (the part spans {2 * MODEL_UNITS:g})"


def write_picture(rec: Reconstruction, path: Path):
    """The input as given (mesh, else dense points), the reconstruction and both overlaid, in the solid's units."""
    from cad_recode.inference.picture import render_comparison

    if rec.restored_units:
        to_units, units = (lambda xyz: np.asarray(xyz, dtype=np.float64)), INPUT_UNITS_LABEL
    else:
        to_units, units = (lambda xyz: rec.transform.apply(xyz) * MODEL_UNITS), MODEL_UNITS_LABEL
    if rec.input_cloud is not None:
        cloud = to_units(rec.input_cloud)
    else:  # built without the dense cloud: the model's own draw (normalized)
        cloud = rec.transform.invert(rec.input_points) if rec.restored_units else rec.input_points * MODEL_UNITS
    given = None
    if rec.input_mesh is not None:
        given = rec.input_mesh.copy()
        given.vertices = to_units(given.vertices)
    return render_comparison(cloud, rec.mesh, path, input_mesh=given, title=picture_title(rec), units=units)


def picture_title(rec: Reconstruction) -> str:
    """The input's name, its CD to the input (x10^3) and, when a ground truth is known, the IoU."""
    parts = [Path(rec.input_name).name]
    parts.append(f"CD to input {rec.cd_input:.3f} (x10^3)" if rec.cd_input is not None else "no valid solid")
    if rec.truth is not None and rec.truth.iou is not None:
        parts.append(f"IoU vs ground truth {rec.truth.iou:.1%}")
    return "  |  ".join(parts)


def export_solid(rec: Reconstruction, paths: dict[str, Path], sandbox) -> str:
    """STL and STEP of the winner, by the sandbox (never in this process); returns the program that built them."""
    code = program_text(rec)
    if rec.restored_units:
        restored = restored_program(code, rec.transform)
        result = sandbox.run(restored, step_path=paths["step"], stl_path=paths["stl"], tessellate=False)
        if result.ok:
            return restored
        # The program keeps its solid elsewhere than ``r``: program and STEP in model units, STL restored here.
        rec.step_units = "model"
        result = sandbox.run(code, step_path=paths["step"], tessellate=False)
        with atomic_file(paths["stl"]) as tmp:
            rec.mesh.export(tmp, file_type="stl")
    else:
        result = sandbox.run(code, step_path=paths["step"], stl_path=paths["stl"], tessellate=False)
    if not result.ok:
        raise InputError(f"could not export the solid to {paths['step']}: {result.status.value}: {result.reason}")
    return code


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
