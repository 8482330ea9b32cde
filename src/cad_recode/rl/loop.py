"""The RL recipe: online RL of a trained CAD-Recode model on point clouds, with a geometric reward.

    run_rl(cfg)   check inputs -> setup -> [resume] -> updates (rollouts, select, PPO) -> save_final

One update (cadrille's recipe, design.md §2, made to learn from MANY shapes at once):

1. take ``shapes_per_update`` inputs from the seeded stream (solved ones skipped), and ``anchor_rollouts``
   shapes of the anchor data (:mod:`.anchor`), each process its share;
2. rollouts (:mod:`.rollouts`): G programs per input through inference's generation path, run in the
   sandbox and scored by the reward, the sandbox overlapped with the next chunk's generation;
3. select (:mod:`.update`): advantages ``r - mean(r)`` per group, the top-k by ``|A|``; an input whose
   samples all score >= ``hard_example_threshold`` is marked solved (hard-example mining);
4. with ``imitation_coef`` (:mod:`.imitation`): each input decoded greedily and scored; the best program
   found for it (its samples, its outline fits) is imitated where it beats greedy's;
5. ``ppo_epochs`` optimizer steps of the clipped loss (+ ``kl_beta`` x KL to the start policy, + ``anchor_coef``
   x the SFT loss of replayed programs, :mod:`.anchor`, + ``imitation_coef`` x that of the imitated ones)
   over the selected samples, gradient accumulation over micro-batches, gradient clipping;
6. log (reward mean/std, IR, zero-advantage share, KL, tokens/s, time split), every ``eval_steps`` a
   greedy validation on fixed inputs, every ``save_steps`` a checkpoint (:mod:`.checkpoint`).

Why an own loop on Accelerate and not TRL's ``GRPOTrainer``: TRL (read at commit d2b69d7 of
``trl/trainer/grpo_trainer.py``) builds its prompts as text through a processing class and routes
extra model inputs to the policy only by known names -- ``_get_per_token_logps_and_entropies`` takes
``pixel_values, image_grid_thw, num_images, pixel_attention_mask, image_sizes, token_type_ids`` and
its generation calls ``generate`` on token ids. A (B, P, 3) point cloud has no route through either
without overriding those private methods, which change between TRL releases. What this recipe
needs beyond them is small (grouped sampling through inference's decoder with the grammar, the
sandbox, top-k selection, the clipped loss), so it is written here in a few hundred lines on
Accelerate (process groups, DDP gradient sync, gloo on the CPU); the pure objective is in
:mod:`.objective` and tested against hand-computed values.

Determinism: every random draw of update u (input points, sampling, dropout) is seeded from
(seed, u, rank), and the input stream's state is saved with each checkpoint, so a run resumed
after a kill repeats exactly the rollouts and parameters of an uninterrupted one. Only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cad_recode.config import save_config
from cad_recode.errors import UsageError
from cad_recode.model.loading import RUN_CONFIG
from cad_recode.model.run_folder import check_output_dir, clear_previous_run, preserved_rng, resolve_resume, resume_notice
from cad_recode.rl import checkpoint as ckpt
from cad_recode.rl.anchor import Anchor, open_anchor
from cad_recode.rl.config import RLConfig
from cad_recode.rl.imitation import FitCache
from cad_recode.rl.inputs import check_data_source, open_items, resolve_reward
from cad_recode.rl.logbook import CURVES_FILE, Logbook, write_rl_curves
from cad_recode.rl.policy import Policy, load_policy
from cad_recode.rl.rollouts import RolloutSettings, collect_groups, derived_seed
from cad_recode.rl.stream import ItemStream
from cad_recode.rl.update import (
    SupervisedTerm, UpdateSettings, micro_batches, policy_update, select, sequence_log_probs,
)


@dataclass
class RLResult:
    output_dir: Path
    updates: int  # the last update done
    resumed_from: Path | None
    solved: int  # inputs marked solved by hard-example mining


@dataclass
class RLRun:
    """Everything an RL run is made of; ``setup`` builds it."""

    cfg: RLConfig
    accelerator: Any
    policy: Policy
    model: torch.nn.Module  # the policy as prepared by Accelerate (DDP-wrapped under torchrun)
    optimizer: Any
    scheduler: Any
    items: list
    val_items: list
    reward: Any
    sandbox: Any
    stream: ItemStream
    logbook: Logbook | None  # rank 0 only
    anchor: Anchor | None = None  # replayed programs (anchor_data_dir), or None
    fits: FitCache | None = None  # each input's best outline fit (imitation from fits), filled as inputs come

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def core_config(self):
        from cad_recode.model.generation import core_model

        return core_model(self.policy.model).config


def run_rl(cfg: RLConfig, on_update: Callable[[RLRun, int, dict], None] | None = None) -> RLResult | None:
    """Run the recipe for ``cfg``; ``cfg.dry_run`` only prints the plan (returns None).

    ``on_update(run, update, record)``: called on every process after each update is logged and checkpointed.
    """
    if cfg.dry_run:
        from cad_recode.rl.plan import plan

        print(plan(cfg).format())
        return None
    check_data_source(cfg)
    resume = resolve_resume(cfg)
    notice = resume_notice(cfg, resume)
    if notice and os.environ.get("RANK", "0") == "0":
        print(notice, file=sys.stderr, flush=True)
    check_output_dir(cfg, resume)
    if resume is not None:
        ckpt.validate_checkpoint(resume, cfg)
    run = setup(cfg)
    try:
        first = ckpt.load_checkpoint(run, resume) + 1 if resume is not None else 1
        if run.is_main:
            if cfg.overwrite_output_dir and resume is None:
                clear_previous_run(Path(cfg.output_dir), (CURVES_FILE,))
            save_config(cfg, Path(cfg.output_dir) / RUN_CONFIG)
            run.logbook = Logbook(cfg.output_dir, tensorboard=cfg.report_to == "tensorboard")
        last = train_updates(run, first, on_update)
        if run.is_main:
            ckpt.save_final(run)
            write_rl_curves(cfg.output_dir)
        run.accelerator.wait_for_everyone()
    finally:
        cleanup(run)
    return RLResult(Path(cfg.output_dir), last, resume, len(run.stream.solved))


def train_updates(run: RLRun, first: int, on_update: Callable[[RLRun, int, dict], None] | None = None) -> int:
    """Updates ``first .. max_updates``; returns the last one done (earlier when every input is solved)."""
    cfg, last = run.cfg, first - 1
    for update in range(first, cfg.max_updates + 1):
        record = one_update(run, update)
        if record is None:
            if run.is_main:
                print(f"rl: every input scores >= {cfg.hard_example_threshold} (solved); stopping after update "
                      f"{last}", file=sys.stderr, flush=True)
            break
        last = update
        at_end = update == cfg.max_updates
        if (cfg.eval_steps and update % cfg.eval_steps == 0) or at_end:
            record.update(validation_record(run))
        if run.is_main and (update % cfg.logging_steps == 0 or "val_reward" in record or at_end):
            run.logbook.log(update, record)
        if update % cfg.save_steps == 0 and not at_end:
            if run.is_main:
                ckpt.save_checkpoint(run, update)
            run.accelerator.wait_for_everyone()
        if on_update is not None:
            on_update(run, update, record)
    return last


def cleanup(run: RLRun) -> None:
    run.sandbox.close()
    if run.logbook is not None:
        run.logbook.close()


# --------------------------------------------------------------------------- one update


def one_update(run: RLRun, update: int) -> dict | None:
    """Rollouts, selection and the PPO steps of ``update``; its log record, or None when all is solved."""
    cfg, acc = run.cfg, run.accelerator
    chosen = run.stream.take(cfg.shapes_per_update)
    if not chosen:
        return None
    rank, world = acc.process_index, acc.num_processes
    inputs, mine = run.items, chosen[rank::world]
    num_own = len(mine)  # this process's groups: its own inputs first, then its anchor shapes
    if cfg.anchor_rollouts:  # the anchor's shapes follow RL's own inputs in this update's list
        replayed = run.anchor.rollout_items(update, cfg.anchor_rollouts, int(run.core_config.num_surface_points))
        inputs = list(run.items) + replayed
        mine += list(range(len(run.items), len(inputs)))[rank::world]
    settings = rollout_settings(cfg, run.core_config.num_point_tokens)
    groups, times = collect_groups(
        run.policy.model, run.policy.tokenizer, inputs, mine, settings, sandbox=run.sandbox, reward=run.reward,
        seeds=lambda chunk: derived_seed(cfg.seed, 0, update, rank, chunk),
        point_seed=lambda item: derived_seed(cfg.seed, 1, update, item), device=acc.device,
    )
    selection = select(groups, cfg.top_k)  # the anchor's groups are trained on like the others
    own, replayed_groups = groups[:num_own], groups[num_own:]
    rewards = torch.tensor(np.stack([g.rewards for g in own]), dtype=torch.float32, device=acc.device)
    invalid = torch.tensor([[s.status != "ok" for s in g.samples] for g in own], dtype=torch.float32,
                           device=acc.device)
    solved = torch.tensor([g.item if _solved(g.rewards, cfg) else -1 for g in own], device=acc.device)
    counts = torch.tensor([selection.zero_advantage_groups, times.tokens], dtype=torch.float64, device=acc.device)
    rewards, invalid, solved = acc.gather(rewards), acc.gather(invalid), acc.gather(solved)
    counts = acc.reduce(counts, reduction="sum")
    run.stream.solved.update(int(i) for i in solved.tolist() if i >= 0)

    from cad_recode.model.tokenizer import CodeTokens

    tokens = CodeTokens.from_tokenizer(run.policy.tokenizer)
    batches = micro_batches(selection.samples, cfg.micro_batch_size, tokens.start_id, tokens.end_id, tokens.pad_id,
                            acc.device)
    supervised, imitation_record = [], {}
    if cfg.imitation_coef > 0:
        imitated, imitation_record = imitation_samples(run, own)
        supervised.append(SupervisedTerm("imitation", cfg.imitation_coef, micro_batches(
            imitated, cfg.micro_batch_size, tokens.start_id, tokens.end_id, tokens.pad_id, acc.device)))
    torch.manual_seed(derived_seed(cfg.seed, 2, update, rank))  # dropout, if any
    replaying = run.anchor is not None and cfg.anchor_coef > 0  # anchor_coef 0: the anchor only rolls out shapes
    if replaying:
        supervised.append(SupervisedTerm("anchor", cfg.anchor_coef, run.anchor.batches(
            update, rank, world, cfg.micro_batch_size, tokens.pad_id, acc.device)))
    stats = policy_update(run.model, acc, run.optimizer, run.scheduler, batches, update_settings(cfg),
                          reference_log_probs(run), supervised)
    record = {
        "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False)),
        "ir": float(invalid.mean()),
        "zero_advantage_share": float(counts[0]) / (cfg.shapes_per_update + cfg.anchor_rollouts),
        "loss": stats.loss, "clip_fraction": stats.clip_fraction, "ratio_mean": stats.ratio_mean,
        "grad_norm": stats.grad_norm, "lr": float(run.scheduler.get_last_lr()[0]),
        "tokens_per_s": times.tokens / times.generate if times.generate > 0 else 0.0,
        "trained_tokens": stats.tokens, "seconds_generate": times.generate, "seconds_sandbox": times.sandbox,
        "seconds_reward": times.reward, "seconds_rollout": times.wall, "seconds_update": stats.seconds,
        "solved": len(run.stream.solved), "epoch": run.stream.epoch,
        # what this process sampled, as a short digest: equal digests = the same rollouts (resume parity)
        "rollout_digest": hashlib.sha1(repr([s.ids for g in groups for s in g.samples]).encode()).hexdigest()[:16],
    }
    if run.policy.reference is not None or run.cfg.uses_lora:
        record["kl"] = stats.kl
    record.update({f"{name}_loss": value for name, value in stats.supervised_loss.items()})
    record.update(imitation_record)
    if cfg.anchor_rollouts:
        replayed_rewards = torch.tensor(np.stack([g.rewards for g in replayed_groups]), dtype=torch.float32,
                                        device=acc.device)
        record["anchor_reward_mean"] = float(acc.gather(replayed_rewards).mean())
    return record


def imitation_samples(run: RLRun, own: list) -> tuple[list, dict]:
    """The sequences to imitate for this process's own groups, and the update's counts (over every process)."""
    from cad_recode.rl.imitation import greedy_rewards, imitation_targets

    cfg, acc = run.cfg, run.accelerator
    started = time.perf_counter()
    greedy = greedy_rewards(run.policy.model, run.policy.tokenizer, run.items, own, max_new_tokens=cfg.max_new_tokens,
                            grammar=cfg.grammar, sandbox=run.sandbox, reward=run.reward, device=acc.device)
    fits = ([None] * len(own) if "fit" not in cfg.imitation_sources else
            run.fits.lookup(run.items, [g.item for g in own], run.policy.tokenizer, run.sandbox, run.reward))
    targets = imitation_targets(own, greedy, fits, cfg.imitation_sources, cfg.imitation_margin)
    counts = torch.tensor([len(targets), sum(source == "fit" for _, source in targets)], dtype=torch.float64,
                          device=acc.device)
    counts = acc.reduce(counts, reduction="sum")
    greedy_mean = acc.gather(torch.tensor(greedy, dtype=torch.float32, device=acc.device)).mean()
    return [target for target, _ in targets], {
        "greedy_reward_mean": float(greedy_mean), "imitated": int(counts[0]), "imitated_from_fit": int(counts[1]),
        "seconds_imitation": time.perf_counter() - started,
    }


def _solved(rewards: np.ndarray, cfg: RLConfig) -> bool:
    return cfg.hard_example_threshold is not None and bool(np.all(rewards >= cfg.hard_example_threshold))


def reference_log_probs(run: RLRun):
    """The start policy's log-probs of a batch: the adapter disabled (lora, qlora) or the frozen copy (full)."""
    temperature = run.cfg.temperature
    if run.cfg.uses_lora:
        peft = run.accelerator.unwrap_model(run.model)

        def with_adapter_off(batch):
            with peft.disable_adapter():
                return sequence_log_probs(peft, batch, temperature)

        return with_adapter_off
    if run.policy.reference is not None:
        return lambda batch: sequence_log_probs(run.policy.reference, batch, temperature)
    return None


