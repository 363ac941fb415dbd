#!/usr/bin/env bash
# Smoke test of the DHIS2 stand-in on the host, without Kubernetes: runs dhis2_standin.py with
# the host's python3 (python3-psycopg2, python3-bcrypt) as uid 65534, as in its image, against
# throw-away databases on a PostgreSQL server (with PostGIS) you give:
#
#   smoke.sh postgresql://SUPERUSER:PASSWORD@HOST:PORT/DB   (e.g. a scripts/testenv/postgres.sh
#                                                            cluster on a spare port; needs root)
#
# Checks: fresh install (2.41.3) and serving; wrong password 401; file resources; analytics;
# SIGTERM; migration 2.41 -> 2.42 with 503 meanwhile; two nodes on one database (Flyway's lock);
# a node killed mid-migration commits nothing; the older 2.41.3 refuses the 2.42 schema; 2.43.0
# fails and rolls back; read-only mode; missing dhis.conf and unwritable file store (404);
# unreachable database (503); the real DHIS2 2.42 database (DHIS2_REAL_DUMP, default
# ../shared/testdata/dhis2-2.42-real.sql.gz beside the repository; skipped if absent).
set -euo pipefail

URL=${1:?usage: $0 postgresql://SUPERUSER:PASSWORD@HOST:PORT/DB}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STANDIN=$HERE/dhis2_standin.py
DUMP=${DHIS2_REAL_DUMP:-$HERE/../../../../shared/testdata/dhis2-2.42-real.sql.gz}
PY=/usr/bin/python3
[ "$(id -u)" = 0 ] || { echo "smoke.sh: run as root (the stand-in runs as uid 65534)" >&2; exit 2; }
"$PY" -c 'import psycopg2, bcrypt' 2>/dev/null ||
  { echo "smoke.sh: needs python3-psycopg2 and python3-bcrypt" >&2; exit 2; }

read -r PGH PGP PGU PGW < <("$PY" -c 'import sys, urllib.parse as u
p = u.urlparse(sys.argv[1]); print(p.hostname, p.port or 5432, u.unquote(p.username), u.unquote(p.password or ""))' "$URL")
T=$(mktemp -d /tmp/standin-smoke.XXXXXX); chmod 755 "$T"
PREFIX=standin_smoke_$$
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for db in $(sql postgres "SELECT datname FROM pg_database WHERE datname LIKE '${PREFIX}%'"); do
    sql postgres "DROP DATABASE $db WITH (FORCE)" >/dev/null || true
  done
  rm -rf --one-file-system "$T"
}
trap cleanup EXIT

FAILS=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
sql() { PGPASSWORD=$PGW psql -X -q -At -v ON_ERROR_STOP=1 -h "$PGH" -p "$PGP" -U "$PGU" -d "$1" -c "$2"; }
newdb() { sql postgres "CREATE DATABASE $PREFIX$1" >/dev/null; echo "$PREFIX$1"; }
bcrypt_of() { "$PY" -c 'import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(10, prefix=b"2a")).decode())' "$1"; }
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME VERSION DB [extra dhis.conf lines...]: a stand-in with DHIS2_HOME $T/NAME, log
# $T/NAME.log; sets PID_<NAME> and PORT_<NAME>. DB may be HOST:PORT/DB; FILES_OWNER (65534:65534)
# owns DHIS2_HOME/files.
start() {
  local name=$1 version=$2 db=$3 home=$T/$1 port; shift 3
  port=$(free_port)
  [[ $db == */* ]] || db=$PGH:$PGP/$db
  mkdir -p "$home/files"; chown "${FILES_OWNER:-65534:65534}" "$home/files"
  { echo "# smoke $name"
    echo "connection.url = jdbc:postgresql://$db"
    echo "connection.username = $PGU"
    echo "connection.password = $PGW"
    echo "filestore.provider = filesystem"
    printf '%s\n' "$@"; } >"$home/dhis.conf"
  chown 0:65534 "$home/dhis.conf"; chmod 0440 "$home/dhis.conf"
  DHIS2_VERSION=$version DHIS2_HOME=$home DHIS2_STANDIN_PORT=$port PYTHONDONTWRITEBYTECODE=1 \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" "$STANDIN" >"$T/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$! PORT_$name=$port"
}
port_of() { local v=PORT_$1; echo "${!v}"; }
pid_of() { local v=PID_$1; echo "${!v}"; }
# code NAME PATH [curl options...]: the HTTP status.
code() { curl -s -o /dev/null -w '%{http_code}' "${@:3}" "http://127.0.0.1:$(port_of "$1")$2" 2>/dev/null || true; }
ping() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port_of "$1")/api/system/ping" 2>/dev/null || true; }
# wait_ping NAME CODE SECONDS: until /api/system/ping answers CODE.
wait_ping() { local i; for ((i = 0; i < $3 * 5; i++)); do [ "$(ping "$1")" = "$2" ] && return 0; sleep 0.2; done; return 1; }
info_version() { curl -s -u "$2" "http://127.0.0.1:$(port_of "$1")/api/system/info" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["version"])' 2>/dev/null; }
logs() { local n; n=$(grep -c -- "$2" "$T/$1.log" 2>/dev/null) || true; echo "${n:-0}"; }
stop() { kill -TERM "$(pid_of "$1")" 2>/dev/null || true; wait "$(pid_of "$1")" 2>/dev/null || true; }
flyway_rows() { sql "$1" "SELECT count(*) FROM flyway_schema_history"; }
schema() { sql "$1" "SELECT version FROM flyway_schema_history WHERE success ORDER BY string_to_array(version, '.')::int[] DESC LIMIT 1"; }

echo "# fresh install: 2.41.3"
DB=$(newdb a)
start a 2.41.3 "$DB"
check "2.41.3 installs an empty database and answers pong" wait_ping a 200 60
check "schema 2.41.5, 5 Flyway rows" [ "$(schema "$DB") $(flyway_rows "$DB")" = "2.41.5 5" ]
check "postgis, pg_trgm, btree_gin exist" [ "$(sql "$DB" "SELECT count(*) FROM pg_extension WHERE extname IN ('postgis','pg_trgm','btree_gin')")" = 3 ]
check "Khmer org unit with a geometry" [ "$(sql "$DB" "SELECT count(*) FROM organisationunit WHERE name LIKE 'មណ្ឌលសុខភាព%' AND geometry IS NOT NULL")" = 1 ]
check "hibernate_sequence far advanced" [ "$(sql "$DB" "SELECT last_value >= 7000000 FROM hibernate_sequence")" = t ]
check "info reports 2.41.3 to admin/district" [ "$(info_version a admin:district)" = 2.41.3 ]
check "wrong password: 401" [ "$(code a /api/system/info -u admin:wrong)" = 401 ]
check "401 carries WWW-Authenticate: Basic realm=\"DHIS2\"" \
  grep -q 'WWW-Authenticate: Basic realm="DHIS2"' <(curl -s -D - -o /dev/null "http://127.0.0.1:$(port_of a)/api/system/info")
sql "$DB" "UPDATE userinfo SET password = '$(bcrypt_of 'Changed1!')' WHERE username = 'admin'"
check "a password changed by SQL is the one that works" [ "$(code a /api/system/info -u admin:Changed1!) $(code a /api/system/info -u admin:district)" = "200 401" ]
printf 'hello ស្វាគមន៍\n' >"$T/upload.txt"
UID_=$(curl -s -u admin:Changed1! -F "file=@$T/upload.txt;type=text/plain" "http://127.0.0.1:$(port_of a)/api/fileResources?domain=DOCUMENT" |
  "$PY" -c 'import json,sys; print(json.load(sys.stdin)["response"]["fileResource"]["id"])' 2>/dev/null || true)
check "file resource stored under files/document/<uid>" cmp -s "$T/upload.txt" "$T/a/files/document/$UID_"
check "file resource read back" cmp -s "$T/upload.txt" <(curl -s -u admin:Changed1! "http://127.0.0.1:$(port_of a)/api/fileResources/$UID_/data")
check "analytics: 200" [ "$(code a /api/resourceTables/analytics -u admin:Changed1! -X POST)" = 200 ]
check "analytics logged with the user" [ "$(logs a 'Analytics table generation requested by admin')" = 1 ]
sleep 1.5
check "analytics recorded as lastAnalyticsTableSuccess" grep -q lastAnalyticsTableSuccess <(curl -s -u admin:Changed1! "http://127.0.0.1:$(port_of a)/api/system/info")
sql "$DB" "UPDATE userinfo SET password = '$(bcrypt_of district)' WHERE username = 'admin'"
t0=$(date +%s%N); stop a; t1=$(date +%s%N)
check "SIGTERM: exits within 2 s" [ $(((t1 - t0) / 1000000)) -lt 2000 ]

echo "# migration 2.41 -> 2.42 (two nodes; Flyway's lock lets one migrate)"
start b 2.42.1 "$DB" "standin.migration.seconds = 3"
start b2 2.42.1 "$DB" "standin.migration.seconds = 3"
sleep 1.5
check "503 while migrating" [ "$(ping b)" = 503 ]
check "both nodes come up" wait_ping b 200 30
check "second node up" wait_ping b2 200 30
check "schema 2.42.5, 10 Flyway rows, markers 41 and 42" [ "$(schema "$DB") $(flyway_rows "$DB") $(sql "$DB" "SELECT count(*) FROM upgrade_marker_2_42")" = "2.42.5 10 5" ]
check "exactly one node migrated" [ "$(($(logs b 'Successfully applied') + $(logs b2 'Successfully applied')))" = 1 ]
stop b; stop b2

echo "# older 2.41.3 on the 2.42 schema refuses"
start c 2.41.3 "$DB"
sleep 4
check "2.41.3 answers 503" [ "$(ping c)" = 503 ]
check "2.41.3 says why" [ "$(logs c 'cannot run on a database migrated to schema 2.42.5')" = 1 ]
stop c

echo "# 2.43.0 fails its migration and rolls back"
start d 2.43.0 "$DB" "standin.migration.seconds = 1"
sleep 5
check "2.43.0 answers 503" [ "$(ping d)" = 503 ]
check "Flyway error logged (DbMigrate, V2_43_3)" grep -q 'ERROR.*org.flywaydb.core.internal.command.DbMigrate.*Migration V2_43_3__fake_migration_3.sql failed' "$T/d.log"
check "schema unchanged (2.42.5, 10 rows, no upgrade_marker_2_43)" [ "$(schema "$DB") $(flyway_rows "$DB") $(sql "$DB" "SELECT to_regclass('upgrade_marker_2_43') IS NULL")" = "2.42.5 10 t" ]
stop d

echo "# killed mid-migration: nothing committed"
DB2=$(newdb b)
start e 2.41.3 "$DB2"; wait_ping e 200 60 || true; stop e
start f 2.42.1 "$DB2" "standin.migration.seconds = 30"
for _ in $(seq 50); do [ "$(logs f 'Migrating schema')" -ge 2 ] && break; sleep 0.2; done
kill -9 "$(pid_of f)"; wait "$(pid_of f)" 2>/dev/null || true
sleep 1
check "after SIGKILL mid-migration: schema 2.41.5, 5 rows, no upgrade_marker_2_42" [ "$(schema "$DB2") $(flyway_rows "$DB2") $(sql "$DB2" "SELECT to_regclass('upgrade_marker_2_42') IS NULL")" = "2.41.5 5 t" ]
start g 2.42.1 "$DB2" "standin.migration.seconds = 30"
for _ in $(seq 50); do [ "$(logs g 'Migrating schema')" -ge 2 ] && break; sleep 0.2; done
t0=$(date +%s%N); stop g; t1=$(date +%s%N)
check "SIGTERM mid-migration: exits within 2 s" [ $(((t1 - t0) / 1000000)) -lt 2000 ]
check "after SIGTERM mid-migration: nothing committed" [ "$(schema "$DB2") $(flyway_rows "$DB2")" = "2.41.5 5" ]

echo "# read-only mode"
start h 2.42.1 "$DB" "system.read_only_mode = on"
check "read-only node serves" wait_ping h 200 30
check "info says readOnlyMode" grep -q '"readOnlyMode": true' <(curl -s -u admin:district "http://127.0.0.1:$(port_of h)/api/system/info")
check "file upload refused: 403" [ "$(code h /api/fileResources -u admin:district --data-binary x)" = 403 ]
stop h

echo "# broken configurations"
mkdir -p "$T/j"; PORT_j=$(free_port)   # no dhis.conf at all
DHIS2_VERSION=2.42.1 DHIS2_HOME=$T/j DHIS2_STANDIN_PORT=$PORT_j \
  setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" "$STANDIN" >"$T/j.log" 2>&1 &
PID_j=$!; PIDS+=("$PID_j")
check "no dhis.conf: 404 on every path" wait_ping j 404 10
check "no dhis.conf: ERROR logged" grep -q 'ERROR.*Configuration file could not be read' "$T/j.log"
stop j
FILES_OWNER=0:0 start k 2.42.1 "$DB"
check "unwritable file store: 404" wait_ping k 404 10
check "unwritable file store: ERROR logged" grep -q 'ERROR.*file store .* is not writable' "$T/k.log"
stop k
start l 2.42.1 "127.0.0.1:1/$DB"
check "database unreachable: 503" wait_ping l 503 10
sleep 1
check "database unreachable: ERROR logged, retried" grep -q 'ERROR.*HikariPool.*retrying' "$T/l.log"
stop l

if [ -f "$DUMP" ]; then
  echo "# the real DHIS2 2.42 database"
  DB3=$(newdb real)
  gunzip -c "$DUMP" | PGPASSWORD=$PGW psql -X -q -v ON_ERROR_STOP=1 -h "$PGH" -p "$PGP" -U "$PGU" -d "$DB3" >/dev/null
  rows=$(flyway_rows "$DB3")
  start m 2.42.1 "$DB3"
  check "2.42.1 serves the real 2.42.52 database" wait_ping m 200 30
  check "admin/district authenticates on it" [ "$(info_version m admin:district)" = 2.42.1 ]
  check "the superuser sees databaseInfo.databaseVersion" grep -q databaseVersion <(curl -s -u admin:district "http://127.0.0.1:$(port_of m)/api/system/info")
  sql "$DB3" "UPDATE userinfo SET password = '$(bcrypt_of 'Test123!')' WHERE username = 'hcuser001'"
  check "a data-entry user gets info without databaseVersion" [ "$(curl -s -u 'hcuser001:Test123!' "http://127.0.0.1:$(port_of m)/api/system/info" | grep -c databaseVersion)" = 0 ]
  check "a data-entry user may not run analytics: 403" [ "$(code m /api/resourceTables/analytics -u 'hcuser001:Test123!' -X POST)" = 403 ]
  check "its schema is untouched ($rows Flyway rows, 2.42.52)" [ "$(flyway_rows "$DB3") $(schema "$DB3")" = "$rows 2.42.52" ]
  stop m
else
  echo "skip - the real DHIS2 2.42 database ($DUMP not found)"
fi

echo "# $FAILS failure(s); logs in $T (kept on failure)"
if [ "$FAILS" -gt 0 ]; then trap - EXIT; for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; exit 1; fi
