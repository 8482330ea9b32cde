"""What an RL run writes and reads back: checkpoint-N/ (resumable), the final outputs, resume checks.

Layout of ``output_dir`` (the guide's, as ``train`` writes it)::

    adapter_config.json, adapter_model.safetensors   lora/qlora: the RL adapter + projector (keep_lora_final)
    tokenizer files, config.yaml                      the run's RLConfig; reruns with --config
    merged_model/                                     start model + RL adapter, full precision (auto_merge_final)
    train_log.jsonl, runs/, rl_curves.png             per-update log, TensorBoard events, the curves
    checkpoint-N/                                     after update N: weights (adapter, or the whole model for
                                                      full), optimizer.pt, scheduler.pt, rl_state.json,
                                                      merged_model/ (auto_merge_lora), config.yaml LAST

A ``full`` run holds the whole trained model in ``output_dir`` (and in each checkpoint) instead of an
adapter. ``config.yaml`` is written last, so a checkpoint without it was cut off and is never resumed.
``rl_state.json`` holds the update number and the input stream (epoch, position, solved inputs); every
random draw of an update is seeded from the update number, so there is no RNG state to restore.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from cad_recode.atomic import atomic_file
from cad_recode.config import save_config
from cad_recode.errors import InputError, UsageError
from cad_recode.model.loading import ADAPTER_FILES, CHECKPOINT_PREFIX, MERGED_DIR, RUN_CONFIG
from cad_recode.model.run_folder import (
    is_complete, list_checkpoints, one_line, require_complete, require_same_network, save_adapter, save_full_model,
    save_merged_copy,
)
from cad_recode.rl.config import RLConfig, load_rl_config

STATE_FILE = "rl_state.json"
RESUME_FILES = ("optimizer.pt", "scheduler.pt", STATE_FILE)
# Keys that fix the network a checkpoint's weights belong to.
IDENTITY_KEYS = ("start_model", "base_model", "finetune_method", "lora_r", "lora_target_modules")


def save_checkpoint(run, update: int) -> Path:
    """``checkpoint-<update>/`` on rank 0: resume files, merged copy, weights, then config.yaml (the mark)."""
    cfg, model = run.cfg, run.accelerator.unwrap_model(run.model)
    path = Path(cfg.output_dir) / f"{CHECKPOINT_PREFIX}{update}"
    if path.exists():  # a checkpoint cut off by a kill, at this very update: write it afresh
        shutil.rmtree(path)
    path.mkdir(parents=True)
    resumable = not cfg.uses_lora or cfg.keep_lora_only
    if resumable:
        torch.save(run.optimizer.state_dict(), path / "optimizer.pt")
        torch.save(run.scheduler.state_dict(), path / "scheduler.pt")
        with atomic_file(path / STATE_FILE) as tmp:
            tmp.write_text(json.dumps({"update": update, "stream": run.stream.state()}), encoding="utf-8")
    if cfg.merge_at_checkpoints:
        save_merged_copy(model, run.policy.base_loader, run.policy.tokenizer, path / MERGED_DIR)
    if not cfg.uses_lora:
        save_full_model(model, run.policy.tokenizer, cfg, path)
    elif cfg.keep_lora_only:
        save_adapter(model, run.policy.tokenizer, cfg, path)
    else:
        save_config(cfg, path / RUN_CONFIG)
    _rotate(cfg)
    return path


def _rotate(cfg: RLConfig) -> None:
    if cfg.save_total_limit is None:
        return
    complete = [p for p in list_checkpoints(cfg.output_dir) if is_complete(p)]
    for old in complete[: max(0, len(complete) - cfg.save_total_limit)]:
        shutil.rmtree(old, ignore_errors=True)


def save_final(run) -> None:
    """The final outputs (rank 0): adapter and/or merged_model/ (lora, qlora), or the whole model (full)."""
    cfg, model, tokenizer = run.cfg, run.accelerator.unwrap_model(run.model), run.policy.tokenizer
    out = Path(cfg.output_dir)
    if not cfg.uses_lora:
        save_full_model(model, tokenizer, cfg, out)
        return
    if cfg.adapter_at_end:
        save_adapter(model, tokenizer, cfg, out)
    else:
        tokenizer.save_pretrained(out)
        save_config(cfg, out / RUN_CONFIG)
    if cfg.merge_at_end:
        save_merged_copy(model, run.policy.base_loader, tokenizer, out / MERGED_DIR)


def validate_checkpoint(checkpoint: Path, cfg: RLConfig) -> None:
    """A one-line InputError unless ``checkpoint`` is a complete, resumable RL checkpoint of this network."""
    where = f"checkpoint {checkpoint}"
    require_complete(checkpoint)
    try:
        saved = load_rl_config(checkpoint / RUN_CONFIG)
    except UsageError as err:
        raise InputError(f"{where} is not an RL checkpoint of this version ({err})") from None
    require_same_network(checkpoint, saved, cfg, IDENTITY_KEYS)
    weights = ADAPTER_FILES[1] if cfg.uses_lora else "model.safetensors"
    for name in (weights, *RESUME_FILES):
        if not (checkpoint / name).is_file():
            hint = " (saved with keep_lora_only false, which keeps only merged_model/)" if cfg.uses_lora else ""
            raise InputError(f"{where} cannot be resumed: {name} is missing{hint}")


def load_checkpoint(run, checkpoint: Path) -> int:
    """Weights, optimizer, scheduler and input stream from ``checkpoint``; returns its update number."""
    from safetensors.torch import load_file

    model = run.accelerator.unwrap_model(run.model)
    try:
        if run.cfg.uses_lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(model, load_file(checkpoint / ADAPTER_FILES[1]))
        else:
            result = model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
            if result.unexpected_keys:
                raise ValueError(f"unexpected weights {result.unexpected_keys[:3]}")
        run.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True))
        run.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", map_location="cpu", weights_only=True))
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        run.stream.restore(state["stream"])
        return int(state["update"])
    except Exception as err:  # any parse or shape failure means a damaged or foreign checkpoint
        raise InputError(f"checkpoint {checkpoint} cannot be loaded ({one_line(err)[:300]}); resume from an earlier "
                         "checkpoint or start a new output_dir") from None
