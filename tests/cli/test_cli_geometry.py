"""`cad-recode exec | points | compare | shapes`, run for real (sandbox included)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cad_recode.cli import main
from cad_recode.geometry.loaders import load_geometry
from cad_recode.geometry.normalize import Transform
from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program

HOSTILE = "import os\nos.system('touch /tmp/cad_recode_pwned')\n"
CUBE_SIDE = 80.0  # the built-in cube: 80 mm, centred at the origin


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def cube_exports(tmp_path_factory) -> dict:
    """The built-in cube exported once to STL and once to STEP through `cad-recode exec`."""
    folder = tmp_path_factory.mktemp("exports")
    program = folder / "cube.py"
    program.write_text(example_program("cube"))
    runs = {}
    for suffix in (".stl", ".step"):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["exec", str(program), "--output", str(folder / f"cube{suffix}")])
        runs[suffix] = (code, out.getvalue(), err.getvalue())
    return {"folder": folder, "program": program, "runs": runs}


# ----------------------------------------------------------------- shapes


def test_shapes_lists_every_built_in_shape(capsys):
    code, out, _ = run(capsys, "shapes")
    assert code == 0 and out.split() == list(EXAMPLE_SHAPES)
    assert run(capsys, "shapes", "list")[1] == out


def test_shapes_prints_and_writes_a_program(capsys, tmp_path):
    code, out, _ = run(capsys, "shapes", "flange")
    assert code == 0 and out == EXAMPLE_SHAPES["flange"]
    target = tmp_path / "sub" / "flange.py"
    assert run(capsys, "shapes", "flange", "--output", target)[0] == 0
    assert target.read_text() == EXAMPLE_SHAPES["flange"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["shapes", "cubee"], "did you mean 'cube'"),
        (["shapes", "list", "--output", "x.py"], "--output needs a shape NAME"),
        (["shapes", "cube", "--output", "cube.txt"], "must end in .py"),
    ],
)
def test_shapes_bad_usage_is_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in one_line(err)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- exec


def test_exec_exports_stl_and_step_that_load_back(cube_exports):
    folder = cube_exports["folder"]
    for suffix, (code, out, err) in cube_exports["runs"].items():
        assert code == 0 and err == "", err
        assert out.startswith(
            "ok: 6 faces, volume 512000, bbox [-40, -40, -40] .. [40, 40, 40] (size 80x80x80), "
        )
        assert out.rstrip().endswith(f" s; wrote {folder / ('cube' + suffix)}")
    mesh = trimesh.load(folder / "cube.stl")
    assert mesh.is_watertight and mesh.volume == pytest.approx(CUBE_SIDE**3, rel=1e-6)
    np.testing.assert_allclose(mesh.bounds, [[-40, -40, -40], [40, 40, 40]], atol=1e-6)
    solid = load_geometry(folder / "cube.step")
    assert solid.volume == pytest.approx(CUBE_SIDE**3, rel=1e-6)
    assert sorted(p.name for p in folder.iterdir()) == ["cube.py", "cube.step", "cube.stl"]


def test_exec_of_a_program_that_fails_at_run_time_exits_1_and_writes_nothing(capsys, tmp_path):
    program = tmp_path / "broken.py"
    program.write_text("import cadquery as cq\nr=cq.Workplane('XY').box(10,10,10).faces('>Z').fillet(50)\n")
    code, out, err = run(capsys, "exec", program, "--output", tmp_path / "broken.step")
    assert code == 1 and out == ""
    assert one_line(err).startswith(f"cad-recode exec: error: {program}: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.py"]


def test_exec_gives_a_part_someone_wrote_30_s_unless_told_otherwise(capsys, tmp_path):
    """The protocol's 3 s judge the model's programs; a script of one's own may take longer (30 million additions:
    2.5 s on the 2-core CI machines, at least 0.5 s on a fast one)."""
    program = tmp_path / "slow.py"
    program.write_text("import cadquery as cq\nn = 0\nfor i in range(30_000_000):\n    n += 1\n"
                       "result = cq.Workplane().box(2, 2, 2)\n")
    code, out, err = run(capsys, "exec", program, "--timeout", "0.2")
    assert code == 1 and "timeout: program exceeded the 0.2 s timeout" in one_line(err)
    code, out, err = run(capsys, "exec", program)
    assert code == 0 and out.startswith("ok: 6 faces, volume 8,")


def test_exec_refuses_a_hostile_program_before_it_runs(capsys, tmp_path):
    program = tmp_path / "evil.py"
    program.write_text(HOSTILE)
    code, out, err = run(capsys, "exec", program, "--output", tmp_path / "evil.stl")
    assert code == 1 and out == ""
    assert one_line(err).startswith(  # exec runs ordinary CadQuery (the cadquery profile), but never os
        f"cad-recode exec: error: {program}: rejected: line 1: import of 'os' is not allowed (only cadquery, math,"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.py"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["exec", "missing.py"], "missing.py: no such file"),
        (["exec", "shape.txt"], "must end in .py"),
        (["exec", "cube.py", "--output", "cube.obj"], "--output must end in .stl or .step or .stp"),
        (["exec", "cube.py", "--timeout", "0"], "--timeout must be a positive"),
    ],
)
def test_exec_bad_usage_is_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cube.py").write_text(example_program("cube"))
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.py"]


def test_console_script_runs_a_program_and_exports_it(tmp_path):
    program = tmp_path / "tube.py"
    program.write_text(example_program("tube"))
    script = Path(sys.executable).with_name("cad-recode")
    done = subprocess.run(
        [str(script), "exec", str(program), "--output", str(tmp_path / "tube.stl")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("ok: 4 faces, volume ") and "(size 60x60x100)" in done.stdout
    # Outer radius 30, inner 22, length 100.
    assert trimesh.load(tmp_path / "tube.stl").volume == pytest.approx(np.pi * (30**2 - 22**2) * 100, rel=2e-3)


# ----------------------------------------------------------------- points


def test_points_of_an_stl_are_256_normalized_points_with_their_transform(capsys, tmp_path):
    box = trimesh.creation.box((40.0, 20.0, 10.0))
    box.apply_translation((100.0, -50.0, 5.0))
    stl, npy = tmp_path / "part.stl", tmp_path / "out" / "points.npy"
    box.export(stl)
    code, out, _ = run(capsys, "points", stl, "--output", npy, "--seed", 3)
    assert code == 0
    points = np.load(npy)
    assert points.shape == (256, 3) and points.dtype == np.float32
    assert np.abs(points).max() <= 1.0 + 1e-6
    assert np.abs(points[:, 0]).max() == pytest.approx(1.0, abs=0.05)  # FPS reaches the long ends
    transform_line = next(line for line in out.splitlines() if line.startswith("transform"))
    transform = Transform.from_dict(json.loads(transform_line.split(": ", 1)[1]))
    np.testing.assert_allclose(transform.center, [100.0, -50.0, 5.0], atol=1e-9)
    assert transform.scale == pytest.approx(2 / 40.0)
    back = transform.invert(points)
    assert np.all(back >= box.bounds[0] - 1e-3) and np.all(back <= box.bounds[1] + 1e-3)
    # Same seed, same points; the default output lands beside the input.
    assert run(capsys, "points", stl, "--seed", 3)[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "part.stl.points.npy"), points)


def test_points_with_a_custom_count(capsys, tmp_path):
    cloud = np.random.default_rng(0).normal(size=(5000, 3))
    src = tmp_path / "scan.npy"
    np.save(src, cloud)
    assert run(capsys, "points", src, "--n", 64, "--output", tmp_path / "p.npy")[0] == 0
    assert np.load(tmp_path / "p.npy").shape == (64, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["points", "missing.stl"], "missing.stl: no such file"),
        (["points", "part.docx"], "unsupported file type '.docx'"),
        (["points", "part.stl", "--output", "points.txt"], "--output must end in .npy"),
        (["points", "part.stl", "--n", "0"], "--n must be a positive"),
    ],
)
def test_points_bad_input_is_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    trimesh.creation.box((1.0, 1.0, 1.0)).export(tmp_path / "part.stl")
    (tmp_path / "part.docx").write_text("not geometry")
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.docx", "part.stl"]


# ----------------------------------------------------------------- compare


def test_compare_a_program_with_its_own_stl(capsys, cube_exports):
    code, out, _ = run(capsys, "compare", cube_exports["program"], cube_exports["folder"] / "cube.stl", "--json")
    assert code == 0
    same = json.loads(out)
    # Same surface, possibly other triangles: CD within the cube's sampling floor (~0.47).
    assert same["cd"] < 0.7 and same["iou"] == pytest.approx(1.0, abs=1e-6) and same["iou_error"] == ""


def test_compare_a_step_file_with_a_mesh(capsys, tmp_path, cube_exports):
    cylinder = trimesh.creation.cylinder(radius=40.0, height=100.0, sections=128)
    cylinder.export(tmp_path / "cylinder.stl")
    code, out, _ = run(capsys, "compare", cube_exports["folder"] / "cube.step", tmp_path / "cylinder.stl")
    assert code == 0
    cd_line, iou_line = out.splitlines()
    assert cd_line.startswith("CD x10^3: ") and float(cd_line.split(": ")[1]) > 5.0
    # Normalized, the cylinder has radius 0.4 and height 1 and sits inside the unit cube.
    assert iou_line.startswith("IoU: ")
    assert float(iou_line.split(": ")[1]) == pytest.approx(np.pi * 0.4**2, abs=0.002)


def test_compare_reports_cd_and_why_iou_is_undefined_for_an_open_mesh(capsys, tmp_path):
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    box.export(tmp_path / "box.stl")
    trimesh.Trimesh(box.vertices, box.faces[:-2]).export(tmp_path / "open.stl")
    code, out, _ = run(capsys, "compare", tmp_path / "box.stl", tmp_path / "open.stl")
    assert code == 0
    assert out.splitlines()[1].startswith("IoU: n/a (mesh B is not a closed")
    code, out, _ = run(capsys, "compare", tmp_path / "box.stl", tmp_path / "open.stl", "--json")
    assert code == 0 and "NaN" not in out  # bare NaN is not JSON: an undefined IoU is null
    result = json.loads(out, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert result["iou"] is None and result["iou_error"].startswith("mesh B is not a closed") and result["cd"] > 0


@pytest.mark.parametrize(
    "argv, message, code",
    [
        (["compare", "cube.py", "missing.stl"], "missing.stl: no such file", 2),
        (["compare", "cube.py", "part.docx"], "unsupported file type '.docx'", 2),
        (["compare", "cube.py", "scan.npy"], "is a point cloud", 2),
        (["compare", "evil.py", "cube.py"], "evil.py: rejected", 1),
    ],
)
def test_compare_bad_input_is_one_line(capsys, tmp_path, monkeypatch, argv, message, code):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cube.py").write_text(example_program("cube"))
    (tmp_path / "evil.py").write_text(HOSTILE)
    (tmp_path / "part.docx").write_text("not geometry")
    np.save(tmp_path / "scan.npy", np.random.default_rng(0).normal(size=(100, 3)))
    got, out, err = run(capsys, *argv)
    assert got == code and out == "" and message in one_line(err)
