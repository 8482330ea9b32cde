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

Checkpoint protocol. The Trainer writes ``checkpoint-N/`` (weights, optimizer,
scheduler, RNG, trainer_state.json); then :class:`CheckpointCallback` adds the
merged copy (never merging the live model) and writes ``config.yaml`` LAST.
``config.yaml`` is therefore the completion mark: a checkpoint without it was
cut off while being written. ``resume_from_checkpoint: auto`` takes the newest
complete checkpoint; an explicit folder that is incomplete, unreadable or made
for another base model is a one-line ``InputError``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from transformers import TrainerCallback

from cad_recode.config import RESUME_LATEST, TrainConfig, load_config, save_config
from cad_recode.errors import InputError, UsageError
from cad_recode.model.loading import ADAPTER_FILES, CHECKPOINT_PREFIX, MERGED_DIR, RUN_CONFIG, TRAIN_LOG

# Files the Trainer writes that only serve resuming (dropped from checkpoints that keep only merged_model/).
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")
# Keys that fix the network a checkpoint's weights belong to.
IDENTITY_KEYS = ("base_model", "tiny_model", "finetune_method", "lora_r", "lora_target_modules", "num_point_tokens")


# --------------------------------------------------------------------------- run folder


def checkpoint_step(path: Path) -> int | None:
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in root.iterdir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / RUN_CONFIG).is_file()


def resolve_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from: None, the newest complete one (``auto``), or the folder given."""
    if cfg.resume_from_checkpoint is None:
        return None
    if cfg.resume_from_checkpoint == RESUME_LATEST:
        complete = [p for p in list_checkpoints(cfg.output_dir) if is_complete(p)]
        return complete[-1] if complete else None
    path = Path(cfg.resume_from_checkpoint)
    if not path.is_dir():
        raise InputError(
            f"resume_from_checkpoint {path} is not a folder; give a checkpoint-N folder of a run, or 'auto'"
        )
    return path


def resume_notice(cfg: TrainConfig, resume: Path | None) -> str | None:
    """The one line that says whether the run resumes (from which checkpoint) or starts fresh; None if not asked."""
    if cfg.resume_from_checkpoint is None:
        return None
    if resume is None:
        return (f"resume_from_checkpoint auto: {cfg.output_dir} has no complete checkpoint-N/, "
                "so training starts from step 0")
    how = "the newest complete checkpoint" if cfg.resume_from_checkpoint == RESUME_LATEST else "as asked"
    return f"resuming from {resume} ({how})"


def holds_run(output_dir: Path) -> bool:
    """Whether ``output_dir`` has anything in it (another run's files or anything else)."""
    return output_dir.is_dir() and any(output_dir.iterdir())


def check_output_dir(cfg: TrainConfig, resume: Path | None) -> None:
    """Refuse an output_dir that holds another run unless resuming or overwrite_output_dir."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output_dir {out} is a file; give a folder")
    if resume is not None or cfg.overwrite_output_dir or not holds_run(out):
        return
    if cfg.resume_from_checkpoint == RESUME_LATEST:
        problem = "has no complete checkpoint-N/ to resume"
    else:
        problem = "already holds another run"
    raise UsageError(
        f"output_dir {out} {problem}; resume it with --resume_from_checkpoint auto, choose another "
        "--output_dir, or replace it with --overwrite_output_dir"
    )


def clear_previous_run(output_dir: Path) -> None:
    """overwrite_output_dir: remove the old run's checkpoints, logs and outputs (other files stay)."""
    if not output_dir.is_dir():
        return
    for path in output_dir.iterdir():
        if checkpoint_step(path) is not None or path.name in (MERGED_DIR, "runs"):
            shutil.rmtree(path)
        elif path.name in (TRAIN_LOG, RUN_CONFIG, *ADAPTER_FILES):
            path.unlink()


# --------------------------------------------------------------------------- resume checks


def validate_checkpoint(checkpoint: Path, cfg: TrainConfig) -> None:
    """A one-line InputError unless ``checkpoint`` is complete, readable and made for this network."""
    where = f"checkpoint {checkpoint}"
    if not is_complete(checkpoint):
        raise InputError(
            f"{where} is incomplete (no {RUN_CONFIG}: the run stopped while writing it); "
            "resume from an earlier checkpoint or use --resume_from_checkpoint auto"
        )
    try:
        saved = load_config(checkpoint / RUN_CONFIG)
    except UsageError as err:
        raise InputError(f"{where} has an unreadable {RUN_CONFIG}: {err}") from None
    for key in IDENTITY_KEYS:
        if getattr(saved, key) != getattr(cfg, key):
            raise InputError(
                f"{where} was made for {key}={getattr(saved, key)!r}, this run has {key}={getattr(cfg, key)!r}; "
                f"resume with --config {checkpoint / RUN_CONFIG} or start a new output_dir"
            )
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
        raise InputError(f"{where} is corrupt ({_one_line(err)}); resume from an earlier checkpoint") from None


def _sharded(checkpoint: Path) -> bool:
    return (checkpoint / "model.safetensors.index.json").is_file()


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as reader:
        for key in reader.keys():
            reader.get_slice(key)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def load_error(checkpoint: Path, err: BaseException) -> InputError:
    """The one-line error for weights that do not fit the model (another base with the same name)."""
    return InputError(
        f"checkpoint {checkpoint} does not fit this model ({_one_line(err)[:300]}); "
        "it was made for another base model or LoRA setting: resume with its own config.yaml or start a new output_dir"
    )


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a side job (merge, evaluation) without moving the training RNG streams.

    A resumed run restores the RNG state saved before the checkpoint's merge, so
    the merge must leave the state as it found it for the losses to match.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def publish_files(src: Path, dest: Path) -> None:
    """Move every file of ``src`` into ``dest`` one by one (each an atomic rename)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.is_file():
            os.replace(path, dest / path.name)


def save_adapter(model, tokenizer, cfg: TrainConfig, dest: Path) -> None:
    """Adapter (LoRA + projector), tokenizer files and config.yaml into ``dest``; each file atomic."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".adapter.", dir=dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        Path(tmp, "README.md").unlink(missing_ok=True)  # PEFT's model card template, not ours
        publish_files(Path(tmp), dest)
    save_config(cfg, dest / RUN_CONFIG)


def save_full_model(model, tokenizer, cfg: TrainConfig, dest: Path) -> None:
    """A full fine-tune's final model: config.json, model.safetensors, generation_config.json, tokenizer."""
    from cad_recode.model import generation_config_for

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".model.", dir=dest) as tmp:
        model.save_pretrained(tmp)
        generation_config_for(tokenizer).save_pretrained(tmp)  # greedy, 768 new tokens: as merged_model/
        tokenizer.save_pretrained(tmp)
        publish_files(Path(tmp), dest)
    save_config(cfg, dest / RUN_CONFIG)


def save_merged_copy(peft_model, base_loader: Callable, tokenizer, dest: Path) -> None:
    """``dest`` = merged model built on a fresh full-precision base; the live model is only read."""
    from cad_recode.model import merged_copy, save_merged

    with preserved_rng():
        merged = merged_copy(peft_model, base_loader)
        save_merged(merged, tokenizer, dest, overwrite=True)
    del merged


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
        values = {k: v for k, v in logs.items() if isinstance(v, (int, float, str))}
        # NaN (e.g. CD when no program was valid) becomes null: the file stays strict JSON.
        values = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}
        record = {"step": state.global_step, **values}
        path = Path(args.output_dir) / TRAIN_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")


def read_train_log(output_dir: str | os.PathLike) -> list[dict]:
    path = Path(output_dir) / TRAIN_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
