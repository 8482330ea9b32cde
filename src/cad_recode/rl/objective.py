"""The policy objective of online RL (cadrille's recipe, design.md §2), as pure tensor functions.

One group = G programs sampled for one input. Its rewards become advantages
``A = r - mean(r)`` (no division by the std: a group whose rewards barely differ
gets small advantages, not amplified noise). Only the k samples with the largest
``|A|`` are trained on. The loss is PPO's clipped surrogate, averaged over every
valid token of the batch; an optional k3 estimate of KL(policy || reference)
keeps the policy near where it started. Nothing here knows about models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cad_recode.errors import UsageError

ZERO_ADVANTAGE_EPS = 1e-6
"""A group whose largest ``|A|`` is below this (all rewards equal) teaches nothing; the loop counts such groups."""


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """``r - mean(r)`` of one group's rewards (G,), float32 or wider."""
    rewards = torch.as_tensor(rewards)
    if rewards.ndim != 1 or rewards.numel() == 0:
        raise UsageError(f"group rewards must be a non-empty 1-D tensor, got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    return rewards - rewards.mean()


def is_zero_advantage(advantages: torch.Tensor) -> bool:
    """True when every advantage of the group is (numerically) zero."""
    return bool(torch.as_tensor(advantages).abs().max() < ZERO_ADVANTAGE_EPS)


def top_k_by_advantage(advantages: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (int64) of the ``k`` largest ``|A|``, largest first; ties keep the lower index first.

    ``k >= G`` keeps every sample (still ordered by ``|A|``).
    """
    advantages = torch.as_tensor(advantages)
    if advantages.ndim != 1:
        raise UsageError(f"advantages must be a 1-D tensor, got shape {tuple(advantages.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"top-k must be a positive integer, got {k!r}")
    order = torch.sort(advantages.abs(), descending=True, stable=True).indices
    return order[:k].to(torch.int64)


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[target]`` per position: (B, T, V), (B, T) -> (B, T) float32.

    One row at a time in float32, so a 150k vocabulary never needs a (B, T, V)
    float32 copy. Negative targets (ignored positions, -100) read index 0: mask them.
    """
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise UsageError(f"logits (B, T, V) and targets (B, T) disagree: {tuple(logits.shape)} vs "
                         f"{tuple(targets.shape)}")
    index = targets.clamp(min=0).unsqueeze(-1)
    rows = []
    for row_logits, row_index in zip(logits, index):
        row_logits = row_logits.float()
        rows.append(row_logits.gather(-1, row_index).squeeze(-1) - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows)


@dataclass
class PolicyLoss:
    """The clipped loss (differentiable) and two diagnostics over the valid tokens."""

    loss: torch.Tensor  # scalar
    clip_fraction: float  # share of valid tokens whose clipped term was the smaller one
    ratio_mean: float  # mean of exp(logp_new - logp_old)


def _valid(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if mask.shape != like.shape:
        raise UsageError(f"mask shape {tuple(mask.shape)} differs from the log-probs' {tuple(like.shape)}")
    mask = mask.to(like.dtype)
    if float(mask.sum()) <= 0:
        raise UsageError("no valid token in the batch: the mask is all zero")
    return mask


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum()


def clipped_policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_eps: float) -> PolicyLoss:
    """PPO's clipped surrogate, negated, as a token-level mean over all valid tokens of the batch.

    ``advantages`` is one value per sequence (B,) or per token (B, T);
    ``loss = -mean_valid min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``.
    """
    if not clip_eps > 0:
        raise UsageError(f"clip_eps must be positive, got {clip_eps!r}")
    mask = _valid(mask, logp_new)
    advantages = torch.as_tensor(advantages, dtype=logp_new.dtype, device=logp_new.device)
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1)
    advantages = advantages.expand_as(logp_new)
    ratio = torch.exp(logp_new - logp_old.detach())
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -_masked_mean(torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = float(_masked_mean((clipped < unclipped).to(mask.dtype), mask))
        ratio_mean = float(_masked_mean(ratio, mask))
    return PolicyLoss(loss=loss, clip_fraction=clip_fraction, ratio_mean=ratio_mean)


def kl_to_reference(logp_new: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(policy || reference) per token, masked mean: ``exp(d) - d - 1`` with ``d = ref - new``.

    Never negative, zero where the two agree; its gradient flows through ``logp_new`` only.
    """
    mask = _valid(mask, logp_new)
    delta = logp_ref.detach() - logp_new
    return _masked_mean(torch.exp(delta) - delta - 1.0, mask)
