"""Evaluation recipe: the published protocol (design.md §2) over a test set.

For every ground-truth shape: sample the model's input from its mesh with the
one sampling function (N FPS draws for best of N), generate, run every candidate
in the sandbox, keep the valid candidate closest to the INPUT points (never
chosen against the ground truth), then measure it against the ground truth:

- CD x10^3: both shapes to the unit cube, 8192 surface samples each, squared
  nearest-neighbour distances both ways (mean and median over valid outputs);
- IoU: manifold3d mesh booleans, unit cube (mean over valid outputs where defined);
- IR: the percentage of inputs with no valid output.

``condition`` measures robustness: every input is first perturbed as a scan
would be (``rotated``, ``noise_0.01``, ``noise_0.02``, ``missing_side``; see
:mod:`cad_recode.geometry.robustness`), the same draw per shape on every rerun.

``data`` may be:

- a prepared dataset (``manifest.json``; ``split`` picks the split, default
  ``test``), or one split folder inside it;
- a folder of ``.py`` ground-truth programs (run in the sandbox; one that fails
  is skipped and listed, it is not the model's fault);
- a folder of meshes / STEP files (``.stl .obj .ply .off .glb .step .stp``), e.g.
  the unit-cube DeepCAD or Fusion360 test STLs.

Outputs (``out_dir``): ``per_item.csv`` (one row per input, skipped ones
included), ``summary.json`` (the four numbers, counts, settings),
``summary.md`` (the printed table), and each valid input's program in
``programs/`` under the input's id (``test/25.py``, ``part.stl`` -> ``part.stl.py``);
with refinement, the program as the model wrote it in ``programs_as_written/``.

:class:`GenerationMetrics` is the same protocol on a training run's validation
shapes; the CLI injects it into the training recipe (which does not import this).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import trimesh

from cad_recode.atomic import atomic_file
from cad_recode.data.layout import natural_key
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.invalid import InvalidCounts
from cad_recode.geometry.metrics import MetricSummary, summarize
from cad_recode.geometry.robustness import CLEAN, condition_by_name, condition_shape, shape_seed
from cad_recode.inference import CADRecoder, Decoding, Reconstruction

CSV_NAME = "per_item.csv"
SUMMARY_NAME = "summary.json"
TABLE_NAME = "summary.md"
PROGRAMS_DIR = "programs"  # each valid input's program (refined when asked)
WRITTEN_PROGRAMS_DIR = "programs_as_written"  # with refinement: what the model wrote
# model_cd / model_iou: the program as the model wrote it, before refinement (empty without --refine);
# refined_from: "model", or the fitted outline program refinement started from (cad_recode.inference.fitted_start)
CSV_FIELDS = ("id", "valid", "cd", "iou", "status", "reason", "invalid_kind", "valid_candidates", "generated_tokens",
              "seconds", "model_cd", "model_iou", "refined_from")
MESH_DATA_SUFFIXES = (".stl", ".obj", ".ply", ".off", ".glb", ".step", ".stp")
GT_CHUNK = 32  # ground-truth shapes loaded (programs executed) at a time


@dataclass
class GroundTruth:
    id: str
    mesh: trimesh.Trimesh | None
    problem: str = ""  # why it was skipped


@dataclass
class EvalReport:
    summary: MetricSummary
    rows: list[dict]
    skipped: list[GroundTruth]
    data_kind: str
    settings: dict = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    model_summary: MetricSummary | None = None  # with refinement: the programs as the model wrote them
    families: dict[str, MetricSummary] = field(default_factory=dict)  # when the data carries family labels
    model_families: dict[str, MetricSummary] = field(default_factory=dict)  # the same, as the model wrote them

    @property
    def outline_starts(self) -> int | None:
        """Inputs whose refinement started from the points' own outline (None without refinement)."""
        if self.model_summary is None:
            return None
        return sum(1 for r in self.rows if r["status"] != "skipped" and r.get("refined_from") not in (None, "model"))

    @property
    def invalid_kinds(self) -> InvalidCounts:
        """Invalid inputs by kind (syntax, runtime error, empty or invalid solid, timeout, truncated, other)."""
        return InvalidCounts.of(r["invalid_kind"] or None for r in self.rows if r["status"] == "invalid")

    def table(self) -> str:
        """The summary as a markdown table, in the papers' units; with refinement, a row before and after it."""
        def row(s: MetricSummary) -> str:
            cells = (s.count, _pct(s.mean_iou), _num(s.mean_cd), _num(s.median_cd), _pct(s.invalid_ratio))
            return "| " + " | ".join(str(cell) for cell in cells) + " |"

        head = "| inputs | IoU % | mean CD x10^3 | median CD x10^3 | IR % |"
        kinds = f"\n\ninvalid by kind: {self.invalid_kinds.describe()}"
        if self.outline_starts is not None:
            kinds += (f"\n\nrefinement started from the points' own outline on {self.outline_starts} of "
                      f"{self.summary.count} inputs (the rest from the model's winner)")
        if self.families:
            # with refinement, one more column: each family's IoU as the model wrote the programs
            written = self.model_families
            lines = [f"| family {head}" + (" IoU % as written |" if written else ""),
                     "|---" * (6 + bool(written)) + "|"]
            lines += [f"| {name} {row(s)}" + (f" {_pct(written[name].mean_iou)} |" if written else "")
                      for name, s in sorted(self.families.items())]
            kinds += "\n\nby family:\n\n" + "\n".join(lines)
        if self.model_summary is None:
            return f"{head}\n|---|---|---|---|---|\n{row(self.summary)}{kinds}"
        return (f"{head} programs |\n|---|---|---|---|---|---|\n{row(self.model_summary)} as the model wrote them |\n"
                f"{row(self.summary)} refined to the input points |{kinds}")


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.1f}"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


