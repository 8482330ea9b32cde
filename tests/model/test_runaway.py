"""RunawayStop: a best-of-N row far longer than its finished siblings ends early, nothing else does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/infer_artifacts.py
import infer_artifacts as art  # noqa: E402

from cad_recode.errors import UsageError  # noqa: E402
from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402
from cad_recode.model.runaway import RunawayStop  # noqa: E402
from cad_recode.model.wrapper import code_generation_config  # noqa: E402

END, PAD, WORD = 0, 0, 7  # pad = end, as with Qwen's <|endoftext|>


def run_steps(stop: RunawayStop, ends_at: list[int | None], steps: int) -> list[int | None]:
    """Feed growing rows (row i writes END at ends_at[i]); return the step each row was cut at."""
    cut_at: list[int | None] = [None] * len(ends_at)
    ids = torch.empty(len(ends_at), 0, dtype=torch.long)
    for step in range(steps):
        column = []
        for i, end in enumerate(ends_at):
            done = (end is not None and step > end) or cut_at[i] is not None
            column.append(PAD if done else END if step == end else WORD)
        ids = torch.cat([ids, torch.tensor(column).unsqueeze(1)], dim=1)
        for i, stopped in enumerate(stop(ids, None).tolist()):
            if stopped and cut_at[i] is None:
                cut_at[i] = ids.shape[1]
    return cut_at


def test_a_runaway_is_cut_past_twice_its_longest_finished_sibling():
    stop = RunawayStop(group_size=4, end_id=END, factor=2.0)
    cut_at = run_steps(stop, [10, 12, 14, None], steps=60)
    # siblings finished after 10, 12, 14 tokens: the runaway ends at 29 > 2 x 14
    assert cut_at == [None, None, None, 29]
    assert stop.cut.tolist() == [False, False, False, True]


def test_no_cut_before_half_the_group_finished():
    stop = RunawayStop(group_size=4, end_id=END, factor=2.0)
    cut_at = run_steps(stop, [5, None, None, 40], steps=39)
    assert cut_at == [None, None, None, None]  # one of four finished: the others may still be right
    stop = RunawayStop(group_size=4, end_id=END, factor=2.0)
    # row 3 finishes after 40 tokens: two of four are done, so rows 1 and 2 end past 80
    assert run_steps(stop, [5, None, None, 40], steps=90) == [None, 81, 81, None]


def test_groups_are_judged_apart_and_groups_of_one_never_cut():
    stop = RunawayStop(group_size=2, end_id=END, factor=3.0)
    # group 0 = rows 0, 1; group 1 = rows 2, 3 (whose finished row is long)
    assert run_steps(stop, [4, None, 30, None], steps=40) == [None, 13, None, None]
    single = RunawayStop(group_size=1, end_id=END)
    assert run_steps(single, [3, None], steps=50) == [None, None]


def test_a_cut_row_stays_cut_though_its_padding_is_the_end_id():
    stop = RunawayStop(group_size=3, end_id=END, factor=2.0)
    cut_at = run_steps(stop, [4, 5, None], steps=30)
    assert cut_at == [None, None, 11]
    # rows 19 tokens after the cut: row 2 is padded with END but is still reported as cut, not finished
    assert stop.cut.tolist() == [False, False, True]


def test_bad_arguments():
    with pytest.raises(ValueError, match="factor must be > 1"):
        RunawayStop(group_size=2, end_id=END, factor=1.0)
    with pytest.raises(ValueError, match="group_size"):
        RunawayStop(group_size=0, end_id=END)
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        RunawayStop(group_size=4, end_id=END)(torch.zeros(6, 1, dtype=torch.long), None)
    with pytest.raises(UsageError, match="runaway_factor must be 0"):
        Decoding(runaway_factor=0.5)


class NeverEnd(LogitsProcessor):
    """Forbids the end token in one row: a candidate that would run to max_new_tokens."""

    def __init__(self, row: int, end_id: int):
        self.row, self.end_id = row, end_id

    def __call__(self, input_ids, scores):
        scores[self.row, self.end_id] = -float("inf")
        return scores


@pytest.mark.usefixtures("one_torch_thread")
def test_hf_generate_ends_the_runaway_and_keeps_the_others(tmp_path, sandbox):
    cube_mesh = sandbox.run(example_program("cube")).to_trimesh()
    recoder = CADRecoder.from_pretrained(art.save_memorizer(cube_mesh, tmp_path / "full"), sandbox=sandbox, device="cpu")
    points = art.shape_points(cube_mesh)  # 4 draws of the cube: one group of 4 candidates
    tokens = recoder.tokens
    prompt = recoder.core.build_prompt(points, tokens)
    stop = RunawayStop(group_size=4, end_id=tokens.end_id, factor=2.0)
    rows = recoder.core.generate(
        inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask,
        generation_config=code_generation_config(tokens, max_new_tokens=400),
        stopping_criteria=StoppingCriteriaList([stop]), logits_processor=LogitsProcessorList([NeverEnd(3, tokens.end_id)]),
    )
    program_tokens = len(art.tokenizer().encode(example_program("cube")))
    assert stop.cut.tolist() == [False, False, False, True]
    # the batch ran to just past twice the finished programs' length, not to 400 tokens
    assert rows.shape[1] == 2 * program_tokens + 1
    codes = [art.tokenizer().decode(ids) for ids in tokens.strip_rows(rows[:3])]
    assert codes == [example_program("cube")] * 3
