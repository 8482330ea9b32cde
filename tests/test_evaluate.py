"""Evaluation protocol: the three kinds of test data, the numbers, the files, invalid outputs.

The model is the tiny full model of tests/infer_artifacts.py, which always writes the
cube program: a cube scores CD 0 / IoU 1, anything else scores what the cube does
against it, and both can be checked against the metrics module directly.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import infer_artifacts as art  # noqa: E402

from cad_recode.cli import main  # noqa: E402
from cad_recode.errors import InputError  # noqa: E402
from cad_recode.data.labels import read_family_labels  # noqa: E402
from cad_recode.evaluate import evaluate, program_path, summarize_rows  # noqa: E402
from cad_recode.geometry.metrics import compare_meshes  # noqa: E402
from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DECODING = Decoding(max_new_tokens=art.MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def meshes(sandbox):
    return {name: sandbox.run(example_program(name)).to_trimesh() for name in ("cube", "cylinder")}


@pytest.fixture(scope="module")
def models(tmp_path_factory, meshes):
    root = tmp_path_factory.mktemp("eval_models")
    full = art.save_memorizer(meshes["cube"], root / "full")
    points = art.shape_points(meshes["cube"])
    broken = art.adapter_run(full, root / "broken", points, example_program("cylinder"))
    return {"full": full, "broken": broken}


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """A folder of ground-truth programs; one of them fails (skipped, not counted)."""
    root = tmp_path_factory.mktemp("programs")
    (root / "test").mkdir()
    (root / "test" / "0.py").write_text(example_program("cube"))
    (root / "test" / "1.py").write_text(example_program("cylinder"))
    (root / "test" / "2.py").write_text("import cadquery as cq\nr=cq.Workplane('XY').box(0,0,0)\n")
    return root


@pytest.fixture(scope="module")
def recoder(models, sandbox):
    return CADRecoder.from_pretrained(models["full"], sandbox=sandbox, device="cpu")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_program_folder_protocol_numbers_and_files(recoder, programs, meshes, tmp_path):
    report = evaluate(recoder, programs, num_candidates=2, out_dir=tmp_path, decoding=DECODING, progress=False)
    cube_vs_cylinder = compare_meshes(meshes["cube"], meshes["cylinder"])
    s = report.summary
    assert (s.count, s.valid, s.invalid_ratio) == (2, 2, 0.0)
    assert s.mean_cd == pytest.approx(cube_vs_cylinder.cd / 2)
    assert s.median_cd == pytest.approx(cube_vs_cylinder.cd / 2)
    assert s.mean_iou == pytest.approx((1.0 + cube_vs_cylinder.iou) / 2)
    assert [g.id for g in report.skipped] == ["test/2.py"]

    rows = read_csv(report.paths["csv"])
    assert [r["id"] for r in rows] == ["test/0.py", "test/1.py", "test/2.py"]
    assert rows[0]["valid"] == "True" and float(rows[0]["cd"]) == pytest.approx(0, abs=1e-9)
    assert float(rows[1]["iou"]) == pytest.approx(cube_vs_cylinder.iou)
    assert rows[1]["valid_candidates"] == "2" and rows[2]["status"] == "skipped" and rows[2]["reason"]
    summary = json.loads(report.paths["json"].read_text())
    assert summary["count"] == 2 and summary["skipped"] == 1 and summary["num_candidates"] == 2
    assert summary["data_kind"] == "programs" and summary["mean_cd"] == pytest.approx(s.mean_cd)
    assert summary["unread_meshes"] == 0
    assert "| 2 |" in report.table() and "| 0.0 |" in report.table()
    # each valid input's program, under its id; the skipped one has none
    written = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "programs").rglob("*.py"))
    assert written == ["programs/test/0.py", "programs/test/1.py"]
    assert (tmp_path / "programs" / "test" / "0.py").read_text() == report.rows[0]["program"]
    assert "box(80,80,80)" in report.rows[1]["program"]  # the memorizer's cube, whatever the input
    assert not (tmp_path / "programs_as_written").exists()  # no refinement, no second copy


def test_meshes_beside_programs_are_counted_as_unread(tmp_path):
    from cad_recode.evaluate import describe_data

    (tmp_path / "part.py").write_text("import cadquery as cq\nr = cq.Workplane().box(1, 1, 1)\n")
    (tmp_path / "part.stl").write_bytes(b"solid x\nendsolid x\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.step").write_text("ISO-10303-21;")
    assert describe_data(tmp_path) == ("programs", ["part.py"], 2)
    (tmp_path / "part.py").unlink()
    assert describe_data(tmp_path) == ("meshes", ["part.stl", "sub/other.step"], 0)


def test_program_paths_follow_the_id_and_stay_inside_the_folder(tmp_path):
    assert program_path(tmp_path, "test/25.py") == tmp_path / "test" / "25.py"
    assert program_path(tmp_path, "part.stl") == tmp_path / "part.stl.py"  # part.obj beside it keeps its own
    assert program_path(tmp_path, "../../etc/x.step") == tmp_path / "etc" / "x.step.py"


def test_mesh_folder_and_limit(recoder, meshes, tmp_path):
    data = tmp_path / "stls"
    data.mkdir()
    meshes["cylinder"].export(data / "10.stl")
    meshes["cube"].export(data / "9.stl")
    report = evaluate(recoder, data, decoding=DECODING, progress=False)
    assert [r["id"] for r in report.rows] == ["9.stl", "10.stl"]  # natural order
    assert report.rows[0]["iou"] == pytest.approx(1.0, abs=1e-6)
    limited = evaluate(recoder, data, limit=1, decoding=DECODING, progress=False)
    assert limited.summary.count == 1 and limited.data_kind == "meshes"


def test_prepared_dataset_gives_the_same_numbers(recoder, programs, tmp_path):
    from cad_recode.data.prepare import prepare_dataset

    source = tmp_path / "src"
    shutil.copytree(programs, source)
    (source / "test" / "2.py").unlink()
    prepared = tmp_path / "prepared"
    prepare_dataset(source, prepared, progress=False)
    from_programs = evaluate(recoder, source, decoding=DECODING, progress=False)
    from_prepared = evaluate(recoder, prepared, split="test", decoding=DECODING, progress=False)
    assert from_prepared.data_kind == "prepared"
    assert [r["cd"] for r in from_prepared.rows] == pytest.approx([r["cd"] for r in from_programs.rows], rel=1e-4)
    # a split folder inside the prepared dataset works too
    assert evaluate(recoder, prepared / "test", decoding=DECODING, progress=False).summary.count == 2
    with pytest.raises(InputError, match="has no split 'val'"):
        evaluate(recoder, prepared, split="val", decoding=DECODING, progress=False)


def test_invalid_outputs_count_in_ir(models, programs, sandbox, tmp_path):
    broken = CADRecoder.from_pretrained(models["full"], lora_path=models["broken"], sandbox=sandbox, device="cpu")
    unconstrained = dataclasses.replace(DECODING, grammar=False)  # the broken adapter's own, unparsable output
    report = evaluate(broken, programs, out_dir=tmp_path, decoding=unconstrained, progress=False)
    assert report.summary.invalid_ratio == 1.0 and math.isnan(report.summary.mean_cd)
    assert report.invalid_kinds.total == report.summary.count
    assert all(r["status"] == "invalid" and r["reason"] for r in report.rows if r["id"] != "test/2.py")
    summary = json.loads(report.paths["json"].read_text())
    assert summary["invalid_ratio"] == 1.0 and summary["mean_cd"] is None
    assert "| 100.0 |" in report.table() and "n/a" in report.table()
    assert "invalid by kind:" in report.table() and summary["invalid_kinds"] == report.invalid_kinds.to_dict()


def test_the_grammar_leaves_no_syntax_error_even_from_a_broken_adapter(models, programs, sandbox):
    """Whatever the weights, a program decoded under the grammar parses: no input is invalid for syntax."""
    broken = CADRecoder.from_pretrained(models["full"], lora_path=models["broken"], sandbox=sandbox, device="cpu")
    free = evaluate(broken, programs, decoding=dataclasses.replace(DECODING, grammar=False), progress=False)
    constrained = evaluate(broken, programs, decoding=dataclasses.replace(DECODING, grammar=True), progress=False)
    assert free.invalid_kinds.syntax + free.invalid_kinds.truncated > 0  # without it, the adapter writes broken text
    assert constrained.invalid_kinds.syntax == 0
    assert constrained.settings["decoding"]["grammar"] is True


def test_eval_cli(models, programs, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["eval", "--model", str(models["full"]), "--data", str(programs), "--num_candidates", "2",
                 "--limit", "1", "--output_dir", str(out), "--max_new_tokens", str(art.MAX_NEW_TOKENS)]) == 0
    captured = capsys.readouterr()
    assert "| inputs | IoU % |" in captured.out and "| 1 | 100.0 | 0.000 | 0.000 | 0.0 |" in captured.out
    assert (out / "per_item.csv").is_file() and (out / "summary.json").is_file()
    assert (out / "summary.md").read_text().startswith("| inputs | IoU % |")
    empty = tmp_path / "empty"
    empty.mkdir()
    for data in (empty, tmp_path / "missing"):
        assert main(["eval", "--model", str(models["full"]), "--data", str(data)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(err) == 1 and str(data) in err[0]


def test_refinement_reports_the_programs_before_and_after_it(recoder, sandbox, tmp_path):
    """The memorizer writes the cube; refined to a flatter box's points, it must come closer, and say by how much."""
    data = tmp_path / "flat"
    data.mkdir()
    sandbox.run(example_program("cube").replace("box(80,80,80)", "box(80,80,64)")).to_trimesh().export(data / "0.stl")
    (data / "1.stl").write_text("not a mesh")  # skipped: counted in no figure, the outline line included
    refining = Decoding(max_new_tokens=art.MAX_NEW_TOKENS, refine_evaluations=60)
    report = evaluate(recoder, data, out_dir=tmp_path / "out", decoding=refining, progress=False)

    row = report.rows[0]
    assert [r["status"] for r in report.rows[1:]] == ["skipped"]
    assert row["valid"] and row["iou"] > row["model_iou"] + 0.05 and row["cd"] < row["model_cd"]
    assert report.model_summary.mean_iou == pytest.approx(row["model_iou"])
    assert report.summary.mean_iou == pytest.approx(row["iou"])
    table = report.table().splitlines()
    assert table[0].endswith("| programs |") and "as the model wrote them" in table[2] and "refined" in table[3]
    summary = json.loads(report.paths["json"].read_text())
    assert summary["before_refinement"]["mean_iou"] == pytest.approx(row["model_iou"])
    assert summary["decoding"]["refine_evaluations"] == 60
    assert float(read_csv(report.paths["csv"])[0]["model_iou"]) == pytest.approx(row["model_iou"])
    # the points' own outline (a rectangle extruded) is far closer than the cube: refinement started there
    assert row["refined_from"].startswith("a sketch on ") and summary["outline_starts"] == 1
    assert read_csv(report.paths["csv"])[0]["refined_from"] == row["refined_from"]
    assert "refinement started from the points' own outline on 1 of 1 inputs" in report.table()
    # the refined program and the one the model wrote, each a file named after the input
    refined, as_written = (tmp_path / "out" / folder / "0.stl.py" for folder in ("programs", "programs_as_written"))
    assert refined.read_text() == row["program"] != as_written.read_text() == row["program_as_written"]
    assert "box(80,80,80)" in as_written.read_text()


