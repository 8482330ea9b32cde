"""Every loader on good files and on each kind of broken file (messages asserted)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cad_recode.errors import InputError
from cad_recode.geometry.loaders import (
    MESH_SUFFIXES,
    POINT_CLOUD_SUFFIXES,
    STEP_SUFFIXES,
    load_geometry,
    load_model_points,
)
from cad_recode.geometry.sampling import to_model_points

RNG = np.random.default_rng(0)
CLOUD = RNG.uniform(-5, 5, size=(40, 3))
NORMALS = RNG.normal(size=(40, 3))


@pytest.fixture
def box() -> trimesh.Trimesh:
    return trimesh.creation.box(extents=[2.0, 3.0, 4.0]).apply_translation([10.0, 0.0, -1.0])


def test_suffix_lists():
    assert set(POINT_CLOUD_SUFFIXES) >= {".npy", ".npz", ".ply", ".xyz", ".txt", ".pts"}
    assert set(MESH_SUFFIXES) >= {".stl", ".obj", ".ply", ".off", ".glb"}
    assert set(STEP_SUFFIXES) == {".step", ".stp"}


# --- good point clouds -----------------------------------------------------------------------


@pytest.mark.parametrize("columns", [3, 4, 6, 9, 12])
def test_npy(tmp_path, columns):
    """x y z, then intensity, normals, colours ...: what scanners write beside the points is dropped."""
    path = tmp_path / "scan.npy"
    np.save(path, np.hstack([CLOUD, NORMALS, 255 * np.abs(NORMALS), NORMALS])[:, :columns])
    out = load_geometry(path)
    assert out.dtype == np.float64 and out.shape == (40, 3)
    np.testing.assert_array_equal(out, CLOUD)


def test_text_cloud_with_colours_and_intensity(tmp_path):
    path = tmp_path / "scan.txt"
    path.write_text("".join(f"{x} {y} {z} 200 30 40 0.7\n" for x, y, z in CLOUD))
    np.testing.assert_allclose(load_geometry(path), CLOUD)


def test_npy_float32_and_upper_case_suffix(tmp_path):
    path = tmp_path / "SCAN.NPY"
    np.save(tmp_path / "SCAN.npy", CLOUD.astype(np.float32))
    (tmp_path / "SCAN.npy").rename(path)
    np.testing.assert_allclose(load_geometry(path), CLOUD, rtol=1e-6)


@pytest.mark.parametrize("key", ["points", "xyz", "pc"])
def test_npz_named_array_is_picked(tmp_path, key):
    path = tmp_path / "scan.npz"
    np.savez(path, labels=np.arange(40), **{key: CLOUD})
    np.testing.assert_array_equal(load_geometry(path), CLOUD)


def test_npz_single_array_any_name(tmp_path):
    path = tmp_path / "scan.npz"
    np.savez_compressed(path, whatever=np.hstack([CLOUD, NORMALS]))
    np.testing.assert_array_equal(load_geometry(path), CLOUD)


def test_ply_cloud(tmp_path):
    path = tmp_path / "scan.ply"
    trimesh.PointCloud(CLOUD).export(path)
    out = load_geometry(path)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, CLOUD, rtol=1e-6)


def test_xyz_with_comments_and_blank_lines(tmp_path):
    path = tmp_path / "scan.xyz"
    lines = ["# exported by a scanner", "// units: mm", ""]
    lines += [f"{x} {y}\t{z}   # point {i}" for i, (x, y, z) in enumerate(CLOUD)]
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(load_geometry(path), CLOUD)


def test_txt_comma_separated_with_normals(tmp_path):
    path = tmp_path / "scan.txt"
    rows = np.hstack([CLOUD, NORMALS])
    path.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in rows))
    np.testing.assert_array_equal(load_geometry(path), CLOUD)


def test_pts_with_count_line(tmp_path):
    path = tmp_path / "scan.pts"
    path.write_text("40\n" + "\n".join(" ".join(repr(float(v)) for v in row) for row in CLOUD))
    np.testing.assert_array_equal(load_geometry(path), CLOUD)


# --- good meshes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".stl", ".obj", ".ply", ".off", ".glb"])
def test_mesh_formats(tmp_path, box, suffix):
    path = tmp_path / f"part{suffix}"
    box.export(path)
    out = load_geometry(path)
    assert isinstance(out, trimesh.Trimesh)
    assert len(out.faces) == 12
    np.testing.assert_allclose(out.bounds, box.bounds, atol=1e-6)
    assert out.area == pytest.approx(box.area)


def test_glb_scene_is_concatenated(tmp_path, box):
    path = tmp_path / "assembly.glb"
    other = box.copy().apply_translation([0.0, 10.0, 0.0])
    trimesh.Scene([box, other]).export(path)
    out = load_geometry(path)
    assert isinstance(out, trimesh.Trimesh) and len(out.faces) == 24
    np.testing.assert_allclose(out.bounds, [box.bounds[0], other.bounds[1]], atol=1e-6)


def test_step(tmp_path):
    import cadquery as cq

    path = tmp_path / "part.step"
    cq.exporters.export(cq.Workplane("XY").box(20, 30, 40).faces(">Z").hole(10), str(path))
    out = load_geometry(path)
    assert isinstance(out, trimesh.Trimesh)
    np.testing.assert_allclose(out.bounds, [[-10, -15, -20], [10, 15, 20]], atol=1e-6)
    assert out.is_watertight
    # Tessellated finely enough that the volume is close to the exact one.
    exact = 20 * 30 * 40 - np.pi * 5**2 * 40
    assert out.volume == pytest.approx(exact, rel=5e-3)
    (tmp_path / "part.STP").write_bytes(path.read_bytes())
    assert len(load_geometry(tmp_path / "part.STP").faces) == len(out.faces)


def test_step_without_shapes(tmp_path):
    import cadquery as cq

    full = tmp_path / "full.step"
    cq.exporters.export(cq.Workplane("XY").box(1, 1, 1), str(full))
    header = full.read_text().split("DATA;")[0]
    path = tmp_path / "hollow.step"
    path.write_text(header + "DATA;\nENDSEC;\nEND-ISO-10303-21;\n")
    assert "the STEP file holds no shapes; export the part as a solid" in _error(path)


def step_file(tmp_path):
    import cadquery as cq

    path = tmp_path / "part.step"
    cq.exporters.export(cq.Workplane("XY").box(20, 30, 40), str(path))
    return path


def fake_step_reader(then: str):
    """A StepReader (confined like the real one) whose process says it is ready, then runs ``then`` (Python)
    on the first request."""
    from cad_recode.geometry._step_reader import StepReader

    script = ("import os, signal, sys, time\nos.write(int(sys.argv[1]), b'{\"ready\": true}\\n')\n"
              f"sys.stdin.readline()\n{then}\n")
    return StepReader(["-c", script])


def test_a_step_read_that_runs_too_long_is_stopped_with_one_clear_error(tmp_path, monkeypatch):
    from cad_recode.geometry import loaders

    path = step_file(tmp_path)
    monkeypatch.setattr(loaders, "_step_reader", fake_step_reader("time.sleep(60)"))  # OCCT stuck in a loop
    monkeypatch.setattr(loaders, "STEP_READ_SECONDS", 1.0)
    started = time.monotonic()
    assert "reading the STEP file took over 1 s and was stopped; export the part alone" in _error(path)
    assert time.monotonic() - started < 10.0


def test_a_step_reader_that_crashes_is_one_clear_error_and_the_caller_lives_on(tmp_path, monkeypatch):
    from cad_recode.geometry import loaders

    path = step_file(tmp_path)
    monkeypatch.setattr(loaders, "_step_reader", fake_step_reader("os.kill(os.getpid(), signal.SIGSEGV)"))
    assert f"{path}: the STEP reader stopped (signal {int(signal.SIGSEGV)}); the file may be damaged" in _error(path)
    monkeypatch.undo()
    assert len(load_geometry(path).faces) == 12  # the next file reads as usual


def test_step_files_are_read_by_one_process_that_stays_and_errors_leave_it_serving(tmp_path):
    from cad_recode.geometry import loaders

    path = step_file(tmp_path)
    load_geometry(path)
    reader = loaders._step_reader._process.pid
    garbled = tmp_path / "garbled.step"
    garbled.write_bytes(b"\x00not a STEP file\n" * 4)
    assert "could not be read as a STEP file" in _error(garbled)
    assert len(load_geometry(path).faces) == 12
    assert loaders._step_reader._process.pid == reader and reader != os.getpid()


def test_without_the_os_layer_the_reader_runs_unconfined_and_removes_its_scratch_when_closed(tmp_path):
    from cad_recode.geometry._step_reader import StepReader

    reader = StepReader(confine=False)
    try:
        vertices, faces = reader.read(step_file(tmp_path), timeout=120)
        scratch = Path(reader._host_scratch)
        assert len(faces) == 12 and scratch.is_dir() and not any(scratch.iterdir())  # each file removed once read
    finally:
        reader.close()
    assert not scratch.exists()


def test_load_model_points(tmp_path, box):
    path = tmp_path / "part.stl"
    box.export(path)
    mp = load_model_points(path, n_points=64, seed=3)
    assert mp.points.shape == (64, 3) and mp.points.dtype == np.float32
    expected = to_model_points(load_geometry(path), n_points=64, seed=3)
    np.testing.assert_array_equal(mp.points, expected.points)
    np.testing.assert_allclose(mp.transform.center, [10.0, 0.0, -1.0])
    assert mp.transform.scale == pytest.approx(0.5)


# --- broken inputs: one clear error each -------------------------------------------------------------


def _error(path) -> str:
    with pytest.raises(InputError) as info:
        load_geometry(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message  # one line, names the file
    return message


def _save_npy(array):
    return lambda path: np.save(path, array)


def _nan_cloud(bad):
    cloud = CLOUD.copy()
    cloud[7, 1] = bad
    return cloud


def _nan_mesh(path):
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    vertices = box.vertices.copy()
    vertices[0] = np.nan
    trimesh.Trimesh(vertices, box.faces, process=False).export(path)


def _npz_two_arrays(path):
    np.savez(path, a=CLOUD, b=CLOUD)


def _truncated_npz(path):
    np.savez(path, points=CLOUD)
    path.write_bytes(path.read_bytes()[:100])


def _truncated(suffix, keep):
    """A box exported as ``suffix``, cut at ``keep`` of its length (a copy or download that stopped)."""
    def make(path):
        trimesh.creation.box(extents=(2.0, 1.0, 0.5)).export(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return make


_PLY_HEAD = ("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
             "element face 2\nproperty list uchar int vertex_indices\nend_header\n")


def _write(content):
    if isinstance(content, bytes):
        return lambda path: path.write_bytes(content)
    return lambda path: path.write_text(content)


# (file name, how to make it, what the one-line error must say)
BAD_FILES = [
    ("nope.npy", None, "no such file; check the path"),
    ("dir.ply", lambda path: path.mkdir(), "not a file"),
    *[(f"empty{suffix}", _write(b""), "the file is empty (0 bytes)") for suffix in (".npy", ".xyz", ".stl", ".step")],
    *[("scan.npy", _save_npy(_nan_cloud(bad)), "1 of 40 points contain NaN or inf (first at row 7); remove or repair")
      for bad in (np.nan, np.inf, -np.inf)],
    ("scan.xyz", _write("0 0 0\n1 1 1\nnan 2 2\n3 0 1\n"), "contain NaN or inf (first at row 2)"),
    ("part.obj", _nan_mesh, "contain NaN or inf"),
    *[("scan.npy", _save_npy(np.zeros(shape)), f"got shape {shape}; save the points as an N x 3 array")
      for shape in [(40, 2), (40, 13), (40,), (2, 20, 3)]],
    ("scan.txt", _write("1 2\n5 6\n9 10\n"), "got shape (3, 2)"),
    ("scan.xyz", _write("0 0 0\n1 1 1\n2 2\n"), "line 3 has 2 values but line 1 has 3"),
    ("scan.npy", _save_npy(CLOUD[:2]), "only 2 point(s), at least 3 are needed"),
    ("scan.xyz", _write("1 2 3\n" * 10), "all points coincide (zero extent)"),
    # past ~1e154 squared distances overflow: the neighbour search crashed with an IndexError
    ("scan.xyz", _write("0 0 0\n1e200 0 0\n" + "1 2 3\n2 3 1\n" * 60),
     "1 of 122 points lie beyond ±1e+12 (first at row 1: 1e+200 0 0)"),
    ("flat.off", _write("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n"), "zero surface area"),
    ("scan.xyz", _write("# nothing here\n\n"), "has no data rows"),
    ("scan.txt", _write("a b c\n0 0 0\n1 1 1\n2 0 1\n"),
     "the header ('a b c') names no x, y and z columns; name the point's columns x y z, or remove the header"),
    ("scan.csv", _write("x,y,z\n0,0,0,7\n1,1,1,7\n2,0,1,7\n"),
     "the header names 3 columns ('x y z') but the rows have 4 values; name every column"),
    ("scan.txt", _write("x y z\n0 0 0\nend\n2 0 1\n"),
     "line 3 is not numbers: 'end'; write 'x y z' numbers a line and start comments with #"),
    ("cells.csv", _write("1;;3\n2;5;4\n5;0;1\n"), "line 1 has an empty cell ('1;;3'); fill every cell"),
    ("scan.npz", _npz_two_arrays, "holds 2 arrays ('a', 'b') and none is named points / xyz / pc"),
    ("many.npz", lambda path: np.savez(path, **{f"a{i}": CLOUD for i in range(20)}),
     "holds 20 arrays ('a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7' and 12 more) and none is named"),
    ("scan.npz", _truncated_npz, "could not be read as a NumPy .npz file"),
    ("scan.xyz", _write(b"\xff\xfe\x00garbage"), "could not be read as a text file of x y z rows"),
    ("cut.stl", _truncated(".stl", 0.5),
     "not a complete binary STL: its header says 12 triangles (684 bytes) but the file has 342 bytes"),
    ("cut_in_vertices.obj", _truncated(".obj", 0.5), "ends in the middle of a line ("),
    ("cut_in_faces.obj", _truncated(".obj", 0.93), "so it looks truncated; re-export it"),
    *[(f"garbled{suffix}", _write("hello world\nthis is not a mesh\n"),
       "no mesh or points could be read from it (empty or garbled)") for suffix in (".stl", ".obj")],
    # a fifth review's files: faces naming vertices that do not exist crashed every command with a traceback
    ("oob.ply", _write(_PLY_HEAD + "0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 999999\n"),
     "face 1 refers to vertex 999999, but the mesh has 4 vertices (0 to 3); the file is corrupt"),
    ("negative.ply", _write(_PLY_HEAD + "0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 -7 3\n"),
     "face 1 refers to vertex -7, but the mesh has 4 vertices"),
    # commas that splitting on would misread, every row the same way
    ("comma.xyz", _write("0,5 0,1 0,2\n1,5 0,1 0,2\n0,5 1,1 0,2\n"),
     "line 1 has values with decimal commas ('0,5 0,1 0,2'); write decimal points (0.5, not 0,5)"),
    ("cells.csv", _write("1,,3,9\n2,,4,9\n5,,1,9\n"),
     "line 1 has an empty cell ('1,,3,9'); fill every cell"),
    ("binary.obj", _write(b"\x00\x01\x02garbage\xff" * 30 + b"\n"), "is binary data, not a text OBJ"),
    ("text.npy", _write("0 0 0\n1 1 1\n2 0 1\n"), "is not a NumPy .npy file (it does not start with NumPy's header)"),
    ("denormal.xyz", _write("0 0 0\n1e-320 0 0\n0 1e-320 0\n"), "extent 9.99989e-321 is too small to scale"),
]


@pytest.mark.parametrize("name, make, message", BAD_FILES, ids=[f"{n}:{m[:30]}" for n, _, m in BAD_FILES])
def test_bad_files_get_one_line_naming_the_file_and_the_fix(tmp_path, name, make, message):
    path = tmp_path / name
    if make is not None:
        make(path)
    assert message in _error(path)


def test_unsupported_extension_lists_supported(tmp_path):
    path = tmp_path / "part.docx"
    path.write_text("hello")
    message = _error(path)
    assert "unsupported file type '.docx'" in message
    for suffix in (".npy", ".npz", ".ply", ".xyz", ".txt", ".pts", ".stl", ".obj", ".off", ".glb", ".step", ".stp"):
        assert suffix in message
    assert "(no extension)" in _error(tmp_path / "README")


@pytest.mark.parametrize(
    "suffix, what",
    [
        (".ply", "a .ply mesh"),
        (".glb", "a .glb mesh"),
        (".off", "a .off mesh"),
        (".step", "a STEP file"),
    ],
)
def test_garbled_files(tmp_path, suffix, what):
    path = tmp_path / f"garbled{suffix}"
    path.write_bytes(b"\x00\x93garbage bytes, not a real file\n" * 8)
    message = _error(path)
    assert f"could not be read as {what}" in message
    assert "check the file is not truncated or garbled" in message


def test_an_npz_array_that_would_unpack_past_the_cap_is_refused_before_unpacking(tmp_path, monkeypatch):
    """A 4.6 MB .npz of zeros unpacked to 5.4 GB; the cap is read from the archive's directory first."""
    from cad_recode.geometry import loaders

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, points=np.zeros((200_000, 3)))  # 4.8 MB unpacked, a few kB packed
    monkeypatch.setattr(loaders, "MAX_ARRAY_BYTES", 1 << 20)

    with pytest.raises(InputError, match=r"bomb\.npz: its array 'points' unpacks to 0\.0 GiB, over the 0 GiB"):
        load_geometry(path)
    monkeypatch.setattr(loaders, "MAX_ARRAY_BYTES", 8 << 20)
    np.savez_compressed(path, points=CLOUD)
    assert load_geometry(path).shape == (40, 3)


