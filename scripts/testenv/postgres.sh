#!/usr/bin/env bash
# Throw-away PostgreSQL 15 cluster for tests, owned by the `postgres` OS user.
#
#   postgres.sh start DIR PORT PASSWORD   (PASSWORD "-" = read it from stdin, keeps it out of ps)
#   postgres.sh stop DIR
#
# Data in DIR/data, unix socket in DIR, log in DIR/postgres.log, TCP on 127.0.0.1:PORT only.
# Superuser `postgres`: scram-sha-256 over TCP, peer auth on the socket. Durability is off
# (fsync etc.): the cluster is disposable. stop removes nothing; the caller deletes DIR.
# TLS is on (clients may still connect without it): a throw-away CA in DIR/tls/ca.crt signs the
# server certificate for localhost and 127.0.0.1, so tests can use sslmode=verify-full.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

die() { echo "postgres.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR PORT PASSWORD | stop DIR" >&2; exit 2; }
as_pg() { runuser -u postgres -- "$@"; }

preflight() {
  [ "$(id -u)" = 0 ] || die "must run as root (the cluster runs as the postgres OS user)"
  id postgres >/dev/null 2>&1 || die "no 'postgres' OS user; run scripts/testenv/install.sh"
  [ -x "$PGBIN/pg_ctl" ] || die "$PGBIN/pg_ctl missing; run scripts/testenv/install.sh"
}

# postgres must be able to reach DIR: give o+x to any ancestor it cannot traverse.
make_traversable() {
  local d=$1
  while [ "$d" != / ]; do
    d=$(dirname "$d")
    if ! as_pg test -x "$d"; then chmod o+x "$d" || die "cannot make $d traversable for postgres"; fi
  done
}

# A CA and a server certificate it signs (kept when DIR is reused).
make_tls() {
  local t=$1
  [ -s "$t/server.crt" ] && [ -s "$t/server.key" ] && [ -s "$t/ca.crt" ] && return 0
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dhis2-operator test CA" \
    -keyout "$t/ca.key" -out "$t/ca.crt" >/dev/null 2>&1 || die "openssl: cannot create the test CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$t/server.key" -out "$t/server.csr" >/dev/null 2>&1 || die "openssl: cannot create the server key"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$t/san.ext"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
    -days 3650 -extfile "$t/san.ext" -out "$t/server.crt" >/dev/null 2>&1 || die "openssl: cannot sign the server certificate"
  chown -R postgres:postgres "$t"; chmod 600 "$t/server.key" "$t/ca.key"
  chmod 644 "$t/ca.crt" "$t/server.crt"
  chmod 711 "$t"   # clients (root tests) read ca.crt; the keys stay private
}

running() { [ -f "$1/data/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" status -D "$1/data" >/dev/null 2>&1; }

cmd_start() {
  local dir=$1 port=$2 pw=$3
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  if [ "$pw" = - ]; then IFS= read -r pw || true; fi
  [ -n "$pw" ] || die "empty PASSWORD"
  preflight
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  running "$dir" && return 0   # already up: no-op

  make_traversable "$dir"
  chown postgres:postgres "$dir"; chmod 700 "$dir"

  local fresh=
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    fresh=1
    rm -rf "$dir/data"   # leftovers of an interrupted initdb
    # Password via a private file (--pwfile), never on a command line.
    pwfile=$(mktemp -p "$dir" .pwfile.XXXXXX)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$pw" >"$pwfile"; chown postgres: "$pwfile"; chmod 600 "$pwfile"
    if ! as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --pwfile="$pwfile" \
        --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync \
        >"$dir/initdb.log" 2>&1; then
      tail -n 20 "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"
    fi
    rm -f "$pwfile"; trap - EXIT
    # Members of the role tls_required may only connect over TLS (tests of sslmode).
    { echo 'hostnossl all +tls_required all reject'; cat "$dir/data/pg_hba.conf"; } >"$dir/data/pg_hba.conf.new"
    mv -f "$dir/data/pg_hba.conf.new" "$dir/data/pg_hba.conf"; chown postgres: "$dir/data/pg_hba.conf"
    # Speed over durability; more locks for pg_dump/pg_restore of DHIS2's many tables.
    cat >>"$dir/data/postgresql.conf" <<'CONF'

# --- scripts/testenv/postgres.sh: throw-away test cluster ---
fsync = off
synchronous_commit = off
full_page_writes = off
max_locks_per_transaction = 256
password_encryption = 'scram-sha-256'
CONF
  fi

  make_tls "$dir/tls"

  if [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]; then
    die "port $port is already in use (see: ss -ltnp 'sport = :$port')"
  fi
  # Port/address/socket dir on the command line so a reused DIR can move ports.
  if ! as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file='$dir/tls/server.crt' -c ssl_key_file='$dir/tls/server.key'" start >/dev/null 2>&1; then
    tail -n 20 "$dir/postgres.log" >&2 2>/dev/null || true
    die "PostgreSQL failed to start (log: $dir/postgres.log)"
  fi
  "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30 || die "PostgreSQL on 127.0.0.1:$port not ready after 30 s"

  if [ -z "$fresh" ]; then
    # Reused data dir: make the requested password current (peer auth over the socket; SQL on
    # stdin, not argv; log_statement is off so it is not logged).
    printf "ALTER ROLE postgres PASSWORD '%s';\n" "${pw//\'/\'\'}" |
      as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres >/dev/null ||
      die "could not set the postgres password on the reused cluster in $dir"
  fi
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres -c \
    "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tls_required') THEN CREATE ROLE tls_required NOLOGIN; END IF; END\$\$" >/dev/null ||
    die "could not create the role tls_required"
  # Prove that password auth over TCP works (password via env, not argv).
  PGPASSWORD=$pw PGCONNECT_TIMEOUT=10 "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres \
    -d postgres -c 'select 1' >/dev/null || die "password login to 127.0.0.1:$port failed"
}

cmd_stop() {
  local dir=$1
  [ -f "$dir/data/PG_VERSION" ] || return 0
  preflight
  running "$dir" || return 0
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null ||
    die "pg_ctl stop failed for $dir/data (log: $dir/postgres.log)"
}

case "${1:-}" in
  start) [ $# -eq 4 ] || usage; cmd_start "$2" "$3" "$4" ;;
  stop)  [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  *) usage ;;
esac
