#!/usr/bin/env python
"""RL after training, in the guide's script style: same as `cad-recode rl` (see `--help`).

    python train_cad_recode_rl.py --config configs/rl_config_tiny.yaml [--resume_from_checkpoint DIR|auto]
        [--mesh_dir MY_PARTS --reward iou_input] [--kl_beta 0.05] [--dry_run]
"""

import sys

from cad_recode.cli import main

if __name__ == "__main__":
    sys.exit(main(["rl", *sys.argv[1:]]))
