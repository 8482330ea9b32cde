"""Inference: which weights load, best of N, the outputs, units, batch mode and bad input.

Models are tiny and trained here with the model API (tests/infer_artifacts.py): a
full model that writes the cube program (valid solids), and a LoRA adapter on it
that was pushed towards another program (invalid ones).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/infer_artifacts.py
import infer_artifacts as art  # noqa: E402

from cad_recode.cli import main  # noqa: E402
from cad_recode.errors import InputError, UsageError  # noqa: E402
from cad_recode.geometry.loaders import load_geometry  # noqa: E402
from cad_recode.geometry.sampling import sample_surface, to_model_points  # noqa: E402
from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402
from cad_recode.inference.judge import judge  # noqa: E402
from cad_recode.inference.results import Timings  # noqa: E402
from cad_recode.inference.units import model_program, restore_mesh, restored_program  # noqa: E402
from cad_recode.model.loading import resolve_source  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUBE = example_program("cube")
TOKENS = ["--max_new_tokens", str(art.MAX_NEW_TOKENS)]


def recoder(sandbox, *args, **kwargs) -> CADRecoder:
    return CADRecoder.from_pretrained(*args, sandbox=sandbox, device="cpu", **kwargs)


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err)
    return errors[0]


# -- which weights ----------------------------------------------------------------------


def test_merged_model_is_preferred_and_named(models, sandbox, capsys):
    source = resolve_source(None, models["run"])
    assert source.kind == "merged_model" and source.model_dir == models["run"] / "merged_model"
    assert resolve_source(None, models["run"], prefer_merged=False).kind == "adapter"
    # the adapter recorded its base folder, so --base_model may be left out
    assert resolve_source(None, models["run"], prefer_merged=False).base == str(models["full"])
    assert resolve_source(models["full"]).kind == "full_model"

    main(["infer", "--base_model", str(models["full"]), "--lora_path", str(models["run"]), "--shape", "cube", *TOKENS])
    assert f"using merged model {models['run'] / 'merged_model'}" in capsys.readouterr().err
    main(["infer", "--lora_path", str(models["run"]), "--no_merged", "--shape", "cube", *TOKENS])
    assert f"using base model {models['full']} + adapter default={models['run']}" in capsys.readouterr().err


def test_merged_and_adapter_generate_the_same_programs(models, sandbox, cube_mesh):
    merged = recoder(sandbox, lora_path=models["run"])
    adapter = recoder(sandbox, lora_path=models["run"], prefer_merged=False)
    assert adapter.adapters == ["default"] and merged.adapters == []
    a = merged.reconstruct(cube_mesh, num_candidates=2, max_new_tokens=art.MAX_NEW_TOKENS)
    b = adapter.reconstruct(cube_mesh, num_candidates=2, max_new_tokens=art.MAX_NEW_TOKENS)
    assert [c.code for c in a.candidates] == [c.code for c in b.candidates]


# -- reconstruction, best of N, outputs ----------------------------------------------------


def test_shape_outputs_program_solid_picture_and_report(models, tmp_path, capsys):
    out = tmp_path / "res" / "cube.py"
    code = main(["infer", "--base_model", str(models["full"]), "--shape", "cube", "--num_candidates", "3",
                 "--output", str(out), *TOKENS])
    assert code == 0, capsys.readouterr().err
    assert out.read_text() == CUBE
    stl = trimesh.load(out.with_suffix(".stl"))
    assert stl.volume == pytest.approx(80**3, rel=1e-3)
    step = load_geometry(out.with_suffix(".step"))
    assert np.allclose(step.bounds, [[-40, -40, -40], [40, 40, 40]], atol=1e-3)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["valid"] and report["ground_truth"] == "shape:cube"
    assert report["cd_gt"] == pytest.approx(0.0, abs=1e-9) and report["iou_gt"] == pytest.approx(1.0, abs=1e-6)
    assert report["cd_input"] < 0.05
    assert set(report["timings"]) == {"encode", "generate", "execute", "refine", "metrics", "total"}
    assert report["timings"]["refine"] == 0 and report["cd_units"].startswith("CD x10^3")
    assert report["tokens"]["generated"] == [82, 82, 82] and report["tokens"]["prompt"] == art.POINTS + 1
    assert [c["seed"] for c in report["candidates"]] == [0, 1, 2]
    err = capsys.readouterr().err
    assert "CD to ground truth 0.000, IoU 100.0%" in err
    # a stage line, with the time since the start, as each stage begins
    stages = [line.split("] ", 1)[1] for line in err.splitlines() if line.startswith("infer: [")]
    assert [s.split()[0] for s in stages] == ["loading", "building", "encoding", "generating", "running",
                                              "metrics:", "metrics:", "writing"], stages
    assert stages[3] == "generating 3 programs (at most 100 tokens each)"


def test_best_of_n_is_one_batch_of_fps_draws(models, sandbox, cube_mesh):
    model = recoder(sandbox, models["full"])
    batches = []
    hook = model.core.point_encoder.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        rec = model.reconstruct(cube_mesh, num_candidates=4, max_new_tokens=art.MAX_NEW_TOKENS)
    finally:
        hook.remove()
    assert batches == [4]  # the prompt is encoded once, for all four draws together
    draws = [to_model_points(cube_mesh, n_points=art.POINTS, seed=s).points for s in range(4)]
    assert np.array_equal(rec.input_points, draws[0]) and not np.array_equal(draws[0], draws[1])
    assert rec.valid and rec.code == CUBE and rec.num_valid_candidates == 4


def test_the_candidate_closest_to_the_input_wins(models, sandbox, cube_mesh):
    """Selection uses the INPUT points: a cube input picks the cube, never an invalid or farther solid."""
    model = recoder(sandbox, models["full"])
    programs = ["r = nonsense(", example_program("cylinder"), CUBE, example_program("l_bracket")]
    results = sandbox.map(programs)
    item = model.encode_input(cube_mesh, 4, 0, None)
    rows = [((code, 5, True), result) for code, result in zip(programs, results)]
    rec = judge_rows(model, item, rows)
    assert rec.best == 2 and rec.code == CUBE
    assert rec.candidates[0].status == "syntax_error" and rec.candidates[0].cd_input is None
    distances = [c.distance_input for c in rec.candidates[1:]]  # what picks: the mean distance both ways
    assert distances[1] == min(distances) and rec.cd_input == rec.candidates[2].cd_input
    assert rec.to_report()["candidates"][2]["distance_input"] == distances[1]
    # the ground truth plays no part: a cylinder ground truth does not change the choice
    item = model.encode_input(cube_mesh, 4, 0, ("cyl", results[1].to_trimesh()))
    rec = judge_rows(model, item, rows)
    assert rec.best == 2 and rec.truth.iou < 0.9


def test_best_of_n_picks_by_the_mean_distance_not_the_squared_one():
    from cad_recode.inference.judge import pick_best
    from cad_recode.inference.results import Candidate

    candidates = [Candidate(0, "a", 9, True, "syntax_error"),
                  Candidate(1, "b", 9, True, "ok", cd_input=1.0, distance_input=30.0),
                  Candidate(2, "c", 9, True, "ok", cd_input=2.0, distance_input=20.0),
                  Candidate(3, "d", 9, True, "ok", cd_input=2.0, distance_input=20.0)]
    assert pick_best(candidates) == 2  # the smaller mean distance, the first of equals
    assert pick_best(candidates[:1]) is None


def test_inference_samples_as_many_surface_points_as_training_did(models, sandbox, cube_mesh):
    """The model's config records num_surface_points; the draws use it (not a fixed 8192)."""
    model = recoder(sandbox, models["full"])
    assert model.num_surface_points == 8192  # a model saved before the field existed: the protocol default
    model.core.config.num_surface_points = 300
    item = model.encode_input(cube_mesh, 2, seed=5)
    expected = [to_model_points(cube_mesh, n_points=art.POINTS, n_surface=300, seed=s).points for s in (5, 6)]
    assert all(np.array_equal(d.points, e) for d, e in zip(item.draws, expected))
    dense8192 = to_model_points(cube_mesh, n_points=art.POINTS, seed=5).points
    assert not np.array_equal(item.draws[0].points, dense8192)


