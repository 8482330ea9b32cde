"""The hand-written style set (evaluation only): every program is labelled, in another style, and builds."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from cad_recode.data.generator import FAMILIES, solid_problem
from cad_recode.data.labels import family_mix, read_family_labels
from cad_recode.data.prepare import find_programs

STYLE_SET = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "style_set"
GENERATOR_HEADER = re.compile(r"^import cadquery as cq\nw0=cq\.Workplane\('(XY|YZ|ZX)',origin=")


def test_the_style_set_labels_every_program_with_a_broad_family():
    labels = read_family_labels(STYLE_SET)
    assert len(labels) >= 40
    assert sorted(labels) == sorted(find_programs(STYLE_SET)["test"])  # data prepare reads exactly these
    counts = Counter(labels.values())
    assert set(counts) == set(FAMILIES) and min(counts.values()) >= 5, counts
    assert family_mix(STYLE_SET).counts == {family: counts[family] for family in FAMILIES}
    assert "never trained on" in json.loads((STYLE_SET / "manifest.json").read_text())["purpose"]


def test_the_style_set_is_written_in_other_styles_and_builds_valid_solids(sandbox):
    ids = sorted(read_family_labels(STYLE_SET))
    codes = [(STYLE_SET / pid).read_text() for pid in ids]
    assert not [pid for pid, code in zip(ids, codes) if GENERATOR_HEADER.match(code)]
    # the spellings the generator never writes are all there
    for form in (".box(", ".polyline(", ".hole(", ".polygon(", ".slot2D(", "cutBlind(", "origin=(", "translate("):
        assert any(form in code for code in codes), form
    sizes = [float(x) for code in codes for x in re.findall(r"\d+(?:\.\d+)?", code)]
    assert max(sizes) > 200 and any(0 < s < 1 for s in sizes)  # outside the generator's frame both ways
    for pid, code, result in zip(ids, codes, sandbox.map(codes, profile="cadquery")):
        assert solid_problem(result) == "", (pid, result.reason)
        assert result.num_faces > 2, pid
