"""Self-imitation: which program is imitated (hand-built groups), the outline fits (real sandbox), a run.

The run uses the RL tests' tiny start model, which writes the cube program for anything; on boxes that
are not cubes the points' own outline fit beats it, so the fit is what gets imitated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).parent))
import rl_artifacts as ra  # noqa: E402

from cad_recode.errors import UsageError  # noqa: E402
from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.model.loading import load_cad_recode_model, load_tokenizer  # noqa: E402
from cad_recode.model.runlog import read_train_log  # noqa: E402
from cad_recode.model.tokenizer import CodeTokens  # noqa: E402
from cad_recode.rl.config import load_rl_config  # noqa: E402
from cad_recode.rl.imitation import FitCache, Found, imitation_targets  # noqa: E402
from cad_recode.rl.loop import run_rl  # noqa: E402
from cad_recode.rl.rewards import get_reward  # noqa: E402
from cad_recode.rl.rollouts import Group, Sample  # noqa: E402
from cad_recode.rl.sources import mesh_item  # noqa: E402
from cad_recode.rl.update import Selected, make_batch, sft_cross_entropy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FIT_IDS = [7, 7, 7]


def _group(item: int, rewards, finished=None, status=None) -> Group:
    finished = finished or [True] * len(rewards)
    status = status or ["ok"] * len(rewards)
    samples = [Sample([item, k], f"code {k}", done, state, float(r))
               for k, (r, done, state) in enumerate(zip(rewards, finished, status))]
    return Group(item, np.full((4, 3), float(item)), samples)


def _fit(reward: float) -> Found:
    return Found(FIT_IDS, True, reward, "fit")


def test_the_best_program_found_is_imitated_only_where_it_beats_greedy_by_the_margin():
    groups = [
        _group(0, [3.0, 8.0, -10.0, 5.0]),  # best sample 8 against greedy 6: imitated
        _group(1, [6.2, 1.0]),  # 6.2 against 6: under the margin
        _group(2, [6.2, 1.0]),  # the same, but a fit scores 9: the fit
        _group(3, [9.9, 7.0], finished=[False, True]),  # the 9.9 was cut: the ended 7.0 against greedy 6
        _group(4, [9.0, 2.0], status=["ok", "error"]),  # sample and fit tie at 9: the sample, the model's spelling
        _group(5, [-10.0, -10.0], status=["error", "error"]),  # nothing ran, no fit: nothing
    ]
    greedy = [6.0, 6.0, 6.0, 6.0, 2.0, -10.0]
    fits = [None, None, _fit(9.0), _fit(5.0), _fit(9.0), None]
    chosen = imitation_targets(groups, greedy, fits, ("samples", "fit"), margin=0.5)
    assert [(int(t.points[0, 0]), t.ids, source) for t, source in chosen] == [
        (0, [0, 1], "samples"), (2, FIT_IDS, "fit"), (3, [3, 1], "samples"), (4, [4, 0], "samples")]
    assert all(t.finished and t.advantage == 0.0 for t, _ in chosen)

    only_fits = imitation_targets(groups, greedy, fits, ("fit",), margin=0.5)
    assert [(int(t.points[0, 0]), source) for t, source in only_fits] == [(2, "fit"), (4, "fit")]
    assert imitation_targets(groups, greedy, fits, ("samples",), margin=8.0) == []  # the largest gain is 7
    with pytest.raises(ValueError):  # one greedy reward per group, or the pairing is wrong
        imitation_targets(groups, greedy[:-1], fits, ("samples",), margin=0.5)


class CountingSandbox:
    """The real sandbox, with a count of the programs it was given."""

    def __init__(self, sandbox):
        self.sandbox, self.programs = sandbox, 0

    def map(self, codes):
        self.programs += len(codes)
        return self.sandbox.map(codes)


@pytest.fixture(scope="module")
def start(tmp_path_factory, sandbox):
    """The RL tests' start model: it writes the cube program for anything."""
    cube = sandbox.run(example_program("cube")).to_trimesh()
    return ra.start_model(cube, tmp_path_factory.mktemp("imitation_start") / "start")


