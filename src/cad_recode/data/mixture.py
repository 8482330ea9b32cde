"""The training mixture: how often each family's programs are drawn, independent of how many there are.

A generated dataset holds its families in the shares they were drawn with, and its test split
keeps those shares. `family_weights` in the training config changes only what training sees:
each family's records are repeated (or thinned, differently each epoch) so that the family fills
its weight's share of an epoch, an epoch keeps its length, and the validation and test splits are
untouched. A family
the model finds hard can then get more steps without changing what it is measured on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from cad_recode.errors import InputError


@dataclass(frozen=True)
class Mixture:
    """Record indices of one epoch (a record may repeat) and each one's copy number (0 for its first)."""

    records: np.ndarray
    copies: np.ndarray


def family_shares(records, family_of: dict[int, str]) -> dict[str, float]:
    """Each family's share of ``records`` (record indices, repeats counted), by family name."""
    counts = Counter(family_of[int(r)] for r in records)
    return {name: n / len(records) for name, n in sorted(counts.items())}


def check_weights(weights: dict[str, float], present: set[str], where: str) -> dict[str, float]:
    """``weights`` normalized to sum 1; one-line errors for unknown, missing or bad entries."""
    unknown = sorted(set(weights) - present)
    if unknown:
        raise InputError(f"family_weights names {', '.join(unknown)}, which {where} does not hold; "
                         f"its families: {', '.join(sorted(present))}")
    missing = sorted(present - set(weights))
    if missing:
        raise InputError(f"family_weights must give every family of {where} a weight (0 leaves one out); "
                         f"missing: {', '.join(missing)}")
    total = sum(weights.values())
    if total <= 0:
        raise InputError("family_weights: at least one weight must be > 0")
    return {name: weights[name] / total for name in sorted(weights)}


def weighted_epoch(records: np.ndarray, families: list[str], weights: dict[str, float],
                   seed: int | tuple[int, ...]) -> Mixture:
    """An epoch of ``len(records)`` draws in which family f fills the share ``weights[f]`` (normalized).

    ``families[i]`` is the family of ``records[i]``. Each family's records repeat whole as often as
    its share allows, then a seeded choice without replacement fills the remainder, so every record
    of an up-weighted family is seen and no record is seen twice before all are seen once. Training
    draws an epoch with seed (run seed, epoch), so a thinned family shows other records each epoch.
    """
    if len(records) != len(families):
        raise ValueError(f"{len(records)} records but {len(families)} family labels")
    shares = check_weights(weights, set(families), "the training split")
    rng = np.random.default_rng(seed)
    by_family = {name: records[[f == name for f in families]] for name in shares}
    wanted = _apportion(len(records), shares)
    chosen, copies = [], []
    for name, members in by_family.items():
        count = wanted[name]
        whole, rest = divmod(count, len(members))
        for copy in range(whole):
            chosen.append(members)
            copies.append(np.full(len(members), copy))
        if rest:
            chosen.append(rng.choice(members, size=rest, replace=False))
            copies.append(np.full(rest, whole))
    return Mixture(np.concatenate(chosen).astype(np.int64), np.concatenate(copies).astype(np.int64))


def _apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to ``total`` closest to ``total * share`` (largest remainders)."""
    exact = {name: total * share for name, share in shares.items()}
    counts = {name: int(np.floor(value)) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts
