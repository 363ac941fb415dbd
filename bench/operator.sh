#!/usr/bin/env bash
# Operator benchmark on the real kube-apiserver v1.20.2: create N Dhis2Instances (default 100),
# time until every one is reconciled (status.observedGeneration == metadata.generation), the
# operator's peak and steady RSS, and `dhis2ctl get instances` latency (median of 10).
# No kubelet runs here, so instances stop at Provisioning (their databases never get a pod):
# the figures measure the operator's own work — watches, builds, server-side applies, status.
#
# Then (issue 9) phase B: every instance gets `spec.backup` (an S3 repository and a weekly drill
# schedule) and one Dhis2BackupSchedule; once every schedule shows status.nextRunTime and every
# instance status.backup.nextDrillTime, the steady RSS 30 s later, against phase A's.
# The schedules are chosen not to fire during the run (checked before starting).
# At idle and at each steady point, bench/proc_memory.py tells what the RSS is made of (code
# pages, malloc heap and arenas, other anonymous memory, threads). The operator inherits the
# environment, so allocator settings can be tried without a rebuild, e.g. MALLOC_ARENA_MAX=1.
#
#   bench/operator.sh        N=100 BENCH_DIR=/var/cache/dhis2-operator/bench-operator BUSY_LOOPS=0
#   BUSY_LOOPS=4 bench/operator.sh
#       keeps 4 CPU-bound loops running during the run: a busy node (here: a 2-core machine
#       shared with builds). The steady RSS depends on it: a slow API server makes the
#       controllers' requests pile up (see docs/benchmarks.md).
#   DHIS2_TEST_ENV_FILE=/tmp/dhis2-shared-env/env bench/operator.sh
#       uses that already running environment in a fresh namespace of its own, deleted
#       afterwards, and a free metrics port: no fixed port is taken. The committed CRDs are
#       applied first, as the tests do (a restarted apiserver has none).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-100}
BENCH_DIR=${BENCH_DIR:-/var/cache/dhis2-operator/bench-operator}
BUSY_LOOPS=${BUSY_LOOPS:-0}
# Backup schedule and drill schedule of phase B, in Asia/Phnom_Penh.
BACKUP_SCHEDULE=${BACKUP_SCHEDULE:-0 2 * * *}
DRILL_SCHEDULE=${DRILL_SCHEDULE:-0 3 * * 0}
SCHEDULE_TZ=Asia/Phnom_Penh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}
cargo build --quiet --release --bin dhis2-operator --bin dhis2ctl
BIN=$CARGO_TARGET_DIR/release
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"; chmod 755 "$BENCH_DIR"

# The schedules must not fire while we measure (a run takes a few minutes).
hour=$(TZ=$SCHEDULE_TZ date +%H)
if [ "$hour" = 01 ] || [ "$hour" = 02 ]; then
  echo "it is ${hour}h in $SCHEDULE_TZ: the 02:00 backup schedule could fire during the run; set BACKUP_SCHEDULE" >&2
  exit 1
fi

OP=
if [ -n "${DHIS2_TEST_ENV_FILE:-}" ]; then
  # shellcheck disable=SC1090
  source "$DHIS2_TEST_ENV_FILE"
  NS=bench-$$-$(od -An -N2 -tx2 /dev/urandom | tr -d ' ')
  METRICS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  kubectl apply -f manifests/crds/dhis2operator.io.yaml >/dev/null
  kubectl wait --for=condition=Established crd --all --timeout=30s >/dev/null
  cleanup() {
    # Delete the namespace while the operator still runs, so it can remove its finalizers.
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do kubectl get namespace "$NS" >/dev/null 2>&1 || break; sleep 1; done
    [ -n "$OP" ] && kill "$OP" 2>/dev/null || true
  }
else
  NS=bench
  METRICS_PORT=18099
  scripts/testenv/up.sh "$BENCH_DIR/env" --with-kube >/dev/null
  cleanup() { [ -n "$OP" ] && kill "$OP" 2>/dev/null; scripts/testenv/down.sh "$BENCH_DIR/env" >/dev/null 2>&1 || true; }
  # shellcheck disable=SC1091
  source "$BENCH_DIR/env/env"
  "$BIN/dhis2-operator" crd | kubectl apply -f - >/dev/null
  kubectl wait --for=condition=Established crd --all --timeout=30s >/dev/null
