"""Training throughput on the CPU: recipe vs bare loop, LoRA / QLoRA / full, Qwen3-1.7B parameter counts.

    python benchmarks/bench_train.py                       # the measurement (minutes, on an IDLE machine)
    python benchmarks/bench_train.py --quick               # smoke run
    python benchmarks/bench_train.py --data runs/bench_data --json train.json   # keep / reuse the dataset

Figures (issue 4, "Benchmarks"), the tiny model of configs/train_config_tiny.yaml:

a. tokens/s of the recipe (``train.setup`` + ``train.build_trainer`` + ``Trainer.train``) against a bare
   PyTorch loop over the SAME model object and the SAME pre-collated batches, in interleaved passes
   (median). The bare loop does the same math: forward, loss / gradient_accumulation_steps, backward,
   clip_grad_norm_(max_grad_norm), AdamW over ``model.optimizer_groups`` (the recipe's groups), the
   same LR schedule, zero_grad. Two recipe rows:
     - "recipe, pre-built batches": the Trainer's DataLoader yields the bare loop's batches, in order;
       this row gives the overhead ratio (target <= 1.15x);
     - "recipe incl. data loading": the Trainer's own DataLoader over PointCodeDataset (surface
       sampling, FPS, noise, tokenizing, collating; dataloader_num_workers from the config).
   Recipe settings: logging every ``--logging-steps`` (default: the tiny config's 10) to TensorBoard and
   train_log.jsonl, the tqdm bar on, evaluation off, checkpoint saving off (``should_save`` is cleared
   at each step end, so no checkpoint/merge lands inside or after a pass).
   Tokens = non-padding sequence positions, INCLUDING the 256 point tokens (attention_mask.sum() +
   batch * num_point_tokens), counted by a forward pre-hook on the model, so every row counts the inputs
   its forward calls really saw. Each pass times steps ``warmup+1 .. warmup+steps`` between step ends
   (steady state: the Trainer's per-``train()`` setup is excluded and reported apart).
b. step time, items/s and peak RSS for LoRA, QLoRA (4-bit NF4 base through bitsandbytes on the CPU) and
   full fine-tuning, each in its own subprocess (peak RSS = ru_maxrss of that process, which also holds
   Python, torch, the dataset and the tokenizer); the recipe with pre-built batches.
c. parameter counts of Qwen3-1.7B + projector at r = 8, 16, 64 on all seven projections, from its
   config on the meta device (no download, no memory), beside the guide's claim.
d. items/s the training step consumes (effective batch / step time), for
   ``benchmarks/bench_data.py --train-items-per-s``.
e. with ``--grouping``: the recipe with its own data loading, shuffled batches against length-grouped
   ones (``group_by_length``), in the config's own method, interleaved passes; the ratio of items/s is
   the speed-up at equal items. It depends on the data's spread of program lengths: measure it on the
   data you train on (``--data runs/tiny/data`` for the quickstart's broad programs).

Threads: ``--threads`` (default 2) is set in every process and printed, with the load average at the
start and the end: on a loaded 2-core machine 2 threads can run several times slower than 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchinfo import machine_info, machine_line
from cad_recode.model.builders import QWEN3_1_7B_ARCHITECTURE as QWEN3_1_7B

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "train_config_tiny.yaml"
TARGET_OVERHEAD = 1.15
METHODS = ("lora", "qlora", "full")
RANKS = (8, 16, 64)
WORKER_MARK = "BENCH_TRAIN_WORKER_RESULT "
GUIDE_CLAIM = "~0.8M (0.05%) for Qwen3-1.7B + LoRA/QLoRA (guide's memory table); design.md §3: r=16 -> about 17M (~1%)"


# --------------------------------------------------------------------------- arguments and machine


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 16 programs, 3 timed steps, 1 pass")
    p.add_argument("--data", type=Path, help="prepared dataset to reuse; built there (and kept) when absent")
    p.add_argument("--programs", type=int, default=120, help="simple programs to generate when building data")
    p.add_argument("--config", type=Path, default=TINY_CONFIG, help="config giving the tiny model and trainer keys")
    p.add_argument("--method", choices=METHODS, default="lora", help="method of the recipe-vs-bare figure (a)")
    p.add_argument("--hidden", type=int, help="override tiny_model hidden_size (head_dim follows)")
    p.add_argument("--layers", type=int, help="override tiny_model num_hidden_layers")
    p.add_argument("--batch-size", type=int, help="override per_device_train_batch_size")
    p.add_argument("--grad-accum", type=int, help="override gradient_accumulation_steps")
    p.add_argument("--logging-steps", type=int, help="override logging_steps (default: the config's)")
    p.add_argument("--compute-dtype", choices=("bfloat16", "float16", "float32"),
                   help="override bnb_4bit_compute_dtype of QLoRA (default: the config's, bfloat16)")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps at the start of each pass")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per pass")
    p.add_argument("--passes", type=int, default=3, help="interleaved passes of (a); the median is reported")
    p.add_argument("--method-repeats", type=int, default=1, help="subprocesses per method in (b), interleaved")
    p.add_argument("--skip-methods", action="store_true", help="skip (b)")
    p.add_argument("--grouping", action="store_true", help="also measure (e): shuffled vs length-grouped batches")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every process (printed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)  # internal: one method of (b)
    args = p.parse_args(argv)
    if args.quick:
        args.programs, args.steps, args.warmup, args.passes = min(args.programs, 16), min(args.steps, 3), 1, 1
        args.method_repeats = 1
    return args


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a worker
    started from a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------- data and config


def ensure_dataset(args, scratch: Path) -> Path:
    """A prepared dataset of ``simple`` generated programs: --data if it holds one, else built (there or in scratch)."""
    from cad_recode.data.generator import generate_dataset
    from cad_recode.data.prepare import prepare_dataset
    from cad_recode.data.shards import MANIFEST_NAME

    root = args.data if args.data is not None else scratch / "prepared"
    if (root / MANIFEST_NAME).is_file():
        print(f"data: reusing {root}", file=sys.stderr)
        return root
    programs = scratch / "programs"
    started = time.perf_counter()
    generate_dataset(programs, args.programs, seed=args.seed, complexity="simple", progress=False)
    prepare_dataset(programs, root, progress=False)
    print(f"data: {args.programs} simple programs generated and prepared in {time.perf_counter() - started:.0f} s "
          f"-> {root}", file=sys.stderr)
    return root


def bench_config(args, data_dir: Path, output_dir: Path, method: str, max_steps: int):
    """The tiny config with the benchmark's overrides (data, output, method, sizes, no eval)."""
    from cad_recode.config import load_config

    base = load_config(args.config)
    overrides = dict(data_dir=str(data_dir), output_dir=str(output_dir), finetune_method=method,
                     use_qlora=method == "qlora", load_in_4bit=method == "qlora", do_eval=False,
                     max_steps=max_steps, save_steps=10**9, seed=args.seed, overwrite_output_dir=True)
    if args.batch_size:
        overrides["per_device_train_batch_size"] = args.batch_size
    if args.grad_accum:
        overrides["gradient_accumulation_steps"] = args.grad_accum
    if args.logging_steps:
        overrides["logging_steps"] = args.logging_steps
    if args.compute_dtype:
        overrides["bnb_4bit_compute_dtype"] = args.compute_dtype
    if args.hidden or args.layers:
        tiny = dict(base.tiny_model or {})
        if args.hidden:
            tiny["head_dim"] = args.hidden // tiny.get("num_attention_heads", 4)
            tiny["hidden_size"], tiny["intermediate_size"] = args.hidden, 4 * args.hidden
        if args.layers:
            tiny["num_hidden_layers"] = args.layers
        overrides["tiny_model"] = tiny
    return load_config(args.config, overrides)


