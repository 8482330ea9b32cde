"""A run folder of any recipe (training, RL): checkpoints, resuming, the output_dir rules, saving weights.

Moved down from the training recipe so the RL recipe shares them without importing
training. A config here is any config dataclass with ``output_dir``,
``overwrite_output_dir`` and ``resume_from_checkpoint`` (and the method keys of
:class:`cad_recode.config.RunOutputs` for saving).

Checkpoint protocol: a recipe writes ``checkpoint-N/`` and writes its
``config.yaml`` LAST, so ``config.yaml`` is the completion mark: a checkpoint
without it was cut off while being written. ``resume_from_checkpoint: auto``
takes the newest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from cad_recode.config import RESUME_LATEST, save_config
from cad_recode.errors import InputError, UsageError
from cad_recode.model.loading import ADAPTER_FILES, CHECKPOINT_PREFIX, MERGED_DIR, RUN_CONFIG, TRAIN_LOG

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


def require_complete(checkpoint: Path) -> None:
    """A one-line InputError unless ``checkpoint`` was written to the end (its config.yaml exists)."""
    if not is_complete(checkpoint):
        raise InputError(f"checkpoint {checkpoint} is incomplete (no {RUN_CONFIG}: the run stopped while writing it); "
                         "resume from an earlier checkpoint or use --resume_from_checkpoint auto")


def require_same_network(checkpoint: Path, saved, cfg, keys: tuple[str, ...]) -> None:
    """A one-line InputError unless the checkpoint's config ``saved`` agrees with ``cfg`` on every key of ``keys``."""
    for key in keys:
        if getattr(saved, key) != getattr(cfg, key):
            raise InputError(f"checkpoint {checkpoint} was made for {key}={getattr(saved, key)!r}, this run has "
                             f"{key}={getattr(cfg, key)!r}; resume with --config {checkpoint / RUN_CONFIG} or "
                             "start a new output_dir")


def resolve_resume(cfg) -> Path | None:
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


def resume_notice(cfg, resume: Path | None) -> str | None:
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


def check_output_dir(cfg, resume: Path | None) -> None:
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


def clear_previous_run(output_dir: Path, extra_files: tuple[str, ...] = ()) -> None:
    """overwrite_output_dir: remove the old run's checkpoints, logs and outputs (other files stay)."""
    if not output_dir.is_dir():
        return
    for path in output_dir.iterdir():
        if checkpoint_step(path) is not None or path.name in (MERGED_DIR, "runs"):
            shutil.rmtree(path)
        elif path.name in (TRAIN_LOG, RUN_CONFIG, *ADAPTER_FILES, *extra_files):
            path.unlink()



def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__



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


def save_adapter(model, tokenizer, cfg, dest: Path) -> None:
    """Adapter (LoRA + projector), tokenizer files and config.yaml into ``dest``; each file atomic."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".adapter.", dir=dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        Path(tmp, "README.md").unlink(missing_ok=True)  # PEFT's model card template, not ours
        publish_files(Path(tmp), dest)
    save_config(cfg, dest / RUN_CONFIG)


def save_full_model(model, tokenizer, cfg, dest: Path) -> None:
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