fi
BUSY=()
stop_busy() { for pid in "${BUSY[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'stop_busy; cleanup' EXIT
for _ in $(seq 1 "$BUSY_LOOPS"); do (while :; do :; done) & BUSY+=($!); done
[ "$BUSY_LOOPS" -eq 0 ] || echo "$BUSY_LOOPS busy loops running (a loaded node)"
kubectl create namespace "$NS" >/dev/null
echo "namespace $NS"
RUST_LOG=error "$BIN/dhis2-operator" run --namespace "$NS" --metrics-addr "127.0.0.1:$METRICS_PORT" &
OP=$!
for _ in $(seq 1 50); do curl -sf "127.0.0.1:$METRICS_PORT/readyz" >/dev/null && break; sleep 0.2; done
rss() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$OP/status"; }
idle=$(rss VmRSS)
echo "idle operator RSS: $(( idle / 1024 )) MiB"
bench/proc_memory.py "$OP" idle

for i in $(seq 1 "$N"); do
  printf -- '---\napiVersion: dhis2operator.io/v1alpha1\nkind: Dhis2Instance\nmetadata: {name: hmis-%03d, namespace: %s}\nspec: {version: "2.41.3", environment: staging, hostname: hmis-%03d.moh.example}\n' "$i" "$NS" "$i"
done > "$BENCH_DIR/instances.yaml"
t0=$(date +%s.%N)
kubectl apply -f "$BENCH_DIR/instances.yaml" >/dev/null
while :; do
  done_count=$(kubectl get d2 -n "$NS" -o json | python3 -c "import json,sys; print(sum(1 for i in json.load(sys.stdin)['items'] if i.get('status',{}).get('observedGeneration') == i['metadata']['generation']))")
  [ "$done_count" -ge "$N" ] && break
  sleep 0.5
done
t1=$(date +%s.%N)
echo "all $N instances reconciled in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
echo "operator peak RSS: $(( $(rss VmHWM) / 1024 )) MiB"
sleep 30
plain=$(rss VmRSS)
echo "operator steady RSS (30 s later): $(( plain / 1024 )) MiB"
bench/proc_memory.py "$OP" plain
for _ in $(seq 1 10); do
  s=$(date +%s.%N); "$BIN/dhis2ctl" get instances -n "$NS" >/dev/null; e=$(date +%s.%N)
  python3 -c "print($e - $s)"
done | sort -n | awk '{a[NR]=$1} END {printf "dhis2ctl get instances over %d: median %.3f s\n", '"$N"', (a[5]+a[6])/2}'

# Phase B: a repository, a drill schedule and a backup schedule for every instance.
# The backups never run (see above), so the Secret's keys are placeholders.
kubectl create secret generic backup-s3 -n "$NS" --from-literal=accessKey=bench --from-literal=secretKey=bench >/dev/null
for i in $(seq 1 "$N"); do
  printf -- '---\napiVersion: dhis2operator.io/v1alpha1\nkind: Dhis2Instance\nmetadata: {name: hmis-%03d, namespace: %s}\nspec: {version: "2.41.3", environment: staging, hostname: hmis-%03d.moh.example,\n  backup: {repository: {s3: {bucket: moh-backups, prefix: hmis-%03d, endpoint: "http://seaweedfs.storage.svc:8333", pathStyle: true, credentialsSecretRef: backup-s3}},\n    drill: {schedule: "%s", timeZone: %s}}}\n' "$i" "$NS" "$i" "$i" "$DRILL_SCHEDULE" "$SCHEDULE_TZ"
  printf -- '---\napiVersion: dhis2operator.io/v1alpha1\nkind: Dhis2BackupSchedule\nmetadata: {name: hmis-%03d-nightly, namespace: %s}\nspec: {instanceRef: hmis-%03d, schedule: "%s", timeZone: %s, retention: {keepDaily: 7, keepWeekly: 4}}\n' "$i" "$NS" "$i" "$BACKUP_SCHEDULE" "$SCHEDULE_TZ"
done > "$BENCH_DIR/scheduled.yaml"
t0=$(date +%s.%N)
kubectl apply -f "$BENCH_DIR/scheduled.yaml" >/dev/null
while :; do
  scheduled=$(kubectl get d2schedule -n "$NS" -o json | python3 -c "import json,sys; print(sum(1 for i in json.load(sys.stdin)['items'] if i.get('status',{}).get('nextRunTime')))")
  drills=$(kubectl get d2 -n "$NS" -o json | python3 -c "import json,sys; print(sum(1 for i in json.load(sys.stdin)['items'] if i.get('status',{}).get('backup',{}).get('nextDrillTime')))")
  [ "$scheduled" -ge "$N" ] && [ "$drills" -ge "$N" ] && break
  sleep 0.5
done
t1=$(date +%s.%N)
echo "all $N backup schedules and drill schedules planned in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
echo "operator peak RSS: $(( $(rss VmHWM) / 1024 )) MiB"
sleep 30
sched=$(rss VmRSS)
echo "operator steady RSS with schedules (30 s later): $(( sched / 1024 )) MiB (target <= 30 MiB)"
bench/proc_memory.py "$OP" schedules
fired=$(kubectl get d2backup,d2drill -n "$NS" --no-headers 2>/dev/null | wc -l)
[ "$fired" -eq 0 ] || echo "warning: $fired backups or drills were made during the run" >&2
python3 -c "print(f'steady RSS ratios: with schedules / plain {$sched / $plain:.2f}, with schedules / idle {$sched / $idle:.2f}, plain / idle {$plain / $idle:.2f}')"
