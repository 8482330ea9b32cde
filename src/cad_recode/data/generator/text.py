"""Statistics of program text: operation counts (`cad-recode data stats`) and the key of code deduplication."""

from __future__ import annotations

import re

# operation -> regex over program text (the counts `cad-recode data stats` prints)
OPERATION_PATTERNS = {
    "circle": r"\.circle\(", "rect": r"\.rect\(", "segment": r"\.segment\(", "arc": r"\.arc\(",
    "box": r"\.box\(", "cylinder": r"\.cylinder\(", "extrude": r"\.extrude\(", "union": r"\.union\(", "cut": r"\.cut\(",
    "mode='s'": r"mode='s'", "plane XY": r"Workplane\('XY'", "plane YZ": r"Workplane\('YZ'",
    "plane ZX": r"Workplane\('ZX'",
}
_OPERATION_RES = {name: re.compile(pattern) for name, pattern in OPERATION_PATTERNS.items()}


def count_operations(code: str) -> dict[str, int]:
    """How often each primitive and operation of `OPERATION_PATTERNS` occurs in a program."""
    return {name: len(pattern.findall(code)) for name, pattern in _OPERATION_RES.items()}


def normalized_code(code: str) -> str:
    """The code with all whitespace removed: the key of code-level deduplication."""
    return "".join(code.split())
