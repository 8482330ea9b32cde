"""Static check of a CadQuery program before it runs: the first of the sandbox's defences.

A CAD-Recode program is straight-line code: imports of ``cadquery`` and ``math``,
assignments, calls, attribute access, arithmetic, comparisons, literals,
subscripts, comprehensions, conditional expressions and ``if`` blocks.
:func:`check_program` walks the ``ast`` and accepts exactly that; everything else
is rejected with :class:`ProgramRejected`, whose message names the line:
``"line 3: import of 'os' is not allowed (only cadquery and math)"``.

Rejected on purpose:

* imports other than ``import cadquery [as x]``, ``import math [as x]``,
  ``from cadquery import Name`` and ``from math import name`` (no ``*``);
* ``def``, ``class``, ``lambda``, loops, ``with``, ``try``, ``raise``, ``global``,
  ``del``, ``assert``, ``async``/``await``, ``yield``, walrus, annotations: nothing
  that defines a function (so no recursion), loops forever or catches the
  sandbox's own timeout;
* any name or attribute that starts with ``_`` (``__class__``, ``__import__``, ...);
* builtins that reach the interpreter: ``exec``, ``eval``, ``open``, ``compile``,
  ``getattr`` and friends (see :data:`FORBIDDEN_NAMES`);
* attributes that reach interpreter frames (``gi_frame``, ``f_globals``, ...), do
  string formatting by attribute name (``format``) or touch files (``export*``,
  ``import*``, ``save``, ``load``, ...), see :func:`_attribute_problem`;
* programs larger than :data:`MAX_PROGRAM_BYTES`.

This check is not the only defence: the worker also runs the program with a
whitelist of builtins, an import hook and OS resource limits. It is what makes
the common failures fast and their reasons readable.
"""

from __future__ import annotations

import ast
import re

MAX_PROGRAM_BYTES = 100_000
"""Programs longer than this (UTF-8 bytes) are rejected; generated programs are ~1 kB."""

ALLOWED_MODULES = ("cadquery", "math")

FORBIDDEN_NAMES = frozenset(
    {
        "exec", "eval", "open", "compile", "getattr", "setattr", "delattr", "hasattr",
        "globals", "locals", "vars", "dir", "input", "breakpoint", "exit", "quit", "help",
        "memoryview", "type", "object", "super", "classmethod", "staticmethod", "property",
        "copyright", "credits", "license", "format",
    }
)
"""Names that would reach the interpreter, files or attributes by string."""

_FRAME_ATTRIBUTE = re.compile(r"^(gi|cr|ag|f|tb|co)_")
_FILE_ATTRIBUTE = re.compile(r"^(export|import|save|load|read|write|dump|open|parse_?file)", re.IGNORECASE)
_FORBIDDEN_ATTRIBUTES = frozenset({"mro", "format", "format_map", "system", "popen"})

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    # statements
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.If, ast.Pass,
    ast.Import, ast.ImportFrom, ast.alias,
    # expressions
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Compare, ast.Call, ast.keyword,
    ast.Attribute, ast.Subscript, ast.Slice, ast.Starred, ast.Name, ast.Constant,
    ast.List, ast.Tuple, ast.Dict, ast.Set, ast.JoinedStr, ast.FormattedValue,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    # contexts and operators
    ast.Load, ast.Store, ast.boolop, ast.operator, ast.unaryop, ast.cmpop,
)

# What a rejected construct is called in the message.
_NODE_WORDS = {
    ast.FunctionDef: "function definitions (def)", ast.AsyncFunctionDef: "function definitions (async def)",
    ast.ClassDef: "class definitions", ast.Lambda: "lambda", ast.While: "while loops",
    ast.For: "for loops (use a comprehension)", ast.AsyncFor: "async for loops", ast.With: "with blocks",
    ast.AsyncWith: "async with blocks", ast.Try: "try blocks", ast.Raise: "raise", ast.Global: "global",
    ast.Nonlocal: "nonlocal", ast.Delete: "del", ast.Assert: "assert", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield from", ast.NamedExpr: "assignment expressions (:=)",
    ast.AnnAssign: "annotated assignments", ast.Return: "return", ast.Break: "break",
    ast.Continue: "continue", ast.Match: "match statements",
}


