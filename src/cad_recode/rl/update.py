"""One policy update from an update's groups: select, score the old policy, then PPO passes.

- Selection: per group ``A = r - mean(r)``, keep the ``top_k`` samples with the largest ``|A|``
  (:mod:`cad_recode.rl.objective`); a group whose rewards are all equal teaches nothing and is counted.
- The sequences are ``<|im_start|> code [<|endoftext|>]`` after the point tokens, as in SFT; a sample cut
  before its end token is trained on the tokens it wrote (no end token). Log-probs are taken at the
  sampling temperature (logits / T), the distribution the samples were drawn from.
- ``ppo_epochs`` passes; each pass is one optimizer step over all selected samples, in micro-batches
  whose losses are weighted by their share of the update's tokens (a token-level mean over the update),
  with DDP gradient sync only on the last micro-batch. The old log-probs are the policy's before the
  first pass, so the first pass's ratio is exactly 1 (dropout off).
- Supervised terms (:class:`SupervisedTerm`): every pass also adds ``coef`` x the token-mean cross-entropy
  (at temperature 1, as SFT trains) of some sequences: the anchor's replayed programs
  (:mod:`cad_recode.rl.anchor`) and the programs imitated (:mod:`cad_recode.rl.imitation`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from cad_recode.rl.objective import (
    clipped_policy_loss, group_advantages, is_zero_advantage, kl_to_reference, token_log_probs, top_k_by_advantage,
)
from cad_recode.rl.rollouts import Group


@dataclass
class Selected:
    """One sequence to train on."""

    points: np.ndarray
    ids: list[int]
    finished: bool
    advantage: float


@dataclass
class Selection:
    samples: list[Selected]
    groups: int
    zero_advantage_groups: int


def select(groups: Sequence[Group], top_k: int) -> Selection:
    """The top-k samples of every group by |advantage| (all groups keep k, so every process trains on as many)."""
    samples, zero = [], 0
    for group in groups:
        advantages = group_advantages(torch.as_tensor(group.rewards))
        zero += int(is_zero_advantage(advantages))
        for index in top_k_by_advantage(advantages, top_k).tolist():
            sample = group.samples[index]
            samples.append(Selected(group.points, sample.ids, sample.finished, float(advantages[index])))
    return Selection(samples, len(groups), zero)


@dataclass
class SequenceBatch:
    points: torch.Tensor  # (B, P, 3)
    input_ids: torch.Tensor  # (B, T): <|im_start|> code [<|endoftext|>], right-padded
    attention_mask: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T-1): 1 where input_ids[:, 1:] is a generated token
    advantages: torch.Tensor  # (B,)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


def make_batch(samples: Sequence[Selected], start_id: int, end_id: int, pad_id: int,
               device: torch.device) -> SequenceBatch:
    rows = [[start_id, *s.ids, *([end_id] if s.finished else [])] for s in samples]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        attention[i, :len(row)] = 1
    points = torch.from_numpy(np.stack([s.points for s in samples])).float()
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    return SequenceBatch(points.to(device), ids.to(device), attention.to(device),
                         attention[:, 1:].float().to(device), advantages.to(device))


def sequence_log_probs(model, batch: SequenceBatch, temperature: float) -> torch.Tensor:
    """(B, T-1) log-probs of the generated tokens under ``model`` at ``temperature``."""
    width = batch.input_ids.shape[1]
    out = model(points=batch.points, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                logits_to_keep=width)  # only the code positions: no logits for the point tokens
    logits = out.logits[:, :-1]
    if temperature != 1.0:
        logits = logits / temperature
    return token_log_probs(logits, batch.input_ids[:, 1:])


@dataclass
class SupervisedTerm:
    """Sequences whose SFT cross-entropy (token mean over the term) joins every pass, times ``coef``."""

    name: str  # "anchor", "imitation": logged as NAME_loss
    coef: float
    batches: Sequence[SequenceBatch]

    @property
    def num_tokens(self) -> int:
        return sum(b.num_tokens for b in self.batches)


@dataclass
class UpdateStats:
    loss: float = 0.0
    kl: float = 0.0
    supervised_loss: dict[str, float] = field(default_factory=dict)  # each term's cross-entropy, mean over passes
    clip_fraction: float = 0.0
    ratio_mean: float = 0.0
    grad_norm: float = 0.0
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class UpdateSettings:
    ppo_epochs: int
    micro_batch_size: int
    clip_eps: float
    kl_beta: float
    max_grad_norm: float
    temperature: float
    policy_coef: float = 1.0  # 0: only the supervised terms move the weights (expert iteration)


def policy_update(model, accelerator, optimizer, scheduler, batches: Sequence[SequenceBatch],
                  settings: UpdateSettings, reference: Callable[[SequenceBatch], torch.Tensor] | None,
                  supervised: Sequence[SupervisedTerm] = ()) -> UpdateStats:
    """``settings.ppo_epochs`` optimizer steps over ``batches`` (the micro-batches of one update).

    ``reference(batch)``: the start policy's log-probs (for the KL term and its log), or None.
    ``supervised``: terms whose cross-entropy joins each step (a term without tokens is skipped).
    """
    started, stats = time.perf_counter(), UpdateStats()
    total = sum(b.num_tokens for b in batches)
    supervised = [term for term in supervised if term.num_tokens > 0]
    stats.supervised_loss = {term.name: 0.0 for term in supervised}
    stats.tokens = total
    model.train()
    with torch.no_grad():
        old = [sequence_log_probs(model, b, settings.temperature) for b in batches]
        ref = [reference(b) for b in batches] if reference is not None else None
    for _ in range(settings.ppo_epochs):
        for term in supervised:  # before the policy's micro-batches, whose last one syncs the gradients
            for batch in term.batches:
                with accelerator.no_sync(model):
                    cross_entropy = sft_cross_entropy(model, batch)
                    weight = batch.num_tokens / term.num_tokens
                    accelerator.backward(cross_entropy * (term.coef * weight))
                stats.supervised_loss[term.name] += float(cross_entropy.detach()) * weight / settings.ppo_epochs
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync:
                logp = sequence_log_probs(model, batch, settings.temperature)
                policy = clipped_policy_loss(logp, old[i], batch.advantages, batch.mask, settings.clip_eps)
                loss = policy.loss
                kl = kl_to_reference(logp, ref[i], batch.mask) if ref is not None else None
                if kl is not None and settings.kl_beta > 0:
                    loss = loss + settings.kl_beta * kl
                weight = batch.num_tokens / total
                # at policy_coef 0 the backward still runs: every process must reach the synced one
                accelerator.backward(loss * (settings.policy_coef * weight))
            stats.loss += float(loss.detach()) * weight / settings.ppo_epochs
            stats.kl += (float(kl.detach()) if kl is not None else 0.0) * weight / settings.ppo_epochs
            stats.clip_fraction += policy.clip_fraction * weight / settings.ppo_epochs
            stats.ratio_mean += policy.ratio_mean * weight / settings.ppo_epochs
        if settings.max_grad_norm > 0:
            norm = accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                               settings.max_grad_norm)
            stats.grad_norm = float(norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    stats.seconds = time.perf_counter() - started
    return stats


def sft_cross_entropy(model, batch: SequenceBatch) -> torch.Tensor:
    """Token-mean cross-entropy of ``batch``'s programs (SFT's loss) under ``model``."""
    logp = sequence_log_probs(model, batch, temperature=1.0)
    return -(logp * batch.mask).sum() / batch.mask.sum()


def micro_batches(samples: Sequence[Selected], size: int, start_id: int, end_id: int, pad_id: int,
                  device: torch.device) -> list[SequenceBatch]:
    return [make_batch(samples[i:i + size], start_id, end_id, pad_id, device) for i in range(0, len(samples), size)]
