"""Advantages, top-k, token log-probs, the clipped loss and the KL term against values worked out by hand."""

import math

import pytest
import torch

from cad_recode.errors import UsageError
from cad_recode.rl.objective import (
    ZERO_ADVANTAGE_EPS,
    clipped_policy_loss,
    group_advantages,
    is_zero_advantage,
    kl_to_reference,
    token_log_probs,
    top_k_by_advantage,
)

LN = math.log


def test_advantages_are_rewards_minus_their_mean_without_std_division():
    # mean of (1, 2, 3, 6) is 3; a std division would give (-0.98, -0.49, 0, 1.47)
    assert group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0])).tolist() == [-2.0, -1.0, 0.0, 3.0]
    # integer rewards become float; the penalty -10 against 10 * IoU
    assert group_advantages(torch.tensor([-10, 10])).tolist() == [-10.0, 10.0]


def test_equal_rewards_are_a_zero_advantage_group():
    advantages = group_advantages(torch.tensor([7.5, 7.5, 7.5]))
    assert advantages.tolist() == [0.0, 0.0, 0.0] and is_zero_advantage(advantages)
    assert not is_zero_advantage(torch.tensor([0.0, 10 * ZERO_ADVANTAGE_EPS]))


def test_top_k_keeps_the_largest_absolute_advantages_largest_first():
    # |A| = 2, 1, 0, 3 -> the two largest are index 3 (3) then index 0 (2)
    assert top_k_by_advantage(torch.tensor([-2.0, -1.0, 0.0, 3.0]), 2).tolist() == [3, 0]


def test_top_k_ties_keep_the_lower_index_first_and_k_above_g_keeps_all():
    advantages = torch.tensor([1.0, -1.0, 0.5, -1.0])  # |A| = 1, 1, 0.5, 1
    assert top_k_by_advantage(advantages, 3).tolist() == [0, 1, 3]
    assert top_k_by_advantage(advantages, 10).tolist() == [0, 1, 3, 2]
    assert top_k_by_advantage(advantages, 4).dtype == torch.int64


@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_top_k_refuses_a_k_that_is_not_a_positive_integer(k):
    with pytest.raises(UsageError, match="top-k must be a positive integer"):
        top_k_by_advantage(torch.tensor([1.0, 2.0]), k)


def test_token_log_probs_gather_the_log_softmax_of_each_target():
    # softmax of (0, 0, ln 2) is (1/4, 1/4, 1/2)
    logits = torch.tensor([[[0.0, 0.0, LN(2)], [0.0, 0.0, LN(2)]]])
    targets = torch.tensor([[2, 0]])
    assert torch.allclose(token_log_probs(logits, targets), torch.tensor([[LN(0.5), LN(0.25)]]), atol=1e-6)
    # bf16 logits (a bf16 model) are read in float32
    half = token_log_probs(logits.bfloat16(), targets)
    assert half.dtype == torch.float32
    assert torch.allclose(half, torch.log_softmax(logits.bfloat16().float(), -1)[0, [0, 1], [2, 0]][None])
    # an ignored position (-100) does not crash; its value is masked later
    assert token_log_probs(logits, torch.tensor([[2, -100]])).shape == (1, 2)


def _example():
    """Two sequences: A = +2 over 3 tokens, A = -1 over 2 tokens plus one padding token."""
    ratios = torch.tensor([[1.2, 0.8, 1.05], [1.2, 0.8, 7.0]])
    logp_old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.5, -4.0]])
    logp_new = (logp_old + ratios.log()).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return logp_new, logp_old, torch.tensor([2.0, -1.0]), mask


def test_clipped_loss_matches_the_hand_computed_example():
    logp_new, logp_old, advantages, mask = _example()
    out = clipped_policy_loss(logp_new, logp_old, advantages, mask, clip_eps=0.1)
    # A = +2: min(2.4, 2.2) = 2.2 (clipped), min(1.6, 1.8) = 1.6, min(2.1, 2.1) = 2.1
    # A = -1: min(-1.2, -1.1) = -1.2, min(-0.8, -0.9) = -0.9 (clipped); padding left out
    assert out.loss.item() == pytest.approx(-(2.2 + 1.6 + 2.1 - 1.2 - 0.9) / 5, abs=1e-6)
    assert out.clip_fraction == pytest.approx(2 / 5)
    assert out.ratio_mean == pytest.approx((1.2 + 0.8 + 1.05 + 1.2 + 0.8) / 5, abs=1e-6)
    out.loss.backward()
    # d/dlogp of ratio * A is ratio * A where the unclipped term is the min; 0 where the clip holds
    expected = torch.tensor([[0.0, -1.6, -2.1], [1.2, 0.0, 0.0]]) / 5
    assert torch.allclose(logp_new.grad, expected, atol=1e-6)


def test_clipped_loss_takes_per_token_advantages_and_no_gradient_reaches_the_old_policy():
    logp_new, logp_old, advantages, mask = _example()
    logp_old.requires_grad_(True)
    per_token = advantages.unsqueeze(-1).expand(2, 3)
    by_sequence = clipped_policy_loss(logp_new, logp_old, advantages, mask, clip_eps=0.1).loss
    by_token = clipped_policy_loss(logp_new, logp_old, per_token, mask, clip_eps=0.1).loss
    assert by_token.item() == pytest.approx(by_sequence.item())
    by_token.backward()
    assert logp_old.grad is None


def test_clipped_loss_refuses_an_empty_mask_and_a_bad_eps():
    logp_new, logp_old, advantages, mask = _example()
    with pytest.raises(UsageError, match="no valid token"):
        clipped_policy_loss(logp_new, logp_old, advantages, torch.zeros_like(mask), clip_eps=0.1)
    with pytest.raises(UsageError, match="clip_eps must be positive"):
        clipped_policy_loss(logp_new, logp_old, advantages, mask, clip_eps=0.0)


def test_kl_k3_matches_the_hand_computed_example():
    logp_new = torch.tensor([[0.0, LN(2), 5.0]], requires_grad=True)
    logp_ref = torch.tensor([[LN(2), 0.0, -5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # d = ln 2: 2 - ln 2 - 1;  d = -ln 2: 1/2 + ln 2 - 1;  their mean is exactly 0.25
    kl = kl_to_reference(logp_new, logp_ref, mask)
    assert kl.item() == pytest.approx(0.25, abs=1e-6)
    kl.backward()
    # d/dnew of exp(ref - new) - (ref - new) - 1 is 1 - exp(ref - new): -1 and +1/2, each / 2 tokens
    assert torch.allclose(logp_new.grad, torch.tensor([[-0.5, 0.25, 0.0]]), atol=1e-6)


def test_kl_is_zero_for_the_reference_itself():
    logp = torch.tensor([[-0.2, -3.0]])
    assert kl_to_reference(logp, logp.clone(), torch.ones(1, 2)).item() == 0.0
