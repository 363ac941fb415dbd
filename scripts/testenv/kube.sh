#!/usr/bin/env bash
# A real (if old) Kubernetes control plane for tests: etcd + kube-apiserver +
# kube-controller-manager v1.20.2 on 127.0.0.1. No registry ships these binaries, so `build`
# compiles them offline from Debian bookworm's `kubernetes` source package. The same build makes
# the node's kubelet, kube-scheduler and kube-proxy (scripts/testenv/node.sh): one tree, one
# Go build cache, so the node costs ~5 min more once instead of a second source tree.
#
#   kube.sh build        build (or reuse) the cached binaries
#   kube.sh start DIR    start the control plane with all state in DIR; writes DIR/kubeconfig
#   kube.sh stop DIR     stop it (tolerant of it not running)
#
# Ports: etcd 22379/22380, apiserver 16443 (clear of SeaweedFS's 7333/8333/8888/9333/...).
set -euo pipefail

KUBE_VERSION=v1.20.2
KUBE_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
DEB_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE_ROOT=${DHIS2_TESTENV_CACHE:-/var/cache/dhis2-operator}
KBIN=$CACHE_ROOT/kube-$KUBE_VERSION/bin
ETCD_PORT=${KUBE_ETCD_PORT:-22379}
ETCD_PEER_PORT=${KUBE_ETCD_PEER_PORT:-22380}
API_PORT=${KUBE_API_PORT:-16443}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "kube.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 build | start DIR | stop DIR" >&2; exit 2; }

BINARIES=(kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy)

binaries_ok() {
  local b
  for b in "${BINARIES[@]}"; do
    [ -x "$KBIN/$b" ] && "$KBIN/$b" --version 2>/dev/null | grep -qx "Kubernetes $KUBE_VERSION" || return 1
  done
}

