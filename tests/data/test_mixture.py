"""The training mixture (`cad_recode.data.mixture`): family shares of an epoch, exactly and reproducibly."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cad_recode.data.mixture import family_shares, weighted_epoch
from cad_recode.errors import InputError

RECORDS = np.arange(100, 200)  # record indices need not start at 0 (dropped programs leave gaps)
FAMILIES = ["box"] * 60 + ["ring"] * 30 + ["stacked"] * 10
FAMILY_OF = dict(zip(RECORDS.tolist(), FAMILIES))


def test_shares_follow_the_weights_and_the_epoch_keeps_its_length():
    mixture = weighted_epoch(RECORDS, FAMILIES, {"box": 1, "ring": 1, "stacked": 2}, seed=0)
    assert len(mixture.records) == 100
    assert family_shares(mixture.records, FAMILY_OF) == {"box": 0.25, "ring": 0.25, "stacked": 0.5}


def test_an_upweighted_family_is_repeated_whole_and_a_thinned_one_is_drawn_without_repeats():
    mixture = weighted_epoch(RECORDS, FAMILIES, {"box": 1, "ring": 1, "stacked": 2}, seed=0)
    counts = Counter(mixture.records.tolist())
    stacked = [r for r, f in FAMILY_OF.items() if f == "stacked"]
    assert all(counts[r] == 5 for r in stacked)  # 50 draws over 10 records: each 5 times
    assert sorted(mixture.copies[mixture.records == stacked[0]].tolist()) == [0, 1, 2, 3, 4]
    boxes = [r for r in mixture.records.tolist() if FAMILY_OF[r] == "box"]
    assert len(boxes) == 25 and len(set(boxes)) == 25  # 25 of the 60 boxes, none twice


def test_the_seed_fixes_the_epoch_and_another_seed_changes_the_thinned_choice():
    weights = {"box": 1, "ring": 1, "stacked": 2}
    first, again = weighted_epoch(RECORDS, FAMILIES, weights, 3), weighted_epoch(RECORDS, FAMILIES, weights, 3)
    assert np.array_equal(first.records, again.records) and np.array_equal(first.copies, again.copies)
    assert not np.array_equal(first.records, weighted_epoch(RECORDS, FAMILIES, weights, 4).records)


def test_uneven_shares_are_apportioned_to_the_epoch_length():
    mixture = weighted_epoch(RECORDS, FAMILIES, {"box": 1, "ring": 1, "stacked": 1}, seed=0)
    counts = Counter(FAMILY_OF[r] for r in mixture.records.tolist())
    assert sum(counts.values()) == 100 and sorted(counts.values()) == [33, 33, 34]


def test_a_zero_weight_leaves_a_family_out():
    mixture = weighted_epoch(RECORDS, FAMILIES, {"box": 0, "ring": 1, "stacked": 1}, seed=0)
    assert family_shares(mixture.records, FAMILY_OF) == {"ring": 0.5, "stacked": 0.5}


@pytest.mark.parametrize("weights, message", [
    ({"box": 1, "ring": 1, "stacked": 1, "pocket": 1}, "family_weights names pocket, which the training split "
                                                       "does not hold; its families: box, ring, stacked"),
    ({"box": 1, "ring": 1}, "missing: stacked"),
    ({"box": 0, "ring": 0, "stacked": 0}, "at least one weight must be > 0"),
])
def test_weights_that_do_not_fit_the_data_are_one_line_errors(weights, message):
    with pytest.raises(InputError, match=message):
        weighted_epoch(RECORDS, FAMILIES, weights, seed=0)
