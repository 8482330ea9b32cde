"""Batch inference that keeps its results: each input's files are written as soon as it is done,
an input that fails is recorded in ``summary.csv`` and the batch goes on.

    summary = run_batch(recoder, ["a.stl", "b.npy"], [out / "a.py", out / "b.py"], out / "summary.csv")
    summary.failed  # inputs without a valid solid (unreadable, no valid candidate, not writable)

``summary.csv`` is rewritten (atomically) after every input, so a batch stopped
half-way still says what it finished.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

from cad_recode.atomic import atomic_file
from cad_recode.errors import CadRecodeError, unexpected
from cad_recode.inference.decoding import Decoding
from cad_recode.inference.results import Reconstruction

SUMMARY_NAME = "summary.csv"


@dataclass
class BatchRow:
    """One input of a batch, as summary.csv shows it (CDs on the protocol's scale, CD x10^3)."""

    input: str
    status: str  # "valid"; "invalid": no candidate built a valid solid; "error": could not be read or written
    reason: str = ""
    output: str = ""  # the .py written ('' when nothing was)
    cd_input: float | None = None
    cd_gt: float | None = None
    iou_gt: float | None = None
    seconds: float | None = None

    @classmethod
    def from_reconstruction(cls, rec: Reconstruction, output: Path) -> BatchRow:
        truth = rec.truth
        return cls(rec.input_name, "valid" if rec.valid else "invalid", rec.reason, str(output), rec.cd_input,
                   truth.cd if truth else None, truth.iou if truth else None, round(rec.timings.total, 3))


SUMMARY_COLUMNS = tuple(f.name for f in fields(BatchRow))


@dataclass
class BatchSummary:
    """Every input's row, in input order, and where summary.csv is."""

    path: Path
    rows: list[BatchRow] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(row.status != "valid" for row in self.rows)

    def write(self) -> None:
        with atomic_file(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})


def _name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return source[0] if isinstance(source, tuple) else type(source).__name__


def run_batch(recoder, sources: Sequence, targets: Sequence[Path], summary_path: Path, *, num_candidates: int = 1,
              ground_truths: Sequence | None = None, restore_units: bool = False, seed: int = 0,
              decoding: Decoding | None = None, batch_size: int = 1, picture: bool = True,
              on_done: Callable[[BatchRow, Reconstruction | None], None] | None = None,
              progress: str | None = None) -> BatchSummary:
    """Reconstruct ``sources`` into ``targets`` (one .py each, with its .stl .step .png .json).

    ``batch_size`` inputs (x N candidates) share one generate call. A bad input, or
    one whose files cannot be written, becomes an "error" row; the others go on.
    ``on_done`` hears every row as it is recorded.
    """
    truths = list(ground_truths) if ground_truths is not None else [None] * len(sources)
    summary = BatchSummary(Path(summary_path))
    done = on_done or (lambda row, rec: None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc=progress, unit="shape")
    try:
        step = max(1, batch_size)
        for start in range(0, len(sources), step):
            chunk = list(range(start, min(start + step, len(sources))))
            for row, rec in _run_chunk(recoder, [(sources[i], truths[i], targets[i]) for i in chunk],
                                       num_candidates, seed, decoding, restore_units, picture):
                summary.rows.append(row)
                summary.write()
                done(row, rec)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not summary.rows:
        summary.write()
    return summary


def _run_chunk(recoder, items, n, seed, decoding, restore_units, picture):
    """Yield (row, reconstruction or None) per item, in order; failures become rows, not exceptions."""
    encoded, rows = [], {}
    for index, (source, truth, target) in enumerate(items):
        started = time.perf_counter()
        try:
            encoded.append((index, recoder.encode_input(source, n, seed, truth, decoding)))
        except CadRecodeError as err:
            rows[index] = BatchRow(_name(source), "error", str(err), seconds=round(time.perf_counter() - started, 3))
        except Exception as exc:  # the rest of the batch must not be lost to one input
            rows[index] = BatchRow(_name(source), "error", str(unexpected(_name(source), exc)),
                                   seconds=round(time.perf_counter() - started, 3))
    recs = {}
    if encoded:
        made = recoder.reconstruct_encoded([item for _, item in encoded], n, seed=seed, decoding=decoding,
                                           restore_units=restore_units)
        recs = {index: rec for (index, _), rec in zip(encoded, made)}
    for index, (_, _, target) in enumerate(items):
        if index in rows:
            yield rows[index], None
            continue
        rec = recs[index]
        try:
            recoder.save(rec, target, picture=picture)
        except (CadRecodeError, OSError) as err:
            yield BatchRow(rec.input_name, "error", f"could not write {target}: {err}", cd_input=rec.cd_input), rec
            continue
        yield BatchRow.from_reconstruction(rec, target), rec
