"""Where the causal LM comes from: a tiny random one (offline tests, CPU runs) or a real checkpoint.

``build_tiny_lm`` (and ``build_tiny`` from a run's ``tiny_model`` spec) builds a Qwen3 or Qwen2 architecture from a config, random
weights, no download. Qwen2.5 checkpoints use the Qwen2 architecture
(model_type "qwen2"), so "qwen2" covers both.

``load_base_lm`` loads a named or local checkpoint, optionally in 4-bit NF4 for
QLoRA (``quantization_config``). A name that is not available offline is a
one-line ``InputError`` that says how to download it or point at a local copy.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from cad_recode.errors import InputError, UsageError



class _OptionalKernelNotice(logging.Filter):
    """Drops one bitsandbytes notice, nothing else from it.

    On import, bitsandbytes (0.49+) on a CPU with AVX512-BF16 tries to fetch an optional
    4-bit CPU kernel from the kernels hub and warns "Failed to load CPU gemm_4bit_forward
    ... No module named 'kernels'" when that package is absent. It falls back to its own
    kernel, and this project is offline (never fetches from a hub), so the notice only alarms.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


# Installed before bitsandbytes is first imported (PEFT imports it), on the one logger that says it.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_OptionalKernelNotice())

DEFAULT_BASE_MODEL = "Qwen/Qwen3-1.7B-Base"
# Its config.json's architecture: `--dry_run` counts and sizes the default run offline, and the GPU
# benchmarks build it with random weights (speed and memory do not depend on the values).
QWEN3_1_7B_ARCHITECTURE = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1_000_000,
    tie_word_embeddings=True,
)
# Kept in full precision under QLoRA: the projector (tiny, precision-sensitive) and the
# LM head (its weight is the tied input embedding for Qwen3-1.7B).
QUANTIZATION_SKIP_MODULES = ["point_encoder", "lm_head"]


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """'bfloat16' / 'bf16' / torch.bfloat16 / 'auto' / None -> what from_pretrained takes."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(str(dtype), str(dtype))
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise UsageError(f"unknown dtype {dtype!r}; use bfloat16, float16, float32 or auto")
    return resolved


def build_tiny_lm(
    architecture: str = "qwen3",
    vocab_size: int = 512,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 64,
    tie_word_embeddings: bool = True,
    max_position_embeddings: int = 2048,
    seed: int | None = 0,
    **config_overrides,
) -> PreTrainedModel:
    """A randomly initialized causal LM of a real architecture; deterministic for a given ``seed``."""
    if architecture not in ("qwen3", "qwen2"):
        raise UsageError(f"unknown tiny architecture {architecture!r}; use 'qwen3' or 'qwen2' (Qwen2.5 is 'qwen2')")
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise UsageError(
            f"hidden_size={hidden_size} must divide by num_heads={num_heads}, and num_heads by num_kv_heads={num_kv_heads}"
        )
    config = AutoConfig.for_model(
        architecture,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        intermediate_size=intermediate_size,
        tie_word_embeddings=tie_word_embeddings,
        max_position_embeddings=max_position_embeddings,
        **config_overrides,
    )
    if seed is not None:
        torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def quantization_config(compute_dtype: str | torch.dtype = "bfloat16", quant_type: str = "nf4", double_quant: bool = True):
    """BitsAndBytesConfig for QLoRA: 4-bit weights, double quantization, projector and LM head unquantized."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise UsageError(f"QLoRA needs bitsandbytes ({error}); install it with `pip install bitsandbytes`") from None
    from transformers import BitsAndBytesConfig

    if quant_type not in ("nf4", "fp4"):
        raise UsageError(f"bnb_4bit_quant_type={quant_type!r} is not valid; use nf4 or fp4")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=resolve_dtype(compute_dtype),
        llm_int8_skip_modules=list(QUANTIZATION_SKIP_MODULES),
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def load_base_lm(
    name_or_path: str | os.PathLike = DEFAULT_BASE_MODEL,
    dtype: str | torch.dtype | None = "bfloat16",
    quantization=None,
    device_map=None,
    **kwargs,
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` with project errors.

    ``quantization``: a ``BitsAndBytesConfig`` (see ``quantization_config``) or None.
    A folder holding a saved ``cad_recode`` model loads as ``CADRecodeForCausalLM``.
    """
    dtype = resolve_dtype(dtype)
    local = Path(name_or_path).expanduser()
    is_local = local.exists()
    if not is_local and str(name_or_path).startswith(("/", "./", "../", "~")):
        raise InputError(f"base model folder {local} does not exist; check --base_model")
    if is_local and not (local / "config.json").is_file():
        raise InputError(f"base model folder {local} has no config.json; point --base_model at a saved model folder")
    source = str(local) if is_local else str(name_or_path)
    try:
        return AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            quantization_config=quantization,
            device_map=device_map,
            local_files_only=is_local or _offline(),
            **kwargs,
        )
    except OSError as error:
        if is_local:
            raise InputError(f"cannot load base model from {local}: {str(error).splitlines()[0]}") from None
        raise InputError(
            f"base model {name_or_path!r} is not available offline; download it with "
            f"`huggingface-cli download {name_or_path} --local-dir models/{Path(str(name_or_path)).name}` "
            "and pass that folder as --base_model (or unset HF_HUB_OFFLINE to download on first use)"
        ) from None


def tiny_spec(spec: dict | str | os.PathLike | None) -> dict:
    """A ``tiny_model`` setting -> its mapping: given inline, or read from a config.json path."""
    if spec is None:
        return {}
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"tiny_model {spec} is not a file; give a config.json path or a mapping")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise UsageError(f"tiny_model {spec}: not valid JSON ({err})") from None
    return dict(spec)


def build_tiny(spec: dict | str | os.PathLike | None, vocab_size: int, seed: int) -> PreTrainedModel:
    """The tiny base LM a ``tiny_model`` spec describes, random init fixed by ``seed``.

    The same spec and seed rebuild the same weights: that is how a tiny run's base
    is found again for merging and inference (it is never saved on its own).
    """
    spec = tiny_spec(spec)
    if "model_type" in spec and "architecture" not in spec:  # a config.json
        spec["architecture"] = spec.pop("model_type")
    renames = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads", "num_key_value_heads": "num_kv_heads"}
    kwargs = {renames.get(k, k): v for k, v in spec.items() if k not in ("vocab_size", "architectures", "transformers_version")}
    architecture = kwargs.pop("architecture", "qwen3")
    head_dim = kwargs.pop("head_dim", None)
    heads = kwargs.get("num_heads", 4)
    if head_dim is not None and head_dim * heads != kwargs.get("hidden_size", 32):
        raise UsageError(f"tiny_model head_dim {head_dim} must equal hidden_size / num_attention_heads")
    return build_tiny_lm(architecture, vocab_size=vocab_size, seed=seed, **kwargs)
