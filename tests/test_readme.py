"""The README cannot drift from the code: its config reference and its commands are checked here."""

import re
from pathlib import Path

from cad_recode.config import config_reference_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["bash quickstart.sh", ".venv/bin/python -m pytest"]
    assert (ROOT / "quickstart.sh").exists()


def test_config_reference_lists_every_key_with_its_current_default():
    block = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", README, re.S)
    assert block, "README.md lost its config-reference markers"
    assert block.group(1) == config_reference_markdown(), "run: python scripts/sync_readme.py"


def test_ci_installs_as_the_readme_says_and_runs_its_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in ci and "bash scripts/setup.sh" in README
    assert ".venv/bin/python -m pytest" in ci
