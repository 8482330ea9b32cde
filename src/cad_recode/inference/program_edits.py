"""Structural edits refinement may try on a program: drop a feature, hollow a solid body.

A small model's structural misses come in two common kinds: a feature the part
does not have (a bore in a solid cylinder, a boss on a plain plate) and the
opposite, a solid where the part is a thin-walled tube or frame. Each edit here
is one span of the program's text replaced by another, found from the program's
syntax tree; :mod:`cad_recode.inference.refine` runs them in the sandbox and keeps
one only when the solid comes closer to the input points.

- removals: a ``.cut(...)`` or ``.union(...)`` of a second body, or a ``mode='s'``
  sketch element with the ``.push(...)`` that places it;
- hollowings: a one-element body, ``.workplane(offset=h/2).cylinder(h,r)``,
  ``.workplane(offset=h/2).box(a,b,h)`` or ``.sketch().circle(r)`` /
  ``.sketch().rect(a,b)``, given a concentric inner cut at a few wall thicknesses
  (the numbers are fitted afterwards), written the generator's way:
  ``.sketch().circle(r).circle(r2,mode='s').finalize().extrude(h)``.

Edits depend only on the program's structure, never on its numbers' values: two
programs that differ only in their numbers get the same list, in the same order.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from cad_recode.errors import UsageError

# body operations whose argument is a whole second body: dropping the call drops that body
BODY_OPERATIONS = {"cut", "union"}
# the locations a subtractive sketch element is placed at: dropped with it
LOCATION_CALLS = {"push"}
# hollowing: the inner cut's size as a fraction of the body's (radius, or the shorter side)
HOLLOW_FRACTIONS = (0.92, 0.84, 0.7, 0.5)


@dataclass(frozen=True)
class Edit:
    """Replace ``code[start:end]`` (``old``) by ``new``; an empty ``new`` removes."""

    start: int
    end: int
    old: str
    new: str

    def apply(self, code: str) -> str:
        return code[:self.start] + self.new + code[self.end:]

    def describe(self) -> str:
        return f"removed {self.old}" if not self.new else f"{self.old} -> {self.new}"


def structure_edits(code: str, hollow: bool = True) -> list[Edit]:
    """Every removal, then (``hollow``) every hollowing, each in program order.

    ``UsageError`` if Python cannot parse the program.
    """
    program = _Program(code)
    return program.removals() + (program.hollowings() if hollow else [])


class _Program:
    """A program's syntax tree with character offsets."""

    def __init__(self, code: str):
        try:
            self.tree = ast.parse(code)
        except SyntaxError as err:
            raise UsageError(f"cannot read the program's steps: {err}") from None
        self.code = code
        self.line_starts = [0]
        for line in code.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.calls = sorted((node for node in ast.walk(self.tree) if _method_call(node)),
                            key=lambda node: (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset))

    def end(self, node: ast.AST) -> int:
        return self._offset(node.end_lineno, node.end_col_offset)

    def _offset(self, line: int, column: int) -> int:  # ast columns count UTF-8 bytes
        start = self.line_starts[line - 1]
        text = self.code[start:self.line_starts[line] if line < len(self.line_starts) else len(self.code)]
        return start + len(text.encode("utf-8")[:column].decode("utf-8", "replace"))

    def edit(self, start: int, end: int, new: str) -> Edit:
        return Edit(start, end, self.code[start:end], new)

    def removals(self) -> list[Edit]:
        edits = []
        for call in self.calls:
            subtractive = _keyword(call, "mode") == "s"
            if call.func.attr not in BODY_OPERATIONS and not subtractive:
                continue
            kept = call.func.value  # the chain before ".name(...)" stays
            if subtractive and _method_call(kept) and kept.func.attr in LOCATION_CALLS:
                kept = kept.func.value
            edits.append(self.edit(self.end(kept), self.end(call), ""))
        return sorted(edits, key=lambda e: e.start)

    def hollowings(self) -> list[Edit]:
        edits = []
        for call in self.calls:
            args = [_integer(a) for a in call.args]
            if None in args or call.keywords:
                continue
            inner = call.func.value
            if call.func.attr in ("cylinder", "box") and _centred_workplane(inner) \
                    and len(args) == (2 if call.func.attr == "cylinder" else 3):
                # the centred primitive from the workplane up: the same solid as its sketch extruded by h;
                # cylinder(h, r), box(a, b, h)
                height, outline = (args[0], args[1:]) if call.func.attr == "cylinder" else (args[-1], args[:-1])
                start = self.end(inner.func.value)
                shape = "circle" if call.func.attr == "cylinder" else "rect"
                edits += [self.edit(start, self.end(call), f".sketch().{shape}({_join(outline)})"
                                                           f".{shape}({_join(cut)},mode='s').finalize().extrude({height})")
                          for cut in _inner_cuts(shape, outline)]
            elif call.func.attr in ("circle", "rect") and _method_call(inner) and inner.func.attr == "sketch" \
                    and len(args) == (1 if call.func.attr == "circle" else 2) and self._ends_sketch(call):
                at = self.end(call)
                edits += [self.edit(at, at, f".{call.func.attr}({_join(cut)},mode='s')")
                          for cut in _inner_cuts(call.func.attr, args)]
        return edits

    def _ends_sketch(self, element: ast.Call) -> bool:
        """``element`` is the sketch's only element: ``.finalize()`` follows it."""
        return any(call.func.attr == "finalize" and call.func.value is element for call in self.calls)


def _method_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)


def _centred_workplane(node: ast.AST) -> bool:
    """``.workplane(offset=h/2)``: a primitive after it spans 0..h along the plane's normal."""
    if not (_method_call(node) and node.func.attr == "workplane" and len(node.keywords) == 1):
        return False
    offset = node.keywords[0]
    return (offset.arg == "offset" and isinstance(offset.value, ast.BinOp) and isinstance(offset.value.op, ast.Div)
            and isinstance(offset.value.right, ast.Constant) and offset.value.right.value == 2)


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def _integer(node: ast.AST) -> int | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _integer(node.operand)
        return None if value is None else -value
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def _inner_cuts(shape: str, outline: list[int]) -> list[list[int]]:
    """The inner outlines tried: a circle's radius, or a rectangle less an even wall on every side."""
    if shape == "circle":
        return [[round(outline[0] * f)] for f in HOLLOW_FRACTIONS]
    walls = [max(1, round(min(abs(v) for v in outline) * (1 - f) / 2)) for f in HOLLOW_FRACTIONS]
    return [[abs(v) - 2 * wall for v in outline] for wall in walls]


def _join(values: list[int]) -> str:
    return ",".join(str(v) for v in values)
