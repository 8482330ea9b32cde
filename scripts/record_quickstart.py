"""Record a finished quickstart run's figures in docs/results/quickstart.json, then sync the README.

    python scripts/record_quickstart.py runs/tiny --wall_seconds 699 --train_seconds 364 --eval_seconds 220 \
        --machine "AMD EPYC, 2 cores, 24 GB"

Reads WORKDIR/eval/summary.json (what `cad-recode eval` wrote); the wall times are yours to
give (time the run: `time bash quickstart.sh`). Then rewrites the README's results blocks
(scripts/sync_readme.py), so the README always quotes the latest recorded run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_results import RECORD, QuickstartRecord, Scores  # noqa: E402


def record_from_workdir(workdir: Path, *, wall_seconds: float, machine: str, date: str,
                        train_seconds: float | None = None, eval_seconds: float | None = None) -> QuickstartRecord:
    summary_path = workdir / "eval" / "summary.json"
    if not summary_path.is_file():
        raise SystemExit(f"error: {summary_path} not found; run `bash quickstart.sh` (WORKDIR={workdir}) first")
    summary = json.loads(summary_path.read_text())
    try:
        refined = Scores.of(summary)
        before = summary.get("before_refinement")
        as_written = Scores.of(before) if before else None
    except ValueError as error:
        raise SystemExit(f"error: {summary_path}: {error}") from None
    try:
        families = {name: Scores.of(s) for name, s in summary.get("families", {}).items()}
        families_written = {name: Scores.of(s) for name, s in summary.get("families_before_refinement", {}).items()}
    except ValueError as error:
        raise SystemExit(f"error: {summary_path}: {error}") from None
    decoding = summary.get("decoding") or {}
    data = program_level(workdir / "programs" / "manifest.json")
    return QuickstartRecord(date=date, machine=machine, wall_seconds=wall_seconds, train_seconds=train_seconds,
                            eval_seconds=eval_seconds, num_candidates=int(summary.get("num_candidates", 1)),
                            refine_evaluations=int(decoding.get("refine_evaluations", 0)),
                            refined=refined, as_written=as_written, data=data,
                            families=families, families_as_written=families_written,
                            parameters=model_parameters(workdir / "model"))


def model_parameters(model_dir: Path) -> int:
    """Weights in the run's model.safetensors (a tied embedding is stored, and counted, once)."""
    from safetensors import safe_open

    path = model_dir / "model.safetensors"
    try:
        with safe_open(str(path), "np") as weights:
            return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {path}: cannot count the model's parameters ({error}); is the run finished?") from None


def program_level(manifest: Path) -> str:
    """The generator level the run's programs were drawn at (data generate's manifest)."""
    try:
        return json.loads(manifest.read_text())["complexity"]
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"error: {manifest}: cannot read the programs' level ({error}); was it made by "
                         "`cad-recode data generate`?") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="the quickstart's WORKDIR (default runs/tiny)")
    parser.add_argument("--wall_seconds", type=float, required=True, help="end to end, setup not counted")
    parser.add_argument("--train_seconds", type=float, help="the train stage's wall time")
    parser.add_argument("--eval_seconds", type=float, help="the eval stage's wall time")
    parser.add_argument("--machine", default="2 CPU cores", help='e.g. "AMD EPYC, 2 cores, 24 GB"')
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="YYYY-MM-DD (default today)")
    parser.add_argument("--output", type=Path, default=RECORD, help=f"default {RECORD}")
    parser.add_argument("--no_sync", action="store_true", help="only write the record, leave README.md alone")
    args = parser.parse_args(argv)
    record = record_from_workdir(args.workdir, wall_seconds=args.wall_seconds, machine=args.machine, date=args.date,
                                 train_seconds=args.train_seconds, eval_seconds=args.eval_seconds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(record.to_json())
    print(f"{args.output} written")
    if not args.no_sync and args.output == RECORD:
        from sync_readme import main as sync

        return sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
