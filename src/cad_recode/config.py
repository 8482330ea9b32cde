"""Training configuration: one dataclass whose fields are the YAML keys and the CLI flags.

Protocol (design.md §5):

- ``TrainConfig`` holds every setting of a training run. Each field carries its
  help text (``metadata["help"]``); ``__post_init__`` coerces and checks every
  value, so a config that exists is a valid one.
- ``load_config(path, overrides)`` reads a flat YAML file of ``key: value``
  lines, then applies ``overrides`` (the flags the user gave) on top.
- ``add_config_arguments(parser)`` adds ``--KEY`` for every field plus
  ``--config PATH``; ``config_from_args(args)`` = YAML, then only the flags given.
- ``save_config(cfg, path)`` writes YAML that reloads to an equal config.

Mistakes are one-line ``UsageError``s that say where they come from (the YAML
file or the command line): an unknown key with the closest valid one, a wrong
type with the expected type and the value given, an out-of-range value, or two
settings that contradict each other.

Method keys. ``finetune_method`` (lora | qlora | full) is the one switch; the
guide's ``use_qlora`` and ``load_in_4bit`` are kept as aliases: either one true
turns ``lora`` into ``qlora`` (QLoRA is LoRA on a 4-bit base), and next to
``full`` it is a conflict. After validation the three always agree. When the
command line names the method (``--use_qlora``, ``--finetune_method full``) it
decides the method alone, whatever the YAML said about it.
"""

# size: one dataclass whose ~60 fields carry their help text (the config reference is generated from it);
# its validation and YAML/flag I/O share the private coercion helpers below.
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import yaml

from cad_recode import defaults
from cad_recode.atomic import atomic_file
from cad_recode.errors import UsageError

FINETUNE_METHODS = ("lora", "qlora", "full")
TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32")
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")
QUANT_TYPES = ("nf4", "fp4")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
# transformers' SchedulerType values that need no extra scheduler arguments.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
OVERFLOW_POLICIES = ("drop", "truncate")
CHOICES = {
    "finetune_method": FINETUNE_METHODS,
    "torch_dtype": TORCH_DTYPES,
    "bnb_4bit_compute_dtype": COMPUTE_DTYPES,
    "bnb_4bit_quant_type": QUANT_TYPES,
    "lr_scheduler_type": LR_SCHEDULERS,
    "overflow": OVERFLOW_POLICIES,
}
# tokenizer values that train a small BPE on the training programs, and how each spells numbers
TRAIN_TOKENIZERS = {"train": "digits", "train_whole_numbers": "whole"}
RESUME_LATEST = "auto"
METHOD_KEYS = ("finetune_method", "use_qlora", "load_in_4bit")
# tiny_model keys that size the network: when present they must be positive ints.
TINY_MODEL_SIZE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "head_dim",
    "max_position_embeddings",
)

_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")
_NONE_WORDS = ("none", "null", "~")


