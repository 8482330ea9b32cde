"""Rewrite the README's generated blocks: the config reference (TrainConfig fields) and the quickstart
results (docs/results/quickstart.json, written by scripts/record_quickstart.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_results import QuickstartRecord, quickstart_results_markdown, quickstart_rows_markdown  # noqa: E402

from cad_recode.config import config_reference_markdown  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)


def generated_blocks() -> dict[str, str]:
    """Marker name -> the text between its markers."""
    record = QuickstartRecord.load()
    return {"config-reference": config_reference_markdown(),
            "quickstart-results": quickstart_results_markdown(record),
            "results-quickstart-rows": quickstart_rows_markdown(record)}


def synced(text: str) -> str:
    for name, body in generated_blocks().items():
        text = block(name).sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
    return text


def main() -> int:
    text = README.read_text()
    missing = [name for name in generated_blocks() if not block(name).search(text)]
    if missing:
        print(f"error: README.md has no {', '.join(missing)} markers", file=sys.stderr)
        return 2
    README.write_text(synced(text))
    print("README.md config reference and quickstart results updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
