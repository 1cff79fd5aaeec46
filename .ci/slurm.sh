#!/usr/bin/env bash
# A private, throwaway one-node Slurm cluster for tests/test_slurm.py: `make slurm` (`make test` runs it first).
#
# Installs Debian's `slurm-wlm` and `munge` when sbatch/slurmctld/slurmd/munged are missing (as root, with
# apt-get), then runs daemons of its own -- never the system ones, never /etc/slurm -- from $SLURM_DIR: munged
# with its own key and socket, slurmctld and slurmd on free loopback ports, with a slurm.conf made for this
# machine (one node with `nproc` CPUs, proctrack/linuxproc, task/none: no cgroups, no accounting database).
# What a client needs (SLURM_CONF) goes to $SLURM_DIR/env, which the tests read. Idempotent: a running cluster
# whose node answers is reused, anything else is rebuilt. `.ci/slurm.sh stop` stops it and removes $SLURM_DIR.
#
# The daemons run jobs as the submitting user, so they need root. As root with apt-get (CI) every failure is
# an error. Elsewhere (not root, or SHRINK_SKIP_SLURM=1) it says why and exits 0, and the Slurm tests skip.
set -euo pipefail

SLURM_DIR="${SLURM_DIR:-${TMPDIR:-/tmp}/shrink-ci-slurm-$(id -u)}"
PARTITION=shrink

say() { echo "slurm.sh: $*"; }

required() { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null && [[ -z ${SHRINK_SKIP_SLURM:-} ]]; }

give_up() {
    if required; then
        say "error: $*" >&2
        [[ -d $SLURM_DIR/log ]] && tail -n 5 "$SLURM_DIR"/log/*.log >&2 2>/dev/null
        exit 1
    fi
    say "$* -- the Slurm tests will skip"
    exit 0
}

installed() { command -v sbatch && command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null

install_slurm() {
    command -v apt-get >/dev/null || give_up "Slurm is not installed (and no apt-get)"
    say "installing Debian's slurm-wlm and munge packages"
    local log
    log=$(mktemp)
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends slurm-wlm munge; } \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; give_up "apt-get install slurm-wlm munge failed"; }
    rm -f "$log"
}

# The daemon whose pid file is $1 runs (checked by name: a pid from before a reboot may be another's now).
alive() {
    local pid
    [[ -f $1 ]] && pid=$(cat "$1") && [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]
}

# The node answers and takes jobs (idle, or mixed/allocated while a job runs).
answers() {
    [[ -f $SLURM_DIR/env ]] && alive "$SLURM_DIR/run/slurmctld.pid" && alive "$SLURM_DIR/run/slurmd.pid" \
        && alive "$SLURM_DIR/munge/munged.pid" || return 1
    local state
    state=$(SLURM_CONF=$SLURM_DIR/slurm.conf timeout 10 sinfo -h -p "$PARTITION" -o %t 2>/dev/null) || return 1
    [[ $state =~ ^(idle|mix|alloc|comp)$ ]]
}

stop_cluster() {
    [[ -e $SLURM_DIR ]] || return 0
    [[ -f $SLURM_DIR/.shrink-ci-slurm ]] || give_up "$SLURM_DIR was not made by this script; leaving it alone"
    local pidfile pid
    for pidfile in "$SLURM_DIR/run/slurmd.pid" "$SLURM_DIR/run/slurmctld.pid" "$SLURM_DIR/munge/munged.pid"; do
        alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        ! kill -0 "$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$SLURM_DIR"
}

free_port() {
    "${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

start_munge() {
    local dir=$SLURM_DIR/munge
    mkdir -m 700 -p "$dir"
    (umask 077 && dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none)
    # --force: munged refuses to run as root without it; the key and socket are this cluster's alone.
    munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" 9>&- \
        || give_up "munged did not start (see $dir/munged.log)"
}

write_conf() {
    local host cpus
    host=$(hostname -s)
    cpus=$(nproc)
    cat >"$SLURM_DIR/slurm.conf" <<EOF
# Made by .ci/slurm.sh: a one-node cluster on this machine, for tests only.
ClusterName=shrinkci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_DIR/munge/munge.socket
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobs.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=600
KillWait=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_cluster() {
    mkdir -m 700 -p "$SLURM_DIR"
    touch "$SLURM_DIR/.shrink-ci-slurm"
    mkdir -p "$SLURM_DIR"/{state,spool,run,log}
    start_munge
    write_conf
    local conf=$SLURM_DIR/slurm.conf
    # -i: ignore state a former cluster in this folder left (there is none: the folder is new).
    slurmctld -f "$conf" -i 9>&- || give_up "slurmctld did not start (see $SLURM_DIR/log/slurmctld.log)"
    slurmd -f "$conf" 9>&- || give_up "slurmd did not start (see $SLURM_DIR/log/slurmd.log)"
    (umask 077 && echo "SLURM_CONF=$conf" >"$SLURM_DIR/env.new")
    mv "$SLURM_DIR/env.new" "$SLURM_DIR/env"
    for _ in $(seq 100); do
        answers && return
        sleep 0.3
    done
    give_up "the node did not come up (see $SLURM_DIR/log/)"
}

main() {
    if [[ -n ${SHRINK_SKIP_SLURM:-} ]]; then
        give_up "SHRINK_SKIP_SLURM is set"
    fi
    if command -v flock >/dev/null; then  # one make at a time builds or reuses the cluster
        exec 9>"$SLURM_DIR.lock"
        flock 9
    fi
    if [[ ${1:-} == stop ]]; then
        stop_cluster
        say "stopped; removed $SLURM_DIR"
        return
    fi
    [[ $(id -u) == 0 ]] || give_up "a private Slurm cluster needs root (its slurmd runs jobs as their users)"
    installed || install_slurm
    installed || give_up "sbatch, slurmctld, slurmd or munged is missing after installing"
    if answers; then
        say "reusing the cluster in $SLURM_DIR"
        return
    fi
    stop_cluster
    start_cluster
    say "started $(SLURM_CONF=$SLURM_DIR/slurm.conf sbatch --version) in $SLURM_DIR: node $(hostname -s), $(nproc) CPUs, partition $PARTITION"
}

main "$@"
