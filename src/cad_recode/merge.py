"""Merge recipe: base model + LoRA adapter (+ its trained projector) -> one full-precision model folder.

    merge_adapter("Qwen/Qwen3-1.7B-Base", "checkpoints_qwen3_lora", "merged_model")

Protocol:

- The base is loaded WITHOUT quantization, in float32, whatever the adapter was
  trained on: a QLoRA adapter merged into a 4-bit base would be rounded back to
  4 bits (a defect of public implementations, design.md §2).
- The adapter is loaded onto that fresh base and merged there; the merged
  model's projector is the adapter's trained one (PEFT ``modules_to_save``).
  The model merged is a throwaway copy loaded for this purpose, never a live
  training model.
- Saved with :func:`cad_recode.model.save_merged`: config.json, safetensors
  (sharded above ``max_shard_size``), the tokenizer (from the adapter folder,
  where training saves it) and generation_config.json, written atomically. The
  tied input/output embeddings of Qwen3 stay tied (stored once).
- ``dtype`` only sets the dtype the merged weights are SAVED in (float32 by
  default); the merge itself always runs in float32.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cad_recode.atomic import check_writable
from cad_recode.errors import InputError, UsageError
from cad_recode.model.builders import resolve_dtype
from cad_recode.model.loading import (
    DEFAULT_ADAPTER,
    attach_adapters,
    load_source_base,
    load_tokenizer,
    resolve_source,
)


@dataclass
class MergeReport:
    output_path: Path
    base: str
    adapter: Path
    dtype: str
    files: list[str]
    seconds: float

    def summary(self) -> str:
        return (
            f"merged {self.adapter} into {self.base} ({self.dtype}) -> {self.output_path} "
            f"({len(self.files)} files, {self.seconds:.1f} s)"
        )


def merge_adapter(
    base_model: str | os.PathLike | None,
    lora_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "float32",
    max_shard_size: str | int = "2GB",
    overwrite: bool = False,
) -> MergeReport:
    """Merge the adapter in ``lora_path`` into ``base_model`` (None: the base the adapter recorded)."""
    started = time.perf_counter()
    save_dtype = resolve_dtype(dtype)
    if not isinstance(save_dtype, torch.dtype):
        raise UsageError(f"merge dtype must be float32, bfloat16 or float16, got {dtype!r}")
    out = check_writable(output_path, folder=True, what="output_path")  # a file is never replaced by a folder
    if out.exists() and not overwrite:
        raise UsageError(f"output_path {out} already exists; choose another folder or pass --overwrite")
    source = resolve_source(base_model, None, {DEFAULT_ADAPTER: lora_path}, prefer_merged=False)
    adapter_dir = source.adapters[DEFAULT_ADAPTER]
    tokenizer = load_tokenizer(source.tokenizer_dir or source.base)
    base = load_source_base(source, tokenizer, dtype=torch.float32)
    peft_model = attach_adapters(base, {DEFAULT_ADAPTER: adapter_dir}, source.base or str(source.tiny_config))
    merged = peft_model.merge_and_unload()
    merged.to(save_dtype)
    merged.point_encoder.to(torch.float32)  # the projector stays fp32 in every export (design.md §2)
    merged.eval()

    from cad_recode.model import save_merged

    try:
        save_merged(merged, tokenizer, out, overwrite=overwrite, max_shard_size=max_shard_size)
    except OSError as err:
        raise InputError(f"cannot write merged model to {out}: {err.strerror or err}; choose a writable folder") from None
    return MergeReport(
        output_path=out,
        base=source.base or f"tiny base of {source.tiny_config}",
        adapter=adapter_dir,
        dtype=str(save_dtype).removeprefix("torch."),
        files=sorted(p.name for p in out.iterdir()),
        seconds=time.perf_counter() - started,
    )
