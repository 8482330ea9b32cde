"""The web app's one door into the inference recipe (load, reconstruct, rebuild, export).

Everything the server asks of the model, the sandbox and the loaders goes through
:class:`ReconstructionService`, so re-pointing the app at a restructured recipe is
an edit to this module only. It drives :class:`cad_recode.inference.CADRecoder`
step by step (encode, generate, sandbox, judge + refine, save) so the page can show
progress between the steps; the results it hands back are its own dataclasses.

User-edited programs run only through :func:`run_edited_program` (the sandbox).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from cad_recode.atomic import atomic_file
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.normalize import Transform
from cad_recode.defaults import MODEL_UNITS
from cad_recode.inference import CADRecoder, Decoding
from cad_recode.inference.export import output_paths
from cad_recode.inference.inputs import shape_input
from cad_recode.inference.judge import judge
from cad_recode.inference.refine import DEFAULT_MAX_EVALUATIONS as DEFAULT_REFINE_BUDGET
from cad_recode.inference.results import Timings
from cad_recode.inference.units import restore_mesh, restored_program
from cad_recode.model.constrained import DEFAULT_GRAMMAR
from cad_recode.web.settings import ServeSettings, check_point_count, check_upload_size

Progress = Callable[[float, str], None]
"""``progress(fraction_done, what_is_happening)``."""


def _no_progress(fraction: float, what: str) -> None:
    pass


@dataclass(frozen=True)
class JobOptions:
    """The page's options for one reconstruction."""

    num_candidates: int = 1
    refine: bool = False
    refine_budget: int = DEFAULT_REFINE_BUDGET
    restore_units: bool = False
    pose_auto: bool = False  # decode the input under several orientations too (Decoding.pose "auto")
    grammar: bool = DEFAULT_GRAMMAR  # constrain decoding to the program grammar

    def __post_init__(self):
        if not 1 <= self.num_candidates <= 64:
            raise UsageError(f"candidates must be 1..64, got {self.num_candidates}")
        if self.refine and self.refine_budget < 1:
            raise UsageError(f"the refinement budget must be >= 1 sandbox run, got {self.refine_budget}")


@dataclass
class LoadedInput:
    """An input ready to reconstruct. ``closed_mesh``: the input itself when it is a watertight mesh (for IoU)."""

    name: str
    geometry: trimesh.Trimesh | np.ndarray
    closed_mesh: trimesh.Trimesh | None = None


@dataclass
class CandidateRow:
    seed: int
    status: str
    cd_input: float | None
    distance_input: float | None  # what picks the winner
    tokens: int
    finished: bool
    reason: str


@dataclass
class InputContext:
    """What a rebuild needs to know about the reconstruction it edits."""

    stem: str  # names the downloads
    dense: np.ndarray  # the input's points, input units (CD is measured against them)
    transform: Transform
    restore_units: bool
    closed_mesh: trimesh.Trimesh | None
    report: dict[str, Any]

    def display_points(self) -> np.ndarray:
        """The input's points normalized to [-1, 1]^3 (both views share this frame)."""
        return self.transform.apply(self.dense)

    def display_mesh(self, mesh: trimesh.Trimesh) -> trimesh.Trimesh:
        """A solid in the units it was exported in, moved into the frame of :meth:`display_points`."""
        shown = mesh.copy()
        vertices = np.asarray(mesh.vertices)
        shown.vertices = self.transform.apply(vertices) if self.restore_units else vertices / MODEL_UNITS
        return shown


@dataclass
class Outcome:
    """One result for the page. ``mesh``: the solid in the units it is shown and exported in (None: invalid)."""

    code: str
    valid: bool
    reason: str
    mesh: trimesh.Trimesh | None
    report: dict[str, Any]
    files: dict[str, Path]
    seconds: float
    candidates: list[CandidateRow] = field(default_factory=list)


def run_edited_program(sandbox, code: str, **kwargs):
    """Every program a user edited runs here, and only in the project's sandbox (never in the server).

    They are ordinary CadQuery (the ``cadquery`` profile) inside the same OS confinement as model output.
    """
    return sandbox.run(code, profile="cadquery", **kwargs)


