"""`generate_dataset`: a folder of valid, unique generated programs in the public layout."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cad_recode.data.generator.levels import (
    COMPLEXITIES,
    GENERATOR_VERSION,
    LabelledPart,
    generate_labelled,
    level_weights,
    program_rng,
)
from cad_recode.data.generator.text import normalized_code
from cad_recode.data.labels import family_manifest
from cad_recode.errors import CadRecodeError, UsageError


@dataclass
class GenerateReport:
    """What `generate_dataset` made. `failures` maps a reason to how many programs it dropped."""

    out_dir: str
    seed: int
    complexity: str
    counts: dict[str, int]
    attempts: int
    valid: int
    failures: dict[str, int] = field(default_factory=dict)
    duplicates_code: int = 0
    duplicates_geometry: int = 0
    seconds: float = 0.0

    @property
    def failure_rate(self) -> float:
        """Share of executed programs that did not yield one valid solid."""
        executed = self.attempts - self.duplicates_code
        return sum(self.failures.values()) / executed if executed else 0.0

    @property
    def num(self) -> int:
        return sum(self.counts.values())


class UniquePrograms:
    """Remembers what was kept, to drop programs that repeat one by code or by geometry."""

    def __init__(self):
        self._codes: set[str] = set()
        self._shapes: set[tuple] = set()
        self.duplicates_code = 0
        self.duplicates_geometry = 0

    def new_code(self, code: str) -> bool:
        """True (and remembered) when no earlier program had this code, whitespace aside."""
        key = normalized_code(code)
        if key in self._codes:
            self.duplicates_code += 1
            return False
        self._codes.add(key)
        return True

    def new_shape(self, result) -> bool:
        """True (and remembered) when no earlier solid had this geometric key."""
        key = geometric_key(result)
        if key in self._shapes:
            self.duplicates_geometry += 1
            return False
        self._shapes.add(key)
        return True


def generate_dataset(out_dir, num: int, *, seed: int = 0, workers: int = 1, complexity: str = "simple",
                     val_fraction: float = 0.05, test_fraction: float = 0.05, batch_size: int = 1000,
                     overwrite: bool = False, progress: bool = True, max_attempts: int | None = None,
                     timeout: float = 10.0, sandbox=None, execute: bool = True) -> GenerateReport:
    """Write `num` valid, unique programs to `out_dir` in the public layout and return a report.

    Attempt i draws from ``program_rng(seed, i)`` and runs in the sandbox; a program
    is kept when it yields one valid solid and is new by normalized code and by
    geometric key (volume, area, bounding box, rounded). Drawing stops at `num`
    kept programs, or fails with a UsageError after `max_attempts` (default
    10 * num + 100), writing nothing. Kept programs are split by a permutation
    fixed by `seed` into test, val and train (``train/batch_XX/N.py``, `batch_size`
    per folder) and written with ``manifest.json`` to a temporary folder that is
    renamed into place at the end. The manifest's ``families`` entry labels every
    program with its family (see `cad_recode.data.labels`). An existing dataset in
    `out_dir` is refused unless `overwrite`. `sandbox`: an open `Sandbox` to use
    instead of starting one with `workers` processes and `timeout` seconds per program.

    ``execute=False`` skips the sandbox: programs are kept when new by code. That
    suits ``simple`` and ``broad``, whose programs are valid and spelled one way by
    construction (``simple``: 6507 of 6507 ran to one valid solid, none a geometric
    duplicate, seed 0), and halves the CPU default's data time: ``data prepare`` runs
    every program anyway and drops and lists any that fail.
    """
    from cad_recode.data import layout

    counts = _checked_counts(num, workers, batch_size, complexity, val_fraction, test_fraction)
    out_dir = Path(out_dir)
    layout.check_output_dir(out_dir, overwrite)
    report = GenerateReport(str(out_dir), seed, complexity, counts, 0, 0)
    start = time.perf_counter()
    kept = _draw_kept(report, num, workers=workers, timeout=timeout, sandbox=sandbox, execute=execute,
                      progress=progress, max_attempts=10 * num + 100 if max_attempts is None else max_attempts)
    report.seconds = time.perf_counter() - start
    order = layout.assign_splits(list(range(len(kept))), counts, seed)
    splits = {split: [kept[i].code for i in ids] for split, ids in order.items()}
    manifest = {
        "format": layout.MANIFEST_FORMAT, "generator_version": GENERATOR_VERSION, "seed": seed,
        "complexity": complexity, "num": num, "counts": counts, "batch_size": batch_size, "executed": execute,
        "val_fraction": val_fraction, "test_fraction": test_fraction, "attempts": report.attempts,
        "valid": report.valid, "failures": report.failures, "failure_rate": round(report.failure_rate, 6),
        "duplicates": {"code": report.duplicates_code, "geometry": report.duplicates_geometry},
        "seconds": round(report.seconds, 3),
        "families": family_manifest({split: [kept[i].family for i in ids] for split, ids in order.items()},
                                    level_weights(complexity)),
    }
    layout.write_dataset(out_dir, splits, manifest, batch_size=batch_size, overwrite=overwrite)
    return report


def _checked_counts(num, workers, batch_size, complexity, val_fraction, test_fraction) -> dict[str, int]:
    from cad_recode.data import layout

    if complexity not in COMPLEXITIES:
        raise UsageError(f"unknown complexity {complexity!r}; use one of: {', '.join(COMPLEXITIES)}")
    for name, value in (("num", num), ("workers", workers), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    return layout.split_counts(num, val_fraction, test_fraction)


def _draw_kept(report: GenerateReport, num: int, *, workers: int, timeout: float, sandbox, execute: bool,
               progress: bool, max_attempts: int) -> list[LabelledPart]:
    """Draw rounds of programs until `num` are kept (valid and new); fills `report` as it goes."""
    from cad_recode.geometry.sandbox import Sandbox

    kept: list[LabelledPart] = []
    unique = UniquePrograms()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num, desc=f"generating {report.complexity} programs", unit="prog")
    own_sandbox = sandbox is None and execute
    sandbox = Sandbox(workers=workers, timeout=timeout) if own_sandbox else sandbox
    try:
        while len(kept) < num and report.attempts < max_attempts:
            # a round a little larger than what is missing, so few rounds are needed
            want = min(max_attempts - report.attempts, max(2 * workers, int((num - len(kept)) * 1.1) + 1))
            drawn = [generate_labelled(program_rng(report.seed, report.attempts + i), report.complexity)
                     for i in range(want)]
            report.attempts += want
            fresh = [item for item in drawn if unique.new_code(item.code)]
            added = _keep_fresh(report, fresh, sandbox if execute else None, unique, num - len(kept))
            kept += added
            if bar is not None:
                bar.update(len(added))
    finally:
        if own_sandbox:
            sandbox.close()
        if bar is not None:
            bar.close()
    report.duplicates_code, report.duplicates_geometry = unique.duplicates_code, unique.duplicates_geometry
    if len(kept) < num:
        raise UsageError(
            f"only {len(kept)} of {num} valid unique {report.complexity} programs after {report.attempts} attempts "
            f"(failures: {report.failures or 'none'}); ask for fewer programs or use --complexity full"
        )
    return kept


def _keep_fresh(report: GenerateReport, fresh: list[LabelledPart], sandbox, unique: UniquePrograms,
                room: int) -> list[LabelledPart]:
    """The programs of one round to keep (at most `room`): all of them unexecuted, or the valid new shapes."""
    if sandbox is None:
        report.valid += len(fresh)
        return fresh[:room]
    results = sandbox.map([item.code for item in fresh])
    if results and all(r.reason.startswith("sandbox workers fail to start") for r in results):
        raise CadRecodeError(f"cannot generate: {results[0].reason}")
    kept = []
    for item, result in zip(fresh, results):
        reason = solid_problem(result)
        if reason:
            report.failures[reason] = report.failures.get(reason, 0) + 1
            continue
        report.valid += 1
        if len(kept) < room and unique.new_shape(result):
            kept.append(item)
    return kept


def solid_problem(result) -> str:
    """'' when a sandbox result is exactly one valid solid, else a short reason (for the report)."""
    if not result.ok:
        return result.status.value
    if result.vertices is None or result.faces is None or len(result.faces) == 0:
        return "no_mesh"
    import trimesh

    mesh = trimesh.Trimesh(result.vertices, result.faces, process=True)  # merges shared vertices
    if mesh.body_count != 1:
        return "several_solids"
    return ""


def geometric_key(result) -> tuple:
    """Volume, area and bounding box, rounded: equal for the same shape written differently."""
    rounded = lambda x: float(f"{x:.4g}")
    return (rounded(result.volume), rounded(result.area),
            *(round(c) for c in result.bbox_min), *(round(c) for c in result.bbox_max))
