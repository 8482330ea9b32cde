"""LoRA / QLoRA on the wrapped LM, parameter counts, and merging that never touches the live model.

``apply_lora`` puts LoRA layers on the LM's projections only (the target regex
is anchored under ``lm.``, so the projector is never LoRA-wrapped) and lists
``point_encoder`` in PEFT's ``modules_to_save``: the projector is trained fully
and every adapter saves (and switches to) its own copy of it.

``merged_copy`` is the fix for the "merge at a checkpoint stops training"
defect: it loads a fresh full-precision base, copies the live adapter and
projector weights into it and merges there. The live model is only read.
For QLoRA the base loader must return an unquantized model; merging into 4-bit
weights would add rounding error.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from cad_recode import defaults
from cad_recode.errors import UsageError
from cad_recode.model.wrapper import CADRecodeForCausalLM, code_generation_config
from cad_recode.model.tokenizer import CodeTokens

DEFAULT_TARGET_MODULES = defaults.LORA_TARGET_MODULES
PROJECTOR = "point_encoder"
LM_PREFIX = "lm"


def _all_linear_names(model: CADRecodeForCausalLM) -> list[str]:
    """Leaf names of the LM's linear layers except the output head ("all-linear" in PEFT terms)."""
    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.lm.named_modules()
        if isinstance(module, nn.Linear) and module is not head
    }
    return sorted(names)


def lora_target_regex(model: CADRecodeForCausalLM, target_modules: Sequence[str] | str) -> str:
    """A PEFT target regex matching ``lm.<...>.<name>`` for each name; never the projector."""
    if isinstance(target_modules, str):
        target_modules = _all_linear_names(model) if target_modules == "all-linear" else [target_modules]
    names = list(dict.fromkeys(target_modules))
    if not names:
        raise UsageError("lora_target_modules is empty; list module names such as q_proj, v_proj")
    known = {name.rsplit(".", 1)[-1] for name, _ in model.lm.named_modules()}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(
            f"lora_target_modules {unknown} not found in {type(model.lm).__name__}; "
            f"linear layers there: {', '.join(_all_linear_names(model))}"
        )
    return rf"^{LM_PREFIX}\..*\.({'|'.join(re.escape(name) for name in names)})$"


def lora_config(
    model: CADRecodeForCausalLM,
    r: int = defaults.LORA_R,
    alpha: int = defaults.LORA_ALPHA,
    dropout: float = defaults.LORA_DROPOUT,
    target_modules: Sequence[str] | str = DEFAULT_TARGET_MODULES,
):
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(model, target_modules),
        modules_to_save=[PROJECTOR],
        bias="none",
        task_type="CAUSAL_LM",
    )


def prepare_for_kbit_training(model: CADRecodeForCausalLM, gradient_checkpointing: bool = False) -> CADRecodeForCausalLM:
    """PEFT's k-bit preparation (freeze, fp32 norms/embeddings, input grads) for a 4-bit base; no-op otherwise."""
    if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def apply_lora(
    model: CADRecodeForCausalLM,
    r: int = defaults.LORA_R,
    alpha: int = defaults.LORA_ALPHA,
    dropout: float = defaults.LORA_DROPOUT,
    target_modules: Sequence[str] | str = DEFAULT_TARGET_MODULES,
    adapter_name: str = "default",
    gradient_checkpointing: bool = False,
):
    """Wrap ``model`` in a PEFT model: LoRA on the LM, projector fully trainable and saved with the adapter.

    A 4-bit (QLoRA) base is first prepared with ``prepare_model_for_kbit_training``.
    Returns the ``PeftModel``; ``model`` is modified in place (LoRA layers injected).
    """
    from peft import get_peft_model

    if not isinstance(model, CADRecodeForCausalLM):
        raise UsageError(f"apply_lora expects a CADRecodeForCausalLM, got {type(model).__name__}")
    model = prepare_for_kbit_training(model, gradient_checkpointing)
    config = lora_config(model, r=r, alpha=alpha, dropout=dropout, target_modules=target_modules)
    return get_peft_model(model, config, adapter_name=adapter_name)


@dataclass
class ParameterCount:
    """Parameter counts; ``groups`` maps lm / lora / point_encoder to (total, trainable).

    ``weight_bytes`` is what the weights occupy as stored (4-bit packed weights at their packed size).
    """

    total: int = 0
    trainable: int = 0
    weight_bytes: int = 0
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def summary(self) -> str:
        parts = ", ".join(f"{name} {total:,} ({trainable:,} trainable)" for name, (total, trainable) in self.groups.items())
        return f"{self.trainable:,} of {self.total:,} parameters trainable ({100 * self.trainable_fraction:.2f}%): {parts}"