@pytest.fixture(scope="module")
def tokenizer(start):
    return load_tokenizer(start)


def test_a_box_is_fitted_once_and_its_fit_scores_near_the_maximum(sandbox, tokenizer):
    plate = mesh_item("plate", trimesh.creation.box(extents=(90, 40, 12)), 2048, None, None)
    counting = CountingSandbox(sandbox)
    cache = FitCache(max_tokens=400)
    first = cache.lookup([plate], [0], tokenizer, counting, get_reward("iou_input"))
    runs = counting.programs
    assert runs >= 1 and first[0] is not None and first[0].source == "fit"
    assert first[0].reward >= 9.5  # IoU >= 0.95 with the plate itself
    assert "box(" in tokenizer.decode(first[0].ids) or "rect(" in tokenizer.decode(first[0].ids)
    again = cache.lookup([plate], [0, 0], tokenizer, counting, get_reward("iou_input"))
    assert counting.programs == runs and again == [first[0], first[0]]  # kept, not run again

    too_short = FitCache(max_tokens=5).lookup([plate], [0], tokenizer, sandbox, get_reward("iou_input"))
    assert too_short == [None]  # no fit the model could write within max_new_tokens


def test_bad_imitation_settings_are_one_line_errors(tmp_path):
    common = ra.settings(tmp_path / "data", tmp_path / "start", tmp_path / "out")
    with pytest.raises(UsageError, match=r"imitation_sources.*must list some of samples, fit \(not outline\)"):
        load_rl_config(None, {**common, "imitation_sources": ["samples", "outline"]})
    with pytest.raises(UsageError, match="imitation_sources.*must list some of samples, fit"):
        load_rl_config(None, {**common, "imitation_sources": []})
    with pytest.raises(UsageError, match="imitation_coef.*must be >= 0"):
        load_rl_config(None, {**common, "imitation_coef": -1.0})
    with pytest.raises(UsageError, match="policy_coef is 0 and there is no imitation or anchor term: nothing would"):
        load_rl_config(None, {**common, "policy_coef": 0.0})
    assert load_rl_config(None, {**common, "policy_coef": 0.0, "imitation_coef": 1.0}).policy_coef == 0.0


def test_a_run_imitates_the_boxes_fits_and_learns_to_write_them(tmp_path, sandbox, start, tokenizer):
    """The start writes a cube for every box; with imitation the run logs its counts, and the fit of a box
    it trained on becomes far more likely than after the same run without imitation."""
    data = ra.prepared_boxes(tmp_path / "data")
    common = dict(max_updates=3, eval_steps=0, save_steps=10)
    run_rl(ra.rl_config(data, start, tmp_path / "plain", **common))
    run_rl(ra.rl_config(data, start, tmp_path / "imitating", **common, imitation_coef=1.0))
    records = read_train_log(tmp_path / "imitating")
    assert all(1 <= r["imitated"] <= 4 and r["imitation_loss"] > 0 for r in records)
    assert sum(r["imitated_from_fit"] for r in records) >= 1
    assert all(-10 <= r["greedy_reward_mean"] <= 10 for r in records)
    assert "imitated" not in read_train_log(tmp_path / "plain")[0]

    # a flat box of the training split: its best fit, read by each trained model from the same points
    flat = mesh_item("flat", trimesh.creation.box(extents=(50, 50, 20)), 2048, None, None)
    fit = FitCache(max_tokens=ra.art.MAX_NEW_TOKENS).lookup([flat], [0], tokenizer, sandbox, get_reward("iou_input"))[0]
    assert fit is not None and fit.reward >= 9.5
    tokens = CodeTokens.from_tokenizer(tokenizer)
    losses = {}
    for name in ("plain", "imitating"):
        model = load_cad_recode_model(tmp_path / name)
        points = flat.model_points(0, int(model.config.num_point_tokens))
        batch = make_batch([Selected(points, fit.ids, True, 0.0)], tokens.start_id, tokens.end_id, tokens.pad_id,
                           torch.device("cpu"))
        with torch.no_grad():
            losses[name] = float(sft_cross_entropy(model, batch))
    assert losses["imitating"] < 0.7 * losses["plain"], losses