def prebuilt_batches(run, count: int, seed: int) -> list[dict]:
    """``count`` collated batches of the training dataset (seeded order, cycling), materialized once."""
    dataset, size = run.train_dataset, run.cfg.per_device_train_batch_size
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < count * size:
        order += torch.randperm(len(dataset), generator=generator).tolist()
    return [run.collator([dataset[i] for i in order[k * size:(k + 1) * size]]) for k in range(count)]


# --------------------------------------------------------------------------- timing


class TokenCounter:
    """Forward pre-hook: counts non-padding positions (attention mask) plus point tokens of every forward call."""

    def __init__(self, model: torch.nn.Module):
        self.tokens = 0
        self.items = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        mask, points = kwargs.get("attention_mask"), kwargs.get("points")
        if mask is not None and points is not None:
            self.tokens += int(mask.sum()) + points.shape[0] * points.shape[1]
            self.items += points.shape[0]

    def close(self):
        self.handle.remove()


@dataclasses.dataclass
class Clock:
    """(seconds, tokens, items) at the end of every optimizer step."""

    counter: TokenCounter
    marks: list = dataclasses.field(default_factory=list)

    def mark(self):
        self.marks.append((time.perf_counter(), self.counter.tokens, self.counter.items))

    def steady(self, warmup: int) -> dict:
        """Throughput over the steps after ``warmup`` (marks[warmup-1] .. marks[-1])."""
        (t0, k0, i0), (t1, k1, i1) = self.marks[warmup - 1], self.marks[-1]
        steps = len(self.marks) - warmup
        intervals = [b[0] - a[0] for a, b in zip(self.marks[warmup - 1:], self.marks[warmup:])]
        return {"seconds": t1 - t0, "steps": steps, "tokens": k1 - k0, "items": i1 - i0,
                "tokens_per_s": (k1 - k0) / (t1 - t0), "items_per_s": (i1 - i0) / (t1 - t0),
                "step_s_median": statistics.median(intervals)}