def config_field(default: Any, help: str):
    """A dataclass field with its help text; list and dict defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


class RunOutputs:
    """What a run's method and auto-merge keys mean, shared by TrainConfig and the RL recipe's RLConfig.

    A mixin for config dataclasses with the fields finetune_method, use_qlora, load_in_4bit,
    auto_merge_lora, auto_merge_final, keep_lora_only, keep_lora_final, merge_final_only,
    learning_rate and projector_learning_rate, and their own ``_check_values``.
    """

    @property
    def uses_lora(self) -> bool:
        """LoRA adapters on the LM (lora or qlora)."""
        return self.finetune_method in ("lora", "qlora")

    @property
    def merge_at_checkpoints(self) -> bool:
        """Write checkpoint-N/merged_model/."""
        return self.uses_lora and self.auto_merge_lora and not self.merge_final_only

    @property
    def merge_at_end(self) -> bool:
        """Write OUTPUT_DIR/merged_model/."""
        return self.uses_lora and self.auto_merge_final

    @property
    def adapter_at_checkpoints(self) -> bool:
        """Keep the adapter files (resumable state) in checkpoint-N/."""
        return self.uses_lora and self.keep_lora_only

    @property
    def adapter_at_end(self) -> bool:
        """Keep the adapter files in OUTPUT_DIR."""
        return self.uses_lora and self.keep_lora_final

    def __post_init__(self) -> None:
        coerce_fields(self)
        self._resolve_method()
        self._check_values()  # each config's own checks
        self._check_merge_flags()

    @property
    def projector_lr(self) -> float:
        """The projector's learning rate: its own, or the LM's."""
        return self.learning_rate if self.projector_learning_rate is None else self.projector_learning_rate

    def _resolve_method(self) -> None:
        require_choice(self, "finetune_method", FINETUNE_METHODS)
        quantize = [k for k in ("use_qlora", "load_in_4bit") if getattr(self, k)]
        if self.finetune_method == "full" and quantize:
            raise config_error(
                ("finetune_method", *quantize),
                f"finetune_method 'full' conflicts with {quantize[0]}: true (a 4-bit base cannot be trained fully); "
                f"use finetune_method qlora, or set {quantize[0]} to false",
            )
        if quantize or self.finetune_method == "qlora":
            self.finetune_method, self.use_qlora, self.load_in_4bit = "qlora", True, True

    def _check_merge_flags(self) -> None:
        if not self.uses_lora:
            return
        if self.merge_final_only and not self.auto_merge_final:
            raise config_error(
                ("merge_final_only", "auto_merge_final"),
                "merge_final_only is true but auto_merge_final is false, so nothing would ever be merged; "
                "set auto_merge_final to true (or merge_final_only to false)",
            )
        if not self.keep_lora_only and not self.merge_at_checkpoints:
            raise config_error(
                ("keep_lora_only", "auto_merge_lora", "merge_final_only"),
                "keep_lora_only is false and checkpoints are not merged, so checkpoints would hold nothing; "
                "set keep_lora_only to true",
            )
        if not self.keep_lora_final and not self.auto_merge_final:
            raise config_error(
                ("keep_lora_final", "auto_merge_final"),
                "keep_lora_final and auto_merge_final are both false, so the run would save no final model; "
                "set one of them to true",
            )


@dataclass
class TrainConfig(RunOutputs):
    """Every setting of a training run. Defaults: Qwen3-1.7B-Base + LoRA on one 24 GB+ GPU.

    The defaults are exactly ``configs/train_config_lora.yaml``. The guide's
    keys keep the guide's names and defaults; trainer keys keep the names of
    transformers' ``TrainingArguments``.
    """

    # --- Model ---
    base_model: str = config_field(
        "Qwen/Qwen3-1.7B-Base",
        "Hugging Face model id or local folder of the causal LM to fine-tune (Qwen3, Qwen2, Qwen2.5, ...). "
        "With tiny_model set it is only the name recorded in exports.",
    )
    tiny_model: dict[str, Any] | str | None = config_field(
        None,
        "Build a small randomly initialised LM offline instead of loading base_model: a mapping "
        "{architecture: qwen3, hidden_size: ..., num_hidden_layers: ..., ...} of transformers config "
        "fields (architecture is the model_type, default qwen3), or the path of a config.json. "
        "On the command line give the mapping in YAML flow style: '{hidden_size: 64}'.",
    )
    tokenizer: str | None = config_field(
        None,
        "Tokenizer folder or id; null = base_model's own; 'train' = train a small BPE on the training "
        "programs, one token a digit as in Qwen's; 'train_whole_numbers' = the same, but a run of digits "
        "may merge into one token (shorter programs). Both only with tiny_model, since a pretrained LM "
        "needs the tokenizer it was trained with.",
    )
    trust_remote_code: bool = config_field(
        False,
        "Allow model code from the model folder or hub (only for models that need it).",
    )
    torch_dtype: str = config_field(
        "auto",
        "dtype of the LM weights when loaded: auto (as saved; float32 for tiny_model and for full fine-tuning, "
        "whose weights and AdamW moments are then fp32 masters under bf16 autocast), bfloat16, float16, "
        "float32. The point encoder always stays float32.",
    )
    attn_implementation: str = config_field(
        "sdpa",
        "Attention kernel passed to transformers: sdpa, eager, flash_attention_2, flash_attention_3, "
        "flex_attention (or a kernels-hub name containing '/').",
    )

    # --- Method ---
    finetune_method: str = config_field(
        "lora",
        "lora: LoRA adapters on the LM, projector trained fully. qlora: the same on a 4-bit NF4 base "
        "(bitsandbytes). full: every weight trained (meant for tiny_model runs).",
    )
    use_qlora: bool = config_field(
        False,
        "The guide's switch: true makes finetune_method qlora (an error next to finetune_method full).",
    )
    load_in_4bit: bool = config_field(
        False,
        "Load the base LM in 4-bit through bitsandbytes; true means QLoRA, like use_qlora.",
    )
    bnb_4bit_compute_dtype: str = config_field(
        "bfloat16",
        "QLoRA: dtype the 4-bit layers compute in; float16 for GPUs without bf16.",
    )
    bnb_4bit_quant_type: str = config_field(
        "nf4",
        "QLoRA: 4-bit data type, nf4 (NormalFloat, as in the QLoRA paper) or fp4.",
    )
    bnb_4bit_use_double_quant: bool = config_field(
        True,
        "QLoRA: also quantize the quantization constants (saves about 0.4 bit per weight).",
    )

    # --- LoRA ---
    lora_r: int = config_field(
        defaults.LORA_R,
        "LoRA rank: trainable parameters grow linearly with it (8 small, 16 balanced, 64 large).",
    )
    lora_alpha: int = config_field(
        defaults.LORA_ALPHA,
        "LoRA scaling numerator: the update is scaled by lora_alpha / lora_r; usually 2 * lora_r.",
    )
    lora_dropout: float = config_field(defaults.LORA_DROPOUT, "Dropout on the LoRA branch input, in [0, 1).")
    lora_target_modules: list[str] = config_field(
        list(defaults.LORA_TARGET_MODULES),
        "Names of the LM's linear layers that get LoRA adapters (the point projector never does). "
        "Flags: comma-separated or several values.",
    )

    # --- Auto-merge (LoRA and QLoRA runs; ignored by full) ---
    auto_merge_lora: bool = config_field(
        True,
        "At every checkpoint also write checkpoint-N/merged_model/: a merged copy built from the saved "
        "adapter on a separate full-precision base; the model being trained is never merged.",
    )
    auto_merge_final: bool = config_field(
        True,
        "At the end write OUTPUT_DIR/merged_model/ (full-precision base + adapter + projector, tokenizer, "
        "generation_config.json), the model inference prefers.",
    )
    keep_lora_only: bool = config_field(
        True,
        "At every checkpoint keep the adapter files (adapter_config.json, adapter_model.safetensors, projector). "
        "False keeps only checkpoint-N/merged_model/, and such a checkpoint cannot be resumed.",
    )
    keep_lora_final: bool = config_field(
        True,
        "At the end keep the adapter files (adapter_config.json, adapter_model.safetensors, projector) "
        "in OUTPUT_DIR.",
    )
    merge_final_only: bool = config_field(
        False,
        "Merge only at the end: no checkpoint-N/merged_model/ (overrides auto_merge_lora), which saves time "
        "and disk during training. Needs auto_merge_final.",
    )

    # --- Points and projector ---
    num_point_tokens: int = config_field(
        defaults.NUM_POINT_TOKENS,
        "Points per shape after farthest point sampling = point tokens before the code.",
    )
    num_surface_points: int = config_field(defaults.NUM_SURFACE_POINTS, "Surface samples taken from a mesh before farthest point sampling.")
    noise_std: float = config_field(
        defaults.NOISE_STD,
        "Training augmentation: std of Gaussian noise, in normalized units ([-1, 1] box).",
    )
    noise_prob: float = config_field(defaults.NOISE_PROB, "Training augmentation: probability that a shape gets the noise.")
    uneven_prob: float = config_field(
        defaults.UNEVEN_PROB,
        "Training augmentation: probability that a shape's point density falls off along a random direction "
        "(a scanner looks longer at one side).",
    )
    uneven_strength: float = config_field(
        defaults.UNEVEN_STRENGTH,
        "Training augmentation: with uneven density, the chance to keep a surface point falls from 1 to "
        "1 - this across the part; in [0, 0.99].",
    )
    missing_side_prob: float = config_field(
        defaults.MISSING_SIDE_PROB,
        "Training augmentation: probability that one side of a shape is cut away (a scan that missed it); "
        "the target program is the whole part.",
    )
    missing_fraction: float = config_field(
        defaults.MISSING_FRACTION,
        "Training augmentation: the share of the surface a missing side removes (furthest along a random "
        "axis); in [0, 1).",
    )
    projector_learning_rate: float | None = config_field(
        None,
        "Learning rate of the point projector; null = learning_rate.",
    )

    # --- Data ---
    data_dir: str = config_field(
        "data/prepared",
        "Prepared dataset folder: the --output_dir of `cad-recode data prepare` (train/ and val/ splits).",
    )
    max_code_tokens: int = config_field(
        768,
        "Longest program trained on, in tokens, counting <|im_start|> and the end token.",
    )
    overflow: str = config_field(
        "drop",
        "Programs longer than max_code_tokens: drop (skip them) or truncate (keep the first tokens, "
        "without the end token).",
    )
    family_weights: dict[str, float] | None = config_field(
        None,
        "Share of training draws per family, e.g. {box: 1, stacked: 2, ...} (normalized; every family of "
        "the data named, 0 leaves one out). Needs family labels (generated data). Only training draws "
        "change; validation and test keep the data's own mix. null = the data as drawn.",
    )
    group_by_length: bool = config_field(
        False,
        "Batch training programs of like length together (shuffled within pools, seeded per epoch): "
        "less padding, faster steps.",
    )
    dataloader_num_workers: int = config_field(
        4,
        "Worker processes that sample points and tokenize; 0 = in the main process.",
    )

    # --- Training ---
    per_device_train_batch_size: int = config_field(8, "Shapes per device per forward pass.")
    gradient_accumulation_steps: int = config_field(
        4,
        "Forward passes per optimizer step; effective batch = per_device_train_batch_size x this x devices.",
    )
    learning_rate: float = config_field(
        2e-4,
        "Peak AdamW learning rate of the LM's trainable weights (2e-4 as in CAD-Recode).",
    )
    lr_scheduler_type: str = config_field(
        "cosine",
        "Learning rate schedule after warmup (transformers' names).",
    )
    warmup_steps: int = config_field(1000, "Optimizer steps of linear warmup from 0 to the learning rate.")
    weight_decay: float = config_field(0.01, "AdamW weight decay (not applied to biases and norms).")
    max_grad_norm: float = config_field(1.0, "Gradient clipping norm; 0 disables clipping.")
    max_steps: int = config_field(
        100000,
        "Optimizer steps to train; -1 = train num_train_epochs epochs instead (CAD-Recode: about 100k).",
    )
    num_train_epochs: float = config_field(3.0, "Epochs to train when max_steps is -1.")
    max_minutes: float | None = config_field(
        None,
        "A wall-clock budget for the training steps: the run first times a few steps on its own data, "
        "then trains min(max_steps, the steps that fit), the schedule laid out over them. Evaluations "
        "and checkpoint saves come on top. null = no budget.",
    )
    bf16: bool = config_field(True, "bfloat16 mixed precision (Ampere or newer GPUs); not together with fp16.")
    fp16: bool = config_field(False, "float16 mixed precision (older GPUs); not together with bf16.")
    gradient_checkpointing: bool = config_field(
        True,
        "Recompute activations in the backward pass: much less memory for about 30 percent more time.",
    )

    # --- Saving and logging ---
    output_dir: str = config_field(
        "checkpoints_qwen3_lora",
        "Run folder: checkpoint-N/, the final adapter, config.yaml, merged_model/, logs.",
    )
    overwrite_output_dir: bool = config_field(
        False,
        "Allow output_dir to hold another run (its files are replaced); without it such a folder is refused.",
    )
    save_steps: int = config_field(2000, "Write checkpoint-N/ every this many optimizer steps.")
    save_total_limit: int | None = config_field(3, "Keep only the newest this many checkpoints; null = keep all.")
    logging_steps: int = config_field(50, "Log loss and learning rate every this many optimizer steps.")
    report_to: str = config_field(
        "tensorboard",
        "Where logs go besides the console: tensorboard, none, or other transformers integrations.",
    )
    resume_from_checkpoint: str | None = config_field(
        None,
        "Continue a run from checkpoint-N/ (a folder), or 'auto' for the newest one in output_dir.",
    )

    # --- Evaluation ---
    do_eval: bool = config_field(
        False,
        "Evaluate on the validation split every eval_steps: loss, plus invalid ratio, Chamfer distance "
        "and IoU of generated programs.",
    )
    eval_steps: int = config_field(1000, "Optimizer steps between evaluations (with do_eval).")
    per_device_eval_batch_size: int = config_field(8, "Shapes per device per forward pass in evaluation.")
    eval_num_samples: int = config_field(
        32,
        "Validation shapes used for the generation metrics (the loss uses the whole split).",
    )
    eval_num_candidates: int = config_field(
        1,
        "Programs generated per validation shape in evaluation: best of N point draws, greedy, the valid one "
        "closest to the input points kept (as cad-recode eval --num_candidates).",
    )
    max_new_tokens: int = config_field(defaults.MAX_NEW_TOKENS, "Longest generated program, in tokens.")

    # --- Run ---
    seed: int = config_field(42, "Seed of weights init, data order, point sampling and noise.")
    dry_run: bool = config_field(
        False,
        "Print the plan (parameters, trainable parameters, weight bytes, estimated peak memory, "
        "tokens per step) and train nothing.",
    )

    @property
    def lm_dtype(self) -> str:
        """The dtype the LM's weights get: ``torch_dtype``, where ``auto`` means float32 for a tiny model (built, not
        loaded) and for full fine-tuning (fp32 master weights under 16-bit autocast), else the checkpoint's own."""
        if self.torch_dtype == "auto" and (self.tiny_model is not None or self.finetune_method == "full"):
            return "float32"
        return self.torch_dtype

    # Validation (RunOutputs.__post_init__ runs it).

    def _check_values(self) -> None:
        for key, choices in CHOICES.items():
            require_choice(self, key, choices)
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS and "/" not in self.attn_implementation:
            require_choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)
        for key in (
            "lora_r",
            "lora_alpha",
            "num_point_tokens",
            "num_surface_points",
            "max_code_tokens",
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "save_steps",
            "logging_steps",
            "eval_steps",
            "eval_num_samples",
            "eval_num_candidates",
            "max_new_tokens",
            "learning_rate",
            "num_train_epochs",
        ):
            require(self, key, getattr(self, key) > 0, "must be > 0")
        for key in ("warmup_steps", "weight_decay", "max_grad_norm", "noise_std", "dataloader_num_workers", "seed"):
            require(self, key, getattr(self, key) >= 0, "must be >= 0")
        require(self, "lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)")
        for key in ("noise_prob", "uneven_prob", "missing_side_prob"):
            require(self, key, 0 <= getattr(self, key) <= 1, "must be in [0, 1]")
        require(self, "uneven_strength", 0 <= self.uneven_strength <= 0.99, "must be in [0, 0.99]")
        require(self, "missing_fraction", 0 <= self.missing_fraction < 1, "must be in [0, 1)")
        if self.family_weights is not None:
            weights = self.family_weights.values()
            numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights)
            require(self, "family_weights", numbers and all(w >= 0 for w in weights) and any(w > 0 for w in weights),
                    "must map family names to numbers >= 0, at least one > 0")
        max_steps_ok = self.max_steps == -1 or self.max_steps > 0
        require(self, "max_steps", max_steps_ok, "must be -1 (use num_train_epochs) or > 0")
        if self.max_minutes is not None:  # not a number (nan included) is refused when read
            require(self, "max_minutes", self.max_minutes > 0, "must be > 0 (or null)")
        if self.projector_learning_rate is not None:
            require(self, "projector_learning_rate", self.projector_learning_rate > 0, "must be > 0 (or null)")
        if self.save_total_limit is not None:
            require(self, "save_total_limit", self.save_total_limit > 0, "must be > 0 (or null to keep all)")
        require(self, "lora_target_modules", bool(self.lora_target_modules), "must name at least one module")
        for key in ("base_model", "output_dir", "data_dir", "report_to"):
            require(self, key, bool(getattr(self, key).strip()), "must not be empty")
        if self.num_surface_points < self.num_point_tokens:
            raise config_error(
                ("num_surface_points", "num_point_tokens"),
                f"num_surface_points ({self.num_surface_points}) must be >= num_point_tokens ({self.num_point_tokens})",
            )
        if self.bf16 and self.fp16:
            raise config_error(("fp16", "bf16"), "bf16 and fp16 are both true; set one of them to false")
        if self.tokenizer in TRAIN_TOKENIZERS and self.tiny_model is None:
            raise config_error(
                ("tokenizer", "tiny_model"),
                f"tokenizer '{self.tokenizer}' needs tiny_model (a model built from scratch); a pretrained base_model "
                "must keep its own tokenizer (set tokenizer to null)",
            )
        self._check_tiny_model()

    def _check_tiny_model(self) -> None:
        spec = self.tiny_model
        if spec is None:
            return
        if isinstance(spec, str):
            require(self, "tiny_model", bool(spec.strip()), "must be a mapping, a config.json path, or null")
            return
        spec = dict(spec)
        spec.setdefault("architecture", "qwen3")
        architecture = spec["architecture"]
        if not isinstance(architecture, str) or not architecture:
            message = f"tiny_model architecture must be a model type such as qwen3, got {architecture!r}"
            raise config_error(("tiny_model",), message)
        for key in TINY_MODEL_SIZE_KEYS:
            value = spec.get(key)
            if key in spec and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise config_error(("tiny_model",), f"tiny_model {key} must be a positive int, got {value!r}")
        self.tiny_model = spec


