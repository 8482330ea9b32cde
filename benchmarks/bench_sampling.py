"""Best of N's candidates greedy or sampled: the same model, shapes and point draws, side by side.

    python benchmarks/bench_sampling.py --model runs/tiny/model --data runs/tiny/data --limit 200
    python benchmarks/bench_sampling.py --model runs/tiny/model --data runs/tiny/data \
        --variant none --variant after_first:0.5 --variant after_first:0.8 --variant all:0.8

Each ``--variant MODE[:T]`` evaluates the shapes with ``Decoding(sampling=MODE, temperature=T)``
(``cad_recode.evaluate.evaluate``: best of ``--num_candidates``, grammar on, no refinement: the
programs as the model wrote them). Every variant reads the same point draws (seeds 0..N-1), so they
differ only in how the candidates are decoded. Printed per variant: IR, IoU over the valid outputs
(the protocol's figure), median CD, and the paired difference from the first variant over every
shape (an invalid output counts as IoU 0) with its standard error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import mean_and_se, print_results  # noqa: E402

from cad_recode.evaluate import evaluate  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402

DEFAULT_VARIANTS = ("none", "after_first:0.8", "all:0.8")


def parse_variant(text: str) -> tuple[str, float | None]:
    mode, _, temperature = text.partition(":")
    return mode, float(temperature) if temperature else None


def run(recoder, args, variant: str) -> dict:
    mode, temperature = parse_variant(variant)
    report = evaluate(recoder, args.data, split=args.split, num_candidates=args.num_candidates, limit=args.limit,
                      decoding=Decoding(sampling=mode, temperature=temperature), batch_size=args.batch_size,
                      progress=False)
    s = report.summary
    return {"variant": variant, "inputs": s.count, "ir": s.invalid_ratio, "iou": s.mean_iou,
            "median_cd": s.median_cd, "seconds": report.settings["seconds"],
            "iou_by_id": {row["id"]: row["iou"] or 0.0 for row in report.rows if row["status"] != "skipped"}}


def paired(base: dict, other: dict) -> tuple[float, float]:
    """Mean and standard error of ``other - base`` over the shapes both evaluated (invalid = 0)."""
    return mean_and_se(other[i] - base[i] for i in base if i in other)


def table(rows: list[dict]) -> str:
    lines = ["| candidates | inputs | IR % | IoU % (valid) | median CD x10^3 | vs the first row (points ± SE) "
             "| seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mean, se = paired(rows[0]["iou_by_id"], r["iou_by_id"])
        lines.append(f"| {r['variant']} | {r['inputs']} | {100 * r['ir']:.1f} | {100 * r['iou']:.1f} "
                     f"| {r['median_cd']:.3f} | {100 * mean:+.2f} ± {100 * se:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a trained model folder (e.g. runs/tiny/model)")
    p.add_argument("--data", required=True, help="a prepared dataset or a folder of programs")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--num_candidates", type=int, default=4)
    p.add_argument("--variant", action="append", metavar="MODE[:T]",
                   help=f"a sampling mode and temperature (repeatable; default {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    variants = args.variant or list(DEFAULT_VARIANTS)
    for variant in variants:
        Decoding(sampling=parse_variant(variant)[0])  # a mistyped mode fails before any evaluation

    rows = []
    with CADRecoder.from_pretrained(args.model, sandbox_workers=args.workers, device="cpu") as recoder:
        for variant in variants:
            rows.append(run(recoder, args, variant))
            print(table(rows).splitlines()[-1], file=sys.stderr)
    print_results(table(rows), rows, args.json, "torch", "transformers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