def test_a_ground_truth_that_is_not_utf8_is_skipped_for_that_reason(recoder, tmp_path):
    data = tmp_path / "gt"
    data.mkdir()
    (data / "0.py").write_text(example_program("cube"))
    (data / "1.py").write_bytes(example_program("cube").encode() + b"# caf\xe9\n")  # Latin-1, not UTF-8
    report = evaluate(recoder, data, decoding=DECODING, progress=False)
    assert [g.id for g in report.skipped] == ["1.py"]
    assert "cannot read the ground truth program as UTF-8 text" in report.rows[1]["reason"]
    assert "no_solid" not in report.rows[1]["reason"]


def test_conditions_perturb_the_input_and_are_recorded(recoder, programs, tmp_path):
    """rotated turns input and truth (read as given, the cube comes back axis-aligned; the default if_turned and
    --pose auto try the pose candidates); noise and a cut side still give the memorizer's cube; summary.json says
    which condition it measured."""
    def run(condition: str, decoding=DECODING, n: int = 1):
        out = tmp_path / condition / decoding.pose
        report = evaluate(recoder, programs, num_candidates=n, limit=1, out_dir=out, decoding=decoding,
                          progress=False, condition=condition)
        assert json.loads((out / "summary.json").read_text())["condition"] == condition
        return report.rows[0]

    assert run("clean")["iou"] == pytest.approx(1.0, abs=1e-6)
    assert run("rotated", Decoding(max_new_tokens=art.MAX_NEW_TOKENS, pose="none"))["iou"] < 0.9
    for pose in ("auto", "if_turned"):
        posed = Decoding(max_new_tokens=art.MAX_NEW_TOKENS, pose=pose, pose_budget=2)
        assert run("rotated", posed, n=2)["iou"] >= 0.95
    for condition in ("noise_0.02", "missing_side"):
        row = run(condition)
        assert row["valid"] and row["iou"] > 0.9  # the memorizer still writes its cube


