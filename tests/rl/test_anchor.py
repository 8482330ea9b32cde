"""The anchor (programs replayed as SFT loss during RL): its seeded draw, its loss and gradient, its errors, a run."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))
import rl_artifacts as ra  # noqa: E402

from cad_recode.errors import InputError, UsageError  # noqa: E402
from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.model.loading import load_cad_recode_model, load_tokenizer  # noqa: E402
from cad_recode.model.runlog import read_train_log  # noqa: E402
from cad_recode.model.tokenizer import CodeTokens  # noqa: E402
from cad_recode.rl.anchor import open_anchor  # noqa: E402
from cad_recode.rl.config import load_rl_config  # noqa: E402
from cad_recode.rl.loop import run_rl  # noqa: E402
from cad_recode.rl.objective import clipped_policy_loss  # noqa: E402
from cad_recode.rl.rewards import REWARD_SCALE, get_reward  # noqa: E402
from cad_recode.rl.update import (  # noqa: E402
    SupervisedTerm, UpdateSettings, policy_update, sequence_log_probs, sft_cross_entropy,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PLATES = {"train/4.py", "train/5.py", "train/6.py", "train/7.py"}  # rl_artifacts.BOXES 4-7, labelled plate here


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sandbox):
    """The RL tests' boxes, labelled box (train 0-3) and plate (train 4-7), and the cube-writing start model."""
    root = tmp_path_factory.mktemp("anchor")
    data = ra.prepared_boxes(root / "data")
    manifest = json.loads((data / "manifest.json").read_text())
    ids = [f"train/{i}.py" for i in range(8)] + ["val/0.py", "val/1.py"]
    manifest["families"] = {"names": ["box", "plate"],
                            "by_id": {i: "plate" if i in PLATES else "box" for i in ids}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    cube = sandbox.run(example_program("cube")).to_trimesh()
    return data, ra.start_model(cube, root / "start")


@pytest.fixture(scope="module")
def model(inputs):
    return load_cad_recode_model(inputs[1])


def _anchor(inputs, model, families=(), per_update=4, seed=0, by_family=False, data=None):
    config = model.config
    return open_anchor(str(data or inputs[0]), "train", families, per_update, load_tokenizer(inputs[1]),
                       num_point_tokens=config.num_point_tokens, num_surface_points=config.num_surface_points,
                       max_code_tokens=200, seed=seed, by_family=by_family)


def _pad_id(inputs) -> int:
    return CodeTokens.from_tokenizer(load_tokenizer(inputs[1])).pad_id


def test_the_draw_is_seeded_by_update_and_split_between_processes(inputs, model):
    anchor = _anchor(inputs, model)
    first = anchor.draw(1, 0, 1)
    assert len(first) == len(set(first)) == 4 and set(first) <= set(range(8))
    assert anchor.draw(1, 0, 1) == first  # a resumed run replays the same programs
    assert any(anchor.draw(u, 0, 1) != first for u in range(2, 6))  # another update, another draw
    halves = anchor.draw(1, 0, 2), anchor.draw(1, 1, 2)
    assert not set(halves[0]) & set(halves[1]) and sorted(halves[0] + halves[1]) == sorted(first)


def test_families_restrict_the_draw(inputs, model):
    anchor = _anchor(inputs, model, families=["plate"], per_update=3)
    ids = list(anchor.dataset.split.ids())
    drawn = {ids[anchor.dataset.records[i]] for u in range(1, 8) for i in anchor.draw(u, 0, 1)}
    assert drawn == PLATES  # every plate drawn at some update, never a box


def test_by_family_a_family_of_one_program_is_drawn_as_often_as_a_family_of_seven(inputs, model, tmp_path):
    data = tmp_path / "one_plate"
    shutil.copytree(inputs[0], data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["families"]["by_id"] = {i: "plate" if i == "train/4.py" else "box" for i in manifest["families"]["by_id"]}
    (data / "manifest.json").write_text(json.dumps(manifest))

    def plate_share(anchor) -> float:
        ids = list(anchor.dataset.split.ids())
        programs = [ids[anchor.dataset.records[anchor.draw(u, 0, 1)[0]]] for u in range(400)]
        shapes = [anchor.rollout_items(u, 1, 64)[0].name for u in range(100)]
        return programs.count("train/4.py") / 400, shapes.count("train/4.py") / 100

    programs, shapes = plate_share(_anchor(inputs, model, per_update=1, data=data, by_family=True))
    assert 0.4 < programs < 0.6 and 0.35 < shapes < 0.65  # half the draws, for one row in eight
    programs, shapes = plate_share(_anchor(inputs, model, per_update=1, data=data))
    assert programs < 0.2 and shapes < 0.25  # by share of the rows: about one in eight
    with pytest.raises(InputError, match="carries no family labels, so anchor_by_family cannot balance"):
        _anchor(inputs, model, data=ra.prepared_boxes(tmp_path / "unlabelled"), by_family=True)


def test_anchor_shapes_to_roll_out_are_seeded_and_carry_their_truth_solids(inputs, model, sandbox):
    anchor = _anchor(inputs, model, families=["plate"])
    first = anchor.rollout_items(1, 3, num_surface_points=256)
    names = [item.name for item in first]
    assert len(set(names)) == 3 and set(names) <= PLATES and all(item.family == "plate" for item in first)
    assert [item.name for item in anchor.rollout_items(1, 3, 256)] == names  # a resumed run rolls out the same
    assert any([item.name for item in anchor.rollout_items(u, 3, 256)] != names for u in range(2, 6))
    for item in first:  # the truth box in the model frame: 2 / its longest side, as inference normalizes an input
        dims = np.array(ra.BOXES[int(Path(item.name).stem)], dtype=float)  # train/i.py is BOXES[i]
        np.testing.assert_allclose(item.target.mesh.extents, 2 * dims / dims.max(), atol=1e-6)
        assert item.points.shape == (256, 3) and np.abs(item.points).max() <= 1 + 1e-6 and item.target.watertight
    truth = sandbox.run(anchor.dataset.split[int(Path(names[0]).stem)]["code"]).to_trimesh()
    assert get_reward("iou_gt")(truth, first[0].target) == pytest.approx(REWARD_SCALE, abs=0.05)
    with pytest.raises(InputError, match=r"anchor_rollouts \(5\) is more than the 4 closed truth solids"):
        anchor.rollout_items(1, 5, 256)


def test_bad_anchor_settings_are_one_line_errors(inputs, model, tmp_path):
    with pytest.raises(InputError, match=r"anchor_data_dir .*nowhere not found; give a prepared dataset"):
        open_anchor(str(tmp_path / "nowhere"), "train", (), 4, load_tokenizer(inputs[1]), num_point_tokens=32,
                    num_surface_points=256, max_code_tokens=200, seed=0)
    with pytest.raises(UsageError, match="no family 'ring'; it has box, plate"):
        _anchor(inputs, model, families=["ring"])
    unlabelled = ra.prepared_boxes(tmp_path / "unlabelled")
    with pytest.raises(UsageError, match="carries no family labels.*drop the anchor_families setting"):
        open_anchor(str(unlabelled), "train", ["box"], 4, load_tokenizer(inputs[1]), num_point_tokens=32,
                    num_surface_points=256, max_code_tokens=200, seed=0)
    with pytest.raises(InputError, match="has no program of at most 5 tokens"):
        open_anchor(str(inputs[0]), "train", (), 4, load_tokenizer(inputs[1]), num_point_tokens=32,
                    num_surface_points=256, max_code_tokens=5, seed=0)
    with pytest.raises(UsageError, match="anchor_families selects replayed programs, but anchor_data_dir is not set"):
        load_rl_config(None, ra.settings(inputs[0], inputs[1], tmp_path / "out", anchor_families=["box"]))
    with pytest.raises(UsageError, match="anchor_coef.*must be >= 0"):
        load_rl_config(None, ra.settings(inputs[0], inputs[1], tmp_path / "out", anchor_coef=-1))
    with pytest.raises(UsageError, match="anchor_rollouts rolls out shapes of the anchor data, but anchor_data_dir"):
        load_rl_config(None, ra.settings(inputs[0], inputs[1], tmp_path / "out", anchor_rollouts=2))
    with pytest.raises(UsageError, match="anchor_by_family balances the anchor's families, but anchor_data_dir is not"):
        load_rl_config(None, ra.settings(inputs[0], inputs[1], tmp_path / "out", anchor_by_family=True))


def test_sft_cross_entropy_is_the_models_own_sft_loss(inputs, model):
    """The anchor's loss is SFT's: the model's shifted cross-entropy over the code and end tokens."""
    batch = _anchor(inputs, model).batches(1, 0, 1, micro_batch_size=4, pad_id=_pad_id(inputs),
                                           device=torch.device("cpu"))[0]
    labels = torch.where(batch.attention_mask.bool(), batch.input_ids, -100)
    labels[:, 0] = -100  # <|im_start|> follows the points; it is not a target
    with torch.no_grad():
        sft = model(points=batch.points, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    labels=labels).loss
        ours = sft_cross_entropy(model, batch)
    assert batch.num_tokens == int((labels != -100).sum())
    assert float(ours) == pytest.approx(float(sft), rel=1e-5)


@pytest.mark.parametrize("policy_coef", [1.0, 0.0])
def test_a_step_moves_the_weights_by_the_policy_gradient_plus_coef_times_the_anchor_gradient(inputs, model,
                                                                                               policy_coef):
    """One pass, SGD at lr 1, no clipping: the step is -(policy_coef x grad of the clipped loss + coef x grad of the
    anchor's CE); at policy_coef 0 the anchor alone moves the weights."""
    anchor = _anchor(inputs, model)
    pad = _pad_id(inputs)
    policy_batch = anchor.batches(2, 0, 1, 4, pad, torch.device("cpu"))[0]
    policy_batch.advantages = torch.tensor([1.5, -0.5, 2.0, -3.0])
    anchor_batch = anchor.batches(1, 0, 1, 4, pad, torch.device("cpu"))[0]
    coef = 0.7

    expected = load_cad_recode_model(inputs[1])
    logp = sequence_log_probs(expected, policy_batch, temperature=1.0)
    loss = clipped_policy_loss(logp, logp.detach(), policy_batch.advantages, policy_batch.mask, 0.1).loss
    (policy_coef * loss + coef * sft_cross_entropy(expected, anchor_batch)).backward()

    stepped = load_cad_recode_model(inputs[1])
    optimizer = torch.optim.SGD(stepped.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    settings = UpdateSettings(ppo_epochs=1, micro_batch_size=4, clip_eps=0.1, kl_beta=0.0, max_grad_norm=0.0,
                              temperature=1.0, policy_coef=policy_coef)
    stats = policy_update(stepped, Accelerator(cpu=True), optimizer, scheduler, [policy_batch], settings, None,
                          [SupervisedTerm("anchor", coef, [anchor_batch])])
    with torch.no_grad():
        before = float(sft_cross_entropy(model, anchor_batch))
    assert stats.supervised_loss["anchor"] == pytest.approx(before, rel=1e-5)
    start = dict(model.named_parameters())
    moved = 0
    for name, param in stepped.named_parameters():
        want = start[name].detach() - dict(expected.named_parameters())[name].grad
        torch.testing.assert_close(param.detach(), want, rtol=1e-4, atol=1e-6)
        moved += int(not torch.equal(param, start[name]))
    assert moved > 0


def test_a_run_with_an_anchor_logs_its_loss_and_keeps_the_replayed_programs(inputs, model, tmp_path):
    """With a strong anchor on the plates, the plates' cross-entropy ends lower than after the same run without."""
    data, start = inputs
    common = dict(max_updates=3, eval_steps=0, save_steps=10)
    run_rl(ra.rl_config(data, start, tmp_path / "plain", **common))
    run_rl(ra.rl_config(data, start, tmp_path / "anchored", **common, anchor_data_dir=str(data),
                        anchor_families=["plate"], anchor_per_update=4, anchor_coef=5.0))
    records = read_train_log(tmp_path / "anchored")
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["anchor_loss"] > 0 for r in records)
    assert "anchor_loss" not in read_train_log(tmp_path / "plain")[0]

    plates = _anchor(inputs, model, families=["plate"]).batches(9, 0, 1, 4, _pad_id(inputs), torch.device("cpu"))[0]
    losses = {}
    for name in ("plain", "anchored"):
        trained = load_cad_recode_model(tmp_path / name)  # a full run writes the guide's layout: the model here
        with torch.no_grad():
            losses[name] = float(sft_cross_entropy(trained, plates))
    assert losses["anchored"] < 0.9 * losses["plain"], losses


def test_a_run_rolls_out_anchor_shapes_beside_its_inputs_and_trains_on_them(inputs, tmp_path):
    """Update 1 samples RL's own inputs as a plain run does (their chunks come first, with the same seeds); the
    anchor's two shapes add their groups' top-k to what is trained on, and their reward is logged apart."""
    data, start = inputs
    common = dict(max_updates=2, eval_steps=0, save_steps=10)
    run_rl(ra.rl_config(data, start, tmp_path / "plain", **common))
    run_rl(ra.rl_config(data, start, tmp_path / "rolled", **common, anchor_data_dir=str(data),
                        anchor_families=["plate"], anchor_coef=0.0, anchor_rollouts=2))
    plain, rolled = read_train_log(tmp_path / "plain")[0], read_train_log(tmp_path / "rolled")[0]
    assert rolled["reward_mean"] == pytest.approx(plain["reward_mean"])  # RL's own inputs only
    assert rolled["ir"] == plain["ir"]
    assert rolled["rollout_digest"] != plain["rollout_digest"]
    assert rolled["trained_tokens"] > plain["trained_tokens"]  # 4 + 2 groups' top 2 against 4 groups'
    assert -10 <= rolled["anchor_reward_mean"] <= 10
    assert "anchor_loss" not in rolled  # anchor_coef 0: no programs replayed
    assert "anchor_reward_mean" not in plain
