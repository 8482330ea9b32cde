"""Issue 16's figures for one trained model: the broad test split, its families, the style set, pose and scan quality.

    python benchmarks/bench_generalization.py --model runs/tiny/model --data runs/tiny/data --json gen.json
    python benchmarks/bench_generalization.py --model runs/tiny/model --data runs/tiny/data \
        --cases clean style rotated rotated_pose noise_0.01 noise_0.02 missing_side --limit 200 --condition_limit 100

Every case is the evaluation protocol (``cad_recode.evaluate.evaluate``) with the shipped
decoding (best of ``--num_candidates`` point draws, grammar on, refinement with ``--refine``
sandbox runs, starting from the points' own outline where it is closer unless ``--outline_fit off``),
on one loaded model and one sandbox pool, so the cases differ only in their
inputs. With refinement each case gives two figures: the programs as the model wrote them and
the shipped (refined) ones. The clean case also gives the table by family. ``rotated`` turns
every test shape (and its ground truth) by a random rotation, the same per shape on every
rerun, read as given (``--pose none``); ``rotated_pose`` is the same inputs with ``--pose auto`` and
``rotated_default`` with the default ``--pose if_turned``. The test split's other cases read the input
as given: no clean, noisy or cut test part looks turned, so ``if_turned`` reads them exactly so (the
style sets hold parts drawn turned on purpose, so they run under the default). ``clean_cloud`` hands inference the clean
surface sample as a point cloud (what the noise, missing-side and stray cases start from);
``stray_points`` strews 0.5 % more points around it; ``stray_points_kept`` reads them all, as before strays were dropped. The style sets are
``benchmarks/data/style_set`` (``style``), ``benchmarks/data/style_set_b`` (``style_b``, a second
set written later as a holdout) and ``benchmarks/data/style_set_c`` (``style_c``: what the generator never
writes, fillets, chamfers, revolves, shells and the like); all hand-written, never trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import machine_info, machine_line  # noqa: E402

from cad_recode.evaluate import evaluate  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402

DATA = Path(__file__).parent / "data"


class Case(NamedTuple):
    condition: str
    pose: str
    style: Path | None  # the style set it reads, or None: the --data test split
    drop_stray_points: bool = True


CASES = {
    "clean": Case("clean", "none", None),
    "style": Case("clean", "if_turned", DATA / "style_set"),  # parts drawn turned on purpose: the default
    "style_b": Case("clean", "if_turned", DATA / "style_set_b"),
    "style_c": Case("clean", "if_turned", DATA / "style_set_c"),
    "rotated": Case("rotated", "none", None),
    "rotated_pose": Case("rotated", "auto", None),
    "rotated_default": Case("rotated", "if_turned", None),
    "noise_0.01": Case("noise_0.01", "none", None),
    "noise_0.02": Case("noise_0.02", "none", None),
    "missing_side": Case("missing_side", "none", None),
    "clean_cloud": Case("clean_cloud", "none", None),
    "stray_points": Case("stray_points", "none", None),
    "stray_points_kept": Case("stray_points", "none", None, drop_stray_points=False),  # before strays were dropped
}


def figures(summary) -> dict:
    return {"inputs": summary.count, "ir": summary.invalid_ratio, "iou": summary.mean_iou,
            "median_cd": summary.median_cd, "mean_cd": summary.mean_cd}


def run_case(recoder, name: str, args) -> dict:
    condition, pose, style, drop_strays = CASES[name]
    data = str(style) if style else args.data
    limit = None if style else (args.limit if name == "clean" else args.condition_limit)
    decoding = Decoding(pose=pose, refine_evaluations=args.refine, outline_fit=args.outline_fit == "on",
                        drop_stray_points=drop_strays)
    report = evaluate(recoder, data, split="test", num_candidates=args.num_candidates, limit=limit,
                      decoding=decoding, batch_size=args.batch_size, progress=False, condition=condition)
    row = {"case": name, "data": data, "condition": condition, "pose": pose, "shipped": figures(report.summary),
           "seconds": report.settings["seconds"]}
    if report.model_summary is not None:
        row["written"] = figures(report.model_summary)
    if report.families:
        row["families"] = {fam: figures(s) for fam, s in sorted(report.families.items())}
        row["written_families"] = {fam: figures(s) for fam, s in sorted(report.model_families.items())}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| case | inputs | written IoU | shipped IoU | shipped IR % | shipped median CD x10^3 | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        s, w = r["shipped"], r.get("written")
        lines.append(f"| {r['case']} | {s['inputs']} | {w['iou']:.3f} | " if w else f"| {r['case']} | {s['inputs']} | - | ")
        lines[-1] += f"{s['iou']:.3f} | {100 * s['ir']:.1f} | {s['median_cd']:.3f} | {r['seconds']:.0f} |"
    for r in rows:
        if "families" in r:
            lines += ["", f"By family ({r['case']}):", "", "| family | inputs | written IoU | shipped IoU | shipped IR % |",
                      "|---|---|---|---|---|"]
            written = r.get("written_families", {})
            for fam, s in r["families"].items():
                w = written.get(fam)
                lines.append(f"| {fam} | {s['inputs']} | {w['iou']:.3f} | " if w else f"| {fam} | {s['inputs']} | - | ")
                lines[-1] += f"{s['iou']:.3f} | {100 * s['ir']:.1f} |"
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a trained model folder (e.g. runs/tiny/model)")
    p.add_argument("--data", required=True, help="the prepared broad dataset the model was trained on (its test split)")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--limit", type=int, default=200, help="test shapes of the clean case")
    p.add_argument("--condition_limit", type=int, default=100, help="test shapes of the cases with a condition (rotated, noise, ...)")
    p.add_argument("--num_candidates", type=int, default=4)
    p.add_argument("--refine", type=int, default=120, help="sandbox runs of refinement (0: off)")
    p.add_argument("--outline_fit", choices=("on", "off"), default="on",
                   help="refinement may start from the points' own outline (off: from the model's winner only)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    rows = []
    with CADRecoder.from_pretrained(args.model, sandbox_workers=args.workers, device="cpu") as recoder:
        for name in args.cases:
            rows.append(run_case(recoder, name, args))
            print(table(rows[-1:]).splitlines()[2], file=sys.stderr, flush=True)
    info = machine_info("torch", "transformers", "llguidance")
    print(machine_line(info))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
