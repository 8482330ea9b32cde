"""Inference latency: per-shape split, best of N batched vs sequential, merged vs adapter speed.

    python benchmarks/bench_infer.py                  # the measurement (a few minutes on 2 cores)
    python benchmarks/bench_infer.py --quick          # smoke run (seconds + CadQuery start-up)
    python benchmarks/bench_infer.py --json infer.json

Figures (issue 5), tiny model on the CPU:

- per built-in shape, the latency of one greedy reconstruction split into
  encode (load + normalize + sample + FPS), generate, execute (sandbox) and
  metrics (candidate CD to the input, CD/IoU to the ground truth);
- best of N at N = 8: one call that generates the 8 draws in ONE batch, against
  8 sequential single-candidate calls on the same 8 draws (seeds 0..7); the
  ratio batched / sequential, target <= 0.5;
- generation speed (generated tokens per second) of the merged model against
  base + adapter (unmerged LoRA), same points, same settings; the ratio.

The model: a tiny Qwen3 (``--hidden``, ``--layers``) + projector trained here for
``--steps`` steps to write the built-in shapes' programs from their points, so
programs have realistic lengths and mostly run. The adapter (r=16 on all seven
projections) is put on that model and perturbed so it is not a no-op.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cad_recode.geometry.sampling import to_model_points
from cad_recode.geometry.sandbox import Sandbox
from cad_recode.geometry.shapes import EXAMPLE_SHAPES
from cad_recode.inference import CADRecoder, Decoding
from cad_recode.model import (
    CADRecodeForCausalLM,
    apply_lora,
    build_tiny_lm,
    generation_config_for,
    load_base_lm,
    merged_copy,
    save_merged,
)
from cad_recode.model.tokenizer import train_code_tokenizer

from benchinfo import machine_info, machine_line

TARGET_BATCHED_RATIO = 0.5
STAGES = ("encode", "generate", "execute", "metrics")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, 2 shapes, short programs")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=400, help="training steps of the tiny model")
    p.add_argument("--candidates", type=int, default=8, help="N of best of N (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (the median is reported)")
    p.add_argument("--max_new_tokens", type=int, default=768)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--workers", type=int, default=1, help="sandbox workers")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.max_new_tokens = min(args.steps, 20), 1, min(args.max_new_tokens, 64)
    return args


def build_models(root: Path, args, meshes: dict) -> dict[str, Path]:
    """Train the tiny model on the shapes, save it (full), an adapter on it, and the adapter merged."""
    tokenizer = train_code_tokenizer(list(EXAMPLE_SHAPES.values()) * 3, vocab_size=400)
    names = list(meshes)
    points = torch.from_numpy(np.stack([to_model_points(meshes[n], seed=0).points for n in names]))
    rows = [[1] + tokenizer.encode(EXAMPLE_SHAPES[n]) + [0] for n in names]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    lm = build_tiny_lm(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                       num_layers=args.layers, seed=0)
    model = CADRecodeForCausalLM.from_lm(lm)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = model(points=points, input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"trained tiny model: {args.steps} steps, loss {loss.item():.4f}, {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    model.eval()
    full = root / "full"
    model.save_pretrained(full)
    generation_config_for(tokenizer).save_pretrained(full)
    tokenizer.save_pretrained(full)

    base = load_base_lm(full, dtype="float32")
    torch.manual_seed(0)
    peft_model = apply_lora(base, r=16, alpha=32, dropout=0.0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 1e-3)
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    merged = root / "merged"
    save_merged(merged_copy(peft_model, lambda: load_base_lm(full, dtype="float32")), tokenizer, merged)
    return {"full": full, "adapter": adapter, "merged": merged}


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def per_shape_latency(recoder: CADRecoder, meshes: dict, decoding: Decoding, repeats: int) -> dict:
    table = {}
    for name, mesh in meshes.items():
        runs = [recoder.reconstruct_many([(name, mesh)], 1, ground_truths=[(name, mesh)], decoding=decoding)[0]
                for _ in range(repeats)]
        table[name] = {stage: statistics.median(r.timings.to_dict()[stage] for r in runs) for stage in (*STAGES, "total")}
        table[name]["tokens"] = sum(c.tokens for c in runs[0].candidates)
        table[name]["valid"] = runs[0].valid
    return table


def best_of_n(recoder: CADRecoder, meshes: dict, n: int, decoding: Decoding, repeats: int) -> dict:
    """Batched vs sequential wall time, with the generate / execute split and token counts of the last repeat."""

    def split(recs) -> dict:
        return {
            "generate_s": sum(r.timings.generate for r in recs),
            "execute_s": sum(r.timings.execute for r in recs),
            "tokens": sum(sum(c.tokens for c in r.candidates) for r in recs),
            # unfinished below the token limit: ended early as runaways
            "cut": sum(not c.finished and c.tokens < decoding.max_new_tokens for r in recs for c in r.candidates),
        }

    uncut = dataclasses.replace(decoding, runaway_factor=0)
    out = {}
    for name, mesh in meshes.items():
        batched, recs = timed(lambda: recoder.reconstruct_many([mesh], n, decoding=decoding), repeats)
        batched_uncut, recs_uncut = timed(lambda: recoder.reconstruct_many([mesh], n, decoding=uncut), repeats)
        sequential, runs = timed(
            lambda: [recoder.reconstruct_many([mesh], 1, seed=k, decoding=decoding)[0] for k in range(n)], repeats
        )
        out[name] = {"batched_s": batched, "batched_uncut_s": batched_uncut, "sequential_s": sequential,
                     "ratio": batched / sequential, "ratio_uncut": batched_uncut / sequential,
                     "same_winner": recs[0].code == recs_uncut[0].code,
                     "batched": split(recs), "batched_uncut": split(recs_uncut), "sequential": split(runs)}
    return out


def generation_speed(recoder: CADRecoder, points: np.ndarray, decoding: Decoding, repeats: int) -> dict:
    recoder.generate(points[:1], decoding)  # warm-up
    seconds, rows = timed(lambda: recoder.generate(points, decoding), repeats)
    tokens = sum(count for _, count, _ in rows)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    results: dict = {"machine": machine_info("torch"), "args": {k: str(v) for k, v in vars(args).items()}}
    names = list(EXAMPLE_SHAPES)[:2] if args.quick else list(EXAMPLE_SHAPES)
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp, Sandbox(workers=args.workers) as sandbox:
        sandbox.start()
        meshes = {name: sandbox.run(EXAMPLE_SHAPES[name]).to_trimesh() for name in names}
        paths = build_models(Path(tmp), args, meshes)
        full = CADRecoder.from_pretrained(paths["full"], sandbox=sandbox, device="cpu")
        full.reconstruct(meshes[names[0]], max_new_tokens=8)  # warm-up
        results["per_shape"] = per_shape_latency(full, meshes, decoding, args.repeats)
        results["best_of_n"] = best_of_n(full, dict(list(meshes.items())[:3]), args.candidates, decoding, args.repeats)

        points = np.stack([to_model_points(m, seed=0).points for m in meshes.values()])
        merged = CADRecoder.from_pretrained(paths["merged"], sandbox=sandbox, device="cpu")
        adapter = CADRecoder.from_pretrained(paths["full"], lora_path=paths["adapter"], sandbox=sandbox, device="cpu")
        results["merged"] = generation_speed(merged, points, decoding, args.repeats)
        results["adapter"] = generation_speed(adapter, points, decoding, args.repeats)
        results["merged_over_adapter_speed"] = results["merged"]["tokens_per_s"] / results["adapter"]["tokens_per_s"]
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {machine_line(m)}",
        "",
        "Per-shape latency, one greedy candidate (seconds, median):",
        "",
        "| shape | encode | generate | execute | metrics | total | tokens | valid |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["per_shape"].items():
        cells = " | ".join(f"{row[s]:.3f}" for s in (*STAGES, "total"))
        lines.append(f"| {name} | {cells} | {row['tokens']} | {'yes' if row['valid'] else 'no'} |")
    n = results["args"]["candidates"]
    lines += ["", f"Best of {n}: one batch vs {n} sequential calls (seconds, median; target ratio <= {TARGET_BATCHED_RATIO}),",
              "the batch with runaway candidates ended early (the default) and without:",
              "", "| shape | batched (generate / execute, tokens, cut) | batched, no runaway stop | sequential "
              "(generate / execute, tokens) | ratio | ratio, no stop | same winner |",
              "|---|---|---|---|---|---|---|"]
    for name, row in results["best_of_n"].items():
        b, u, q = row["batched"], row["batched_uncut"], row["sequential"]
        lines.append(
            f"| {name} | {row['batched_s']:.3f} ({b['generate_s']:.2f} / {b['execute_s']:.2f}, {b['tokens']}, {b['cut']}) "
            f"| {row['batched_uncut_s']:.3f} ({u['tokens']} tokens) "
            f"| {row['sequential_s']:.3f} ({q['generate_s']:.2f} / {q['execute_s']:.2f}, {q['tokens']}) "
            f"| {row['ratio']:.2f} | {row['ratio_uncut']:.2f} | {'yes' if row['same_winner'] else 'no'} |"
        )
    lines += ["", "Generation speed, all shapes in one batch:", "", "| model | tokens | seconds | tokens/s |", "|---|---|---|---|"]
    for key in ("merged", "adapter"):
        row = results[key]
        lines.append(f"| {key} | {row['tokens']} | {row['seconds']:.3f} | {row['tokens_per_s']:.1f} |")
    lines.append(f"\nmerged / adapter generation speed: {results['merged_over_adapter_speed']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
