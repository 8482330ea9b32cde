"""The generator's levels and its entry points: `generate_program` draws one program of a level."""

from __future__ import annotations

import time

import numpy as np

from cad_recode.data.cadcode import centring_offset, render, shift_part
from cad_recode.data.generator.full import full_part
from cad_recode.data.generator.outlines import SIMPLE_OUTLINES
from cad_recode.data.generator.simple import simple_part
from cad_recode.errors import UsageError

GENERATOR_VERSION = "2"
COMPLEXITIES = ("simple", "medium", "full")


def generate_program(rng: np.random.Generator, complexity: str = "simple") -> str:
    """One CAD-Recode-style program drawn from `rng` (deterministic for the generator's state)."""
    return render(generate_part(rng, complexity))


def generate_part(rng: np.random.Generator, complexity: str = "simple") -> tuple:
    """The part behind `generate_program`: a tuple of bodies (see `cad_recode.data.cadcode`)."""
    if complexity in SIMPLE_OUTLINES:
        part = simple_part(rng, SIMPLE_OUTLINES[complexity])
    elif complexity == "full":
        part = full_part(rng)
    else:
        raise UsageError(f"unknown complexity {complexity!r}; use one of: {', '.join(COMPLEXITIES)}")
    return shift_part(part, centring_offset(part))


def program_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of attempt `index` under `seed`: programs do not depend on batching or workers."""
    return np.random.default_rng([int(seed), int(index)])


def programs_per_second(num: int = 2000, complexity: str = "simple", seed: int = 0) -> float:
    """Generation rate without execution (the figure `benchmarks/bench_data.py` reports)."""
    start = time.perf_counter()
    for i in range(num):
        generate_program(program_rng(seed, i), complexity)
    return num / (time.perf_counter() - start)
