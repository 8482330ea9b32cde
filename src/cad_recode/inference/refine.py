"""Fit a program's integer dimensions to the input points: a pattern search on CD.

A small model reads a few dozen points and writes numbers to the unit, so its
usual miss is a right program with a plate three units too wide or a hole a
little off. ``refine_program`` nudges the integer literals, runs every variant in
the sandbox, and keeps what brings the solid closer to the INPUT points; the
ground truth plays no part.

Its other usual misses are structural: a feature the part does not have (a bore
in a solid cylinder, a boss on a plain plate), or a solid where the part is a
thin-walled tube. The structural edits of
:mod:`cad_recode.inference.program_edits` (drop a feature, hollow a one-element
body) are tried in one batch before the fit, where only an edit that halves the
distance is kept, and again after it, where any gain is kept (a real hole a little
off must first be moved into place); then the numbers are fitted again with the
runs left. The result is written as the model writes, so it is as editable as
what the model wrote.

The distance is the one that picks the best of N: CD to the input points with
both sides normalized by their bounding boxes. So the search fits shape and
proportions; a literal that only moves the whole part changes nothing and is
dropped after its first poll.

The search, after Hooke and Jeeves:

- poll: the 2k nudges (+-step) of the k literals run at once, on all sandbox
  workers; when several improve, they are also tried together, and the better
  of "together" and "the best one alone" is kept;
- pattern: the kept move is then repeated 1, 3 and 7 more times in one batch,
  again while the farthest probe wins, so a miss of 30 units closes in a few
  runs rather than eight polls;
- the next poll asks only the literals that just paid off; when they stall,
  all literals are polled again, and when a full poll finds nothing, the step
  goes down: 4, 2, 1 program units (a part spans 200).

Variants are tessellated coarser than usual; the program kept is run again at
the sandbox's own tolerances.
"""

from __future__ import annotations

import io
import math
import time
import tokenize
from dataclasses import dataclass, field

from cad_recode.defaults import MODEL_UNITS
from cad_recode.errors import InputError, UsageError
from cad_recode.inference.program_edits import structure_edits

DEFAULT_STEPS = (4, 2, 1)
DEFAULT_MAX_EVALUATIONS = 120
REFINE_SAMPLES = 2048  # surface samples per variant: enough to rank nudges of one unit
TARGET_POINTS = 4096  # input points compared with: a scan of millions would only slow every run
# The kept program must be no farther from the input than the start at this many samples. At 2048 the
# samples of a thin wall lie farther apart than its two sides, and a solid of less area scores closer
# for its denser samples alone: a tube (walls 80/76 of 200) was refined to 78/77, IoU 0.75 -> 0.25.
# From 16384 samples the right wall scored closer on every seed tried.
FINE_SAMPLES = 32768
FINE_POINTS = 32768  # input points of that check
# (linear, angular) tessellation of the variants: 1.7x faster to run than the sandbox's default,
# and the same for every variant, so the ranking of nudges holds
VARIANT_TOLERANCES = (0.01, 0.3)
PATTERN_REACH = (1, 3, 7)  # pattern probes: the kept move repeated this many more times
# before the fit, a structural edit is kept only if it at least halves the distance: a real hole written
# 20 units off loses about 10 % to no hole at all, a solid written for a thin tube several times over
GROSS_EDIT_GAIN = 0.5
# Hollowing is tried only when at least this share of the input points lies inside the solid as written,
# this deep (program units: the part spans 200). A tube's inner wall does (about 40 % of its points, at
# the depth of the wall); a scan with a side missing has none inside, and a thin shell would fit its open
# side better than the solid does under the distance, which normalizes both sides.
HOLLOW_MIN_INTERIOR = 0.15
HOLLOW_DEPTH = 3.0
# a "-" right after one of these is a sign, not a subtraction
_SIGN_CONTEXT = {"(", "[", "{", ",", "=", ":"}


@dataclass(frozen=True)
class Literal:
    """An integer literal in a program: its character span (a sign included) and value."""

    start: int
    end: int
    value: int


