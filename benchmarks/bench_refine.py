"""Refinement: quality against sandbox runs, on one set of best-of-N winners.

    python benchmarks/bench_refine.py --model runs/tiny/model --data runs/tiny/data
    python benchmarks/bench_refine.py --model runs/tiny/model --data runs/tiny/data --limit 30 --budgets 40 80 120

The model writes its best-of-N programs once (greedy, ``--num_candidates`` point
draws, the candidate closest to the input points wins, as ``cad-recode eval``
does). Then each budget refines the same winners against the same input points
(``cad_recode.inference.refine.refine_program``), and the protocol's figures (IoU, CD x10^3
to the ground truth) and the seconds per shape are printed side by side, budget 0
being the programs as written. The ground truth only measures. ``--structure both`` refines
each winner twice per budget, numbers only and then with the structural edits too (the
default), one right after the other, so the two timings share the machine's moments.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import machine_info, machine_line  # noqa: E402

from cad_recode.evaluate import describe_data, iter_ground_truth  # noqa: E402
from cad_recode.geometry.metrics import compare_meshes, summarize  # noqa: E402
from cad_recode.inference import CADRecoder  # noqa: E402
from cad_recode.inference.refine import refine_program  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a trained model folder (e.g. runs/tiny/model)")
    p.add_argument("--data", required=True, help="a prepared dataset or a folder of .py programs")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--num_candidates", type=int, default=4)
    p.add_argument("--budgets", type=int, nargs="+", default=[40, 80, 120])
    p.add_argument("--workers", type=int, default=2, help="sandbox workers (the variants of a poll run on all)")
    p.add_argument("--structure", choices=("on", "off", "both"), default="on",
                   help="structural edits (drop a feature, hollow a body) after the numbers (on: as shipped), "
                        "numbers only (off), or both side by side")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    with CADRecoder.from_pretrained(args.model, sandbox_workers=args.workers, device="cpu") as recoder:
        kind, ids = describe_data(args.data, args.split)
        truths = [gt for gt in iter_ground_truth(args.data, kind, ids[: args.limit], recoder.sandbox, args.split)
                  if gt.mesh is not None]
        shapes = [(gt.id, gt.mesh) for gt in truths]
        winners = recoder.reconstruct_many(shapes, args.num_candidates, ground_truths=shapes, batch_size=8,
                                           progress="best of N")
        # the dense input cloud each winner was chosen against (seed 0, as in reconstruct_many)
        encoded = [recoder.encode_input(shape, 1) for shape in shapes]
        clouds = [(item.dense, item.transform) for item in encoded]
        rows = [_figures(0, [(w.truth.cd, w.truth.iou) if w.valid else None for w in winners], 0.0)]
        modes = {"on": [True], "off": [False], "both": [False, True]}[args.structure]
        for budget in args.budgets:
            seconds, measured = dict.fromkeys(modes, 0.0), {mode: [] for mode in modes}
            for winner, (cloud, frame), gt in zip(winners, clouds, truths):
                for edits in modes:
                    if not winner.valid:
                        measured[edits].append(None)
                        continue
                    started = time.perf_counter()
                    refined = refine_program(winner.code, cloud, recoder.sandbox, max_evaluations=budget,
                                             start_result=winner.result, edit_structure=edits, frame=frame)
                    seconds[edits] += time.perf_counter() - started
                    comparison = compare_meshes(refined.result.to_trimesh(), gt.mesh)
                    measured[edits].append((comparison.cd, None if math.isnan(comparison.iou) else comparison.iou))
            rows += [dict(_figures(budget, measured[edits], seconds[edits] / len(shapes)), structure_edits=edits)
                     for edits in modes]
    machine = machine_info("torch", "cadquery")
    print(f"{len(shapes)} shapes of {args.data} ({args.split}), best of {args.num_candidates}; {machine_line(machine)}")
    print("| sandbox runs | IoU | mean CD x10^3 | median CD x10^3 | IR | refinement s / shape |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        label = "0 (as written)" if row["budget"] == 0 else str(row["budget"])
        label += {True: ", with edits", False: ", numbers only"}.get(row.get("structure_edits"), "") \
            if args.structure == "both" else ""
        print(f"| {label} | {row['iou']:.3f} | {row['mean_cd']:.3f} | {row['median_cd']:.3f} | {row['ir'] * 100:.0f} % "
              f"| {row['seconds_per_shape']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "machine": machine}, indent=2))
    return 0


def _figures(budget: int, measured: list, seconds_per_shape: float) -> dict:
    """The protocol's four numbers (``measured``: (CD, IoU) per shape, None if invalid) and the time."""
    summary = summarize([m[0] if m else None for m in measured], [m[1] if m else None for m in measured])
    return dict(budget=budget, iou=summary.mean_iou, mean_cd=summary.mean_cd, median_cd=summary.median_cd,
                ir=summary.invalid_ratio, seconds_per_shape=seconds_per_shape)


if __name__ == "__main__":
    sys.exit(main())