cmd_build() {
  binaries_ok && return 0
  [ "$(id -u)" = 0 ] || die "build must run as root (apt-get source, writes $CACHE_ROOT)"
  mkdir -p "$CACHE_ROOT"
  # Serialise concurrent builds (CI jobs / sessions on one machine); re-check after the wait.
  exec 9>"$CACHE_ROOT/kube-$KUBE_VERSION.lock"
  flock 9
  binaries_ok && return 0

  "$HERE/install.sh"   # golang-go, rsync, Debian's reflect2/json-iterator sources, ...
  local W=$CACHE_ROOT/kube-$KUBE_VERSION-build
  rm -rf "$W"; mkdir -p "$W/gopath/src/k8s.io"
  local log=$W/build.log
  echo "kube.sh: building ${BINARIES[*]} $KUBE_VERSION (~10 min on 2 cores, once; log: $log)" >&2

  # The source package needs deb-src entries; add twins of the machine's own Debian sources.
  if ! apt-cache showsrc kubernetes 2>/dev/null | grep -qx "Version: $DEB_SRC_VERSION"; then
    local srcfile=/etc/apt/sources.list.d/dhis2-testenv-src
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      sed 's/^Types:.*$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$srcfile.sources"
    elif [ -f /etc/apt/sources.list ]; then
      sed -n 's/^deb \(.*debian.*\)$/deb-src \1/p' /etc/apt/sources.list > "$srcfile.list"
    else
      die "no Debian apt sources found to derive deb-src entries from"
    fi
    apt-get update -q >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed"; }
  fi
  # Prefer the tested Debian revision; a later one of the same upstream 1.20.2 (e.g. a new
  # deb12uN security update that replaced it on the mirror) carries the same orig tarball.
  local ver=$DEB_SRC_VERSION
  if ! apt-cache showsrc kubernetes 2>/dev/null | grep -qx "Version: $ver"; then
    ver=$(apt-cache showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | grep -F "+really${KUBE_VERSION#v}-" | sort -V | tail -n1)
    [ -n "$ver" ] || die "apt has no source for kubernetes ${KUBE_VERSION#v} (is the mirror Debian bookworm?)"
  fi
  (cd "$W" && apt-get source --download-only "kubernetes=$ver") >>"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; die "apt-get source kubernetes=$ver failed"; }
  tar -C "$W" -xzf "$W"/kubernetes_*.orig.tar.gz
  local SRC=$W/kubernetes-${KUBE_VERSION#v}
  [ -d "$SRC/vendor" ] || die "unexpected source layout: $SRC/vendor missing"

  # THE TRAP: the vendored reflect2 1.0.1 breaks under Go >= 1.18 (apiserver SIGSEGVs in
  # mapiterinit on the first custom resource). Swap in Debian's reflect2 1.0.2 / jsoniter 1.1.12.
  local d
  for d in modern-go/reflect2 json-iterator/go; do
    [ -d "/usr/share/gocode/src/github.com/$d" ] || die "/usr/share/gocode/src/github.com/$d missing"
    rm -rf "$SRC/vendor/github.com/$d"; mkdir -p "$SRC/vendor/github.com/$d"
    cp -r "/usr/share/gocode/src/github.com/$d/." "$SRC/vendor/github.com/$d/"
    find "$SRC/vendor/github.com/$d" -name '*_test.go' -delete
  done

  # GOPATH mode + `make` (not `go build`): make generates the OpenAPI code first.
  ln -sfn "$SRC" "$W/gopath/src/k8s.io/kubernetes"
  (
    cd "$W/gopath/src/k8s.io/kubernetes"
    export GOPATH=$W/gopath GOCACHE=$W/gocache GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS=
    export KUBE_GIT_VERSION=$KUBE_VERSION KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=$KUBE_COMMIT
    make WHAT="${BINARIES[*]/#/cmd/}"
  ) >>"$log" 2>&1 || { tail -n 40 "$log" >&2; die "make failed (full log: $log)"; }

  # Install atomically so a half-copied binary never looks like a valid cache.
  mkdir -p "$KBIN"
  local b
  for b in "${BINARIES[@]}"; do
    cp "$SRC/_output/bin/$b" "$KBIN/.$b.tmp" && mv -f "$KBIN/.$b.tmp" "$KBIN/$b"
  done
  binaries_ok || die "built binaries do not report $KUBE_VERSION"
  rm -rf "$W"   # ~2.3 GB of scratch; the binaries are all we keep
}

# pid from DIR/NAME.pid if that process is alive and is the expected program.
live_pid() {
  local f=$1/$2.pid prog=$3 pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  local argv0
  argv0=$( { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | head -n1) || return 1
  [ "$(basename -- "${argv0:-/}")" = "$prog" ] || return 1   # guards against pid reuse
  echo "$pid"
}

port_in_use() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

fail_start() {   # $1 = message, $2 = log file; tear down what was started
  echo "kube.sh: $1" >&2
  [ -f "$2" ] && tail -n 25 "$2" >&2
  cmd_stop "$DIR" || true
  exit 1
}

cmd_start() {
  mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
  if live_pid "$DIR" etcd etcd >/dev/null && live_pid "$DIR" apiserver kube-apiserver >/dev/null &&
     live_pid "$DIR" kcm kube-controller-manager >/dev/null; then
    return 0   # already running
  fi
  cmd_stop "$DIR"   # half-running leftovers (e.g. one component crashed): restart cleanly
  binaries_ok || die "binaries missing in $KBIN; run: $0 build"
  command -v etcd >/dev/null || die "etcd not installed; run $HERE/install.sh"
  local p
  for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT"; do
    if port_in_use "$p"; then
      die "port 127.0.0.1:$p is already in use (another kube env? see: ss -ltnp 'sport = :$p')"
    fi
  done
  mkdir -p "$DIR/etcd" "$DIR/pki"
  chmod 700 "$DIR/etcd" "$DIR/pki"

  # etcd (loopback only). State (etcd data, keys, token) is kept so a restart on DIR resumes.
  setsid etcd --name t --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "t=http://127.0.0.1:$ETCD_PEER_PORT" \
    >"$DIR/etcd.log" 2>&1 </dev/null &
  echo $! >"$DIR/etcd.pid"

  # Service-account signing key and a static admin token (system:masters).
  if [ ! -s "$DIR/pki/sa.key" ]; then
    openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
  fi
  # A CA of our own and a serving certificate for every name pods use for the apiserver (the
  # `kubernetes` Service's ClusterIP and DNS names, the node's address): a pod's ServiceAccount
  # token carries this CA (kube-controller-manager --root-ca-file), so in-cluster clients verify.
  if [ ! -s "$DIR/pki/apiserver.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dhis2-testenv-ca" \
      -keyout "$DIR/pki/ca.key" -out "$DIR/pki/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
      -keyout "$DIR/pki/apiserver.key" -out "$DIR/pki/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=%s\n' "IP:127.0.0.1,IP:10.96.0.1,IP:10.250.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      >"$DIR/pki/apiserver.ext"
    openssl x509 -req -in "$DIR/pki/apiserver.csr" -CA "$DIR/pki/ca.crt" -CAkey "$DIR/pki/ca.key" \
      -CAcreateserial -days 3650 -extfile "$DIR/pki/apiserver.ext" -out "$DIR/pki/apiserver.crt" 2>/dev/null
  fi
  if [ ! -s "$DIR/pki/tokens.csv" ]; then
    (umask 077; echo "testtoken-$(openssl rand -hex 16),admin,admin,system:masters" >"$DIR/pki/tokens.csv")
  fi
  local token; token=$(cut -d, -f1 "$DIR/pki/tokens.csv")

  setsid "$KBIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 \
    --insecure-port=0 --tls-cert-file="$DIR/pki/apiserver.crt" --tls-private-key-file="$DIR/pki/apiserver.key" \
    --token-auth-file="$DIR/pki/tokens.csv" --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$DIR/pki/sa.pub" \
    --service-account-signing-key-file="$DIR/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true \
    --enable-admission-plugins=PodTolerationRestriction --endpoint-reconciler-type=none \
    >"$DIR/apiserver.log" 2>&1 </dev/null &
  echo $! >"$DIR/apiserver.pid"

  (umask 077; cat >"$DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: testenv, cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: testenv, context: {cluster: testenv, user: admin, namespace: default}}]
current-context: testenv
KC
  )

  # /readyz is readable anonymously (system:public-info-viewer), so curl needs no token.
  local ready=
  for _ in $(seq 1 120); do
    if [ "$(curl -sk -m 2 "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null)" = ok ]; then ready=1; break; fi
    live_pid "$DIR" etcd etcd >/dev/null || fail_start "etcd exited during startup" "$DIR/etcd.log"
    live_pid "$DIR" apiserver kube-apiserver >/dev/null || fail_start "kube-apiserver exited during startup" "$DIR/apiserver.log"
    sleep 0.5
  done
  [ -n "$ready" ] || fail_start "kube-apiserver not ready after 60 s" "$DIR/apiserver.log"

  # Controller manager: Deployments -> ReplicaSets -> Pods, StatefulSets, Jobs, garbage collection,
  # ServiceAccounts and their tokens, PersistentVolumeClaims bound to volumes (node.sh provisions
  # them). Pods in namespaces without a ServiceAccount are refused by the ServiceAccount admission
  # plugin until the controller has made the namespace's `default` one (milliseconds).
  setsid "$KBIN/kube-controller-manager" --kubeconfig="$DIR/kubeconfig" --bind-address=127.0.0.1 \
    --secure-port=0 --port=0 --leader-elect=false \
    --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-attachdetach,-route,-service' \
    --service-account-private-key-file="$DIR/pki/sa.key" --root-ca-file="$DIR/pki/ca.crt" \
    --use-service-account-credentials=false \
    >"$DIR/kcm.log" 2>&1 </dev/null &
  echo $! >"$DIR/kcm.pid"
  sleep 0.3
  live_pid "$DIR" kcm kube-controller-manager >/dev/null || fail_start "kube-controller-manager exited during startup" "$DIR/kcm.log"
}

any_alive() { local p; for p in "$@"; do if kill -0 "$p" 2>/dev/null; then return 0; fi; done; return 1; }

wait_gone() {   # wait_gone TENTHS PID...: true once all are gone
  local n=$1; shift
  for _ in $(seq 1 "$n"); do any_alive "$@" || return 0; sleep 0.1; done
  ! any_alive "$@"
}

# SIGTERM all three at once (one after the other takes ~6.5 s, together ~2.5 s; etcd's WAL
# keeps the state either way), wait up to 10 s, then SIGKILL what is left.
cmd_stop() {
  local dir=$1 name prog pid pids=()
  [ -d "$dir" ] || return 0
  for name in kcm:kube-controller-manager apiserver:kube-apiserver etcd:etcd; do
    prog=${name#*:}; name=${name%%:*}
    if pid=$(live_pid "$dir" "$name" "$prog"); then pids+=("$pid"); fi
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    if ! wait_gone 100 "${pids[@]}"; then
      kill -KILL "${pids[@]}" 2>/dev/null || true
      wait_gone 50 "${pids[@]}" || die "processes ${pids[*]} did not exit after SIGKILL"
    fi
  fi
  rm -f "$dir/kcm.pid" "$dir/apiserver.pid" "$dir/etcd.pid"
}

case "${1:-}" in
  build) [ $# -eq 1 ] || usage; cmd_build ;;
  start) [ $# -eq 2 ] || usage; DIR=$2; cmd_start ;;
  stop)  [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  *) usage ;;
esac
