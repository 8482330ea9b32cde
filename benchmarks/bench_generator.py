"""The program generator: programs drawn per second per level (no execution) and the share that build.

    python benchmarks/bench_generator.py                    # 2000 programs/level timed, 600 broad + 200 full executed
    python benchmarks/bench_generator.py --execute 100      # fewer sandbox runs

Figures: programs/s of `generate_labelled` per level (what ``data generate --no_execute`` costs),
levels timed side by side in one run; then the fraction of broad programs (per family) and
full programs that run in the sandbox to one valid solid with more than 2 faces inside the
[-100, 100] frame.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from benchinfo import machine_info, machine_line

from cad_recode.data.generator import COMPLEXITIES, generate_labelled, program_rng, solid_problem
from cad_recode.geometry.sandbox import Sandbox


def rate(level: str, num: int, seed: int) -> float:
    start = time.perf_counter()
    codes = [generate_labelled(program_rng(seed, i), level).code for i in range(num)]
    assert len(codes) == num
    return num / (time.perf_counter() - start)


def in_frame(result) -> bool:
    lo, hi = np.array(result.bbox_min), np.array(result.bbox_max)
    return result.num_faces > 2 and lo.min() >= -100.6 and hi.max() <= 100.6


def validity(sandbox, level: str, num: int, seed: int) -> tuple[Counter, Counter]:
    """(programs per family, valid programs per family)."""
    items = [generate_labelled(program_rng(seed, i), level) for i in range(num)]
    results = sandbox.map([item.code for item in items])
    total, valid = Counter(), Counter()
    for item, result in zip(items, results):
        total[item.family] += 1
        valid[item.family] += not solid_problem(result) and in_frame(result)
    return total, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generate", type=int, default=2000, help="programs timed per level")
    parser.add_argument("--execute", type=int, default=600, help="broad programs run in the sandbox (full: a third)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    print(f"Generator benchmark — {machine_line(machine_info('cadquery'))}")
    print("| level | programs/s (no execution) |\n|---|---|")
    for level in COMPLEXITIES:
        print(f"| {level} | {rate(level, args.generate, args.seed):.0f} |")
    with Sandbox(workers=args.workers, timeout=10) as sandbox:
        for level, num in (("broad", args.execute), ("full", max(1, args.execute // 3))):
            total, valid = validity(sandbox, level, num, args.seed)
            print(f"\n{level}: {sum(valid.values())} of {sum(total.values())} valid "
                  f"({100 * sum(valid.values()) / sum(total.values()):.1f}%)")
            if level == "broad":
                print("| family | programs | valid |\n|---|---|---|")
                for family in sorted(total):
                    print(f"| {family} | {total[family]} | {valid[family]} |")


if __name__ == "__main__":
    main()