class ReconstructionService:
    """A loaded model and its sandbox, shared by every session (calls may come from several threads)."""

    def __init__(self, recoder: CADRecoder, settings: ServeSettings):
        self.recoder = recoder
        self.settings = settings

    @classmethod
    def load(cls, model: str, settings: ServeSettings, *, base_model: str | None = None, device=None,
             dtype=None) -> ReconstructionService:
        """Any model ``cad-recode infer`` takes: a training output_dir, a merged or full model, an adapter."""
        if not Path(model).is_dir():
            raise InputError(f"--model {model}: no such folder; pass a training output_dir, a merged or full model "
                             "folder, or an adapter folder")
        args = (base_model, model) if base_model else (model, None)
        recoder = CADRecoder.from_pretrained(*args, device=device, dtype=dtype, sandbox_workers=settings.workers)
        recoder.sandbox.start()  # CadQuery imports now, not during the first user's job
        return cls(recoder, settings)

    def describe(self) -> str:
        return self.recoder.describe()

    def close(self) -> None:
        self.recoder.close()

    # -- inputs

    def load_upload(self, path: str | Path) -> LoadedInput:
        """A user's file through the CLI's loader and limits; errors name the file, not the server's copy."""
        from cad_recode.geometry.loaders import load_geometry

        path = Path(path)
        check_upload_size(path, self.settings)
        try:
            geometry = load_geometry(path)
        except InputError as err:
            raise InputError(str(err).replace(str(path), path.name)) from None
        if isinstance(geometry, trimesh.Trimesh):
            check_point_count(path.name, len(geometry.vertices), self.settings, "mesh vertices")
            closed = _closed_mesh(geometry)
        else:
            check_point_count(path.name, len(geometry), self.settings)
            closed = None
        return LoadedInput(path.name, geometry, closed)

    def load_example(self, name: str) -> LoadedInput:
        """A built-in example part: its program's solid, run in the sandbox."""
        (label, mesh), _ = shape_input(name, self.recoder.sandbox)
        return LoadedInput(label, mesh, mesh)

    # -- the two actions

    def reconstruct(self, shape: LoadedInput, options: JobOptions, out_dir: Path,
                    progress: Progress = _no_progress) -> tuple[Outcome, InputContext]:
        """Best of N (+ refinement) for one input; writes .py .step .stl .json into ``out_dir``."""
        started = time.perf_counter()
        rec, n = self.recoder, options.num_candidates
        budget = options.refine_budget if options.refine else 0
        decoding = Decoding(self.settings.max_new_tokens, refine_evaluations=budget, grammar=options.grammar,
                            pose="auto" if options.pose_auto else "if_turned")
        progress(0.05, "sampling the input points")
        truth = ("input mesh", shape.closed_mesh) if shape.closed_mesh is not None else None
        item = rec.encode_input((shape.name, shape.geometry), n, seed=0, ground_truth=truth, decoding=decoding)
        progress(0.15, f"generating {n} candidate program{'s' if n > 1 else ''}")
        step = time.perf_counter()
        generated = rec.generate(np.stack([draw.points for draw in item.draws]), decoding, seed=0, group_size=n)
        timings = Timings(encode=item.encode_seconds, generate=time.perf_counter() - step)
        progress(0.6, "running the candidates in the sandbox")
        step = time.perf_counter()
        # under pose auto each program gets its line back to the input's frame before it runs
        generated = [(item.placed_back(k, code), tokens, done) for k, (code, tokens, done) in enumerate(generated)]
        executed = rec.sandbox.map([code for code, _, _ in generated])
        timings.execute = time.perf_counter() - step
        progress(0.75, "measuring against the input" + (" and refining" if decoding.refine_evaluations else ""))
        result = judge(item, list(zip(generated, executed)), first_seed=0, decoding=decoding,
                       restore_units=options.restore_units, sandbox=rec.sandbox, model_name=rec.describe(),
                       prompt_tokens=rec.num_point_tokens + 1, timings=timings)
        progress(0.9, "exporting STEP and STL")
        stem = _stem(shape.name)
        files = rec.save(result, out_dir / f"{stem}.py", picture=False)
        code = files["py"].read_text(encoding="utf-8")  # an invalid result's file says why at the top
        report = result.to_report()
        context = InputContext(stem, item.dense, result.transform, options.restore_units, shape.closed_mesh, report)
        rows = [CandidateRow(c.seed, c.status, c.cd_input, c.distance_input, c.tokens, c.finished, c.reason)
                for c in result.candidates]
        outcome = Outcome(code, result.valid, result.reason, result.mesh, report,
                          _downloads(files), time.perf_counter() - started, rows)
        return outcome, context

    def rebuild(self, code: str, context: InputContext, out_dir: Path) -> Outcome:
        """Run an edited program in the sandbox, measure it against the input, export it; InputError if it fails.

        Nothing is left in ``out_dir`` when the program fails.
        """
        started = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            mesh, units_note = self._export_edited(code, context, output_paths(out_dir / f"{context.stem}.py"))
        except InputError:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        paths = output_paths(out_dir / f"{context.stem}.py")
        report = {k: v for k, v in context.report.items() if k not in ("reason", "refinement", "candidates")}
        report.update(edited=True, valid=True, **self._measure(mesh, context))
        report.update(units_note)
        report["timings"] = {"rebuild": round(time.perf_counter() - started, 6)}
        with atomic_file(paths["py"]) as tmp:
            tmp.write_text(code if code.endswith("\n") else code + "\n", encoding="utf-8")
        report["outputs"] = {k: str(paths[k]) for k in ("py", "stl", "step")}
        with atomic_file(paths["json"]) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        files = {k: paths[k] for k in ("py", "step", "stl", "json")}
        return Outcome(code, True, "", mesh, report, files, time.perf_counter() - started)

    def _export_edited(self, code: str, context: InputContext, paths: dict[str, Path]):
        """Run the program (writing STEP + STL); with restore_units, again scaled into the input's units."""
        box = self.recoder.sandbox
        result = run_edited_program(box, code, step_path=paths["step"], stl_path=paths["stl"])
        if not result.ok:
            reason = " ".join(result.reason.split())[:300]
            raise InputError(f"the edited program builds no valid solid: {result.status.value}: {reason}")
        mesh = result.to_trimesh()
        if not context.restore_units:
            return mesh, {}
        restored = run_edited_program(box, restored_program(code, context.transform), step_path=paths["step"],
                                      stl_path=paths["stl"], tessellate=False)
        mesh = restore_mesh(mesh, context.transform)
        if restored.ok:
            return mesh, {}
        with atomic_file(paths["stl"]) as tmp:  # the solid is not in ``r``: STEP stays in model units
            mesh.export(tmp, file_type="stl")
        return mesh, {"step_units": "model"}

    @staticmethod
    def _measure(mesh: trimesh.Trimesh, context: InputContext) -> dict[str, Any]:
        """The report's cd_input, and cd_gt / iou_gt against the input when it is a closed mesh."""
        from cad_recode.geometry.metrics import CloudDistance, compare_meshes, protocol_cd

        to_input = CloudDistance(context.dense, context.transform)
        fields: dict[str, Any] = {"cd_input": protocol_cd(to_input(mesh, where="edited program"))}
        if context.closed_mesh is not None:
            try:
                comparison = compare_meshes(mesh, context.closed_mesh)
                fields.update(cd_gt=comparison.cd, iou_gt=None if np.isnan(comparison.iou) else comparison.iou)
            except (ValueError, InputError) as err:
                fields.update(cd_gt=None, iou_gt=None, gt_error=str(err).splitlines()[0])
        return fields


def _closed_mesh(mesh: trimesh.Trimesh) -> trimesh.Trimesh | None:
    """The mesh with shared vertices merged when that makes it watertight (an STL repeats them), else None."""
    merged = mesh.copy()
    merged.merge_vertices()
    return merged if merged.is_watertight and merged.is_volume else None


def _downloads(files: dict[str, Path]) -> dict[str, Path]:
    """The files a user downloads, in a fixed order (.py .step .stl .json; STEP/STL only when valid)."""
    return {k: files[k] for k in ("py", "step", "stl", "json") if k in files}


def _stem(name: str) -> str:
    """A safe file stem from an input name ('shape:cube' -> 'cube', 'my part.stl' -> 'my_part')."""
    base = Path(name.split(":", 1)[-1]).stem or "part"
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in base).strip("_")
    return cleaned[:60] or "part"


__all__ = [
    "DEFAULT_REFINE_BUDGET",
    "CandidateRow",
    "InputContext",
    "JobOptions",
    "LoadedInput",
    "Outcome",
    "ReconstructionService",
    "run_edited_program",
]
