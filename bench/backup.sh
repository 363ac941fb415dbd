#!/usr/bin/env bash
# Backup and restore benchmark, one run, side by side, on a seeded DHIS2-shaped database > 1 GB:
#   floor     pg_dump -Fc -Z0 > /dev/null
#   baseline  what DHIS2 server tooling does today: pg_dump -Fc (gzip) to a file, then `aws s3 cp`
#   ours      dhis2ctl backup run to the same S3 server (SeaweedFS on loopback)
#   encrypted ours with --encrypt-to an age public key (issue 8), in the same runs
#   restore   ours from S3 vs pg_restore of the baseline dump from local disk
# All three dumps skip the same regenerated tables' data, so the pipelines are compared, not the
# skip. Prints medians of RUNS runs and the ratios; peak RSS of dhis2ctl from /usr/bin/time.
#
#   bench/backup.sh            RUNS=3 RESTORE_RUNS=3 SCALE=large BENCH_DIR=/var/cache/dhis2-operator/bench
# BENCH_ENV=FILE uses an environment that is already running (its `env` file) instead of starting
# one; DHIS2CTL=PATH uses that binary instead of building a release one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-3}
RESTORE_RUNS=${RESTORE_RUNS:-$RUNS}
SCALE=${SCALE:-large}
BENCH_DIR=${BENCH_DIR:-/var/cache/dhis2-operator/bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}

if [ -z "${DHIS2CTL:-}" ]; then
  cargo build --quiet --release --bin dhis2ctl
  DHIS2CTL=$CARGO_TARGET_DIR/release/dhis2ctl
fi
mkdir -p "$BENCH_DIR"; chmod 755 "$BENCH_DIR"
if [ -n "${BENCH_ENV:-}" ]; then
  # shellcheck disable=SC1090
  source "$BENCH_ENV"
else
  scripts/testenv/up.sh "$BENCH_DIR/env-dir" >/dev/null
  trap 'scripts/testenv/down.sh "$BENCH_DIR/env-dir" >/dev/null 2>&1 || true' EXIT
  # shellcheck disable=SC1091
  source "$BENCH_DIR/env-dir/env"
