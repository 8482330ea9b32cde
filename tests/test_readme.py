"""The README cannot drift from the code: its config reference and its commands are checked here."""

import re
from pathlib import Path

from cad_recode.config import config_reference_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# The suite's per-test limit (pyproject's pytest timeout): the quickstart test shares it between its two runs.
SUITE_TIMEOUT = int(re.search(r"^timeout = (\d+)", (ROOT / "pyproject.toml").read_text(), re.M).group(1))


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


def test_the_readme_main_command_runs_end_to_end_on_a_reduced_budget(tmp_path):
    """`bash quickstart.sh` itself, with its documented knobs turned down; then again, reusing every stage."""
    import json
    import os
    import subprocess

    import pytest

    if not (ROOT / ".venv" / "bin" / "cad-recode").exists():
        pytest.skip("needs the .venv that scripts/setup.sh makes (the quickstart runs .venv/bin/cad-recode)")
    work = tmp_path / "tiny"
    env = {
        **os.environ, "WORKDIR": str(work), "QUICKSTART_SKIP_SETUP": "1", "QUICKSTART_PROGRAMS": "60",
        "QUICKSTART_EVAL_LIMIT": "3", "QUICKSTART_EVAL_CANDIDATES": "2", "QUICKSTART_REFINE": "10",
        "QUICKSTART_TRAIN_FLAGS": "--max_steps 3 --eval_steps 3 --save_steps 3 --logging_steps 1 --eval_num_samples 2 "
                                  "--max_new_tokens 16",
    }
    command = next(line for line in README.splitlines() if line.startswith("bash quickstart.sh")).split("#")[0].split()
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=0.65 * SUITE_TIMEOUT)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((work / "eval" / "summary.json").read_text())
    assert summary["count"] == 3 and summary["num_candidates"] == 2 and summary["decoding"]["refine_evaluations"] == 10
    assert (work / "model" / "model.safetensors").is_file() and (work / "model" / "training_curves.png").is_file()
    assert {"code.py", "code.json", "code.png"} <= {p.name for p in (work / "cube").iterdir()}
    tail = first.stdout[first.stdout.rindex("==> done"):]
    assert "| inputs | IoU % |" in tail and str(work / "eval" / "summary.json") in tail  # the table and where things are

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=0.3 * SUITE_TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "programs: reusing" in again.stdout and "train: reusing" in again.stdout


def test_the_main_command_refuses_programs_of_another_generator_version(tmp_path):
    import json
    import os
    import subprocess

    import pytest

    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("needs the .venv that scripts/setup.sh makes")
    work = tmp_path / "old"
    (work / "programs").mkdir(parents=True)
    (work / "programs" / "manifest.json").write_text(json.dumps({"generator_version": "1"}))
    env = {**os.environ, "WORKDIR": str(work), "QUICKSTART_SKIP_SETUP": "1"}
    run = subprocess.run(["bash", "quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert run.returncode == 2 and len(errors) == 1, run.stderr
    assert "generator version 1" in errors[0] and f"remove {work}" in errors[0]
    assert not (work / "data").exists()  # stopped before anything was built on the old programs
