"""Storage of prepared shapes: Arrow IPC shard files plus one JSON manifest.

Layout of a prepared dataset folder::

    manifest.json              # written last: its presence means "complete"
    failures.csv               # id, split, status, reason of every failed program
    train/shard-00000.arrow    # Arrow IPC file format, one record batch per shard
    val/shard-00000.arrow
    test/...

Each shard row is one shape:

    id         string         relative path of the program in the source ("train/batch_00/3.py")
    code       string         the program text, verbatim
    vertices   large_list<float32>  flattened (V, 3) mesh vertices, program units
    faces      large_list<int32>    flattened (F, 3) triangle vertex indices
    volume     float64        volume of the B-rep solid (from the sandbox)
    area       float64        surface area of the B-rep solid
    num_faces  int32          B-rep faces of the solid

The shard's schema metadata (key ``cad_recode.shard``) is JSON telling which
programs the shard was planned to hold (split, index, a hash of their ids),
which of them failed and why, and a hash of the rows' content. A shard file is
therefore self-describing: a rerun can verify it without any other file.

Shards are read through :func:`pyarrow.memory_map`, so opening a dataset of a
million shapes costs a JSON read, and a row costs a page-in of its bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from cad_recode.atomic import atomic_file
from cad_recode.errors import InputError

FORMAT_NAME = "cad-recode/prepared-meshes"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.csv"
SPLITS = ("train", "val", "test")
_META_KEY = b"cad_recode.shard"

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("code", pa.string()),
        ("vertices", pa.large_list(pa.float32())),
        ("faces", pa.large_list(pa.int32())),
        ("volume", pa.float64()),
        ("area", pa.float64()),
        ("num_faces", pa.int32()),
    ]
)


@dataclass
class ShapeRecord:
    """One prepared shape, as stored in a shard row."""

    id: str
    code: str
    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    volume: float = 0.0
    area: float = 0.0
    num_faces: int = 0


@dataclass
class Failure:
    """A program that did not become a shape; ``status`` is an ExecStatus value or a file problem."""

    id: str
    status: str
    reason: str

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "reason": self.reason}


@dataclass
class ShardInfo:
    """What a shard's metadata says about it."""

    split: str
    index: int
    ids_hash: str  # hash of the planned program ids, in order
    num_planned: int
    num_rows: int
    content_hash: str
    failures: list[Failure] = field(default_factory=list)


