"""The RL recipe end to end on a tiny start model (it writes the cube program) and a prepared dataset of boxes.

Real parts throughout: the sandbox runs every sampled program, rewards are IoU with the truth boxes,
the policy is updated with Accelerate, and the run folder is written as ``train`` writes its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import rl_artifacts as ra  # noqa: E402

from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.model.runlog import read_train_log  # noqa: E402
from cad_recode.rl.config import load_rl_config  # noqa: E402
from cad_recode.rl.loop import run_rl  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PER_UPDATE = ("reward_mean", "reward_std", "ir", "zero_advantage_share", "loss", "clip_fraction", "tokens_per_s",
              "lr", "seconds_generate", "seconds_sandbox", "seconds_reward", "seconds_update", "rollout_digest")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp("rl_inputs")
    cube = sandbox.run(example_program("cube")).to_trimesh()
    return ra.prepared_boxes(root / "data"), ra.start_model(cube, root / "start")


@pytest.fixture(scope="module")
def full_run(inputs, tmp_path_factory):
    data, start = inputs
    out = tmp_path_factory.mktemp("full") / "run"
    result = run_rl(ra.rl_config(data, start, out, report_to="tensorboard"))
    assert result.updates == 3 and result.resumed_from is None
    return out


def test_full_run_writes_logs_tensorboard_curves_and_the_guide_layout(full_run, inputs):
    """Every update is logged (jsonl + TensorBoard), validation every eval_steps and at the end, the curves PNG,
    checkpoint-2/ complete and resumable, and the trained model in output_dir loads with transformers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM

    import cad_recode.model  # noqa: F401 - registers the cad_recode Auto classes

    data, start = inputs
    names = {p.name for p in full_run.iterdir()}
    assert {"config.yaml", "config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "train_log.jsonl", "runs", "rl_curves.png", "checkpoint-2"} <= names
    assert load_rl_config(full_run / "config.yaml") == ra.rl_config(data, start, full_run, report_to="tensorboard")
    records = read_train_log(full_run)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert set(PER_UPDATE) <= set(record), record
        assert -10.0 <= record["reward_mean"] <= 10.0 and 0.0 <= record["ir"] <= 1.0
    assert "val_iou" not in records[0] and {"val_iou", "val_ir", "val_reward"} <= set(records[1]) <= set(records[2])
    assert 0.0 < records[1]["val_iou"] <= 1.0  # the cube program fits the boxes partly
    assert (full_run / "rl_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(full_run / "runs")).Reload()
    assert {"rl/reward_mean", "rl/ir", "rl/zero_advantage_share", "rl/tokens_per_s", "rl/val_iou"} <= set(
        events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("rl/reward_mean")] == [1, 2, 3]
    checkpoint = {p.name for p in (full_run / "checkpoint-2").iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rl_state.json", "config.yaml"} <= checkpoint
    state = json.loads((full_run / "checkpoint-2" / "rl_state.json").read_text())
    assert state["update"] == 2 and state["stream"]["position"] == 8  # 2 updates x 4 inputs
    model = AutoModelForCausalLM.from_pretrained(full_run)
    assert type(model).__name__ == "CADRecodeForCausalLM"
    # RL changed the weights (lr 1e-3 on a model whose groups had different rewards).
    before, after = load_file(start / "model.safetensors"), load_file(full_run / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_lora_run_writes_adapter_merged_model_and_logs_kl(inputs, tmp_path):
    """LoRA on the start model: the adapter (with the trained projector) in output_dir and checkpoints, merged
    copies at checkpoints and at the end on a fresh start model; KL to the start policy (adapter off) is logged."""
    from transformers import AutoModelForCausalLM

    import cad_recode.model  # noqa: F401

    data, start = inputs
    out = tmp_path / "run"
    run_rl(ra.rl_config(data, start, out, finetune_method="lora", lora_r=4, lora_alpha=8, max_updates=2,
                        save_steps=1, eval_steps=0, learning_rate=5e-3))
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "merged_model", "checkpoint-1", "config.yaml"} <= names
    assert {"adapter_model.safetensors", "merged_model", "optimizer.pt", "rl_state.json"} <= {
        p.name for p in (out / "checkpoint-1").iterdir()}
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter_config["base_model_name_or_path"]) == start  # the adapter applies to the start model
    records = read_train_log(out)
    assert [r["step"] for r in records] == [1, 2] and all(r["kl"] >= 0.0 for r in records)
    assert "val_iou" in records[-1]  # eval_steps 0: validated only at the end
    merged = AutoModelForCausalLM.from_pretrained(out / "merged_model")
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    adapter = load_file(out / "adapter_model.safetensors")
    trained = next(v for k, v in adapter.items() if "point_encoder" in k and k.endswith("proj.weight"))
    assert torch.equal(merged.point_encoder.proj.weight, trained)  # the merged copy carries the RL projector


def test_hard_example_mining_skips_solved_inputs(inputs, tmp_path):
    """With a threshold every sample reaches, all inputs are solved after one pass and the run stops early."""
    data, start = inputs
    out = tmp_path / "run"
    result = run_rl(ra.rl_config(data, start, out, hard_example_threshold=-10.0, max_updates=5, eval_steps=0))
    assert result.updates == 2 and result.solved == 8  # 8 inputs, 4 per update: solved after 2 updates
    assert [r["solved"] for r in read_train_log(out)] == [4, 8]


def test_qlora_trains_on_a_4bit_start_model_and_merges_into_full_precision(inputs, tmp_path):
    """QLoRA: the start model loaded in 4-bit (bitsandbytes, CPU), the adapter trained, merged_model/ in float32."""
    from transformers import AutoModelForCausalLM

    import cad_recode.model  # noqa: F401

    data, start = inputs
    out = tmp_path / "run"
    run_rl(ra.rl_config(data, start, out, finetune_method="qlora", lora_r=4, lora_alpha=8, bnb_4bit_compute_dtype="float32",
                        max_updates=1, shapes_per_update=2, num_generations=2, top_k=1, eval_steps=0, val_num_samples=1))
    assert {"adapter_model.safetensors", "merged_model"} <= {p.name for p in out.iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(out / "merged_model")
    assert all(p.dtype == torch.float32 and type(p).__name__ == "Parameter" for p in merged.parameters())


def test_auto_merge_flags_as_in_train(inputs, tmp_path):
    """merge_final_only: no checkpoint-N/merged_model/; keep_lora_final false: merged_model/ but no final adapter."""
    data, start = inputs
    out = tmp_path / "run"
    run_rl(ra.rl_config(data, start, out, finetune_method="lora", lora_r=4, lora_alpha=8, max_updates=2, save_steps=1,
                        eval_steps=0, merge_final_only=True, keep_lora_final=False))
    names = {p.name for p in out.iterdir()}
    assert "merged_model" in names and "adapter_model.safetensors" not in names and "config.yaml" in names
    checkpoint = {p.name for p in (out / "checkpoint-1").iterdir()}
    assert "adapter_model.safetensors" in checkpoint and "merged_model" not in checkpoint
