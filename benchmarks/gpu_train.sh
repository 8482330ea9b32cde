#!/usr/bin/env bash
# GPU training figures (issue 4): Qwen3-1.7B architecture, random weights, LoRA and QLoRA,
# gradient checkpointing off/on, tokens/s, MFU and peak VRAM. Fits one 10-minute call on an H100/H200.
#
#   bash benchmarks/gpu_train.sh [gpu_train.py flags]     # from anywhere; results in $OUT or ./gpu_train_results
#
# The GPU machine has no network and no bitsandbytes: wheels carried in .whl/ at the repo root are
# installed into /tmp/site first (all of them, so a newer transformers/peft can travel the same way).
# Without bitsandbytes the QLoRA rows say "not measured" and the LoRA rows still run.
# CPU logic check (no figures): python benchmarks/gpu_train.py --dry-cpu
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-$PWD/gpu_train_results}"
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"   # the package need not be installed there

if compgen -G ".whl/*.whl" >/dev/null; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl; then
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    echo "gpu_train.sh: installing the wheels in .whl/ failed; going on without them"
  fi
fi
python3 -c "import bitsandbytes" 2>/dev/null \
  || echo "gpu_train.sh: bitsandbytes cannot be imported: QLoRA will be skipped (carry its wheel in .whl/)"
if ! python3 -c "import cad_recode.model, cad_recode.training.recipe" 2>"$RESULTS/import_error.txt"; then
  echo "gpu_train.sh: cannot import cad_recode on this machine: $(tail -n 1 "$RESULTS/import_error.txt")"
  echo "gpu_train.sh: if transformers/peft there are too old, carry newer wheels in .whl/ (pip download --no-deps)"
  exit 2
fi
rm -f "$RESULTS/import_error.txt"
nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1 || true

# 570 s: the Python side stops starting new measurements after --budget-s (480 s) and writes its
# tables after every row, so even a run cut here leaves gpu_train.md / gpu_train.json behind.
timeout 570 python3 benchmarks/gpu_train.py --out "$RESULTS" "$@" 2>&1 | tee "$RESULTS/gpu_train.log"
exit "${PIPESTATUS[0]}"
