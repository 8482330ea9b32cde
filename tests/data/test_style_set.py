"""The hand-written style sets (evaluation only): every program is labelled, in another style, and builds."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from cad_recode.data.generator import FAMILIES, solid_problem
from cad_recode.data.labels import family_mix, read_family_labels
from cad_recode.data.prepare import find_programs

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
GENERATOR_HEADER = re.compile(r"^import cadquery as cq\nw0=cq\.Workplane\('(XY|YZ|ZX)',origin=")
# each set -> (its least size, the spellings the generator never writes that it must hold)
STYLE_SETS = {
    "style_set": (40, (".box(", ".polyline(", ".hole(", ".polygon(", ".slot2D(", "cutBlind(", "origin=(",
                       "translate(")),
    "style_set_b": (40, (".extrude(-", "both=True", "centered=", "makeBox(", "makeCylinder(", "placeSketch(",
                         ".rarray(", ".polarArray(", "cylinder(height=")),
}


@pytest.mark.parametrize("name", STYLE_SETS)
def test_a_style_set_labels_every_program_with_a_broad_family(name):
    root = DATA / name
    labels = read_family_labels(root)
    assert len(labels) >= STYLE_SETS[name][0]
    assert sorted(labels) == sorted(find_programs(root)["test"])  # data prepare reads exactly these
    counts = Counter(labels.values())
    assert set(counts) == set(FAMILIES) and min(counts.values()) >= 5, counts
    assert family_mix(root).counts == {family: counts[family] for family in FAMILIES}
    assert "never trained on" in json.loads((root / "manifest.json").read_text())["purpose"]


@pytest.mark.parametrize("name", STYLE_SETS)
def test_a_style_set_is_written_in_other_styles_and_builds_valid_solids(name, sandbox):
    root = DATA / name
    ids = sorted(read_family_labels(root))
    codes = [(root / pid).read_text() for pid in ids]
    assert not [pid for pid, code in zip(ids, codes) if GENERATOR_HEADER.match(code)]
    for form in STYLE_SETS[name][1]:  # the spellings the generator never writes are all there
        assert any(form in code for code in codes), form
    sizes = [float(x) for code in codes for x in re.findall(r"\d+(?:\.\d+)?", code)]
    assert max(sizes) > 200 and any(0 < s < 1 for s in sizes)  # outside the generator's frame both ways
    for pid, code, result in zip(ids, codes, sandbox.map(codes, profile="cadquery")):
        assert solid_problem(result) == "", (pid, result.reason)
        assert result.num_faces > 2, pid


def test_the_second_set_shares_no_program_with_the_first():
    first = {p.read_text() for p in (DATA / "style_set" / "test").glob("*.py")}
    assert not [p.name for p in (DATA / "style_set_b" / "test").glob("*.py") if p.read_text() in first]


BEYOND_THE_FAMILIES = (".fillet(", ".chamfer(", ".cskHole(", ".cboreHole(", ".shell(", ".revolve(", ".mirror(",
                       ".spline(", ".intersect(", "cq.Assembly(", "show_object(", "exporters.export(", "def ",
                       "from cadquery import")


def test_the_third_set_holds_what_the_generator_never_writes_and_builds_valid_solids(sandbox):
    root = DATA / "style_set_c"
    labels = read_family_labels(root)
    assert len(labels) >= 20 and sorted(labels) == sorted(find_programs(root)["test"])
    assert set(labels.values()) == set(FAMILIES)  # every family, by the nearest one
    assert "never trained on" in json.loads((root / "manifest.json").read_text())["purpose"]
    ids = sorted(labels)
    codes = [(root / pid).read_text() for pid in ids]
    for form in BEYOND_THE_FAMILIES:
        assert any(form in code for code in codes), form
    for pid, code, result in zip(ids, codes, sandbox.map(codes, profile="cadquery")):
        assert solid_problem(result) == "", (pid, result.reason)
        assert result.num_faces > 2, pid
    earlier = {p.read_text() for name in STYLE_SETS for p in (DATA / name / "test").glob("*.py")}
    assert not [pid for pid, code in zip(ids, codes) if code in earlier]
