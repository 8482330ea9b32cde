"""The training recipe: LoRA / QLoRA / full fine-tuning of point encoder + causal LM.

    train(cfg)   check inputs -> setup -> (max_minutes: time a few steps, fix max_steps)
                 -> Trainer.train (resume) -> save_final -> cleanup
    setup(cfg)   tokenizer, datasets, model (LoRA / 4-bit base / full), merge base loader

Helpers: :mod:`cad_recode.training.checkpointing` (output layout, checkpoints,
merging, resume checks), :mod:`cad_recode.training.plan` (the --dry_run report),
:mod:`cad_recode.training.curves` (the curves PNG). Generation metrics at
evaluation (IR, CD, IoU) come from a ``generation_metrics`` factory the caller
injects (the CLI passes :class:`cad_recode.evaluate.GenerationMetrics`): training
never imports inference or evaluation.

Why the Hugging Face Trainer and not an own accelerate loop: the Trainer already
gives, tested by many users, every runtime feature the guide promises --
TensorBoard (``report_to``), a tqdm bar, gradient accumulation with
token-weighted loss, bf16/fp16 autocast, gradient checkpointing,
``save_total_limit`` rotation, the same script under ``accelerate launch`` and
``torchrun`` (DDP, gloo on CPU), and exact resume: adapter/projector weights,
optimizer, scheduler, per-rank RNG and the data position (batches are skipped
at the sampler, not loaded). Its per-step work beyond forward/backward/step is
a few tensor ops and callback calls, so the recipe stays near a bare loop.
What is project-specific is kept small and visible here and in
:mod:`cad_recode.training.checkpointing`: the optimizer's parameter groups (the
projector has its own learning rate), the point-sampling epoch, the
generation metrics at evaluation, merging at checkpoints into a separate
full-precision copy (never the live model), and the final output layout.

Launching: ``torchrun --nproc_per_node N train_cad_recode_lora.py --config ...`` or
``accelerate launch --multi_gpu --num_processes N train_cad_recode_lora.py ...``
(also on CPU-only hosts, where it runs gloo; ``accelerate launch --cpu`` starts
a single process). Only rank 0 writes, except each rank's RNG state file in
``checkpoint-N/`` that exact resuming needs.

Determinism: items draw their points from a seed of (seed, epoch, record), the
sampler is seeded per epoch, and side jobs (merging, evaluation) run under
:func:`cad_recode.training.checkpointing.preserved_rng`, so a resumed run reproduces the
losses of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from cad_recode.config import TRAIN_TOKENIZERS, TrainConfig, save_config
from cad_recode.errors import InputError
from cad_recode.model.loading import MERGED_DIR, RUN_CONFIG
from cad_recode.training import checkpointing as ckpt
from cad_recode.training.curves import write_run_curves

# Builds the generation-metrics evaluator of a run: (validation split, tokenizer, cfg) -> evaluator,
# where ``evaluator(model)`` returns {"ir", "cd_mean", "cd_median", "iou"} and ``evaluator.close()``
# frees its sandbox. Injected by the caller so that training does not import inference.
GenerationMetricsFactory = Callable[[Any, Any, TrainConfig], Any]

# --------------------------------------------------------------------------- the run


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    train_loss: float
    resumed_from: Path | None


def train(cfg: TrainConfig, callbacks: list[TrainerCallback] | None = None, *,
          generation_metrics: GenerationMetricsFactory | None = None) -> TrainResult | None:
    """Run the recipe for ``cfg``; ``cfg.dry_run`` only prints the plan. Returns None for a dry run.

    ``callbacks``: extra ``transformers.TrainerCallback`` objects, called after the recipe's own.
    ``generation_metrics``: with ``do_eval``, builds the evaluator of IR, CD and IoU on validation
    shapes (see GenerationMetricsFactory); without it evaluation measures the loss only.
    """
    if cfg.dry_run:
        from cad_recode.training.plan import plan

        print(plan(cfg).format())
        return None
    resume = ckpt.resolve_resume(cfg)
    notice = ckpt.resume_notice(cfg, resume)
    if notice and os.environ.get("RANK", "0") == "0":  # once, not per process under torchrun
        print(notice, file=sys.stderr, flush=True)
    ckpt.check_output_dir(cfg, resume)
    if resume is not None:
        ckpt.validate_checkpoint(resume, cfg)
    run = setup(cfg, resume)
    if cfg.max_minutes is not None:
        run = fit_to_budget(run, resume)
    trainer = build_trainer(run, callbacks, generation_metrics)
    output_dir = Path(cfg.output_dir)
    if trainer.is_world_process_zero():
        if cfg.overwrite_output_dir and resume is None:
            ckpt.clear_previous_run(output_dir)
        save_config(run.cfg, output_dir / RUN_CONFIG)
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        if trainer.is_world_process_zero():
            save_final(run, trainer.model)
        trainer.accelerator.wait_for_everyone()
    finally:
        cleanup(trainer)
    return TrainResult(output_dir, result.global_step, result.training_loss, resume)


def fit_to_budget(run: Run, resume: Path | None) -> Run:
    """``run`` set to the steps its ``max_minutes`` holds (`cad_recode.training.budget`); says what it chose."""
    from cad_recode.training.budget import fit_to_budget as fit

    args = training_arguments(run.cfg)
    run, budget = fit(run, resume, args)
    if args.process_index == 0:
        print(budget.line(run.cfg.max_minutes), file=sys.stderr, flush=True)
    return dataclasses.replace(run, budget=budget)


def build_trainer(run: Run, extra_callbacks: list[TrainerCallback] | None = None,
                  generation_metrics: GenerationMetricsFactory | None = None) -> CadRecodeTrainer:
    cfg = run.cfg
    evaluator = None
    if cfg.do_eval and generation_metrics is not None:
        evaluator = generation_metrics(run.eval_dataset.split, run.tokenizer, cfg)
    callbacks = [
        EpochCallback(run.train_dataset),
        ckpt.CheckpointCallback(cfg, run.tokenizer, run.base_loader),
        ckpt.JsonLogCallback(),
        *(extra_callbacks or []),
    ]
    retime = run.budget is not None and run.budget.retime_at is not None
    # a budget settled during the warmup: the Trainer's epochs and data are sized for the most it may allow
    args = training_arguments(dataclasses.replace(cfg, max_steps=run.budget.most_steps) if retime else cfg)
    trainer = CadRecodeTrainer(
        model=run.model, args=args, data_collator=run.collator,
        train_dataset=run.train_dataset, eval_dataset=run.eval_dataset, processing_class=run.tokenizer,
        callbacks=callbacks, cfg=cfg, shape_evaluator=evaluator,
    )
    if retime:
        from transformers.trainer_callback import ProgressCallback

        from cad_recode.training.budget import RetimeCallback

        progress = next((c for c in trainer.callback_handler.callbacks if isinstance(c, ProgressCallback)), None)
        trainer.add_callback(RetimeCallback(run.budget, cfg, Path(cfg.output_dir) / RUN_CONFIG, progress))
    return trainer


def save_final(run: Run, model) -> None:
    """The final outputs of design.md §3 (rank 0 only); see cad_recode.checkpointing for the layout."""
    cfg, out = run.cfg, Path(run.cfg.output_dir)
    try:
        write_run_curves(out)
    except InputError:  # a run too short to log a loss has no curves
        pass
    if not cfg.uses_lora:
        ckpt.save_full_model(model, run.tokenizer, cfg, out)
        return
    if cfg.adapter_at_end:
        ckpt.save_adapter(model, run.tokenizer, cfg, out)
    else:
        run.tokenizer.save_pretrained(out)
    if cfg.merge_at_end:
        ckpt.save_merged_copy(model, run.base_loader, run.tokenizer, out / MERGED_DIR)


def cleanup(trainer: CadRecodeTrainer) -> None:
    if trainer.shape_evaluator is not None:
        trainer.shape_evaluator.close()


# --------------------------------------------------------------------------- setup


@dataclass
class Run:
    """Everything a training run is made of; ``setup`` builds it, ``train`` uses it."""

    cfg: TrainConfig
    model: torch.nn.Module  # PeftModel (lora, qlora) or CADRecodeForCausalLM (full)
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any | None
    collator: Any
    base_loader: Callable[[], torch.nn.Module] | None  # fresh full-precision base, for merging
    resume: Path | None = None
    budget: Any = None  # cad_recode.training.budget.StepBudget, under max_minutes


def setup(cfg: TrainConfig, resume: Path | None = None) -> Run:
    """Tokenizer, datasets and model, ready for the Trainer. Raises one-line errors on bad input."""
    from transformers import set_seed

    from cad_recode.data.dataset import PointCodeCollator, PointCodeDataset
    from cad_recode.geometry.augment import ScanAugmentation

    set_seed(cfg.seed)
    train_split = open_split(cfg, "train")
    eval_split = open_split(cfg, "val") if cfg.do_eval else None
    tokenizer = load_run_tokenizer(cfg, train_split, resume)
    datasets = {}
    for name, split in (("train", train_split), ("val", eval_split)):
        if split is None:
            continue
        datasets[name] = PointCodeDataset(
            split, tokenizer, n_points=cfg.num_point_tokens, n_surface=cfg.num_surface_points,
            augmentation=scan_augmentation(cfg) if name == "train" else ScanAugmentation.off(),
            max_code_tokens=cfg.max_code_tokens, overflow=cfg.overflow, seed=cfg.seed,
        )
        if len(datasets[name]) == 0:
            raise InputError(
                f"{cfg.data_dir}: no {name} program fits max_code_tokens={cfg.max_code_tokens} "
                f"({datasets[name].num_dropped} dropped); raise max_code_tokens or use overflow truncate"
            )
    if cfg.family_weights is not None:
        apply_family_weights(cfg, datasets["train"])
    set_seed(cfg.seed)  # the model's random init must not depend on how much the data steps drew
    model, base_loader = build_model(cfg, vocab_size=len(tokenizer))
    if resume is not None:
        check_weights_fit(model, resume, cfg)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else datasets["train"].end_id
    return Run(cfg, model, tokenizer, datasets["train"], datasets.get("val"), PointCodeCollator(pad_id), base_loader, resume)


def scan_augmentation(cfg: TrainConfig):
    """The training items' scan defects (noise, uneven density, a missing side) from the config."""
    from cad_recode.geometry.augment import ScanAugmentation

    return ScanAugmentation(
        noise_prob=cfg.noise_prob, noise_std=cfg.noise_std, uneven_prob=cfg.uneven_prob,
        uneven_strength=cfg.uneven_strength, missing_side_prob=cfg.missing_side_prob,
        missing_fraction=cfg.missing_fraction,
    )


