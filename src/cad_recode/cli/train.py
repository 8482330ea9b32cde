"""``cad-recode train``: LoRA / QLoRA / full fine-tuning from a YAML config and flags.

Argument parsing only; the recipe is ``cad_recode.training.recipe``. The CLI hands it the
generation-metrics evaluator (``cad_recode.evaluate.GenerationMetrics``), so the recipe
itself never imports inference. Every config key is
also a flag (``--lora_r 8``, ``--use_qlora``, ``--resume_from_checkpoint auto``),
and a flag overrides the YAML given with ``--config``.
"""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``train`` verb to the ``cad-recode`` parser."""
    from cad_recode.config import add_config_arguments

    parser = subparsers.add_parser(
        "train",
        help="fine-tune the point encoder + LM (LoRA, QLoRA or full)",
        description="Train CAD-Recode on a prepared dataset. Writes OUTPUT_DIR/{adapter files, tokenizer, "
        "config.yaml, checkpoint-N/, merged_model/} (a full fine-tune writes the whole model instead of an "
        "adapter). Runs unchanged under `accelerate launch` and `torchrun`.",
    )
    add_config_arguments(parser)
    parser.set_defaults(func=cmd_train)

    curves = subparsers.add_parser(
        "curves",
        help="plot a training run's loss and validation IoU against steps",
        description="Redraw OUTPUT_DIR/training_curves.png from OUTPUT_DIR/train_log.jsonl (training writes it "
        "at the end; this works during a run too).",
    )
    curves.add_argument("output_dir", help="the training output_dir")
    curves.add_argument("--output", help="where to write the PNG (default OUTPUT_DIR/training_curves.png)")
    curves.set_defaults(func=cmd_curves)


def cmd_train(args) -> int:
    from cad_recode.config import config_from_args
    from cad_recode.evaluate import GenerationMetrics
    from cad_recode.training.recipe import train

    from cad_recode.atomic import check_writable

    cfg = config_from_args(args)
    if not cfg.dry_run:  # before the data and the model load, not at the first checkpoint
        check_writable(cfg.output_dir, folder=True, what="output_dir")
    train(cfg, generation_metrics=GenerationMetrics)
    return 0


def cmd_curves(args) -> int:
    from cad_recode.atomic import check_writable
    from cad_recode.training.curves import write_run_curves

    if args.output:
        check_writable(args.output)
    print(f"wrote {write_run_curves(args.output_dir, args.output)}")
    return 0
