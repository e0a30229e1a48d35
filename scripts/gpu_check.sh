#!/usr/bin/env bash
# One-command device check: kernel tests on the GPU (interpreter off), `pytest --benchmark` at the released
# model's shapes, and a few bf16 training steps with the Triton and the torch ops backends, all inside a
# time budget; stages that would not fit are skipped and said so. Without CUDA (or with --dry) it runs the
# same stages at toy sizes on the CPU to check its own plumbing, and says "no CUDA device".
#
#   scripts/gpu_check.sh [--dry] [--budget SECONDS] [--out DIR] [--work DIR] [--wheels DIR] [--stages a,b]
#
# Results: $OUT (default runs/gpu_check): summary.md, summary.json, gpu_check.log and one log per stage.
# Missing Python packages come, offline, from the wheel folder (default .gpu_wheels, filled by
# `make gpu-wheels`). Details: scripts/gpu_check/run.py and the README's "Checking on a GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

# The interpreter whose torch/triton the check uses: $PYTHON, else the project venv, else python3 (the
# device image's, which holds torch).
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
      PY=$candidate
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "[gpu-check] no Python with torch found (set PYTHON=...)" >&2
  exit 2
fi
exec "$PY" scripts/gpu_check/run.py "$@"