def _param_group(name: str) -> str:
    if "lora_" in name:
        return "lora"
    if PROJECTOR in name:
        return PROJECTOR
    return "lm"


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count each shared (tied) tensor once; 4-bit packed weights count as their unpacked size.

    PEFT's ``modules_to_save`` keeps a frozen ``original_module`` copy of the
    projector beside the trained one: it takes memory (``weight_bytes``) but is
    not a parameter of the model, so it is not counted again in the totals.
    """
    count = ParameterCount()
    groups: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        numel = param.numel()
        count.weight_bytes += numel * param.element_size()
        if ".original_module." in name:
            continue
        if param.__class__.__name__ == "Params4bit":  # two 4-bit values per stored byte
            numel *= 2 * param.element_size()
        group = groups.setdefault(_param_group(name), [0, 0])
        group[0] += numel
        count.total += numel
        if param.requires_grad:
            group[1] += numel
            count.trainable += numel
    count.groups = {name: (total, trainable) for name, (total, trainable) in groups.items()}
    return count


def optimizer_groups(
    model: nn.Module,
    learning_rate: float,
    projector_learning_rate: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict]:
    """AdamW parameter groups of the trainable weights: the one rule every recipe uses.

    LM and LoRA matrices decay; biases and norm weights (1-D, or named ``norm``) do not;
    the projector trains at its own learning rate (``None``: ``learning_rate``).
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decays = param.ndim >= 2 and "norm" not in name
            groups.setdefault((PROJECTOR in name, decays), []).append(param)
    result = []
    for (is_projector, decays), params in sorted(groups.items()):
        lr = projector_learning_rate if is_projector and projector_learning_rate is not None else learning_rate
        result.append({"params": params, "lr": lr, "weight_decay": weight_decay if decays else 0.0})
    return result


def _is_quantized(model: nn.Module) -> bool:
    return any(param.__class__.__name__ in ("Params4bit", "Int8Params") for param in model.parameters())


def merged_copy(
    peft_model,
    base_loader: Callable[[], nn.Module],
    adapter_name: str | None = None,
) -> CADRecodeForCausalLM:
    """A merged CADRecodeForCausalLM built on a fresh base; ``peft_model`` is only read.

    ``base_loader()`` returns the full-precision base the adapter was trained on:
    a ``CADRecodeForCausalLM`` or a bare causal LM (wrapped here). Its projector
    is replaced by the adapter's trained one. Each call gives a new model.
    """
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    adapter = adapter_name or peft_model.active_adapter
    if adapter not in peft_model.peft_config:
        raise UsageError(f"adapter {adapter!r} not loaded; loaded adapters: {', '.join(peft_model.peft_config)}")
    base = base_loader()
    if not isinstance(base, CADRecodeForCausalLM):
        live = peft_model.get_base_model()
        base = CADRecodeForCausalLM.from_lm(base, num_point_tokens=live.config.num_point_tokens,
                                            num_surface_points=live.config.num_surface_points)
    if _is_quantized(base):
        raise UsageError(
            "merged_copy needs a full-precision base; the base loader returned a quantized model "
            "(load the base without quantization_config to merge a QLoRA adapter)"
        )
    config = copy.deepcopy(peft_model.peft_config[adapter])
    config.inference_mode = True
    with torch.no_grad():
        weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model, adapter_name=adapter).items()}
    candidate = get_peft_model(base, config, adapter_name=adapter)
    try:
        result = set_peft_model_state_dict(candidate, weights, adapter_name=adapter)
        problem = f"unexpected weights {result.unexpected_keys[:3]}" if result.unexpected_keys else ""
    except RuntimeError as error:  # shape mismatch: another architecture or size
        problem = str(error).strip().splitlines()[-1].strip()
    if problem:
        raise UsageError(
            f"adapter {adapter!r} (trained on {config.base_model_name_or_path or 'an unnamed base'}) does not fit "
            f"the base from base_loader ({base.name_or_path or type(base.lm).__name__}): {problem}"
        )
    merged = candidate.merge_and_unload()
    merged.eval()
    return merged


def generation_config_for(tokenizer, **overrides):
    """generation_config.json content: greedy, 768 new tokens, eos = <|endoftext|> id from ``tokenizer``."""
    return code_generation_config(CodeTokens.from_tokenizer(tokenizer), **overrides)


def save_merged(
    model: CADRecodeForCausalLM,
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_shard_size: str | int = "2GB",
) -> None:
    """Write a self-contained merged model folder atomically.

    Contents: config.json, model.safetensors (sharded with an index above
    ``max_shard_size``), the tokenizer files and generation_config.json. It
    reloads with ``AutoModelForCausalLM.from_pretrained(out_dir)`` after
    ``import cad_recode.model``.
    """
    from cad_recode.atomic import atomic_dir

    if not isinstance(model, CADRecodeForCausalLM):
        raise UsageError(
            f"save_merged expects a merged CADRecodeForCausalLM, got {type(model).__name__}; "
            "merge an adapter first with cad_recode.model.merged_copy"
        )
    if _is_quantized(model):
        raise UsageError("save_merged refuses a quantized model; merge into a full-precision base with merged_copy")
    generation_config = generation_config_for(tokenizer)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
