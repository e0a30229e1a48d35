#!/usr/bin/env bash
# A real Slurm cluster on this one machine, for CI and for trying launch/slurm/train.sbatch:
# Debian's slurm-wlm with one slurmctld and two slurmd daemons emulating nodes n1 and n2.
#
#   launch/slurm/local_cluster.sh up       install (apt, if missing), configure, start; idempotent
#   launch/slurm/local_cluster.sh down     stop the daemons this script started (by recorded PID)
#   launch/slurm/local_cluster.sh status   exit 0 if the controller answers and both nodes are up
#   launch/slurm/local_cluster.sh env      print `export SLURM_CONF=...` for the client commands
#
# Needs root (apt-get, daemons). No systemd: the daemons run as plain background processes.
# Everything lives under $SLURM_LOCAL_DIR with its own slurm.conf (clients find it through
# SLURM_CONF), so an existing /etc/slurm on the machine is never touched.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/tmp/higgs-ds-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-16817}   # not 6817: leave a system slurmctld's port alone
NODES=(n1 n2)
export SLURM_CONF=$CONF

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and apt-get is missing: install Slurm by hand"
  echo "[local_cluster] apt-get install slurm-wlm munge"
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: 9 packages instead of 43 (hdf5/rrd/ipmi plugins are not needed)
  { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >"$DIR/apt.log" 2>&1 \
    || die "apt-get install slurm-wlm munge failed (log: $DIR/apt.log):
$(tail -n 20 "$DIR/apt.log")"
}

write_config() {
  local host ncpu per mem
  host=$(hostname -s)
  ncpu=$(nproc)
  per=$(( ncpu / ${#NODES[@]} )); [ "$per" -ge 1 ] || per=1
  mem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 85 / 100 / ${#NODES[@]} ))
  {
    echo "# written by launch/slurm/local_cluster.sh: two emulated nodes on $host"
    cat <<EOF
ClusterName=higgslocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
MailProg=/bin/true
MpiDefault=none
# linuxproc/none: no cgroups needed; with cgroups both emulated nodes would pin tasks to CPU 0
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
ReturnToService=2
SlurmUser=root
SlurmctldPidFile=$DIR/slurmctld.daemon.pid
StateSaveLocation=$DIR/state
SchedulerType=sched/backfill
# a requeued job whose start time has come starts within a second, not at the next 30-60 s pass
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
KillWait=30
SlurmctldDebug=info
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdDebug=info
SlurmdPidFile=$DIR/slurmd-%n.daemon.pid
SlurmdSpoolDir=$DIR/spool/%n
SlurmdLogFile=$DIR/log/slurmd-%n.log
EOF
    local port=17001 n
    for n in "${NODES[@]}"; do
      # NodeAddr: the emulated names do not resolve, jobs must use this address (train.sbatch does)
      echo "NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=$per RealMemory=$mem State=UNKNOWN"
      port=$((port + 1))
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  } >"$CONF"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi   # a munged is already serving
  [ -s /etc/munge/munge.key ] || {
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  }
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  cp /run/munge/munged.pid "$DIR/munged.pid"   # ours: `down` stops it
  for _ in $(seq 50); do munge -n | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  die "munged started but does not answer (munge -n | unmunge)"
}

nodes_ready() {  # every node answers (busy is fine: `up` must not restart under a running job)
  local states
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  [ "$(grep -cE ' (idle|mixed|allocated|completing)$' <<<"$states")" -eq ${#NODES[@]} ]
}

cmd_up() {
  [ "$(id -u)" -eq 0 ] || die "needs root (apt-get install, /etc/munge, daemons): run it with sudo"
  mkdir -p "$DIR"/{state,log} "${NODES[@]/#/$DIR/spool/}"   # slurmd does not create its %n spool dir
  if alive "$DIR/slurmctld.pid" && nodes_ready; then echo "[local_cluster] already up ($CONF)"; return; fi
  cmd_down >/dev/null
  install_packages
  write_config
  start_munge
  # -c: start with no saved jobs from an earlier session; -D: stay in the foreground under nohup
  nohup /usr/sbin/slurmctld -D -c -f "$CONF" >>"$DIR/log/slurmctld.stderr" 2>&1 &
  echo $! >"$DIR/slurmctld.pid"
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  scontrol ping | grep -q UP || die "slurmctld did not come up: $(tail -n 20 "$DIR/log/slurmctld.log" 2>&1)"
  local n
  for n in "${NODES[@]}"; do
    nohup /usr/sbin/slurmd -D -N "$n" -f "$CONF" >>"$DIR/log/slurmd-$n.stderr" 2>&1 &
    echo $! >"$DIR/slurmd-$n.pid"
  done
  for _ in $(seq 150); do nodes_ready && break; sleep 0.2; done
  nodes_ready || die "nodes did not become idle: $(sinfo -N 2>&1); see $DIR/log/"
  echo "[local_cluster] up: $(sinfo -h -N -o '%N=%T' | tr '\n' ' ')(SLURM_CONF=$CONF)"
}

cmd_down() {
  local f pid
  for f in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$f"
  done
  echo "[local_cluster] down"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) alive "$DIR/slurmctld.pid" && nodes_ready ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
