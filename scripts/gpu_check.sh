#!/usr/bin/env bash
# One-command device check, each stage in its own time slot, in the order that finds the most bugs per
# second: setup (offline venv), the product end to end on one GPU (train with the DeepSpeed launcher and
# NCCL, save, resume, export both layouts, generate a wav and score it), kernel tests with the interpreter
# off, benchmarks at the released shapes, and a memory probe of the released width. --dry runs the same
# stages at toy sizes on the CPU; without --dry and without a CUDA device it stops with an error.
#
#   scripts/gpu_check.sh [--dry] [--budget SECONDS] [--out DIR] [--work DIR] [--wheels DIR] [--data DIR]
#                        [--stages a,b]
#
# Results: $OUT (default runs/gpu_check): summary.md, summary.json, gpu_check.log and one log per stage.
# Missing Python packages come, offline, from the wheel folder (default .gpu_wheels, filled by
# `make gpu-wheels`). Details: scripts/gpu_check/run.py and docs/gpu.md.
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