# ---------------------------------------------------------------------------
# Sections: how --help and saved YAML group the keys (title, first key of the section).

SECTIONS = (
    ("Model", "base_model"),
    ("Method", "finetune_method"),
    ("LoRA", "lora_r"),
    ("Auto-merge (LoRA and QLoRA runs)", "auto_merge_lora"),
    ("Points and projector", "num_point_tokens"),
    ("Data", "data_dir"),
    ("Training", "per_device_train_batch_size"),
    ("Saving and logging", "output_dir"),
    ("Evaluation", "do_eval"),
    ("Run", "seed"),
)


TrainConfig.SECTIONS = SECTIONS
TrainConfig.YAML_TITLE = "cad-recode training config"


def config_sections(cls: type | None = None) -> list[tuple[str, list[dataclasses.Field]]]:
    """The fields of ``cls`` (default TrainConfig) in declaration order, grouped under its SECTIONS titles."""
    cls = cls or TrainConfig
    starts = dict((first, title) for title, first in cls.SECTIONS)
    groups: list[tuple[str, list[dataclasses.Field]]] = []
    for f in dataclasses.fields(cls):
        if f.name in starts:
            groups.append((starts[f.name], []))
        groups[-1][1].append(f)
    return groups


def field_names(cls: type | None = None) -> tuple[str, ...]:
    """Every valid key of ``cls`` (default TrainConfig), in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls or TrainConfig))


# ---------------------------------------------------------------------------
# Values: one coercion for YAML values, flag strings and Python arguments.


def _type_hints(cls: type | None = None) -> dict[str, Any]:
    return _hints_of(cls or TrainConfig)


@functools.cache
def _hints_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce_fields(cfg) -> None:
    """Give every field of the config dataclass ``cfg`` its declared type (``__post_init__``'s first step)."""
    hints = _type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _coerce(f.name, getattr(cfg, f.name), hints[f.name]))


