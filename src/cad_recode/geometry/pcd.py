"""Point Cloud Library ``.pcd`` files (PCL, ROS, Open3D): a text header, then ``ascii`` or ``binary`` rows.

Format (v0.7, the one PCL and Open3D write; v0.6 lacks only VERSION): header lines ``FIELDS x y z rgb``,
``SIZE 4 4 4 4`` (bytes), ``TYPE F F F U`` (float, signed, unsigned), ``COUNT 1 1 1 1`` (values a field,
default 1), ``WIDTH``/``HEIGHT``, ``POINTS n``, and last ``DATA ascii|binary|binary_compressed``.
A point a depth camera saw nothing at is NaN in an organized cloud (HEIGHT > 1): those points are
dropped, as every PCL reader does. ``binary_compressed`` (LZF, column by column) is refused with how to
re-save the file, rather than decoded slowly in Python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cad_recode.errors import InputError, escape_controls
from cad_recode.geometry.number_rows import number_rows

MAX_HEADER_BYTES = 64 * 1024
_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
          ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}


def read_pcd(path: Path, max_bytes: int) -> np.ndarray:
    """The x y z of a ``.pcd`` file as float64 (N, 3), points with a NaN coordinate dropped."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
        (dtype, points, data), data_start = _parse_header(head, path)
        f.seek(data_start)
        body = f.read(max_bytes + 1)
    if dtype.itemsize * points > max_bytes or len(body) > max_bytes:
        raise InputError(f"{path}: holds more than the {max_bytes / 2**30:.0f} GiB a point cloud may take; "
                         "give fewer points")
    if data == "ascii":
        xyz = _ascii_xyz(body, head[:data_start].count(b"\n"), dtype, path)
    else:
        if len(body) < dtype.itemsize * points:
            raise InputError(f"{path}: its header says {points} points ({dtype.itemsize * points} bytes) but "
                             f"the file holds {len(body)} bytes of them; it looks truncated, re-export it")
        table = np.frombuffer(body, dtype=dtype, count=points)
        xyz = np.stack([np.asarray(table[axis], dtype=np.float64) for axis in "xyz"], axis=1)
    return xyz[~np.isnan(xyz).any(axis=1)]


def _parse_header(head: bytes, path: Path):
    """((record dtype, points, data kind), offset of the first data byte)."""
    values: dict[str, list[str]] = {}
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        line = raw.decode("ascii", "replace").strip()
        if not line or line.startswith("#"):
            continue
        key, *rest = line.split()
        values[key.upper()] = rest
        if key.upper() == "DATA":
            break
    else:
        raise InputError(f"{path}: no 'DATA' line in its first {MAX_HEADER_BYTES // 1024} KiB; "
                         "this is not a PCD file (or its header is broken)")
    data = (values["DATA"] or [""])[0].lower()
    if data == "binary_compressed":
        raise InputError(f"{path}: is a compressed PCD (DATA binary_compressed), which is not read here; re-save "
                         "it uncompressed (Open3D: write_point_cloud(..., compressed=False); PCL: "
                         "pcl_convert_pcd_ascii_binary IN OUT 1) or as .ply")
    if data not in ("ascii", "binary"):
        raise InputError(f"{path}: DATA {escape_controls(data)!r} is not ascii or binary")
    fields = [name.lower() for name in values.get("FIELDS", [])]
    missing = [axis for axis in "xyz" if axis not in fields]
    if missing:
        raise InputError(f"{path}: its FIELDS ({escape_controls(' '.join(fields))!r}) have no "
                         f"{', '.join(missing)}; a point cloud needs x y z")
    sizes, types = values.get("SIZE", []), values.get("TYPE", [])
    counts = values.get("COUNT", ["1"] * len(fields))
    try:
        if not len(sizes) == len(types) == len(counts) == len(fields):
            raise ValueError("FIELDS, SIZE, TYPE and COUNT differ in length")
        # PCL pads records with fields named "_": a repeated name gets its position to stay unique
        dtype = np.dtype([(name if name not in fields[:i] else f"{name}_{i}", _TYPES[(kind.upper(), int(size))],
                           (int(count),) if int(count) != 1 else ())
                          for i, (name, size, kind, count) in enumerate(zip(fields, sizes, types, counts))])
        points = int(values.get("POINTS", [None])[0] or int(values["WIDTH"][0]) * int(values["HEIGHT"][0]))
        if points < 0:
            raise ValueError("a negative point count")
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise InputError(f"{path}: its PCD header is broken ({escape_controls(str(exc))[:80]}); re-export it") from None
    return (dtype, points, data), offset


def _ascii_xyz(body: bytes, header_lines: int, dtype: np.dtype, path: Path) -> np.ndarray:
    """The x y z columns of ascii data, read as a text cloud is (messages count lines as the file does)."""
    try:
        text = "\n" * header_lines + body.decode("ascii").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise InputError(f"{path}: its ascii data holds bytes that are not text; re-export it") from None
    starts, width = {}, 0
    for name in dtype.names:  # a field of COUNT n takes n columns
        starts[name] = width
        width += int(np.prod(dtype[name].shape)) if dtype[name].shape else 1
    rows = number_rows(text, path)
    if rows.shape[1] != width:
        raise InputError(f"{path}: its ascii rows have {rows.shape[1]} values but its fields take {width}; "
                         "re-export it")
    return rows[:, [starts[axis] for axis in "xyz"]]