def _step_end_callback(clock: Clock):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Marks each step end; clears should_save so no checkpoint is written during the benchmark."""

        def on_step_end(self, args, state, control, **kwargs):
            clock.mark()
            control.should_save = False

    return StepClock()


def _first(items):
    return items[0]


class _Batches(torch.utils.data.Dataset):
    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


def recipe_pass(run, cfg, batches: list[dict] | None, warmup: int) -> dict:
    """One ``Trainer.train()`` of warmup + timed steps with a fresh trainer (fresh optimizer) on ``run.model``.

    ``batches``: the pre-built batches, yielded in order through the Trainer's accelerator-prepared
    DataLoader; None = the recipe's own DataLoader over the dataset.
    """
    from cad_recode.training.recipe import build_trainer

    counter = TokenCounter(run.model)
    clock = Clock(counter)
    trainer = build_trainer(dataclasses.replace(run, cfg=cfg), [_step_end_callback(clock)])
    if batches is not None:
        loader = torch.utils.data.DataLoader(_Batches(batches), batch_size=1, shuffle=False, collate_fn=_first)
        trainer.get_train_dataloader = lambda: trainer.accelerator.prepare(loader)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its final metrics dict
            trainer.train()
    finally:
        counter.close()
    wall = time.perf_counter() - started
    result = clock.steady(warmup)
    result["train_call_s"] = wall
    result["setup_s"] = clock.marks[0][0] - started - result["step_s_median"]  # train() start-up, roughly
    return result


def bare_pass(run, cfg, batches: list[dict], warmup: int) -> dict:
    """The same math as the recipe's step, written as a plain loop over the pre-built batches."""
    from transformers import get_scheduler

    from cad_recode.model import optimizer_groups

    model, accum = run.model, cfg.gradient_accumulation_steps
    counter = TokenCounter(model)
    clock = Clock(counter)
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.learning_rate, cfg.projector_lr, cfg.weight_decay), lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    try:
        for step in range(cfg.max_steps):
            for batch in batches[step * accum:(step + 1) * accum]:
                loss = model(**batch).loss / accum
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            clock.mark()
    finally:
        counter.close()
    return clock.steady(warmup)


