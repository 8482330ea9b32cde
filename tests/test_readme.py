"""The README cannot drift from the code: its config reference and its commands are checked here."""

import json
import re
import sys
from pathlib import Path

import pytest

from cad_recode.config import config_reference_markdown

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/readme_results.py, record_quickstart.py, sync_readme.py
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


def test_readme_quickstart_results_agree_with_the_recorded_run():
    from readme_results import QuickstartRecord, duration
    from sync_readme import block, generated_blocks

    for name, body in generated_blocks().items():
        found = block(name).search(README)
        assert found, f"README.md lost its {name} markers"
        assert README[found.end(1):found.start(2)] == body, "run: python scripts/sync_readme.py"
    record = QuickstartRecord.load()
    quick = block("quickstart-results").search(README).group(0)
    assert duration(record.wall_seconds) in quick and f"first {record.refined.count} held-out" in quick
    assert f"| best of {record.num_candidates}, refined | " in quick
    assert f"{record.refined.mean_iou:.3f} | {record.refined.mean_cd:.3f} | {record.refined.median_cd:.3f} |" in quick
    rows = block("results-quickstart-rows").search(README).group(0)
    assert f"| {record.refined.mean_iou * 100:.1f}% | {record.refined.mean_cd:.2f} |" in rows
    assert "11 min 39 s end to end" not in README.replace(quick, "")  # no figure quoted outside the blocks


def test_record_quickstart_writes_the_eval_summary_and_times(tmp_path, capsys):
    from readme_results import QuickstartRecord, Scores, quickstart_results_markdown
    from record_quickstart import main

    summary = {"count": 20, "valid": 19, "mean_cd": 0.61, "median_cd": 0.35, "mean_iou": 0.925, "invalid_ratio": 0.05,
               "skipped": 0, "invalid_kinds": {}, "num_candidates": 4, "limit": 20, "seed": 0,
               "decoding": {"refine_evaluations": 120},
               "before_refinement": {"count": 20, "valid": 19, "mean_cd": 2.1, "median_cd": 1.2, "mean_iou": 0.8,
                                     "invalid_ratio": 0.05}}
    (tmp_path / "tiny" / "eval").mkdir(parents=True)
    (tmp_path / "tiny" / "eval" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "tiny" / "programs").mkdir()
    (tmp_path / "tiny" / "programs" / "manifest.json").write_text(json.dumps({"complexity": "broad"}))
    save_weights(tmp_path / "tiny" / "model", {"a": (3, 4), "b": (5,)})
    out = tmp_path / "quickstart.json"
    assert main([str(tmp_path / "tiny"), "--wall_seconds", "793", "--train_seconds", "400", "--machine", "box",
                 "--date", "2026-12-01", "--output", str(out)]) == 0
    record = QuickstartRecord.load(out)
    assert record.refined == Scores(20, 19, 0.61, 0.35, 0.925, 0.05) and record.as_written.mean_iou == 0.8
    assert (record.wall_seconds, record.eval_seconds, record.num_candidates, record.refine_evaluations) == (793, None,
                                                                                                           4, 120)
    text = quickstart_results_markdown(record)
    assert "13 min 13 s end to end" in text and "| best of 4, refined | 5 % | 0.925 | 0.610 | 0.350 |" in text
    with pytest.raises(SystemExit, match="summary.json not found; run `bash quickstart.sh`"):
        main([str(tmp_path / "nowhere"), "--wall_seconds", "1", "--output", str(out)])


