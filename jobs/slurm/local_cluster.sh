#!/usr/bin/env bash
# Start or stop a one-node SLURM cluster on this machine (slurmctld + slurmd as
# root daemons, munge auth), for tests and for trying the templates locally.
#
#   jobs/slurm/local_cluster.sh start DIR   # prints: export SLURM_CONF=DIR/slurm.conf
#   jobs/slurm/local_cluster.sh stop DIR
#
# Needs Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge).
set -euo pipefail
action=${1:?usage: local_cluster.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: local_cluster.sh start|stop DIR}" && cd "$2" && pwd)

stop() {
  for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  rm -f "$dir"/slurmd.pid "$dir"/slurmctld.pid
}

if [ "$action" = stop ]; then stop; exit 0; fi
[ "$action" = start ] || { echo "unknown action $action (start|stop)" >&2; exit 2; }
for cmd in slurmctld slurmd munged sbatch; do
  command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || { echo "missing $cmd: apt-get install -y slurm-wlm munge" >&2; exit 3; }
done

if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- /usr/sbin/mungekey -c
  runuser -u munge -- /usr/sbin/munged
fi

host=$(hostname -s)
cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc: it honours OMP_NUM_THREADS
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/log"
cat > "$dir/slurm.conf" <<CONF
ClusterName=ldensf
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF="$dir/slurm.conf"
stop
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
# sinfo may report idle before slurmd registered: wait until a job step really runs.
for _ in $(seq 30); do
  if srun -t 1 --immediate=10 true 2>/dev/null; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 1
done
echo "SLURM did not come up; see $dir/log" >&2
exit 4
