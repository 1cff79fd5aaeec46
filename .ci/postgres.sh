#!/usr/bin/env bash
# A private, throwaway PostgreSQL server for the storage tests: `make postgres` (`make test` runs it first).
#
# Installs Debian's `postgresql` package when its initdb/pg_ctl are missing (as root, with apt-get), then
# runs a cluster of its own -- never the system one -- in $PG_DIR, listening on 127.0.0.1 at a free port,
# with a password-authenticated role and database. The SQLAlchemy URL goes to $PG_DIR/url (mode 600), which
# the tests read. Idempotent: a running cluster whose URL still connects is reused, anything else is rebuilt.
# `.ci/postgres.sh stop` stops the cluster and removes $PG_DIR.
#
# As root with apt-get (CI) every failure is an error. Elsewhere (not root and no server binaries, or
# SHRINK_SKIP_POSTGRES=1) it says why and exits 0, and the PostgreSQL tests skip with that reason.
set -euo pipefail

PG_DIR="${PG_DIR:-${TMPDIR:-/tmp}/shrink-ci-pg-$(id -u)}"
ROLE=shrink
DATABASE=shrink
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS PGDATA

say() { echo "postgres.sh: $*"; }

required() { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null && [[ -z ${SHRINK_SKIP_POSTGRES:-} ]]; }

give_up() {
    if required; then
        say "error: $*" >&2
        exit 1
    fi
    say "$* -- the PostgreSQL tests will skip"
    exit 0
}

# Debian's server binaries (newest version); /usr/local/bin may hold other builds.
find_bin() {
    local dir found=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/psql ]] && found=$dir
    done
    echo "$found"
}

install_postgres() {
    [[ $(id -u) == 0 ]] || give_up "Debian's PostgreSQL server is not installed (installing it needs root)"
    command -v apt-get >/dev/null || give_up "Debian's PostgreSQL server is not installed (and no apt-get)"
    say "installing Debian's postgresql package"
    local log
    log=$(mktemp)
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends postgresql; } \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; give_up "apt-get install postgresql failed"; }
    rm -f "$log"
}

# Run a server binary as the cluster's owner: `postgres` when we are root (initdb refuses root).
as_owner() {
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

libpq_url() { sed 's/^postgresql+psycopg:/postgresql:/' "$PG_DIR/url"; }

connects() {
    [[ -f $PG_DIR/url ]] && PGCONNECT_TIMEOUT=5 "$BIN/psql" -X "$(libpq_url)" -Atqc 'select 1' >/dev/null 2>&1
}

running() {
    [[ -f $PG_DIR/data/PG_VERSION ]] && as_owner "$BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

stop_cluster() {
    [[ -e $PG_DIR ]] || return 0
    [[ -f $PG_DIR/.shrink-ci-pg ]] || give_up "$PG_DIR was not made by this script; leaving it alone"
    if [[ -n $BIN ]] && running; then
        as_owner "$BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    fi
    rm -rf "$PG_DIR"
}

free_port() {
    "${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

init_cluster() {
    mkdir -m 700 -p "$PG_DIR"
    touch "$PG_DIR/.shrink-ci-pg"
    if [[ $(id -u) == 0 ]]; then
        chown postgres: "$PG_DIR"
        as_owner test -w "$PG_DIR" || give_up "user postgres cannot reach $PG_DIR (set PG_DIR under /tmp)"
    fi
    as_owner "$BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --locale=C -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; give_up "initdb failed"; }
    as_owner tee -a "$PG_DIR/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

start_cluster() {
    local port password
    port=$(free_port)
    local options=(-D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 -o "-p $port")
    # 9>&-: the server must not inherit (and hold for ever) the lock taken in main().
    as_owner "$BIN/pg_ctl" "${options[@]}" start >/dev/null 9>&- \
        || { tail -n 20 "$PG_DIR/server.log" >&2; give_up "the server did not start"; }
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    # The password goes through stdin, never a command line.
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$port" -U postgres <<EOF >/dev/null \
        || give_up "creating role $ROLE and database $DATABASE failed"
CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE $DATABASE OWNER $ROLE;
EOF
    (umask 077 && echo "postgresql+psycopg://$ROLE:$password@127.0.0.1:$port/$DATABASE" >"$PG_DIR/url.new")
    mv "$PG_DIR/url.new" "$PG_DIR/url"
}

main() {
    if [[ -n ${SHRINK_SKIP_POSTGRES:-} ]]; then
        give_up "SHRINK_SKIP_POSTGRES is set"
    fi
    if command -v flock >/dev/null; then  # one make at a time builds or reuses the cluster
        exec 9>"$PG_DIR.lock"
        flock 9
    fi
    BIN=$(find_bin)
    if [[ ${1:-} == stop ]]; then
        stop_cluster
        say "stopped; removed $PG_DIR"
        return
    fi
    if [[ -z $BIN ]]; then
        install_postgres
        BIN=$(find_bin)
        [[ -n $BIN ]] || give_up "no initdb/pg_ctl under /usr/lib/postgresql after installing"
    fi
    if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
        give_up "there is no postgres user to own the cluster (initdb refuses root)"
    fi
    if running && connects; then
        say "reusing the server in $PG_DIR ($(libpq_url | sed 's/:[^:@]*@/:***@/'))"
        return
    fi
    stop_cluster
    init_cluster
    start_cluster
    connects || give_up "the new server does not accept its own URL (see $PG_DIR/server.log)"
    say "started $($BIN/pg_ctl --version) in $PG_DIR ($(libpq_url | sed 's/:[^:@]*@/:***@/'))"
}

main "$@"
