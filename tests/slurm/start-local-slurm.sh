#!/usr/bin/env bash
# A real single-node SLURM for tests (Debian 12, root, no systemd): munged,
# slurmctld and slurmd on loopback only, a "cpu" and a "gpu" partition and two
# fake GPUs. Installs slurm-wlm and munge with apt when they are missing.
# Writes the daemons' pid files to $MEDSYNTH_SLURM_STATE (default /var/lib/medsynth-slurm);
# stop-local-slurm.sh stops exactly those processes.
set -euo pipefail
STATE="${MEDSYNTH_SLURM_STATE:-/var/lib/medsynth-slurm}"
say() { printf '[start-local-slurm] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (apt and the daemons)"; exit 1; }

if ! { command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged; } >/dev/null 2>&1; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# is the process in a pid file alive, not a zombie, and the daemon we think it is?
running() { local pid; [ -s "$1" ] || return 1; pid=$(cat "$1")
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; }
wait_running() { for _ in $(seq 150); do running "$1" "$2" && return 0; sleep 0.1; done; say "$2 did not start"; return 1; }

mkdir -p "$STATE"/{ctld,spool,log,run} /etc/slurm /run/munge /var/lib/munge /var/log/munge /etc/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key; chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! running /run/munge/munged.pid munged; then
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  wait_running /run/munge/munged.pid munged
fi
munge -n </dev/null | unmunge >/dev/null || { say "munge does not work"; exit 1; }

# The node as slurmd sees it; RealMemory a little under what it finds, or the node drains.
read -r CPUS MEM < <(slurmd -C | head -1 | tr ' ' '\n' | awk -F= '$1=="CPUs"{c=$2} $1=="RealMemory"{m=$2} END{print c, m}')
MEM=$(( MEM > 2048 ? MEM - 1024 : MEM ))
# A GPU GRES needs a File= per GPU, or the node drains; empty files stand in for the devices.
touch "$STATE/fake-gpu0" "$STATE/fake-gpu1"
echo "NodeName=localhost Name=gpu File=$STATE/fake-gpu[0-1]" > /etc/slurm/gres.conf
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=medsynth-test
SlurmctldHost=localhost
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
GresTypes=gpu
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue (no slurmdbd, so no sacct) long enough for status checks
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP
CONF

running "$STATE/run/slurmctld.pid" slurmctld || { /usr/sbin/slurmctld -c; wait_running "$STATE/run/slurmctld.pid" slurmctld; }
running "$STATE/run/slurmd.pid" slurmd || { /usr/sbin/slurmd; wait_running "$STATE/run/slurmd.pid" slurmd; }
for _ in $(seq 100); do
  sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && { say "cluster up"; exit 0; }
  sleep 0.2
done
say "the node did not become idle:"; sinfo -N -l >&2 || true; tail -20 "$STATE/log/slurmctld.log" >&2 || true
exit 1
