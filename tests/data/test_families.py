"""The broad level: every family on every plane builds a valid solid in the frame; weights, labels, spelling."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from cad_recode.data.generator import (
    FAMILIES,
    FAMILY_WEIGHTS,
    generate_dataset,
    generate_labelled,
    generate_program,
    program_rng,
    solid_problem,
)
from cad_recode.data.labels import family_mix, read_family_labels
from cad_recode.data.prepare import prepare_dataset
from cad_recode.data.shards import PreparedSplit
from cad_recode.data.stats import dataset_stats
from cad_recode.errors import UsageError

PLANES = ("XY", "YZ", "ZX")
# a text mark each family's programs carry (the family's spelling)
FAMILY_MARKS = {
    "box": r"^r=w0\.workplane\(offset=\d+/2\)\.box\(\d+,\d+,\d+\)$",
    "cylinder": r"^r=w0\.workplane\(offset=\d+/2\)\.cylinder\(\d+,\d+\)$",
    "plate": r"^r=w0\.sketch\(\)\.(rect|circle)\(.*mode='s'.*\.finalize\(\)\.extrude\(\d+\)$",
    "outline": r"^r=w0\.sketch\(\)\.(segment|arc)\(",
    "ring": r"^r=w0\.sketch\(\)\.(circle\(\d+\)\.circle\(\d+,mode='s'\)|rect\(\d+,\d+\)\.rect\(\d+,\d+,mode='s'\))",
    "stacked": r"\.union\(w1\.",
    "pocket": r"\.cut\(w1\.workplane\(offset=\d+/2\)",
    "through_cut": r"^r=w0\.workplane\(offset=\d+/2\)\.box\(\d+,\d+,\d+\)\.cut\(",
}


def _family_on_plane(family: str, plane: str):
    """The first program of `family` whose base stands on `plane` (seed 0, attempts in order)."""
    for i in range(200):
        item = generate_labelled(program_rng(0, i), "broad", family=family)
        if item.part[0].plane == plane:
            return item
    raise AssertionError(f"no {family} program on {plane} in 200 draws")


def test_every_family_on_every_plane_builds_one_valid_solid_in_the_frame(sandbox):
    items = [_family_on_plane(family, plane) for family in FAMILIES for plane in PLANES]
    codes = [item.code for item in items]
    for item, code in zip(items, codes):
        assert item.family in FAMILIES
        assert re.search(FAMILY_MARKS[item.family], code.split("\n")[-1]), code
        assert f"cq.Workplane('{item.part[0].plane}'" in code.split("\n")[1]
    for code, result in zip(codes, sandbox.map(codes)):
        assert solid_problem(result) == "", (result.reason, code)
        assert result.num_faces > 2, code
        lo, hi = np.array(result.bbox_min), np.array(result.bbox_max)
        assert (hi - lo).max() == pytest.approx(200, abs=1.01), code  # the whole frame
        assert lo.min() >= -100.6 and hi.max() <= 100.6, code


def test_family_shares_follow_the_weights():
    drawn = Counter(generate_labelled(program_rng(3, i), "broad").family for i in range(2000))
    assert set(drawn) == set(FAMILIES)
    assert sum(FAMILY_WEIGHTS.values()) == pytest.approx(1.0)
    for family, weight in FAMILY_WEIGHTS.items():
        assert abs(drawn[family] / 2000 - weight) < 0.03, (family, drawn[family])
    assert min(FAMILY_WEIGHTS.values()) >= 0.08  # no family starved


def test_a_seed_fixes_the_broad_programs_and_their_labels():
    first = [generate_labelled(program_rng(5, i), "broad") for i in range(60)]
    again = [generate_labelled(program_rng(5, i), "broad") for i in range(60)]
    other = [generate_program(program_rng(6, i), "broad") for i in range(60)]
    assert [(a.family, a.code) for a in first] == [(a.family, a.code) for a in again]
    assert len({a.code for a in first}) == 60
    assert not {a.code for a in first} & set(other)


def test_broad_programs_have_one_spelling_inside_the_frame():
    for i in range(300):
        item = generate_labelled(program_rng(7, i), "broad")
        body = item.code.split("\nr=")[1]
        numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", body)]
        assert all(abs(x) <= 200 for x in numbers), item.code  # sizes up to 200, coordinates within 100
        assert all((2 * x).is_integer() for x in numbers), item.code  # integers, centres at most on halves
        assert all(b.depth > 0 for b in item.part), item.code  # every body grows from its origin
        if item.family == "box":  # a lone box stands on the plane normal to its unique thinnest side
            box = item.part[0]
            assert box.depth < min(box.w, box.h), item.code


def test_unknown_family_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown family 'gear' of level broad; use one of: box, cylinder"):
        generate_labelled(program_rng(0, 0), "broad", family="gear")


def test_full_writes_the_public_forms():
    codes = [generate_program(program_rng(2, i), "full") for i in range(300)]
    assert any(re.search(r"push\(\[\(-?\d+\.5,", c) for c in codes)  # half-unit centres
    assert any(re.search(r"moveTo\((-?\d+(\.5)?),(-?\d+\.5)\)|moveTo\((-?\d+\.5),", c) for c in codes)
    assert any(re.search(r"push\(\[[^]]*\]\)\.circle\(\d+\)\.circle\(\d+,mode='s'\)", c) for c in codes)
    assert any(".reset().face(" in c and ",mode='s')" in c for c in codes)
    assert any(re.search(r"\.reset\(\)\.face\(w\d\.sketch\(\)[^)]*?(\)[^)]*?)*\.assemble\(\)\)", c) for c in codes)
    assert any(re.search(r"\.arc\(\([^)]*\),\([^)]*\),\([^)]*\)\)", c) for c in codes)  # 3-point arc
    assert any(re.search(r"\.arc\(\([^)]*\),\([^)]*\)\)", c) for c in codes)  # 2-point arc
    assert any(".close().assemble()" in c for c in codes)
    assert any(re.search(r"\)\)\.assemble\(\)", c) for c in codes)  # an arc closes the loop: no close()


def test_dataset_manifest_labels_every_program_and_stats_print_the_mix(tmp_path):
    out = tmp_path / "broad"
    generate_dataset(out, 40, seed=1, complexity="broad", val_fraction=0.1, test_fraction=0.1, batch_size=16,
                     progress=False, execute=False)
    labels = read_family_labels(out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.py"))
    assert sorted(labels) == files
    assert set(labels.values()) <= set(FAMILIES)
    # the label is the family the same seed and attempt draw
    drawn = {generate_labelled(program_rng(1, i), "broad").code: generate_labelled(program_rng(1, i), "broad").family
             for i in range(80)}
    assert all(drawn[(out / rel).read_text()] == family for rel, family in labels.items())
    mix = family_mix(out)
    assert mix.total == 40
    assert mix.counts == {family: list(labels.values()).count(family) for family in FAMILIES}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["families"]["weights"] == FAMILY_WEIGHTS
    summary = dataset_stats(out).summary()
    assert "families (programs, share, weight drawn with):" in summary
    assert re.search(r"  outline +\d+ +\d+\.\d% +\(weight 18\.0%\)", summary)


def test_prepared_data_finds_labels_through_its_source(tmp_path):
    programs = tmp_path / "programs"
    generate_dataset(programs, 6, seed=2, complexity="broad", progress=False, execute=False)
    prepared = tmp_path / "prepared"
    prepare_dataset(programs, prepared, workers=1, progress=False)  # its manifest names the source folder
    labels = read_family_labels(prepared)
    assert len(labels) == 6 and labels == read_family_labels(programs)
    assert set(labels) == set(PreparedSplit.open(prepared, "train").ids())  # 6 programs: all in train
    assert read_family_labels(tmp_path) == {}  # no manifest: no labels
