"""Training curves: the log read step by step (a resumed run's repeats keep their last value), one PNG."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from cad_recode.cli import main
from cad_recode.training.curves import CURVES_FILE, plot_training_curves, series, write_run_curves
from cad_recode.errors import InputError

LOG = [
    {"step": 10, "loss": 3.0},
    {"step": 20, "loss": 2.0},
    {"step": 20, "eval_loss": 2.5, "eval_iou": 0.2, "eval_ir": 0.5},
    # killed after step 20, resumed from checkpoint-10: steps 20 and 30 again
    {"step": 20, "loss": 1.9},
    {"step": 30, "loss": 1.5},
    {"step": 40, "eval_loss": 1.4, "eval_iou": 0.6, "eval_ir": 0.0, "eval_cd_mean": None},
    {"step": 40, "train_loss": 2.0, "train_runtime": 12.0},
]


def write_log(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_series_keeps_the_last_value_of_each_step_and_skips_nulls():
    assert series(LOG, "loss") == ([10, 20, 30], [3.0, 1.9, 1.5])
    assert series(LOG, "eval_iou") == ([20, 40], [0.2, 0.6])
    assert series(LOG, "eval_cd_mean") == ([], [])


def test_run_curves_png(tmp_path):
    run = write_log(tmp_path / "run", LOG)
    path = write_run_curves(run)
    assert path == run / CURVES_FILE
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (400, 1000) and image.std() > 0.05  # drawn, not blank


def test_cli_writes_where_asked_and_errors_are_one_line(tmp_path, capsys):
    run = write_log(tmp_path / "run", LOG)
    assert main(["curves", str(run), "--output", str(tmp_path / "docs" / "curves.png")]) == 0
    assert (tmp_path / "docs" / "curves.png").stat().st_size > 10_000
    assert not (run / CURVES_FILE).exists()
    assert main(["curves", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is missing or empty: is " + str(tmp_path / "nothing") + " a training output_dir?")
    with pytest.raises(InputError, match="no loss values"):
        plot_training_curves([{"step": 1, "eval_iou": 0.5}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