def partial_dir(out: Path) -> Path:
    """Where an unfinished preparation of ``out`` lives (a hidden sibling, renamed to ``out`` when done)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def shard_file_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


def hash_ids(ids: Iterable[str]) -> str:
    """Order-sensitive hash of program ids: identifies which programs a shard (or a plan) covers."""
    h = hashlib.sha256()
    for item in ids:
        data = item.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _hash_records(records: list[ShapeRecord]) -> str:
    """Hash of the stored content (ids, code, mesh bytes), independent of Arrow's byte layout."""
    h = hashlib.sha256()
    for rec in records:
        for part in (rec.id.encode("utf-8"), rec.code.encode("utf-8"), rec.vertices.tobytes(), rec.faces.tobytes()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def write_shard(
    path: Path, *, split: str, index: int, ids_hash: str, num_planned: int,
    records: list[ShapeRecord], failures: list[Failure],
) -> ShardInfo:
    """Write one shard atomically (temporary name, fsync, rename) and return its info.

    A crash at any moment leaves either no file at ``path`` or the complete one.
    """
    vertices = [np.ascontiguousarray(r.vertices, dtype=np.float32) for r in records]
    faces = [np.ascontiguousarray(r.faces, dtype=np.int32) for r in records]
    records = [
        ShapeRecord(r.id, r.code, v, f, float(r.volume), float(r.area), int(r.num_faces))
        for r, v, f in zip(records, vertices, faces)
    ]
    info = ShardInfo(
        split=split, index=index, ids_hash=ids_hash, num_planned=num_planned,
        num_rows=len(records), content_hash=_hash_records(records), failures=list(failures),
    )
    meta = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "split": split, "index": index,
        "ids_hash": ids_hash, "num_planned": num_planned, "num_rows": info.num_rows,
        "content_hash": info.content_hash, "failures": [f.to_dict() for f in failures],
    }
    batch = pa.record_batch(
        [
            pa.array([r.id for r in records], pa.string()),
            pa.array([r.code for r in records], pa.string()),
            _flat_lists([v.reshape(-1) for v in vertices], pa.float32()),
            _flat_lists([f.reshape(-1) for f in faces], pa.int32()),
            pa.array([r.volume for r in records], pa.float64()),
            pa.array([r.area for r in records], pa.float64()),
            pa.array([r.num_faces for r in records], pa.int32()),
        ],
        schema=SCHEMA,
    )
    schema = SCHEMA.with_metadata({_META_KEY: json.dumps(meta).encode("utf-8")})
    with atomic_file(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink:
            with pa.ipc.new_file(sink, schema) as writer:
                writer.write_batch(batch.replace_schema_metadata(schema.metadata))
        _fsync(tmp)
    return info


def _flat_lists(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
    """A large_list array from numpy rows without a Python loop over elements."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    if arrays:
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        values = np.concatenate(arrays)
    else:
        values = np.zeros(0, dtype=value_type.to_pandas_dtype())
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_shard_info(path: Path) -> ShardInfo | None:
    """The metadata of a complete, readable shard; None if the file is missing, truncated or foreign."""
    try:
        with pa.memory_map(str(path), "r") as source:
            reader = pa.ipc.open_file(source)
            meta = json.loads((reader.schema.metadata or {})[_META_KEY])
            num_rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None
    if meta.get("format") != FORMAT_NAME or meta.get("num_rows") != num_rows:
        return None
    return ShardInfo(
        split=meta["split"], index=int(meta["index"]), ids_hash=meta["ids_hash"],
        num_planned=int(meta["num_planned"]), num_rows=num_rows, content_hash=meta["content_hash"],
        failures=[Failure(**f) for f in meta["failures"]],
    )


def content_hash(shards: Iterable[ShardInfo]) -> str:
    """Hash of a whole dataset: the shards' content hashes in split and index order."""
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s.split}/{s.index}/{s.content_hash};".encode())
    return h.hexdigest()


def build_manifest(shards: list[ShardInfo], **fields) -> dict:
    """The manifest of a dataset made of ``shards`` (split, then index order); ``fields`` are added as is."""
    splits: dict[str, dict] = {}
    for info in shards:
        entry = splits.setdefault(info.split, {"num_programs": 0, "num_shapes": 0, "num_failed": 0, "shards": []})
        entry["num_programs"] += info.num_planned
        entry["num_shapes"] += info.num_rows
        entry["num_failed"] += len(info.failures)
        entry["shards"].append({
            "file": shard_file_name(info.index), "num_planned": info.num_planned,
            "num_rows": info.num_rows, "num_failed": len(info.failures), "content_hash": info.content_hash,
        })
    statuses = Counter(f.status for info in shards for f in info.failures)
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, **fields,
        "content_hash": content_hash(shards),
        "num_programs": sum(s["num_programs"] for s in splits.values()),
        "num_shapes": sum(s["num_shapes"] for s in splits.values()),
        "num_failed": sum(s["num_failed"] for s in splits.values()),
        "failures_by_status": dict(sorted(statuses.items())),
        "failures_file": FAILURES_NAME,
        "splits": splits,
    }


