"""A training run's curves as one PNG: loss, and the validation shape metrics, against steps.

Read from ``output_dir/train_log.jsonl`` (written by the recipe at every log and
evaluation). A resumed run appends to that file, so a step logged twice keeps
its last value. The recipe writes ``output_dir/training_curves.png`` at the end
of training; ``cad-recode curves OUTPUT_DIR`` redraws it at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

from cad_recode.atomic import atomic_file
from cad_recode.errors import InputError
from cad_recode.model.runlog import series

CURVES_FILE = "training_curves.png"


def plot_training_curves(records: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Left: training and validation loss (log scale). Right: validation IoU and invalid ratio."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train_loss, eval_loss = series(records, "loss"), series(records, "eval_loss")
    if not train_loss[0] and not eval_loss[0]:
        raise InputError("the training log holds no loss values yet: nothing to plot")
    figure = Figure(figsize=(10, 4), dpi=100)
    loss_axes, shape_axes = figure.subplots(1, 2)
    loss_axes.plot(*train_loss, label="train loss", linewidth=1)
    if eval_loss[0]:
        loss_axes.plot(*eval_loss, "o-", label="val loss")
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_title("loss")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    iou, invalid = series(records, "eval_iou"), series(records, "eval_ir")
    if iou[0] or invalid[0]:
        shape_axes.plot(*iou, "o-", label="val mean IoU")
        shape_axes.plot(*invalid, "s--", label="val invalid ratio")
        shape_axes.legend()
    else:
        shape_axes.text(0.5, 0.5, "no validation shape metrics logged\n(do_eval off, or no evaluation yet)", ha="center", va="center")
    shape_axes.set_ylim(0, 1)
    shape_axes.set_xlabel("step")
    shape_axes.set_title("validation shapes (greedy)")
    shape_axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        FigureCanvasAgg(figure).print_png(str(tmp))
    return path


def write_run_curves(output_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Plot ``output_dir/train_log.jsonl`` to ``path`` (default ``output_dir/training_curves.png``)."""
    from cad_recode.model.loading import TRAIN_LOG
    from cad_recode.model.runlog import read_train_log

    output_dir = Path(output_dir)
    records = read_train_log(output_dir)
    if not records:
        raise InputError(f"{output_dir / TRAIN_LOG} is missing or empty: is {output_dir} a training output_dir?")
    return plot_training_curves(records, path or output_dir / CURVES_FILE, title=str(output_dir))
