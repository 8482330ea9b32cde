#!/usr/bin/env python
"""The guide's inference script: same as `cad-recode infer` (see `--help`).

    python inference_lora.py --base_model BASE --lora_path RUN_DIR --point_cloud_file part.npy [--output part.py]
    python inference_lora.py --base_model BASE --lora_path RUN_DIR --shape cube --output generated_code.py
"""

import sys

from cad_recode.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
