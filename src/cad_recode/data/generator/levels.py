"""The generator's levels and its entry points: `generate_program` draws one program of a level."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cad_recode.data.cadcode import centring_offset, render, shift_part
from cad_recode.data.generator.families import FAMILY_WEIGHTS, broad_part
from cad_recode.data.generator.full import full_part
from cad_recode.data.generator.outlines import SIMPLE_OUTLINES
from cad_recode.data.generator.simple import simple_part
from cad_recode.errors import UsageError

GENERATOR_VERSION = "3"
COMPLEXITIES = ("simple", "medium", "full", "broad")
DEFAULT_COMPLEXITY = "broad"  # what the quickstart trains on: every family of simple parts


@dataclass(frozen=True)
class LabelledPart:
    """A generated part and its family (a broad family name; the level's name for the other levels)."""

    family: str
    part: tuple

    @property
    def code(self) -> str:
        return render(self.part)


def level_weights(complexity: str) -> dict[str, float]:
    """The families a level writes and their mixture weights (one family, the level, for all but broad)."""
    _check_complexity(complexity)
    return dict(FAMILY_WEIGHTS) if complexity == "broad" else {complexity: 1.0}


def generate_program(rng: np.random.Generator, complexity: str = "simple") -> str:
    """One CAD-Recode-style program drawn from `rng` (deterministic for the generator's state)."""
    return render(generate_part(rng, complexity))


def generate_part(rng: np.random.Generator, complexity: str = "simple") -> tuple:
    """The part behind `generate_program`: a tuple of bodies (see `cad_recode.data.cadcode`)."""
    return generate_labelled(rng, complexity).part


def generate_labelled(rng: np.random.Generator, complexity: str = "simple", family: str | None = None
                      ) -> LabelledPart:
    """The part and its family label; `family` forces one family of the broad level."""
    _check_complexity(complexity)
    if family is not None and family not in level_weights(complexity):
        raise UsageError(f"unknown family {family!r} of level {complexity}; use one of: "
                         f"{', '.join(level_weights(complexity))}")
    if complexity == "broad":
        family, part = broad_part(rng, family)
    elif complexity == "full":
        family, part = complexity, full_part(rng)
    else:
        family, part = complexity, simple_part(rng, SIMPLE_OUTLINES[complexity])
    return LabelledPart(family, shift_part(part, centring_offset(part)))


def _check_complexity(complexity: str) -> None:
    if complexity not in COMPLEXITIES:
        raise UsageError(f"unknown complexity {complexity!r}; use one of: {', '.join(COMPLEXITIES)}")


def program_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of attempt `index` under `seed`: programs do not depend on batching or workers."""
    return np.random.default_rng([int(seed), int(index)])


def programs_per_second(num: int = 2000, complexity: str = "simple", seed: int = 0) -> float:
    """Generation rate without execution (the figure `benchmarks/bench_data.py` reports)."""
    start = time.perf_counter()
    for i in range(num):
        generate_program(program_rng(seed, i), complexity)
    return num / (time.perf_counter() - start)