def apply_family_weights(cfg: TrainConfig, dataset) -> None:
    """Make the training items follow ``cfg.family_weights`` (see `cad_recode.data.mixture`); print the mix."""
    from cad_recode.data.labels import family_names, read_family_labels
    from cad_recode.data.mixture import family_shares, weighted_epoch

    labels = read_family_labels(cfg.data_dir)
    ids = list(dataset.split.ids())
    records = dataset.kept_records
    families = [labels.get(ids[int(r)]) for r in records]
    unlabelled = sum(f is None for f in families)
    if unlabelled:
        raise InputError(f"family_weights needs a family label for every training program; {unlabelled} of "
                         f"{len(families)} in {cfg.data_dir} have none (only generated data carries labels)")
    # a family the data's level knows but no training program drew (a small dataset) is not a typo
    absent = set(family_names(cfg.data_dir)) - set(families)
    weights = {name: w for name, w in cfg.family_weights.items() if name not in absent}

    def draw(epoch: int):  # seeded by (run seed, epoch): a resumed run draws the same epochs
        return weighted_epoch(records, families, weights, (cfg.seed, epoch))

    dataset.use_mixture(draw)  # draws the current epoch: bad weights fail here
    family_of = dict(zip(records.tolist(), families))
    before, after = family_shares(records, family_of), family_shares(dataset.records, family_of)
    if int(os.environ.get("RANK", "0")) == 0:
        print("training mix (family: share in the data -> share of training draws): "
              + ", ".join(f"{name} {100 * before[name]:.0f}% -> {100 * after.get(name, 0):.0f}%" for name in before),
              file=sys.stderr)


