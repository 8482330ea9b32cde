"""The policy RL trains: the start model, loaded as one full model, then LoRA / QLoRA / full like ``train``.

The start model (a training output_dir, a merged or full model folder, or an adapter on a base, by
:mod:`cad_recode.model.loading`'s rule) is always resolved to ONE full-precision CADRecodeForCausalLM
(an adapter-only start is merged into a fresh copy in memory). Then:

- ``lora``: a new LoRA adapter and the projector (PEFT ``modules_to_save``) on that model. The start
  policy, for the KL term, is the same network with the adapter disabled, so it costs no memory. The
  adapter records the start model's folder as its base, and merges go into a fresh full-precision copy
  of the start model (never into the live one).
- ``qlora``: the same on the start model loaded in 4-bit; merges still go into full precision.
- ``full``: every weight trained; with ``kl_beta`` > 0 a frozen copy is kept as the reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from cad_recode.errors import InputError
from cad_recode.model.loading import ModelSource, resolve_source
from cad_recode.rl.config import RLConfig


@dataclass
class Policy:
    model: torch.nn.Module  # PeftModel (lora, qlora) or CADRecodeForCausalLM (full)
    tokenizer: Any
    source: ModelSource
    base_loader: Callable[[], torch.nn.Module] | None  # a fresh full-precision start model, for merges
    reference: torch.nn.Module | None  # full fine-tuning with kl_beta > 0: the frozen start model

    def describe(self) -> str:
        return self.source.describe()


def run_dtype(cfg: RLConfig) -> str:
    if cfg.torch_dtype != "auto":
        return cfg.torch_dtype
    return "bfloat16" if torch.cuda.is_available() else "float32"


def resolve_start(cfg: RLConfig) -> ModelSource:
    """Which weights the run starts from; a missing or unusable folder is a one-line InputError."""
    from pathlib import Path

    from cad_recode.errors import UsageError

    path = Path(cfg.start_model)
    if not path.exists() and (path.is_absolute() or cfg.start_model.startswith((".", "~")) or "/" in cfg.start_model):
        raise InputError(f"start_model {path} does not exist; give the output_dir of a `cad-recode train` run "
                         "(or a merged model folder), e.g. runs/tiny/model after the quickstart")
    try:
        if cfg.base_model is not None:
            return resolve_source(cfg.base_model, cfg.start_model)
        return resolve_source(cfg.start_model)
    except UsageError as err:
        raise InputError(f"start_model {cfg.start_model}: {err}") from None


def load_start(source: ModelSource, tokenizer, dtype: str, quantization=None):
    """The start model as one CADRecodeForCausalLM (merged in memory for an adapter source)."""
    from cad_recode.model import load_base_lm, merged_copy
    from cad_recode.model.loading import attach_adapters, load_cad_recode_model, load_source_base

    if source.kind != "adapter":
        if quantization is None:
            return load_cad_recode_model(source.model_dir, dtype=dtype)
        return load_base_lm(source.model_dir, dtype=dtype, quantization=quantization, device_map=_device_map())
    if quantization is not None:
        raise InputError(f"qlora needs a start model with merged weights ({source.describe()} is an adapter only); "
                         "start from a run with merged_model/ (auto_merge_final), or use finetune_method lora")
    peft = attach_adapters(load_source_base(source, tokenizer, dtype=dtype), source.adapters,
                           source.base or str(source.tiny_config))
    merged = merged_copy(peft, lambda: load_source_base(source, tokenizer, dtype=dtype))
    merged.name_or_path = ""  # no folder holds these weights: an RL adapter alone cannot name its base
    return merged


def _device_map():
    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else None


def load_policy(cfg: RLConfig) -> Policy:
    """Tokenizer and the trainable policy for ``cfg`` (see the module docstring)."""
    from cad_recode.model import apply_lora, quantization_config
    from cad_recode.model.loading import load_tokenizer

    source = resolve_start(cfg)
    tokenizer = load_tokenizer(source.tokenizer_dir or source.base)
    dtype = run_dtype(cfg)
    quantization = None
    if cfg.finetune_method == "qlora":
        quantization = quantization_config(cfg.bnb_4bit_compute_dtype, cfg.bnb_4bit_quant_type,
                                           cfg.bnb_4bit_use_double_quant)
    start = load_start(source, tokenizer, dtype, quantization)
    if len(tokenizer) > start.get_input_embeddings().weight.shape[0]:
        raise InputError(f"start_model {cfg.start_model}: its tokenizer has more tokens than the model; "
                         "use the tokenizer saved with the model")
    if not cfg.uses_lora:
        start.requires_grad_(True)
        reference = None
        if cfg.kl_beta > 0:
            reference = copy.deepcopy(start).eval().requires_grad_(False)
        return Policy(start, tokenizer, source, None, reference)
    if cfg.gradient_checkpointing:
        start.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_lora(start, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                       target_modules=cfg.lora_target_modules, gradient_checkpointing=cfg.gradient_checkpointing)
    return Policy(model, tokenizer, source, lambda: load_start(source, tokenizer, dtype), None)
