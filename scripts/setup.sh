#!/usr/bin/env bash
# Create .venv and install the project for the CPU path (offline-capable after this).
# GPU users: install the CUDA build of torch that matches their driver first, then
# `pip install -e .` (see README, "GPU path").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! touch .write-test 2>/dev/null; then
  echo "setup: error: cannot write to $(pwd); run from a writable checkout" >&2
  exit 2
fi
rm -f .write-test

# The sandbox confines every program with bubblewrap (bwrap); it refuses to run without it.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null
  else
    echo "setup: note: bubblewrap is not installed; the sandbox that runs CadQuery programs needs it:" >&2
    echo "setup: note:   sudo apt-get install bubblewrap    (Fedora: sudo dnf install bubblewrap)" >&2
    echo "setup: note: without it, program-running commands refuse to start (or run UNSAFE with --unsafe_no_os_sandbox)" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# The CPU build of torch: pinned, so pip does not pull the multi-GB CUDA build.
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
echo "setup: ready ($VENV)"
