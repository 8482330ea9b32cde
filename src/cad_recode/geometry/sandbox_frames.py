"""Frames between the parent and a worker, and the parent's checks on what a worker sends.

A frame is ``b"!II"`` (header length, blob length) + a JSON header + a raw blob
(float64/int64 mesh arrays, then exported files): never pickle, because the
parent does not trust a worker. Sizes are capped before anything is buffered
(:func:`frame_limits`), and :func:`parse_result` rejects a result that is not
self-consistent: wrong job token, wrong sizes, face indices out of range,
non-finite numbers, a mesh outside its claimed bounding box or far from its
claimed volume, an "ok" without a valid solid's figures, or an exported file
that does not parse as the kind asked for.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Sequence

import numpy as np

from cad_recode.geometry.exec_result import ExecResult, ExecStatus, printable_line
from cad_recode.geometry.profiles import Profile, min_faces

FRAME_HEAD = struct.Struct("!II")
MAX_HEADER_BYTES = 1 << 20
MAX_EXPORT_BYTES = 256 << 20
"""Most bytes of one exported STEP or STL file a worker may send."""
MAX_BREP_BYTES = 64 << 20
"""Most bytes of the BREP a ``cadquery``-profile program's first stage may send (a part with thousands
of faces takes a few MB; every such job has room for one, so the cap bounds what the parent buffers)."""
_MESH_VOLUME_TOLERANCE = 0.25  # relative; a coarse tessellation of a curved part is a few % off
KEEPS_WORKER = (ExecStatus.OK, ExecStatus.REJECTED, ExecStatus.SYNTAX)  # statuses after which a worker may go on


def retires_after(served: int, programs_per_worker: int, status: ExecStatus, profile: str) -> bool:
    """Does a worker retire after its ``served``-th program, which ended in ``status``?

    Both sides apply this rule. The parent never takes the worker's word for staying: a program that
    took over its worker could otherwise keep it, and read and answer the programs sent after it.
    """
    return served >= max(1, programs_per_worker) or status not in KEEPS_WORKER or profile != Profile.STRICT.value


class ProtocolViolation(ValueError):
    """A worker sent something a well-behaved worker never sends; its result is discarded."""


def encode_frame(header: dict, *blobs: bytes | memoryview) -> list[bytes | memoryview]:
    head = json.dumps(header).encode()
    return [FRAME_HEAD.pack(len(head), sum(len(b) for b in blobs)), head, *blobs]


def frame_limits(max_triangles: int, exports: Sequence[str], mesh: bool = True) -> tuple[int, int]:
    """(most header bytes, most blob bytes) a frame may have while a job that asked for the files
    ``exports`` (and a mesh, or not) is out; the parent buffers no more than this of a frame before it reads it."""
    files = sum(_export_cap(kind) for kind in exports)
    return MAX_HEADER_BYTES, (24 * 4 * max_triangles if mesh else 0) + files


def _export_cap(kind: str) -> int:
    return MAX_BREP_BYTES if kind == "BREP" else MAX_EXPORT_BYTES


def result_to_frame(result: ExecResult, token: str, exports: dict[str, bytes], **extra: Any) -> list:
    header: dict[str, Any] = {
        **extra, "kind": "result", "token": token, "status": result.status.value, "reason": result.reason,
        "num_faces": result.num_faces, "volume": result.volume, "area": result.area,
        "bbox_min": result.bbox_min, "bbox_max": result.bbox_max, "seconds": result.seconds, "nv": 0, "nf": 0,
        "exports": {kind: len(data) for kind, data in exports.items()},
    }
    blobs: list[bytes] = []
    if result.vertices is not None and result.faces is not None:
        header["nv"], header["nf"] = len(result.vertices), len(result.faces)
        blobs += [np.ascontiguousarray(result.vertices, dtype="<f8").tobytes(),
                  np.ascontiguousarray(result.faces, dtype="<i8").tobytes()]
    blobs += list(exports.values())
    return encode_frame(header, *blobs)


def _number(header: dict, key: str) -> float:
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolViolation(f"'{key}' is not a finite number")
    try:  # JSON integers have no bound: one of 400 digits overflows a float
        number = float(value)
    except OverflowError:
        raise ProtocolViolation(f"'{key}' is not a finite number") from None
    if not math.isfinite(number):
        raise ProtocolViolation(f"'{key}' is not a finite number")
    return number


def _bbox(value) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 3:
        raise ProtocolViolation("a bounding box is not 3 numbers")
    numbers = tuple(_number({"b": v}, "b") for v in value)
    return numbers  # type: ignore[return-value]


def parse_result(header: dict, blob: bytearray, token: str, max_triangles: int,
                 exports_asked: tuple[str, ...], mesh_asked: bool = True,
                 profile: Profile | str = Profile.STRICT) -> tuple[ExecResult, dict[str, bytes]]:
    """The :class:`ExecResult` and exported files of a result frame; :class:`ProtocolViolation` if inconsistent.

    ``mesh_asked``: the job asked for a mesh, so an ok result must carry one (and is checked against it).
    ``profile``: the job's, whose validity rule an ok result must meet
    (:func:`~cad_recode.geometry.profiles.min_faces`).
    """
    try:
        if header.get("token") != token:
            raise ProtocolViolation("the result is not for the job that was sent")
        status = ExecStatus(header["status"])
        reason = header["reason"]
        if not isinstance(reason, str):
            raise ProtocolViolation("the reason is not text")
        nv, nf, num_faces = (header[k] for k in ("nv", "nf", "num_faces"))
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (nv, nf, num_faces)):
            raise ProtocolViolation("counts are not non-negative integers")
        sizes = header["exports"]
        if not isinstance(sizes, dict) or not set(sizes) <= set(exports_asked) or not all(
                isinstance(n, int) and 0 <= n <= _export_cap(kind) for kind, n in sizes.items()):
            raise ProtocolViolation("exports that were not asked for, or too large")
        result = ExecResult(status, printable_line(reason), None, None, num_faces, _number(header, "volume"),
                            _number(header, "area"), _bbox(header["bbox_min"]), _bbox(header["bbox_max"]),
                            _number(header, "seconds"))
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        raise ProtocolViolation(f"malformed result header ({exc})") from None
    if nf > max_triangles or nv > 3 * nf:
        raise ProtocolViolation(f"a mesh of {nv} vertices and {nf} triangles is over the limits")
    mesh_bytes = 24 * (nv + nf)
    if len(blob) != mesh_bytes + sum(sizes.values()):
        raise ProtocolViolation("the result frame has the wrong size")
    if nv or nf:
        view = memoryview(blob)  # the arrays share the (writable) frame buffer: no copy
        result.vertices = np.frombuffer(view[: 24 * nv], dtype="<f8").reshape(nv, 3)
        result.faces = np.frombuffer(view[24 * nv: mesh_bytes], dtype="<i8").reshape(nf, 3)
    exports, offset = {}, mesh_bytes
    for kind, size in sizes.items():
        exports[kind] = bytes(blob[offset: offset + size])
        offset += size
    _check_consistent(result, exports, exports_asked, mesh_asked, min_faces(profile))
    return result, exports


def _check_consistent(result: ExecResult, exports: dict[str, bytes], exports_asked: tuple[str, ...],
                      mesh_asked: bool, fewest_faces: int) -> None:
    if not result.ok:
        if result.vertices is not None or exports:
            raise ProtocolViolation("a failed result carries a mesh or files")
        return
    if result.reason or result.num_faces < fewest_faces or not result.volume > 0 or result.bbox_min is None \
            or result.bbox_max is None or any(a > b for a, b in zip(result.bbox_min, result.bbox_max)):
        raise ProtocolViolation("an ok result without a valid solid's figures")
    if set(exports) != set(exports_asked):
        raise ProtocolViolation("an ok result without the files that were asked for")
    if mesh_asked and result.vertices is None:
        raise ProtocolViolation("an ok result without the mesh that was asked for")
    for kind, data in exports.items():
        if not _parses(kind, data):
            raise ProtocolViolation(f"the {kind} file does not parse")
    if result.vertices is not None:
        _check_mesh(result)


def _check_mesh(result: ExecResult) -> None:
    v, f = result.vertices, result.faces
    if len(f) == 0 or not np.isfinite(v).all() or f.min() < 0 or f.max() >= len(v):
        raise ProtocolViolation("the mesh has no triangles, non-finite vertices or indices out of range")
    low, high = np.asarray(result.bbox_min), np.asarray(result.bbox_max)
    slack = 1e-6 * max(float(np.max(high - low)), 1.0) + 1e-3 * max(float(np.max(high - low)), 0.0)
    if (v.min(axis=0) < low - slack).any() or (v.max(axis=0) > high + slack).any():
        raise ProtocolViolation("the mesh lies outside its bounding box")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    mesh_volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)
    if abs(mesh_volume - result.volume) > _MESH_VOLUME_TOLERANCE * result.volume:
        raise ProtocolViolation(f"the mesh's volume {mesh_volume:.6g} is far from the claimed {result.volume:.6g}")


def _parses(kind: str, data: bytes) -> bool:
    if kind == "BREP":  # the measuring worker reads it with OCCT: this only catches a wrong kind of file
        return data.lstrip().startswith(b"Open CASCADE Topology V")  # OCCT's binary BREP
    if kind == "STEP":
        return data.lstrip().startswith(b"ISO-10303-21;") and b"END-ISO-10303-21;" in data[-4096:]
    if len(data) >= 84 and len(data) == 84 + 50 * int.from_bytes(data[80:84], "little"):
        return True  # binary STL
    return data[:5].lower() == b"solid" and b"endsolid" in data[-4096:]
