#!/usr/bin/env bash
# The offline default, end to end on the CPU:
#   set up .venv -> generate broad programs (every family of simple parts, labelled) -> prepare them
#   -> train the tiny model
#   -> evaluate on the held-out test split -> reconstruct the built-in cube.
# Everything lands under $WORKDIR (runs/tiny). A second run reuses every finished stage;
# an interrupted run continues where it stopped.
#
# Knobs (environment variables), e.g. for a smoke run:
#   QUICKSTART_PROGRAMS=60 QUICKSTART_TRAIN_FLAGS="--max_steps 4" QUICKSTART_EVAL_LIMIT=4 bash quickstart.sh
# QUICKSTART_EVAL_CANDIDATES is N of best-of-N at evaluation (N point draws, closest valid solid to the input);
# QUICKSTART_REFINE is the sandbox runs that fit each winner's numbers to the input points (0: off).
# QUICKSTART_LEVEL is the generator level (broad: every family of simple parts; simple: the narrow first level).
# QUICKSTART_MINUTES is the time for data, training and evaluation (default 20; setup not counted; 0 = no limit):
# on a slower machine training takes fewer steps (max_minutes), so that the run still ends in time.
set -euo pipefail
cd "$(dirname "$0")"

WORKDIR=${WORKDIR:-runs/tiny}
PROGRAMS=${QUICKSTART_PROGRAMS:-12000}
LEVEL=${QUICKSTART_LEVEL:-broad}
WORKERS=${QUICKSTART_WORKERS:-2}
EVAL_LIMIT=${QUICKSTART_EVAL_LIMIT:-100}
EVAL_CANDIDATES=${QUICKSTART_EVAL_CANDIDATES:-4}
REFINE=${QUICKSTART_REFINE:-120}
TRAIN_FLAGS=${QUICKSTART_TRAIN_FLAGS:-}
SKIP_SETUP=${QUICKSTART_SKIP_SETUP:-0}
MINUTES=${QUICKSTART_MINUTES:-20}

say() { printf '\n==> %s\n' "$*"; }