def integer_literals(code: str) -> list[Literal]:
    """The program's integer literals, a leading sign included, in order.

    Left out: floats, numbers in names (``w0``), strings and comments, and a
    divisor right after ``/`` (the ``offset=h/2`` idiom halves, it is not a size).
    Raises ``UsageError`` for text that Python cannot tokenize.
    """
    line_starts = [0]
    for line in code.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
                  if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                                    tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError) as err:
        raise UsageError(f"cannot read the program's numbers: {err}") from None
    literals = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NUMBER or not tok.string.isdigit():
            continue
        before = tokens[i - 1].string if i >= 1 else ""
        if before == "/":
            continue
        start = line_starts[tok.start[0] - 1] + tok.start[1]
        end = line_starts[tok.end[0] - 1] + tok.end[1]
        value = int(tok.string)
        if before == "-" and (i < 2 or tokens[i - 2].string in _SIGN_CONTEXT):
            start, value = line_starts[tokens[i - 1].start[0] - 1] + tokens[i - 1].start[1], -value
        literals.append(Literal(start, end, value))
    return literals


def with_values(code: str, literals: list[Literal], values) -> str:
    """``code`` with each literal's span replaced by its new value."""
    pieces, last = [], 0
    for literal, value in zip(literals, values):
        pieces += [code[last:literal.start], str(int(value))]
        last = literal.end
    return "".join(pieces) + code[last:]


@dataclass
class Refinement:
    """What the search kept: the program, its execution, and how far it moved."""

    code: str
    result: object  # the kept program's ExecResult
    # raw CD to the input points (both normalized, see the module doc) of the program as written;
    # nan: no budget to measure it, inf: not measurable
    start_distance: float
    distance: float  # ... of the kept program (<= start_distance)
    changed: int  # literals whose value changed (of those the kept program still has)
    evaluations: int  # variants run in the sandbox
    seconds: float
    edits: list[str] = field(default_factory=list)  # the structural edits kept (Edit.describe, as written)

    @property
    def modified(self) -> bool:
        return bool(self.changed or self.edits)



def refine_program(
    code: str,
    input_points,
    sandbox,
    *,
    steps: tuple[int, ...] = DEFAULT_STEPS,
    max_evaluations: int = DEFAULT_MAX_EVALUATIONS,
    samples: int = REFINE_SAMPLES,
    seed: int = 0,
    start_result=None,
    edit_structure: bool = True,
    frame=None,
) -> Refinement:
    """Search the integer literals of a valid ``code``, then its structure, for a solid closer to ``input_points``.

    ``input_points``: (N, 3), any units (both sides are normalized); up to TARGET_POINTS of them are used.
    ``start_result``: the program's ExecResult if the caller already ran it.
    ``edit_structure``: False fits the numbers only (the structure stays).
    ``frame``: the ``Transform`` that took the input into the model's frame (the program's units / 100),
    needed to see where the input points lie against the solid; without it no body is hollowed.
    The budget: one run scores the program as written, e runs try its e structural
    edits; the fit stops when the smallest step finds nothing, or before a batch of
    runs that would take it past ``max_evaluations`` less e (kept for the edits'
    second batch). A poll takes 2k + 1 runs for k literals, so a program with more
    than (max_evaluations - 2e - 2) / 2 literals keeps its numbers as written.
    """
    import numpy as np

    from cad_recode.geometry.metrics import CloudDistance  # here: the CLI reads this module's defaults cheaply

    if any(int(s) < 1 for s in steps) or max_evaluations < 0:
        raise UsageError(f"refinement steps must be >= 1 and max_evaluations >= 0, got {steps}, {max_evaluations}")
    started = time.perf_counter()
    points = np.asarray(input_points, dtype=np.float64)
    if points.ndim == 2 and len(points) > TARGET_POINTS:
        points = points[np.random.default_rng(seed).choice(len(points), TARGET_POINTS, replace=False)]
    try:
        distance = CloudDistance(points, frame)  # frame None: normalized as a cloud alone
    except ValueError as err:
        raise InputError(f"refinement input points: {err}") from None
    result = start_result if start_result is not None else sandbox.run(code)
    if not result.ok:
        raise UsageError(f"only a valid program can be refined; this one is {result.status.value}: {result.reason}")

    literals = integer_literals(code)
    hollow = edit_structure and frame is not None and _shows_interior(result, frame.apply(points) * MODEL_UNITS)
    edits = structure_edits(code, hollow) if edit_structure else []
    search = _Search(code, literals, sandbox, distance, samples, seed, max_evaluations, hollow)
    first = search.run([search.values])  # scored like the variants: at their tolerances
    if first is None or not math.isfinite(first[0][0]):  # no budget, or nothing to measure from: as written
        measured = math.nan if first is None else math.inf
        return Refinement(code, result, measured, measured, 0, search.evaluations, time.perf_counter() - started)
    search.keep(first[0])
    start = search.best
    # Gross structural misses (a tube written as a solid, a bore in a solid) are mended before the fit, so
    # that the fit has its budget for the mended program. A subtler edit waits for the fit: a real hole a
    # little off scores worse than no hole until it is moved into place.
    kept_edits = search.edit_structure(gain=GROSS_EDIT_GAIN) if edit_structure else []
    search.fit(steps, reserve=len(edits))
    late_edits = search.edit_structure() if edit_structure else []
    if late_edits:
        search.fit(steps)
    kept_edits += late_edits
    refined = search.current_code()
    changed = sum(a.value != b.value for a, b in zip(integer_literals(refined), integer_literals(search.written)))
    kept = sandbox.run(refined) if refined != code else result  # at the sandbox's own tolerances
    # valid when coarse but invalid when fine, or farther from the input when measured finely: keep the start
    if refined != code and not (kept.ok and _no_farther(kept, result, input_points, frame, seed)):
        refined, kept, changed, kept_edits, search.best = code, result, 0, [], start
    return Refinement(refined, kept, start, search.best, changed, search.evaluations, time.perf_counter() - started,
                      kept_edits)


