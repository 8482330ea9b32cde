"""Training recipes side by side at equal time: each variant trains the tiny config for the same minutes.

    python benchmarks/bench_recipe.py --data runs/tiny/data --minutes 9 --limit 200 --out runs/bench/recipe \
        --variant digits="--tokenizer train" --variant whole="--tokenizer train_whole_numbers"

Each ``--variant NAME="FLAGS"`` runs ``cad-recode train --config configs/train_config_tiny.yaml
--max_minutes MINUTES FLAGS`` into OUT/NAME/model (a probe before training decides the steps that
fit, so a cheaper step buys more steps), then ``cad-recode eval`` of the first LIMIT test shapes into
OUT/NAME/eval (best of ``--num_candidates``, no refinement: the programs as the model wrote them).
A variant whose evaluation is already there is reused, so an interrupted benchmark continues.
Variants run one after another, each with the whole machine: run nothing else meanwhile, since the
probe times the steps.

Printed per variant: steps trained and their seconds, the mean code tokens of a training program
under the run's own tokenizer, IR, IoU over the valid outputs, and the paired difference from the
first variant over every shape (an invalid output counts as IoU 0) with its standard error.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import mean_and_se, print_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "configs" / "train_config_tiny.yaml"


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition("=")
    if not sep or not name.strip() or "/" in name:
        raise SystemExit(f"error: --variant {text!r}: write NAME=\"FLAGS\" (NAME a folder name, FLAGS may be empty)")
    return name.strip(), shlex.split(flags)


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cad_recode.cli", *args], check=True)


def train_and_evaluate(name: str, flags: list[str], args) -> Path:
    folder = Path(args.out) / name
    model, evaluation = folder / "model", folder / "eval"
    if (evaluation / "per_item.csv").is_file():
        print(f"{name}: reusing {evaluation}", file=sys.stderr)
        return folder
    if not (model / "config.json").is_file():
        cli("train", "--config", str(TINY_CONFIG), "--data_dir", args.data, "--output_dir", str(model),
            "--max_minutes", str(args.minutes), "--resume_from_checkpoint", "auto", *flags)
    cli("eval", "--model", str(model), "--data", args.data, "--split", "test", "--limit", str(args.limit),
        "--num_candidates", str(args.num_candidates), "--refine", "0", "--output_dir", str(evaluation),
        "--workers", str(args.workers), "--batch_size", "8")
    return folder


def mean_code_tokens(model: Path, data: str, limit: int = 3000) -> float:
    """Mean tokens of a training program (without the start and end tokens) under the run's tokenizer."""
    from itertools import islice

    from cad_recode.data.shards import PreparedSplit
    from cad_recode.model.loading import load_tokenizer

    tokenizer = load_tokenizer(model)
    lengths = [len(tokenizer.encode(code, add_special_tokens=False))
               for code in islice(PreparedSplit.open(data, "train").codes(), limit)]
    return sum(lengths) / len(lengths)


def read_variant(name: str, folder: Path, data: str) -> dict:
    end = [r for r in map(json.loads, (folder / "model" / "train_log.jsonl").read_text().splitlines())
           if "train_runtime" in r][-1]
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    with open(folder / "eval" / "per_item.csv", newline="", encoding="utf-8") as f:
        iou_by_id = {row["id"]: float(row["iou"] or 0.0) for row in csv.DictReader(f) if row["status"] != "skipped"}
    return {"variant": name, "steps": end["step"], "train_seconds": end["train_runtime"],
            "code_tokens": mean_code_tokens(folder / "model", data), "inputs": summary["count"],
            "ir": summary["invalid_ratio"], "iou": summary["mean_iou"], "iou_by_id": iou_by_id}


def table(rows: list[dict]) -> str:
    lines = ["| variant | steps | train s | steps/s | code tokens | inputs | IR % | IoU % (valid) "
             "| vs the first row (points ± SE) |", "|---|---|---|---|---|---|---|---|---|"]
    base = rows[0]["iou_by_id"]
    for r in rows:
        mean, se = mean_and_se(r["iou_by_id"][i] - base[i] for i in base if i in r["iou_by_id"])
        lines.append(f"| {r['variant']} | {r['steps']} | {r['train_seconds']:.0f} "
                     f"| {r['steps'] / r['train_seconds']:.2f} | {r['code_tokens']:.1f} | {r['inputs']} "
                     f"| {100 * r['ir']:.1f} | {100 * r['iou']:.1f} | {100 * mean:+.1f} ± {100 * se:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a prepared broad dataset (e.g. runs/tiny/data)")
    p.add_argument("--variant", action="append", required=True, metavar='NAME="FLAGS"',
                   help="train flags of one variant, added to the tiny config's (repeatable; the first is the base)")
    p.add_argument("--minutes", type=float, default=9.0, help="training time of every variant (max_minutes)")
    p.add_argument("--limit", type=int, default=200, help="test shapes evaluated")
    p.add_argument("--num_candidates", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/bench/recipe", help="each variant's model and evaluation go here")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    variants = [parse_variant(text) for text in args.variant]
    if len({name for name, _ in variants}) != len(variants):
        raise SystemExit("error: two variants share a name")

    rows = []
    for name, flags in variants:
        rows.append(read_variant(name, train_and_evaluate(name, flags, args), args.data))
        print(table(rows).splitlines()[-1], file=sys.stderr)
    print_results(table(rows), rows, args.json, "torch", "transformers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
