"""Grammar on against off: invalid programs by kind on a trained model, greedy, side by side.

    python benchmarks/bench_grammar_ir.py --model runs/tiny/model --data runs/tiny/data --limit 100
    python benchmarks/bench_grammar_ir.py --model runs/tiny/model --data runs/tiny/data \
        --data benchmarks/data/style_set --json grammar_ir.json

For every ``--data`` set, the same model evaluates the same shapes twice with the
evaluation protocol (``cad_recode.evaluate.evaluate``: one greedy program per shape,
``--num_candidates`` point draws when asked): once with the program grammar
enforced while decoding, once without. It prints IR, IoU, median CD and the invalid
inputs by kind (syntax, runtime error, empty or invalid solid, timeout, truncated).
The issue's targets: no syntax error with the grammar, and IR with it at most half of IR without.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import print_results  # noqa: E402

from cad_recode.evaluate import evaluate  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402


def run(recoder, data: str, args, grammar: bool) -> dict:
    report = evaluate(recoder, data, split=args.split, num_candidates=args.num_candidates, limit=args.limit,
                      decoding=Decoding(grammar=grammar), batch_size=args.batch_size, progress=False)
    s = report.summary
    return {"data": data, "grammar": grammar, "inputs": s.count, "ir": s.invalid_ratio, "iou": s.mean_iou,
            "median_cd": s.median_cd, "invalid_kinds": report.invalid_kinds.to_dict(),
            "seconds": report.settings["seconds"]}


def table(rows: list[dict]) -> str:
    lines = ["| data | grammar | inputs | IR % | syntax | runtime | empty/invalid solid | timeout | truncated | other "
             "| IoU % | median CD x10^3 | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k = r["invalid_kinds"]
        lines.append(
            f"| {r['data']} | {'on' if r['grammar'] else 'off'} | {r['inputs']} | {100 * r['ir']:.1f} | {k['syntax']} "
            f"| {k['runtime_error']} | {k['empty_or_invalid_solid']} | {k['timeout']} | {k['truncated']} "
            f"| {k['other']} | {100 * r['iou']:.1f} | {r['median_cd']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a trained model folder (e.g. runs/tiny/model)")
    p.add_argument("--data", required=True, action="append", help="a prepared dataset or a folder of programs "
                   "(repeatable)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--num_candidates", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    rows = []
    with CADRecoder.from_pretrained(args.model, sandbox_workers=args.workers, device="cpu") as recoder:
        for data in args.data:
            for grammar in (False, True):  # side by side: the same model, shapes and sandbox
                rows.append(run(recoder, data, args, grammar))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    print_results(table(rows), rows, args.json, "torch", "transformers", "llguidance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