# --------------------------------------------------------------------------- data


def describe_data(data: str | os.PathLike, split: str = "test") -> tuple[str, list[str], int]:
    """(kind, item ids, meshes left unread) of an evaluation source; InputError when it is none of the accepted kinds.

    A folder that holds .py programs is read as programs (the ground truths run in the sandbox); meshes beside
    them (a script's own exports, say) are not read, and are counted so that the caller can say so.
    """
    from cad_recode.data.shards import read_manifest

    root = Path(data)
    if not root.exists():
        raise InputError(f"--data {root} does not exist; give a prepared dataset, a folder of .py programs or of meshes")
    if root.is_dir() and read_manifest(root) is None and read_manifest(root.parent) is not None:
        root, split = root.parent, root.name  # a split folder inside a prepared dataset
    if root.is_dir() and read_manifest(root) is not None:
        from cad_recode.data.shards import PreparedSplit

        return "prepared", [f"{split}:{i}" for i in range(len(PreparedSplit.open(root, split)))], 0
    if not root.is_dir():
        raise InputError(f"--data {root} is a file; give a folder (prepared dataset, .py programs or meshes)")
    files = sorted((p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.relative_to(root).as_posix()))
    programs = [p for p in files if p.suffix == ".py"]
    meshes = [p for p in files if p.suffix.lower() in MESH_DATA_SUFFIXES]
    if programs:
        return "programs", [p.relative_to(root).as_posix() for p in programs], len(meshes)
    if meshes:
        return "meshes", [p.relative_to(root).as_posix() for p in meshes], 0
    raise InputError(
        f"--data {root} holds no prepared dataset (manifest.json), no .py programs and no meshes "
        f"({' '.join(MESH_DATA_SUFFIXES)}); point it at a test set"
    )


def iter_ground_truth(data, kind: str, ids: list[str], sandbox, split: str = "test") -> Iterator[GroundTruth]:
    """Ground-truth meshes in order, loaded (or executed) a chunk at a time."""
    root = Path(data)
    if kind == "prepared":
        from cad_recode.data.shards import PreparedSplit, read_manifest

        if read_manifest(root) is None:
            root, split = root.parent, root.name
        records = PreparedSplit.open(root, split)
        for item_id in ids:
            record = records[int(item_id.split(":", 1)[1])]
            yield GroundTruth(record["id"], trimesh.Trimesh(record["vertices"], record["faces"], process=False))
        return
    from cad_recode.geometry.load_shape import load_shapes
    from cad_recode.geometry.profiles import USER_PROGRAM_TIMEOUT

    for start in range(0, len(ids), GT_CHUNK):
        chunk = ids[start : start + GT_CHUNK]
        shapes = load_shapes([root / i for i in chunk], sandbox, what="ground truth", timeout=USER_PROGRAM_TIMEOUT)
        for item_id, shape in zip(chunk, shapes):
            if isinstance(shape, trimesh.Trimesh):
                yield GroundTruth(item_id, shape)
            else:
                yield GroundTruth(item_id, None, str(shape))


# --------------------------------------------------------------------------- the run


