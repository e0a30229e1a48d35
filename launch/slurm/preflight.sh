#!/usr/bin/env bash
# Run once per node before training: prove the node answers and show which of the variables users
# rely on arrived there. Secrets are reported as set/unset, never printed.
set -euo pipefail
secret='^(WANDB_API_KEY|HF_TOKEN|HUGGING_FACE_HUB_TOKEN)$'
shown=()
for name in $(compgen -e | grep -E '^(WANDB_|HF_|HUGGING_FACE_|TRANSFORMERS_|NCCL_|TORCH_EXTENSIONS_DIR$|CUDA_VISIBLE_DEVICES$)' | sort); do
  if [[ $name =~ $secret ]]; then shown+=("$name=<set>"); else shown+=("$name=${!name}"); fi
done
gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
echo "[preflight] node=${SLURMD_NODENAME:-?} host=$(hostname -s) node_rank=${SLURM_NODEID:-?} gpus=$gpus" \
     "python=$(command -v python) env: ${shown[*]:-(none of WANDB_* HF_* NCCL_* set)}"
