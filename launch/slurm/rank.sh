#!/usr/bin/env bash
# One training rank under `srun` (one task per GPU). launch/train.py maps SLURM_PROCID /
# SLURM_LOCALID / SLURM_NTASKS to RANK / LOCAL_RANK / WORLD_SIZE itself.
set -euo pipefail
# Ignore USR1 until the training loop installs its own handler: a preemption warning that arrives
# during start-up must not kill the rank (the default action of USR1 is to terminate).
trap '' USR1
exec "$@"