def validation_record(run: RLRun) -> dict:
    """Greedy IoU / IR / reward on the fixed validation inputs (rank 0; the RNG streams are left as they were)."""
    from cad_recode.rl.validation import validate

    record = {}
    if run.is_main and run.val_items:
        with preserved_rng():
            result = validate(
                run.policy.model, run.policy.tokenizer, run.val_items, num_point_tokens=run.core_config.num_point_tokens,
                max_new_tokens=run.cfg.max_new_tokens, grammar=run.cfg.grammar,
                batch_size=run.cfg.generation_batch_size * run.cfg.num_generations, sandbox=run.sandbox,
                reward=run.reward, device=run.accelerator.device,
            )
        record = {"val_ir": result.ir, "val_reward": result.reward}
        if result.iou is not None:
            record["val_iou"] = result.iou
    run.accelerator.wait_for_everyone()
    return record


def rollout_settings(cfg: RLConfig, num_point_tokens: int) -> RolloutSettings:
    return RolloutSettings(cfg.num_generations, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.grammar,
                           cfg.runaway_factor, cfg.generation_batch_size, cfg.overlap_sandbox, num_point_tokens)


def update_settings(cfg: RLConfig) -> UpdateSettings:
    return UpdateSettings(cfg.ppo_epochs, cfg.micro_batch_size, cfg.clip_eps, cfg.kl_beta, cfg.max_grad_norm,
                          cfg.temperature, cfg.policy_coef)