def open_split(cfg: TrainConfig, split: str):
    from cad_recode.data.shards import PreparedSplit

    root = Path(cfg.data_dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"data_dir {root} is a file, not a folder; point --data_dir at the folder that "
                         "`cad-recode data prepare` wrote (it holds manifest.json)")
    if not root.is_dir():
        raise InputError(
            f"data_dir {root} not found; prepare a dataset with `cad-recode data prepare --src PROGRAMS "
            f"--output_dir {root}` or point --data_dir at one"
        )
    return PreparedSplit.open(root, split)


def load_run_tokenizer(cfg: TrainConfig, train_split, resume: Path | None):
    """The run's tokenizer: trained on the training programs (tiny runs), or the base model's own."""
    from cad_recode.model.builders import tiny_spec
    from cad_recode.model.loading import load_tokenizer
    from cad_recode.model.tokenizer import DEFAULT_VOCAB_SIZE, train_code_tokenizer

    if cfg.tokenizer in TRAIN_TOKENIZERS:
        if resume is not None:  # the resumed run must see exactly the ids it was trained with
            return load_tokenizer(resume)
        vocab = tiny_spec(cfg.tiny_model).get("vocab_size", DEFAULT_VOCAB_SIZE)
        return train_code_tokenizer(train_split.codes(), vocab_size=vocab, numbers=TRAIN_TOKENIZERS[cfg.tokenizer])
    return load_tokenizer(cfg.tokenizer or cfg.base_model, trust_remote_code=cfg.trust_remote_code)