fi
BASE=${DHIS2_TEST_PG_URL%/*}
export DHIS2_S3_ENDPOINT=$DHIS2_TEST_S3_ENDPOINT
export PGPASSWORD=${DHIS2_TEST_PG_URL#postgresql://postgres:}; PGPASSWORD=${PGPASSWORD%%@*}
export PGHOST=127.0.0.1 PGPORT=55432 PGUSER=postgres
DB=dhis2_bench_${SCALE}_v2   # bump when the demo seed changes
if ! psql -qtAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" postgres | grep -q 1; then
  echo "seeding $DB (once; kept in $BENCH_DIR) ..."
  psql -qc "CREATE DATABASE ${DB}_seeding" postgres
  "$DHIS2CTL" demo seed --database-url "$BASE/${DB}_seeding" --scale "$SCALE"
  psql -qc "ALTER DATABASE ${DB}_seeding RENAME TO $DB" postgres
fi
SIZE=$(psql -qtAc "SELECT pg_database_size('$DB')" postgres)
echo "database $DB: $((SIZE / 1024 / 1024)) MiB; runs: $RUNS backup, $RESTORE_RUNS restore; $(nproc) cores"

# The tables whose data every variant skips (the same rule as dhis2ctl's table_rules.rs).
mapfile -t EXCL < <(psql -qtA -d "$DB" -c "SELECT format('--exclude-table-data=\"%s\".\"%s\"', schemaname, tablename)
  FROM pg_tables WHERE schemaname = 'public' AND (tablename = 'analytics' OR tablename LIKE 'analytics\_%' OR tablename LIKE '\_%')")
S3="aws --endpoint-url $DHIS2_TEST_S3_ENDPOINT s3"
BUCKET=bench-$(date +%s)
$S3 mb "s3://$BUCKET" >/dev/null
WORK=$(mktemp -d /tmp/dhis2-bench.XXXXXX)
RESULTS=$WORK/results; : > "$RESULTS"
age-keygen -o "$WORK/age-key.txt" 2>/dev/null
AGE_PUBLIC=$(age-keygen -y "$WORK/age-key.txt")
record() { echo "$1 $2" >> "$RESULTS"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
# Runs a command under /usr/bin/time; records wall seconds and peak RSS (KiB).
timed() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@"
  read -r wall rss < "$WORK/time"
  record "$name" "$wall"; record "$name.rss" "$rss"
}
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

for i in $(seq 1 "$RUNS"); do
  echo "backup run $i/$RUNS"
  timed floor sh -c "pg_dump -Fc -Z0 ${EXCL[*]} -d $DB > /dev/null"
  t0=$(now)
  pg_dump -Fc "${EXCL[@]}" -d "$DB" -f "$WORK/baseline.dump"
  t1=$(now)
  $S3 cp --only-show-errors "$WORK/baseline.dump" "s3://$BUCKET/baseline/baseline.dump"
  t2=$(now)
  record baseline.dump "$(elapsed "$t0" "$t1")"; record baseline.upload "$(elapsed "$t1" "$t2")"
  record baseline "$(elapsed "$t0" "$t2")"
  timed ours "$DHIS2CTL" backup run --database-url "$BASE/$DB" --repo "s3://$BUCKET/ours" --instance bench -o json >/dev/null
  timed ours.enc "$DHIS2CTL" backup run --database-url "$BASE/$DB" --repo "s3://$BUCKET/ours-enc" --instance bench --encrypt-to "$AGE_PUBLIC" -o json >/dev/null
done
BASELINE_BYTES=$(stat -c %s "$WORK/baseline.dump")
OURS_BYTES=$("$DHIS2CTL" backup list --repo "s3://$BUCKET/ours" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['sizeBytes'])")

for i in $(seq 1 "$RESTORE_RUNS"); do
  echo "restore run $i/$RESTORE_RUNS"
  psql -qc "DROP DATABASE IF EXISTS r_base" -c "DROP DATABASE IF EXISTS r_ours" -c "CREATE DATABASE r_base" -c "CREATE DATABASE r_ours" postgres
  timed restore.baseline pg_restore --no-owner --no-privileges -d r_base "$WORK/baseline.dump"
  timed restore.ours "$DHIS2CTL" backup restore --repo "s3://$BUCKET/ours" --instance bench latest --database-url "$BASE/r_ours" -o json >/dev/null
done
psql -qc "DROP DATABASE IF EXISTS r_base" -c "DROP DATABASE IF EXISTS r_ours" postgres
$S3 rb --force "s3://$BUCKET" >/dev/null

python3 - "$RESULTS" "$BASELINE_BYTES" "$OURS_BYTES" "$SIZE" <<'PY'
import statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for line in open(sys.argv[1]):
    k, v = line.split()
    vals[k].append(float(v))
m = {k: statistics.median(v) for k, v in vals.items()}
base_bytes, ours_bytes, db_bytes = (int(x) for x in sys.argv[2:5])
rows = [
    ("floor: pg_dump -Fc -Z0 > /dev/null", m["floor"]),
    ("baseline: pg_dump -Fc to file", m["baseline.dump"]),
    ("baseline: aws s3 cp", m["baseline.upload"]),
    ("baseline: total", m["baseline"]),
    ("ours: dhis2ctl backup run → S3", m["ours"]),
    ("ours encrypted: … --encrypt-to age1…", m["ours.enc"]),
    ("restore baseline: pg_restore local file", m["restore.baseline"]),
    ("restore ours: dhis2ctl backup restore ← S3", m["restore.ours"]),
]
print(f"\ndatabase {db_bytes/2**20:.0f} MiB, medians of {len(vals['ours'])} backup / {len(vals['restore.ours'])} restore runs")
for name, secs in rows:
    print(f"  {name:<46} {secs:8.2f} s")
print(f"  stored size: baseline pg_dump -Fc {base_bytes/2**20:.1f} MiB, ours {ours_bytes/2**20:.1f} MiB")
rss = max(vals["ours.rss"] + vals["ours.enc.rss"] + vals["restore.ours.rss"]) / 1024
checks = [
    ("backup / floor", m["ours"] / m["floor"], 1.3),
    ("backup / baseline", m["ours"] / m["baseline"], 0.5),
    ("encrypted / plain backup", m["ours.enc"] / m["ours"], 1.1),
    ("stored size / pg_dump -Fc", ours_bytes / base_bytes, 0.8),
    ("restore / local pg_restore", m["restore.ours"] / m["restore.baseline"], 1.05),
    ("peak RSS of dhis2ctl (MiB)", rss, 100),
]
print("\nratio                          value   target")
for name, value, target in checks:
    print(f"  {name:<28} {value:7.2f}   ≤ {target:<5} {'ok' if value <= target else 'MISSED'}")
PY
rm -rf "$WORK"