def judge_rows(model, item, rows):
    return judge(item, rows, first_seed=0, decoding=Decoding(), restore_units=False, sandbox=model.sandbox,
                 model_name=model.describe(), prompt_tokens=model.num_point_tokens + 1, timings=Timings())


def test_invalid_programs_are_reported_not_raised(models, tmp_path, capsys):
    out = tmp_path / "bad.py"
    # --grammar off: under the grammar this deliberately broken adapter writes programs that build
    code = main(["infer", "--lora_path", str(models["run"]), "--shape", "cube", "--num_candidates", "2",
                 "--output", str(out), "--grammar", "off", *TOKENS])
    assert code == 1
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["valid"] is False and report["num_valid_candidates"] == 0 and report["reason"]
    assert report["cd_gt"] is None and all(c["status"] != "ok" for c in report["candidates"])
    assert out.read_text().startswith("# INVALID: no candidate built a valid solid")
    assert not out.with_suffix(".stl").exists() and not out.with_suffix(".step").exists()
    assert "INVALID" in capsys.readouterr().err


# -- units ----------------------------------------------------------------------------


def refine_a_flat_box(models, sandbox, tmp_path, capsys, height: int, *flags: str):
    """``infer --refine 45`` on a box 80 x 80 x ``height`` that the memorizer writes as the cube:
    (points file, program file, report, stderr)."""
    flat = sandbox.run(CUBE.replace("box(80,80,80)", f"box(80,80,{height})")).to_trimesh()
    points = tmp_path / "flat.npy"
    np.save(points, sample_surface(flat, n=4096, seed=0))
    out = tmp_path / "flat.py"
    assert main(["infer", "--base_model", str(models["full"]), "--point_cloud_file", str(points), "--refine", "45",
                 *flags, "--output", str(out), *TOKENS]) == 0, capsys.readouterr().err
    return points, out, json.loads(out.with_suffix(".json").read_text()), capsys.readouterr().err