mkdir -p "$WORKDIR" 2>/dev/null && touch "$WORKDIR/.write-test" 2>/dev/null || {
  echo "quickstart: error: cannot write to $WORKDIR; run from a writable checkout or set WORKDIR" >&2
  exit 2
}
rm -f "$WORKDIR/.write-test"
[[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || {
  echo "quickstart: error: QUICKSTART_MINUTES must be a number of minutes (0 = no limit), got '$MINUTES'" >&2
  exit 2
}

if [ "$SKIP_SETUP" != 1 ]; then
  say "setting up .venv (CPU build of torch; nothing is downloaded after this)"
  bash scripts/setup.sh
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
CLI=".venv/bin/cad-recode"
CLOCK=$(date +%s)  # QUICKSTART_MINUTES counts from here

PROGRAMS_DIR="$WORKDIR/programs"
DATA_DIR="$WORKDIR/data"
MODEL_DIR="$WORKDIR/model"
EVAL_DIR="$WORKDIR/eval"
CUBE_DIR="$WORKDIR/cube"

if [ -f "$PROGRAMS_DIR/manifest.json" ]; then
  # programs from another generator version or level would silently train a model on other shapes
  .venv/bin/python - "$PROGRAMS_DIR/manifest.json" "$WORKDIR" "$LEVEL" <<'PY' || exit 2
import json, sys
from cad_recode.data.generator import GENERATOR_VERSION
manifest, workdir, level = sys.argv[1:]
try:
    made_by = json.load(open(manifest, encoding="utf-8"))
except (OSError, ValueError) as err:
    sys.exit(f"quickstart: error: {manifest} is unreadable ({err}); remove {workdir} (or set WORKDIR) and run again")
made = made_by.get("generator_version")
if made != GENERATOR_VERSION:
    sys.exit(f"quickstart: error: {workdir} holds programs of generator version {made}, this checkout writes "
             f"version {GENERATOR_VERSION}; remove {workdir} (or set WORKDIR to a new folder) and run again")
if made_by.get("complexity") != level:
    sys.exit(f"quickstart: error: {workdir} holds {made_by.get('complexity')} programs, this run asks for {level} "
             f"(QUICKSTART_LEVEL); remove {workdir} (or set WORKDIR to a new folder) and run again")
PY
  say "programs: reusing $PROGRAMS_DIR"
else
  say "programs: generating $PROGRAMS $LEVEL CAD-Recode-style programs"
  rm -rf "$PROGRAMS_DIR"
  # broad (and simple) programs are valid by construction; the next stage runs each one in the sandbox anyway
  $CLI data generate --num "$PROGRAMS" --complexity "$LEVEL" --seed 0 --no_execute --output_dir "$PROGRAMS_DIR"
fi

say "data: executing and tessellating the programs into $DATA_DIR (resumable)"
$CLI data prepare --src "$PROGRAMS_DIR" --output_dir "$DATA_DIR" --workers "$WORKERS" --resume
DATA_SECONDS=$(( $(date +%s) - CLOCK ))

# Training gets the minutes that data left, less a reserve for what follows: the test split's evaluation
# runs in the sandbox as data preparation does, so its share grows with preparation's time on this machine
# (1.1x to 1.3x it), plus 105 s for training's own evaluations and saving. Steps get 90 % of what is left:
# training settles its count on its own warmup steps (max_minutes), but the machine may still slow down after.
budget_flags() {
  .venv/bin/python - "$MINUTES" "$(( $(date +%s) - CLOCK ))" "$DATA_SECONDS" <<'PY'
import sys
minutes, spent, data = (float(arg) for arg in sys.argv[1:])
if minutes == 0:  # no limit: no flag
    sys.exit(0)
left = minutes * 60 - spent - (1.3 * max(data, 120) + 105)
if 0.9 * left < 60:
    print(f"quickstart: warning: QUICKSTART_MINUTES={minutes:g} leaves no time to train after {spent:.0f} s of "
          "data; training 1 minute (the run will take longer)", file=sys.stderr)
print(f"--max_minutes {max(0.9 * left, 60) / 60:.2f}")
PY
}

if [ -f "$MODEL_DIR/config.yaml" ] && { [ -f "$MODEL_DIR/model.safetensors" ] || [ -f "$MODEL_DIR/adapter_model.safetensors" ]; }; then
  say "train: reusing the trained model in $MODEL_DIR"
else
  BUDGET=$(budget_flags)
  say "train: the tiny model (configs/train_config_tiny.yaml)${BUDGET:+, at most ${BUDGET#--max_minutes } minutes of steps to end within $MINUTES minutes}; TensorBoard logs in $MODEL_DIR/runs"
  # shellcheck disable=SC2086  # TRAIN_FLAGS and BUDGET are lists of flags
  $CLI train --config configs/train_config_tiny.yaml --data_dir "$DATA_DIR" --output_dir "$MODEL_DIR" \
    --resume_from_checkpoint auto $BUDGET $TRAIN_FLAGS
fi

# Evaluation and the cube are reused only when what they read is unchanged: the model's weights,
# the settings below and the installed cad-recode (its version and sources).
stage_key() {
  { sha256sum "$MODEL_DIR"/*.safetensors 2>/dev/null; echo "$*";
    find src/cad_recode -name '*.py' -newer "$MODEL_DIR/config.yaml" -print 2>/dev/null; } | sha256sum | cut -c1-16
}
EVAL_KEY=$(stage_key eval "$EVAL_LIMIT" "$EVAL_CANDIDATES" "$REFINE")
if [ -f "$EVAL_DIR/summary.md" ] && [ "$(cat "$EVAL_DIR/.quickstart-key" 2>/dev/null)" = "$EVAL_KEY" ]; then
  say "eval: reusing $EVAL_DIR (same model and settings)"
else
  say "eval: the held-out test split (IR, CD x10^3, IoU), greedy, best of $EVAL_CANDIDATES point draws, refined with up to $REFINE sandbox runs"
  $CLI eval --model "$MODEL_DIR" --data "$DATA_DIR" --split test --limit "$EVAL_LIMIT" \
    --num_candidates "$EVAL_CANDIDATES" --refine "$REFINE" --output_dir "$EVAL_DIR" --workers "$WORKERS" --batch_size 8
  echo "$EVAL_KEY" > "$EVAL_DIR/.quickstart-key"
fi

CUBE_KEY=$(stage_key cube "$REFINE")
if [ -f "$CUBE_DIR/code.json" ] && [ "$(cat "$CUBE_DIR/.quickstart-key" 2>/dev/null)" = "$CUBE_KEY" ]; then
  say "infer: reusing $CUBE_DIR (same model and settings)"
else
  say "infer: reconstructing the built-in cube"
  # exit 1 = the model wrote no valid solid for the cube (reported, not fatal); 2 = a real error
  rc=0
  .venv/bin/python inference_lora.py --lora_path "$MODEL_DIR" --shape cube --refine "$REFINE" --output "$CUBE_DIR/code.py" || rc=$?
  [ "$rc" -le 1 ]
  echo "$CUBE_KEY" > "$CUBE_DIR/.quickstart-key"
fi

say "done"
cat <<EOF
  programs        $PROGRAMS_DIR
  prepared data   $DATA_DIR
  model           $MODEL_DIR   (TensorBoard: .venv/bin/tensorboard --logdir $MODEL_DIR)
  training curves $MODEL_DIR/training_curves.png
  evaluation      $EVAL_DIR/summary.json, $EVAL_DIR/per_item.csv
  cube            $CUBE_DIR/code.py (+ .stl, .step, .png, .json)

test split ($EVAL_DIR/summary.md):
EOF
cat "$EVAL_DIR/summary.md"
