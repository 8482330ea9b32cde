"""The ``--dry_run`` report: what a training run would cost, without data, weights or writes.

Parameters are counted on the run's real model structure, built on the meta
device (no memory, no download beyond the base model's config.json, and none
for the default base, whose architecture ships with the package). The
memory figure is an estimate per device of the longest batch (every sequence
``num_point_tokens + max_code_tokens`` long): weights (4-bit NF4 +
double-quantized constants under QLoRA, whose other weights PEFT keeps in fp32;
fp32 LoRA and projector), gradients and AdamW moments of the trainable weights,
activations and the logits. The last two use bytes per token measured
on an H200 with the Qwen3-1.7B architecture under bf16 autocast (BENCHMARKS.md,
"Training recipe", "On a GPU"; fifteen measured rows, four of them not used in the
fit, are within 3 % of this estimate). Gradients and AdamW's moments take the
trainable weight's own dtype (fp32 for LoRA and the projector, the loaded dtype for
full fine-tuning). Textbook counts (34 bytes per hidden unit and layer, two fp32 copies
of the logits) came out 23 to 50 % low there for LoRA and QLoRA; most likely because LoRA's dropout
keeps its own copy of each adapted layer's input, Qwen's norms work in fp32 and the
loss keeps more than two copies of the 152k-wide logits (not broken down further).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cad_recode.config import TrainConfig
from cad_recode.errors import InputError
from cad_recode.model.builders import build_tiny, tiny_spec

# Bytes per token measured under 16-bit autocast (BENCHMARKS.md, "On a GPU"), fitted by least squares: LoRA's two
# on its four rows at batch 4 and 8 (each within 0.2 GiB; its batch-2 rows, measured later, within 0.1 GiB), QLoRA's
# layer figure on its two rows, full fine-tuning's two on its three rows (within 0.3 GiB).
LOGIT_BYTES = {"lora": 11.2, "qlora": 11.2, "full": 8.7}  # per vocabulary entry: fp32 logits, gradient, 16-bit copies
LAYER_BYTES = {"lora": 68, "qlora": 84, "full": 57}  # per hidden unit and layer, without gradient checkpointing


@dataclass
class Plan:
    method: str
    total_params: int
    trainable_params: int
    weight_bytes: int
    peak_bytes: int
    tokens_per_step: int
    world_size: int
    detail: str
    max_minutes: float | None = None

    def format(self) -> str:
        gib = 1024**3
        return "\n".join([
            f"method:             {self.method}",
            f"parameters:         {self.total_params:,} total, {self.trainable_params:,} trainable "
            f"({100 * self.trainable_params / max(self.total_params, 1):.2f}%)",
            f"  {self.detail}",
            f"weight bytes:       {self.weight_bytes / gib:.3f} GiB ({self.weight_bytes:,})",
            f"est. peak memory:   {self.peak_bytes / gib:.2f} GiB per device (the longest batch: weights, optimizer, activations, logits)",
            f"tokens per step:    {self.tokens_per_step:,} at most (points + code, x{self.world_size} devices)",
            *([f"time budget:        {self.max_minutes:g} min of steps (timed on the data before training; "
               "max_steps is the most)"] if self.max_minutes is not None else []),
            "dry run: nothing trained, nothing written",
        ])


def base_config(cfg: TrainConfig):
    """The base model's config: a local folder or cached download; the default base's is known without either."""
    from transformers import AutoConfig, Qwen3Config

    from cad_recode.model.builders import DEFAULT_BASE_MODEL, QWEN3_1_7B_ARCHITECTURE

    known = cfg.base_model == DEFAULT_BASE_MODEL
    try:  # the default never waits on the network: its architecture is known
        return AutoConfig.from_pretrained(cfg.base_model, trust_remote_code=cfg.trust_remote_code,
                                          local_files_only=known)
    except (OSError, ValueError):
        if known:
            return Qwen3Config(**QWEN3_1_7B_ARCHITECTURE)
        raise InputError(
            f"base model {cfg.base_model!r} is not available offline; download it with `huggingface-cli download "
            f"{cfg.base_model} --local-dir models/{Path(cfg.base_model).name}` and pass that folder as --base_model"
        ) from None


def plan(cfg: TrainConfig) -> Plan:
    """Count parameters of the run's model without data or weights (meta device for real bases)."""
    from transformers import AutoModelForCausalLM

    from cad_recode.model import CADRecodeForCausalLM, apply_lora, count_parameters
    from cad_recode.model.tokenizer import DEFAULT_VOCAB_SIZE

    if cfg.tiny_model is not None:
        vocab = tiny_spec(cfg.tiny_model).get("vocab_size", DEFAULT_VOCAB_SIZE)
        with torch.device("meta"):
            lm = build_tiny(cfg.tiny_model, vocab, cfg.seed)
    else:
        config = base_config(cfg)
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(config)
    text = lm.config
    model = CADRecodeForCausalLM.from_lm(lm, num_point_tokens=cfg.num_point_tokens)
    if cfg.uses_lora:
        model = apply_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                           target_modules=cfg.lora_target_modules)
    counts = count_parameters(model)
    compute_bytes = 2 if (cfg.bf16 or cfg.fp16) else 4
    stored_bytes = {"bfloat16": 2, "float16": 2, "float32": 4}.get(cfg.lm_dtype, 2)  # auto: checkpoints are 16-bit
    weight_bytes = optimizer_state = 0
    for name, param in model.named_parameters():
        if "point_encoder" in name or "lora_" in name:  # fp32: projector and LoRA weights
            size = 4
        elif cfg.finetune_method == "qlora" and param.ndim == 2 and "embed" not in name and "lm_head" not in name:
            weight_bytes += math.ceil(param.numel() * 4.127 / 8)  # NF4 + double-quantized absmax
            continue
        elif cfg.finetune_method == "qlora":
            size = 4  # prepare_model_for_kbit_training keeps the rest in fp32
            if "embed" in name and compute_bytes < 4:
                weight_bytes += param.numel() * compute_bytes  # autocast's 16-bit copy for the (tied) LM head
        else:
            size = stored_bytes
        weight_bytes += param.numel() * size
        if param.requires_grad:  # its gradient and AdamW's two moments, in the weight's own dtype
            optimizer_state += param.numel() * size * 3
    world = int(os.environ.get("WORLD_SIZE", "1"))
    seq = cfg.num_point_tokens + cfg.max_code_tokens
    tokens = cfg.per_device_train_batch_size * seq
    hidden, layers = text.hidden_size, text.num_hidden_layers
    per_layer = int(tokens * hidden * LAYER_BYTES[cfg.finetune_method] * compute_bytes / 2)
    # with checkpointing: every layer's input is kept, and one layer's activations exist at a time
    activations = (layers * tokens * hidden * compute_bytes + per_layer) if cfg.gradient_checkpointing else layers * per_layer
    logits = int(tokens * text.vocab_size * LOGIT_BYTES[cfg.finetune_method])
    return Plan(
        method=cfg.finetune_method, total_params=counts.total, trainable_params=counts.trainable,
        weight_bytes=weight_bytes, peak_bytes=weight_bytes + optimizer_state + activations + logits,
        tokens_per_step=tokens * cfg.gradient_accumulation_steps * world, world_size=world, detail=counts.summary(),
        max_minutes=cfg.max_minutes,
    )