def test_refine_fits_the_written_program_to_the_input_and_keeps_the_original(models, sandbox, tmp_path, capsys):
    points, out, report, err = refine_a_flat_box(models, sandbox, tmp_path, capsys, 64, "--outline_fit", "off")
    assert "; refinement changed" in err and "] refining the winner (at most 45 sandbox runs)" in err
    assert f"] reading {points}" in err.splitlines()[0]  # the input is read before the model loads
    refinement = report["refinement"]
    assert refinement["model_code"] == CUBE and out.read_text() != CUBE  # the memorizer wrote the cube
    assert refinement["literals_changed"] >= 1 and 0 < refinement["evaluations"] <= 45
    assert refinement["structure_edits"] == []  # a box of the right kind: fitted, not rebuilt
    assert report["cd_input"] < report["candidates"][0]["cd_input"]
    assert "refine" in report["timings"] and report["decoding"]["refine_evaluations"] == 45
    # one CD scale everywhere in the report: the refined program measured twice lands on the same order
    assert report["cd_units"].startswith("CD x10^3")
    extents = trimesh.load(out.with_suffix(".stl")).extents  # the files hold the refined solid: flatter than a cube
    assert extents[2] / extents[0] < 0.95


def test_refine_starts_from_the_points_outline_when_it_is_clearly_closer(models, sandbox, tmp_path, capsys):
    _, out, report, err = refine_a_flat_box(models, sandbox, tmp_path, capsys, 40, "--no_png")
    refinement = report["refinement"]
    assert refinement["model_code"] == CUBE  # the model's program is kept in the report
    started = refinement["structure_edits"][0]
    assert started.startswith("started from the points' own outline: a sketch on ") and started in err
    assert ".rect(" in out.read_text() and "extrude(" in out.read_text()  # a rectangle, as a person writes it
    assert report["cd_input"] < 0.2 * report["candidates"][0]["cd_input"] and refinement["evaluations"] <= 45
    extents = sorted(trimesh.load(out.with_suffix(".stl")).extents)
    assert abs(extents[0] / extents[2] - 0.5) < 0.03


