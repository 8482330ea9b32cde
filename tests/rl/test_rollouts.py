"""Rollouts: G programs per input through inference's generation path, run in the sandbox, scored; overlap
changes nothing but time; seeds make them repeatable. Also the input stream and the top-k selection."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import rl_artifacts as ra  # noqa: E402

from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.model.loading import load_cad_recode_model, load_tokenizer  # noqa: E402
from cad_recode.rl.rewards import INVALID_PENALTY, get_reward, score  # noqa: E402
from cad_recode.rl.rollouts import Group, RolloutSettings, Sample, collect_groups, derived_seed  # noqa: E402
from cad_recode.rl.sources import open_prepared  # noqa: E402
from cad_recode.rl.stream import ItemStream  # noqa: E402
from cad_recode.rl.update import Selected, make_batch, select  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
G = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp("rl_inputs")
    cube = sandbox.run(example_program("cube")).to_trimesh()
    data, start = ra.prepared_boxes(root / "data"), ra.start_model(cube, root / "start")
    model, tokenizer = load_cad_recode_model(start), load_tokenizer(start)
    items = open_prepared(data, "train", num_surface_points=1024, sandbox=sandbox)
    return model, tokenizer, items


def _collect(setup, sandbox, *, overlap: bool, update: int = 1, indices=(0, 1, 2)):
    model, tokenizer, items = setup
    settings = RolloutSettings(num_generations=G, temperature=2.0, top_p=None, max_new_tokens=100, grammar=True,
                               runaway_factor=2.0, generation_batch_size=2, overlap=overlap,
                               num_point_tokens=model.config.num_point_tokens)
    return collect_groups(model, tokenizer, items, list(indices), settings, sandbox=sandbox,
                          reward=get_reward("iou_gt"), seeds=lambda chunk: derived_seed(0, update, chunk),
                          point_seed=lambda item: derived_seed(1, update, item), device=torch.device("cpu"))


def test_groups_hold_g_scored_samples_and_overlap_changes_nothing(setup, sandbox):
    """Three inputs in chunks of two: G samples each, rewards = score() of the sandbox's own results, every
    finished program parses (grammar on); with and without the overlap thread the groups are identical."""
    groups, times = _collect(setup, sandbox, overlap=True)
    assert [g.item for g in groups] == [0, 1, 2] and all(len(g.samples) == G for g in groups)
    _, _, items = setup
    for group in groups:
        assert group.points.shape == (32, 3) and group.points.dtype == np.float32
        codes = [s.code for s in group.samples]
        assert score(sandbox.map(codes), items[group.item].target, get_reward("iou_gt")) == [s.reward for s in group.samples]
        assert all(s.status != "syntax_error" for s in group.samples if s.finished)  # only a cut one may not parse
        assert all(s.reward == INVALID_PENALTY or 0.0 <= s.reward <= 10.0 for s in group.samples)
    assert len({s.code for g in groups for s in g.samples}) > 1  # T = 2: samples differ
    assert times.tokens > 0 and times.generate > 0 and times.sandbox > 0 and times.wall >= times.generate
    serial, _ = _collect(setup, sandbox, overlap=False)
    assert [[(s.ids, s.reward) for s in g.samples] for g in serial] == [[(s.ids, s.reward) for s in g.samples]
                                                                       for g in groups]
    assert all(np.array_equal(a.points, b.points) for a, b in zip(groups, serial))


class _HeldReward:
    """A user's reward (a name and a call) that holds every call until released, and counts them."""

    name = "held"

    def __init__(self):
        self.calls, self.release = 0, threading.Event()

    def __call__(self, solid, target) -> float:
        self.release.wait(timeout=30)
        self.calls += 1
        return 0.0


