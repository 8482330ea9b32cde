"""Family labels of generated programs: which kind of part each program draws.

`cad-recode data generate` writes them into the programs folder's ``manifest.json``::

    "families": {
      "names": ["box", "cylinder", ...],          # label index -> family
      "weights": {"box": 0.1, ...},               # the level's mixture weights
      "counts": {"box": 503, ...},                # programs per family, all splits
      "labels": {"train": [0, 4, 2, ...], ...}    # per split, in program index order
    }

Program ``i`` of a split is ``layout.program_path(split, i, batch_size)``, the same
id a prepared dataset stores for its row. A hand-made folder (the style set in
``benchmarks/data/style_set``) names its programs instead: ``"by_id": {"test/x.py": "ring"}``
in place of ``labels``. So `read_family_labels` maps ids to
families for a programs folder, or for a prepared folder (its own ``families``
entry when preparation copied one, else the programs folder named by its ``source``).
A compact list of indices keeps the manifest small at a million programs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FamilyMix:
    """How many programs of each family a dataset holds, beside the weights it was drawn with."""

    counts: dict[str, int]
    weights: dict[str, float]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def share(self, family: str) -> float:
        return self.counts.get(family, 0) / self.total if self.total else 0.0

    def lines(self) -> list[str]:
        """One line per family: count, share and target weight (what `data stats` prints)."""
        width = max(len(name) for name in self.counts)
        return [f"  {name:<{width}}  {n:>8}  {100 * self.share(name):5.1f}%"
                + (f"  (weight {100 * self.weights[name]:.1f}%)" if name in self.weights else "")
                for name, n in self.counts.items()]


def family_manifest(labels_by_split: dict[str, list[str]], weights: dict[str, float]) -> dict:
    """The manifest entry for programs labelled `labels_by_split` (split -> family per program, in order)."""
    names = list(weights)
    index = {name: i for i, name in enumerate(names)}
    every = Counter(label for labels in labels_by_split.values() for label in labels)
    return {
        "names": names, "weights": dict(weights), "counts": {name: every.get(name, 0) for name in names},
        "labels": {split: [index[label] for label in labels] for split, labels in labels_by_split.items()},
    }


def _manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _families_entry(root: Path) -> tuple[dict, int] | None:
    """(families entry, batch_size) of a programs folder, or of the source of a prepared folder."""
    manifest = _manifest(root)
    if manifest is None:
        return None
    if isinstance(manifest.get("families"), dict):
        return manifest["families"], int(manifest.get("batch_size", 1000))
    source = manifest.get("source")
    if isinstance(source, str) and Path(source).resolve() != root.resolve():
        return _families_entry(Path(source))
    return None


def read_family_labels(root) -> dict[str, str]:
    """Program id ("train/batch_00/3.py", "test/7.py") -> family; {} when the data carries no labels."""
    from cad_recode.data.layout import program_path

    found = _families_entry(Path(root))
    if found is None:
        return {}
    entry, batch_size = found
    if "by_id" in entry:
        return dict(entry["by_id"])
    names = entry["names"]
    return {program_path(split, i, batch_size).as_posix(): names[label]
            for split, labels in entry["labels"].items() for i, label in enumerate(labels)}


def family_names(root) -> list[str]:
    """Every family the data could hold (its level's, even those no program drew); [] without labels."""
    found = _families_entry(Path(root))
    return list(found[0]["names"]) if found else []


def family_mix(root) -> FamilyMix | None:
    """The family mix of a programs (or prepared) folder, None when it carries no labels."""
    found = _families_entry(Path(root))
    if found is None:
        return None
    entry, _ = found
    return FamilyMix(dict(entry["counts"]), dict(entry["weights"]))
