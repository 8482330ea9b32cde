"""Greedy validation of the policy on a fixed set of inputs: IoU, invalid ratio, reward.

Greedy, because that is what ``infer`` writes by default: improving sampled programs is not the
same as improving greedy ones (the issue's prototype saw sampled IoU 0.60 against greedy 0.78).
Each input's points are drawn once with seed 0, so every validation reads the same inputs.
IoU is measured against the item's target solid (the truth, or the input mesh when it is closed);
an invalid program counts as IoU 0. Inputs without a closed target (clouds, open meshes) give no IoU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from cad_recode.model.generation import generate_programs


@dataclass
class ValidationResult:
    iou: float | None  # mean greedy IoU over the inputs with a closed target (None: no such input)
    ir: float  # share of inputs whose greedy program built no valid solid
    reward: float  # mean reward of the greedy programs


def _iou(result, target) -> float | None:
    from cad_recode.geometry.metrics import mesh_iou

    if target.mesh is None or not target.watertight:
        return None
    if not result.ok:
        return 0.0
    try:
        value = mesh_iou(result.to_trimesh(), target.mesh)
    except ValueError:  # not a closed solid: as invalid
        return 0.0
    return value if math.isfinite(value) else 0.0


def greedy_results(model, tokenizer, points: np.ndarray, *, max_new_tokens: int, grammar: bool, sandbox,
                   device: torch.device) -> list:
    """The sandbox results of the programs greedy decoding writes for ``points`` (B, P, 3), one generate call."""
    programs = generate_programs(model, tokenizer, torch.from_numpy(np.asarray(points, np.float32)).to(device),
                                 max_new_tokens=max_new_tokens, grammar=grammar)
    return sandbox.map([p.code for p in programs])


def validate(model, tokenizer, items: Sequence, *, num_point_tokens: int, max_new_tokens: int, grammar: bool,
             batch_size: int, sandbox, reward, device: torch.device) -> ValidationResult:
    """Greedy programs for ``items``, run in the sandbox and measured (see the module docstring)."""
    from cad_recode.rl.rewards import score

    ious, invalid, rewards = [], 0, []
    for first in range(0, len(items), batch_size):
        chunk = items[first:first + batch_size]
        points = np.stack([item.model_points(0, num_point_tokens) for item in chunk])
        results = greedy_results(model, tokenizer, points, max_new_tokens=max_new_tokens, grammar=grammar,
                                 sandbox=sandbox, device=device)
        for item, result in zip(chunk, results):
            invalid += int(not result.ok)
            rewards += score([result], item.target, reward)
            value = _iou(result, item.target)
            if value is not None:
                ious.append(value)
    return ValidationResult(float(np.mean(ious)) if ious else None, invalid / max(1, len(items)),
                            float(np.mean(rewards)) if rewards else 0.0)