def evaluate(
    recoder: CADRecoder,
    data: str | os.PathLike,
    *,
    split: str = "test",
    num_candidates: int = 1,
    limit: int | None = None,
    out_dir: str | os.PathLike | None = None,
    decoding: Decoding | None = None,
    batch_size: int = 1,
    seed: int = 0,
    progress: bool = True,
    condition: str = CLEAN.name,
) -> EvalReport:
    """Run the protocol over ``data``; write per_item.csv and summary.json into ``out_dir`` if given.

    ``condition`` (:data:`cad_recode.geometry.robustness.ROBUSTNESS_CONDITIONS`): each input is
    perturbed before inference (seeded per shape); ``rotated`` turns the ground truth too.
    """
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    perturbation = condition_by_name(condition)
    kind, ids, unread = describe_data(data, split)
    ids = ids[:limit] if limit is not None else ids
    if not ids:
        raise InputError(f"--data {data} ({kind}, split {split}) holds no shapes")
    decoding = decoding or Decoding()
    started = time.perf_counter()
    rows: list[dict] = []
    skipped: list[GroundTruth] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc="eval", unit="shape")
    pending: list[GroundTruth] = []

    def flush() -> None:
        conditioned = [condition_shape(gt.mesh, perturbation, seed=shape_seed(seed, gt.id)) for gt in pending]
        inputs = [(gt.id, shape.input) for gt, shape in zip(pending, conditioned)]
        truths = [(gt.id, shape.truth) for gt, shape in zip(pending, conditioned)]
        for gt, rec in zip(pending, recoder.reconstruct_many(
            inputs, num_candidates, ground_truths=truths, seed=seed, decoding=decoding, batch_size=batch_size,
        )):
            rows.append(protocol_row(gt.id, rec))
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    try:
        for gt in iter_ground_truth(data, kind, ids, recoder.sandbox, split):
            if gt.mesh is None:
                skipped.append(gt)
                rows.append({**{k: "" for k in CSV_FIELDS}, "id": gt.id, "status": "skipped", "reason": gt.problem})
                if bar is not None:
                    bar.update(1)
                continue
            pending.append(gt)
            if len(pending) >= max(1, batch_size):
                flush()
        if pending:
            flush()
    finally:
        if bar is not None:
            bar.close()
    measured = [r for r in rows if r["status"] != "skipped"]
    if not measured:
        raise InputError(f"--data {data}: none of the {len(rows)} ground-truth shapes could be loaded; first: {rows[0]['reason']}")
    summary = summarize_rows(measured)
    model_summary = summarize_rows(measured, before_refinement=True) if decoding.refine_evaluations else None
    settings = dict(
        model=recoder.describe(), data=str(data), data_kind=kind, split=split if kind == "prepared" else None,
        num_candidates=num_candidates, limit=limit, seed=seed, condition=perturbation.name, decoding=decoding.to_dict(),
        seconds=round(time.perf_counter() - started, 3), unread_meshes=unread,
    )
    report = EvalReport(summary, rows, skipped, kind, settings, model_summary=model_summary,
                        **family_tables(data, measured, refined=model_summary is not None))
    if out_dir is not None:
        report.paths = write_report(report, out_dir)
    return report


def family_tables(data, rows: list[dict], refined: bool) -> dict[str, dict[str, MetricSummary]]:
    """EvalReport's ``families`` and, with refinement, ``model_families`` (the programs as written)."""
    return {"families": family_summaries(data, rows),
            "model_families": family_summaries(data, rows, before_refinement=True) if refined else {}}


def family_summaries(data, rows: list[dict], before_refinement: bool = False) -> dict[str, MetricSummary]:
    """The protocol's numbers per part family, when the data carries family labels ({} otherwise)."""
    from cad_recode.data.labels import read_family_labels

    try:
        labels = read_family_labels(data)
    except (InputError, OSError, ValueError, KeyError):  # labels are a bonus: a set without them is still evaluated
        return {}
    families: dict[str, list[dict]] = {}
    for r in rows:
        if r["id"] in labels:
            families.setdefault(labels[r["id"]], []).append(r)
    return {name: summarize_rows(members, before_refinement) for name, members in families.items()}


def summarize_rows(rows: list[dict], before_refinement: bool = False) -> MetricSummary:
    """The protocol's four numbers over ``protocol_row`` rows (an invalid row counts in IR only).

    ``before_refinement``: of the programs as the model wrote them (refinement only touches valid ones).
    """
    cd, iou = ("model_cd", "model_iou") if before_refinement else ("cd", "iou")
    return summarize([r[cd] if r["valid"] else None for r in rows], [r[iou] if r["valid"] else None for r in rows])


