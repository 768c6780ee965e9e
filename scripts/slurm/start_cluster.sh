#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for `make test-slurm` (tests/test_slurm_cluster.py).
#
# As root on Debian or Ubuntu without systemd: installs what is missing of Debian's Slurm packages
# (slurmctld, slurmd, slurm-client, munge, slurmdbd, mariadb-server), writes a minimal config with
# accounting (submitit reads job states with sacct, which needs slurmdbd and a database), starts
# munged, a private MariaDB on 127.0.0.1, slurmdbd, slurmctld and slurmd as background processes,
# waits until the node is idle, and prints one line. scripts/slurm/stop_cluster.sh stops them.
#
# Everything it writes is under $IWU_SLURM_STATE (default /tmp/iwu-slurm), but for the link
# /etc/slurm/slurm.conf -> $IWU_SLURM_STATE/etc/slurm.conf, so that sinfo, sbatch and sacct find the
# cluster without SLURM_CONF; an /etc/slurm/slurm.conf of someone else's is never replaced.
#
# Exit status: 0 the cluster is up (started now or already), 3 it cannot run on this machine (not
# root, no apt-get: the line says why), 1 anything else (the daemons' logs are in the state folder).
set -euo pipefail

STATE="${IWU_SLURM_STATE:-/tmp/iwu-slurm}"
DB_PORT="${IWU_SLURM_DB_PORT:-3307}"   # not MariaDB's 3306: a database of the machine's own may be there
CLUSTER=iwu
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
SYSTEM_CONF=/etc/slurm/slurm.conf

say() { echo "start_cluster: $*"; }
cannot() { say "$* (make test-slurm skips the cluster tests)"; exit 3; }
fail() { say "$*; logs in $STATE/log"; exit 1; }

[[ $(id -u) -eq 0 ]] || cannot "needs root to install and start SLURM's daemons; run it as root"
command -v apt-get >/dev/null || cannot "needs apt-get (Debian or Ubuntu) to install SLURM"
command -v setpriv >/dev/null || cannot "needs setpriv (util-linux) to start munged as user munge"

alive() { [[ -f "$STATE/pids/$1" ]] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }
node_idle() { timeout 10 sinfo -h -N -o '%T' 2>/dev/null | grep -qx 'idle'; }

if alive slurmctld && alive slurmd && node_idle; then
    say "already up: cluster $CLUSTER, node $(hostname -s) idle; state in $STATE"
    exit 0
fi

mkdir -p "$STATE"/{etc,pids,log,spool/ctld,spool/d}
chmod 755 "$STATE"

install_missing() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    # Package scripts would start the daemons through init; policy-rc.d answering 101 forbids it.
    local policy=/usr/sbin/policy-rc.d ours=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        ours=1
    fi
    local status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"; } > "$STATE/log/apt.log" 2>&1 || status=$?
    [[ $ours -eq 1 ]] && rm -f "$policy"
    [[ $status -eq 0 ]] || fail "apt-get could not install ${missing[*]} (see $STATE/log/apt.log)"
}

write_config() {
    local node
    node="$(slurmd -C | head -n 1)"  # NodeName=... CPUs=... RealMemory=...: this machine as slurmd sees it
    cat > "$STATE/etc/slurm.conf" <<EOF
# written by scripts/slurm/start_cluster.sh: a single-node cluster for iwu's tests
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once its credential expired: 10 s, not 120
AuthInfo=cred_expire=10
# no cgroups in containers
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/pids/slurmctld.file
SlurmdPidFile=$STATE/pids/slurmd.file
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$STATE/etc/slurmdbd.conf" <<EOF
# written by scripts/slurm/start_cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/pids/slurmdbd.file
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=iwu
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"  # slurmdbd refuses a config others can read
    mkdir -p /etc/slurm
    if [[ -L $SYSTEM_CONF || ! -e $SYSTEM_CONF ]]; then
        ln -sfn "$STATE/etc/slurm.conf" "$SYSTEM_CONF"
    elif ! cmp -s "$SYSTEM_CONF" "$STATE/etc/slurm.conf"; then
        cannot "$SYSTEM_CONF is this machine's own SLURM config; this script leaves it alone"
    fi
}

# start NAME COMMAND...: in the background, in its own session (a Ctrl-C in make's terminal stays there)
start() {
    local name=$1
    shift
    alive "$name" && return 0
    setsid "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 &
    echo $! > "$STATE/pids/$name"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds
    local what=$1 seconds=$2
    shift 2
    for ((i = 0; i < seconds * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    fail "$what did not come up within ${seconds}s"
}

start_munge() {
    [[ -f /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
    wait_for munged 20 bash -c 'munge -n | unmunge'
}

start_database() {
    local data="$STATE/mysql" socket="$STATE/mysql/mysqld.sock"
    if [[ ! -d $data/mysql ]]; then
        mkdir -p "$data"
        chown mysql:mysql "$data"
        mariadb-install-db --no-defaults --user=mysql --datadir="$data" --auth-root-authentication-method=socket \
            --skip-test-db > "$STATE/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
    fi
    start mariadb mariadbd --no-defaults --user=mysql --datadir="$data" --socket="$socket" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve --log-error="$STATE/log/mariadb.log"
    wait_for MariaDB 60 mariadb --no-defaults --socket="$socket" -e 'SELECT 1'
    mariadb --no-defaults --socket="$socket" -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'iwu';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

install_missing
write_config
export SLURM_CONF="$STATE/etc/slurm.conf"  # slurmdbd finds slurmdbd.conf beside it
start_munge
start_database
start slurmdbd slurmdbd -D
wait_for slurmdbd 60 sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true  # already there on a second start
start slurmctld slurmctld -D -i
wait_for slurmctld 60 scontrol ping
start slurmd slurmd -D
wait_for "the node" 60 node_idle
cpus="$(scontrol show node "$(hostname -s)" -o | grep -o 'CPUTot=[0-9]*' | cut -d= -f2)"
say "SLURM cluster $CLUSTER up: node $(hostname -s) idle with $cpus CPUs, partition debug, accounting on; state in $STATE (stop: scripts/slurm/stop_cluster.sh)"
