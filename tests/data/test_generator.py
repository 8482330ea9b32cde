"""The program generator: determinism, style, validity in the sandbox, dataset layout, dedup."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cad_recode.data import layout
from cad_recode.data.cadcode import BoxBody, canonical_loop, render
from cad_recode.data.generator import (
    UniquePrograms,
    count_operations,
    generate_dataset,
    generate_part,
    generate_program,
    program_rng,
    programs_per_second,
    solid_problem,
)
from cad_recode.errors import InputError, UsageError

# `sandbox`: the suite's shared one-worker sandbox (tests/conftest.py)

def _programs(seed, n, complexity):
    return [generate_program(program_rng(seed, i), complexity) for i in range(n)]


@pytest.mark.parametrize("complexity", ["simple", "medium", "full", "broad"])
def test_a_seed_fixes_the_programs(complexity):
    first, again, other = _programs(7, 30, complexity), _programs(7, 30, complexity), _programs(8, 30, complexity)
    assert first == again
    assert len(set(first)) == 30
    assert not set(first) & set(other)


def test_unknown_complexity_is_a_usage_error():
    with pytest.raises(UsageError, match="simple, medium, full, broad"):
        generate_program(np.random.default_rng(0), "hard")


def test_programs_are_in_the_cad_recode_style():
    header = re.compile(r"^import cadquery as cq\n(w\d=cq\.Workplane\('(XY|YZ|ZX)',origin=\([-\d,]+\)\)\n)+r=w0\.")
    programs = _programs(1, 200, "simple") + _programs(1, 100, "medium") + _programs(1, 50, "full")
    for code in programs + _programs(1, 100, "broad"):
        assert header.match(code), code
        assert not code.endswith("\n") and code.count("\nr=") == 1
        numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", code.split("\nr=")[1])]
        assert all(abs(x) <= 200 for x in numbers), code


@pytest.mark.parametrize("complexity", ["simple", "medium"])
def test_simple_programs_have_one_spelling_per_shape(complexity):
    for i in range(300):
        part = generate_part(program_rng(2, i), complexity)
        code = render(part)
        assert "." not in re.sub(r"\.[a-zA-Z]", "", code.split("\nr=")[1]), code  # integers only
        assert 1 <= len(part) <= 2
        for body in part:
            assert body.depth > 0, code  # grows from its origin, never backwards
            if isinstance(body, BoxBody):
                assert body.plane == "XY", code
        # the plane origins are the bottoms along each normal; no rect/circle sketch without a hole
        if ".sketch().rect(" in code or re.search(r"\.sketch\(\)(\.push\(\[[^]]*\]\))?\.circle\(", code):
            assert "mode='s'" in code, code


def test_simple_plates_are_rectangles_and_circles_and_medium_adds_drawn_outlines():
    simple, medium = _programs(4, 300, "simple"), _programs(4, 300, "medium")
    assert not [code for code in simple if ".segment(" in code or ".arc(" in code]
    assert sum(".sketch().rect(" in code or ".sketch().circle(" in code for code in simple) > 100
    drawn = [code for code in medium if ".sketch().segment(" in code]
    assert 50 < len(drawn) < 250  # polygon and arc outlines, besides the simple shapes


def test_loops_start_at_their_smallest_vertex_and_run_counter_clockwise():
    clockwise = [(10, 10), (10, 0), (0, 0), (0, 10)]  # the top edge (0, 10) -> (10, 10) bulges up
    loop = canonical_loop(clockwise, [None, None, None, (5, 12)])
    assert loop.vertices[0] == (0, 0)
    assert loop.vertices == ((0, 0), (10, 0), (10, 10), (0, 10))
    # the arc stays on the edge between (10, 10) and (0, 10) whichever way it was given
    assert loop.mids == (None, None, (5, 12), None)


def test_a_sample_of_programs_executes_to_one_centred_valid_solid(sandbox):
    codes = _programs(11, 80, "simple")  # with the 20 full ones below: a sample of 100
    results = sandbox.map(codes)
    problems = [(solid_problem(r), r.reason, c) for r, c in zip(results, codes) if solid_problem(r)]
    assert not problems
    for result, code in zip(results, codes):
        lo, hi = np.array(result.bbox_min), np.array(result.bbox_max)
        assert (hi - lo).max() == pytest.approx(200, abs=1.01), code
        assert np.abs((hi + lo) / 2).max() <= 1.0, code
        assert result.num_faces > 2


def test_full_programs_are_varied_and_mostly_valid(sandbox):
    codes = _programs(12, 20, "full")
    ops = [count_operations(c) for c in codes]
    for name in ("segment", "arc", "circle", "rect", "mode='s'", "union", "plane XY", "plane YZ", "plane ZX"):
        assert sum(o[name] for o in ops) > 0, name
    problems = [solid_problem(r) for r in sandbox.map(codes)]
    assert problems.count("") >= 17  # 7 of 200 fail at seed 0 (disjoint pieces); the dataset drops them


def test_generated_dataset_has_the_public_layout_and_a_seed_fixed_split(tmp_path, sandbox):
    out = tmp_path / "ds"
    report = generate_dataset(out, 20, seed=5, complexity="simple", val_fraction=0.1, test_fraction=0.15,
                              batch_size=8, progress=False, sandbox=sandbox)
    assert report.counts == {"train": 15, "val": 2, "test": 3}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.py"))
    expected = ([f"train/batch_00/{i}.py" for i in range(8)] + [f"train/batch_01/{i}.py" for i in range(8, 15)]
                + ["val/0.py", "val/1.py", "test/0.py", "test/1.py", "test/2.py"])
    assert files == sorted(expected)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["complexity"] == "simple"
    assert manifest["counts"] == report.counts and manifest["failure_rate"] == 0.0
    assert manifest["attempts"] >= 20 and manifest["generator_version"]
    texts = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.py")}
    assert len(set(texts.values())) == 20
    # every kept program is one valid solid
    assert all(not solid_problem(r) for r in sandbox.map(list(texts.values())))

    again = tmp_path / "again"
    generate_dataset(again, 20, seed=5, complexity="simple", val_fraction=0.1, test_fraction=0.15,
                     batch_size=8, progress=False, sandbox=sandbox)
    assert {p.relative_to(again).as_posix(): p.read_text() for p in again.rglob("*.py")} == texts

    # simple programs are valid and unique by construction: without the sandbox check, the same dataset
    unchecked = tmp_path / "unchecked"
    generate_dataset(unchecked, 20, seed=5, complexity="simple", val_fraction=0.1, test_fraction=0.15,
                     batch_size=8, progress=False, execute=False)
    assert {p.relative_to(unchecked).as_posix(): p.read_text() for p in unchecked.rglob("*.py")} == texts
    assert json.loads((unchecked / "manifest.json").read_text())["executed"] is False


def test_full_dataset_keeps_only_valid_solids(tmp_path, sandbox):
    out = tmp_path / "full"
    report = generate_dataset(out, 12, seed=1, complexity="full", progress=False, sandbox=sandbox)
    codes = [p.read_text() for p in sorted(out.rglob("*.py"))]
    assert len(codes) == 12
    assert all(not solid_problem(r) for r in sandbox.map(codes))
    assert report.failure_rate < 0.3
    assert sum(report.failures.values()) == report.attempts - report.duplicates_code - report.valid


def test_an_existing_dataset_is_refused_unless_overwrite(tmp_path, sandbox):
    out = tmp_path / "ds"
    generate_dataset(out, 3, seed=0, progress=False, sandbox=sandbox)
    before = {p: p.read_text() for p in out.rglob("*.py")}
    with pytest.raises(InputError, match="already holds a dataset; pass --overwrite"):
        generate_dataset(out, 3, seed=1, progress=False, sandbox=sandbox)
    assert {p: p.read_text() for p in out.rglob("*.py")} == before
    generate_dataset(out, 3, seed=1, progress=False, sandbox=sandbox, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind

    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(InputError, match="holds no dataset"):
        generate_dataset(other, 3, progress=False, sandbox=sandbox, overwrite=True)
    assert (other / "readme.txt").read_text() == "mine"


def test_running_out_of_attempts_is_a_clear_error_and_writes_nothing(tmp_path, sandbox):
    out = tmp_path / "ds"
    with pytest.raises(UsageError, match=r"only \d of 5 valid unique simple programs after 3 attempts"):
        generate_dataset(out, 5, seed=0, progress=False, sandbox=sandbox, max_attempts=3)
    assert not out.exists()


def test_bad_split_fractions_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--val-fraction"):
        generate_dataset(tmp_path / "x", 5, val_fraction=1.5, progress=False)
    with pytest.raises(UsageError, match="below 1"):
        generate_dataset(tmp_path / "x", 5, val_fraction=0.5, test_fraction=0.5, progress=False)
    assert not (tmp_path / "x").exists()


def test_duplicates_are_dropped_by_code_and_by_geometry(sandbox):
    box_xy = "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-5))\nr=w0.workplane(offset=10/2).box(40,20,10)"
    box_xy_spaced = box_xy.replace("r=", "r = ").replace(",", ", ")
    # the same cuboid on the YZ plane: (u, v, n) = (y, z, x)
    box_yz = "import cadquery as cq\nw0=cq.Workplane('YZ',origin=(-20,0,0))\nr=w0.workplane(offset=40/2).box(20,10,40)"
    other = box_xy.replace("box(40,20,10)", "box(40,20,12)")
    unique = UniquePrograms()
    fresh = [c for c in (box_xy, box_xy_spaced, box_yz, other) if unique.new_code(c)]
    assert fresh == [box_xy, box_yz, other]
    kept = [c for c, r in zip(fresh, sandbox.map(fresh)) if r.ok and unique.new_shape(r)]
    assert kept == [box_xy, other]
    assert (unique.duplicates_code, unique.duplicates_geometry) == (1, 1)


def test_split_counts_and_paths():
    assert layout.split_counts(100, 0.05, 0.1) == {"train": 85, "val": 5, "test": 10}
    assert layout.program_path("train", 2500, 1000).as_posix() == "train/batch_02/2500.py"
    assert layout.program_path("val", 7).as_posix() == "val/7.py"


def test_generation_rate_is_measurable():
    assert programs_per_second(20, "simple") > 0
