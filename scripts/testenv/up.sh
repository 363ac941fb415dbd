#!/usr/bin/env bash
# Bring up the whole test environment in DIR and write DIR/env (source it before `cargo test`).
#
#   up.sh DIR [--with-kube | --with-node]
#
#   DIR/pg    PostgreSQL 15 on 127.0.0.1:55432       DIR/s3    SeaweedFS S3 on 127.0.0.1:8333
#   DIR/kube  etcd + kube-apiserver (127.0.0.1:16443) + kube-controller-manager (--with-kube)
#   DIR/node  one Ready node where pods really run (--with-node, implies --with-kube): kubelet,
#             kube-scheduler, kube-proxy, containerd + runc, service DNS, volumes (node.sh);
#             the project's image (scripts/image.sh, from this checkout's debug build) and the
#             test images (images.sh) loaded on it
#
# Credentials are random per DIR and reused when up.sh runs again on the same DIR, so a second
# up.sh (or up after down) matches what is already running / stored. Stop with down.sh DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_PORT=55432
TEST_PG_MAJOR=15
S3_ENDPOINT=http://127.0.0.1:8333

die() { echo "up.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 DIR [--with-kube | --with-node]" >&2; exit 2; }

[ $# -ge 1 ] || usage
DIR=$1; shift
WITH_KUBE= WITH_NODE=
for a in "$@"; do
  case "$a" in --with-kube) WITH_KUBE=1 ;; --with-node) WITH_KUBE=1 WITH_NODE=1 ;; *) usage ;; esac
done
t0=$(date +%s%N)

"$HERE/install.sh"
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)

# Reuse the credentials of an earlier up.sh on this DIR (the pg data dir keeps its password).
PG_PASSWORD='' AK='' SK=''
if [ -f "$DIR/env" ]; then
  prev=$(
    unset DHIS2_TEST_PG_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    # shellcheck disable=SC1091
    . "$DIR/env"
    pw=${DHIS2_TEST_PG_URL#postgresql://postgres:}; pw=${pw%%@*}
    echo "$pw ${AWS_ACCESS_KEY_ID:-} ${AWS_SECRET_ACCESS_KEY:-}"
  ) || prev=
  read -r PG_PASSWORD AK SK <<<"$prev" || true
fi
[ -n "$PG_PASSWORD" ] || PG_PASSWORD=$(openssl rand -hex 16)
[ -n "$AK" ] || AK=AK$(openssl rand -hex 9 | tr a-f A-F)
[ -n "$SK" ] || SK=$(openssl rand -hex 20)

# On failure, tear down whatever this run started so the next attempt starts clean.
on_exit() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "up.sh: failed; stopping what was started" >&2
    "$HERE/down.sh" "$DIR" || true
  fi
}
trap on_exit EXIT

[ -z "$WITH_KUBE" ] || "$HERE/kube.sh" build   # no-op when the cached binaries exist

# Start the services in parallel (wall time = the slowest, the apiserver); each script prints
# its own error. Password on stdin ("-"), not in argv.
pids=()
printf '%s\n' "$PG_PASSWORD" | "$HERE/postgres.sh" start "$DIR/pg" "$PG_PORT" - & pids+=($!)
"$HERE/seaweedfs.sh" start "$DIR/s3" "$AK" "$SK" & pids+=($!)
if [ -n "$WITH_KUBE" ]; then "$HERE/kube.sh" start "$DIR/kube" & pids+=($!); fi
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ $failed -eq 0 ] || die "a service failed to start (messages above)"

if [ -n "$WITH_NODE" ]; then
  # The operator and its Jobs run this checkout's code: its debug build (what `cargo test`
  # builds anyway) in the project's image, under the chart's image name.
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}
  (cd "$HERE/../.." && cargo build --bins --quiet) || die "cargo build --bins failed"
  # PostgreSQL 15 client tools, as the test PostgreSQL image (images.sh) runs 15: the Dockerfile's
  # 16 comes from apt.postgresql.org, which these machines cannot reach, and 17's pg_restore
  # cannot restore into a server older than 17.
  "$HERE/../image.sh" --binaries "$CARGO_TARGET_DIR/debug" --pg-major "$TEST_PG_MAJOR" --strip-debug \
    --out "$DIR/operator-image.oci.tar" >"$DIR/operator-image.log" ||
    { tail -n 20 "$DIR/operator-image.log" >&2; die "scripts/image.sh failed"; }
  "$HERE/node.sh" start "$DIR/node" "$DIR/kube"
  "$HERE/node.sh" import "$DIR/node" "$DIR/operator-image.oci.tar"
fi

# Sourceable env, written atomically; 0600 because it holds secrets.
tmp=$(mktemp "$DIR/.env.XXXXXX")
{
  echo "# written by scripts/testenv/up.sh; source it, then run the tests"
  printf 'export DHIS2_TEST_PG_URL=%q\n' "postgresql://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
  printf 'export DHIS2_TEST_PG_CA=%q\n' "$DIR/pg/tls/ca.crt"
  printf 'export DHIS2_TEST_S3_ENDPOINT=%q\n' "$S3_ENDPOINT"
  printf 'export AWS_ACCESS_KEY_ID=%q\n' "$AK"
  printf 'export AWS_SECRET_ACCESS_KEY=%q\n' "$SK"
  echo 'export AWS_REGION=us-east-1'
  echo 'export AWS_EC2_METADATA_DISABLED=true'
  if [ -n "$WITH_KUBE" ]; then printf 'export KUBECONFIG=%q\n' "$DIR/kube/kubeconfig"; fi
  if [ -n "$WITH_NODE" ]; then
    cat "$DIR/node/env"
    printf 'export DHIS2_OPERATOR_IMAGE=%q\n' "$(awk '$1 == "image:" {print $2; exit}' "$DIR/operator-image.log")"
    printf 'export DHIS2_OPERATOR_IMAGE_ARCHIVE=%q\n' "$DIR/operator-image.oci.tar"
    printf 'export DHIS2_OPERATOR_IMAGE_PG_MAJOR=%q\n' "$TEST_PG_MAJOR"
  fi
} >"$tmp"
chmod 600 "$tmp"; mv -f "$tmp" "$DIR/env"

t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
printf 'up.sh: ready in %d.%03d s; run: source %s/env\n' $((ms / 1000)) $((ms % 1000)) "$DIR"
