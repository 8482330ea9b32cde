#!/usr/bin/env python
"""The guide's merge script: same as `cad-recode merge` (see `--help`).

    python merge_lora_weights.py --base_model BASE --lora_path RUN_DIR --output_path merged_model
"""

import sys

from cad_recode.cli import main

if __name__ == "__main__":
    sys.exit(main(["merge", *sys.argv[1:]]))
