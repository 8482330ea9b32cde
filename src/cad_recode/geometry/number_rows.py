"""Rows of numbers from text, read without an object per number: building lists of string tokens took 180 times
the file's size (a 40 MB file of one number a line: 7.2 GB). Text point clouds and ascii PCD files use it."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np

from cad_recode.errors import InputError

_BLANKS = re.compile(r"[ \t\n\v\f]+")  # what separates values: the bytes _row_widths counts as blank


def number_rows(text: str, path: Path, *, point_count_line: bool = False) -> np.ndarray:
    """The whitespace-separated numbers of ``text`` as rows, one a line, every line as wide as the first;
    a message naming the first line that is not numbers or not as wide. ``point_count_line``: a first
    line holding only the number of rows that follow (a .pts file's) is dropped."""
    lines, widths = _row_widths(text)
    if not len(lines):
        raise InputError(f"{path}: has no data rows (only blank or comment lines); write one 'x y z' point a line")
    values = _numbers(text, int(widths.sum()), path)
    if point_count_line and widths[0] == 1 and values[0] == len(lines) - 1:
        lines, widths, values = lines[1:], widths[1:], values[1:]
        if not len(lines):
            raise InputError(f"{path}: has a point count but no points; write one 'x y z' point a line")
    uneven = np.flatnonzero(widths != widths[0])
    if len(uneven):
        row = uneven[0]
        raise InputError(
            f"{path}: line {lines[row] + 1} has {widths[row]} values but line {lines[0] + 1} has {widths[0]}; "
            "every row needs the same columns (x y z first)"
        )
    return values.reshape(-1, int(widths[0]))


def _row_widths(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(0-based line numbers, values on each) of the lines that hold values, counted over the bytes at once."""
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if not len(data):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    blank = np.isin(data, np.frombuffer(b" \t\n\v\f", dtype=np.uint8))
    starts = ~blank
    starts[1:] &= blank[:-1]  # a value starts after a blank (or at the very beginning)
    line = np.cumsum(data == ord("\n"), dtype=np.int32)  # 4 bytes a character: the largest array here
    counts = np.bincount(line[starts], minlength=int(line[-1]) + 1)
    lines = np.flatnonzero(counts)
    return lines, counts[lines]


def _numbers(text: str, expected: int, path: Path) -> np.ndarray:
    """All values of the text, in order: parsed by NumPy in one pass, or, where it stops (a spelling it does not
    read, or a word), line by line, which names the first line that is not numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(text, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            values = None
    if values is not None and len(values) == expected:
        return values
    values, filled = np.empty(expected, dtype=np.float64), 0
    for number, line in enumerate(io.StringIO(text), start=1):
        tokens = [t for t in _BLANKS.split(line) if t]
        try:
            values[filled: filled + len(tokens)] = [float(t) for t in tokens]
        except ValueError:
            raise InputError(
                f"{path}: line {number} is not numbers: {' '.join(tokens)[:60]!r}; "
                "write 'x y z' numbers a line and start comments with #"
            ) from None
        filled += len(tokens)
    return values