# --------------------------------------------------------------------------- figures


def mean_tokens_per_item(batches: list[dict]) -> float:
    """Non-padding positions + point tokens, per item, over the pre-built batches."""
    tokens = sum(int(b["attention_mask"].sum()) + b["points"].shape[0] * b["points"].shape[1] for b in batches)
    return tokens / sum(b["points"].shape[0] for b in batches)


def recipe_vs_bare(args, data_dir: Path, scratch: Path) -> dict:
    """Figure (a): interleaved passes of bare loop, recipe (pre-built batches), recipe (incl. data loading)."""
    from cad_recode.training.recipe import setup

    total = args.warmup + args.steps
    cfg = bench_config(args, data_dir, scratch / "recipe", args.method, total)
    run = setup(cfg)
    batches = prebuilt_batches(run, total * cfg.gradient_accumulation_steps, args.seed)
    variants = {
        "bare": lambda: bare_pass(run, cfg, batches, args.warmup),
        "recipe_prebuilt": lambda: recipe_pass(run, cfg, batches, args.warmup),
        "recipe_data": lambda: recipe_pass(run, cfg, None, args.warmup),
    }
    names = list(variants)
    passes: dict[str, list[dict]] = {name: [] for name in names}
    for index in range(args.passes):
        for name in names[index % 3:] + names[:index % 3]:  # rotate the order: no variant always runs first
            passes[name].append(variants[name]())
            print(f"pass {index + 1}/{args.passes} {name}: {passes[name][-1]['tokens_per_s']:.0f} tokens/s",
                  file=sys.stderr)
    summary = {name: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
                      "items_per_s": statistics.median(r["items_per_s"] for r in rows),
                      "step_s": statistics.median(r["step_s_median"] for r in rows),
                      "passes": rows} for name, rows in passes.items()}
    for name in ("recipe_prebuilt", "recipe_data"):
        ratios = [b["tokens_per_s"] / r["tokens_per_s"] for b, r in zip(passes["bare"], passes[name])]
        summary[name]["overhead"] = statistics.median(ratios)
        summary[name]["overhead_range"] = [min(ratios), max(ratios)]
        summary[name]["train_call_setup_s"] = statistics.median(r["setup_s"] for r in passes[name])
    from cad_recode.model import count_parameters

    counts = count_parameters(run.model)
    summary["setup"] = {"method": args.method, "batch_size": cfg.per_device_train_batch_size,
                        "grad_accum": cfg.gradient_accumulation_steps, "logging_steps": cfg.logging_steps,
                        "report_to": cfg.report_to, "dataloader_num_workers": cfg.dataloader_num_workers,
                        "tiny_model": cfg.tiny_model, "vocab": len(run.tokenizer),
                        "train_items": len(run.train_dataset),
                        "compute_dtype": cfg.bnb_4bit_compute_dtype,
                        "mean_tokens_per_item": mean_tokens_per_item(batches),
                        "total_params": counts.total, "trainable_params": counts.trainable}
    return summary


def grouped_vs_shuffled(args, data_dir: Path, scratch: Path) -> dict:
    """Figure (e): interleaved recipe passes with the recipe's own data loading, shuffled and length-grouped."""
    from cad_recode.config import load_config
    from cad_recode.training.recipe import setup

    method = load_config(args.config).finetune_method
    cfg = bench_config(args, data_dir, scratch / "grouping", method, args.warmup + args.steps)
    run = setup(cfg)
    variants = {"shuffled": dataclasses.replace(cfg, group_by_length=False),
                "grouped": dataclasses.replace(cfg, group_by_length=True)}
    passes: dict[str, list[dict]] = {name: [] for name in variants}
    for index in range(args.passes):
        for name in (list(variants) if index % 2 == 0 else list(variants)[::-1]):
            passes[name].append(recipe_pass(run, variants[name], None, args.warmup))
            print(f"pass {index + 1}/{args.passes} {name}: {passes[name][-1]['items_per_s']:.1f} items/s",
                  file=sys.stderr)
    ratios = [g["items_per_s"] / s["items_per_s"] for s, g in zip(passes["shuffled"], passes["grouped"])]
    summary = {name: {"items_per_s": statistics.median(r["items_per_s"] for r in rows),
                      "step_s": statistics.median(r["step_s_median"] for r in rows), "passes": rows}
               for name, rows in passes.items()}
    summary.update(speedup=statistics.median(ratios), speedup_range=[min(ratios), max(ratios)], method=method,
                   train_items=len(run.train_dataset), steps=args.steps,
                   batch_size=cfg.per_device_train_batch_size)
    return summary


