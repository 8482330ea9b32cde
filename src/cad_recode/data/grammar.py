"""The program grammar: load it for a coordinate frame, and check a program against it.

The language (``program_grammar.gbnf`` beside this module) is the CadQuery subset
the generator writes at every complexity level, widened to the public CAD-Recode
v1.5 style. Numbers are integers or half-integers (``-38``, ``55.5``). A size
(radius, width, box side, extrusion depth, workplane offset) is at most
``size_limit(frame)`` = 2 x frame, the full extent of a part; a coordinate
(sketch point, ``moveTo``, workplane origin) is at most ``coordinate_limit(frame)``
= 2.5 x frame: the subtractive outlines and arc middles of ``full`` parts hang
past the frame (up to 206 at frame 100: one program in 3500 passes 200, about
4 % pass 100). So ``2000`` or ``1e5`` cannot be written at frame 100.

``check_program`` parses a whole program with xgrammar's matcher (the library
that also enforces the grammar while decoding, see
``cad_recode.model.constrained``) and, for a program outside the language,
reports the offset of the first character no valid program can have there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cad_recode.data.generator import EXTENT

GRAMMAR_FILE = Path(__file__).with_name("program_grammar.gbnf")
DEFAULT_FRAME = EXTENT // 2  # the data's coordinate frame: [-100, 100]


def _check_frame(frame) -> int:
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 1:
        raise ValueError(f"frame must be a positive integer (the model's coordinate half-extent), got {frame!r}")
    return frame


def size_limit(frame: int = DEFAULT_FRAME) -> int:
    """The largest size literal (radius, side, depth, offset) for a model trained in [-frame, frame]."""
    return 2 * _check_frame(frame)


def coordinate_limit(frame: int = DEFAULT_FRAME) -> int:
    """The largest coordinate magnitude (points, moveTo, origins) for a model trained in [-frame, frame]."""
    return 5 * _check_frame(frame) // 2


def integer_alternatives(limit: int, nonzero: bool = False) -> list[str]:
    """GBNF alternatives that match exactly the decimal integers 0..limit (1..limit when `nonzero`)."""
    digits = str(limit)
    alternatives = [] if nonzero else ['"0"']
    alternatives += ["[1-9]" + "[0-9]" * (length - 1) for length in range(1, len(digits))]
    # as many digits as the limit: equal to it up to position i, smaller at i, anything after
    for i, digit in enumerate(digits):
        low, high = (1 if i == 0 else 0), int(digit) - 1
        if high < low:
            continue
        head = f'"{digits[:i]}" ' if i else ""
        choice = f"[{low}-{high}]" if high > low else f'"{low}"'
        alternatives.append(head + choice + "[0-9]" * (len(digits) - i - 1))
    alternatives.append(f'"{digits}"')
    return alternatives


def number_rules(frame: int = DEFAULT_FRAME) -> str:
    """The rules ``num`` (a signed coordinate), ``pos`` (a positive size) and ``snz`` (a signed size)."""
    coordinate, size = coordinate_limit(frame), size_limit(frame)
    # the integer part of a half runs to limit - 1 (the largest half is limit - 0.5)
    return (
        f'num ::= "-"? coordinate\n'
        f'snz ::= "-"? pos\n'
        f'coordinate ::= {" | ".join(integer_alternatives(coordinate))}'
        f' | ({" | ".join(integer_alternatives(coordinate - 1))}) ".5"\n'
        f'pos ::= {" | ".join(integer_alternatives(size, nonzero=True))}'
        f' | ({" | ".join(integer_alternatives(size - 1))}) ".5"\n'
    )


@lru_cache(maxsize=8)
def program_grammar(frame: int = DEFAULT_FRAME) -> str:
    """The full grammar text (GBNF/EBNF, root rule ``root``) for a model trained in [-frame, frame]."""
    return defined_names_only(GRAMMAR_FILE.read_text(encoding="utf-8")) + "\n" + number_rules(frame)


MAX_WORKPLANES = 10  # w0 .. w9
_RULE = re.compile(r"^([a-z_0-9]+) ::= (.*)$")
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')  # literals and character classes
_NAME = re.compile(r"[a-z_][a-z_0-9]*")


def defined_names_only(text: str) -> str:
    """The grammar with ``wp`` meaning "a workplane defined so far".

    A context-free grammar cannot remember names, but it can count: ``after_wK`` follows the K-th
    workplane (``w{K-1}``) and goes on with ``w{K}`` or with ``r=`` and ``body_K``, and every rule that
    reaches ``wp`` is copied once per count K, with ``wp_K`` the names ``w0`` .. ``w{K-1}``.
    """
    lines = text.splitlines()
    rules = {m[1]: m[2] for m in map(_RULE.match, lines) if m}
    uses = {name: set(_NAME.findall(_QUOTED.sub(" ", body))) for name, body in rules.items()}
    naming = {"wp"}
    while True:  # the rules that reach wp: each needs a copy per count of workplanes
        grown = naming | {name for name, used in uses.items() if used & naming}
        if grown == naming:
            break
        naming = grown
    out = []
    for line in lines:
        match = _RULE.match(line)
        if not match or match[1] not in naming:
            out.append(line)
            continue
        for count in range(1, MAX_WORKPLANES + 1):
            if match[1] == "wp":
                out.append(f"wp_{count} ::= " + " | ".join(f'"w{i}"' for i in range(count)))
            else:
                out.append(f"{match[1]}_{count} ::= {_with_count(match[2], naming, count)}")
    for count in range(1, MAX_WORKPLANES + 1):
        more = f' | "w{count}" workplane after_w{count}' if count < MAX_WORKPLANES else ""
        out.append(f'after_w{count - 1} ::= "r=" body_{count}{more}')
    return "\n".join(out) + "\n"


def _with_count(body: str, naming: set[str], count: int) -> str:
    """``body`` with each reference to a rule in ``naming`` made its copy for ``count`` workplanes."""
    pieces, last = [], 0
    for quoted in _QUOTED.finditer(body):  # rule names outside literals only: ".face(" stays as it is
        pieces.append(_NAME.sub(lambda m: f"{m[0]}_{count}" if m[0] in naming else m[0], body[last:quoted.start()]))
        pieces.append(quoted[0])
        last = quoted.end()
    pieces.append(_NAME.sub(lambda m: f"{m[0]}_{count}" if m[0] in naming else m[0], body[last:]))
    return "".join(pieces)


@dataclass(frozen=True)
class GrammarCheck:
    """Whether a program is in the language; if not, where it first leaves it."""

    ok: bool
    position: int | None = None  # offset of the first character no program can have there
    line: int | None = None  # 1-based line and column of `position`
    column: int | None = None
    complete_prefix: bool = False  # the text is a valid start that ends too early (e.g. cut off)

    def describe(self, code: str) -> str:
        """One line for a report: 'ok', or where and what the first bad character is."""
        if self.ok:
            return "ok"
        if self.complete_prefix:
            return f"program ends early at line {self.line}, column {self.column}: it stops mid-statement"
        bad = code[self.position : self.position + 12]
        return f"not in the program grammar at line {self.line}, column {self.column}: {bad!r}"


@lru_cache(maxsize=8)
def _compiled(frame: int):
    import xgrammar

    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo([]), max_threads=1)
    return compiler.compile_grammar(xgrammar.Grammar.from_ebnf(program_grammar(frame)))


def _accepts(frame: int, text: str) -> tuple[bool, bool]:
    """(text is a prefix of some program, text is a whole program)."""
    import xgrammar

    matcher = xgrammar.GrammarMatcher(_compiled(frame), terminate_without_stop_token=True)
    if not matcher.accept_string(text):
        return False, False
    # terminated: the root rule is complete here (it may still go on with its optional newline)
    return True, matcher.is_terminated()


def check_program(code: str, frame: int = DEFAULT_FRAME) -> GrammarCheck:
    """Parse `code` with the program grammar of `frame`; see :class:`GrammarCheck`."""
    prefix_ok, whole = _accepts(frame, code)
    if whole:
        return GrammarCheck(True)
    if prefix_ok:
        position = len(code)
    else:
        # prefixes of a program are accepted and the rest are not: binary search the longest good one
        good, bad = 0, len(code)
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if _accepts(frame, code[:middle])[0] else (good, middle)
        position = good
    line = code.count("\n", 0, position) + 1
    column = position - (code.rfind("\n", 0, position) + 1) + 1
    return GrammarCheck(False, position, line, column, complete_prefix=prefix_ok)


def in_grammar(code: str, frame: int = DEFAULT_FRAME) -> bool:
    """True when `code` is a whole program of the language."""
    return _accepts(frame, code)[1]
