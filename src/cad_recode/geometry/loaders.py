"""Read a user's point cloud, mesh or STEP file into arrays the pipeline can use.

:func:`load_geometry` returns a ``trimesh.Trimesh`` for meshes and STEP solids,
or a float64 (N, 3) array for point clouds (normal columns are dropped). Every
kind of bad input raises its own one-line :class:`InputError` that names the
file and says how to fix it. :func:`load_model_points` goes straight on to the
model's 256 normalized points.

Point clouds: ``.npy`` / ``.npz`` (N x 3, or up to N x 12 with x y z first and per-point values
after them, normals, colours or a scanner's intensity, which are dropped; in an ``.npz``
the array named ``points``, ``xyz`` or ``pc``, or the only array), text
``.xyz`` / ``.txt`` / ``.pts`` / ``.csv`` (3 to 12 numbers a line, x y z first, separated by spaces or
commas, ``#`` or ``//`` comments; a ``.pts`` may start with a point-count line; decimal commas
and empty cells are refused, not misread),
and ``.ply`` without faces. Meshes: ``.stl`` ``.obj`` ``.ply`` ``.off`` ``.glb``
through trimesh (a scene is concatenated into one mesh). STEP: ``.step`` /
``.stp`` through CadQuery's importer, tessellated exactly like the sandbox's
solids (``TESSELLATION_TOLERANCE``, ``ANGULAR_TOLERANCE`` from
:mod:`cad_recode.geometry.sandbox`; CadQuery's deflection is relative to edge
size, so it suits a part in mm or in m alike).

Inputs may come from anyone (a folder to evaluate, a web upload), so reading one
never costs far more than its size: an ``.npz`` array is refused past
:data:`MAX_ARRAY_BYTES` before it is unpacked, text is parsed without an object
per number, and a mesh's textures are never decoded. File names are shown with
their control characters escaped. STEP files are read by OCCT in a process of their own
(:mod:`._step_reader`, kept for the next file), with a memory limit and :data:`STEP_READ_SECONDS` a
file: one that makes OCCT loop, balloon or crash costs one clear error, not the caller. Where the
sandbox's OS layer works, that process runs inside it and is sent the file's bytes, never its path: a
file crafted against OCCT's parser finds no network, none of the caller's files and nothing to write
but its own scratch.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from pathlib import Path

import numpy as np
import trimesh

from cad_recode.errors import InputError, escape_controls, unreadable
from cad_recode.geometry.normalize import validate_points
from cad_recode.geometry.number_rows import number_rows
from cad_recode.geometry.sampling import (
    NUM_POINT_TOKENS,
    NUM_SURFACE_POINTS,
    ModelPoints,
    to_model_points,
)

POINT_CLOUD_SUFFIXES = (".npy", ".npz", ".xyz", ".txt", ".pts", ".csv", ".asc", ".pcd", ".ply")
MESH_SUFFIXES = (".stl", ".obj", ".ply", ".off", ".glb")
# x y z, then what scanners and CloudCompare write beside them (normals, r g b (a), intensity):
# more columns than this are not a point list
MAX_CLOUD_COLUMNS = 12
STEP_SUFFIXES = (".step", ".stp")
SUPPORTED_SUFFIXES = tuple(dict.fromkeys(POINT_CLOUD_SUFFIXES + MESH_SUFFIXES + STEP_SUFFIXES))
STEP_READ_SECONDS = 300.0  # an assembly of thousands of faces reads in well under a minute
_step_reader = None  # the StepReader of this process, made on the first STEP file
_step_reader_made = threading.Lock()

_NPZ_KEYS = ("points", "xyz", "pc")
_TEXT_SUFFIXES = (".xyz", ".txt", ".pts", ".csv", ".asc")
_NUMPY_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK"}
MAX_ARRAY_BYTES = 1 << 30  # an unpacked .npz array: 44 million float64 points, far past what sampling needs
_COMMENT = re.compile(r"(#|//).*")
# "0,5 1,25 3,0": two values with a decimal comma each, separated by blanks (a German spreadsheet's export)
_DECIMAL_COMMAS = re.compile(r"(?m)^[ \t]*([-+]?\d*,\d+)[ \t]+[-+]?\d*,\d+")
_EMPTY_CELLS = {sep: re.compile(rf"(?m)(^[ \t]*{sep}|{sep}[ \t]*{sep})") for sep in ",;"}  # ",2,3", "1,,3": one missing
_SEPARATORS = re.compile(r"[ \t,;]+")
_FIRST_LINE = re.compile(r"(?m)^[ \t]*\S.*$")
_MAX_HEADER_CHARS = 1024  # MAX_CLOUD_COLUMNS names


def load_geometry(path: str | os.PathLike) -> trimesh.Trimesh | np.ndarray:
    """A mesh (``trimesh.Trimesh``) or a float64 (N, 3) point cloud from ``path``.

    Raises :class:`InputError` for: a missing or empty file, an unsupported
    extension, an unreadable file, a wrong array shape, NaN/inf values, fewer
    than 3 points, or zero extent.
    """
    try:
        return _load_geometry(check_input_file(path))
    except InputError as err:  # the name may be anyone's: a newline in it would forge a second line
        shown = str(Path(path))  # as the messages spell it
        raise InputError(str(err).replace(shown, escape_controls(shown))) from None


def _load_geometry(path: Path) -> trimesh.Trimesh | np.ndarray:
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); re-export it")

    if suffix in (".npy", ".npz"):
        return _check_cloud(_read_numpy(path), path)
    if suffix in _TEXT_SUFFIXES:
        return _check_cloud(_read_text(path), path)
    if suffix == ".pcd":
        from cad_recode.geometry.pcd import read_pcd

        return _check_cloud(read_pcd(path, MAX_ARRAY_BYTES), path)
    if suffix in STEP_SUFFIXES:
        return _check_mesh(_read_step(path), path)
    loaded = _read_trimesh(path)
    if isinstance(loaded, trimesh.PointCloud):  # e.g. a .ply (or .obj) with vertices only
        return _check_cloud(np.asarray(loaded.vertices), path)
    return _check_mesh(loaded, path)


def check_input_file(path: str | os.PathLike, suffixes: tuple[str, ...] = SUPPORTED_SUFFIXES) -> Path:
    """The cheap checks (extension, exists, is a file), so a command can refuse a bad path before slow work."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise InputError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; supported: {' '.join(suffixes)}"
        )
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise InputError(f"{path}: not a file; give a point cloud, mesh or STEP file")
    return path