def test_a_noisy_scan_is_boxed_by_its_smoothed_points_and_the_report_says_so(models, tmp_path, cube_mesh, capsys):
    rng = np.random.default_rng(0)
    points = sample_surface(cube_mesh, n=8192, seed=0)
    noisy = tmp_path / "noisy.npy"
    np.save(noisy, points + rng.normal(0.0, 0.01 * 40.0, points.shape))  # std 0.01 of the cube's half-side
    clean = tmp_path / "clean.stl"
    cube_mesh.export(clean)
    reports = {}
    for source in (noisy, clean):
        out = tmp_path / f"{source.stem}.py"
        assert main(["infer", "--base_model", str(models["full"]), "--point_cloud_file", str(source), "--output",
                     str(out), "--no_png", *TOKENS]) == 0
        reports[source.stem] = (json.loads(out.with_suffix(".json").read_text()), capsys.readouterr().err)
    report, printed = reports["noisy"]
    assert 0.003 < report["input_noise"] < 0.006 and report["box"] == "smoothed points"
    assert f"a noisy scan (noise {report['input_noise']:.4f}): boxed by its smoothed points" in printed
    assert abs(report["transform"]["scale"] * 80.0 / 2.0 - 1.0) < 0.01  # the cube's own size, not its outliers'
    report, printed = reports["clean"]
    assert report["input_noise"] is None and report["box"] == "as given" and "noisy scan" not in printed


def test_a_scan_s_stray_points_are_dropped_before_its_box_and_the_report_counts_them(models, tmp_path, cube_mesh,
                                                                                     capsys):
    points = sample_surface(cube_mesh, n=8192, seed=0)
    strays = np.array([[900.0, 0.0, 0.0], [0.0, -700.0, 300.0], [400.0, 400.0, 400.0]])
    scan = tmp_path / "scan.xyz"
    np.savetxt(scan, np.vstack([points[:4000], strays, points[4000:]]))
    reports = {}
    for strays in ("drop", "keep"):
        out = tmp_path / f"{strays}.py"
        assert main(["infer", "--base_model", str(models["full"]), "--point_cloud_file", str(scan), "--output",
                     str(out), "--no_png", "--stray_points", strays, *TOKENS]) == 0
        reports[strays] = json.loads(out.with_suffix(".json").read_text()), capsys.readouterr().err
    report, printed = reports["drop"]
    assert report["input_stray_points"] == 3 and "3 stray points apart from the surface dropped" in printed
    assert abs(report["transform"]["scale"] * 80.0 / 2.0 - 1.0) < 1e-3  # the cube's own box, not the strays'
    assert report["decoding"]["drop_stray_points"] is True
    report, printed = reports["keep"]
    assert report["input_stray_points"] == 0 and "stray points apart" not in printed
    assert report["transform"]["scale"] == pytest.approx(2.0 / 1100.0)  # the strays span -700 to 400 in y


def test_a_part_that_arrived_turned_is_decoded_in_other_orientations_and_as_given_gets_a_hint(models, tmp_path,
                                                                                                capsys):
    from scipy.spatial.transform import Rotation

    bar = trimesh.creation.box(extents=(120.0, 30.0, 20.0))
    turned = bar.copy()
    turned.vertices = np.asarray(bar.vertices) @ Rotation.from_euler("zx", [25, 10], degrees=True).as_matrix().T
    for name, mesh in (("aligned", bar), ("turned", turned)):
        mesh.export(tmp_path / f"{name}.stl")

    def infer(name: str, *flags: str) -> tuple[dict, str]:
        out = tmp_path / f"{name}{'_'.join(flags)}.py"
        assert main(["infer", "--base_model", str(models["full"]), "--point_cloud_file", str(tmp_path / f"{name}.stl"),
                     "--output", str(out), "--no_png", "--num_candidates", "2", *flags, *TOKENS]) == 0
        return json.loads(out.with_suffix(".json").read_text()), capsys.readouterr().err

    report, printed = infer("turned")  # the default, if_turned
    assert report["decoding"]["pose"] == "if_turned" and report["looks_turned"] and report["input_turned"] > 1.3
    assert report["pose"] and all(c["pose"] for c in report["candidates"])  # decoded under the pose candidates
    assert f"pose {report['pose']} (the part looked turned: its box is {report['input_turned']:.2f}x its " \
           "tightest)" in printed and "try --pose auto" not in printed
    report, printed = infer("turned", "--pose", "none")
    assert report["looks_turned"] and report["pose"] is None
    assert f"the part looks turned from the axes (its box is {report['input_turned']:.2f}x its tightest): " \
           "try --pose auto" in printed
    report, printed = infer("aligned")
    assert report["looks_turned"] is False and report["input_turned"] == pytest.approx(1.0, abs=1e-3)
    assert report["pose"] is None and "turned" not in printed  # as given, exactly as --pose none
    report, printed = infer("turned", "--pose", "auto")
    assert report["input_turned"] is None and report["looks_turned"] is False and report["pose"]


