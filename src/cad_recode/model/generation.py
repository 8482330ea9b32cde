"""The one generation path: points in, programs (and their token ids) out.

Inference (``CADRecoder.generate``) and the RL rollouts both call
:func:`generate_programs`, so sampled training programs are decoded exactly as
programs at inference: ``CADRecodeForCausalLM.generate_ids`` with the runaway stop
(:mod:`cad_recode.model.runaway`) for groups of candidates and the program grammar
(:mod:`cad_recode.model.constrained`) as a logits processor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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


def generate_programs(model, tokenizer, points: torch.Tensor, *, max_new_tokens: int = defaults.MAX_NEW_TOKENS,
                      do_sample: bool = False, temperature: float | None = None, top_p: float | None = None,
                      runaway_factor: float = DEFAULT_RUNAWAY_FACTOR, grammar: bool = True, group_size: int = 1,
                      seed: int | None = None) -> list[GeneratedProgram]:
    """(B, P, 3) normalized points -> B programs, one ``generate`` call.

    ``group_size``: rows ``g*N .. g*N+N-1`` are the N candidates of one input, so a runaway
    among them ends early (``runaway_factor``; 0 = never). ``seed``: torch's seed before
    sampling (sampled rows depend on it; greedy rows do not).
    """
    core = core_model(model)
    tokens = CodeTokens.from_tokenizer(tokenizer)
    if do_sample and seed is not None:
        torch.manual_seed(seed)
    runaway = None
    if group_size > 1 and runaway_factor:
        runaway = RunawayStop(group_size, tokens.end_id, runaway_factor)
    rows = core.generate_ids(
        points, tokens, max_new_tokens=max_new_tokens, num_candidates=1, do_sample=do_sample,
        temperature=temperature, top_p=top_p, stopping_criteria=[runaway] if runaway else None,
        logits_processor=[grammar_processor(core, tokenizer, len(points), max_new_tokens)] if grammar else None,
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