def test_the_record_keeps_each_family_and_the_readme_lists_them(tmp_path):
    from readme_results import QuickstartRecord, quickstart_results_markdown, quickstart_rows_markdown
    from record_quickstart import main

    def scores(iou):
        return {"count": 10, "valid": 10, "mean_cd": 0.5, "median_cd": 0.3, "mean_iou": iou, "invalid_ratio": 0.0}

    summary = {**scores(0.9), "num_candidates": 4, "decoding": {"refine_evaluations": 120},
               "before_refinement": scores(0.8), "families": {"ring": scores(0.85), "box": scores(0.99)},
               "families_before_refinement": {"ring": scores(0.7), "box": scores(0.95)}}
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "quickstart.json"
    with pytest.raises(SystemExit, match="manifest.json: cannot read the programs' level"):
        main([str(tmp_path / "run"), "--wall_seconds", "1", "--output", str(out)])
    (tmp_path / "run" / "programs").mkdir()
    (tmp_path / "run" / "programs" / "manifest.json").write_text(json.dumps({"complexity": "broad"}))
    with pytest.raises(SystemExit, match="model.safetensors: cannot count the model's parameters"):
        main([str(tmp_path / "run"), "--wall_seconds", "1", "--output", str(out)])
    save_weights(tmp_path / "run" / "model", {"embed": (1000, 192), "norm": (192,)})
    assert main([str(tmp_path / "run"), "--wall_seconds", "600", "--output", str(out)]) == 0
    record = QuickstartRecord.load(out)
    assert record.data == "broad" and record.families["ring"].mean_iou == 0.85
    assert record.families_as_written["box"].mean_iou == 0.95
    text = quickstart_results_markdown(record)
    assert "| box | 10 | 0.990 | 0.950 |\n| ring | 10 | 0.850 | 0.700 |" in text
    assert record.parameters == 192_192
    assert "our `broad` test split (10 shapes) | this project's quickstart: tiny 0.19M-parameter Qwen3" in \
        quickstart_rows_markdown(record)


def save_weights(model_dir: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    model_dir.mkdir(parents=True)
    save_file({name: np.zeros(shape, np.float32) for name, shape in shapes.items()}, str(model_dir / "model.safetensors"))


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
        "QUICKSTART_MINUTES": "1",  # less than data and evaluation need: trains its 1-minute floor, and says so
    }
    command = next(line for line in README.splitlines() if line.startswith("bash quickstart.sh")).split("#")[0].split()
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=0.65 * SUITE_TIMEOUT)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((work / "eval" / "summary.json").read_text())
    assert summary["count"] == 3 and summary["num_candidates"] == 2 and summary["decoding"]["refine_evaluations"] == 10
    assert (work / "model" / "model.safetensors").is_file() and (work / "model" / "training_curves.png").is_file()
    assert {"code.py", "code.json", "code.png"} <= {p.name for p in (work / "cube").iterdir()}
    assert "QUICKSTART_MINUTES=1 leaves no time to train" in first.stderr
    assert "at most 1.00 minutes of steps to end within 1 minutes" in first.stdout
    assert "max_minutes: " in first.stderr and "training all 3 planned steps" in first.stderr  # the probe ran
    tail = first.stdout[first.stdout.rindex("==> done"):]
    assert "| inputs | IoU % |" in tail and str(work / "eval" / "summary.json") in tail  # the table and where things are

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=0.3 * SUITE_TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "programs: reusing" in again.stdout and "train: reusing" in again.stdout
    assert "eval: reusing" in again.stdout and "infer: reusing" in again.stdout


def test_the_main_command_refuses_a_time_that_is_not_a_number(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "WORKDIR": str(tmp_path / "w"), "QUICKSTART_SKIP_SETUP": "1",
           "QUICKSTART_MINUTES": "20min"}
    result = subprocess.run(["bash", "quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "QUICKSTART_MINUTES must be a number of minutes (0 = no limit), got '20min'" in result.stderr
    assert not (tmp_path / "w" / "programs").exists()  # refused before any work


@pytest.mark.parametrize("made_by, reason", [
    ({"generator_version": "1"}, "generator version 1"),
    ({"generator_version": "3", "complexity": "simple"}, "holds simple programs, this run asks for broad"),
])
def test_the_main_command_refuses_programs_of_another_generator_version_or_level(tmp_path, made_by, reason):
    import json
    import os
    import subprocess

    import pytest

    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("needs the .venv that scripts/setup.sh makes")
    work = tmp_path / "old"
    (work / "programs").mkdir(parents=True)
    (work / "programs" / "manifest.json").write_text(json.dumps(made_by))
    env = {**os.environ, "WORKDIR": str(work), "QUICKSTART_SKIP_SETUP": "1"}
    run = subprocess.run(["bash", "quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert run.returncode == 2 and len(errors) == 1, run.stderr
    assert reason in errors[0] and f"remove {work}" in errors[0]
    assert not (work / "data").exists()  # stopped before anything was built on the old programs