def test_a_scanned_mesh_s_island_is_dropped_before_its_box_and_the_report_counts_it(models, tmp_path, cube_mesh,
                                                                                    capsys):
    island = trimesh.creation.icosphere(radius=2.0).apply_translation((500.0, 0.0, 0.0))
    scan = tmp_path / "scan.stl"
    trimesh.util.concatenate([cube_mesh, island]).export(scan)
    out = tmp_path / "scan.py"
    assert main(["infer", "--base_model", str(models["full"]), "--point_cloud_file", str(scan), "--output",
                 str(out), "--no_png", *TOKENS]) == 0
    report, printed = json.loads(out.with_suffix(".json").read_text()), capsys.readouterr().err
    assert report["input_stray_islands"] == 1 and "1 mesh islands beyond the part dropped" in printed
    assert abs(report["transform"]["scale"] * 80.0 / 2.0 - 1.0) < 1e-6  # the cube's own box


def test_restore_units_maps_model_units_back_to_the_input(sandbox):
    """A program that fills the model's [-100, 100] cube lands exactly on the input's bounding box."""
    part = trimesh.creation.box(extents=(0.5, 0.3, 0.2))
    part.apply_translation((7.0, -2.0, 1.0))
    transform = to_model_points(part, n_points=art.POINTS).transform
    # normalized box: x spans [-1, 1], y [-0.6, 0.6], z [-0.4, 0.4]; x100 in model units
    program = "import cadquery as cq\nr=cq.Workplane('XY').box(200,120,80)\n"
    model_mesh = sandbox.run(program).to_trimesh()
    assert np.allclose(restore_mesh(model_mesh, transform).bounds, part.bounds, atol=1e-9)
    assert np.allclose(transform.invert(np.asarray(model_mesh.vertices) / 100), restore_mesh(model_mesh, transform).vertices)
    restored = sandbox.run(restored_program(program, transform))
    assert restored.ok and np.allclose([restored.bbox_min, restored.bbox_max], part.bounds, atol=1e-6)


