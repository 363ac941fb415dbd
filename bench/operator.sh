#!/usr/bin/env bash
# Operator benchmark on the real kube-apiserver v1.20.2: create N Dhis2Instances (default 100),
# time until every one is reconciled (status.observedGeneration == metadata.generation), the
# operator's peak and steady RSS, and `dhis2ctl get instances` latency (median of 10).
# No kubelet runs here, so instances stop at Provisioning (their databases never get a pod):
# the figures measure the operator's own work — watches, builds, server-side applies, status.
#
#   bench/operator.sh        N=100 BENCH_DIR=/var/cache/dhis2-operator/bench-operator
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-100}
BENCH_DIR=${BENCH_DIR:-/var/cache/dhis2-operator/bench-operator}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}
cargo build --quiet --release --bin dhis2-operator --bin dhis2ctl
BIN=$CARGO_TARGET_DIR/release
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"; chmod 755 "$BENCH_DIR"
scripts/testenv/up.sh "$BENCH_DIR/env" --with-kube >/dev/null
OP=
cleanup() { [ -n "$OP" ] && kill "$OP" 2>/dev/null; scripts/testenv/down.sh "$BENCH_DIR/env" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# shellcheck disable=SC1091
source "$BENCH_DIR/env/env"
"$BIN/dhis2-operator" crd | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=30s >/dev/null
kubectl create namespace bench >/dev/null
RUST_LOG=error "$BIN/dhis2-operator" run --namespace bench --metrics-addr 127.0.0.1:18099 &
OP=$!
for _ in $(seq 1 50); do curl -sf 127.0.0.1:18099/readyz >/dev/null && break; sleep 0.2; done
rss() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$OP/status"; }
echo "idle operator RSS: $(( $(rss VmRSS) / 1024 )) MiB"

for i in $(seq 1 "$N"); do
  printf -- '---\napiVersion: dhis2operator.io/v1alpha1\nkind: Dhis2Instance\nmetadata: {name: hmis-%03d, namespace: bench}\nspec: {version: "2.41.3", environment: staging, hostname: hmis-%03d.moh.example}\n' "$i" "$i"
done > "$BENCH_DIR/instances.yaml"
t0=$(date +%s.%N)
kubectl apply -f "$BENCH_DIR/instances.yaml" >/dev/null
while :; do
  done_count=$(kubectl get d2 -n bench -o json | python3 -c "import json,sys; print(sum(1 for i in json.load(sys.stdin)['items'] if i.get('status',{}).get('observedGeneration') == i['metadata']['generation']))")
  [ "$done_count" -ge "$N" ] && break
  sleep 0.5
done
t1=$(date +%s.%N)
echo "all $N instances reconciled in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
echo "operator peak RSS: $(( $(rss VmHWM) / 1024 )) MiB"
sleep 30
echo "operator steady RSS (30 s later): $(( $(rss VmRSS) / 1024 )) MiB"
for _ in $(seq 1 10); do
  s=$(date +%s.%N); "$BIN/dhis2ctl" get instances -n bench >/dev/null; e=$(date +%s.%N)
  python3 -c "print($e - $s)"
done | sort -n | awk '{a[NR]=$1} END {printf "dhis2ctl get instances over %d: median %.3f s\n", '"$N"', (a[5]+a[6])/2}'
