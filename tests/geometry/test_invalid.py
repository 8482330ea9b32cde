"""Invalid candidates by kind: the sandbox status and the decoder's end folded into one kind."""

import pytest

from cad_recode.geometry.invalid import (
    INVALID_KINDS,
    InvalidCounts,
    classify_invalid,
    invalid_kind_of_input,
)
from cad_recode.geometry.sandbox import ExecStatus

KINDS = [
    (ExecStatus.OK, True, None),
    (ExecStatus.SYNTAX, True, "syntax"),
    (ExecStatus.ERROR, True, "runtime_error"),
    (ExecStatus.NO_SOLID, True, "empty_or_invalid_solid"),
    (ExecStatus.INVALID, True, "empty_or_invalid_solid"),
    (ExecStatus.TIMEOUT, True, "timeout"),
    (ExecStatus.MEMORY, True, "timeout"),
    (ExecStatus.REJECTED, True, "other"),
    (ExecStatus.CRASHED, True, "other"),
    (ExecStatus.SYNTAX, False, "truncated"),  # cut by the budget: truncation, whatever Python says
    (ExecStatus.OK, False, "truncated"),
]


@pytest.mark.parametrize("status, finished, kind", KINDS)
def test_each_status_has_its_kind(status, finished, kind):
    assert classify_invalid(status, finished) == kind
    assert classify_invalid(status.value, finished) == kind  # Candidate.status holds the value


def test_every_status_is_covered_and_unknown_ones_are_refused():
    assert {classify_invalid(s) for s in ExecStatus} - {None} <= set(INVALID_KINDS)
    with pytest.raises(ValueError, match="unknown program status 'exploded'"):
        classify_invalid("exploded")


def test_an_input_takes_the_kind_of_its_furthest_candidate():
    assert invalid_kind_of_input(["syntax", "runtime_error", "truncated"]) == "runtime_error"
    assert invalid_kind_of_input(["runtime_error", "empty_or_invalid_solid"]) == "empty_or_invalid_solid"
    assert invalid_kind_of_input(["truncated"]) == "truncated"
    assert invalid_kind_of_input(["syntax", None]) is None  # one valid candidate: the input is valid
    assert invalid_kind_of_input([]) is None


def test_counts_for_the_summary():
    counts = InvalidCounts.of(["syntax", None, "syntax", "timeout"])
    assert counts.to_dict() == {"truncated": 0, "syntax": 2, "runtime_error": 0, "empty_or_invalid_solid": 0,
                                "timeout": 1, "other": 0}
    assert counts.total == 3 and counts.describe() == "syntax 2, timeout 1"
    assert InvalidCounts().describe() == "none" and tuple(counts.to_dict()) == INVALID_KINDS
