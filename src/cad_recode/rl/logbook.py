"""An RL run's logs: one line per update in train_log.jsonl, TensorBoard scalars, the curves PNG.

Rank 0 only. Keys (per update): ``reward_mean``, ``reward_std`` (over the samples of the run's own
inputs), ``ir`` (their share with no valid solid), ``zero_advantage_share`` (groups whose rewards were
all equal), ``kl`` (k3 estimate to the start policy, when it is available), with an anchor
``anchor_loss`` and ``anchor_reward_mean`` (its shapes rolled out), with self-imitation ``imitation_loss``,
``greedy_reward_mean``, ``imitated`` and ``imitated_from_fit`` (inputs whose best program was imitated),
``seconds_imitation``, ``loss``, ``clip_fraction``,
``tokens_per_s`` (generated tokens per second of generation), ``lr``, the time split
``seconds_generate / _sandbox / _reward / _rollout / _update``, ``solved``; and every ``eval_steps``
the greedy validation ``val_iou``, ``val_ir``, ``val_reward``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cad_recode.atomic import atomic_file
from cad_recode.errors import InputError
from cad_recode.model.runlog import append_log, read_train_log, series

CURVES_FILE = "rl_curves.png"


class Logbook:
    """Writes a record to train_log.jsonl and, with ``tensorboard``, to ``output_dir/runs``."""

    def __init__(self, output_dir: str | os.PathLike, tensorboard: bool):
        self.output_dir = Path(output_dir)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.output_dir / "runs"))

    def log(self, update: int, values: dict) -> None:
        append_log(self.output_dir, update, values)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"rl/{key}", value, update)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_rl_curves(records: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Left: sampled reward (mean and spread; the anchor shapes'). Middle: greedy validation IoU and IR.
    Right: KL, zero-advantage share."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, mean = series(records, "reward_mean")
    if not steps:
        raise InputError("the RL log holds no reward yet: nothing to plot")
    spread = dict(zip(*series(records, "reward_std")))
    figure = Figure(figsize=(14, 4), dpi=100)
    reward_axes, val_axes, kl_axes = figure.subplots(1, 3)
    reward_axes.plot(steps, mean, label="sampled reward (mean)")
    low = [m - spread.get(s, 0.0) for s, m in zip(steps, mean)]
    high = [m + spread.get(s, 0.0) for s, m in zip(steps, mean)]
    reward_axes.fill_between(steps, low, high, alpha=0.2, label="± std")
    anchor_steps, anchor_mean = series(records, "anchor_reward_mean")
    if anchor_steps:  # the anchor's shapes, rolled out beside the inputs
        reward_axes.plot(anchor_steps, anchor_mean, label="anchor shapes' reward (mean)")
    reward_axes.set_title("rollout reward")
    val_steps, val_iou = series(records, "val_iou")
    if val_steps:
        val_axes.plot(val_steps, val_iou, "o-", label="greedy IoU")
        val_axes.plot(*series(records, "val_ir"), "s--", label="greedy invalid ratio")
    else:
        val_axes.text(0.5, 0.5, "no validation yet", ha="center", va="center")
    val_axes.set_ylim(0, 1)
    val_axes.set_title("validation (greedy)")
    kl_axes.plot(*series(records, "zero_advantage_share"), label="zero-advantage share")
    kl_steps, kl = series(records, "kl")
    if kl_steps:
        kl_axes.plot(kl_steps, kl, label="KL to start")
    kl_axes.set_title("KL and zero-advantage groups")
    for axes in (reward_axes, val_axes, kl_axes):
        axes.set_xlabel("update")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        FigureCanvasAgg(figure).print_png(str(tmp))
    return path


def write_rl_curves(output_dir: str | os.PathLike) -> Path:
    output_dir = Path(output_dir)
    return plot_rl_curves(read_train_log(output_dir), output_dir / CURVES_FILE, title=str(output_dir))