def test_unknown_condition_is_one_clear_line(recoder, programs, models, capsys):
    from cad_recode.errors import UsageError

    with pytest.raises(UsageError, match="unknown condition 'sideways'; choose one of: clean, rotated"):
        evaluate(recoder, programs, condition="sideways", progress=False)
    with pytest.raises(SystemExit):
        main(["eval", "--model", str(models["full"]), "--data", str(programs), "--condition", "sideways"])
    assert "--condition: invalid choice: 'sideways'" in capsys.readouterr().err


def test_data_with_family_labels_gets_a_table_by_family(models, sandbox, tmp_path):
    """The hand-written style set carries a family per program: eval reports each family's figures."""
    from cad_recode.data.labels import read_family_labels

    style_set = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "style_set"
    model = CADRecoder.from_pretrained(models["full"], sandbox=sandbox, device="cpu")
    report = evaluate(model, style_set, limit=4, out_dir=tmp_path, decoding=DECODING, progress=False)
    labels = read_family_labels(style_set)
    expected = {labels[r["id"]] for r in report.rows if r["status"] != "skipped"}
    assert set(report.families) == expected and sum(s.count for s in report.families.values()) == 4
    assert "by family:" in report.table()
    assert set(json.loads(report.paths["json"].read_text())["families"]) == expected


def test_with_refinement_each_family_has_its_as_written_figure(models, sandbox, tmp_path):
    style_set = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "style_set"
    model = CADRecoder.from_pretrained(models["full"], sandbox=sandbox, device="cpu")
    report = evaluate(model, style_set, limit=2, out_dir=tmp_path, progress=False,
                      decoding=Decoding(**{**DECODING.to_dict(), "refine_evaluations": 3}))
    assert set(report.model_families) == set(report.families)
    for name, written in report.model_families.items():
        members = [r for r in report.rows if r["status"] != "skipped" and r["id"] in
                   {i for i, fam in read_family_labels(style_set).items() if fam == name}]
        assert written.count == len(members)
        assert written.mean_iou == pytest.approx(summarize_rows(members, before_refinement=True).mean_iou, nan_ok=True)
    body = json.loads(report.paths["json"].read_text())
    assert set(body["families_before_refinement"]) == set(body["families"])
    assert "IoU % as written |" in report.table()
