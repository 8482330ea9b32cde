#!/usr/bin/env bash
# Set up .venv (CPU, offline after install) and run the default job end to end.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
.venv/bin/cad-recode --help
