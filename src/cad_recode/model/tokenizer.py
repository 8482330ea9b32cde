"""Code tokenizers: the special tokens the model relies on, and a small BPE for tiny offline runs.

The model never hard-codes token ids. It reads them from whichever tokenizer
is in use (Qwen's real one: <|endoftext|> = 151643, <|im_start|> = 151644; the
small one trained here: 0 and 1) through ``CodeTokens.from_tokenizer``.

``train_code_tokenizer`` builds a byte-level BPE on the training programs with
the Hugging Face ``tokenizers`` library. It pre-tokenizes with Qwen's own split
pattern, which isolates every digit, so "-37" is '-', '3', '7' and numbers are
spelled digit by digit as in the real base model; or, with ``numbers="whole"``,
with that pattern keeping a run of digits together, so that a frequent number
such as "100" becomes one token (programs about 16 % shorter, so cheaper
steps). Any byte sequence encodes (byte-level alphabet), and
decode(encode(code)) == code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from cad_recode.errors import InputError

START_TOKEN = "<|im_start|>"
END_TOKEN = "<|endoftext|>"
CHAT_END_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (END_TOKEN, START_TOKEN, CHAT_END_TOKEN)  # Qwen's order: ids 0, 1, 2 in the small BPE
DEFAULT_VOCAB_SIZE = 512

# Qwen2/Qwen3's pre-tokenizer split: letters run together, every digit on its own.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The same split with a run of digits as one piece, which BPE may then merge into one token.
WHOLE_NUMBER_SPLIT_PATTERN = QWEN_SPLIT_PATTERN.replace(r"|\p{N}|", r"|\p{N}+|")
NUMBER_SPLITS = {"digits": QWEN_SPLIT_PATTERN, "whole": WHOLE_NUMBER_SPLIT_PATTERN}


@dataclass(frozen=True)
class CodeTokens:
    """The three ids the model needs: prompt start, end of program, padding."""

    start_id: int
    end_id: int
    pad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> CodeTokens:
        """Read <|im_start|> and <|endoftext|> by name; pad is the tokenizer's pad or <|endoftext|>.

        Note: the tokenizer's ``eos_token`` is not used, since Qwen's chat
        tokenizers set it to <|im_end|> while programs end with <|endoftext|>.
        """
        ids = {}
        for token in (START_TOKEN, END_TOKEN):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
                raise InputError(
                    f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has no {token} "
                    "token; use a Qwen tokenizer or one made by cad_recode.model.tokenizer.train_code_tokenizer"
                )
            ids[token] = int(token_id)
        pad = tokenizer.pad_token_id
        return cls(start_id=ids[START_TOKEN], end_id=ids[END_TOKEN], pad_id=int(pad) if pad is not None else ids[END_TOKEN])

    @classmethod
    def from_any(cls, tokens_or_tokenizer) -> CodeTokens:
        if isinstance(tokens_or_tokenizer, cls):
            return tokens_or_tokenizer
        return cls.from_tokenizer(tokens_or_tokenizer)

    def strip_rows(self, rows) -> list[list[int]]:
        """Each generated row up to (not including) its first end token."""
        stripped = []
        for row in rows:
            ids = [int(i) for i in row]
            stripped.append(ids[: ids.index(self.end_id)] if self.end_id in ids else ids)
        return stripped


def train_code_tokenizer(
    programs: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    out_dir: str | os.PathLike | None = None,
    *,
    min_frequency: int = 2,
    overwrite: bool = False,
    numbers: str = "digits",
):
    """Train a byte-level BPE on ``programs``; return a ``PreTrainedTokenizerFast``.

    Special tokens: <|endoftext|> (eos and pad) = 0, <|im_start|> = 1, <|im_end|> = 2.
    With ``out_dir`` the usual tokenizer files are written there atomically, and
    ``AutoTokenizer.from_pretrained(out_dir)`` loads them offline. ``numbers``: "digits" (one token a
    digit, as Qwen) or "whole" (a run of digits may merge into one token); the choice is saved in the
    tokenizer's own files, so loading needs no flag.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if numbers not in NUMBER_SPLITS:
        raise InputError(f"numbers={numbers!r}: choose one of {', '.join(NUMBER_SPLITS)}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise InputError(
            f"vocab_size={vocab_size} is too small: the byte alphabet and special tokens need "
            f"{len(alphabet) + len(SPECIAL_TOKENS)}; use at least 300"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(NUMBER_SPLITS[numbers]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    count = 0

    def counted(texts: Iterable[str]):
        nonlocal count
        for text in texts:
            count += 1
            yield text

    tokenizer.train_from_iterator(counted(programs), trainer=trainer)
    if count == 0:
        raise InputError("no training programs given to train_code_tokenizer; pass at least one program")

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END_TOKEN,
        pad_token=END_TOKEN,
        additional_special_tokens=[START_TOKEN, CHAT_END_TOKEN],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    if out_dir is not None:
        from cad_recode.atomic import atomic_dir

        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            fast.save_pretrained(tmp)
    return fast
