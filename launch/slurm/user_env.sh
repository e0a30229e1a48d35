#!/usr/bin/env bash
# Print the user variables every rank needs (W&B, Hugging Face cache/token, NCCL settings, the
# torch extensions cache) as NAME=value lines: the format of DeepSpeed's .deepspeed_env file.
#   launch/slurm/user_env.sh > .deepspeed_env     # before a pdsh/ssh multi-node launch
# Under Slurm nothing needs this file: sbatch and srun --export=ALL carry the whole environment.
set -euo pipefail
pattern='^(WANDB_|HF_|HUGGING_FACE_|TRANSFORMERS_|NCCL_|TORCH_NCCL_|TORCH_EXTENSIONS_DIR$|OMP_NUM_THREADS$)'
for name in $(compgen -e | grep -E "$pattern" | sort); do
  value=${!name}
  # the file is read line by line: a value with a newline cannot be carried
  [[ $value == *$'\n'* ]] && { echo "user_env.sh: skipping $name (its value has a newline)" >&2; continue; }
  echo "$name=$value"
done
