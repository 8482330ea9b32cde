"""Best of N's candidates: which are greedy and which sampled (``Decoding.sampling``)."""

from __future__ import annotations

import json

import pytest

from cad_recode.cli import main
from cad_recode.errors import UsageError
from cad_recode.geometry.shapes import example_program
from cad_recode.inference import CADRecoder, Decoding
from cad_recode.inference.decoding import SAMPLING_TEMPERATURE

import infer_artifacts as art

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUBE = example_program("cube")
HOT = 8.0  # far above the memorizer's confidence: a sampled row leaves its program within a few tokens


@pytest.fixture(scope="module")
def recoder(models, sandbox):
    return CADRecoder.from_pretrained(models["full"], sandbox=sandbox, device="cpu")


def test_each_mode_picks_its_greedy_rows():
    firsts = [True, False, True, False, False]
    assert Decoding().greedy_rows(firsts) == [True] * 5  # none, the default: the published protocol's
    assert Decoding(sampling="after_first").greedy_rows(firsts) == firsts
    assert Decoding(sampling="all").greedy_rows(firsts) == [False] * 5
    assert Decoding().sampling_temperature == SAMPLING_TEMPERATURE
    assert Decoding(temperature=0.3).sampling_temperature == 0.3
    with pytest.raises(UsageError, match="sampling must be one of none, after_first, all, got 'some'"):
        Decoding(sampling="some")


def test_greedy_rows_write_what_plain_greedy_writes_and_the_others_sample(recoder, cube_mesh):
    draw = recoder.encode_input(cube_mesh, 1).draws[0].points
    points = [draw] * 4  # one point draw four times: only the decoding can tell the rows apart
    greedy = recoder.generate(points[:1], Decoding(max_new_tokens=art.MAX_NEW_TOKENS, sampling="none"))[0]
    mixed = Decoding(max_new_tokens=art.MAX_NEW_TOKENS, sampling="after_first", temperature=HOT)
    rows = recoder.generate(points, mixed, seed=3, group_size=4)
    assert rows[0] == greedy and greedy[0] == CUBE
    assert all(row[0] != greedy[0] for row in rows[1:])
    assert recoder.generate(points, mixed, seed=3, group_size=4) == rows  # the seed decides the samples
    assert recoder.generate(points, mixed, seed=4, group_size=4)[1:] != rows[1:]
    # the same batch with every row greedy: four times the greedy program
    assert recoder.generate(points, Decoding(max_new_tokens=art.MAX_NEW_TOKENS, sampling="none"),
                            group_size=4) == [greedy] * 4


def test_each_pose_keeps_a_greedy_candidate(recoder, cube_mesh):
    decoding = Decoding(max_new_tokens=art.MAX_NEW_TOKENS, pose="auto", pose_budget=2, sampling="after_first",
                        temperature=HOT)
    item = recoder.encode_input(cube_mesh, 4, decoding=decoding)
    assert [item.pose_name(k) == item.pose_name(0) for k in range(4)] == [True, False, True, False]
    assert item.first_of_reading() == [True, True, False, False]
    rec = recoder.reconstruct_encoded([item], 4, decoding=decoding)[0]
    assert [c.sampled for c in rec.candidates] == [False, False, True, True]
    # the greedy ones write the cube (then a line placing it back from its pose)
    assert [c.code.startswith(CUBE) for c in rec.candidates] == [True, True, False, False]
    upright = recoder.encode_input(cube_mesh, 3, decoding=Decoding(pose="none"))
    assert upright.first_of_reading() == [True, False, False]


@pytest.mark.parametrize("flags, sampled", [
    ([], [False, False, False]),
    (["--sampling", "after_first"], [False, True, True]),
    (["--sampling", "all"], [True, True, True]),
    (["--do_sample"], [True, True, True]),
])
def test_the_report_says_which_candidates_were_sampled(models, tmp_path, capsys, flags, sampled):
    out = tmp_path / "cube.py"
    code = main(["infer", "--base_model", str(models["full"]), "--shape", "cube", "--num_candidates", "3",
                 "--temperature", str(HOT), "--output", str(out), "--max_new_tokens", str(art.MAX_NEW_TOKENS),
                 *flags])
    report = json.loads(out.with_suffix(".json").read_text())
    assert code == (0 if report["valid"] else 1), capsys.readouterr().err  # all sampled this hot: none runs
    assert [c["sampled"] for c in report["candidates"]] == sampled
    assert report["decoding"]["sampling"] == (flags[-1] if flags[:1] == ["--sampling"] else
                                              "all" if flags else "none")
