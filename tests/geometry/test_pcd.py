"""PCD files as PCL, ROS and Open3D write them: ascii and binary, padded records, organized clouds with holes."""

from __future__ import annotations

import numpy as np
import pytest

from cad_recode.errors import InputError
from cad_recode.geometry.loaders import load_geometry

POINTS = np.random.default_rng(0).uniform(-40, 40, (300, 3)).astype(np.float32)


def _header(data: str, n: int, fields="x y z rgb", size="4 4 4 4", kind="F F F U", count="1 1 1 1",
            width=None, height=1) -> bytes:
    return (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {fields}\nSIZE {size}\nTYPE {kind}\n"
            f"COUNT {count}\nWIDTH {width or n}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
            f"DATA {data}\n").encode()


def _records(points: np.ndarray, dtype) -> bytes:
    table = np.zeros(len(points), dtype=dtype)
    for i, axis in enumerate("xyz"):
        table[axis] = points[:, i]
    return table.tobytes()


def test_ascii_and_binary_read_the_same_points(tmp_path):
    ascii_file, binary_file = tmp_path / "scan_ascii.pcd", tmp_path / "scan_binary.pcd"
    colours = np.arange(len(POINTS))
    ascii_file.write_bytes(_header("ascii", len(POINTS)) + "".join(
        f"{x!r} {y!r} {z!r} {c}\n" for (x, y, z), c in zip(POINTS.tolist(), colours)).encode())
    binary_file.write_bytes(_header("binary", len(POINTS)) +
                            _records(POINTS, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")]))
    for path in (ascii_file, binary_file):
        assert np.array_equal(load_geometry(path), POINTS.astype(np.float64)), path.name


def test_padding_fields_counts_and_doubles_are_skipped_to_x_y_z(tmp_path):
    """Normals first, x y z as doubles, a 4-byte pad named '_' and a 3-value field between them."""
    dtype = [("normal_x", "<f4"), ("_", "u1", (4,)), ("x", "<f8"), ("y", "<f8"), ("h", "<f4", (3,)), ("z", "<f8")]
    path = tmp_path / "padded.pcd"
    path.write_bytes(_header("binary", len(POINTS), fields="normal_x _ x y h z", size="4 1 8 8 4 8",
                             kind="F U F F F F", count="1 4 1 1 3 1") + _records(POINTS, dtype))
    assert np.array_equal(load_geometry(path), POINTS.astype(np.float64))
    text = tmp_path / "padded_ascii.pcd"
    text.write_bytes(_header("ascii", 3, fields="normal_x h x y z", size="4 4 4 4 4", kind="F F F F F",
                             count="1 3 1 1 1") + b"0.1 7 7 7 1 2 3\n0.2 7 7 7 4 5 6\n0.3 7 7 7 0 0 1\n")
    assert np.array_equal(load_geometry(text), [[1, 2, 3], [4, 5, 6], [0, 0, 1]])


def test_an_organized_cloud_s_holes_are_dropped(tmp_path):
    """A depth camera's 20 x 15 grid: the pixels it saw nothing at are NaN, and only they are dropped."""
    grid = POINTS.copy()
    grid[::7] = np.nan
    path = tmp_path / "camera.pcd"
    path.write_bytes(_header("binary", len(grid), fields="x y z", size="4 4 4", kind="F F F", count="1 1 1",
                             width=20, height=15) + grid.tobytes())
    kept = load_geometry(path)
    assert np.array_equal(kept, POINTS[np.arange(len(POINTS)) % 7 != 0].astype(np.float64))


@pytest.mark.parametrize("name, content, message", [
    ("packed.pcd", _header("binary_compressed", 300) + b"\x00" * 64,
     "is a compressed PCD (DATA binary_compressed), which is not read here; re-save it uncompressed"),
    ("cut.pcd", _header("binary", 300) + b"\x00" * 1000,
     "its header says 300 points (4800 bytes) but the file holds 1000 bytes of them; it looks truncated"),
    ("flat.pcd", _header("ascii", 2, fields="x y rgb", size="4 4 4", kind="F F U", count="1 1 1") + b"1 2 3\n",
     "its FIELDS ('x y rgb') have no z; a point cloud needs x y z"),
    ("words.pcd", _header("ascii", 2, fields="x y z", size="4 4 4", kind="F F F", count="1 1 1")
     + b"1 2 3\n4 five 6\n", "line 13 is not numbers: '4 five 6'"),  # lines counted as in the file
    ("short.pcd", _header("ascii", 2, fields="x y z", size="4 4 4", kind="F F F", count="1 1 1") + b"1 2 3\n4 5\n",
     "line 13 has 2 values but line 12 has 3; every row needs the same columns"),
    ("wide.pcd", _header("ascii", 2, fields="x y z", size="4 4 4", kind="F F F", count="1 1 1") + b"1 2 3 4\n5 6 7 8\n",
     "its ascii rows have 4 values but its fields take 3; re-export it"),
    ("sizes.pcd", _header("binary", 2, size="4 4 4", count="1 1 1 1"),
     "its PCD header is broken (FIELDS, SIZE, TYPE and COUNT differ in length)"),
    ("odd.pcd", _header("binary", 2, kind="F F F Q"), "its PCD header is broken"),
    ("notpcd.pcd", b"hello\nworld\n", "no 'DATA' line in its first 64 KiB; this is not a PCD file"),
])
def test_a_bad_pcd_gets_one_line_saying_what_to_fix(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        load_geometry(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)
