"""``cad-recode rl``: online RL of a trained model on point clouds, from a YAML config and flags.

Argument parsing only; the recipe is ``cad_recode.rl.loop``. Every RLConfig key is a flag
(``--kl_beta 0.05``, ``--mesh_dir my_parts --reward iou_input``), and a flag overrides the YAML
given with ``--config``. Runs unchanged under ``torchrun`` and ``accelerate launch``.
"""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``rl`` verb to the ``cad-recode`` parser."""
    from cad_recode.cli.flags import UNSAFE_HELP
    from cad_recode.config import add_config_arguments
    from cad_recode.rl.config import RLConfig

    parser = subparsers.add_parser(
        "rl",
        help="reinforcement learning of a trained model with a geometric reward (labelled data or your own meshes)",
        description="Improve a trained model by online RL: sample programs for each input, run them in the "
        "sandbox, reward their geometry (iou_gt with a prepared dataset; iou_input or cd_input with a folder of "
        "your own meshes), and update the policy (LoRA, QLoRA or full). Writes OUTPUT_DIR/{adapter files, "
        "config.yaml, checkpoint-N/, merged_model/, train_log.jsonl, rl_curves.png}.",
    )
    add_config_arguments(parser, RLConfig)
    parser.add_argument("--unsafe_no_os_sandbox", action="store_true", help=UNSAFE_HELP)
    parser.set_defaults(func=cmd_rl)


def cmd_rl(args) -> int:
    from cad_recode.atomic import check_writable
    from cad_recode.config import config_from_args
    from cad_recode.rl.config import RLConfig
    from cad_recode.rl.loop import run_rl

    cfg = config_from_args(args, RLConfig)
    if not cfg.dry_run:  # before the model and the data load
        check_writable(cfg.output_dir, folder=True, what="output_dir")
    result = run_rl(cfg)
    if result is not None:
        import os

        if os.environ.get("RANK", "0") == "0":
            print(f"rl: {result.updates} updates, {result.solved} inputs solved; wrote {result.output_dir}")
    return 0
