"""The one generation path: points in, programs (and their token ids) out.

Inference (``CADRecoder.generate``) and the RL rollouts both call
:func:`generate_programs`, so sampled training programs are decoded exactly as
programs at inference: ``CADRecodeForCausalLM.generate_ids`` with the runaway stop
(:mod:`cad_recode.model.runaway`) for groups of candidates and the program grammar
(:mod:`cad_recode.model.constrained`) as a logits processor. One batch may mix greedy and
sampled rows (``greedy_rows``): best-of-N keeps a greedy guess and samples the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from cad_recode import defaults
from cad_recode.model.runaway import DEFAULT_RUNAWAY_FACTOR, RunawayStop
from cad_recode.model.tokenizer import CodeTokens


@dataclass
class GeneratedProgram:
    """One generated row: its code tokens (without <|endoftext|> and padding), the decoded text, and
    whether it ended with <|endoftext|> (False when cut by the runaway stop or the token budget)."""

    ids: list[int]
    code: str
    finished: bool


def core_model(model):
    """The CADRecodeForCausalLM inside a PEFT (or DDP) wrapper, or the model itself."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def grammar_processor(model, tokenizer, rows: int, max_new_tokens: int):
    """The program grammar as a logits processor for ``rows`` rows, in the model's coordinate frame."""
    from cad_recode.model.constrained import grammar_logits_processor, model_frame

    core = core_model(model)
    return grammar_logits_processor(
        tokenizer, rows, model_frame(core.config), end_id=CodeTokens.from_tokenizer(tokenizer).end_id,
        vocab_size=core.get_output_embeddings().weight.shape[0], max_new_tokens=max_new_tokens,
    )


class GreedyRows(LogitsProcessor):
    """Sampling for some rows of a batch, greedy for the rest: a greedy row's only finite score is its
    highest, so any sampler draws that token. Runs after the grammar (the highest allowed token)."""

    def __init__(self, greedy: list[bool]):
        self.greedy = torch.tensor(greedy, dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = scores.argmax(dim=-1, keepdim=True)
        only_best = torch.full_like(scores, float("-inf")).scatter_(-1, best, 0.0)
        return torch.where(self.greedy.to(scores.device)[:, None], only_best, scores)


def generate_programs(model, tokenizer, points: torch.Tensor, *, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
                      do_sample: bool = False, temperature: float | None = None, top_p: float | None = None,
                      runaway_factor: float = DEFAULT_RUNAWAY_FACTOR, grammar: bool = True, group_size: int = 1,
                      seed: int | None = None, greedy_rows: list[bool] | None = None) -> list[GeneratedProgram]:
    """(B, P, 3) normalized points -> B programs, one ``generate`` call.

    ``group_size``: rows ``g*N .. g*N+N-1`` are the N candidates of one input, so a runaway
    among them ends early (``runaway_factor``; 0 = never). ``seed``: torch's seed before
    sampling (sampled rows depend on it; greedy rows do not). ``greedy_rows`` (one flag a row)
    with ``do_sample``: the flagged rows decode greedily, the others are sampled.
    """
    core = core_model(model)
    tokens = CodeTokens.from_tokenizer(tokenizer)
    if greedy_rows is not None and len(greedy_rows) != len(points):
        raise ValueError(f"greedy_rows has {len(greedy_rows)} flags for {len(points)} rows")
    if do_sample and seed is not None:
        torch.manual_seed(seed)
    runaway = None
    if group_size > 1 and runaway_factor:
        runaway = RunawayStop(group_size, tokens.end_id, runaway_factor)
    processors = [grammar_processor(core, tokenizer, len(points), max_new_tokens)] if grammar else []
    if do_sample and greedy_rows is not None and any(greedy_rows):
        processors.append(GreedyRows(greedy_rows))  # after the grammar: the best token it allows
    rows = core.generate_ids(
        points, tokens, max_new_tokens=max_new_tokens, num_candidates=1, do_sample=do_sample,
        temperature=temperature, top_p=top_p, stopping_criteria=[runaway] if runaway else None,
        logits_processor=processors or None,
    )
    out = []
    for i, ids in enumerate(rows.tolist()):
        cut = runaway is not None and runaway.cut is not None and bool(runaway.cut[i])
        if cut:  # ended by RunawayStop: drop the padding it got after the cut
            while ids and ids[-1] == tokens.pad_id:
                ids.pop()
        finished = not cut and tokens.end_id in ids
        kept = ids[: ids.index(tokens.end_id)] if finished else ids
        out.append(GeneratedProgram(kept, tokenizer.decode(kept, skip_special_tokens=False), finished))
    return out
