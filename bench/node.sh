#!/usr/bin/env bash
# On the real node (scripts/testenv/up.sh DIR --with-node; source DIR/env first):
#   1. from `kubectl apply` of a Dhis2Database + Dhis2Instance to the instance's Ready (the
#      operator as a pod from manifests/install.yaml, PostgreSQL on a real volume, the DHIS2
#      stand-in behind its Service);
#   2. `dhis2ctl backup create --wait` end to end against the engine's own time for the same
#      backup (status.durationSeconds: dump, compress, upload, verify): what the operator, the
#      Job and the pod add around the engine.
# RUNS fresh namespaces (default 3); prints each run and the medians.
#
#   RUNS=3 bench/node.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-3}
: "${DHIS2_OPERATOR_IMAGE:?source the env of scripts/testenv/up.sh DIR --with-node}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}
cargo build --quiet --bin dhis2ctl
DHIS2CTL=$CARGO_TARGET_DIR/debug/dhis2ctl
annotation_key=${DHIS2_TEST_NODE_NAMESPACE_ANNOTATION%%=*}
annotation_value=${DHIS2_TEST_NODE_NAMESPACE_ANNOTATION#*=}
now() { date +%s.%N; }
calc() { awk "BEGIN {print $*}"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

namespace_yaml() {
  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  annotations:\n    %s: %s\n' \
    "$1" "$annotation_key" "'$annotation_value'"
}

# Its own field manager: install.yaml's server-side apply below must not drop the annotation.
namespace_yaml dhis2-operator | kubectl apply --server-side --field-manager=dhis2-test-node -f - >/dev/null
kubectl apply --server-side --force-conflicts -f manifests/install.yaml >/dev/null
kubectl rollout status -n dhis2-operator deployment/dhis2-operator --timeout=180s >/dev/null
trap 'kubectl delete namespace dhis2-operator --wait=false >/dev/null 2>&1 || true' EXIT

ready_times=() overheads=() walls=() engines=()
for run in $(seq "$RUNS"); do
  ns=bench-node-$$-$run bucket=bench-node-$$-$run
  aws --endpoint-url "$DHIS2_TEST_S3_ENDPOINT" s3 mb "s3://$bucket" >/dev/null
  namespace_yaml "$ns" | kubectl apply -f - >/dev/null
  kubectl create secret generic -n "$ns" backup-s3 --from-literal=accessKey="$AWS_ACCESS_KEY_ID" \
    --from-literal=secretKey="$AWS_SECRET_ACCESS_KEY" >/dev/null
  kubectl create secret generic -n "$ns" dhis2-admin --from-literal=username=admin \
    --from-literal=password=district >/dev/null
  t0=$(now)
  kubectl apply -f - >/dev/null <<YAML
apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2Database
metadata: {name: hmis-db, namespace: $ns}
spec:
  image: $DHIS2_TEST_POSTGRES_IMAGE
  storage: {size: 1Gi}
  resources: {requests: {cpu: 50m, memory: 128Mi}, limits: {memory: 1Gi}}
---
apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2Instance
metadata: {name: hmis, namespace: $ns}
spec:
  version: "2.42.1"
  image: $DHIS2_TEST_DHIS2_IMAGE:2.42.1
  environment: production
  databaseRef: hmis-db
  adminSecretRef: dhis2-admin
  fileStore: {volume: {size: 1Gi}}
  resources: {requests: {cpu: 50m, memory: 128Mi}, limits: {memory: 512Mi}}
  backup:
    repository:
      s3: {bucket: $bucket, prefix: dhis2, endpoint: "$DHIS2_TEST_S3_ENDPOINT_IN_CLUSTER", pathStyle: true, credentialsSecretRef: backup-s3}
YAML
  kubectl wait -n "$ns" d2/hmis --for=jsonpath='{.status.phase}'=Ready --timeout=300s >/dev/null
  t1=$(now)
  ready=$(calc "$t1 - $t0")
  "$DHIS2CTL" backup create hmis -n "$ns" --wait >/dev/null
  t2=$(now)
  wall=$(calc "$t2 - $t1")
  engine=$(kubectl get d2backup -n "$ns" -o jsonpath='{.items[0].status.durationSeconds}')
  ready_times+=("$ready") walls+=("$wall") engines+=("$engine")
  overheads+=("$(calc "$wall - $engine")")
  printf 'run %d: apply -> Ready %.1f s; backup create --wait %.1f s, engine %.1f s, around it %.1f s\n' \
    "$run" "$ready" "$wall" "$engine" "${overheads[-1]}"
  kubectl delete namespace "$ns" --wait=false >/dev/null
done
m_ready=$(printf '%s\n' "${ready_times[@]}" | median)
m_wall=$(printf '%s\n' "${walls[@]}" | median)
m_engine=$(printf '%s\n' "${engines[@]}" | median)
m_over=$(printf '%s\n' "${overheads[@]}" | median)
printf 'median of %d: apply -> Ready %.1f s; backup create --wait %.1f s = engine %.1f s + %.1f s around it (ratio %.2f)\n' \
  "$RUNS" "$m_ready" "$m_wall" "$m_engine" "$m_over" "$(calc "$m_wall / $m_engine")"