def test_a_mesh_s_texture_is_never_decoded(tmp_path, box):
    """Only geometry is used: a 13000 x 13000 texture in a 1.3 MB .glb took 3 GB to decode."""
    from PIL import Image

    textured = box.copy()
    textured.visual = trimesh.visual.TextureVisuals(uv=np.zeros((len(box.vertices), 2)),
                                                    image=Image.new("RGB", (64, 64), "red"))
    path = tmp_path / "textured.glb"
    textured.export(path)

    mesh = load_geometry(path)

    assert mesh.visual.kind != "texture"
    assert np.allclose(np.sort(mesh.vertices, axis=0), np.sort(box.vertices, axis=0))


def test_a_file_name_s_control_characters_are_escaped_in_messages(tmp_path, capsys):
    from cad_recode.cli import main

    path = tmp_path / "a\x1b]0;PWNED\x07\nError: forged.stl"
    path.write_bytes(b"")

    with pytest.raises(InputError) as caught:
        load_geometry(f"{tmp_path}/./{path.name}")  # spelt otherwise than the messages spell it
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)
    assert "a\\x1b]0;PWNED\\x07\\x0aError: forged.stl: the file is empty" in str(caught.value)
    assert main(["points", str(path), "--output", str(tmp_path / "p.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\\x0aError: forged.stl: the file is empty" in err  # one line, however the name reads


@pytest.mark.parametrize("text, rows", [
    ("3\r\n1,2,3\r\n4 5 6 // a comment\r\n\r\n7\t8\t9\r\n", [[1, 2, 3], [4, 5, 6], [7, 8, 9]]),  # a .pts count, CRLF
    ("1 2 3\r4 5 6\r0 0 1\r", [[1, 2, 3], [4, 5, 6], [0, 0, 1]]),  # old Mac line ends
    ("1_0 2 3\n4 5 6e0\n0 0 1\n", [[10, 2, 3], [4, 5, 6], [0, 0, 1]]),  # a spelling NumPy does not read
    ("\ufeff1, 2, 3\n4,5,6,\n0 ,0, 1\n", [[1, 2, 3], [4, 5, 6], [0, 0, 1]]),  # Notepad's byte-order mark; ", "
])
def test_text_clouds_in_every_layout_read_the_same_numbers(tmp_path, text, rows):
    path = tmp_path / "scan.pts"
    path.write_bytes(text.encode())
    assert np.array_equal(load_geometry(path), np.array(rows, dtype=np.float64))


@pytest.mark.parametrize("name, text", [
    ("scan.csv", "x,y,z,nx,ny,nz\n1,2,3,0,0,1\n4,5,6,0,1,0\n0,0,1,1,0,0\n"),  # a header naming the columns
    ("scan.csv", '"NX";"NY";"NZ";"X";"Y";"Z"\n0;0;1;1;2;3\n0;1;0;4;5;6\n1;0;0;0;0;1\n'),  # quoted, any order
    ("scan.txt", "1,0;2;3,0\n4;5;6,00\n0;0;1\n"),  # a spreadsheet's ';' separators and decimal commas
    ("scan.asc", "//X Y Z R G B\n1 2 3 255 0 0\n4 5 6 0 255 0\n0 0 1 0 0 255\n"),  # a scanner's ASCII export
])
def test_text_clouds_with_a_header_or_semicolons_read_x_y_z(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert np.array_equal(load_geometry(path), np.array([[1, 2, 3], [4, 5, 6], [0, 0, 1]], dtype=np.float64))


def test_a_value_separated_by_a_non_ascii_space_is_reported_with_its_line(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_text("0 0 0\n1\u00a01 1\n2 2 2\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2 is not numbers"):
        load_geometry(path)


def test_a_reader_s_unforeseen_failure_costs_only_its_own_shape(tmp_path, monkeypatch, box):
    """Evaluation loads its ground truths 32 at a time: one reader's bug must not lose the other 31."""
    from cad_recode.geometry import loaders
    from cad_recode.geometry.load_shape import load_shapes

    read = loaders.load_geometry

    def read_or_break(path):
        if Path(path).name == "b.stl":
            raise IndexError("index 9 is out of bounds")
        return read(path)

    monkeypatch.setattr(loaders, "load_geometry", read_or_break)
    for name in ("a.stl", "b.stl"):
        box.export(tmp_path / name)
    a, b = load_shapes([tmp_path / "a.stl", tmp_path / "b.stl"], sandbox=None)
    assert isinstance(a, trimesh.Trimesh) and a.volume == pytest.approx(24.0)
    assert isinstance(b, InputError)
    assert str(b) == (f"{tmp_path / 'b.stl'}: failed unexpectedly (IndexError: index 9 is out of bounds); "
                      "this is a bug: please report it with the file")
    with pytest.raises(InputError, match="failed unexpectedly"):
        load_shapes([tmp_path / "b.stl"], sandbox=None, strict=True)
