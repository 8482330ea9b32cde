"""A training run that fits a wall-clock budget (``max_minutes``).

Before its first step the run times a few steps of its own: items (point sampling, tokenizing),
collating, forward, backward, clipping and a throwaway AdamW's step, on real batches in the run's
own kind of order. The weights are then put back bit for bit, the gradients dropped and the RNG
streams restored, so the run trains exactly as a run configured with the chosen step count would.
It trains min(max_steps, the steps that fit), with the learning-rate schedule laid out over those
steps: deciding up front keeps the schedule's cosine tail, where a run stopped when its time is out
would end at a high learning rate.

Not in the probe: the Trainer's bookkeeping and the machine's own drift (the tiny model's steps ran
0.5 % to 7 % slower than probed on 2 CPU cores; BENCHMARKS.md), evaluations and checkpoint saves;
leave room for them. Under ``torchrun`` the slowest process decides for all. A resumed run keeps the
step count its checkpoint was trained towards.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cad_recode.errors import InputError

WARMUP_STEPS = 3  # first calls allocate and pick kernels: timed apart, not counted
PROBE_STEPS = 24  # timed steps; batch lengths vary, so a few dozen give a steady mean
PROBE_SEED = 0x9B0BE  # the probe's own order: it draws nothing from the run's streams


@dataclass(frozen=True)
class StepBudget:
    """What a budget decided: the steps to train and what the probe measured."""

    max_steps: int  # -1: the configured epochs fit, so they are kept
    seconds_per_step: float
    fitting_steps: int  # steps the budget holds at that speed
    planned_steps: int  # what the config asked for (its epochs counted in steps)
    resumed: bool = False

    def line(self, minutes: float) -> str:
        if self.resumed:
            return f"max_minutes: resuming the run planned for {self.max_steps} steps"
        fits = f"{self.fitting_steps} steps fit {minutes:g} min at {self.seconds_per_step:.3f} s a step"
        if self.fitting_steps >= self.planned_steps:
            return f"max_minutes: {fits}; training all {self.planned_steps} planned steps"
        return f"max_minutes: {fits}; training {self.max_steps} of the {self.planned_steps} planned steps"


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
        budget = decide(cfg, seconds, len(run.train_dataset), args.world_size)
    return dataclasses.replace(run, cfg=dataclasses.replace(cfg, max_steps=budget.max_steps)), budget


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
