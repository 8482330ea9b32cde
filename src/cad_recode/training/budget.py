"""A training run that fits a wall-clock budget (``max_minutes``).

Before its first step the run times a few steps of its own: items (point sampling, tokenizing),
collating, forward, backward, clipping and a throwaway AdamW's step, on real batches in the run's
own kind of order. The weights are then put back bit for bit, the gradients dropped and the RNG
streams restored, so the run trains exactly as a run configured with the chosen step count would.
It trains min(max_steps, the steps that fit), with the learning-rate schedule laid out over those
steps: deciding up front keeps the schedule's cosine tail, where a run stopped when its time is out
would end at a high learning rate.

The probe's few seconds can misjudge the run: on 2 shared CPU cores the quickstart's steps ran from
22 % slower to 22 % faster than probed (BENCHMARKS.md). So a run whose warmup is long enough times
its own warmup steps too (:class:`RetimeCallback`, the Trainer's real loop, bookkeeping included)
and settles the step count there, between the probe's count and HEADROOM times it. During warmup
the learning rate does not depend on the step count, so the schedule laid out anew at its last step
is the one a run configured with the final count follows from its first step: the run still trains
exactly as that run would. Evaluations and checkpoint saves are not counted; leave room for them.
Under ``torchrun`` the slowest process decides for all. A resumed run keeps the step count its
checkpoint was trained towards.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from cad_recode.errors import InputError

WARMUP_STEPS = 3  # first calls allocate and pick kernels: timed apart, not counted
PROBE_STEPS = 24  # timed steps; batch lengths vary, so a few dozen give a steady mean
PROBE_SEED = 0x9B0BE  # the probe's own order: it draws nothing from the run's streams
RETIME_MIN_WARMUP = 20  # a shorter warmup is not timed again: the probe's count stands
RETIME_SKIP = 3  # the run's first steps (allocations, first calls) are not timed
HEADROOM = 1.5  # the Trainer is sized for this many times the probe's count, for a run faster than probed


@dataclass(frozen=True)
class StepBudget:
    """What a budget decided: the steps to train and what the probe measured."""

    max_steps: int  # -1: the configured epochs fit, so they are kept
    seconds_per_step: float
    fitting_steps: int  # steps the budget holds at that speed
    planned_steps: int  # what the config asked for (its epochs counted in steps)
    resumed: bool = False
    retime_at: int | None = None  # the step that settles the count (the warmup's last), or None: it is final
    most_steps: int | None = None  # with retime_at: what the Trainer is sized for

    def line(self, minutes: float) -> str:
        if self.resumed:
            return f"max_minutes: resuming the run planned for {self.max_steps} steps"
        fits = f"{self.fitting_steps} steps fit {minutes:g} min at {self.seconds_per_step:.3f} s a step"
        if self.fitting_steps >= self.planned_steps:
            line = f"max_minutes: {fits}; training all {self.planned_steps} planned steps"
        else:
            line = f"max_minutes: {fits}; training {self.max_steps} of the {self.planned_steps} planned steps"
        if self.retime_at is not None:
            line += f" (timed again over the warmup; settled at step {self.retime_at}, at most {self.most_steps})"
        return line

    def retimed(self, seconds_per_step: float, minutes: float) -> StepBudget:
        """The count ``minutes`` holds at the speed the warmup measured: past the settling step, at most most_steps."""
        fitting = int(minutes * 60 / seconds_per_step)
        steps = min(max(fitting, self.retime_at + 1), self.most_steps)
        return dataclasses.replace(self, max_steps=steps, seconds_per_step=seconds_per_step, fitting_steps=fitting,
                                   retime_at=None, most_steps=None)

    def retimed_line(self, minutes: float, at_step: int) -> str:
        return (f"max_minutes: steps {RETIME_SKIP + 1}-{at_step} took {self.seconds_per_step:.3f} s each, so "
                f"{self.fitting_steps} steps fit {minutes:g} min; training {self.max_steps} of the "
                f"{self.planned_steps} planned steps")


def fit_to_budget(run, resume: Path | None, args):
    """``run`` with its config's ``max_steps`` set to what ``max_minutes`` allows, and the decision.

    ``args``: the run's ``TrainingArguments`` (reading its device sets up the processes under torchrun).
    """
    cfg = run.cfg
    if resume is not None:
        steps = resumed_max_steps(resume)
        budget = StepBudget(steps, math.nan, steps, steps, resumed=True)
    else:
        if not cfg.load_in_4bit:  # where the Trainer will put it (a 4-bit base is placed when loaded)
            run.model.to(args.device)
        planned = planned_steps(cfg, len(run.train_dataset), args.world_size)
        seconds = slowest_process(time_steps(run, probe=min(PROBE_STEPS, planned)))  # a smoke run stays short
        budget = with_retime(decide(cfg, seconds, len(run.train_dataset), args.world_size), cfg)
    return dataclasses.replace(run, cfg=dataclasses.replace(cfg, max_steps=budget.max_steps)), budget


def with_retime(budget: StepBudget, cfg) -> StepBudget:
    """``budget`` to be settled at the warmup's last step, where the warmup is long enough to time."""
    if budget.max_steps < 1 or cfg.warmup_steps < RETIME_MIN_WARMUP or budget.max_steps <= cfg.warmup_steps + 1:
        return budget  # epochs kept, a warmup too short to time, or a run that ends with it
    most = min(budget.planned_steps, math.ceil(budget.max_steps * HEADROOM))
    return dataclasses.replace(budget, retime_at=cfg.warmup_steps, most_steps=most)


