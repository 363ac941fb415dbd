#!/usr/bin/env bash
# The main job on a local default, no cluster needed: a throw-away PostgreSQL 15 + PostGIS, a
# DHIS2-shaped demo database, a backup into a local repository (database, file store, dhis.conf),
# verification, and a restore drill with its RPO/RTO report.
#
#   scripts/demo.sh [small|medium|large]      (default small; WORK=/tmp/dhis2-demo)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE=${1:-small}
WORK=${WORK:-/tmp/dhis2-demo}
PORT=${DEMO_PG_PORT:-55440}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}

scripts/testenv/install.sh
echo "== building dhis2ctl"
cargo build --quiet --bin dhis2ctl
DHIS2CTL=$CARGO_TARGET_DIR/debug/dhis2ctl

scripts/testenv/postgres.sh stop "$WORK/pg" >/dev/null 2>&1 || true
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
PASSWORD=$(openssl rand -hex 16)
echo "$PASSWORD" | scripts/testenv/postgres.sh start "$WORK/pg" "$PORT" -
trap 'scripts/testenv/postgres.sh stop "$WORK/pg" >/dev/null 2>&1 || true' EXIT
export PGPASSWORD=$PASSWORD
psql -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "CREATE DATABASE dhis2" -c "CREATE DATABASE dhis2_drill"
DB=postgresql://postgres@127.0.0.1:$PORT/dhis2
SCRATCH=postgresql://postgres@127.0.0.1:$PORT/dhis2_drill

# A small file store and dhis.conf, as on a DHIS2 server.
mkdir -p "$WORK/opt-dhis2/files/document" && echo "របាយការណ៍ប្រចាំខែ (monthly report)" > "$WORK/opt-dhis2/files/document/report.txt"
printf 'connection.url = jdbc:postgresql://127.0.0.1:%s/dhis2\nencryption.password = %s\n' "$PORT" "$(openssl rand -hex 12)" > "$WORK/opt-dhis2/dhis.conf"
chmod 600 "$WORK/opt-dhis2/dhis.conf"

set -x
"$DHIS2CTL" demo seed --database-url "$DB" --scale "$SCALE"
"$DHIS2CTL" backup run --database-url "$DB" --repo "$WORK/repo" --instance hmis \
  --files-dir "$WORK/opt-dhis2/files" --dhis-conf "$WORK/opt-dhis2/dhis.conf"
"$DHIS2CTL" backup list --repo "$WORK/repo"
"$DHIS2CTL" backup verify --repo "$WORK/repo" --instance hmis latest
"$DHIS2CTL" drill --repo "$WORK/repo" --instance hmis --scratch-database-url "$SCRATCH"
{ set +x; } 2>/dev/null
echo "The backup stays in $WORK/repo; the PostgreSQL server stops now."
