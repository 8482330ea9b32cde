#!/usr/bin/env python
"""The guide's training script: same as `cad-recode train` (see `--help`).

    python train_cad_recode_lora.py --config configs/train_config_lora.yaml [--use_qlora]
        [--resume_from_checkpoint DIR|auto] [--do_eval --eval_steps N] [--dry_run]
"""

import sys

from cad_recode.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