def _no_farther(kept, start, input_points, frame, seed: int) -> bool:
    """Is the kept program at least as close to the input as the start, at :data:`FINE_SAMPLES`?"""
    import numpy as np

    from cad_recode.geometry.metrics import CloudDistance

    points = np.asarray(input_points, dtype=np.float64)
    if len(points) > FINE_POINTS:
        points = points[np.random.default_rng(seed).choice(len(points), FINE_POINTS, replace=False)]
    fine = CloudDistance(points, frame)
    try:
        return fine(kept.to_trimesh(), n=FINE_SAMPLES, seed=seed) <= fine(start.to_trimesh(), n=FINE_SAMPLES, seed=seed)
    except (ValueError, InputError):  # the kept solid degenerate: the start stays
        return False


def _shows_interior(result, points) -> bool:
    """Do enough input points (program units) lie inside the solid, away from its surface, for hollowing?"""
    from cad_recode.geometry.metrics import interior_fraction

    try:
        return interior_fraction(result.to_trimesh(), points, HOLLOW_DEPTH) >= HOLLOW_MIN_INTERIOR
    except (ValueError, InputError):  # a solid too degenerate to tell inside from outside
        return False


class _Search:
    """The state of one refinement: the program and its kept literal values, their score, the runs spent."""

    def __init__(self, code, literals, sandbox, distance, samples, seed, max_evaluations, hollow=False):
        self.sandbox, self.distance, self.samples, self.seed = sandbox, distance, samples, seed
        self.hollow = hollow  # try hollowing edits too
        self.max_evaluations = self.limit = max_evaluations
        self.best, self.best_result = math.inf, None
        self.evaluations = 0
        self.out_of_budget = False
        self.written = code  # the program as written, with the structural edits kept so far
        self._rebase(code, literals, [lit.value for lit in literals])

    def _rebase(self, code: str, literals: list[Literal], values: list[int]) -> None:
        self.code, self.literals, self.values = code, literals, values
        self.last_move: list[int] = []
        self.inert: set[int] = set()  # literals whose nudges do not change the score

    def current_code(self) -> str:
        return with_values(self.code, self.literals, self.values)

    def fit(self, steps: tuple[int, ...], reserve: int = 0) -> None:
        """The pattern search on the literals, leaving ``reserve`` runs of the budget unspent."""
        self.limit, self.out_of_budget = self.max_evaluations - reserve, False
        for step in steps:
            active = None  # literals to poll; None: all of them
            while not self.out_of_budget:
                gained = self.poll(step, active)
                if gained:  # follow the move, then poll just the literals that paid off
                    self.extend()
                    active = gained
                elif active is None:  # nothing left at this step
                    break
                else:  # the few found nothing: back to all of them
                    active = None
            if self.out_of_budget:
                break
        self.limit = self.max_evaluations

    def edit_structure(self, gain: float = 1.0) -> list[str]:
        """Keep, one at a time, the structural edit that brings the solid closest, while it scores below
        ``gain`` times the kept program; each described as written."""
        kept = []
        while True:
            code = self.current_code()
            edits = structure_edits(code, self.hollow)
            scored = self._run_programs([edit.apply(code) for edit in edits]) if edits else None
            if not scored:
                return kept
            best = min(range(len(edits)), key=lambda k: scored[k][0])
            if not scored[best][0] < gain * self.best:
                return kept
            as_written = structure_edits(self.written, self.hollow)[best]  # the same structure: the same list, the model's numbers
            self.written = as_written.apply(self.written)
            edited = edits[best].apply(code)
            literals = integer_literals(edited)
            self._rebase(edited, literals, [lit.value for lit in literals])
            self.best, self.best_result = scored[best]
            kept.append(as_written.describe())

    def score(self, result) -> float:
        if not result.ok:
            return math.inf
        try:
            return self.distance(result.to_trimesh(), n=self.samples, seed=self.seed)
        except (ValueError, InputError):  # a degenerate solid (no area): never better
            return math.inf

    def run(self, variants: list[list[int]]) -> list[tuple[float, object, list[int]]] | None:
        """(score, result, values) per variant, or None (and out_of_budget) when the batch does not fit."""
        scored = self._run_programs([with_values(self.code, self.literals, v) for v in variants])
        return None if scored is None else [(score, r, v) for (score, r), v in zip(scored, variants)]

    def _run_programs(self, programs: list[str]) -> list[tuple[float, object]] | None:
        if self.evaluations + len(programs) > self.limit:
            self.out_of_budget = True
            return None
        results = self.sandbox.map(programs, tolerances=VARIANT_TOLERANCES)
        self.evaluations += len(programs)
        return [(self.score(r), r) for r in results]

    def keep(self, scored: tuple[float, object, list[int]]) -> None:
        score, result, values = scored
        self.last_move = [new - old for new, old in zip(values, self.values)]
        self.best, self.best_result, self.values = score, result, values

    def poll(self, step: int, literals: set[int] | None = None) -> set[int]:
        """Try the single nudges of ``step`` of ``literals`` (default all), and the improving ones together.

        Keeps the best; returns the literals whose nudges improved (empty: none did).
        """
        moves = [(i, sign * step) for i in range(len(self.values))
                 if i not in self.inert and (literals is None or i in literals) for sign in (1, -1)]
        if not moves or self.evaluations + len(moves) + 1 > self.limit:
            self.out_of_budget = bool(moves)
            return set()
        polled = self.run([self._moved({i: delta}) for i, delta in moves])
        gains: dict[int, tuple[float, int]] = {}  # literal -> (score, nudge) of its better improving nudge
        unmoved: dict[int, int] = {}  # literal -> how many of its nudges left the score exactly as it was
        for (i, delta), (score, _, _) in zip(moves, polled):
            if score < self.best and (i not in gains or score < gains[i][0]):
                gains[i] = (score, delta)
            if abs(score - self.best) <= 1e-9 * self.best:
                unmoved[i] = unmoved.get(i, 0) + 1
        # Both nudges changed nothing: the literal only moves the whole part (an origin of a one-body
        # part), which the bounding-box-normalized distance cannot see. Polling it again is wasted.
        self.inert.update(i for i, count in unmoved.items() if count == 2)
        if not gains:
            return set()
        candidate = min(polled, key=lambda scored: scored[0])
        if len(gains) > 1:
            together = self.run([self._moved({i: delta for i, (_, delta) in gains.items()})])
            if together is not None and together[0][0] < candidate[0]:
                candidate = together[0]
        self.keep(candidate)
        return set(gains)

    def extend(self) -> None:
        """Repeat the last kept move further while that improves (or until out of budget)."""
        while PATTERN_REACH:
            move = self.last_move
            probes = self.run([[v + reach * d for v, d in zip(self.values, move)] for reach in PATTERN_REACH])
            if probes is None:
                return
            best = min(probes, key=lambda scored: scored[0])
            if best[0] >= self.best:
                return
            self.keep(best)  # the next probes repeat this longer move: the reach grows geometrically
            if best is not probes[-1]:
                return

    def _moved(self, deltas: dict[int, int]) -> list[int]:
        return [v + deltas.get(i, 0) for i, v in enumerate(self.values)]
