"""Static check of a program before it runs: the first of the sandbox's defences, per profile.

``strict`` (the program language the model writes): straight-line code --
imports of ``cadquery`` and ``math``, assignments to names, calls, attribute
reads, arithmetic, comparisons, literals, subscripts, comprehensions,
conditional expressions and ``if`` blocks -- and every attribute, keyword and
cadquery name must be on the allowlists of :mod:`cad_recode.geometry.profiles`.
Rejected: ``def``, ``class``, ``lambda``, loops, ``with``, ``try``, ``raise``,
``global``, ``del``, walrus, annotations, f-strings, ``**`` keyword unpacking;
attribute or item assignment; any ``_`` name; any attribute not on the allowlist
(``wrapped``, ``toVtkPolyData``, ``val``, ...); keywords not on the allowlist
(``fontPath``).

``cadquery`` (ordinary CadQuery): every statement is allowed; imports of the
modules in :data:`~cad_recode.geometry.profiles.CADQUERY_MODULES`; no dunder
names, no ``_``-prefixed attributes, no frame attributes, no file readers
(``import*``, ``load*``, ``read*``, ``open*``), none of
:data:`~cad_recode.geometry.profiles.CADQUERY_FORBIDDEN_ATTRIBUTES`.

Both: none of :data:`~cad_recode.geometry.profiles.FORBIDDEN_NAMES` (``exec``,
``eval``, ``open``, ``getattr``, ...), no ``fontPath``, at most
:data:`MAX_PROGRAM_BYTES`. :class:`ProgramRejected`'s message names the line:
``"line 3: import of 'os' is not allowed (only cadquery and math)"``.

This check is not the boundary: the worker runs the program with a table of
builtins, read-only module views and an import hook, in a fresh process under the
OS confinement. The check makes common failures fast and their reasons readable.
"""

from __future__ import annotations

import ast
import builtins
import re
import string

from cad_recode.geometry.profiles import (
    CADQUERY_FORBIDDEN_ATTRIBUTES, CADQUERY_MODULES, FORBIDDEN_KEYWORDS, FORBIDDEN_NAMES, VIEW_SUBMODULES,
    STRICT_ATTRIBUTES, STRICT_BUILTIN_NAMES, STRICT_CADQUERY_NAMES, STRICT_KEYWORDS, STRICT_MATH_NAMES, Profile, as_profile,
)

MAX_PROGRAM_BYTES = 100_000
"""Programs longer than this (UTF-8 bytes) are rejected; generated programs are ~1 kB."""

ALLOWED_MODULES = ("cadquery", "math")
"""What a strict program may import."""

_FRAME_ATTRIBUTE = re.compile(r"^(gi|cr|ag|f|tb|co)_")
_FILE_ATTRIBUTE = re.compile(r"^(export|import|save|load|read|write|dump|open|parse_?file)", re.IGNORECASE)
_READ_ATTRIBUTE = re.compile(r"^(import|load|read|open|parse_?file|from_?file)", re.IGNORECASE)
_PLAIN_FIELD = re.compile(r"\d*|[A-Za-z]\w*")  # "{}", "{0}", "{width}": no ".attribute", no "[item]"
_ALWAYS_FORBIDDEN_ATTRIBUTES = frozenset({"mro", "format", "format_map", "system", "popen"})
SPECIAL_METHODS = frozenset({"__init__", "__post_init__", "__call__", "__iter__", "__next__", "__len__",
                             "__getitem__", "__repr__", "__str__", "__enter__", "__exit__"})
"""Dunder methods a ``cadquery``-profile class may define (the names only: ``self.__x`` stays refused)."""

