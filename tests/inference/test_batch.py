"""Batch inference keeps its results: each input written as it finishes, failures in summary.csv, exit 1."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/infer_artifacts.py
import infer_artifacts as art  # noqa: E402

from cad_recode.cli import main  # noqa: E402
from cad_recode.inference.batch import SUMMARY_COLUMNS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENS = ["--max_new_tokens", str(art.MAX_NEW_TOKENS)]


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and tuple(rows[0]) == SUMMARY_COLUMNS
    return {Path(row["input"]).name: row for row in rows}


def test_a_bad_input_is_recorded_and_the_batch_goes_on(models, tmp_path, cube_mesh, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    cube_mesh.export(scans / "a.stl")
    np.save(scans / "b.npy", np.zeros((0, 3)))  # no points
    np.save(scans / "c.npy", trimesh.sample.sample_surface(cube_mesh, 2000, seed=3)[0])
    (scans / "d.stl").write_bytes(b"")  # empty file
    out = tmp_path / "out"
    code = main(["infer", "--lora_path", str(models["full"]), "--point_cloud_file", str(scans), "--output_dir",
                 str(out), "--batch_size", "2", "--no_png", *TOKENS])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert {"a.py", "a.step", "a.stl", "a.json", "c.py", "c.stl", "c.step", "c.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "b.py").exists() and not (out / "d.py").exists()
    rows = read_summary(out / "summary.csv")
    assert list(rows) == ["a.stl", "b.npy", "c.npy", "d.stl"]
    assert rows["a.stl"]["status"] == "valid" and rows["a.stl"]["output"] == str(out / "a.py")
    assert float(rows["a.stl"]["cd_input"]) < 0.1 and rows["c.npy"]["status"] == "valid"
    assert rows["b.npy"]["status"] == "error" and "no points" in rows["b.npy"]["reason"]
    assert rows["d.stl"]["status"] == "error" and "empty" in rows["d.stl"]["reason"]
    assert rows["b.npy"]["cd_input"] == "" and rows["b.npy"]["output"] == ""
    assert "2 of 4 inputs valid, 2 failed" in err and str(out / "summary.csv") in err


def test_an_input_without_a_valid_program_is_recorded_as_invalid(models, tmp_path, cube_mesh, capsys):
    cube_mesh.export(tmp_path / "a.stl")
    out = tmp_path / "out"
    code = main(["infer", "--lora_path", str(models["run"]), "--point_cloud_file", str(tmp_path / "a.stl"),
                 "--output_dir", str(out), "--no_png", "--grammar", "off", *TOKENS])  # off: stays broken
    assert code == 1, capsys.readouterr().err
    row = read_summary(out / "summary.csv")["a.stl"]
    assert row["status"] == "invalid" and row["reason"] and row["cd_input"] == ""
    assert (out / "a.py").read_text().startswith("# INVALID")


def test_inputs_are_checked_before_the_model_loads(tmp_path, capsys):
    """A missing model folder is not what the user hears about first when an input is bad."""
    no_model = ["--lora_path", str(tmp_path / "no_model")]
    (tmp_path / "empty.stl").write_bytes(b"")
    (tmp_path / "notes.doc").write_text("x")
    (tmp_path / "ok.stl").write_text("solid x\nendsolid x\n")
    for files, expected in [
        ([tmp_path / "missing.stl"], f"{tmp_path / 'missing.stl'}: no such file"),
        ([tmp_path / "ok.stl", tmp_path / "notes.doc"], "unsupported file type '.doc'"),
        ([tmp_path / "empty.stl"], "the file is empty"),
    ]:
        extra = ["--output_dir", str(tmp_path / "out")] if len(files) > 1 else []
        code = main(["infer", *no_model, "--point_cloud_file", *map(str, files), *extra])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "no_model" not in err, err
    np.save(tmp_path / "cloud.npy", np.random.default_rng(0).random((50, 3)))
    code = main(["infer", *no_model, "--point_cloud_file", str(tmp_path / "cloud.npy"), "--ground_truth",
                 str(tmp_path / "gt.py")])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'gt.py'}: no such file" in err and "no_model" not in err, err
    assert not (tmp_path / "out").exists()


def test_colliding_names_corrupt_and_escaping_files_each_get_their_own_result(models, tmp_path, cube_mesh, capsys):
    """A fifth review's folder: `a.xyz` was written over by `a_1.obj`, a PLY whose face names a vertex that does not
    exist stopped the whole batch with a traceback, and an escape sequence in a name reached the terminal."""
    scans = tmp_path / "scans"
    scans.mkdir()
    cube_mesh.export(scans / "a.obj")
    np.savetxt(scans / "a.xyz", trimesh.sample.sample_surface(cube_mesh, 2000, seed=3)[0])
    cube_mesh.export(scans / "a_1.obj")
    cube_mesh.export(scans / "b\x1b[2Jred.stl")
    (scans / "m_oob.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 2\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
        "3 0 1 2\n3 0 1 999999\n")
    cube_mesh.export(scans / "z.stl")
    out = tmp_path / "out"
    code = main(["infer", "--lora_path", str(models["full"]), "--point_cloud_file", str(scans), "--output_dir",
                 str(out), "--batch_size", "2", "--no_png", *TOKENS])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "\x1b" not in err
    rows = read_summary(out / "summary.csv")
    outputs = {name: Path(row["output"]).name for name, row in rows.items() if row["output"]}
    assert outputs == {"a.obj": "a.py", "a.xyz": "a_2.py", "a_1.obj": "a_1.py", "b\x1b[2Jred.stl": "b_[2Jred.py",
                       "z.stl": "z.py"}
    assert json.loads((out / "a_2.py").with_suffix(".json").read_text())["input"] == str(scans / "a.xyz")
    assert rows["m_oob.ply"]["status"] == "error" and "face 1 refers to vertex 999999" in rows["m_oob.ply"]["reason"]
    assert "5 of 6 inputs valid, 1 failed" in err


def test_an_unforeseen_failure_of_one_input_is_its_row_not_the_batch_s_end(models, tmp_path, cube_mesh, monkeypatch,
                                                                            capsys):
    from cad_recode.inference.recoder import CADRecoder

    encode = CADRecoder.encode_input

    def encode_or_break(self, source, *args, **kwargs):
        if Path(source).name == "b.stl":
            raise IndexError("index 7 is out of bounds for axis 0 with size 4")
        return encode(self, source, *args, **kwargs)

    monkeypatch.setattr(CADRecoder, "encode_input", encode_or_break)
    for name in ("a.stl", "b.stl", "c.stl"):
        cube_mesh.export(tmp_path / name)
    out = tmp_path / "out"
    code = main(["infer", "--lora_path", str(models["full"]), "--point_cloud_file", *(str(tmp_path / n) for n in
                 ("a.stl", "b.stl", "c.stl")), "--output_dir", str(out), "--no_png", *TOKENS])
    err = capsys.readouterr().err
    rows = read_summary(out / "summary.csv")
    assert code == 1 and "Traceback" not in err
    assert rows["b.stl"]["reason"].endswith("b.stl: failed unexpectedly (IndexError: index 7 is out of bounds for axis "
                                            "0 with size 4); this is a bug: please report it with the file")
    assert rows["a.stl"]["status"] == rows["c.stl"]["status"] == "valid"