def load_model_points(
    path: str | os.PathLike,
    *,
    n_points: int = NUM_POINT_TOKENS,
    n_surface: int = NUM_SURFACE_POINTS,
    seed: int = 0,
) -> ModelPoints:
    """Load ``path`` and turn it into the model's normalized points (no noise: this is inference)."""
    return to_model_points(load_geometry(path), n_points=n_points, n_surface=n_surface, seed=seed)


# --- point clouds ---------------------------------------------------------------------------


def _read_numpy(path: Path) -> np.ndarray:
    """The array of a .npy, or the chosen array of a .npz (``points``/``xyz``/``pc``, or the only one)."""
    what = f"a NumPy {path.suffix.lower()} file"
    magic = _NUMPY_MAGIC[path.suffix.lower()]
    with open(path, "rb") as handle:
        if handle.read(len(magic)) != magic:
            raise InputError(f"{path}: is not {what} (it does not start with NumPy's header); check the file "
                             "is not garbled, or give it the extension of what it holds")
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle: a cloud is plain numbers
    except Exception as exc:  # ValueError, EOFError, BadZipFile ... from a garbled file
        raise unreadable(path, what, exc) from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded as archive:
        names = list(archive.files)
        name = next((k for k in _NPZ_KEYS if k in names), names[0] if len(names) == 1 else None)
        if name is None:
            shown = ", ".join(repr(n) for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            raise InputError(
                f"{path}: holds {len(names)} arrays ({escape_controls(shown)}) and none is named "
                f"{' / '.join(_NPZ_KEYS)}; save the points under one of those names"
            )
        members = {info.filename: info.file_size for info in archive.zip.infolist()}
        unpacked = members.get(f"{name}.npy", members.get(name, 0))
        if unpacked > MAX_ARRAY_BYTES:  # before unpacking: a 4.6 MB .npz unpacked to 5.4 GB
            raise InputError(f"{path}: its array '{name}' unpacks to {unpacked / 2**30:.1f} GiB, over the "
                             f"{MAX_ARRAY_BYTES / 2**30:.0f} GiB a point cloud may take; give fewer points")
        try:
            return archive[name]
        except Exception as exc:
            raise unreadable(path, what, exc) from None


def _read_text(path: Path) -> np.ndarray:
    """The rows of a text cloud: comments, a header line and the separators settled here, the numbers read
    by :func:`~cad_recode.geometry.number_rows.number_rows`."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Windows Notepad's) is skipped
    except (UnicodeDecodeError, OSError) as exc:
        raise unreadable(path, "a text file of x y z rows", exc) from None
    text = _COMMENT.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    names, text = _header(text)
    if ";" in text:  # a spreadsheet's CSV where the comma is the decimal mark: "0,5;1,25;3"
        _refuse_ambiguous_commas(text, path, separator=";")
        text = text.replace(",", ".").replace(";", " ")
    else:
        _refuse_ambiguous_commas(text, path, separator=",")
        text = text.replace(",", " ")
    rows = number_rows(text, path, point_count_line=True)
    return rows if names is None else _named_columns(rows, names, path)


def _header(text: str) -> tuple[list[str] | None, str]:
    """(the column names, the text without them) when the first line names columns ("x,y,z,nx,ny,nz"), else
    (None, text). The line is blanked, not removed, so later messages keep the file's line numbers."""
    first = _FIRST_LINE.search(text)
    if first is None or len(first.group()) > _MAX_HEADER_CHARS:  # a megabyte line of words is not a header
        return None, text
    names = [name.strip("\"'").lower() for name in _SEPARATORS.split(first.group().strip()) if name]
    if not names or any(_is_number(name) for name in names):
        return None, text
    return names, text[: first.start()] + text[first.end():]


def _is_number(token: str) -> bool:
    try:
        float(token.replace(",", "."))
    except ValueError:
        return False
    return True


def _named_columns(rows: np.ndarray, names: list[str], path: Path) -> np.ndarray:
    """The x, y and z columns of ``rows``, found by the header's ``names``."""
    shown = escape_controls(" ".join(names)[:60])
    if len(names) != rows.shape[1]:
        columns = f"{len(names)} column" + ("s" if len(names) != 1 else "")
        raise InputError(f"{path}: the header names {columns} ({shown!r}) but the rows have {rows.shape[1]} "
                         "values; name every column, or remove the header line")
    if not {"x", "y", "z"} <= set(names):
        raise InputError(f"{path}: the header ({shown!r}) names no x, y and z columns; name the point's "
                         "columns x y z, or remove the header line (x y z are then the first three values)")
    return rows[:, [names.index(axis) for axis in "xyz"]]


def _refuse_ambiguous_commas(text: str, path: Path, separator: str) -> None:
    """What separating on ``separator`` would misread: decimal commas between blanks ("0,5 1,2 3,0" is three
    values, not six) and empty cells ("1,,3" would shift every later value of the row into the wrong column)."""
    checks = [(_EMPTY_CELLS[separator], "an empty cell", "fill every cell, or remove the rows that lack a value")]
    if separator == ",":
        checks.insert(0, (_DECIMAL_COMMAS, "values with decimal commas", "write decimal points (0.5, not 0,5)"))
    for pattern, what, fix in checks:
        found = pattern.search(text)
        if found:
            line = text.count("\n", 0, found.start()) + 1
            start = text.rfind("\n", 0, found.start()) + 1
            shown = escape_controls(text[start:].split("\n", 1)[0].strip()[:60])
            raise InputError(f"{path}: line {line} has {what} ({shown!r}); {fix}")


def _check_cloud(arr: np.ndarray, path: Path) -> np.ndarray:
    """(N, 3..MAX_CLOUD_COLUMNS) numeric, x y z first -> validated float64 (N, 3); the other columns dropped."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or not 3 <= arr.shape[1] <= MAX_CLOUD_COLUMNS:
        raise InputError(
            f"{path}: expected N x 3 (x y z) values, or up to N x {MAX_CLOUD_COLUMNS} with x y z first (then "
            f"normals, colours or intensity), got shape {arr.shape}; save the points as an N x 3 array"
        )
    return validate_points(arr[:, :3], where=str(path), min_points=3)


# --- meshes ----------------------------------------------------------------------------------


_STL_HEADER, _STL_TRIANGLE = 84, 50  # binary STL: 80-byte header + uint32 count, then 50 bytes a triangle


def _check_complete(path: Path) -> None:
    """Truncation that trimesh reads past: a binary STL shorter than its triangle count, an OBJ cut mid-line."""
    suffix = path.suffix.lower()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(_STL_HEADER)
        handle.seek(max(0, size - 200))
        tail = handle.read()
    if suffix == ".stl" and len(head) == _STL_HEADER and not _looks_like_ascii_stl(path, head):
        count = int.from_bytes(head[80:84], "little")
        needed = _STL_HEADER + _STL_TRIANGLE * count
        if size < needed:
            raise InputError(f"{path}: not a complete binary STL: its header says {count} triangles ({needed} "
                             f"bytes) but the file has {size} bytes; re-export or re-copy it, and check that it "
                             "really is an STL")
    if suffix == ".obj" and (b"\0" in head or b"\0" in tail):
        raise InputError(f"{path}: is binary data, not a text OBJ; check that it really is an OBJ file")
    if suffix == ".obj" and not tail.endswith((b"\n", b"\r")):
        last = tail.decode("utf-8", "replace").splitlines()[-1][-40:]
        raise InputError(f"{path}: ends in the middle of a line ({last!r}), so it looks truncated; re-export it "
                         "(a complete file that only lacks its final newline: add one)")


def _looks_like_ascii_stl(path: Path, head: bytes) -> bool:
    """ASCII STL starts with 'solid' and is text (some binary headers start with 'solid' too)."""
    if not head.lstrip().startswith(b"solid"):
        return False
    with open(path, "rb") as handle:
        sample = handle.read(1024)
    return b"\0" not in sample and (b"facet" in sample or b"endsolid" in sample)


def _read_trimesh(path: Path) -> trimesh.Trimesh | trimesh.PointCloud:
    _check_complete(path)
    try:
        # process=False keeps NaN/inf vertices visible, so they are reported, not dropped; textures are
        # never used, and decoding one (a 13000 x 13000 PNG in a 1.3 MB .glb) took 3 GB
        loaded = trimesh.load(path, process=False, skip_materials=True)
    except Exception as exc:  # trimesh raises many types for garbled files
        raise unreadable(path, f"a {path.suffix.lower()} mesh", exc) from None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.geometry.values() if isinstance(g, (trimesh.Trimesh, trimesh.PointCloud))]
        if not geoms:
            raise InputError(
                f"{path}: no mesh or points could be read from it (empty or garbled); "
                f"re-export it and check that it really is a {path.suffix.lower()} file"
            )
        if all(isinstance(g, trimesh.PointCloud) for g in geoms):
            return trimesh.PointCloud(np.concatenate([g.vertices for g in geoms]))
        loaded = loaded.to_mesh()  # transforms applied, meshes concatenated
    if isinstance(loaded, trimesh.Trimesh) and len(loaded.faces) == 0 and len(loaded.vertices) > 0:
        return trimesh.PointCloud(loaded.vertices)
    if not isinstance(loaded, (trimesh.Trimesh, trimesh.PointCloud)):
        raise InputError(f"{path}: holds a {type(loaded).__name__}, not a mesh or points; export a triangle mesh")
    return loaded


def _read_step(path: Path) -> trimesh.Trimesh:
    """The STEP file's shapes as one mesh, read by :mod:`._step_reader` in a process of its own."""
    from cad_recode.geometry._step_reader import StepReader, StepReadError

    global _step_reader
    with _step_reader_made:
        if _step_reader is None:
            _step_reader = StepReader()
            atexit.register(_step_reader.close)  # the unconfined reader's scratch is on the host's disk
    try:
        vertices, faces = _step_reader.read(path, STEP_READ_SECONDS)
    except StepReadError as err:
        raise InputError(str(err)) from None
    # process=True merges the per-face copies of shared vertices: a closed solid stays watertight.
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=True)


def _check_mesh(mesh: trimesh.Trimesh, path: Path) -> trimesh.Trimesh:
    """At least one face, faces that name existing vertices, finite vertices, non-zero extent and area."""
    if len(mesh.faces) == 0:
        raise InputError(f"{path}: the mesh has no faces; export a triangle mesh")
    faces = np.asarray(mesh.faces)
    outside = (faces < 0) | (faces >= len(mesh.vertices))  # trimesh reads such faces as given (process=False)
    if outside.any():
        row = int(np.argmax(outside.any(axis=1)))
        raise InputError(f"{path}: face {row} refers to vertex {int(faces[row][outside[row]][0])}, but the mesh has "
                         f"{len(mesh.vertices)} vertices (0 to {len(mesh.vertices) - 1}); the file is corrupt: "
                         "re-export it")
    validate_points(np.asarray(mesh.vertices), where=str(path), min_points=3)
    if not mesh.area > 0:
        raise InputError(
            f"{path}: the mesh has zero surface area (degenerate triangles); re-export a proper surface"
        )
    return mesh
