"""Ending best-of-N candidates that run away from their siblings.

Best-of-N generates a group of N rows per input in one batch, and a batch runs
as long as its longest row. One row that never writes <|endoftext|> keeps the
whole batch going to ``max_new_tokens`` (768), although a program cut there is
never valid. :class:`RunawayStop` ends such a row early, by one rule:

    once at least half of its group has finished, a row that is still running
    and is already longer than ``factor`` x the longest finished sibling ends.

Rows are grouped in batch order (rows ``g*N .. g*N+N-1`` are group ``g``), as
the callers lay out their candidates. A group of one is never cut, so greedy
decoding of single candidates is unchanged. A cut row is reported in
:attr:`RunawayStop.cut` (with pad = <|endoftext|> its padding would otherwise
look like a normal end); it counts as an unfinished, invalid candidate.
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteria

DEFAULT_RUNAWAY_FACTOR = 2.0


class RunawayStop(StoppingCriteria):
    """A stopping criterion for grouped candidates; ``cut[i]`` is True for the rows it ended."""

    def __init__(self, group_size: int, end_id: int, factor: float = DEFAULT_RUNAWAY_FACTOR):
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if factor <= 1:
            raise ValueError(f"factor must be > 1 (a row longer than its finished siblings), got {factor}")
        self.group_size, self.end_id, self.factor = group_size, end_id, factor
        self.cut: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        rows, length = input_ids.shape
        if self.cut is None:
            if rows % self.group_size:
                raise ValueError(f"{rows} rows do not split into groups of {self.group_size}")
            self.cut = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        if self.group_size == 1 or length == 0:
            return self.cut.clone()
        is_end = input_ids == self.end_id
        # a row cut earlier may be padded with the end id: it has not finished
        finished = is_end.any(dim=1) & ~self.cut
        finished_length = torch.where(finished, is_end.int().argmax(dim=1), 0)
        groups = (-1, self.group_size)
        longest = finished_length.view(groups).amax(dim=1, keepdim=True)
        half_done = 2 * finished.view(groups).sum(dim=1, keepdim=True) >= self.group_size
        runaway = (~finished).view(groups) & half_done & (length > self.factor * longest)
        self.cut |= runaway.view(-1)
        return self.cut.clone()