def _unpack(hint: Any) -> tuple[tuple[Any, ...], bool]:
    """(accepted base types, whether None is allowed) of a field annotation."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = typing.get_args(hint)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (hint,), False


def _type_name(hint: Any) -> str:
    bases, optional = _unpack(hint)
    names = []
    for base in bases:
        origin = typing.get_origin(base) or base
        names.append({bool: "true or false", int: "an int", float: "a number", str: "a string",
                      list: "a list of strings", dict: "a mapping"}[origin])
    return " or ".join(names) + (" or null" if optional else "")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type, or a UsageError "'key' must be <type>, got <value>"."""
    bases, optional = _unpack(hint)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise config_error((key,), f"{key!r} must be {_type_name(hint)}, got null")
    origins = [typing.get_origin(base) or base for base in bases]
    if dict in origins and isinstance(value, str) and value.lstrip().startswith("{"):
        origins = [dict]  # an inline mapping, never a path
    for origin in origins:
        converted = _convert(value, origin)
        if converted is not _NO:
            return converted
    raise config_error((key,), f"{key!r} must be {_type_name(hint)}, got {value!r}")


_NO = object()  # "this base type does not fit"


def _convert(value: Any, base: type) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        return _NO
    if isinstance(value, bool):  # bool is an int subclass; true is not a number here
        return _NO
    if base is int:
        number = _to_number(value)
        if isinstance(number, float):
            return int(number) if number.is_integer() else _NO  # 1e5 from YAML or a flag
        return number
    if base is float:
        number = _to_number(value)
        return float(number) if number is not _NO else _NO
    if base is str:
        return value if isinstance(value, str) else _NO
    if base is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            return _NO
        # "q_proj,v_proj" and ["q_proj", "v_proj"] mean the same.
        return [part.strip() for item in items for part in item.split(",") if part.strip()]
    if base is dict:
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = yaml.load(value, Loader=_ConfigLoader)
            except yaml.YAMLError:
                return _NO
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
        return _NO
    raise TypeError(f"unsupported config field type {base!r}")