def build_model(cfg: TrainConfig, vocab_size: int):
    """(model to train, loader of a fresh full-precision base for merges or None)."""
    from cad_recode.model import CADRecodeForCausalLM, apply_lora, load_base_lm, quantization_config
    from cad_recode.model.builders import build_tiny

    quantization = None
    if cfg.finetune_method == "qlora":
        quantization = quantization_config(cfg.bnb_4bit_compute_dtype, cfg.bnb_4bit_quant_type, cfg.bnb_4bit_use_double_quant)
    device_map = {"": torch.cuda.current_device()} if quantization is not None and torch.cuda.is_available() else None
    dtype = cfg.lm_dtype
    if cfg.tiny_model is not None:
        base_loader = lambda: build_tiny(cfg.tiny_model, vocab_size, cfg.seed)  # noqa: E731 - deterministic rebuild
        lm = base_loader().to(getattr(torch, dtype))
        if quantization is not None:  # the same 4-bit load path as a real checkpoint
            with tempfile.TemporaryDirectory(prefix="cad-recode-tiny-") as tmp:
                lm.save_pretrained(tmp)
                lm = load_base_lm(tmp, dtype=dtype, quantization=quantization, device_map=device_map)
    else:
        kwargs = dict(trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
        base_loader = lambda: load_base_lm(cfg.base_model, dtype=cfg.torch_dtype, **kwargs)  # noqa: E731
        lm = load_base_lm(cfg.base_model, dtype=dtype, quantization=quantization, device_map=device_map, **kwargs)
        if lm.get_input_embeddings().weight.shape[0] < vocab_size:
            raise InputError(f"tokenizer has {vocab_size} tokens but {cfg.base_model} only {lm.get_input_embeddings().weight.shape[0]}")
    model = CADRecodeForCausalLM.from_lm(lm, num_point_tokens=cfg.num_point_tokens,
                                         num_surface_points=cfg.num_surface_points)
    if not cfg.uses_lora:
        model.requires_grad_(True)
        return model, None
    model = apply_lora(
        model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules, gradient_checkpointing=cfg.gradient_checkpointing,
    )
    return model, base_loader


def check_weights_fit(model, checkpoint: Path, cfg: TrainConfig) -> None:
    """Every saved tensor must exist in this model with the same shape (else: another base model)."""
    from safetensors import safe_open

    if cfg.uses_lora:
        from peft import get_peft_model_state_dict

        expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items()}
        files = [checkpoint / "adapter_model.safetensors"]
    else:
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        files = sorted(checkpoint.glob("model*.safetensors"))
    for path in files:
        with safe_open(str(path), framework="pt") as reader:
            for key in reader.keys():
                shape = tuple(reader.get_slice(key).get_shape())
                if expected.get(key) != shape:
                    problem = f"{key}: saved {shape}, model {expected.get(key, 'has no such tensor')}"
                    raise ckpt.load_error(checkpoint, ValueError(problem))