def test_restore_units_writes_solid_and_program_in_input_units(models, tmp_path, cube_mesh, sandbox):
    scan = cube_mesh.copy()
    scan.apply_scale(0.01)
    scan.apply_translation((5.0, -3.0, 2.0))
    source = tmp_path / "scan.stl"
    scan.export(source)
    truth = tmp_path / "truth.py"
    truth.write_text(CUBE)  # a ground-truth program in its own units: the protocol normalizes both shapes
    out = tmp_path / "scan_out.py"
    assert main(["infer", "--lora_path", str(models["full"]), "--point_cloud_file", str(source), "--restore_units",
                 "--ground_truth", str(truth), "--output", str(out), *TOKENS]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["units"] == "input" and "step_units" not in report
    assert report["ground_truth"] == str(truth) and report["iou_gt"] == pytest.approx(1.0, abs=1e-6)
    # the cube program (box 80) in model units -> +-0.4 normalized -> input units around the scan's centre
    transform = to_model_points(scan, n_points=art.POINTS).transform
    expected = transform.invert(np.array([[-40.0] * 3, [40.0] * 3]) / 100)
    assert np.allclose(trimesh.load(out.with_suffix(".stl")).bounds, expected, atol=1e-4)
    step = load_geometry(out.with_suffix(".step"))
    assert np.allclose(step.bounds, expected, atol=1e-4)
    # the written program builds that same solid, in the input's units, and keeps the model's lines to edit
    program = out.read_text()
    assert program.startswith(CUBE) and report["program_units"] == "input"
    assert program.splitlines()[-1].startswith("r=cq.Workplane('XY').newObject([r.findSolid().scale(")
    assert "# to_input_units:" in program
    rebuilt = sandbox.run(program).to_trimesh()
    assert np.allclose(rebuilt.bounds, step.bounds, atol=1e-6)
    assert rebuilt.volume == pytest.approx(step.volume, rel=1e-6) and step.volume == pytest.approx(np.prod(expected[1] - expected[0]), rel=1e-3)
    assert model_program(program) == CUBE


# -- batch mode ---------------------------------------------------------------------------


def test_batch_mode_folder_in_folder_out(models, tmp_path, cube_mesh, capsys):
    inputs = tmp_path / "scans"
    inputs.mkdir()
    cube_mesh.export(inputs / "a.stl")
    np.save(inputs / "b.npy", trimesh.sample.sample_surface(cube_mesh, 2000, seed=3)[0])
    out = tmp_path / "results"
    assert main(["infer", "--lora_path", str(models["full"]), "--point_cloud_file", str(inputs), "--output_dir",
                 str(out), "--batch_size", "2", "--no_png", *TOKENS]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.py", "a.step", "a.stl", "b.json", "b.py", "b.step", "b.stl",
                                                     "summary.csv"]
    assert json.loads((out / "b.json").read_text())["input"] == str(inputs / "b.npy")
    assert "infer" in capsys.readouterr().err  # the progress bar


def test_several_inputs_need_an_output_dir(models, tmp_path, cube_mesh, capsys):
    cube_mesh.export(tmp_path / "a.stl")
    line = one_line_error(capsys, ["infer", "--lora_path", str(models["full"]), "--point_cloud_file",
                                   str(tmp_path / "a.stl"), str(tmp_path / "a.stl")])
    assert "--output_dir" in line


# -- bad input ----------------------------------------------------------------------------


def test_shape_list_and_unknown_shape(models, capsys):
    assert main(["infer", "--lora_path", str(models["full"]), "--shape", "list"]) == 0
    assert capsys.readouterr().out.split() == list(EXAMPLE_SHAPES)
    assert "cube" in one_line_error(capsys, ["infer", "--lora_path", str(models["full"]), "--shape", "cubee"])


def test_missing_or_garbled_model_files_name_the_file(models, tmp_path, capsys):
    line = one_line_error(capsys, ["infer", "--lora_path", str(tmp_path / "nope"), "--shape", "cube"])
    assert str(tmp_path / "nope") in line and "does not exist" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "adapter_config.json is missing" in one_line_error(
        capsys, ["infer", "--base_model", str(models["full"]), "--lora_path", str(empty), "--shape", "cube"])

    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "adapter_config.json").write_text("{not json")
    assert "unreadable adapter config" in one_line_error(
        capsys, ["infer", "--base_model", str(models["full"]), "--lora_path", str(garbled), "--shape", "cube"])

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "adapter_config.json").write_text((models["run"] / "adapter_config.json").read_text())
    assert "adapter_model.safetensors is missing" in one_line_error(
        capsys, ["infer", "--base_model", str(models["full"]), "--lora_path", str(no_weights), "--shape", "cube"])

    line = one_line_error(capsys, ["infer", "--base_model", str(tmp_path / "no_base"), "--lora_path",
                                   str(models["run"]), "--no_merged", "--shape", "cube"])
    assert f"base model folder {tmp_path / 'no_base'} does not exist" in line


def test_adapter_for_another_base_names_both(models, tmp_path, capsys):
    other = tmp_path / "other_base"
    art.CADRecodeForCausalLM.from_lm(art.build_tiny_lm(vocab_size=300, hidden_size=32), num_point_tokens=art.POINTS
                                     ).save_pretrained(other)
    art.tokenizer().save_pretrained(other)
    line = one_line_error(capsys, ["infer", "--base_model", str(other), "--lora_path", str(models["run"]),
                                   "--no_merged", "--shape", "cube"])
    assert str(models["run"]) in line and str(other) in line and str(models["full"]) in line


def test_bad_point_file_and_unwritable_output(models, tmp_path, capsys):
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 3)))
    line = one_line_error(capsys, ["infer", "--lora_path", str(models["full"]), "--point_cloud_file", str(empty)])
    assert "contains no points" in line
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    line = one_line_error(capsys, ["infer", "--lora_path", str(models["full"]), "--shape", "cube",
                                   "--output", str(blocker / "out.py")])
    assert "cannot write output" in line and f"{blocker} is a file" in line
    line = one_line_error(capsys, ["infer", "--lora_path", str(models["full"]), "--shape", "cube",
                                   "--num_candidates", "4", "--runaway_factor", "0.5"])
    assert "runaway_factor must be 0 (off) or > 1, got 0.5" in line
    line = one_line_error(capsys, ["infer", "--lora_path", str(models["full"]), "--shape", "cube", "--refine", "-3"])
    assert "--refine must be >= 0 sandbox runs (0: off), got -3" in line


