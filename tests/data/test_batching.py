"""Length-grouped training order (`cad_recode.data.batching`): like lengths per batch, random otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from cad_recode.data.batching import POOL_BATCHES, LengthGroupedSampler, length_grouped_order


def _batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def _padding(lengths: np.ndarray, order: np.ndarray, size: int) -> float:
    """Share of a padded batch that is padding, over the epoch."""
    padded = sum(len(b) * lengths[b].max() for b in _batches(order, size))
    return 1 - lengths.sum() / padded


def test_the_order_is_a_permutation_with_far_less_padding_than_a_shuffle():
    lengths = np.random.default_rng(1).integers(20, 211, size=3000)  # broad programs run from ~20 to ~210 tokens
    order = length_grouped_order(lengths, 8, seed=(0, 0))
    assert sorted(order.tolist()) == list(range(3000))
    shuffled = np.random.default_rng(2).permutation(3000)
    assert _padding(lengths, shuffled, 8) > 0.3
    assert _padding(lengths, order, 8) < 0.03


def test_two_lengths_share_a_batch_at_most_once_per_pool():
    size = 4
    lengths = np.array([10, 100] * (size * POOL_BATCHES))  # two pools' worth
    order = length_grouped_order(lengths, size, seed=7)
    mixed = [b for b in _batches(order, size) if len(set(lengths[b])) > 1]
    assert len(mixed) <= 2


def test_the_epoch_is_no_sweep_from_short_to_long():
    lengths = np.random.default_rng(3).integers(20, 211, size=8 * POOL_BATCHES * 6)
    order = length_grouped_order(lengths, 8, seed=(0, 0))
    means = np.array([lengths[b].mean() for b in _batches(order, 8)])
    position = np.arange(len(means))
    assert abs(np.corrcoef(position, means)[0, 1]) < 0.2
    # both halves of the epoch see short and long batches alike
    half = len(means) // 2
    assert abs(means[:half].mean() - means[half:].mean()) < 10


def test_only_the_last_batch_is_short():
    lengths = np.arange(8 * POOL_BATCHES + 3)
    order = length_grouped_order(lengths, 8, seed=5)
    batches = _batches(order, 8)
    assert [len(b) for b in batches[:-1]] == [8] * POOL_BATCHES and len(batches[-1]) == 3
    assert sorted(order.tolist()) == list(range(len(lengths)))
    assert length_grouped_order(np.zeros(0, int), 8, seed=0).tolist() == []
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_grouped_order(lengths, 0, seed=0)


class _Epochs:
    """What the sampler reads from a PointCodeDataset: its epoch and its items' lengths."""

    def __init__(self, lengths_by_epoch):
        self.lengths_by_epoch, self.epoch = lengths_by_epoch, 0

    def __len__(self):
        return len(self.lengths_by_epoch[0])

    def item_lengths(self):
        return np.asarray(self.lengths_by_epoch[self.epoch])


def test_the_sampler_replays_an_epoch_and_follows_its_lengths():
    rng = np.random.default_rng(4)
    data = _Epochs([rng.integers(20, 211, 200), rng.integers(20, 211, 200)])
    sampler = LengthGroupedSampler(data, batch_size=8, seed=42)
    first = list(sampler)
    assert len(sampler) == 200 and list(sampler) == first  # an epoch's order is fixed by (seed, epoch)
    assert first == length_grouped_order(data.item_lengths(), 8, (42, 0)).tolist()
    data.epoch = 1  # the Trainer sets the next epoch before it iterates again
    second = list(sampler)
    assert second != first and second == length_grouped_order(data.item_lengths(), 8, (42, 1)).tolist()
    assert list(LengthGroupedSampler(data, batch_size=8, seed=43)) != second
