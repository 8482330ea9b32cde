"""The on-disk layout of a generated folder of programs (the public CAD-Recode layout + a test split).

    DIR/manifest.json            what made it (written by `cad-recode data generate`)
    DIR/train/batch_00/0.py      train programs, `batch_size` per batch folder
    DIR/train/batch_01/1000.py
    DIR/val/0.py                 validation programs
    DIR/test/0.py                held-out test programs

Folders of programs from elsewhere (the public v1.5 dataset) have the same
layout and no manifest; :func:`find_programs` lists either.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from cad_recode.atomic import atomic_dir, atomic_file
from cad_recode.errors import InputError, UsageError

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "cad-recode-programs/1"


def split_counts(num: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """How many of `num` programs go to each split (val and test rounded, train the rest)."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise UsageError(f"--val-fraction + --test-fraction must be below 1, got {val_fraction + test_fraction:g}")
    val, test = round(num * val_fraction), round(num * test_fraction)
    return {"train": num - val - test, "val": val, "test": test}


def assign_splits(programs: list[str], counts: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Split programs by a permutation fixed by `seed`: the first ones go to test, then val, then train."""
    order = np.random.default_rng([int(seed), 0x5911]).permutation(len(programs))
    shuffled = [programs[i] for i in order]
    test, val = counts["test"], counts["val"]
    return {"test": shuffled[:test], "val": shuffled[test:test + val], "train": shuffled[test + val:]}


def program_path(split: str, index: int, batch_size: int = 1000) -> Path:
    """Relative path of program `index` of `split`."""
    if split == "train":
        return Path("train", f"batch_{index // batch_size:02d}", f"{index}.py")
    return Path(split, f"{index}.py")


def holds_dataset(path: Path) -> bool:
    """True when `path` looks like a folder of programs (a manifest or a split folder)."""
    return (path / MANIFEST).exists() or any((path / split).is_dir() for split in SPLITS)


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse an existing dataset unless `overwrite`; never replace a folder of something else."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file; pass --out a folder path")
    if not path.exists() or not any(path.iterdir()):
        return
    if not holds_dataset(path):
        raise InputError(f"{path}: folder is not empty and holds no dataset; choose another --out (or empty this one)")
    if not overwrite:
        raise InputError(f"{path}: already holds a dataset; pass --overwrite to replace it or choose another --out")


def write_dataset(out_dir, splits: dict[str, list[str]], manifest: dict, *, batch_size: int = 1000,
                  overwrite: bool = False) -> Path:
    """Write the split programs and `manifest` into a temporary folder, then rename it to `out_dir`."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # an empty folder is as good as none; atomic_dir wants the name free
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for split in SPLITS:
            (tmp / split).mkdir()
            for index, code in enumerate(splits.get(split, [])):
                path = tmp / program_path(split, index, batch_size)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(code, encoding="utf-8")
        with atomic_file(tmp / MANIFEST) as manifest_tmp:
            manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir


def read_manifest(root) -> dict | None:
    """The dataset's manifest, or None when the folder has none (e.g. the public dataset)."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable manifest ({err}); regenerate the dataset with --overwrite") from None


def find_programs(src: Path) -> dict[str, list[str]]:
    """Split -> relative ids ("train/batch_00/1.py") of the ``.py`` files in it, in natural order."""
    if not src.exists():
        raise InputError(f"{src}: source folder does not exist; pass --src a folder of programs (train/batch_XX/N.py, val/N.py)")
    if not src.is_dir():
        raise InputError(f"{src}: is a file, not a folder; pass --src a folder of programs (train/batch_XX/N.py, val/N.py)")
    found: dict[str, list[str]] = {}
    for split in SPLITS:
        ids = [f"{split}/{rel}" for rel in _py_files(src / split)]
        if ids:
            found[split] = sorted(ids, key=natural_key)
    if not found:
        stray = sum(1 for _ in _py_files(src))
        where = f"found {stray} .py files but none under train/, val/ or test/" if stray else "found no .py programs"
        raise InputError(
            f"{src}: {where}; lay programs out as train/batch_XX/N.py, val/N.py, test/N.py"
        )
    return found


def _py_files(folder: Path) -> Iterator[str]:
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_root = Path(root).relative_to(folder)
        for name in files:
            if name.endswith(".py") and not name.startswith("."):
                yield (rel_root / name).as_posix()


def natural_key(text: str) -> tuple:
    """"batch_2/10.py" after "batch_2/9.py"; the raw text breaks ties ("01" vs "1")."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), text