def test_python_api_errors(models, sandbox):
    model = recoder(sandbox, models["full"])
    with pytest.raises(UsageError, match="no adapters loaded"):
        model.set_adapter("x")
    with pytest.raises(UsageError, match="num_candidates"):
        model.reconstruct(np.random.default_rng(0).random((100, 3)), num_candidates=0)
    with pytest.raises(InputError, match="NaN"):
        model.reconstruct(np.full((10, 3), np.nan))
    with pytest.raises(UsageError, match="not a trained CAD-Recode model"):
        resolve_source("Qwen/Qwen3-1.7B-Base")


def test_tiny_run_adapter_rebuilds_its_random_base(tmp_path, sandbox):
    """A tiny_model training run records no base folder: the base is rebuilt from its config.yaml."""
    from cad_recode.config import load_config, save_config
    from cad_recode.model import apply_lora
    from cad_recode.model.builders import build_tiny

    cfg = load_config(None, {"tiny_model": {"hidden_size": 32, "num_hidden_layers": 2}, "seed": 3,
                             "num_point_tokens": art.POINTS, "num_surface_points": 1024})
    lm = build_tiny(cfg.tiny_model, vocab_size=len(art.tokenizer()), seed=cfg.seed)
    peft_model = apply_lora(art.CADRecodeForCausalLM.from_lm(lm, num_point_tokens=art.POINTS), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "point_encoder" in name:
                param.add_(0.05)
    run = tmp_path / "tiny_run"
    peft_model.save_pretrained(run)
    art.tokenizer().save_pretrained(run)
    save_config(cfg, run / "config.yaml")

    loaded = recoder(sandbox, lora_path=run)
    assert loaded.describe().startswith(f"tiny base rebuilt from {run / 'config.yaml'} + adapter")
    assert (loaded.num_point_tokens, loaded.num_surface_points) == (art.POINTS, 1024)  # the run's own sampling
    points = art.shape_points(sandbox.run(CUBE).to_trimesh())
    ids = torch.tensor([art.code_ids(CUBE)[:10]] * len(points))
    with torch.no_grad():
        expected = peft_model.eval()(points=points, input_ids=ids).logits
        got = loaded.model(points=points, input_ids=ids).logits
    torch.testing.assert_close(got, expected)


def test_a_flat_or_linear_input_is_reconstructed_with_a_warning(models, tmp_path, capsys):
    """One side of a part scanned alone is flat: the program is still written, and the user told why to doubt it."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    turn = Rotation.from_euler("zx", [30, 20], degrees=True).as_matrix().T  # flat along no axis of the frame
    inputs = {
        "sheet": np.c_[rng.uniform(-40, 40, (3000, 2)), np.zeros(3000)] @ turn,
        "wire": np.c_[rng.uniform(-40, 40, 3000), np.zeros((3000, 2))] @ turn,
        "plate": sample_surface(trimesh.creation.box(extents=(80.0, 40.0, 2.0)), n=8192, seed=0),  # 2.5 % deep
    }
    reports = {}
    for name, points in inputs.items():
        np.savetxt(tmp_path / f"{name}.xyz", points)
        out = tmp_path / f"{name}.py"
        assert main(["infer", "--base_model", str(models["full"]), "--point_cloud_file", str(tmp_path / f"{name}.xyz"),
                     "--output", str(out), "--no_png", *TOKENS]) == 0
        reports[name] = json.loads(out.with_suffix(".json").read_text()), capsys.readouterr().err
    report, printed = reports["sheet"]
    assert report["valid"] and report["input_extents"][2] < 1e-9 and report["input_extents"][1] > 0.5
    assert report["input_warning"].startswith("the input is flat (its depth is 0.0% of its size)")
    assert f"warning: {report['input_warning']}" in printed
    report, printed = reports["wire"]
    assert report["input_warning"].startswith("the input lies along a line (its width is 0.0% of its length)")
    assert "warning: the input lies along a line" in printed
    report, printed = reports["plate"]
    assert report["input_warning"] is None and "warning" not in printed
    assert report["input_extents"] == pytest.approx([1.0, 0.5, 0.025], abs=0.01)