def decide(cfg, seconds_per_step: float, items: int, world_size: int) -> StepBudget:
    """The steps ``cfg.max_minutes`` holds at ``seconds_per_step``; InputError if it holds none."""
    planned = planned_steps(cfg, items, world_size)
    fitting = int(cfg.max_minutes * 60 / seconds_per_step)
    if fitting < 1:
        raise InputError(
            f"max_minutes={cfg.max_minutes:g} holds no training step: a step takes {seconds_per_step:.2f} s "
            "here; raise max_minutes (or set it to null)"
        )
    if fitting >= planned:
        return StepBudget(cfg.max_steps, seconds_per_step, fitting, planned)
    return StepBudget(fitting, seconds_per_step, fitting, planned)


def planned_steps(cfg, items: int, world_size: int) -> int:
    """Optimizer steps the config asks for; with ``max_steps: -1``, its epochs counted as the Trainer does."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(math.ceil(items / world_size) / cfg.per_device_train_batch_size)
    return math.ceil(cfg.num_train_epochs * max(batches // cfg.gradient_accumulation_steps, 1))


def resumed_max_steps(checkpoint: Path) -> int:
    """The step count a checkpoint's run was trained towards (its ``trainer_state.json``)."""
    state_file = Path(checkpoint) / "trainer_state.json"
    try:
        steps = int(json.loads(state_file.read_text(encoding="utf-8"))["max_steps"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{state_file}: cannot read the run's planned steps ({err}); "
                         "resume without max_minutes or from another checkpoint") from None
    if steps < 1:
        raise InputError(f"{state_file}: max_steps is {steps}; resume without max_minutes or from another checkpoint")
    return steps


def time_steps(run, warmup: int = WARMUP_STEPS, probe: int = PROBE_STEPS) -> float:
    """Mean seconds of one optimizer step: items, collating, forward, backward, clipping, AdamW.

    The AdamW steps are a throwaway optimizer's; the trainable weights are copied aside (to the CPU:
    a full fine-tune's copy need not fit beside it) and put back bit for bit afterwards.
    """
    from cad_recode.model import optimizer_groups
    from cad_recode.training.checkpointing import preserved_rng

    cfg, model, dataset = run.cfg, run.model, run.train_dataset
    micro = cfg.gradient_accumulation_steps
    order = probe_order(run, (warmup + probe) * micro * cfg.per_device_train_batch_size)
    device = next(p for p in model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.bf16 else \
        torch.autocast(device.type, dtype=torch.float16) if cfg.fp16 else nullcontext()
    trainable = [p for p in model.parameters() if p.requires_grad]
    kept = [p.detach().to("cpu", copy=True) for p in trainable]
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.learning_rate, cfg.projector_lr, cfg.weight_decay),
                                  lr=cfg.learning_rate)
    was_training = model.training
    model.train()
    timed = 0.0
    try:
        with preserved_rng():
            for step in range(warmup + probe):
                started = time.perf_counter()
                for k in range(micro):
                    first = (step * micro + k) * cfg.per_device_train_batch_size
                    items = [dataset[int(i)] for i in order[first:first + cfg.per_device_train_batch_size]]
                    batch = {key: value.to(device) for key, value in run.collator(items).items()}
                    with autocast:
                        loss = model(**batch).loss / micro
                    loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if step >= warmup:
                    timed += time.perf_counter() - started
    finally:
        del optimizer  # its moments: the run's own optimizer starts from nothing
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for param, value in zip(trainable, kept):
                param.copy_(value)
        model.train(was_training)
    return timed / probe