def protocol_row(item_id: str, rec: Reconstruction) -> dict:
    """One input's CSV row; a solid not comparable with the ground truth is invalid."""
    truth = rec.truth
    valid = rec.valid and truth is not None and truth.cd is not None
    model_truth = rec.refinement.model_truth if rec.refinement is not None else None
    reason = "" if valid else rec.reason or (truth.error if truth else "")
    return {
        "id": item_id,
        "valid": valid,
        "cd": truth.cd if valid else None,
        "iou": truth.iou if valid else None,
        "status": "ok" if valid else "invalid",
        "reason": reason,
        "invalid_kind": None if valid else (rec.invalid_kind or "other"),
        "valid_candidates": rec.num_valid_candidates,
        "generated_tokens": sum(c.tokens for c in rec.candidates),
        "seconds": round(rec.timings.total, 6),
        "model_cd": model_truth.cd if valid and model_truth else None,
        "model_iou": model_truth.iou if valid and model_truth else None,
        "refined_from": rec.refinement.started_from if rec.refinement is not None else None,
        # not CSV columns: written as files by write_report
        "program": rec.code if rec.valid else None,
        "program_as_written": rec.refinement.model_code if rec.valid and rec.refinement is not None else None,
    }


def program_path(folder: Path, item_id: str) -> Path:
    """Where an input's program goes: its id as a relative path, ``.py`` added unless it ends so
    (``part.stl`` -> ``part.stl.py``: ``part.obj`` beside it keeps its own); ``..`` and roots dropped."""
    name = item_id if item_id.endswith(".py") else item_id + ".py"
    parts = [part for part in Path(name).parts if part not in ("", ".", "..", "/")]
    return folder.joinpath(*parts)


def _nan_to_none(values: dict) -> dict:
    """JSON has no NaN: an undefined mean (no valid input) is written as null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = out / CSV_NAME, out / SUMMARY_NAME
        with atomic_file(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for row in report.rows:
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_FIELDS})
        body = _nan_to_none({**report.summary.to_dict(), "skipped": len(report.skipped),
                             "invalid_kinds": report.invalid_kinds.to_dict(), **report.settings})
        if report.model_summary is not None:
            body["before_refinement"] = _nan_to_none(report.model_summary.to_dict())
            body["outline_starts"] = report.outline_starts
        if report.families:
            body["families"] = {name: _nan_to_none(s.to_dict()) for name, s in sorted(report.families.items())}
        if report.model_families:
            body["families_before_refinement"] = {name: _nan_to_none(s.to_dict())
                                                  for name, s in sorted(report.model_families.items())}
        with atomic_file(json_path) as tmp:
            tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        table_path = out / TABLE_NAME
        with atomic_file(table_path) as tmp:
            tmp.write_text(report.table() + "\n", encoding="utf-8")
        for key, folder in (("program", out / PROGRAMS_DIR), ("program_as_written", out / WRITTEN_PROGRAMS_DIR)):
            for row in report.rows:
                if row.get(key):
                    path = program_path(folder, row["id"])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_file(path) as tmp:
                        tmp.write_text(row[key], encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot write evaluation results to {out}: {err.strerror or err}; choose a writable folder") from None
    return {"csv": csv_path, "json": json_path, "table": table_path, "programs": out / PROGRAMS_DIR}


# --------------------------------------------------------------------------- during training


class GenerationMetrics:
    """IR, CD (x10^3) and IoU on the first ``eval_num_samples`` validation shapes of a training run.

    The same path as ``cad-recode eval``: ``eval_num_candidates`` point draws per shape
    generated greedily in one batch, every program run only in the sandbox, the valid
    candidate closest to the INPUT points kept, then the protocol's metrics against the
    ground truth. Built by the CLI and handed to the training recipe
    (``train(cfg, generation_metrics=GenerationMetrics)``).
    """

    def __init__(self, split, tokenizer, cfg):
        self.tokenizer, self.cfg, self.sandbox = tokenizer, cfg, None
        self.shapes = []
        for index in range(min(cfg.eval_num_samples, len(split))):
            record = split[index]
            self.shapes.append((record["id"], trimesh.Trimesh(record["vertices"], record["faces"], process=False)))

    def __call__(self, model) -> dict[str, float]:
        from cad_recode.geometry.sandbox import Sandbox

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        was_training = base.training
        if self.sandbox is None:
            self.sandbox = Sandbox(workers=1)
        n = self.cfg.eval_num_candidates
        try:
            recoder = CADRecoder(base, self.tokenizer, device=base.get_input_embeddings().weight.device,
                                 sandbox=self.sandbox)
            upright = Decoding(self.cfg.max_new_tokens, pose="none")  # validation shapes: skip the turn check
            reconstructions = recoder.reconstruct_many(
                self.shapes, n, ground_truths=self.shapes, decoding=upright,
                batch_size=max(1, self.cfg.per_device_eval_batch_size // n),
            )
        finally:
            base.train(was_training)
        summary = summarize_rows([protocol_row(name, r) for (name, _), r in zip(self.shapes, reconstructions)])
        return {"ir": summary.invalid_ratio, "cd_mean": summary.mean_cd, "cd_median": summary.median_cd,
                "iou": summary.mean_iou}

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
