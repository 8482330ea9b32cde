"""`--dry_run` for the default base model, offline, against what the GPU run measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cad_recode.config import load_config
from cad_recode.training.plan import plan

REPO = Path(__file__).resolve().parents[2]
MEASURED = sorted((REPO / "docs" / "results" / "gpu").glob("train_*.json"))  # benchmarks/gpu_figures.sh's files
GIB = 2**30


def measured_rows() -> list[dict]:
    rows = []
    for path in MEASURED:
        for row in json.loads(path.read_text(encoding="utf-8"))["rows"]:
            if "peak_memory_gib" in row and "error" not in row:
                rows.append({**row, "file": path.name})
    return rows


def default_run(method: str, **overrides):
    """The shipped config of ``method``; full fine-tuning is the LoRA config with ``finetune_method: full``."""
    if method == "full":  # measured with the weights as saved, bf16 (the default now keeps fp32 masters)
        return load_config(REPO / "configs" / "train_config_lora.yaml",
                           {"finetune_method": "full", "torch_dtype": "bfloat16", **overrides})
    return load_config(REPO / "configs" / f"train_config_{method}.yaml", overrides)


def test_the_default_base_is_planned_without_its_download(monkeypatch, tmp_path):
    """No network, no cache: the default base's architecture is known, so the counts are Qwen3-1.7B's."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    lora = plan(default_run("lora"))
    assert lora.total_params == 1_738_114_048  # BENCHMARKS.md: r 16 on all seven projections
    assert lora.trainable_params == 17_539_072
    assert lora.tokens_per_step == 8 * 4 * (256 + 768)


def test_another_missing_base_is_a_clear_error(monkeypatch, tmp_path):
    from cad_recode.errors import InputError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(InputError, match="'Qwen/Qwen2.5-0.5B' is not available offline; download it"):
        plan(default_run("lora", base_model="Qwen/Qwen2.5-0.5B"))


@pytest.mark.parametrize("row", measured_rows(), ids=lambda r: f"{r['method']}-b{r['batch_size']}-gc{int(r['gradient_checkpointing'])}")
def test_the_estimate_is_within_5_percent_of_the_measured_peak(row, monkeypatch):
    """Each row the H200 measured (random weights, 1024-token sequences): the dry run's peak for that batch."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    estimate = plan(default_run(row["method"], per_device_train_batch_size=row["batch_size"],
                                gradient_checkpointing=row["gradient_checkpointing"])).peak_bytes / GIB
    assert row["seq_len"] == 256 + 768
    assert estimate == pytest.approx(row["peak_memory_gib"], rel=0.05), row["file"]


def test_the_measurements_are_there():
    """Every method, checkpointing on and off, at several batch sizes: what the estimate is held to."""
    seen = {(r["method"], r["batch_size"], r["gradient_checkpointing"]) for r in measured_rows()}
    assert {("lora", 8, True), ("lora", 8, False), ("lora", 4, True), ("lora", 4, False), ("lora", 2, True),
            ("qlora", 4, True), ("qlora", 4, False), ("qlora", 2, True), ("full", 8, True), ("full", 8, False),
            ("full", 2, True)} <= seen


def test_full_fine_tuning_plans_fp32_master_weights_by_default(monkeypatch):
    """torch_dtype auto: full fine-tuning keeps fp32 weights, gradients and moments (16 bytes a weight), bf16 8."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fp32, bf16 = plan(default_run("full", torch_dtype="auto")), plan(default_run("full"))
    lm = 1_720_574_976  # Qwen3-1.7B's weights (tied head counted once)
    assert fp32.weight_bytes - bf16.weight_bytes == pytest.approx(2 * lm, rel=0.001)
    assert fp32.peak_bytes - bf16.peak_bytes == pytest.approx(8 * lm, rel=0.001)
