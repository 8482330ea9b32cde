"""The quickstart's recorded results (docs/results/quickstart.json) and the README text made from them.

``scripts/record_quickstart.py`` writes the record from a quickstart WORKDIR;
``scripts/sync_readme.py`` writes :func:`quickstart_results_markdown` and
:func:`quickstart_rows_markdown` between their README markers; tests/test_readme.py
checks that the README agrees with the record.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "docs" / "results" / "quickstart.json"
SCORE_KEYS = ("count", "valid", "mean_cd", "median_cd", "mean_iou", "invalid_ratio")


@dataclass(frozen=True)
class Scores:
    """One row of eval/summary.json: CD x10^3 (unit cube), IoU and IR as fractions."""

    count: int
    valid: int
    mean_cd: float | None
    median_cd: float | None
    mean_iou: float | None
    invalid_ratio: float

    @classmethod
    def of(cls, summary: dict) -> "Scores":
        missing = [k for k in SCORE_KEYS if k not in summary]
        if missing:
            raise ValueError(f"eval summary lacks {', '.join(missing)}; is it a cad-recode eval summary.json?")
        return cls(**{k: summary[k] for k in SCORE_KEYS})


@dataclass(frozen=True)
class QuickstartRecord:
    """One recorded `bash quickstart.sh` run: what it measured, how long it took, where and when."""

    date: str  # YYYY-MM-DD
    machine: str
    wall_seconds: float  # end to end, setup not counted
    train_seconds: float | None
    eval_seconds: float | None
    num_candidates: int
    refine_evaluations: int
    refined: Scores  # the eval summary (refined when refine_evaluations > 0)
    as_written: Scores | None  # before refinement (summary.json's before_refinement)
    data: str = "simple"  # the generator level the quickstart trained and tested on
    parameters: int = 650_000  # the trained model's (tied embeddings once)
    families: dict[str, Scores] = field(default_factory=dict)  # refined, by family (summary.json's families)
    families_as_written: dict[str, Scores] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = RECORD) -> "QuickstartRecord":
        raw = json.loads(Path(path).read_text())
        raw["refined"] = Scores(**raw["refined"])
        raw["as_written"] = Scores(**raw["as_written"]) if raw.get("as_written") else None
        for key in ("families", "families_as_written"):
            raw[key] = {name: Scores(**s) for name, s in raw.get(key, {}).items()}
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def duration(seconds: float) -> str:
    """699 -> '11 min 39 s'."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _iou(s: Scores) -> str:
    return "–" if s.mean_iou is None or math.isnan(s.mean_iou) else f"{s.mean_iou:.3f}"


def _cd(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _ir(s: Scores) -> str:
    return f"{s.invalid_ratio * 100:g} %"


def quickstart_results_markdown(record: QuickstartRecord) -> str:
    """The Quickstart section's 'what it reaches' paragraph and table."""
    best = f"best of {record.num_candidates}"
    rows = [f"| {best}, refined | {_ir(record.refined)} | {_iou(record.refined)} | {_cd(record.refined.mean_cd)} "
            f"| {_cd(record.refined.median_cd)} |"]
    if record.as_written is not None:
        s = record.as_written
        rows.append(f"| {best}, as the model wrote them | {_ir(s)} | {_iou(s)} | {_cd(s.mean_cd)} | {_cd(s.median_cd)} |")
    times = [f"{duration(record.wall_seconds)} end to end (setup not counted)"]
    if record.train_seconds is not None:
        times.append(f"training {duration(record.train_seconds)}")
    if record.eval_seconds is not None:
        times.append(f"evaluation {duration(record.eval_seconds)}")
    return (
        f"What it reaches (the run recorded in [docs/results/quickstart.json](docs/results/quickstart.json), "
        f"{record.date}, {record.machine}; more in [BENCHMARKS.md](BENCHMARKS.md#the-broad-default-issue-16)): "
        f"{', '.join(times)}; the machine's speed varies. On the first {record.refined.count} held-out test shapes:\n\n"
        "| | IR | mean IoU | mean CD ×10³ | median CD ×10³ |\n|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n| issue 16 target | ≤ 1 % | ≥ 0.90 refined, ≥ 0.80 as written | | ≤ 0.5 refined |\n"
        + family_table(record)
    )


def family_table(record: QuickstartRecord) -> str:
    """IoU by part family (every family's target: 0.80 refined), when the run's data carried family labels."""
    if not record.families:
        return ""
    written = record.families_as_written
    lines = ["", "By family (IoU; issue 16's target for each: ≥ 0.80 refined):", "",
             "| family | shapes | refined | as the model wrote them |", "|---|---|---|---|"]
    for name, s in sorted(record.families.items()):
        lines.append(f"| {name} | {s.count} | {_iou(s)} | {_iou(written[name]) if name in written else '–'} |")
    return "\n".join(lines) + "\n"


def quickstart_rows_markdown(record: QuickstartRecord) -> str:
    """The Results section's table of this project's recorded quickstart run (same columns as the published one)."""
    def row(label: str, s: Scores) -> str:
        iou = "–" if s.mean_iou is None else f"{s.mean_iou * 100:.1f}%"
        mean, median = ("–" if v is None else f"{v:.2f}" for v in (s.mean_cd, s.median_cd))
        return f"| our `{record.data}` test split ({s.count} shapes) | {label} | {iou} | {mean} | {median} " \
               f"| {s.invalid_ratio * 100:.1f}% |"

    minutes = f", {duration(record.train_seconds)} of training" if record.train_seconds is not None else ""
    rows = [row(f"this project's quickstart: tiny {record.parameters / 1e6:.2f}M-parameter Qwen3{minutes} on {record.machine}, "
                f"best of {record.num_candidates}, refined", record.refined)]
    if record.as_written is not None:
        rows.append(row("the same, as the model wrote them (no refinement)", record.as_written))
    return ("| test set | model | IoU | mean CD | median CD | IR |\n|---|---|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\n*Recorded {record.date} in [docs/results/quickstart.json](docs/results/quickstart.json).*\n")
