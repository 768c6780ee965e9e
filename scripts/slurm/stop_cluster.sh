#!/usr/bin/env bash
# Stops the cluster scripts/slurm/start_cluster.sh started: only the processes whose ids it recorded
# in $IWU_SLURM_STATE/pids (default /tmp/iwu-slurm), in the reverse order, then removes the
# /etc/slurm/slurm.conf link it made. The installed packages and the state folder stay (a second
# start takes seconds); jobs still queued are lost with the controller's state on the next start.
set -euo pipefail

STATE="${IWU_SLURM_STATE:-/tmp/iwu-slurm}"
SYSTEM_CONF=/etc/slurm/slurm.conf

stopped=()
for name in slurmd slurmctld slurmdbd mariadb munged; do
    file="$STATE/pids/$name"
    [[ -f $file ]] || continue
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for ((i = 0; i < 40; i++)); do  # up to 20 s each: MariaDB flushes its tables
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        stopped+=("$name")
    fi
    rm -f "$file"
done
if [[ -L $SYSTEM_CONF && "$(readlink "$SYSTEM_CONF")" == "$STATE/etc/slurm.conf" ]]; then
    rm -f "$SYSTEM_CONF"
fi
if [[ ${#stopped[@]} -eq 0 ]]; then
    echo "stop_cluster: no cluster of $STATE was running"
else
    echo "stop_cluster: stopped ${stopped[*]}"
fi