class ProgramRejected(ValueError):
    """The program failed the static check; the message is ``"line N: <reason>"``."""

    def __init__(self, line: int | None, reason: str):
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line else reason)


def parse_program(code: str) -> ast.Module:
    """Parse ``code``; raises ``SyntaxError`` (with ``lineno``) or :class:`ProgramRejected`.

    Oversized and pathologically nested programs are rejected here so that the
    parser itself cannot be driven into a recursion or memory failure.
    """
    if not isinstance(code, str):
        raise ProgramRejected(None, f"a program must be a str, got {type(code).__name__}")
    size = len(code.encode("utf-8", "surrogatepass"))
    if size > MAX_PROGRAM_BYTES:
        raise ProgramRejected(None, f"program is {size} bytes; the limit is {MAX_PROGRAM_BYTES}")
    if "\x00" in code:
        line = code.count("\n", 0, code.index("\x00")) + 1
        raise ProgramRejected(line, "program contains a NUL byte")
    try:
        return ast.parse(code, mode="exec")
    except (RecursionError, MemoryError):
        raise ProgramRejected(None, "program is nested too deeply to parse") from None


def check_tree(tree: ast.Module) -> None:
    """Raise :class:`ProgramRejected` for the first construct outside the allowed subset."""
    try:
        _check(tree)
    except RecursionError:
        raise ProgramRejected(None, "program is nested too deeply") from None


def check_program(code: str) -> None:
    """Parse and check ``code``; raises :class:`ProgramRejected` or ``SyntaxError``."""
    check_tree(parse_program(code))


def _check(tree: ast.AST) -> None:
    # Walk with an explicit stack, so deep nesting cannot overflow Python's recursion, and
    # report the problem a reader meets first: statements at their start, expressions at
    # their end (``open(f).read()`` is about ``open``, not ``read``).
    first: tuple[int, int, str] | None = None
    stack: list[tuple[ast.AST, int, int]] = [(tree, 0, 0)]  # node, and its parent's position
    while stack:
        node, line, column = stack.pop()
        if hasattr(node, "lineno"):  # contexts and operators have no position: use the parent's
            line = node.lineno
            column = (node.end_col_offset if isinstance(node, ast.expr) else node.col_offset) or 0
        problem = _node_problem(node)
        if problem:
            if first is None or (line, column) < first[:2]:
                first = (line, column, problem)
            if not isinstance(node, _ALLOWED_NODES):
                continue  # what is inside a rejected construct does not matter
        stack.extend((child, line, column) for child in ast.iter_child_nodes(node))
    if first is not None:
        raise ProgramRejected(first[0] or None, first[2])


def _node_problem(node: ast.AST) -> str | None:
    if not isinstance(node, _ALLOWED_NODES):
        word = _NODE_WORDS.get(type(node), f"'{type(node).__name__}' statements")
        return f"{word} not allowed"
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                return f"import of '{alias.name}' is not allowed (only cadquery and math)"
            if alias.asname and alias.asname.startswith("_"):
                return f"name '{alias.asname}' is not allowed (names may not start with '_')"
    elif isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        if node.level or node.module not in ALLOWED_MODULES:
            return f"import from '{module}' is not allowed (only cadquery and math)"
        for alias in node.names:
            if alias.name == "*":
                return f"'from {module} import *' is not allowed; import names one by one"
            for name in (alias.name, alias.asname):
                if name and name.startswith("_"):
                    return f"name '{name}' is not allowed (names may not start with '_')"
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            return f"name '{node.id}' is not allowed (names may not start with '_')"
        if node.id in FORBIDDEN_NAMES:
            return f"'{node.id}' is not allowed"
    elif isinstance(node, ast.Attribute):
        return _attribute_problem(node.attr)
    elif isinstance(node, ast.keyword) and node.arg and node.arg.startswith("_"):
        return f"keyword '{node.arg}' is not allowed (names may not start with '_')"
    return None


def _attribute_problem(attr: str) -> str | None:
    if attr.startswith("_"):
        return f"attribute '{attr}' is not allowed (names may not start with '_')"
    if _FRAME_ATTRIBUTE.match(attr) or attr in _FORBIDDEN_ATTRIBUTES:
        return f"attribute '{attr}' is not allowed"
    if _FILE_ATTRIBUTE.match(attr):
        return f"attribute '{attr}' is not allowed (programs may not read or write files)"
    return None
