#!/usr/bin/env bash
# Submit launch/slurm/train.sbatch with the cluster shape taken from variables:
#
#   NODES=4 GPUS_PER_NODE=8 TIME=2-00:00:00 PARTITION=gpu ACCOUNT=myacct \
#     launch/slurm/submit.sh steps=20000 model.init=/ckpt/higgs-audio-v2
#
#   NODES (2)           nodes
#   GPUS_PER_NODE (8)   GPUs per node = ranks per node; 0 = CPU ranks (RANKS_PER_NODE of them, default 1)
#   CPUS_PER_TASK       CPU cores per rank (default: Slurm's)
#   TIME (24:00:00)     wall-clock limit; the job requeues itself 300 s before it
#   PARTITION, ACCOUNT  passed as --partition / --account when set
#   SBATCH_ARGS         any further sbatch options, e.g. "--qos=high --exclusive"
# Other variables (LAUNCHER, RUN_DIR, CONFIG, WANDB_API_KEY, HF_HOME, NCCL_* ...) travel to the job.
# Arguments are key=value overrides for launch/train.py. Prints the job id.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODES=${NODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
opts=(--parsable --nodes="$NODES" --time="${TIME:-24:00:00}")
if [ "$GPUS_PER_NODE" -gt 0 ]; then
  # --gpus-per-node, not --gpus-per-task: every rank sees all of its node's GPUs and picks LOCAL_RANK
  opts+=(--ntasks-per-node="$GPUS_PER_NODE" --gpus-per-node="$GPUS_PER_NODE")
else
  opts+=(--ntasks-per-node="${RANKS_PER_NODE:-1}")
fi
[ -z "${CPUS_PER_TASK:-}" ] || opts+=(--cpus-per-task="$CPUS_PER_TASK")
[ -z "${PARTITION:-}" ] || opts+=(--partition="$PARTITION")
[ -z "${ACCOUNT:-}" ] || opts+=(--account="$ACCOUNT")
read -r -a extra <<<"${SBATCH_ARGS:-}"
mkdir -p runs/slurm   # train.sbatch's default --output lands here; sbatch does not create it
exec sbatch "${opts[@]}" ${extra[@]+"${extra[@]}"} launch/slurm/train.sbatch "$@"
