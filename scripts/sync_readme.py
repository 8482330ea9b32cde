"""Rewrite the README's config reference from the TrainConfig fields (keys, defaults, help)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cad_recode.config import config_reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(<!-- config-reference:start -->\n).*?(<!-- config-reference:end -->)", re.S)


def synced(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + config_reference_markdown() + m.group(2), text)


if __name__ == "__main__":
    text = README.read_text()
    if not BLOCK.search(text):
        sys.exit("README.md has no config-reference markers")
    README.write_text(synced(text))
    print("README.md config reference updated")
