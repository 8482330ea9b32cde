"""GPU training figures for Qwen3-1.7B + projector: LoRA and QLoRA, with and without gradient checkpointing.

    bash benchmarks/gpu_figures.sh                   # on a lent H100/H200, with the decoding figures
    python benchmarks/gpu_train.py --dry-cpu         # tiny sizes on the CPU: checks the logic only

What it measures (issue 4, "Benchmarks"), for each of LoRA and QLoRA (and full fine-tuning with
``--methods full``), gradient checkpointing off and on:
tokens/s, MFU and peak VRAM (``torch.cuda.max_memory_allocated``: weights + LoRA/projector grads and
AdamW state + activations + logits) at the guide's batch sizes (``per_device_train_batch_size`` of
configs/train_config_lora.yaml and configs/train_config_qlora.yaml, LoRA r/alpha/dropout/targets from
them too), after ``--warmup`` steps, over ``--steps`` timed optimizer steps.

The model: the Qwen3-1.7B architecture from its config.json hyperparameters, RANDOM weights (no
download), bf16, wrapped by CADRecodeForCausalLM (fp32 projector), LoRA by cad_recode.model.apply_lora.
QLoRA: the same random base saved once to a scratch folder and loaded back in 4-bit NF4 with double
quantization through ``load_base_lm`` + ``quantization_config`` (the recipe's load path). Sequences:
256 point tokens + 768 code tokens = 1024 positions, random token ids, no padding (every position
counts as a token). Each step: forward under bf16 autocast (as the Trainer's ``bf16: true``), backward,
clip_grad_norm_, AdamW over ``cad_recode.model.optimizer_groups``; one fixed random batch.

MFU convention: model FLOPs per token = 4N for LoRA/QLoRA (forward 2N + backward activation gradients 2N;
full fine-tuning: 6N, its weights get gradients too;
the frozen base gets no weight gradients; LoRA's own FLOPs are under 1% and left out), where
N = weights that take part in a matmul per token = every nn.Linear of the LM including the output head
(Qwen3-1.7B ties it to the input embedding: counted once, as the head; the embedding lookup has no
FLOPs). Attention-score FLOPs (about 7% more at 1024 positions) are left out, and so is the recompute of
gradient checkpointing (MFU, not hardware FLOPs utilization). Peak: bf16 dense tensor-core FLOP/s from
the GPU's name (H100 SXM and H200: 989 TFLOP/s), or ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from cad_recode.model.builders import QWEN3_1_7B_ARCHITECTURE as QWEN3_1_7B

REPO = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=True)
# bf16 dense tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name (first match wins).
PEAK_BF16_TFLOPS = (("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0),
                    ("H100", 989.0), ("H800", 989.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0))
METHODS = ("full", "lora", "qlora")
CONFIGS = {"lora": REPO / "configs" / "train_config_lora.yaml", "qlora": REPO / "configs" / "train_config_qlora.yaml"}
# full fine-tuning on the LoRA config (the same batch), of the bf16 base built here: torch_dtype bfloat16 in
# the recipe's terms (its default, auto, keeps fp32 master weights for full fine-tuning; not measured here)
FULL = {"finetune_method": "full", "torch_dtype": "bfloat16"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-cpu", action="store_true", help="tiny model on the CPU, 2 steps: a logic check, no figures")
    p.add_argument("--methods", default="lora,qlora", help="comma list of full, lora, qlora")
    p.add_argument("--checkpointing", default="off,on", help="gradient checkpointing settings to run: off,on")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, help="override the configs' per_device_train_batch_size")
    p.add_argument("--peak-tflops", type=float, help="bf16 dense peak of this GPU, if its name is not in the table")
    p.add_argument("--budget-s", type=float, default=480, help="start no new measurement after this many seconds")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_train_results"))
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.checkpointing = [c == "on" for c in args.checkpointing.split(",") if c]
    if args.dry_cpu:
        args.warmup, args.steps = 1, 2
    return args


def sequence(cfg, args) -> tuple[int, int]:
    """(point tokens, code tokens): the config's 256 + 768, or 16 + 48 for the CPU dry run."""
    return (16, 48) if args.dry_cpu else (cfg.num_point_tokens, cfg.max_code_tokens)


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def bitsandbytes_problem() -> str:
    """'' when bitsandbytes imports, else one line saying why not."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # ImportError, or a broken native library
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return ""


def matmul_params(lm: torch.nn.Module) -> int:
    """N of the MFU convention: every nn.Linear weight of the LM, the output head included (tied: once)."""
    seen, total = set(), 0
    for module in lm.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def random_batch(batch: int, points: int, code: int, vocab: int, device) -> dict:
    generator = torch.Generator(device="cpu").manual_seed(0)
    input_ids = torch.randint(0, vocab, (batch, code), generator=generator)
    labels = input_ids.clone()
    labels[:, 0] = -100  # as the dataset: no loss on <|im_start|>
    return {"points": (torch.rand(batch, points, 3, generator=generator) * 2 - 1).to(device),
            "input_ids": input_ids.to(device), "labels": labels.to(device),
            "attention_mask": torch.ones(batch, code, dtype=torch.long, device=device)}


def peak_memory_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():  # CPU dry run: process peak RSS
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, cfg, batch: dict, checkpointing: bool, args, device) -> dict:
    """Warm-up + timed optimizer steps of ``model`` on ``batch``; tokens/s and peak memory."""
    from cad_recode.model import optimizer_groups

    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.train()
    reset_memory(device)
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.learning_rate, cfg.projector_lr, cfg.weight_decay), lr=cfg.learning_rate)
    params = [p for p in model.parameters() if p.requires_grad]
    tokens_per_step = batch["input_ids"].numel() + batch["points"].shape[0] * batch["points"].shape[1]
    try:
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                sync(device)
                started = time.perf_counter()
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync(device)
        seconds = time.perf_counter() - started
    except torch.cuda.OutOfMemoryError:
        return {"error": "out of memory", "peak_memory_gib": peak_memory_bytes(device) / 2**30}
    finally:
        del optimizer
        model.zero_grad(set_to_none=True)
    active = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    return {"tokens_per_s": tokens_per_step * args.steps / seconds, "step_s": seconds / args.steps,
            "tokens_per_step": tokens_per_step, "loss": loss.detach().item(), "checkpointing_active": active,
            "peak_memory_gib": peak_memory_bytes(device) / 2**30}


def build_base(arch: dict, device, dtype):
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(**arch)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")


def run_all(args) -> dict:
    from cad_recode.config import load_config
    from cad_recode.model import CADRecodeForCausalLM, apply_lora, load_base_lm, quantization_config

    began = time.perf_counter()
    device = torch.device("cpu" if args.dry_cpu else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-cpu for the CPU logic check")
    name = "CPU (dry run)" if args.dry_cpu else torch.cuda.get_device_name(device)
    peak = None if args.dry_cpu else peak_tflops(name, args.peak_tflops)
    arch = TINY if args.dry_cpu else QWEN3_1_7B
    import peft
    import transformers

    results: dict = {
        "machine": {"device": name, "peak_bf16_tflops": peak, "torch": torch.__version__,
                    "cuda": torch.version.cuda, "transformers": transformers.__version__, "peft": peft.__version__,
                    "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds")},
        "model": "tiny Qwen3 (dry run)" if args.dry_cpu else "Qwen3-1.7B architecture, random weights, bf16",
        "rows": [], "notes": [],
    }
    qlora_problem = bitsandbytes_problem() if "qlora" in args.methods else ""
    if qlora_problem:
        line = f"QLoRA skipped: bitsandbytes cannot be imported ({qlora_problem}); carry its wheel in .whl/"
        print(line, flush=True)
        results["notes"].append(line)
    started = time.perf_counter()
    lm = build_base(arch, device, torch.bfloat16)
    results["matmul_params_N"] = matmul_params(lm)
    results["total_params"] = sum(p.numel() for p in lm.parameters())
    results["build_s"] = time.perf_counter() - started
    print(f"{results['model']}: built in {results['build_s']:.1f} s, N = {results['matmul_params_N']:,}", flush=True)
    scratch = tempfile.TemporaryDirectory(prefix="gpu-train-base-")
    base_dir = Path(scratch.name) / "base"
    if "qlora" in args.methods and not qlora_problem:
        started = time.perf_counter()
        lm.save_pretrained(base_dir)  # for the 4-bit load below
        results["save_s"] = time.perf_counter() - started

    def run_method(method: str, model, cfg) -> None:
        batch_size = args.batch_size or cfg.per_device_train_batch_size
        points, code = sequence(cfg, args)
        batch = random_batch(batch_size, points, code, arch["vocab_size"], device)
        for checkpointing in args.checkpointing:
            row = {"method": method, "gradient_checkpointing": checkpointing, "batch_size": batch_size,
                   "seq_len": points + code, "lora_r": cfg.lora_r,
                   "tensors_4bit": sum(p.__class__.__name__ == "Params4bit" for p in model.parameters())}
            if time.perf_counter() - began > args.budget_s:
                row["error"] = f"not measured (time budget {args.budget_s:.0f} s spent)"
            else:
                row.update(measure(model, cfg, batch, checkpointing, args, device))
            if "tokens_per_s" in row and peak:  # full fine-tuning also computes the weights' gradients: 6N
                flops = (6 if method == "full" else 4) * results["matmul_params_N"]
                row["mfu"] = row["tokens_per_s"] * flops / (peak * 1e12)
            results["rows"].append(row)
            print(format_row(row), flush=True)
            write_outputs(results, args.out)

    if "full" in args.methods:  # first: LoRA below wraps the same base in place
        cfg = load_config(CONFIGS["lora"], FULL)
        model = CADRecodeForCausalLM.from_lm(lm, num_point_tokens=sequence(cfg, args)[0]).requires_grad_(True)
        run_method("full", model, cfg)
        del model
        reset_memory(device)
    if "lora" in args.methods:
        cfg = load_config(CONFIGS["lora"])
        model = apply_lora(CADRecodeForCausalLM.from_lm(lm, num_point_tokens=sequence(cfg, args)[0]), r=cfg.lora_r,
                           alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules)
        run_method("lora", model, cfg)
        del model
    del lm
    reset_memory(device)
    if "qlora" in args.methods and not qlora_problem and time.perf_counter() - began > args.budget_s:
        results["notes"].append(f"QLoRA not measured: time budget {args.budget_s:.0f} s spent before its 4-bit load")
        results["rows"].append({"method": "qlora", "error": "not measured (time budget spent)"})
    elif "qlora" in args.methods and not qlora_problem:
        cfg = load_config(CONFIGS["qlora"])
        started = time.perf_counter()
        quantization = quantization_config(cfg.bnb_4bit_compute_dtype, cfg.bnb_4bit_quant_type,
                                           cfg.bnb_4bit_use_double_quant)
        lm = load_base_lm(base_dir, dtype="bfloat16", quantization=quantization,
                          device_map={"": device.index or 0} if device.type == "cuda" else None)
        results["load_4bit_s"] = time.perf_counter() - started
        model = apply_lora(CADRecodeForCausalLM.from_lm(lm, num_point_tokens=sequence(cfg, args)[0]), r=cfg.lora_r,
                           alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules)
        run_method("qlora", model, cfg)
        del model, lm
    elif "qlora" in args.methods:
        results["rows"].append({"method": "qlora", "error": "not measured: " + results["notes"][-1]})
    scratch.cleanup()
    results["wall_s"] = time.perf_counter() - began
    write_outputs(results, args.out)
    return results


def format_row(row: dict) -> str:
    head = f"| {row['method']} | {'on' if row.get('gradient_checkpointing') else 'off'} | {row.get('batch_size', '')} "
    if "error" in row:
        return head + f"| {row.get('seq_len', '')} | {row['error']} | | | |"
    mfu = f"{100 * row['mfu']:.1f}%" if "mfu" in row else "n/a"
    return (head + f"| {row['seq_len']} | {row['tokens_per_s']:,.0f} | {row['step_s']:.3f} | {mfu} "
            f"| {row['peak_memory_gib']:.2f} |")


def report(results: dict) -> str:
    m = results["machine"]
    peak = f"{m['peak_bf16_tflops']:.0f} TFLOP/s bf16 dense" if m["peak_bf16_tflops"] else "unknown peak (MFU n/a)"
    lines = [
        f"Device: {m['device']} ({peak}), torch {m['torch']} (CUDA {m['cuda']}), transformers {m['transformers']}, "
        f"peft {m['peft']}, Python {m['python']}, {m['date']}",
        f"Model: {results['model']}; N = {results.get('matmul_params_N', 0):,} matmul parameters "
        f"(MFU = tokens/s x 4N / peak), {results.get('total_params', 0):,} parameters in all. Peak memory: "
        + ("process peak RSS (dry run)." if m["cuda"] is None or "dry" in m["device"]
           else "torch.cuda.max_memory_allocated per row."),
        "",
        "| method | grad. checkpointing | batch | seq | tokens/s | s/step | MFU | peak memory GiB |",
        "|---|---|---|---|---|---|---|---|",
        *(format_row(row) for row in results["rows"]),
        *results["notes"],
    ]
    return "\n".join(lines)


def write_outputs(results: dict, out: Path) -> None:
    """Written after every row: a run killed at its time limit keeps what it measured."""
    from cad_recode.atomic import atomic_file

    texts = {"gpu_train.json": json.dumps(results, indent=2) + "\n", "gpu_train.md": report(results) + "\n"}
    for name, text in texts.items():
        with atomic_file(out / name) as tmp:
            tmp.write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run_all(args)
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