# --------------------------------------------------------------------------- trainer


class CadRecodeTrainer(Trainer):
    """The Trainer with the projector's own learning rate, generation metrics at evaluation and, with
    ``group_by_length``, batches of like length (`cad_recode.data.batching`) whose tokens all weigh alike."""

    def __init__(self, *args, cfg: TrainConfig, shape_evaluator=None, **kwargs):
        self.cfg, self.shape_evaluator = cfg, shape_evaluator
        self._tokens_per_step: float | None = None
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            from cad_recode.model import optimizer_groups

            groups = optimizer_groups(self.model, self.cfg.learning_rate, self.cfg.projector_lr, self.cfg.weight_decay)
            self.optimizer = torch.optim.AdamW(
                groups, lr=self.cfg.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon,
            )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.cfg.group_by_length and model.training and num_items_in_batch is not None:  # not at evaluation
            # A length-grouped step holds programs of like length. Dividing its summed loss by its own token
            # count would weigh a token of a short program several times a long one's; the tokens of an
            # average step, a constant, weigh every token alike, as shuffled batches do.
            num_items_in_batch = torch.as_tensor(self.tokens_per_step(), device=num_items_in_batch.device)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def tokens_per_step(self) -> float:
        """Trained tokens (code + end token) of an average optimizer step, over all processes."""
        if self._tokens_per_step is None:
            per_item = float((self.train_dataset.item_lengths() - 1).mean())  # <|im_start|> is not a target
            processes = self.args.world_size if self.args.average_tokens_across_devices else 1
            self._tokens_per_step = per_item * self.args.per_device_train_batch_size \
                * self.args.gradient_accumulation_steps * processes
        return self._tokens_per_step

    def _get_train_sampler(self, train_dataset=None):
        if not self.cfg.group_by_length:
            return super()._get_train_sampler(train_dataset)
        from cad_recode.data.batching import LengthGroupedSampler

        # per device: under torchrun each process takes whole batches of this order in turn
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(dataset, self.args.per_device_train_batch_size, self.cfg.seed)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        with ckpt.preserved_rng():  # evaluation must not shift the training RNG streams
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            if self.shape_evaluator is not None and self.is_world_process_zero():
                shape = {f"{metric_key_prefix}_{k}": v for k, v in self.shape_evaluator(self.model).items()}
                self.log(shape)
                metrics.update(shape)
        return metrics


class EpochCallback(TrainerCallback):
    """Tell the dataset which epoch starts, so each epoch draws fresh (seeded) points."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(math.floor((state.epoch or 0.0) + 1e-6)))


def training_arguments(cfg: TrainConfig) -> TrainingArguments:
    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        eval_strategy="steps" if cfg.do_eval else "no",
        eval_steps=cfg.eval_steps,
        prediction_loss_only=True,
        seed=cfg.seed,
        dataloader_num_workers=cfg.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
        # Without CUDA, say so: accelerate then sets up multi-process CPU (gloo) under torchrun.
        use_cpu=not torch.cuda.is_available(),
    )
