"""Folder of CadQuery programs -> prepared dataset of meshes (``cad-recode data prepare``).

Input: the public CAD-Recode layout, ``SRC/train/batch_XX/N.py``, ``SRC/val/N.py``
and ``SRC/test/N.py`` (any split folder may be missing; hidden files are skipped).
Every program runs in the sandbox and is tessellated; the mesh, the code text,
the split and a stable id (the path relative to SRC) are stored in Arrow shards
(see :mod:`cad_recode.data.shards`). Meshes, not point samples, are stored so
each epoch can draw fresh points.

Resume protocol. The programs of a split are sorted (natural order of their
relative paths) and cut into shards of ``shard_size``; shard k of a split is
always the same programs. The run builds the dataset in a work folder beside
the output, ``.<out>.partial/``: ``plan.json`` (which programs, which shard
size), then each shard, written whole to a temporary name and renamed, with its
failures inside its own metadata. A rerun with ``resume=True`` keeps every
shard that opens and covers exactly its planned programs, and prepares only the
rest. When all shards exist, ``failures.csv`` and ``manifest.json`` are written
and the work folder is renamed to the output. So the output folder is either
absent, the complete old dataset, or the complete new one; a kill at any
moment loses at most the shard being prepared.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from cad_recode.atomic import atomic_file
from cad_recode.data.shards import (
    FAILURES_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    Failure,
    PreparedSplit,
    ShapeRecord,
    ShardInfo,
    build_manifest,
    hash_ids,
    partial_dir,
    read_manifest,
    read_shard_info,
    shard_file_name,
    write_manifest,
    write_shard,
)
from cad_recode.data.layout import find_programs
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.profiles import as_profile, default_timeout

__all__ = ["PrepareReport", "PreparedSplit", "prepare_dataset", "find_programs", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 1000
# CAD-Recode programs are a few KB (768 tokens); anything this big is not one.
MAX_PROGRAM_BYTES = 64 * 1024
PLAN_NAME = "plan.json"

# File problems found before execution; the sandbox's ExecStatus values cover the rest.
NOT_UTF8, EMPTY, TOO_LARGE, UNREADABLE, BAD_MESH = "not_utf8", "empty", "too_large", "unreadable", "bad_mesh"


@dataclass
class PrepareReport:
    """What a preparation run did. ``failures`` lists every program that is not in the dataset."""

    out: Path
    num_programs: int = 0
    num_shapes: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> programs, shapes, failed
    failures: list[Failure] = field(default_factory=list)
    shards_written: int = 0
    shards_reused: int = 0
    programs_executed: int = 0
    content_hash: str = ""
    seconds: float = 0.0

    @property
    def num_failed(self) -> int:
        return len(self.failures)

    @property
    def failures_by_status(self) -> dict[str, int]:
        return dict(sorted(Counter(f.status for f in self.failures).items()))

    @property
    def failures_csv(self) -> Path:
        return self.out / FAILURES_NAME

    def summary(self) -> str:
        """A few human lines for the CLI."""
        per_split = ", ".join(f"{s} {c['shapes']}/{c['programs']}" for s, c in self.splits.items())
        lines = [
            f"prepared {self.num_shapes} of {self.num_programs} programs into {self.out} ({per_split})",
            f"shards: {self.shards_written} written, {self.shards_reused} reused; "
            f"{self.programs_executed} programs executed in {self.seconds:.1f} s",
        ]
        if self.failures:
            by_status = ", ".join(f"{k} {v}" for k, v in self.failures_by_status.items())
            lines.append(f"failed: {self.num_failed} ({by_status}); list in {self.failures_csv}")
        return "\n".join(lines)


def prepare_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    timeout: float | None = None,
    max_program_bytes: int = MAX_PROGRAM_BYTES,
    profile: str = "strict",
) -> PrepareReport:
    """Execute and tessellate every program under ``src``; store the dataset at ``out``.

    ``profile`` is what the programs may use (:mod:`cad_recode.geometry.profiles`): ``strict``, the
    model's own language, for training data; ``cadquery`` for ordinary CadQuery (a test set written
    by hand, say). It is recorded in the manifest, and a resume under another profile is refused.
    ``timeout``: seconds a program may run; by default the protocol's 3 s under ``strict`` and
    :data:`~cad_recode.geometry.profiles.USER_PROGRAM_TIMEOUT` under ``cadquery``.

    An existing ``out`` (or an unfinished run's work folder) is refused unless
    ``resume`` (continue it; a finished dataset of the same programs is kept as
    is) or ``overwrite`` (start over; the old dataset is replaced only when the
    new one is complete). Failed programs never stop the run: they are counted,
    listed in ``out/failures.csv`` and returned in the report.
    """
    for name, value in (("workers", workers), ("shard_size", shard_size), ("max_program_bytes", max_program_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one of them")
    try:
        profile = as_profile(profile).value
    except ValueError as err:
        raise UsageError(str(err)) from None
    timeout = default_timeout(profile) if timeout is None else timeout
    started = time.perf_counter()
    src, out = Path(src), Path(os.path.abspath(out))  # abspath: "." must have a name for its work folder
    programs = find_programs(src)
    plan = _plan(programs, shard_size, profile)
    work = partial_dir(out)

    report = PrepareReport(out=out)
    with _locked(out):
        existing = _check_output(out, work, plan, resume=resume, overwrite=overwrite)
        if existing is None:
            if overwrite and work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True, exist_ok=True)
            _write_plan(work, src, plan)
            shards = _build_shards(src, work, plan, report, workers=workers, timeout=timeout,
                                   max_program_bytes=max_program_bytes, progress=progress)
            _write_failures_csv(work, shards)
            write_manifest(work, _manifest(src, plan, shards))
            _publish(work, out)
        else:  # resume of a finished dataset of the same programs: nothing to do
            report.shards_reused = sum(len(s["shards"]) for s in existing["splits"].values())
    _fill_from_manifest(report, read_manifest(out))
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------- plan and output folder


@dataclass
class _Plan:
    shard_size: int
    shards: dict[str, list[list[str]]]  # split -> shard -> ids
    plan_hash: str
    profile: str  # the sandbox profile the programs run under

    @property
    def num_programs(self) -> int:
        return sum(len(s) for shards in self.shards.values() for s in shards)


def _plan(programs: dict[str, list[str]], shard_size: int, profile: str) -> _Plan:
    shards = {
        split: [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]
        for split, ids in programs.items()
    }
    flat = [f"shard_size={shard_size}"] + [i for split in shards for ids in shards[split] for i in ids]
    return _Plan(shard_size, shards, hash_ids(flat), profile)


def _check_output(out: Path, work: Path, plan: _Plan, *, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to clobber; return the manifest when ``out`` is already this finished dataset."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; pass --out a folder path")
    if out.exists() and any(out.iterdir()):
        manifest = read_manifest(out)
        if manifest is None:  # never delete a folder we did not make, even with --overwrite
            raise InputError(
                f"{out}: folder is not empty and holds no prepared dataset; choose another --out "
                "(or empty this one)"
            )
        if overwrite:
            return None
        if not resume:
            raise InputError(
                f"{out}: already holds a prepared dataset; pass --resume to keep and verify it "
                "or --overwrite to replace it"
            )
        if manifest.get("plan_hash") != plan.plan_hash:
            raise InputError(
                f"{out}: holds a dataset prepared from other programs or another shard size; "
                "choose another --out or pass --overwrite to replace it"
            )
        _check_profile(out, manifest, plan.profile)
        if not work.exists():
            return manifest
    if work.exists() and not overwrite:
        if not resume:
            raise InputError(
                f"{out}: an unfinished preparation is in {work}; pass --resume to continue it "
                "or --overwrite to start over"
            )
        started = _read_json(work / PLAN_NAME)
        if started is not None and started.get("plan_hash") != plan.plan_hash:
            raise InputError(
                f"{work}: this unfinished preparation was started from other programs or another "
                f"shard size ({started.get('source')}, shard size {started.get('shard_size')}); "
                "rerun with the same --src and --shard-size, or pass --overwrite to start over"
            )
        if started is not None:
            _check_profile(work, started, plan.profile)
    return None


def _check_profile(folder: Path, recorded: dict, profile: str) -> None:
    """Programs that failed under one profile might run under another: never mix the two in one dataset."""
    before = recorded.get("profile", "strict")  # datasets from before the flag were all strict
    if before != profile:
        raise InputError(f"{folder}: was prepared with --profile {before}, not {profile}; rerun with "
                         f"--profile {before}, or pass --overwrite to prepare it again under {profile}")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_plan(work: Path, src: Path, plan: _Plan) -> None:
    if (work / PLAN_NAME).exists():
        return
    doc = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "source": str(src.resolve()),
        "shard_size": plan.shard_size, "plan_hash": plan.plan_hash, "profile": plan.profile,
        "num_programs": {s: sum(map(len, shards)) for s, shards in plan.shards.items()},
    }
    with atomic_file(work / PLAN_NAME) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One preparation per output at a time: a second concurrent run is refused, not interleaved."""
    lock = out.parent / f".{out.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InputError(f"{out}: another `cad-recode data prepare` is writing it; wait for it to finish") from None
        try:  # the holder before us may have removed the file it locked: lock the one at the path
            if os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        handle.close()


def _publish(work: Path, out: Path) -> None:
    """Rename the finished work folder to ``out``; an old ``out`` goes only after that succeeded."""
    (work / PLAN_NAME).unlink(missing_ok=True)  # the manifest now says all of it
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- building shards


def _build_shards(
    src: Path, work: Path, plan: _Plan, report: PrepareReport, *,
    workers: int, timeout: float, max_program_bytes: int, progress: bool,
) -> list[ShardInfo]:
    todo: list[tuple[str, int, list[str], str]] = []
    done: dict[tuple[str, int], ShardInfo] = {}
    for split, shards in plan.shards.items():
        (work / split).mkdir(exist_ok=True)
        for stale in (work / split).glob(".*.tmp"):  # temporaries of a killed run
            stale.unlink(missing_ok=True)
        for index, ids in enumerate(shards):
            ids_hash = hash_ids(ids)
            path = work / split / shard_file_name(index)
            info = read_shard_info(path) if path.exists() else None
            if info and (info.split, info.index, info.ids_hash, info.num_planned) == (split, index, ids_hash, len(ids)):
                done[split, index] = info
                report.shards_reused += 1
            else:
                path.unlink(missing_ok=True)  # foreign or unreadable: prepare it again
                todo.append((split, index, ids, ids_hash))

    bar = tqdm(
        total=plan.num_programs, initial=sum(i.num_planned for i in done.values()), unit="prog",
        desc="prepare", disable=not progress, smoothing=0.05, dynamic_ncols=True,
    )
    failed = sum(len(i.failures) for i in done.values())
    if todo:
        from cad_recode.geometry.sandbox import Sandbox  # workers start only when there is work

        with bar, Sandbox(workers=workers, timeout=timeout, profile=plan.profile) as sandbox:
            for split, index, ids, ids_hash in todo:
                records, failures = _prepare_programs(src, ids, sandbox, bar, max_program_bytes, report)
                path = work / split / shard_file_name(index)
                try:
                    done[split, index] = write_shard(
                        path, split=split, index=index, ids_hash=ids_hash, num_planned=len(ids),
                        records=records, failures=failures,
                    )
                except OSError as err:
                    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise InputError(
                            f"{path.parent}: no room to write {path.name} ({os.strerror(err.errno)}); "
                            "free space and rerun with --resume (finished shards are kept)"
                        ) from None
                    raise
                report.shards_written += 1
                failed += len(failures)
                bar.set_postfix(failed=failed, refresh=False)
    else:
        bar.close()
    return [done[split, index] for split, shards in plan.shards.items() for index in range(len(shards))]


def _prepare_programs(
    src: Path, ids: list[str], sandbox, bar, max_program_bytes: int, report: PrepareReport,
) -> tuple[list[ShapeRecord], list[Failure]]:
    """Read, execute and tessellate one shard's programs; results keep the plan's order."""
    codes: dict[str, str] = {}
    failures: dict[str, Failure] = {}
    for pid in ids:
        code = _read_program(src / pid, max_program_bytes)
        if isinstance(code, Failure):
            failures[pid] = Failure(pid, code.status, code.reason)
        else:
            codes[pid] = code
    bar.update(len(failures))
    run_ids = list(codes)
    results = _execute(sandbox, [codes[i] for i in run_ids], bar)
    report.programs_executed += len(run_ids)
    records: dict[str, ShapeRecord] = {}
    for pid, result in zip(run_ids, results):
        if not result.ok:
            failures[pid] = Failure(pid, _status_text(result.status), _one_line(result.reason))
            continue
        problem = _mesh_problem(result.vertices, result.faces)
        if problem:
            failures[pid] = Failure(pid, BAD_MESH, problem)
            continue
        records[pid] = ShapeRecord(
            id=pid, code=codes[pid],
            vertices=np.asarray(result.vertices, dtype=np.float32),
            faces=np.asarray(result.faces, dtype=np.int32),
            volume=float(result.volume), area=float(result.area), num_faces=int(result.num_faces),
        )
    return [records[i] for i in ids if i in records], [failures[i] for i in ids if i in failures]


def _execute(sandbox, codes: list[str], bar) -> list:
    """Run ``codes`` in the sandbox, in order, advancing the bar as chunks finish.

    Chunks of 16 programs per worker keep the bar live at a small cost: each
    chunk ends waiting for its slowest program (a few % of worker time).
    """
    chunk = 16 * sandbox.num_workers
    results: list = []
    for start in range(0, len(codes), chunk):
        part = codes[start : start + chunk]
        done = sandbox.map(part)
        broken = next((r for r in done if r.status == "crashed" and r.reason.startswith(_SANDBOX_DOWN)), None)
        if broken is not None:  # the machine, not the programs: store nothing, let a rerun resume
            raise RuntimeError(f"cannot prepare: {broken.reason}")
        results.extend(done)
        bar.update(len(part))
    return results


# How Sandbox.map reports that no worker could start (every program then reads "crashed").
_SANDBOX_DOWN = "sandbox workers fail to start"


def _read_program(path: Path, max_bytes: int) -> str | Failure:
    """The program text, or a Failure naming the file problem (never an exception)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return Failure("", TOO_LARGE, f"file is {size} bytes, over the {max_bytes}-byte limit for a program")
        data = path.read_bytes()
    except OSError as err:
        return Failure("", UNREADABLE, _one_line(f"cannot read file: {err.strerror or err}"))
    try:
        code = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Failure("", NOT_UTF8, f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})")
    if not code.strip():
        return Failure("", EMPTY, "file is empty" if not data else "file holds only whitespace")
    return code


def _mesh_problem(vertices, faces) -> str:
    if vertices is None or faces is None or len(faces) == 0:
        return "the sandbox returned no triangles"
    v, f = np.asarray(vertices), np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        return f"mesh arrays have shapes {v.shape} and {f.shape}, expected (V, 3) and (F, 3)"
    if not np.isfinite(v).all():
        return "mesh vertices contain NaN or inf"
    if f.min() < 0 or f.max() >= len(v):
        return "mesh faces index vertices that do not exist"
    return ""


def _status_text(status) -> str:
    return str(getattr(status, "value", status))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


# ---------------------------------------------------------------- manifest and report


def _manifest(src: Path, plan: _Plan, shards: list[ShardInfo]) -> dict:
    return build_manifest(shards, source=str(src.resolve()), shard_size=plan.shard_size, plan_hash=plan.plan_hash,
                          profile=plan.profile)


def _write_failures_csv(work: Path, shards: list[ShardInfo]) -> None:
    with atomic_file(work / FAILURES_NAME) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "split", "status", "reason"])
            for info in shards:
                for f in info.failures:
                    writer.writerow([f.id, info.split, f.status, f.reason])


def read_failures(root: str | os.PathLike) -> list[Failure]:
    """The failed programs listed in a prepared dataset's ``failures.csv``."""
    with open(Path(root) / FAILURES_NAME, newline="", encoding="utf-8") as handle:
        return [Failure(row["id"], row["status"], row["reason"]) for row in csv.DictReader(handle)]


def _fill_from_manifest(report: PrepareReport, manifest: dict) -> None:
    """Counts, failures and hash of the finished dataset, as stored."""
    report.num_programs, report.num_shapes = manifest["num_programs"], manifest["num_shapes"]
    report.splits = {
        name: {"programs": s["num_programs"], "shapes": s["num_shapes"], "failed": s["num_failed"]}
        for name, s in manifest["splits"].items()
    }
    report.failures = read_failures(report.out)
    report.content_hash = manifest["content_hash"]