def _to_number(value: Any) -> int | float | object:
    """A finite int or float from a number or a numeric string ("2e-4", "1e5"), else _NO."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return _NO
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return _NO


def config_error(keys: tuple[str, ...], message: str) -> UsageError:
    """A UsageError that remembers which keys it is about, so the loader can say where they came from."""
    err = UsageError(message)
    err.config_keys = keys
    return err


def require(cfg, key: str, ok: bool, problem: str) -> None:
    if not ok:
        raise config_error((key,), f"{key!r} {problem}, got {getattr(cfg, key)!r}")


def require_choice(cfg, key: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, key)
    if value not in choices:
        hint = _did_you_mean(value, choices)
        raise config_error((key,), f"{key!r} must be one of {', '.join(choices)}, got {value!r}{hint}")


def _did_you_mean(word: Any, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word).lower(), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------
# YAML.

# YAML 1.2 floats without a dot ("2e-4", "1e5"), which PyYAML's YAML 1.1 rules read as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that reads 2e-4 as a float and refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key == "<<" or not isinstance(key, typing.Hashable):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _ConfigDumper(yaml.SafeDumper):
    """SafeDumper that quotes strings like "2e-4", which _ConfigLoader would read as floats."""


for _cls in (_ConfigLoader, _ConfigDumper):
    _cls.yaml_implicit_resolvers = {k: list(v) for k, v in _cls.yaml_implicit_resolvers.items()}
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def _read_yaml(path: str) -> dict[Any, Any]:
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "not found"
        raise UsageError(f"config file {path} {what}; give a YAML file such as configs/train_config_lora.yaml")
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=_ConfigLoader)
    except yaml.MarkedYAMLError as err:
        line = f" at line {err.problem_mark.line + 1}" if err.problem_mark else ""
        raise UsageError(f"{path}: invalid YAML{line}: {err.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{path}: a config is a flat mapping of 'key: value' lines, got a {type(data).__name__} at the top level"
        )
    return data


# ---------------------------------------------------------------------------
# Loading and saving.


def load_config(
    path: str | os.PathLike | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    overrides_source: str = "command line",
    cls: type | None = None,
):
    """Defaults, then the YAML at ``path`` (if any), then ``overrides`` (if any): a ``cls`` (default TrainConfig).

    ``overrides`` maps keys to values or to flag strings ("16", "2e-4",
    "true", "q_proj,v_proj", "none"). Errors name ``path`` or
    ``overrides_source`` as where the offending key came from.
    """
    layers: list[tuple[str, Mapping[Any, Any]]] = []
    if path is not None:
        path = os.fspath(path)
        layers.append((path, _read_yaml(path)))
    if overrides:
        layers.append((overrides_source, overrides))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    cls = cls or TrainConfig
    hints = _type_hints(cls)
    for source, values in layers:
        layer = {}
        for key, value in values.items():
            if key not in hints:
                hint = _did_you_mean(key, hints) or " (the valid keys are the flags listed by --help)"
                raise UsageError(f"{source}: unknown key {key!r}{hint}")
            try:
                layer[key] = _coerce(key, value, hints[key])
            except UsageError as err:
                raise UsageError(f"{source}: {err}") from None
        _layer_method_keys(merged, origin, layer, source)
        merged.update(layer)
        origin.update(dict.fromkeys(layer, source))
    try:
        return cls(**merged)
    except UsageError as err:
        keys = getattr(err, "config_keys", ())
        source = next((origin[k] for k in keys if k in origin), path)
        raise UsageError(f"{source}: {err}" if source else str(err)) from None


def _layer_method_keys(merged: dict[str, Any], origin: dict[str, str], layer: dict[str, Any], source: str) -> None:
    """Let a higher layer that names the method decide it alone.

    ``--use_qlora`` over a YAML with ``finetune_method: lora`` gives qlora, and
    ``--finetune_method full`` over the QLoRA YAML gives full (not a conflict
    with its ``use_qlora: true``). A layer that only switches quantization off
    (``--use_qlora false``) turns a lower layer's qlora back into lora.
    """
    if "finetune_method" in layer or layer.get("use_qlora") or layer.get("load_in_4bit"):
        dropped = METHOD_KEYS
    elif "use_qlora" in layer or "load_in_4bit" in layer:
        dropped = ("use_qlora", "load_in_4bit")
        if merged.get("finetune_method") == "qlora":
            merged["finetune_method"], origin["finetune_method"] = "lora", source
    else:
        return
    for key in dropped:
        merged.pop(key, None)
        origin.pop(key, None)


def config_to_dict(cfg) -> dict[str, Any]:
    """All fields as plain Python values (lists and dicts copied), in declaration order."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg) -> str:
    """The config as YAML text, one commented block per section; ``load_config`` reads it back equal."""
    values = config_to_dict(cfg)
    lines = [f"# {type(cfg).YAML_TITLE}. Rerun with: --config <this file>", ""]
    for title, section in config_sections(type(cfg)):
        lines.append(f"# --- {title} ---")
        for f in section:
            lines.append(yaml.dump({f.name: values[f.name]}, Dumper=_ConfigDumper, sort_keys=False).rstrip("\n"))
        lines.append("")
    return "\n".join(lines)