_STRICT_NODES: tuple[type[ast.AST], ...] = (
    # statements
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.If, ast.Pass,
    ast.Import, ast.ImportFrom, ast.alias,
    # expressions
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Compare, ast.Call, ast.keyword,
    ast.Attribute, ast.Subscript, ast.Slice, ast.Starred, ast.Name, ast.Constant,
    ast.List, ast.Tuple, ast.Dict, ast.Set,
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
_OTHER_BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_")) - set(STRICT_BUILTIN_NAMES)
_OTHER_PROFILE = " (ordinary CadQuery runs with profile 'cadquery')"


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


def check_tree(tree: ast.Module, profile: Profile | str = Profile.STRICT) -> None:
    """Raise :class:`ProgramRejected` for the first construct ``profile`` does not allow."""
    problem_of = _strict_problem if as_profile(profile) is Profile.STRICT else _cadquery_problem
    try:
        _check(tree, problem_of)
    except RecursionError:
        raise ProgramRejected(None, "program is nested too deeply") from None


def check_program(code: str, profile: Profile | str = Profile.STRICT) -> None:
    """Parse and check ``code``; raises :class:`ProgramRejected` or ``SyntaxError``."""
    check_tree(parse_program(code), profile)


def _check(tree: ast.AST, problem_of) -> None:
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
        problem, descend = problem_of(node)
        if problem and (first is None or (line, column) < first[:2]):
            first = (line, column, problem)
        if descend:
            stack.extend((child, line, column) for child in ast.iter_child_nodes(node))
    if first is not None:
        raise ProgramRejected(first[0] or None, first[2])


# ----------------------------------------------------------------------------- strict


def _strict_problem(node: ast.AST) -> tuple[str | None, bool]:
    """(problem or None, whether to look inside) for one node under the strict profile."""
    if not isinstance(node, _STRICT_NODES):
        word = _NODE_WORDS.get(type(node), f"'{type(node).__name__}' statements")
        return f"{word} not allowed{_OTHER_PROFILE}", False
    if isinstance(node, ast.Import):
        return _strict_import(node), True
    if isinstance(node, ast.ImportFrom):
        return _strict_import_from(node), True
    if isinstance(node, ast.Name):
        problem = _name_problem(node.id, dunder_only=False)
        if problem is None and isinstance(node.ctx, ast.Load) and node.id in _OTHER_BUILTINS:
            problem = f"'{node.id}' is not allowed in the strict profile"
        return problem, True
    if isinstance(node, ast.Attribute):
        if not isinstance(node.ctx, ast.Load):
            return "attribute assignment is not allowed", True
        return _denied_attribute(node.attr, files=_FILE_ATTRIBUTE) or _strict_attribute(node.attr), True
    if isinstance(node, ast.Subscript) and not isinstance(node.ctx, ast.Load):
        return "item assignment is not allowed", True
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and "%" in str(node.value):
        # '%r' % (w,) would print an object, address and all, where repr is refused
        return f"'%' in a string is not allowed in the strict profile{_OTHER_PROFILE}", True
    if isinstance(node, ast.keyword) and node.arg is None:  # f(**{...}) would pass keywords the allowlist never sees
        return f"keyword unpacking (**) is not allowed{_OTHER_PROFILE}", True
    if isinstance(node, ast.keyword):
        if node.arg.startswith("_"):
            return f"keyword '{node.arg}' is not allowed (names may not start with '_')", True
        if node.arg not in STRICT_KEYWORDS:
            return f"keyword '{node.arg}' is not in the strict profile's allowlist{_OTHER_PROFILE}", True
    return None, True


def _strict_import(node: ast.Import) -> str | None:
    for alias in node.names:
        if alias.name not in ALLOWED_MODULES:
            return f"import of '{alias.name}' is not allowed (only cadquery and math)"
        if alias.asname and alias.asname.startswith("_"):
            return f"name '{alias.asname}' is not allowed (names may not start with '_')"
    return None


def _strict_import_from(node: ast.ImportFrom) -> str | None:
    module = "." * node.level + (node.module or "")
    if node.level or node.module not in ALLOWED_MODULES:
        return f"import from '{module}' is not allowed (only cadquery and math)"
    allowed = STRICT_CADQUERY_NAMES if node.module == "cadquery" else STRICT_MATH_NAMES
    for alias in node.names:
        if alias.name == "*":
            return f"'from {module} import *' is not allowed; import names one by one"
        for name in (alias.name, alias.asname):
            if name and name.startswith("_"):
                return f"name '{name}' is not allowed (names may not start with '_')"
        if alias.name not in allowed:
            return f"'{alias.name}' is not in the strict profile's allowlist of {module} names"
    return None


def _strict_attribute(attr: str) -> str | None:
    if attr in STRICT_ATTRIBUTES or attr in STRICT_MATH_NAMES:
        return None
    return f"attribute '{attr}' is not in the strict profile's allowlist{_OTHER_PROFILE}"


# ----------------------------------------------------------------------------- shared and cadquery


def _name_problem(name: str, dunder_only: bool) -> str | None:
    prefix = "__" if dunder_only else "_"
    if name.startswith(prefix) and not (dunder_only and name == "__name__"):
        return f"name '{name}' is not allowed (names may not start with '{prefix}')"
    if name in FORBIDDEN_NAMES:
        return f"'{name}' is not allowed"
    return None


def _denied_attribute(attr: str, files: re.Pattern) -> str | None:
    if attr.startswith("_"):
        return f"attribute '{attr}' is not allowed (names may not start with '_')"
    if _FRAME_ATTRIBUTE.match(attr) or attr in _ALWAYS_FORBIDDEN_ATTRIBUTES:
        return f"attribute '{attr}' is not allowed"
    if files.match(attr):
        return f"attribute '{attr}' is not allowed (programs may not read or write files)"
    return None


def _cadquery_problem(node: ast.AST) -> tuple[str | None, bool]:
    """(problem or None, whether to look inside) for one node under the cadquery profile."""
    if isinstance(node, ast.Import):
        return next(filter(None, (_cadquery_module(a.name) for a in node.names)), None), True
    if isinstance(node, ast.ImportFrom):
        if node.level:
            return f"import from '{'.' * node.level}{node.module or ''}' is not allowed (relative import)", True
        problem = _cadquery_module(node.module or "")
        if problem is None:  # a name imported from a module is that module's attribute, by the same rules
            problem = next(filter(None, (_imported_name_problem(node.module, a.name) for a in node.names)), None)
        return problem, True
    if isinstance(node, ast.Name):
        return _name_problem(node.id, dunder_only=True), True
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return (None if node.name in SPECIAL_METHODS else _name_problem(node.name, dunder_only=True)), True
    if isinstance(node, ast.Attribute):
        if node.attr == "format":
            return (None if _plain_literal_format(node) else "attribute 'format' is allowed only on a string literal "
                    "whose fields name no attribute or item ('{}', '{0}', '{size:.2f}'); or use an f-string"), True
        return _cadquery_attribute(node.attr), True
    if isinstance(node, ast.keyword) and node.arg and (node.arg.startswith("__") or node.arg in FORBIDDEN_KEYWORDS):
        return f"keyword '{node.arg}' is not allowed", True
    return None, True


def _plain_literal_format(node: ast.Attribute) -> bool:
    """``"part {}: {:.1f} mm".format(...)``: ``format`` on a string literal whose fields name no attribute or item.

    ``format`` is refused elsewhere because a field like ``{0.__class__}`` reads attributes no check sees; a
    literal's fields are known here, and plain ones (an index or a name, a conversion, a spec) only format values.
    """
    if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
        return False
    return _plain_fields(node.value.value)


def _plain_fields(template: str, depth: int = 0) -> bool:
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:  # malformed: it would fail when run anyway
        return False
    for _, name, spec, _ in fields:
        if name is None:
            continue
        if not _PLAIN_FIELD.fullmatch(name) or (spec and (depth > 0 or not _plain_fields(spec, depth + 1))):
            return False
    return True


def _cadquery_attribute(attr: str) -> str | None:
    problem = _denied_attribute(attr, files=_READ_ATTRIBUTE)
    if problem is None and attr in CADQUERY_FORBIDDEN_ATTRIBUTES:
        problem = f"attribute '{attr}' is not allowed"
    return problem


def _imported_name_problem(module: str, name: str) -> str | None:
    if name == "*":  # numpy's readers (load, genfromtxt, ...) would arrive as plain names no check sees
        return f"'from {module} import *' is not allowed (import the names you use)" if module == "numpy" else None
    return _name_problem(name, dunder_only=True) or _cadquery_attribute(name)


def _cadquery_module(name: str) -> str | None:
    top, _, rest = name.partition(".")
    if top in CADQUERY_MODULES and (not rest or rest in VIEW_SUBMODULES.get(top, ())):
        return None
    submodules = ", ".join(f"{top}.{{{','.join(subs)}}}" for top, subs in VIEW_SUBMODULES.items())
    return f"import of '{name}' is not allowed (only {', '.join(CADQUERY_MODULES)}, and {submodules})"
