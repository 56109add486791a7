#!/bin/bash
# A one-node Slurm on this machine for the `slurm` tests: `local_slurm.sh start DIR` installs
# Debian's slurm-wlm and munge if missing, writes DIR/slurm.conf (export SLURM_CONF=DIR/slurm.conf
# to use it), starts munged, slurmctld and slurmd with their sockets, state, logs and pid files
# under DIR, and waits for the node to be idle; `local_slurm.sh stop DIR` stops exactly those
# daemons (by the pids in DIR). Every wait is bounded; a failure prints the daemons' logs.
set -euo pipefail
action=${1:?usage: local_slurm.sh start|stop DIR}
DIR=$(realpath -m "${2:?usage: local_slurm.sh start|stop DIR}")

# Gone, or a zombie nobody has reaped yet.
gone() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

stop_all() {
  for name in slurmd slurmctld munged; do
    [ -s "$DIR/$name.pid" ] || continue
    pid=$(cat "$DIR/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do gone "$pid" && break; sleep 0.1; done
    gone "$pid" || kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/$name.pid"
  done
  if [ -s "$DIR/munge_dir" ]; then
    rm -rf "$(cat "$DIR/munge_dir")"
    rm -f "$DIR/munge_dir"
  fi
}

fail() {
  echo "local_slurm: $*" >&2
  tail -n 20 "$DIR"/*.log "${MUNGE:-/nonexistent}"/*.log >&2 2>/dev/null || true
  stop_all
  exit 1
}

if [ "$action" = stop ]; then
  stop_all
  exit 0
fi
[ "$action" = start ] || { echo "usage: local_slurm.sh start|stop DIR" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -q >/dev/null
  timeout 300 apt-get install -y -q slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
node=$(slurmd -C)  # what slurmd will find (nproc would follow OMP_NUM_THREADS)
cpus=$(echo "$node" | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')
memory=$(echo "$node" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
mkdir -p "$DIR/state" "$DIR/spool"
# munged runs as user munge, which may not reach DIR (test folders are private): its own folder.
MUNGE=$(mktemp -d /tmp/dsmoe-munge.XXXXXX)
echo "$MUNGE" >"$DIR/munge_dir"
chown munge: "$MUNGE"
chmod 755 "$MUNGE"
cat >"$DIR/slurm.conf" <<CONF
ClusterName=dsmoe-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
KillWait=5
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$DIR/slurm.conf

runuser -u munge -- munged --socket="$MUNGE/munge.socket" --pid-file="$MUNGE/munged.pid" \
  --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" || fail "munged did not start"
for _ in $(seq 50); do [ -s "$MUNGE/munged.pid" ] && break; sleep 0.1; done
cp "$MUNGE/munged.pid" "$DIR/munged.pid" || fail "munged wrote no pid file"
slurmctld -f "$DIR/slurm.conf" || fail "slurmctld did not start"
slurmd -f "$DIR/slurm.conf" || fail "slurmd did not start"
for _ in $(seq 300); do
  state=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && exit 0
  sleep 0.2
done
fail "node $host not idle after 60 s (state '${state:-none}')"
