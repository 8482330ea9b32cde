"""What the training recipe writes and reads back: run folder, checkpoints, final outputs, resume.

Layout of ``output_dir`` (design.md §3)::

    adapter_config.json            LoRA/QLoRA: the final adapter (keep_lora_final)
    adapter_model.safetensors      ... LoRA weights + the trained point projector
    tokenizer files                tokenizer.json, tokenizer_config.json, ...
    config.yaml                    the run's TrainConfig; reruns with --config
    train_log.jsonl                one JSON line per log event (step, loss, lr, eval metrics); a
                                   resumed run appends, so a step's later line supersedes an earlier one
    runs/                          TensorBoard event files
    checkpoint-N/                  Trainer state + adapter (+ merged_model/ with auto_merge_lora)
    merged_model/                  full-precision base + adapter + projector, tokenizer,
                                   generation_config.json (auto_merge_final)

A ``full`` run has no adapter: ``output_dir`` itself holds the trained model
(config.json, model.safetensors, generation_config.json, tokenizer files) and
loads with ``AutoModelForCausalLM.from_pretrained(output_dir)``; there is no
``merged_model/``.

The run-folder helpers (listing, resolving and checking checkpoints, saving
weights) are :mod:`cad_recode.model.run_folder`'s, shared with the RL recipe.

Checkpoint protocol. The Trainer writes ``checkpoint-N/`` (weights, optimizer,
scheduler, RNG, trainer_state.json); then :class:`CheckpointCallback` adds the
merged copy (never merging the live model) and writes ``config.yaml`` LAST.
``config.yaml`` is therefore the completion mark: a checkpoint without it was
cut off while being written. ``resume_from_checkpoint: auto`` takes the newest
complete checkpoint; an explicit folder that is incomplete, unreadable or made
for another base model is a one-line ``InputError``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from cad_recode.config import TrainConfig, load_config, save_config
from cad_recode.errors import InputError, UsageError
from cad_recode.model.loading import ADAPTER_FILES, CHECKPOINT_PREFIX, MERGED_DIR, RUN_CONFIG, TRAIN_LOG
# The run-folder pieces every recipe shares live in the model layer; re-exported for the recipe and its tests.
from cad_recode.model.run_folder import (  # noqa: F401
    check_output_dir, checkpoint_step, clear_previous_run, holds_run, is_complete, list_checkpoints, one_line,
    preserved_rng, publish_files, require_complete, require_same_network, resolve_resume, resume_notice, save_adapter,
    save_full_model, save_merged_copy,
)
from cad_recode.model.runlog import append_log, read_train_log  # noqa: F401

# Files the Trainer writes that only serve resuming (dropped from checkpoints that keep only merged_model/).
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")
# Keys that fix the network a checkpoint's weights belong to.
IDENTITY_KEYS = ("base_model", "tiny_model", "finetune_method", "lora_r", "lora_target_modules", "num_point_tokens")


# --------------------------------------------------------------------------- resume checks


def validate_checkpoint(checkpoint: Path, cfg: TrainConfig) -> None:
    """A one-line InputError unless ``checkpoint`` is complete, readable and made for this network."""
    where = f"checkpoint {checkpoint}"
    require_complete(checkpoint)
    try:
        saved = load_config(checkpoint / RUN_CONFIG)
    except UsageError as err:
        raise InputError(f"{where} has an unreadable {RUN_CONFIG}: {err}") from None
    require_same_network(checkpoint, saved, cfg, IDENTITY_KEYS)
    weights = ("adapter_model.safetensors",) if cfg.uses_lora else ("model.safetensors",)
    required = (*weights, "trainer_state.json", "optimizer.pt", "scheduler.pt")
    for name in required:
        if not (checkpoint / name).is_file() and not (name == "model.safetensors" and _sharded(checkpoint)):
            hint = " (it was saved with keep_lora_only false, which keeps only merged_model/)" if name in ADAPTER_FILES else ""
            raise InputError(f"{where} cannot be resumed: {name} is missing{hint}")
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        for name in weights:
            if (checkpoint / name).is_file():
                _check_safetensors(checkpoint / name)
        for name in ("optimizer.pt", "scheduler.pt"):
            torch.load(checkpoint / name, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # any parse failure means a damaged file
        raise InputError(f"{where} is corrupt ({one_line(err)}); resume from an earlier checkpoint") from None


def _sharded(checkpoint: Path) -> bool:
    return (checkpoint / "model.safetensors.index.json").is_file()


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        for key in reader.keys():
            reader.get_slice(key)


def load_error(checkpoint: Path, err: BaseException) -> InputError:
    """The one-line error for weights that do not fit the model (another base with the same name)."""
    return InputError(
        f"checkpoint {checkpoint} does not fit this model ({one_line(err)[:300]}); "
        "it was made for another base model or LoRA setting: resume with its own config.yaml or start a new output_dir"
    )


# --------------------------------------------------------------------------- writing


class CheckpointCallback(TrainerCallback):
    """Completes each ``checkpoint-N/`` on rank 0: merged copy, adapter policy, then the completion mark."""

    def __init__(self, cfg: TrainConfig, tokenizer, base_loader: Callable | None):
        self.cfg, self.tokenizer, self.base_loader = cfg, tokenizer, base_loader

    def on_save(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        if not checkpoint.is_dir():
            return
        if self.cfg.merge_at_checkpoints and self.base_loader is not None:
            save_merged_copy(model, self.base_loader, self.tokenizer, checkpoint / MERGED_DIR)
        if self.cfg.uses_lora and not self.cfg.keep_lora_only:
            for name in (*ADAPTER_FILES, *RESUME_FILES):
                (checkpoint / name).unlink(missing_ok=True)
            for path in checkpoint.glob("rng_state*.pth"):
                path.unlink()
        save_config(self.cfg, checkpoint / RUN_CONFIG)  # last: marks the checkpoint complete


class JsonLogCallback(TrainerCallback):
    """Appends every log event (training loss per logging step, eval metrics) to output_dir/train_log.jsonl."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        append_log(args.output_dir, state.global_step, logs)  # NaN (no valid program) becomes null
