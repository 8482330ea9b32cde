"""The training recipe (SFT with LoRA, QLoRA or full fine-tuning) and what it writes.

    recipe.py         train(cfg): setup -> Trainer.train (resume) -> save_final -> cleanup
    checkpointing.py  the run folder, checkpoints, merged copies, resume checks, the JSON log
    plan.py           the --dry_run report: parameters and an estimate of peak memory
    curves.py         training_curves.png from train_log.jsonl
"""
