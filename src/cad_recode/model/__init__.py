"""The model layer: point encoder + any Hugging Face causal LM, LoRA/QLoRA helpers, merge and export.

Importing this package registers ``model_type = "cad_recode"`` with transformers'
``AutoConfig`` and ``AutoModelForCausalLM``, so a saved or merged model reloads
with ``AutoModelForCausalLM.from_pretrained(dir)``.

    encoder.py   PointEncoder, fourier_features (51 dims, fp32)
    wrapper.py   CADRecodeConfig, CADRecodeForCausalLM (forward, generate_ids, generate_code)
    builders.py  build_tiny_lm, load_base_lm, quantization_config
    lora.py      apply_lora, count_parameters, optimizer_groups, merged_copy, save_merged
"""

from __future__ import annotations

from cad_recode.model.builders import (
    DEFAULT_BASE_MODEL,
    QUANTIZATION_SKIP_MODULES,
    build_tiny_lm,
    load_base_lm,
    quantization_config,
    resolve_dtype,
)
from cad_recode.model.encoder import NUM_FOURIER_FREQUENCIES, PointEncoder, fourier_dims, fourier_features
from cad_recode.model.lora import (
    DEFAULT_TARGET_MODULES,
    ParameterCount,
    apply_lora,
    count_parameters,
    generation_config_for,
    lora_config,
    lora_target_regex,
    merged_copy,
    optimizer_groups,
    prepare_for_kbit_training,
    save_merged,
)
from cad_recode.model.wrapper import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_NUM_POINT_TOKENS,
    IGNORE_INDEX,
    CADRecodeConfig,
    CADRecodeForCausalLM,
    code_generation_config,
    register_auto_classes,
)

register_auto_classes()

__all__ = [
    "CADRecodeConfig",
    "CADRecodeForCausalLM",
    "DEFAULT_BASE_MODEL",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_NUM_POINT_TOKENS",
    "DEFAULT_TARGET_MODULES",
    "IGNORE_INDEX",
    "NUM_FOURIER_FREQUENCIES",
    "ParameterCount",
    "PointEncoder",
    "QUANTIZATION_SKIP_MODULES",
    "apply_lora",
    "build_tiny_lm",
    "code_generation_config",
    "count_parameters",
    "fourier_dims",
    "fourier_features",
    "generation_config_for",
    "load_base_lm",
    "lora_config",
    "lora_target_regex",
    "merged_copy",
    "optimizer_groups",
    "prepare_for_kbit_training",
    "quantization_config",
    "register_auto_classes",
    "resolve_dtype",
    "save_merged",
]