def save_config(cfg, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML at ``path`` (temporary file, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(config_to_yaml(cfg), encoding="utf-8")


# ---------------------------------------------------------------------------
# Command line.


def add_config_arguments(parser: argparse.ArgumentParser, cls: type | None = None) -> None:
    """Add ``--config PATH`` and ``--KEY`` for every field of ``cls`` (default TrainConfig), one group per section.

    Flags the user does not give are absent from the parsed namespace, so
    they never override the YAML. Values stay strings here; ``config_from_args``
    checks them. Forms:

    - true/false keys: ``--do_eval`` (= true), ``--do_eval true``, ``--do_eval false``
      (also yes/no, on/off, 1/0);
    - list keys: ``--lora_target_modules q_proj,v_proj`` or ``--lora_target_modules q_proj v_proj``;
      repeating the flag adds to the list;
    - keys that may be null: ``--KEY none``.
    """
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="YAML file of 'key: value' lines (keys as the flags below); flags given here override it.",
    )
    hints = _type_hints(cls)
    for title, section in config_sections(cls):
        group = parser.add_argument_group(title)
        for f in section:
            bases, _ = _unpack(hints[f.name])
            base = typing.get_origin(bases[0]) or bases[0]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = ",".join(default) if isinstance(default, list) else ("null" if default is None else default)
            help_text = f"{f.metadata['help']} (default: {shown})".replace("%", "%%")
            options: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
            if base is bool:
                options.update(nargs="?", const="true", metavar="true|false")
            elif base is list:
                options.update(nargs="+", action="extend", metavar="NAME")
            elif f.name in getattr(cls or TrainConfig, "CHOICES", CHOICES):
                options.update(metavar="{" + ",".join(getattr(cls or TrainConfig, "CHOICES", CHOICES)[f.name]) + "}")
            else:
                options.update(metavar={int: "INT", float: "FLOAT", dict: "SPEC"}.get(base, "STR"))
            group.add_argument(f"--{f.name}", **options)


def config_from_args(args: argparse.Namespace, cls: type | None = None):
    """The YAML named by ``--config`` (if any), then only the config flags present in ``args``."""
    given = vars(args)
    overrides = {name: given[name] for name in field_names(cls) if name in given}
    return load_config(given.get("config"), overrides, cls=cls)


def config_reference_markdown(cls: type | None = None) -> str:
    """Every key of ``cls`` (default TrainConfig) with its default and meaning, as the README's reference tables."""

    def cell(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        return "`null`" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"

    defaults = config_to_dict((cls or TrainConfig)())
    lines: list[str] = []
    for title, fields in config_sections(cls):
        lines += [f"**{title}**", "", "| key | default | meaning |", "|---|---|---|"]
        lines += [f"| `{f.name}` | {cell(defaults[f.name])} | {f.metadata['help']} |" for f in fields]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