def method_worker(args) -> dict:
    """Figure (b), inside its own process: setup, pre-built batches, one recipe run; step time and peak RSS."""
    from cad_recode.model import count_parameters
    from cad_recode.training.recipe import setup

    torch.set_num_threads(args.threads)
    total = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="bench-train-worker-") as tmp:
        cfg = bench_config(args, args.data, Path(tmp) / "run", args.worker, total)
        rss_start = peak_rss_mib()
        run = setup(cfg)
        batches = prebuilt_batches(run, total * cfg.gradient_accumulation_steps, args.seed)
        rss_setup = peak_rss_mib()
        result = recipe_pass(run, cfg, batches, args.warmup)
        counts = count_parameters(run.model)
    return {"method": args.worker, "step_s": result["step_s_median"], "tokens_per_s": result["tokens_per_s"],
            "items_per_s": result["items_per_s"], "peak_rss_mib": peak_rss_mib(), "rss_before_setup_mib": rss_start,
            "peak_rss_after_setup_mib": rss_setup, "total_params": counts.total, "trainable_params": counts.trainable,
            "weight_bytes": counts.weight_bytes, "threads": torch.get_num_threads()}


def methods_in_subprocesses(args, data_dir: Path) -> dict:
    """Figure (b): each method in a fresh process (clean ru_maxrss), interleaved over repeats."""
    rows: dict[str, list[dict]] = {m: [] for m in METHODS}
    forwarded = ["--threads", str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps),
                 "--seed", str(args.seed), "--config", str(args.config), "--data", str(data_dir)]
    for flag in ("hidden", "layers", "batch_size", "grad_accum", "logging_steps", "compute_dtype"):
        if getattr(args, flag):
            forwarded += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for _ in range(args.method_repeats):
        for method in METHODS:
            proc = subprocess.run([sys.executable, __file__, "--worker", method, *forwarded],
                                  capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith(WORKER_MARK)]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"method {method}: worker failed (exit {proc.returncode}): {tail}", file=sys.stderr)
                rows[method].append({"method": method, "error": tail})
                continue
            rows[method].append(json.loads(lines[-1][len(WORKER_MARK):]))
            print(f"method {method}: {rows[method][-1]['step_s']:.3f} s/step, "
                  f"peak RSS {rows[method][-1]['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    summary = {}
    for method, runs in rows.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            summary[method] = {"error": runs[0]["error"] if runs else "not run"}
            continue
        summary[method] = {key: statistics.median(r[key] for r in ok)
                           for key in ("step_s", "tokens_per_s", "items_per_s", "peak_rss_mib",
                                       "rss_before_setup_mib", "peak_rss_after_setup_mib")}
        summary[method].update({k: ok[0][k] for k in ("total_params", "trainable_params", "weight_bytes")})
        summary[method]["runs"] = runs
    return summary


def qwen3_parameter_counts() -> list[dict]:
    """Figure (c): Qwen3-1.7B + projector + LoRA on all seven projections, on the meta device."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    from cad_recode.model import DEFAULT_TARGET_MODULES, CADRecodeForCausalLM, apply_lora, count_parameters

    config = Qwen3Config(**QWEN3_1_7B)
    h, q, kv, inter = config.hidden_size, 16 * 128, 8 * 128, config.intermediate_size
    in_out = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    rows = []
    for rank in RANKS:
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(config)
        base = count_parameters(CADRecodeForCausalLM.from_lm(lm, num_point_tokens=256))
        model = apply_lora(CADRecodeForCausalLM.from_lm(lm, num_point_tokens=256), r=rank, alpha=2 * rank,
                           dropout=0.0, target_modules=DEFAULT_TARGET_MODULES)
        counts = count_parameters(model)
        lora_total = counts.groups.get("lora", (0, 0))[0]
        projector = counts.groups.get("point_encoder", (0, 0))
        rows.append({
            "r": rank, "base_params": base.total, "total_params": counts.total, "trainable_params": counts.trainable,
            "trainable_pct": 100 * counts.trainable / counts.total, "lora_params": lora_total,
            "projector_trainable": projector[1],
            "lora_params_expected": config.num_hidden_layers * rank * sum(a + b for a, b in in_out.values()),
            "embedding_params": config.vocab_size * h,
        })
    return rows


# --------------------------------------------------------------------------- report


def tiny_text(spec: dict | None) -> str:
    spec = spec or {}
    return (f"(hidden {spec.get('hidden_size')}, {spec.get('num_hidden_layers')} layers, "
            f"{spec.get('num_attention_heads')}/{spec.get('num_key_value_heads')} heads, "
            f"intermediate {spec.get('intermediate_size')})")


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {machine_line(m)}",
        f"Load average (1/5/15 min): start {results['load_start']}, end {results['load_end']}",
    ]
    if max(results["load_start"][0], results["load_end"][0]) > 0.5 * (m["cores"] or 1):
        lines.append("WARNING: the machine was busy during this run; its timings are not reliable "
                     "(rerun on an idle machine, or with --threads 1)")
    a = results.get("recipe_vs_bare")
    if a:
        s = a["setup"]
        lines += [
            "",
            f"(a) Recipe vs bare loop, {s['method']}, tiny Qwen3 {tiny_text(s['tiny_model'])}, vocab {s['vocab']}, "
            f"batch {s['batch_size']} x accumulation {s['grad_accum']}, {s['mean_tokens_per_item']:.0f} tokens/item "
            f"(incl. the point tokens), {s['trainable_params']:,} of {s['total_params']:,} parameters trainable. "
            f"Logging every {s['logging_steps']} steps (report_to {s['report_to']}), eval and saving off, "
            f"dataloader_num_workers {s['dataloader_num_workers']}. Median of {len(a['bare']['passes'])} "
            f"interleaved passes, {a['bare']['passes'][0]['steps']} timed steps each "
            "(s/step: the median step; tokens/s and items/s: over the timed window):",
            "",
            "| loop | tokens/s | items/s | s/step | overhead vs bare | target |",
            "|---|---|---|---|---|---|",
        ]
        labels = {"bare": "bare PyTorch loop, pre-built batches", "recipe_prebuilt": "recipe, pre-built batches",
                  "recipe_data": "recipe incl. data loading"}
        for key, label in labels.items():
            row = a[key]
            overhead = f"{row['overhead']:.3f}x ({row['overhead_range'][0]:.3f}-{row['overhead_range'][1]:.3f})" \
                if "overhead" in row else "1"
            verdict = "✔" if row.get("overhead", 9) <= TARGET_OVERHEAD else "✘"
            target = {"recipe_prebuilt": f"<= {TARGET_OVERHEAD}x {verdict}", "recipe_data": "report"}.get(key, "")
            lines.append(f"| {label} | {row['tokens_per_s']:.0f} | {row['items_per_s']:.2f} | {row['step_s']:.3f} "
                         f"| {overhead} | {target} |")
        lines.append(f"\nTrainer.train() start-up per call (outside the timed steps): "
                     f"{a['recipe_prebuilt']['train_call_setup_s']:.2f} s")
    b = results.get("methods")
    if b:
        lines += ["", "(b) Step time and peak RSS per method (recipe, pre-built batches; one process each; "
                      f"QLoRA compute dtype {a['setup']['compute_dtype'] if a else '?'}):", "",
                  "| method | s/step | tokens/s | items/s | peak RSS MiB | peak RSS before setup MiB "
                  "| trainable / total params |",
                  "|---|---|---|---|---|---|---|"]
        for method, row in b.items():
            if "error" in row:
                lines.append(f"| {method} | failed: {row['error']} | | | | | |")
                continue
            lines.append(f"| {method} | {row['step_s']:.3f} | {row['tokens_per_s']:.0f} | {row['items_per_s']:.2f} "
                         f"| {row['peak_rss_mib']:.0f} | {row['rss_before_setup_mib']:.0f} "
                         f"| {row['trainable_params']:,} / {row['total_params']:,} |")
    c = results.get("qwen3_counts")
    if c:
        lines += ["", "(c) Qwen3-1.7B + projector, LoRA on q,k,v,o,gate,up,down (meta device, no download):", "",
                  "| r | total params | trainable (LoRA + projector) | trainable % | LoRA "
                  "| LoRA expected 28·r·Σ(in+out) |",
                  "|---|---|---|---|---|---|"]
        for row in c:
            lines.append(f"| {row['r']} | {row['total_params']:,} | {row['trainable_params']:,} "
                         f"| {row['trainable_pct']:.2f}% | {row['lora_params']:,} | {row['lora_params_expected']:,} |")
        lines.append(f"\nBase (LM + projector, no LoRA): {c[0]['base_params']:,} parameters, tied embedding "
                     f"{c[0]['embedding_params']:,} counted once. Guide's claim: {GUIDE_CLAIM}.")
    d = results.get("train_items_per_s")
    if d:
        lines += ["", f"(d) The training step consumes {d:.2f} items/s (recipe, pre-built batches): compare with "
                      f"`python benchmarks/bench_data.py --train-items-per-s {d:.2f}`"]
    e = results.get("grouping")
    if e:
        lines += ["", f"(e) Shuffled against length-grouped batches ({e['method']}, batch {e['batch_size']}, "
                      f"{e['train_items']} training programs, the recipe's own data loading; median of "
                      f"{len(e['grouped']['passes'])} interleaved passes of {e['steps']} timed steps):", "",
                  "| batches | items/s | s/step |", "|---|---|---|"]
        for name in ("shuffled", "grouped"):
            lines.append(f"| {name} | {e[name]['items_per_s']:.1f} | {e[name]['step_s']:.3f} |")
        lines.append(f"\nSpeed-up of length grouping: {e['speedup']:.2f}x "
                     f"(passes {e['speedup_range'][0]:.2f}-{e['speedup_range'][1]:.2f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(WORKER_MARK + json.dumps(method_worker(args)))
        return 0
    import transformers

    transformers.logging.set_verbosity_error()
    results: dict = {"machine": machine_info("torch", "transformers", "peft", "accelerate", "bitsandbytes"), "load_start": load_average(),
                     "args": {k: str(v) for k, v in vars(args).items()}}
    print(f"torch threads: {torch.get_num_threads()}; load average at start: {results['load_start']}", file=sys.stderr)
    if results["load_start"][0] > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine is busy; throughput figures from this run are not reliable", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        scratch = Path(tmp)
        data_dir = ensure_dataset(args, scratch)
        results["qwen3_counts"] = qwen3_parameter_counts()
        results["recipe_vs_bare"] = recipe_vs_bare(args, data_dir, scratch)
        results["train_items_per_s"] = results["recipe_vs_bare"]["recipe_prebuilt"]["items_per_s"]
        if not args.skip_methods:
            results["methods"] = methods_in_subprocesses(args, data_dir)
        if args.grouping:
            results["grouping"] = grouped_vs_shuffled(args, data_dir, scratch)
    results["load_end"] = load_average()
    print(report(results))
    if args.json:
        from cad_recode.atomic import atomic_file

        with atomic_file(args.json) as tmp_path:
            tmp_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
