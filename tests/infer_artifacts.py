"""Tiny trained artefacts for the inference, merge and evaluation tests (not a test module).

Built with the model API only (no training recipe), offline, in a few seconds:

- ``memorizer``: a full tiny CAD-Recode model (hidden 64, 2 layers, 32 point tokens)
  trained until it writes the ``cube`` example program for cube points. It is
  saved like a full fine-tune (config.json, safetensors, tokenizer,
  generation_config.json) and doubles as the BASE for adapters, so models with an
  adapter also write valid programs.
- ``adapter_run``: a LoRA adapter (r=4) + its projector trained a few steps on that
  base, saved like a training output_dir (adapter files, tokenizer, config.yaml),
  optionally with ``merged_model/``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from cad_recode.geometry.sampling import to_model_points
from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program
from cad_recode.model import (
    CADRecodeForCausalLM,
    apply_lora,
    build_tiny_lm,
    generation_config_for,
    load_base_lm,
    merged_copy,
    save_merged,
)
from cad_recode.model.tokenizer import train_code_tokenizer

POINTS = 32
MAX_NEW_TOKENS = 100  # the cube program is 82 tokens


@functools.lru_cache(maxsize=1)
def tokenizer():
    return train_code_tokenizer(list(EXAMPLE_SHAPES.values()) * 3, vocab_size=300)


def code_ids(code: str) -> list[int]:
    return [1] + tokenizer().encode(code) + [0]  # <|im_start|> code <|endoftext|> (small BPE ids)


def shape_points(mesh, seeds=range(4)) -> torch.Tensor:
    return torch.from_numpy(np.stack([to_model_points(mesh, n_points=POINTS, seed=s).points for s in seeds]))


def train_steps(model, points: torch.Tensor, code: str, steps: int, lr: float, until: float = 0.0) -> float:
    ids = torch.tensor([code_ids(code)] * len(points))
    labels = ids.clone()
    labels[:, 0] = -100
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    loss = None
    for _ in range(steps):
        loss = model(points=points, input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < until:
            break
    model.eval()
    return loss.item()


_TRAINED: dict[str, dict] = {}  # one memorizer per test process, shared by the test modules


def _memorizer_state(points: torch.Tensor) -> dict:
    if "memorizer" not in _TRAINED:
        lm = build_tiny_lm(vocab_size=len(tokenizer()), hidden_size=64, intermediate_size=128, seed=0)
        torch.manual_seed(1)
        model = CADRecodeForCausalLM.from_lm(lm, num_point_tokens=POINTS)
        train_steps(model, points, example_program("cube"), steps=300, lr=3e-3, until=0.008)
        _TRAINED["memorizer"] = {k: v.clone() for k, v in model.state_dict().items()}
    return _TRAINED["memorizer"]


def save_memorizer(cube_mesh, folder: Path) -> Path:
    """The full model that writes the cube program, saved like a full fine-tune."""
    points = shape_points(cube_mesh)
    state = _memorizer_state(points)
    lm = build_tiny_lm(vocab_size=len(tokenizer()), hidden_size=64, intermediate_size=128, seed=0)
    model = CADRecodeForCausalLM.from_lm(lm, num_point_tokens=POINTS)
    model.load_state_dict(state)
    model.save_pretrained(folder)
    generation_config_for(tokenizer()).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder


def adapter_run(base_dir: Path, folder: Path, points: torch.Tensor, code: str, *, steps: int = 3, lr: float = 1e-2,
                seed: int = 0, merged: bool = False, quantization=None) -> Path:
    """A LoRA adapter + projector trained ``steps`` steps on ``base_dir``, saved like a training output_dir."""
    base = load_base_lm(base_dir, dtype="float32", quantization=quantization)
    torch.manual_seed(seed)
    peft_model = apply_lora(base, r=4, alpha=8, dropout=0.0)
    # LoRA B starts at zero: nudge it so a couple of steps make adapters clearly differ.
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    train_steps(peft_model, points, code, steps=steps, lr=lr)
    peft_model.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    (folder / "config.yaml").write_text(f"num_point_tokens: {POINTS}\n")
    if merged:
        full = merged_copy(peft_model, lambda: load_base_lm(base_dir, dtype="float32"))
        save_merged(full, tokenizer(), folder / "merged_model")
    return folder
