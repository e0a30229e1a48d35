#!/usr/bin/env bash
# Run once per node before training: prove the node answers and show which of the user variables
# (launch/slurm/user_env.sh) arrived there. Secrets are shown as <set>, never printed.
set -euo pipefail
env_line=$("$(dirname "$0")/user_env.sh" \
  | sed -E 's/^(WANDB_API_KEY|HF_TOKEN|HUGGING_FACE_HUB_TOKEN)=.*/\1=<set>/' | tr '\n' ' ')
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
echo "[preflight] node=${SLURMD_NODENAME:-?} host=$(hostname -s) node_rank=${SLURM_NODEID:-?} gpus=$gpus" \
     "python=$(command -v python) env: ${env_line:-(no WANDB_/HF_/NCCL_ variables set)}"
