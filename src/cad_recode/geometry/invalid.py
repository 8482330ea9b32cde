"""Why a candidate program is invalid, by kind: what an evaluation summary counts.

The sandbox says what happened when a program ran (:class:`ExecStatus`); the
decoder says whether the program ended with <|endoftext|> or was cut by the
token budget. ``classify_invalid`` folds both into one of ``INVALID_KINDS``:

- ``truncated``: cut before its end (max_new_tokens or a runaway stop), whatever it did when run;
- ``syntax``: Python could not parse it (under the grammar this should never happen);
- ``runtime_error``: it parsed but raised (a NameError, a CadQuery error, ...);
- ``empty_or_invalid_solid``: it ran but built no solid, an invalid one, or one that does not tessellate;
- ``timeout``: it ran past the time or memory limit;
- ``other``: the static check refused it, or its worker crashed.

``invalid_kind_of_input`` picks one kind for an input none of whose candidates
was valid: the kind of the candidate that got furthest (a solid that failed
beats an exception, which beats a parse error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cad_recode.geometry.sandbox import ExecStatus

INVALID_KINDS = ("truncated", "syntax", "runtime_error", "empty_or_invalid_solid", "timeout", "other")

_KIND_OF_STATUS = {
    ExecStatus.SYNTAX.value: "syntax",
    ExecStatus.ERROR.value: "runtime_error",
    ExecStatus.NO_SOLID.value: "empty_or_invalid_solid",
    ExecStatus.INVALID.value: "empty_or_invalid_solid",
    ExecStatus.TIMEOUT.value: "timeout",
    ExecStatus.MEMORY.value: "timeout",
    ExecStatus.REJECTED.value: "other",
    ExecStatus.CRASHED.value: "other",
}
# how far a program got before it failed: the furthest stands for an input's candidates
_PROGRESS = ("truncated", "syntax", "other", "runtime_error", "timeout", "empty_or_invalid_solid")


def classify_invalid(status: str | ExecStatus, finished: bool = True) -> str | None:
    """The kind of an invalid candidate, or None for a valid one (status 'ok' and finished).

    `status`: the sandbox status (an :class:`ExecStatus` or its value, e.g. 'syntax_error';
    'invalid' also stands for a solid the judge could not tessellate). `finished`:
    the program ended with <|endoftext|>.
    """
    value = status.value if isinstance(status, ExecStatus) else str(status)
    if not finished:
        return "truncated"
    if value == ExecStatus.OK.value:
        return None
    if value not in _KIND_OF_STATUS:
        raise ValueError(f"unknown program status {value!r}; expected one of: {', '.join(s.value for s in ExecStatus)}")
    return _KIND_OF_STATUS[value]


def invalid_kind_of_input(kinds) -> str | None:
    """One kind for an input from its candidates' kinds (None when any candidate is valid)."""
    kinds = list(kinds)
    if not kinds or any(kind is None for kind in kinds):
        return None
    return max(kinds, key=_PROGRESS.index)


@dataclass
class InvalidCounts:
    """How many invalid inputs (or candidates) of each kind; ``to_dict`` for summary.json."""

    truncated: int = 0
    syntax: int = 0
    runtime_error: int = 0
    empty_or_invalid_solid: int = 0
    timeout: int = 0
    other: int = 0

    @classmethod
    def of(cls, kinds) -> InvalidCounts:
        """Count the kinds (None entries, the valid ones, are skipped)."""
        counts = cls()
        for kind in kinds:
            if kind is not None:
                setattr(counts, kind, getattr(counts, kind) + 1)
        return counts

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        """'syntax 2, runtime_error 1' (kinds with a count), or 'none'."""
        return ", ".join(f"{kind} {count}" for kind, count in asdict(self).items() if count) or "none"
