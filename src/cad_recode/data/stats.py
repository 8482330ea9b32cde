"""Statistics of a folder of programs (`cad-recode data stats DIR`).

Counts per split, program length (characters, or tokens of a given tokenizer),
how often each primitive and operation occurs, the family mix (from the family
labels of a generated dataset, beside the weights it was drawn with), and the
validity rate: from the manifest of a generated dataset, or measured by running
every program in the sandbox (`execute=True`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cad_recode.data import layout
from cad_recode.data.generator import OPERATION_PATTERNS, count_operations, solid_problem
from cad_recode.data.labels import FamilyMix, family_mix
from cad_recode.errors import InputError, UsageError


@dataclass
class DatasetStats:
    root: str
    counts: dict[str, int]
    length_unit: str  # "characters" or "tokens (<tokenizer>)"
    lengths: dict[str, float]  # min, median, p95, max over all programs
    operations: dict[str, int]  # total occurrences in all programs
    programs_using: dict[str, int]  # programs with at least one occurrence
    validity: float | None = None  # share of programs that yield one valid solid
    validity_source: str = ""  # "manifest", "executed", or "" when unknown
    failures: dict[str, int] = field(default_factory=dict)
    families: FamilyMix | None = None  # None when the programs carry no family labels

    def summary(self) -> str:
        """Human lines for the CLI."""
        total = sum(self.counts.values())
        lines = [f"{self.root}: {total} programs ({', '.join(f'{k} {v}' for k, v in self.counts.items())})"]
        lens = self.lengths
        lines.append(f"length in {self.length_unit}: min {lens['min']:g}, median {lens['median']:g}, "
                     f"p95 {lens['p95']:g}, max {lens['max']:g}")
        lines.append("operations (occurrences / programs using it):")
        width = max(len(name) for name in self.operations)
        lines += [f"  {name:<{width}}  {self.operations[name]:>8}  {self.programs_using[name]:>7}"
                  for name in self.operations]
        if self.families is None:
            lines.append("families: unknown (no family labels in the manifest)")
        else:
            lines.append("families (programs, share, weight drawn with):")
            lines += self.families.lines()
        if self.validity is None:
            lines.append("validity: unknown (no generator manifest; pass --execute to measure it)")
        else:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
            lines.append(f"validity: {100 * self.validity:.1f}% ({self.validity_source}; failures: {reasons})")
        return "\n".join(lines)


def _token_counter(tokenizer_path):
    """A function code -> length, and the name of its unit."""
    if tokenizer_path is None:
        return len, "characters"
    path = Path(tokenizer_path)
    if not path.is_dir():
        raise InputError(f"{path}: no such tokenizer folder; pass --tokenizer a folder with tokenizer.json")
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # transformers raises many kinds for a bad folder
        raise InputError(f"{path}: cannot load a tokenizer ({' '.join(str(err).split())[:200]}); "
                         "pass a folder that transformers.AutoTokenizer can load") from None
    return (lambda code: len(tokenizer(code, add_special_tokens=False)["input_ids"])), f"tokens ({path.name})"


def dataset_stats(root, *, tokenizer=None, execute: bool = False, workers: int = 1,
                  progress: bool = False, profile: str = "strict") -> DatasetStats:
    """Statistics of the programs under `root` (public layout); see the module docstring.

    ``profile``: the sandbox profile ``execute`` runs the programs under (as ``data prepare`` would).
    """
    from cad_recode.data.prepare import find_programs

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {workers!r}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; pass a folder of programs "
                         "(train/batch_XX/N.py, val/N.py, test/N.py)")
    ids = find_programs(root)
    counts = {split: len(ids.get(split, [])) for split in layout.SPLITS}
    codes = []
    for split in layout.SPLITS:
        for rel in ids.get(split, []):
            try:
                codes.append((root / rel).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as err:
                raise InputError(f"{root / rel}: unreadable program ({err}); fix or remove the file") from None
    measure, unit = _token_counter(tokenizer)
    lengths = np.array([measure(code) for code in codes], dtype=float)
    operations = dict.fromkeys(OPERATION_PATTERNS, 0)
    using = dict.fromkeys(OPERATION_PATTERNS, 0)
    for code in codes:
        for name, n in count_operations(code).items():
            operations[name] += n
            using[name] += n > 0
    stats = DatasetStats(
        str(root), counts, unit,
        {"min": float(lengths.min()), "median": float(np.median(lengths)),
         "p95": float(np.percentile(lengths, 95)), "max": float(lengths.max())},
        operations, using, families=family_mix(root),
    )
    if execute:
        from cad_recode.geometry.sandbox import Sandbox

        with Sandbox(workers=workers, profile=profile) as sandbox:
            results = sandbox.map(codes, progress="executing" if progress else False, tessellate=True)
        problems = [solid_problem(r) for r in results]
        for problem in problems:
            if problem:
                stats.failures[problem] = stats.failures.get(problem, 0) + 1
        stats.validity, stats.validity_source = problems.count("") / len(problems), f"executed {len(problems)}"
    else:
        manifest = layout.read_manifest(root)
        if manifest and manifest.get("format") == layout.MANIFEST_FORMAT:
            stats.validity = 1.0 - float(manifest["failure_rate"])
            stats.validity_source = f"generator manifest, {manifest['attempts']} attempts"
            stats.failures = dict(manifest.get("failures", {}))
    return stats