def write_manifest(root: Path, manifest: dict) -> None:
    with atomic_file(root / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _fsync(tmp)


def read_manifest(root: Path) -> dict | None:
    """The manifest of a complete dataset at ``root``; None if there is none (or it is not ours)."""
    try:
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return None
    return manifest


class PreparedSplit:
    """Read-only, memory-mapped view of one split of a prepared dataset.

    ``PreparedSplit.open(root, "train")`` reads only the manifest; shard files
    are mapped on first use, per process, so an instance is cheap to pickle
    into DataLoader workers. ``split[i]`` returns a dict with ``id``, ``code``,
    ``vertices`` (V, 3) float32, ``faces`` (F, 3) int32, ``volume``, ``area``
    and ``num_faces``; the arrays are private copies, safe to modify.
    """

    # Shards mapped at once per process; bounds open file descriptors on 1M-shape datasets.
    MAX_OPEN_SHARDS = 32

    def __init__(self, root: Path, split: str, shard_files: list[str], shard_rows: list[int]):
        self.root = Path(root)
        self.split = split
        self._files = list(shard_files)
        self._starts = np.concatenate([[0], np.cumsum(shard_rows, dtype=np.int64)])
        self._open: OrderedDict[int, pa.RecordBatch] = OrderedDict()
        self._pid = os.getpid()

    @classmethod
    def open(cls, root: str | os.PathLike, split: str) -> PreparedSplit:
        root = Path(root)
        manifest = read_manifest(root)
        if manifest is None:
            hint = (
                "it holds an unfinished preparation; rerun `cad-recode data prepare` with --resume"
                if partial_dir(root).exists()
                else "run `cad-recode data prepare --src PROGRAMS --out DIR` first"
            )
            raise InputError(f"{root}: not a prepared dataset (no {MANIFEST_NAME}); {hint}")
        splits = manifest["splits"]
        if split not in splits:
            raise InputError(
                f"{root}: has no split {split!r}; it has {', '.join(sorted(splits)) or 'none'}"
            )
        shards = splits[split]["shards"]
        return cls(root, split, [s["file"] for s in shards], [s["num_rows"] for s in shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict:
        batch, row = self._locate(index)
        v = _list_row(batch.column(2), row, np.float32).reshape(-1, 3)
        f = _list_row(batch.column(3), row, np.int32).reshape(-1, 3)
        return {
            "id": batch.column(0)[row].as_py(),
            "code": batch.column(1)[row].as_py(),
            "vertices": v,
            "faces": f,
            "volume": batch.column(4)[row].as_py(),
            "area": batch.column(5)[row].as_py(),
            "num_faces": batch.column(6)[row].as_py(),
        }

    def codes(self) -> Iterator[str]:
        """All program texts in order, one shard at a time (never the whole split in memory)."""
        for shard in range(len(self._files)):
            yield from self._batch(shard).column(1).to_pylist()

    def ids(self) -> Iterator[str]:
        for shard in range(len(self._files)):
            yield from self._batch(shard).column(0).to_pylist()

    def _locate(self, index: int) -> tuple[pa.RecordBatch, int]:
        n = len(self)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for split {self.split!r} of {n} shapes")
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self._batch(shard), int(index - self._starts[shard])

    def _batch(self, shard: int) -> pa.RecordBatch:
        if self._pid != os.getpid():  # forked into a worker: never share the parent's maps
            self._open = OrderedDict()
            self._pid = os.getpid()
        batch = self._open.get(shard)
        if batch is None:
            path = self.root / self.split / self._files[shard]
            try:
                reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
                if reader.num_record_batches != 1:
                    raise ValueError(f"{reader.num_record_batches} record batches, expected 1")
                batch = reader.get_batch(0)
            except (OSError, ValueError, pa.ArrowException) as err:
                raise InputError(
                    f"{path}: unreadable shard ({err}); re-create the dataset with "
                    "`cad-recode data prepare --overwrite`"
                ) from None
            self._open[shard] = batch
            if len(self._open) > self.MAX_OPEN_SHARDS:  # dropped maps close when no array views remain
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(shard)
        return batch

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # mapped files are per process
        return state

    def __repr__(self) -> str:
        return f"PreparedSplit({str(self.root)!r}, {self.split!r}, {len(self)} shapes, {len(self._files)} shards)"


def _list_row(column: pa.Array, row: int, dtype) -> np.ndarray:
    """Row ``row`` of a large_list column as a fresh numpy array (no Python loop over values)."""
    offsets = column.offsets
    start, stop = offsets[row].as_py(), offsets[row + 1].as_py()
    values = column.values.to_numpy(zero_copy_only=True)
    return np.array(values[start:stop], dtype=dtype, copy=True)
