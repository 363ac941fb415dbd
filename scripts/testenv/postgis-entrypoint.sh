#!/usr/bin/env bash
# Entrypoint of the test image localhost/dhis2-test/postgis:15-3.3 (built by images.sh): does
# what the official postgis/postgis image's docker-entrypoint.sh + initdb-postgis.sh do, for what
# the operator uses (src/operator/database/build.rs, src/operator/drill/build.rs):
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required for a new cluster),
#   POSTGRES_DB (default $POSTGRES_USER), PGDATA (default /var/lib/postgresql/data; may be the
#   mounted volume itself or a directory below it), POSTGRES_INITDB_ARGS; container args that
#   start with '-' are postgres's (`-c shared_buffers=128MB ...`); any other command is exec'd.
# On an empty PGDATA: initdb as postgres (uid 999) with $POSTGRES_USER as superuser and its
# password (scram-sha-256), pg_hba as the official image leaves it (initdb's trust for the socket
# and loopback, then `host all all all scram-sha-256`), listen_addresses='*' (from the image's
# postgresql.conf.sample), $POSTGRES_DB created, template_postgis (a template) and $POSTGRES_DB
# get postgis, postgis_topology, fuzzystrmatch and postgis_tiger_geocoder; then
# /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz run. Started as root it creates and chowns
# PGDATA (0700) and drops to uid 999 with setpriv; started as 999 it skips the chown.
# Not supported (unused by the operator): arbitrary uids (nss_wrapper), POSTGRES_HOST_AUTH_METHOD,
# POSTGRES_INITDB_WALDIR, *_FILE secrets.
# postgres is exec'd (PID 1): the image's StopSignal SIGINT is its fast shutdown.
set -Eeuo pipefail

if [ "$#" -eq 0 ] || [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
[ "$1" = postgres ] || exec "$@"
shift   # "$@" are postgres's own arguments from here on

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA POSTGRES_USER POSTGRES_DB

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() { log "error: $*" >&2; exit 1; }

# Failures here are tolerated as in the official image: initdb says what is wrong, if anything.
mkdir -p "$PGDATA" /var/run/postgresql || :
chmod 00700 "$PGDATA" || :
chmod 03775 /var/run/postgresql || :
if [ "$(id -u)" = 0 ]; then
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] ||
    die "POSTGRES_PASSWORD is empty: refusing to create a cluster whose superuser has no password"
  log "initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    ${POSTGRES_INITDB_ARGS:-}
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

  # A server on the socket only while the databases are set up (as the official image does).
  pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@" -c listen_addresses= -p 5432)" -w start
  psql=(psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --no-password)
  if [ "$POSTGRES_DB" != postgres ]; then
    "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  "${psql[@]}" --dbname postgres <<<'CREATE DATABASE template_postgis IS_TEMPLATE true;'
  for db in template_postgis "$POSTGRES_DB"; do
    log "loading PostGIS extensions into $db"
    "${psql[@]}" --dbname "$db" <<'SQL'
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS postgis_topology;
\c
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;
CREATE EXTENSION IF NOT EXISTS postgis_tiger_geocoder;
SQL
  done
  for f in /docker-entrypoint-initdb.d/*; do
    case $f in
      *.sh)
        log "running $f"
        # shellcheck disable=SC1090 # init scripts are sourced, as the official image does
        . "$f" ;;
      *.sql) log "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  log "PostgreSQL init process complete; ready for start up."
fi

exec postgres "$@"
