"""Geometry throughput: sandbox overhead, worker scaling, metric speed (one run, side by side).

    python benchmarks/bench_geometry.py                # the fixed set, >= 200 programs
    python benchmarks/bench_geometry.py --quick        # smoke run, a few programs
    python benchmarks/bench_geometry.py --json out.json

Figures (targets from issues 2 and 13):

- programs/s through the sandboxed pool with 1 worker -- OS confinement ON
  (bubblewrap + Landlock + seccomp), strict profile -- vs the same programs run
  in this process without a sandbox -> overhead ratio (target <= 1.3x);
- programs/s with 2 workers vs 1 worker (target >= 1.7x; needs 2 idle cores);
- programs/s through the same 1-worker pool under the ``cadquery`` profile (a fresh
  process per program, then its shape measured as BREP bytes by another fresh one)
  -> the strict / cadquery ratio;
- CD + IoU pairs/s under the protocol (8192 samples, manifold3d booleans), on
  near pairs (a shape and its 5 %-stretched self, like a good prediction and
  its target) and on unrelated pairs (nearest-neighbour search is slower there).

Every program does the same work on both paths: static check skipped in-process
only, CadQuery execution, validity check, tessellation. Pools are started and
warmed (one program per worker) before the clock starts; pool start-up time is
reported on its own. Each figure is the median of ``--repeats`` passes, and the
passes of the three execution modes are interleaved so that a change in machine
load hits them alike.

The program set is fixed: the built-in example shapes, then uniformly scaled
variants of them (integer literals x k/10, k = 5..12 except 10, rounded;
divisors kept), then generated programs from ``cad_recode.data.generator``
(seed [GENERATOR_SEED, i] for program i, alternating "simple" and "full"), up
to ``--programs`` (default 240). ``--quick`` takes 12 programs spread over
that set.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from cad_recode.atomic import atomic_file
from cad_recode.geometry import sandbox as sandbox_module
from cad_recode.geometry.metrics import compare_meshes
from cad_recode.geometry.sandbox import Sandbox
from cad_recode.geometry.shapes import EXAMPLE_SHAPES

from benchinfo import machine_info, machine_line

SCALE_STEPS = range(5, 13)  # k/10: 0.5x .. 1.2x
GENERATOR_SEED = 20240
# An integer literal, but not a divisor (the "/2" in "offset=80/2" must stay).
_INTEGER = re.compile(r"(?<![\w./])(-?\d+)(?![\w.])")


# --------------------------------------------------------------------------- program set


def scaled_variant(code: str, factor: float) -> str:
    """The same part scaled by ``factor``: every integer literal multiplied and rounded (never to 0)."""

    def scale(match: re.Match) -> str:
        value = int(match.group(1))
        if value == 0:
            return "0"
        scaled = int(round(value * factor)) or (1 if value > 0 else -1)
        return str(scaled)

    header, _, body = code.partition("\n")  # leave 'import cadquery as cq' alone
    return header + "\n" + _INTEGER.sub(scale, body)


def generated_programs(count: int) -> list[str]:
    """``count`` programs from the data generator (one fixed seed per index), or [] without it."""
    try:
        from cad_recode.data.generator import generate_program
    except ImportError:
        return []
    return [
        generate_program(np.random.default_rng([GENERATOR_SEED, i]), "simple" if i % 2 == 0 else "full")
        for i in range(count)
    ]


def program_set(size: int) -> list[tuple[str, str]]:
    """The fixed benchmark programs as (source, code): built-in, scaled variants, generated."""
    builtin = list(EXAMPLE_SHAPES.values())
    variants = [scaled_variant(code, k / 10) for k in SCALE_STEPS if k != 10 for code in builtin]
    generated = generated_programs(max(0, size - len(builtin) - len(variants)))
    tagged = [("builtin", c) for c in builtin] + [("scaled_variants", c) for c in variants]
    tagged += [("generated", c) for c in generated]
    # Without the generator the set is short: repeat it from the start.
    return [tagged[i] if i < len(tagged) else ("repeated", tagged[i % len(tagged)][1]) for i in range(size)]


def composition(tagged: list[tuple[str, str]]) -> dict[str, int]:
    return {name: sum(1 for tag, _ in tagged if tag == name)
            for name in ("builtin", "scaled_variants", "generated", "repeated")}


# --------------------------------------------------------------------------- timing


def _median_rate(count: int, seconds: list[float]) -> float:
    return count / statistics.median(seconds)


def run_unsandboxed(codes: list[str]) -> list:
    return [sandbox_module.execute_unsandboxed(code) for code in codes]


def warm_pool(pool: Sandbox, workers: int, code: str) -> None:
    pool.map([code] * workers)  # every worker imports CadQuery and runs once


def measure(codes: list[str], repeats: int, metric_pairs: int) -> dict:
    timings: dict[str, list[float]] = {"in_process": [], "sandbox_1": [], "sandbox_2": [], "cadquery_1": []}
    startup: dict[str, float] = {}
    pools: dict[str, Sandbox] = {}
    confined = False
    try:
        for name, workers in (("sandbox_1", 1), ("sandbox_2", 2)):
            start = time.perf_counter()
            pools[name] = Sandbox(workers=workers)  # OS confinement on: refuses to run without it
            confined = pools[name].confined
            warm_pool(pools[name], workers, codes[0])
            startup[name] = time.perf_counter() - start
        run_unsandboxed(codes[:1])  # import CadQuery here too before the clock starts
        runners: dict[str, Callable[[], list]] = {
            "in_process": lambda: run_unsandboxed(codes),
            "sandbox_1": lambda: pools["sandbox_1"].map(codes),
            "sandbox_2": lambda: pools["sandbox_2"].map(codes),
            "cadquery_1": lambda: pools["sandbox_1"].map(codes, profile="cadquery"),
        }
        results: dict[str, list] = {}
        for _ in range(repeats):
            for name, runner in runners.items():
                start = time.perf_counter()
                results[name] = runner()
                timings[name].append(time.perf_counter() - start)
    finally:
        for pool in pools.values():
            pool.close()

    statuses = {name: _status_counts(res) for name, res in results.items()}
    rates = {name: _median_rate(len(codes), secs) for name, secs in timings.items()}
    metrics = measure_metrics([r for r in results["sandbox_1"] if r.ok], metric_pairs, repeats)
    return {
        "programs": len(codes),
        "repeats": repeats,
        "programs_per_s": rates,
        "seconds_per_pass": timings,
        "pool_startup_s": startup,
        "os_confinement": confined,
        "overhead_sandbox_1_vs_in_process": rates["in_process"] / rates["sandbox_1"],
        "speedup_2_vs_1_workers": rates["sandbox_2"] / rates["sandbox_1"],
        "strict_vs_cadquery_profile": rates["sandbox_1"] / rates["cadquery_1"],
        "statuses": statuses,
        # Per program: the sandbox must not change what a program does (a timeout under load would).
        "same_outcome_all_modes": all(len({r.status for r in trio}) == 1 for trio in zip(*results.values())),
        **metrics,
    }


def _status_counts(results: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        key = getattr(result.status, "value", str(result.status))
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _stretched(mesh, factor: float = 1.05):
    """A near copy (5 % longer along x): the kind of pair an evaluation of a good model sees."""
    copy = mesh.copy()
    copy.apply_scale([factor, 1.0, 1.0])
    return copy


def measure_metrics(valid_results: list, pairs: int, repeats: int) -> dict:
    """CD + IoU pairs/s (one pair = both metrics) on near pairs and on unrelated pairs.

    Nearest-neighbour queries slow down as shapes differ, so both are reported:
    each shape against its 5 %-stretched self, and each shape against the next one.
    """
    meshes = [r.to_trimesh() for r in valid_results[: pairs + 1]]
    kinds = {
        "near": [(m, _stretched(m)) for m in meshes[:pairs]],
        "unrelated": list(zip(meshes, meshes[1:])),
    }
    rates = {}
    for kind, couples in kinds.items():
        if not couples:
            rates[kind] = float("nan")
            continue
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            for a, b in couples:
                compare_meshes(a, b)
            seconds.append(time.perf_counter() - start)
        rates[kind] = _median_rate(len(couples), seconds)
    return {"metric_pairs": len(kinds["near"]), "metric_pairs_per_s": rates}


# --------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    m, r = report["machine"], report["results"]
    rates = r["programs_per_s"]
    lines = [
        f"Machine: {machine_line(m)}",
        f"Programs: {r['programs']} ({', '.join(f'{k} {v}' for k, v in report['program_set'].items())}), "
        f"median of {r['repeats']} passes; OS confinement {'ON' if r['os_confinement'] else 'OFF'}; "
        f"statuses {r['statuses']['sandbox_1']}"
        + ("" if r["same_outcome_all_modes"] else " (MODES DISAGREE: see JSON)"),
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| in-process, no sandbox | {rates['in_process']:.1f} programs/s | |",
        f"| sandbox, 1 worker | {rates['sandbox_1']:.1f} programs/s | |",
        f"| sandbox, 2 workers | {rates['sandbox_2']:.1f} programs/s | |",
        f"| sandbox overhead (in-process / 1 worker) | {r['overhead_sandbox_1_vs_in_process']:.2f}x | <= 1.3x |",
        f"| 2 workers / 1 worker | {r['speedup_2_vs_1_workers']:.2f}x | >= 1.7x |",
        f"| sandbox, 1 worker, `cadquery` profile | {rates['cadquery_1']:.1f} programs/s | |",
        f"| strict / `cadquery` profile, 1 worker | {r['strict_vs_cadquery_profile']:.2f}x | report |",
        f"| CD + IoU, near pairs (shape vs 5 % stretched self, {r['metric_pairs']}) | "
        f"{r['metric_pairs_per_s']['near']:.1f} pairs/s | report |",
        f"| CD + IoU, unrelated pairs (neighbouring programs) | "
        f"{r['metric_pairs_per_s']['unrelated']:.1f} pairs/s | report |",
        f"| pool start-up + warm-up, 1 / 2 workers | {r['pool_startup_s']['sandbox_1']:.2f} s / "
        f"{r['pool_startup_s']['sandbox_2']:.2f} s | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 12 programs spread over the set, 1 pass, 4 metric pairs")
    parser.add_argument("--programs", type=int, default=240, help="size of the fixed program set (>= 200)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per mode; the median is reported")
    parser.add_argument("--metric-pairs", type=int, default=50, help="shape pairs for CD + IoU")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the report as JSON")
    args = parser.parse_args(argv)
    if not args.quick and args.programs < 200:
        parser.error("--programs must be >= 200 for a reportable figure (use --quick for a smoke run)")
    tagged = program_set(args.programs)
    if args.quick:  # every k-th program, so each source is exercised
        tagged = tagged[:: max(1, len(tagged) // 12)][:12]
        args.repeats, args.metric_pairs = 1, 4
    codes = [code for _, code in tagged]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": machine_info("cadquery"),
        "program_set": composition(tagged),
        "results": measure(codes, args.repeats, args.metric_pairs),
    }
    print(markdown(report))
    if args.json:
        with atomic_file(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
