"""A run's log file (``train_log.jsonl``): one JSON object per line, appended; read back as series.

Shared by every recipe (training, RL) and the curve plots. A resumed run appends,
so a step logged twice keeps its last value.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from cad_recode.model.loading import TRAIN_LOG


def append_log(output_dir: str | os.PathLike, step: int, values: dict) -> None:
    """Append ``{"step": step, **values}`` (numbers and strings only; NaN/inf as null: strict JSON)."""
    kept = {k: v for k, v in values.items() if isinstance(v, (int, float, str))}
    kept = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in kept.items()}
    path = Path(output_dir) / TRAIN_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps({"step": step, **kept}) + "\n")


def read_train_log(output_dir: str | os.PathLike) -> list[dict]:
    path = Path(output_dir) / TRAIN_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in log order; a repeated step keeps its last value; nulls are skipped."""
    by_step: dict[int, float] = {}
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            by_step[int(record["step"])] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]