def probe_order(run, count: int) -> np.ndarray:
    """``count`` item indices in the kind of order training uses (length-grouped or shuffled), cycling."""
    dataset, cfg = run.train_dataset, run.cfg
    if cfg.group_by_length:
        from cad_recode.data.batching import length_grouped_order

        order = length_grouped_order(dataset.item_lengths(), cfg.per_device_train_batch_size, (cfg.seed, PROBE_SEED))
    else:
        order = np.random.default_rng((cfg.seed, PROBE_SEED)).permutation(len(dataset))
    return np.resize(order, count)


def slowest_process(seconds: float) -> float:
    """The largest of every process's ``seconds`` (one process: itself), so all train the same steps."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        value = value.cuda()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return float(value.item())


class RetimeCallback(TrainerCallback):
    """Times the run's own warmup steps and settles ``max_minutes``'s step count at the warmup's last step.

    The Trainer is sized for ``budget.most_steps`` (epochs, data); this callback holds ``state.max_steps``
    at the probe's count until it settles, then sets it, lays the learning-rate schedule over it (the
    warmup is the same for any count) and sets it in ``cfg``, the run's own config object, so the run
    folder's config.yaml, the checkpoints' and the final save's all say so.
    """

    def __init__(self, budget: StepBudget, cfg, config_path: Path, progress=None):
        self.budget, self.cfg, self.config_path, self.progress = budget, cfg, config_path, progress
        self.intervals: list[float] = []
        self.last: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        state.max_steps = self.budget.max_steps
        self._show_total(state.max_steps)

    def on_step_end(self, args, state, control, lr_scheduler=None, optimizer=None, **kwargs):
        at = self.budget.retime_at
        if at is None:
            return
        now = clock()
        if state.global_step > RETIME_SKIP and self.last is not None:
            self.intervals.append(now - self.last)
        self.last = now
        if state.global_step < at:
            return
        budget = self.budget.retimed(slowest_process(typical_mean(self.intervals)), self.cfg.max_minutes)
        self.budget = budget
        state.max_steps = budget.max_steps
        # the run's config object, shared with the checkpoints and the final save: all of them record the count
        self.cfg.max_steps = budget.max_steps
        lay_schedule(lr_scheduler, optimizer, args, budget.max_steps)
        self._show_total(budget.max_steps)
        if state.is_world_process_zero:
            from cad_recode.config import save_config

            print(budget.retimed_line(self.cfg.max_minutes, at), file=sys.stderr, flush=True)
            save_config(self.cfg, self.config_path)

    def _show_total(self, steps: int) -> None:
        bar = getattr(self.progress, "training_bar", None)
        if bar is not None:
            bar.total = steps
            bar.refresh()


def clock() -> float:
    """The retiming's clock (a module function, so a test can run it on a clock of its own)."""
    return time.perf_counter()


def typical_mean(intervals: list[float]) -> float:
    """Mean seconds between step ends, without the few that held an evaluation or a save (over 3x the median)."""
    if not intervals:
        raise ValueError("no timed steps")
    median = float(np.median(intervals))
    return float(np.mean([s for s in intervals if s <= 3 * median]))


def lay_schedule(scheduler, optimizer, args, steps: int) -> None:
    """Lay ``scheduler`` (a LambdaLR of transformers' schedules) over ``steps``, from the step it is at.

    A fresh schedule of the same kind over ``steps`` gives the step functions; building it touches the
    optimizer's learning rates, which are put back to this step's (the same for any count in warmup).
    """
    from transformers import get_scheduler

    current = [group["lr"] for group in optimizer.param_groups]
    fresh = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(steps),
                          num_training_steps=steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    scheduler.lr_lambdas = fresh.lr_lambdas
    for group, lr in zip(optimizer.param_groups, current):
        group["lr"] = lr
