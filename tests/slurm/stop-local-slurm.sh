#!/usr/bin/env bash
# Stop the daemons start-local-slurm.sh started, by the PIDs in their pid files.
STATE="${MEDSYNTH_SLURM_STATE:-/var/lib/medsynth-slurm}"
for pf in "$STATE/run/slurmd.pid" "$STATE/run/slurmctld.pid" /run/munge/munged.pid; do
  [ -s "$pf" ] || continue
  pid=$(cat "$pf")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pf"
done
