"""Grammar-constrained decoding: every generated program is in the program language.

``grammar_logits_processor(tokenizer, batch_size)`` returns a
``transformers.LogitsProcessor`` to pass to ``generate``. Before each step it
masks every token that would leave the grammar of
``cad_recode.data.grammar.program_grammar(frame)``, one grammar state per row,
so best-of-N batches (rows that end at different steps) work. The end token
<|endoftext|> is allowed exactly where a program is complete; after a row has
ended, its padding is not checked.

The masks come from a maintained library, llguidance by default. xgrammar is the
other backend, measured in ``benchmarks/bench_grammar.py``; it was the first choice
(faster masks), but xgrammar 0.2.9's mask refuses tokens its own matcher accepts:
with the tiny byte-level BPE, ``))\n`` after a coordinate, so greedy output drifted
from what the model would write. ``tests/model/test_constrained.py`` teacher-forces
real programs through the default backend to catch that kind of defect. The grammar is
compiled once per tokenizer, vocabulary size, end token and frame, and cached.

Limits: a grammar guarantees syntax, not a solid (a self-intersecting outline
parses), and a row can still be cut by ``max_new_tokens``; such a row is a valid
*start* of a program and counts as ``truncated`` (see
``cad_recode.data.invalid.classify_invalid``). ``wind_down`` ends a row at the
first complete point once it is that close to the budget, which turns most of
those cuts into short, complete programs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor

from cad_recode.data.grammar import DEFAULT_FRAME, program_grammar

DEFAULT_GRAMMAR = True  # --grammar on: decoding is constrained unless a caller turns it off
GRAMMAR_HELP = ("on (default): every token is checked against the program grammar, so programs always parse "
                "and numbers stay within the model's frame; off: decode freely, as the papers do")
GRAMMAR_BACKENDS = ("xgrammar", "llguidance")
DEFAULT_GRAMMAR_BACKEND = "llguidance"
DEFAULT_WIND_DOWN = 48  # tokens before max_new_tokens from which a row ends at its first complete point
_CACHE_SIZE = 4


def model_frame(config: Any) -> int:
    """The coordinate frame a model was trained in: ``config.coordinate_frame`` when set, else the data's."""
    frame = getattr(config, "coordinate_frame", None)
    return int(frame) if frame else DEFAULT_FRAME


@dataclass
class CompiledGrammar:
    """A grammar compiled for one tokenizer: what each row's matcher starts from."""

    backend: str
    vocab_size: int  # width of the model's logits (may exceed the tokenizer's vocabulary)
    end_id: int
    frame: int
    compiled: Any  # the library's compiled grammar
    tokenizer_info: Any  # the library's view of the tokenizer (kept alive with the grammar)

    def new_matcher(self):
        if self.backend == "xgrammar":
            import xgrammar

            return xgrammar.GrammarMatcher(self.compiled)
        import llguidance

        return llguidance.LLMatcher(self.tokenizer_info, self.compiled, log_level=0)


_compiled_cache: OrderedDict[tuple, tuple[Any, CompiledGrammar]] = OrderedDict()


def compile_grammar(tokenizer, vocab_size: int, end_id: int, frame: int = DEFAULT_FRAME,
                    backend: str = DEFAULT_GRAMMAR_BACKEND) -> CompiledGrammar:
    """Compile the program grammar of `frame` for `tokenizer` (cached: about a second for Qwen's vocabulary)."""
    if backend not in GRAMMAR_BACKENDS:
        raise ValueError(f"unknown grammar backend {backend!r}; use one of: {', '.join(GRAMMAR_BACKENDS)}")
    # the tokenizer object itself is kept in the cache, so its id cannot be reused by another
    key = (id(tokenizer), int(vocab_size), int(end_id), int(frame), backend)
    if key in _compiled_cache:
        _compiled_cache.move_to_end(key)
        return _compiled_cache[key][1]
    builder = _compile_xgrammar if backend == "xgrammar" else _compile_llguidance
    compiled = builder(tokenizer, int(vocab_size), int(end_id), program_grammar(frame))
    result = CompiledGrammar(backend, int(vocab_size), int(end_id), int(frame), *compiled)
    _compiled_cache[key] = (tokenizer, result)
    while len(_compiled_cache) > _CACHE_SIZE:
        _compiled_cache.popitem(last=False)
    return result


def _compile_xgrammar(tokenizer, vocab_size: int, end_id: int, text: str):
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=[end_id])
    compiler = xgrammar.GrammarCompiler(info, max_threads=1)
    return compiler.compile_grammar(xgrammar.Grammar.from_ebnf(text)), info


