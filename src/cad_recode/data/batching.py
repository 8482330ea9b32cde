"""Length-grouped training order: each batch holds programs of like length, so less of it is padding.

A batch is padded to its longest program. Broad programs run from about 20 to 210 tokens, and
a random batch of 8 is about a third padding in its code part; grouping by length gave the tiny
model's training 1.26x the items/s (``benchmarks/bench_train.py --grouping``; BENCHMARKS.md, "Cheaper steps").

The order stays random where it matters: the items are shuffled, sorted by length only within
pools of :data:`POOL_BATCHES` batches, and the batches are then shuffled again, so an epoch is
not a sweep from short programs to long ones. The order is seeded by (seed, epoch), like the
items' points, so a resumed run replays it exactly.

Not the Trainer's own ``group_by_length``: that one reads every item to learn its length (here:
sampling the points of every mesh) and draws its order from the global RNG.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

POOL_BATCHES = 64  # batches sorted together: like lengths within a batch, random order across pools


def length_grouped_order(lengths: np.ndarray, batch_size: int, seed) -> np.ndarray:
    """A permutation of ``range(len(lengths))`` whose consecutive ``batch_size`` runs have like lengths.

    Every run is a full batch except the last one when ``batch_size`` does not divide the count,
    so a loader that cuts the order into batches of ``batch_size`` gets exactly these groups.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(shuffled), pool):
        members = shuffled[start:start + pool]
        members = members[np.argsort(lengths[members], kind="stable")]
        batches.extend(members[i:i + batch_size] for i in range(0, len(members), batch_size))
    # the short remainder (only ever the last pool's last batch) stays at the end, where the loader cuts it
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    order = [batches[i] for i in rng.permutation(len(batches))] + tail
    return np.concatenate(order) if order else np.zeros(0, dtype=np.int64)


class LengthGroupedSampler(Sampler[int]):
    """Training sampler over a :class:`cad_recode.data.dataset.PointCodeDataset`: batches of like length.

    Reads the dataset's epoch and item lengths when an epoch starts (the Trainer sets the epoch
    before it iterates), so a family mixture's redrawn epoch is grouped by its own lengths.
    """

    def __init__(self, dataset, batch_size: int, seed: int):
        self.dataset, self.batch_size, self.seed = dataset, int(batch_size), int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        order = length_grouped_order(self.dataset.item_lengths(), self.batch_size, (self.seed, self.dataset.epoch))
        return iter(order.tolist())