# --------------------------------------------------------------------------- setup


def setup(cfg: RLConfig) -> RLRun:
    """Accelerator, policy, inputs, reward, sandbox, optimizer and schedule. One-line errors on bad input."""
    from accelerate import Accelerator
    from transformers import get_scheduler

    from cad_recode.geometry.sandbox import Sandbox
    from cad_recode.model import optimizer_groups
    from cad_recode.rl.rewards import check_target

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    for key in ("shapes_per_update", "anchor_rollouts"):
        if getattr(cfg, key) % accelerator.num_processes:
            raise UsageError(f"{key} ({getattr(cfg, key)}) must split evenly over {accelerator.num_processes} processes")
    reward = resolve_reward(cfg.reward)
    torch.manual_seed(cfg.seed)  # a new adapter's initial weights
    policy = load_policy(cfg)
    if policy.source.kind == "adapter" and cfg.uses_lora and not cfg.auto_merge_final:
        raise UsageError(f"start_model {cfg.start_model} is an adapter only, so the RL adapter has no saved base "
                         "to load on; keep auto_merge_final true (merged_model/ is the result)")
    core = _core(policy).config
    anchor = None
    if cfg.anchor_data_dir is not None:
        anchor = open_anchor(cfg.anchor_data_dir, cfg.anchor_split, cfg.anchor_families, cfg.anchor_per_update,
                             policy.tokenizer, num_point_tokens=int(core.num_point_tokens),
                             num_surface_points=int(core.num_surface_points), max_code_tokens=cfg.max_new_tokens,
                             seed=cfg.seed, by_family=cfg.anchor_by_family)
    sandbox = Sandbox(workers=cfg.sandbox_workers)
    try:
        items, val_items = open_items(cfg, int(core.num_surface_points), sandbox)
        for item in (items[0], *val_items[:1]):
            check_target(reward, item.target)
    except BaseException:
        sandbox.close()
        raise
    policy.model.to(accelerator.device)
    if policy.reference is not None:
        policy.reference.to(accelerator.device)
    optimizer = torch.optim.AdamW(optimizer_groups(policy.model, cfg.learning_rate, cfg.projector_lr, cfg.weight_decay),
                                  lr=cfg.learning_rate)
    model, optimizer = accelerator.prepare(policy.model, optimizer)
    steps = cfg.max_updates * cfg.ppo_epochs
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.warmup_steps * cfg.ppo_epochs,
                              num_training_steps=steps)
    return RLRun(cfg, accelerator, policy, model, optimizer, scheduler, items, val_items, reward, sandbox,
                 ItemStream(len(items), cfg.seed), None, anchor, FitCache(cfg.max_new_tokens))


def _core(policy: Policy):
    from cad_recode.model.generation import core_model

    return core_model(policy.model)
