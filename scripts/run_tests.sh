#!/usr/bin/env bash
# `make test`: every test, as two pytest processes at once. The in-process tier (one core, about 1.5 min)
# runs next to the tiers that start processes (ranks, command lines, the GPU-check rehearsal, Slurm),
# which leave one of the two cores of a small machine idle about a third of the time. The markers keep the
# two apart: an in-process test starts no rank and touches nothing of another test's. Its report is
# printed after theirs; the exit status is the first non-zero one. Extra arguments go to both.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
log=$(mktemp "${TMPDIR:-/tmp}/higgs-ds-in-process-tier.XXXXXX")
start=$SECONDS

"$PY" -m pytest -q --durations=10 -m "not integration and not cluster and not gpu" "$@" >"$log" 2>&1 &
in_process=$!
trap 'kill "$in_process" 2>/dev/null; rm -f "$log"' EXIT

echo "[test] the in-process tier runs in the background; its report follows this one"
"$PY" -m pytest -q --durations=25 -m "integration or cluster or gpu" "$@"
processes_rc=$?
wait "$in_process"
in_process_rc=$?

echo
echo "==== the in-process tier (it ran at the same time) ===="
cat "$log"
echo "[test] both tiers: $((SECONDS - start)) s; exit status $processes_rc (processes), $in_process_rc (in-process)"
if [ "$processes_rc" -ne 0 ]; then exit "$processes_rc"; fi
exit "$in_process_rc"
