"""Data verbs: ``cad-recode data generate | stats | prepare``.

Argument parsing and printing only; the work is done by ``cad_recode.data``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cad_recode.atomic import check_writable
from cad_recode.cli.flags import add_output_flag, add_sandbox_flags, required_output_dir
from cad_recode.data.generator import COMPLEXITIES


def register(subparsers) -> None:
    """Add the ``data`` verb group to the ``cad-recode`` parser."""
    data = subparsers.add_parser(
        "data", help="generate, inspect and prepare training data",
        description="Make synthetic CAD-Recode-style programs, look at a folder of programs, "
        "and prepare one (execute + tessellate) for training.",
    )
    data.set_defaults(func=lambda args: _usage(data))
    verbs = data.add_subparsers(dest="data_command", metavar="VERB")

    p = verbs.add_parser(
        "generate", help="write N valid, unique generated programs in the public layout",
        description="Draw programs from the generator, keep those that run to one valid solid in the "
        "sandbox and are new (by code and by geometry), and write them as OUTPUT_DIR/train/batch_XX/N.py, "
        "OUTPUT_DIR/val/N.py, OUTPUT_DIR/test/N.py with OUTPUT_DIR/manifest.json. The seed fixes programs and split.",
    )
    p.add_argument("--num", type=int, required=True, help="programs to write")
    add_output_flag(p, folder=True, old="--out", type=Path, metavar="DIR", help="output folder (must not hold a dataset)")
    p.add_argument("--seed", type=int, default=0, help="fixes the programs and the split (default 0)")
    p.add_argument("--workers", type=int, default=1, help="sandbox processes (default 1)")
    add_sandbox_flags(p)
    p.add_argument("--complexity", choices=COMPLEXITIES, default="simple",
                   help="simple (the quickstart's): 1-2 bodies of boxes, cylinders and rectangle or circle plates "
                        "with holes, one spelling per shape; medium: simple plus plates with polygon and arc outlines; "
                        "broad: every family of simple parts (box, cylinder, plate, outline, ring, stacked, pocket, "
                        "through_cut) on all three planes, each program labelled with its family; full: the published "
                        "recipe")
    p.add_argument("--val_fraction", "--val-fraction", type=float, default=0.05, help="share of programs in val/ (default 0.05)")
    p.add_argument("--test_fraction", "--test-fraction", type=float, default=0.05, help="share of programs in test/ (default 0.05)")
    p.add_argument("--batch_size", "--batch-size", type=int, default=1000, help="programs per train/batch_XX folder (default 1000)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --output_dir")
    p.add_argument("--no_execute", "--no-execute", action="store_true",
                   help="skip the sandbox check (keep programs new by code); for simple and medium programs, valid by "
                        "construction: data prepare runs them anyway and lists any that fail")
    p.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = verbs.add_parser(
        "stats", help="counts, program lengths, operations and validity of a folder of programs",
        description="Print the program count per split, the length distribution (characters, or tokens "
        "of --tokenizer), how often each primitive and operation occurs, and the validity rate (from "
        "the generator's manifest, or measured with --execute).",
    )
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--tokenizer", type=Path, metavar="PATH",
                   help="a tokenizer folder that transformers.AutoTokenizer loads (default: count characters)")
    p.add_argument("--execute", action="store_true", help="run every program in the sandbox to measure validity")
    p.add_argument("--workers", type=int, default=1, help="sandbox processes for --execute (default 1)")
    add_sandbox_flags(p, profile_default="strict")
    p.set_defaults(func=cmd_stats)

    p = verbs.add_parser(
        "prepare", help="execute and tessellate a folder of programs into training shards",
        description="Run every program under --src (train/batch_XX/N.py, val/N.py, test/N.py) in the "
        "sandbox, tessellate it and store meshes, code and split in resumable shards under --output_dir. "
        "Failed programs are listed in OUTPUT_DIR/failures.csv and never stop the run.",
    )
    p.add_argument("--src", type=Path, required=True, metavar="DIR", help="folder of programs")
    add_output_flag(p, folder=True, old="--out", type=Path, metavar="DIR", help="prepared dataset folder")
    p.add_argument("--workers", type=int, default=1, help="sandbox processes (default 1)")
    # strict by default: training data in the language the model writes; cadquery for hand-written test sets
    add_sandbox_flags(p, profile_default="strict")
    p.add_argument("--shard_size", "--shard-size", type=int, default=None, help="shapes per shard (default: the library's)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (or keep a finished one)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --output_dir")
    p.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_generate(args) -> int:
    from cad_recode.data.generator import generate_dataset

    out_dir = check_writable(required_output_dir(args), folder=True, what="output folder")
    report = generate_dataset(
        out_dir, args.num, seed=args.seed, workers=args.workers, complexity=args.complexity,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, batch_size=args.batch_size,
        overwrite=args.overwrite, progress=not args.no_progress, execute=not args.no_execute,
    )
    counts = ", ".join(f"{split} {n}" for split, n in report.counts.items())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.failures.items())) or "none"
    print(f"wrote {report.num} {report.complexity} programs to {report.out_dir} ({counts})")
    print(f"attempts {report.attempts}, failure rate {100 * report.failure_rate:.1f}% ({reasons}), "
          f"duplicates: {report.duplicates_code} by code, {report.duplicates_geometry} by geometry; "
          f"{report.seconds:.1f} s")
    return 0


def cmd_stats(args) -> int:
    from cad_recode.data.stats import dataset_stats

    stats = dataset_stats(args.dir, tokenizer=args.tokenizer, execute=args.execute, workers=args.workers,
                          progress=args.execute, profile=args.profile)
    print(stats.summary())
    return 0


def cmd_prepare(args) -> int:
    from cad_recode.data.prepare import prepare_dataset

    extra = {} if args.shard_size is None else {"shard_size": args.shard_size}
    out_dir = check_writable(required_output_dir(args), folder=True, what="output folder")
    report = prepare_dataset(args.src, out_dir, workers=args.workers, resume=args.resume,
                             overwrite=args.overwrite, progress=not args.no_progress, profile=args.profile, **extra)
    print(report.summary())
    return 0