def _compile_llguidance(tokenizer, vocab_size: int, end_id: int, text: str):
    import llguidance
    import llguidance.hf
    from llguidance.gbnf_to_lark import gbnf_to_lark

    info = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=end_id)
    grammar = llguidance.LLMatcher.grammar_from_lark(gbnf_to_lark(text))
    problem = llguidance.LLMatcher.validate_grammar(grammar, info)
    if problem:
        raise ValueError(f"llguidance refuses the program grammar: {problem}")
    return grammar, info


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks the logits of each row to the tokens its grammar state allows.

    ``finished[i]``: row i wrote <|endoftext|> at a complete program, as far as this processor has
    seen (generate does not call it after the last step, so read the output for the final token). ``left[i]``:
    row i was given a token its grammar refused (only possible from outside, e.g.
    the padding a stopping criterion puts after a cut row); it is not constrained
    any further. ``max_new_tokens`` with ``wind_down``: from that many tokens
    before the budget, a row whose program is complete must end there.
    """

    def __init__(self, grammar: CompiledGrammar, batch_size: int | None = None, *,
                 max_new_tokens: int | None = None, wind_down: int = DEFAULT_WIND_DOWN):
        self.grammar = grammar
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.wind_down = wind_down
        self.matchers: list = []
        self.finished: list[bool] = []
        self.left: list[bool] = []
        self._start: int | None = None  # input length at the first step (the prompt, if given as ids)
        self._consumed = 0
        self._bitmask: torch.Tensor | None = None

    def _begin(self, rows: int, length: int) -> None:
        if self.batch_size is not None and rows != self.batch_size:
            raise ValueError(
                f"grammar processor built for {self.batch_size} rows got {rows}; pass "
                "batch_size = inputs x num_return_sequences (or None to read it from the first step)"
            )
        self.matchers = [self.grammar.new_matcher() for _ in range(rows)]
        self.finished, self.left = [False] * rows, [False] * rows
        self._start = length
        self._bitmask = torch.full((rows, (self.grammar.vocab_size + 31) // 32), -1, dtype=torch.int32)

    def _consume(self, row: int, token: int) -> None:
        if self.finished[row] or self.left[row]:
            return  # padding after the end
        matcher = self.matchers[row]
        accepted = matcher.accept_token(token) if self.grammar.backend == "xgrammar" else matcher.consume_token(token)
        if not accepted:
            self.left[row] = True
        elif token == self.grammar.end_id:
            self.finished[row] = True

    def _fill(self, row: int) -> None:
        matcher = self.matchers[row]
        if self.grammar.backend == "xgrammar":
            matcher.fill_next_token_bitmask(self._bitmask, row)
        else:  # llguidance writes the row in place (not llguidance.torch: importing it starts torch.compile)
            target = self._bitmask[row]
            matcher.unsafe_compute_mask_ptr(target.data_ptr(), target.numel() * target.element_size())

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, length = input_ids.shape
        if self._start is None:
            self._begin(rows, length)
        else:
            for column in range(self._consumed, length):
                for row, token in enumerate(input_ids[:, column].tolist()):
                    self._consume(row, token)
        self._consumed = length
        closing = self.max_new_tokens is not None and self.max_new_tokens - (length - self._start) <= self.wind_down
        for row in range(rows):
            if self.finished[row] or self.left[row]:
                self._bitmask[row] = -1
                continue
            self._fill(row)
            if closing and _allows(self._bitmask[row], self.grammar.end_id):
                self._bitmask[row] = 0  # near the budget: end here, complete
                self._bitmask[row, self.grammar.end_id // 32] = _bit(self.grammar.end_id)
        return apply_bitmask(scores, self._bitmask)


def _bit(token: int) -> int:
    value = 1 << (token % 32)
    return value - (1 << 32) if value >= 1 << 31 else value  # as an int32 word


def _allows(mask_row: torch.Tensor, token: int) -> bool:
    return bool((int(mask_row[token // 32]) >> (token % 32)) & 1)


_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


def apply_bitmask(scores: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Set to -inf the scores whose bit is 0 (bit t % 32 of word t // 32, the layout both libraries use)."""
    vocab = scores.shape[-1]
    bits = (bitmask.to(scores.device).unsqueeze(-1) >> _BIT_SHIFTS.to(scores.device)) & 1
    allowed = bits.view(bitmask.shape[0], -1)[:, :vocab].bool()
    if allowed.shape[1] < vocab:  # logits wider than the mask: the extra ids are never allowed
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]), value=False)
    return scores.masked_fill(~allowed, float("-inf"))


def grammar_logits_processor(tokenizer, batch_size: int | None = None, frame: int = DEFAULT_FRAME, *,
                             vocab_size: int | None = None, end_id: int | None = None,
                             max_new_tokens: int | None = None, wind_down: int = DEFAULT_WIND_DOWN,
                             backend: str = DEFAULT_GRAMMAR_BACKEND) -> GrammarLogitsProcessor:
    """A fresh processor (one ``generate`` call) for `batch_size` rows of a model with `vocab_size` logits.

    `vocab_size` defaults to ``len(tokenizer)``; pass the model's (its logits may be wider).
    `end_id` defaults to <|endoftext|>. Pass `max_new_tokens` (the generate budget) to
    have rows end at a complete point in the last `wind_down` tokens instead of being cut.
    """
    from cad_recode.model.tokenizer import CodeTokens

    end = CodeTokens.from_tokenizer(tokenizer).end_id if end_id is None else int(end_id)
    width = len(tokenizer) if vocab_size is None else int(vocab_size)
    grammar = compile_grammar(tokenizer, width, end, frame, backend)
    return GrammarLogitsProcessor(grammar, batch_size, max_new_tokens=max_new_tokens, wind_down=wind_down)
