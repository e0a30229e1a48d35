#!/usr/bin/env bash
# One DeepSpeed launcher on this node (run by srun, one task per node); it starts the node's ranks.
#   ds_node.sh HOSTFILE launch/train.py [args...]
# Needs MASTER_ADDR and MASTER_PORT; the node rank is this node's index in the allocation.
set -euo pipefail
hostfile=$1
shift
: "${MASTER_ADDR:?set MASTER_ADDR}" "${MASTER_PORT:?set MASTER_PORT}" "${SLURM_NODEID:?run under srun}"
# The launcher processes ignore USR1 (its default action would kill them and with them the node's
# ranks); the ranks inherit the ignore and replace it with the training loop's checkpoint handler.
trap '' USR1
# --no_ssh: every node runs its own launcher, nothing is started over ssh/pdsh; --master_addr is
# required (otherwise the launcher ssh-es to the first host to look its address up). The launcher
# hands its whole environment to the ranks, so srun --export=ALL is all the propagation needed.
exec deepspeed --hostfile "$hostfile" --no_ssh --node_rank="$SLURM_NODEID" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" "$@"