def test_an_interrupt_drops_the_queued_chunks_instead_of_running_them(setup, sandbox):
    """Ctrl+C while chunk 2 is generated, chunk 0 still being scored and chunk 1 queued: collect_groups
    raises at once, without running chunk 1 (it used to run and score every queued chunk first)."""
    model, tokenizer, items = setup
    reward = _HeldReward()
    threading.Timer(5.0, reward.release.set).start()  # the old behaviour would wait here, not hang the suite

    def seeds(chunk: int) -> int:
        if chunk == 2:
            raise KeyboardInterrupt
        return derived_seed(0, 1, chunk)

    settings = RolloutSettings(num_generations=G, temperature=2.0, top_p=None, max_new_tokens=100, grammar=True,
                               runaway_factor=2.0, generation_batch_size=1, overlap=True,
                               num_point_tokens=model.config.num_point_tokens)
    with pytest.raises(KeyboardInterrupt):
        collect_groups(model, tokenizer, items, [0, 1, 2], settings, sandbox=sandbox, reward=reward, seeds=seeds,
                       point_seed=lambda item: derived_seed(1, 1, item), device=torch.device("cpu"))
    assert reward.calls == 0  # chunk 0 is still held: nothing waited for it (the old way ran chunks 0 and 1 first)
    reward.release.set()
    deadline = time.monotonic() + 120
    while reward.calls < G and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # time enough for a chunk 1 that was not dropped to start scoring
    assert reward.calls == G  # chunk 0 (one input, G samples) ended; chunk 1 never ran


def test_rollouts_are_a_function_of_the_seeds(setup, sandbox):
    first, _ = _collect(setup, sandbox, overlap=False, update=5, indices=(3,))
    again, _ = _collect(setup, sandbox, overlap=False, update=5, indices=(3,))
    other, _ = _collect(setup, sandbox, overlap=False, update=6, indices=(3,))
    ids = lambda groups: [s.ids for g in groups for s in g.samples]  # noqa: E731
    assert ids(first) == ids(again) and ids(first) != ids(other)


def test_selection_keeps_top_k_by_absolute_advantage():
    """Rewards (10, 0, 4, 6): mean 5, A = (5, -5, -1, 1): top-2 by |A| are samples 0 and 1 (tie: lower first)."""
    points = np.zeros((2, 3), np.float32)
    samples = [Sample([7, i], "", True, "ok", r) for i, r in enumerate((10.0, 0.0, 4.0, 6.0))]
    flat = [Sample([1], "", True, "ok", 3.0) for _ in range(4)]
    selection = select([Group(0, points, samples), Group(1, points, flat)], top_k=2)
    assert [(s.ids, s.advantage) for s in selection.samples[:2]] == [([7, 0], 5.0), ([7, 1], -5.0)]
    assert selection.groups == 2 and selection.zero_advantage_groups == 1  # the flat group teaches nothing
    assert [s.advantage for s in selection.samples[2:]] == [0.0, 0.0]  # still k rows: equal work on every rank
    cut = Selected(points, [5], False, 0.0)  # ended by the runaway stop or the budget: no end token
    batch = make_batch([selection.samples[0], cut], start_id=1, end_id=0, pad_id=0, device=torch.device("cpu"))
    # <|im_start|> 7 0 <|endoftext|>, and a cut sample without its end token, right-padded
    assert batch.input_ids.tolist() == [[1, 7, 0, 0], [1, 5, 0, 0]]
    assert batch.mask.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_stream_skips_solved_inputs_wraps_epochs_and_restores():
    stream = ItemStream(5, seed=3)
    first = stream.take(3)
    assert sorted(first) == sorted(set(first)) and len(first) == 3
    stream.solved = {first[0]}
    state = stream.state()
    rest = stream.take(4)  # 2 left in epoch 0, then epoch 1 without the solved one
    assert stream.epoch == 1 and first[0] not in rest and set(rest[:2]) == set(range(5)) - set(first)
    copy = ItemStream(5, seed=3)
    copy.restore(state)
    assert copy.take(4) == rest
    stream.solved = set(range(5))
    assert stream.take(2) == []
