#!/usr/bin/env bash
# One real node for the test control plane (kube.sh): pods really run.
#
#   node.sh start DIR KUBE_DIR     containerd + runc, kubelet, kube-proxy, service DNS and a volume
#                                  provisioner inside a network namespace of our own; kube-scheduler
#                                  on the host. Imports the test images (images.sh). Writes DIR/env.
#   node.sh import DIR ARCHIVE...  import OCI image archives into the node's containerd
#   node.sh stop DIR               stop it and remove everything it made outside DIR
#
# What a pod sees: the node `localhost` (10.250.0.1), pods on 10.244.0.0/24 behind the bridge
# cni0, ClusterIP Services through kube-proxy (iptables), DNS at 10.250.0.1 answering
# SVC, SVC.NS and SVC.NS.svc.cluster.local, the apiserver as the `kubernetes` Service
# (10.96.0.1:443 -> 10.250.0.1:16443, relayed to the host's 127.0.0.1:16443) with
# ServiceAccount tokens, the test S3 server at http://10.250.0.1:8333 (relayed), PVCs of the
# default StorageClass `dhis2-test-local` bound to fresh hostPath volumes under DIR/volumes.
#
# Only pods that tolerate the taint dhis2.test/real-node:NoSchedule run here: the older harness
# tests (a fake kubelet patching pod status) share this apiserver, and a real kubelet must not
# take their pods. A namespace opts in with the annotation in $DHIS2_TEST_NODE_NAMESPACE_ANNOTATION
# (PodTolerationRestriction adds the toleration to each of its pods).
#
# The recipe and its traps: ../shared/testenv/node/README.md (runc not crun; restrict_oom_score_adj;
# nsenter --net, not `ip netns exec`; the not-ready taint; kubelet's sysctls; image GC off).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${DHIS2_TESTENV_CACHE:-/var/cache/dhis2-operator}
KBIN=$CACHE_ROOT/kube-v1.20.2/bin
API_PORT=${KUBE_API_PORT:-16443}
S3_PORT=8333
NS=dhis2t NODE=localhost NODE_IP=10.250.0.1 POD_CIDR=10.244.0.0/24
TAINT_KEY=dhis2.test/real-node
STORAGE_CLASS=dhis2-test-local
IMAGES_SH=${DHIS2_TESTENV_IMAGES_SH:-$HERE/images.sh}

die() { echo "node.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR KUBE_DIR | import DIR ARCHIVE... | stop DIR" >&2; exit 2; }
IN() { nsenter --net=/run/netns/$NS "$@"; }

# Why this machine cannot run pods, if it cannot (checked before anything is started).
preflight() {
  [ "$(id -u)" = 0 ] || die "must run as root (containers, a network namespace, iptables)"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    die "the kernel has no overlay filesystem: containerd cannot unpack images (cannot run containers here)"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] ||
    die "no cgroup hierarchy is mounted at /sys/fs/cgroup: the kubelet cannot run pods here"
  unshare --net --mount --pid --uts --ipc --fork true 2>/dev/null ||
    die "cannot create Linux namespaces (unshare --net --mount --pid failed): containers cannot run here"
  [ -x "$KBIN/kubelet" ] || die "no kubelet in $KBIN: run scripts/testenv/kube.sh build"
}

start_bg() { local n=$1; shift; setsid "$@" >"$D/logs/$n.log" 2>&1 </dev/null & echo $! >"$D/$n.pid"; }

kubectl_() { kubectl --kubeconfig "$KC" "$@"; }

wait_for() {   # wait_for TENTHS WHAT CMD...
  local n=$1 what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

cmd_start() {
  preflight   # the packages: install.sh (up.sh runs it first)
  mkdir -p "$D"/{ctrd,cni/net.d,cni/ipam,kubelet/root,kubelet/pki,relay,dns,logs,volumes}
  D=$(cd "$D" && pwd)
  local t0; t0=$(date +%s)

  "$IMAGES_SH" build
  eval "$("$IMAGES_SH" env)"   # DHIS2_TEST_PAUSE_IMAGE, ...

  if [ ! -e /run/netns/$NS ]; then
    ip netns add $NS
    # No dummy interfaces here: a veth pair inside the namespace carries the node's address.
    IN sh -ec "ip link set lo up; ip link add ${NS}0 type veth peer name ${NS}1
      ip addr add $NODE_IP/24 dev ${NS}0; ip link set ${NS}0 up; ip link set ${NS}1 up
      ip route add default via 10.250.0.254 dev ${NS}0 onlink"
  fi

  containerd config default | sed \
    -e "s#^root = .*#root = \"$D/ctrd/root\"#" -e "s#^state = .*#state = \"$D/ctrd/state\"#" \
    -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$D/ctrd/containerd.sock\"#" \
    -e "s#sandbox_image = .*#sandbox_image = \"$DHIS2_TEST_PAUSE_IMAGE\"#" \
    -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"/usr/lib/cni\"#" -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$D/cni/net.d\"#" \
    -e "s#disable_apparmor = false#disable_apparmor = true#" -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" \
    -e "s#path = \"/opt/containerd\"#path = \"$D/ctrd/opt\"#" >"$D/ctrd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$D/ctrd/config.toml" ||
    die "could not set restrict_oom_score_adj in containerd's config (every pod sandbox would fail)"
  cat >"$D/cni/net.d/10-pods.conflist" <<JSON
{"cniVersion":"0.4.0","name":"pods","plugins":[
 {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$POD_CIDR"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$D/cni/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true}},{"type":"loopback"}]}
JSON
  start_bg containerd nsenter --net=/run/netns/$NS containerd --config "$D/ctrd/config.toml"
  wait_for 100 containerd ctr -a "$D/ctrd/containerd.sock" version ||
    { tail -n 20 "$D/logs/containerd.log" >&2; die "containerd did not start"; }
  mapfile -t archives < <("$IMAGES_SH" archives)
  cmd_import "${archives[@]}"

  # The apiserver into the namespace (for kubelet, kube-proxy and pods through the `kubernetes`
  # Service), the kubelet back out (kubectl logs/exec), the test S3 server in (backups from Jobs).
  start_bg relay-api-host socat UNIX-LISTEN:"$D/relay/api.sock",fork,unlink-early TCP:127.0.0.1:$API_PORT
  start_bg relay-api-ns nsenter --net=/run/netns/$NS socat TCP-LISTEN:$API_PORT,fork,reuseaddr UNIX-CONNECT:"$D/relay/api.sock"
  start_bg relay-s3-host socat UNIX-LISTEN:"$D/relay/s3.sock",fork,unlink-early TCP:127.0.0.1:$S3_PORT
  start_bg relay-s3-ns nsenter --net=/run/netns/$NS socat TCP-LISTEN:$S3_PORT,bind=$NODE_IP,fork,reuseaddr UNIX-CONNECT:"$D/relay/s3.sock"
  start_bg relay-kubelet-ns nsenter --net=/run/netns/$NS socat UNIX-LISTEN:"$D/relay/kubelet.sock",fork,unlink-early TCP:127.0.0.1:20250
  start_bg relay-kubelet-host socat TCP-LISTEN:20250,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:"$D/relay/kubelet.sock"

  # Pods reach the apiserver as `kubernetes` (10.96.0.1:443): the test apiserver reconciles no
  # endpoints of its own (--endpoint-reconciler-type=none), so give it the node's relay.
  kubectl_ apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Endpoints
metadata: {name: kubernetes, namespace: default}
subsets: [{addresses: [{ip: $NODE_IP}], ports: [{name: https, port: $API_PORT, protocol: TCP}]}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: $STORAGE_CLASS
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML

  touch "$D/dns/hosts"
  start_bg node-agent python3 "$HERE/node_agent.py" "https://127.0.0.1:$API_PORT" "$KUBE_DIR/pki/tokens.csv" \
    "$D/dns/hosts" "$D/dns/dnsmasq.pid" "$D/volumes" "$STORAGE_CLASS"
  start_bg dnsmasq nsenter --net=/run/netns/$NS dnsmasq --keep-in-foreground --no-resolv --no-hosts \
    --addn-hosts="$D/dns/hosts" --listen-address=$NODE_IP --bind-interfaces --local=/cluster.local/ \
    --pid-file="$D/dns/dnsmasq.pid" --user=root

  # kubelet (protectKernelDefaults off) rewrites these: keep the machine's values for stop.
  [ -f "$D/sysctl.saved" ] || for s in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops; do
    echo "$s=$(sysctl -n $s)"; done >"$D/sysctl.saved"
  cp "$KC" "$D/kubelet/kubeconfig"
  cat >"$D/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 20250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 20248
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
maxPods: 60
YAML
  start_kubelet
  start_bg kube-scheduler "$KBIN/kube-scheduler" --kubeconfig="$KC" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=0 --port=0
  start_bg kube-proxy nsenter --net=/run/netns/$NS "$KBIN/kube-proxy" --kubeconfig="$KC" \
    --hostname-override=$NODE --proxy-mode=iptables --masquerade-all --cluster-cidr=$POD_CIDR \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --healthz-bind-address=127.0.0.1:20256 --metrics-bind-address=127.0.0.1:20249

  node_ready() { [ "$(kubectl_ get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
  wait_for 900 "node Ready" node_ready ||
    { tail -n 30 "$D/logs/kubelet.log" >&2; die "the node did not become Ready in 90 s (kubelet log above)"; }
  # Only pods that tolerate this run here (kubelet 1.20 has no registerWithTaints in its config
  # file, and the flag applies only when the node is first registered: set it on the object).
  kubectl_ taint node $NODE "$TAINT_KEY=true:NoSchedule" --overwrite >/dev/null
  [ -n "$(kubectl_ get node $NODE -o jsonpath="{.spec.taints[?(@.key==\"$TAINT_KEY\")].effect}")" ] ||
    die "could not taint node $NODE with $TAINT_KEY (the harness tests' pods would run on it)"
  # The node-lifecycle controller that lifts this taint is off in kube.sh's controller manager.
  kubectl_ taint node $NODE node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true

  {
    echo "# written by scripts/testenv/node.sh"
    "$IMAGES_SH" env
    printf 'export DHIS2_TEST_S3_ENDPOINT_IN_CLUSTER=%q\n' "http://$NODE_IP:$S3_PORT"
    printf 'export DHIS2_TEST_NODE_NETNS=%q\n' "/run/netns/$NS"
    printf 'export DHIS2_TEST_CONTAINERD_ADDRESS=%q\n' "$D/ctrd/containerd.sock"
    printf 'export DHIS2_TEST_NODE_DIR=%q\n' "$D"
    printf 'export DHIS2_TEST_NODE_NAMESPACE_ANNOTATION=%q\n' \
      "scheduler.alpha.kubernetes.io/defaultTolerations=[{\"key\":\"$TAINT_KEY\",\"operator\":\"Exists\",\"effect\":\"NoSchedule\"}]"
  } >"$D/env"
  echo "node.sh: node $NODE Ready in $(( $(date +%s) - t0 )) s"
}

# Also used by tests that restart the kubelet mid-journey (DIR/restart-kubelet).
start_kubelet() {
  start_bg kubelet nsenter --net=/run/netns/$NS "$KBIN/kubelet" --config="$D/kubelet/config.yaml" \
    --kubeconfig="$D/kubelet/kubeconfig" --root-dir="$D/kubelet/root" --cert-dir="$D/kubelet/pki" \
    --container-runtime=remote --container-runtime-endpoint="unix://$D/ctrd/containerd.sock" \
    --runtime-request-timeout=5m --hostname-override=$NODE --node-ip=$NODE_IP --v=1
}

cmd_import() {
  local a
  for a in "$@"; do
    [ -f "$a" ] || die "no image archive $a"
    ctr -a "$D/ctrd/containerd.sock" -n k8s.io images import --all-platforms "$a" >/dev/null ||
      die "ctr images import $a failed"
  done
}

stop_pid() {
  local f=$D/$1.pid p
  [ -f "$f" ] || return 0
  # A process that already exited is not an error: under `set -e` a failed kill would end the
  # stop half-way, leaving containerd, the relays and dnsmasq (on the node's address) running.
  p=$(cat "$f"); kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || { rm -f "$f"; return 0; }; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true; rm -f "$f"
}

cmd_stop() {
  [ -d "$D" ] || return 0
  D=$(cd "$D" && pwd)
  local n t c
  for n in kube-scheduler kubelet kube-proxy node-agent; do stop_pid $n; done
  local CTR=(ctr -a "$D/ctrd/containerd.sock" -n k8s.io)
  if "${CTR[@]}" version >/dev/null 2>&1; then
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
    sleep 0.5
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1; done
    for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1; done
  fi
  stop_pid containerd
  # Shims of this containerd (their command line names its socket).
  for p in /proc/[0-9]*; do
    grep -qaF -- "$D/ctrd/containerd.sock" "$p/cmdline" 2>/dev/null && grep -qa containerd-shim "$p/cmdline" 2>/dev/null &&
      kill -9 "${p#/proc/}" 2>/dev/null
  done
  for n in dnsmasq relay-api-host relay-api-ns relay-s3-host relay-s3-ns relay-kubelet-ns relay-kubelet-host; do stop_pid $n; done
  # Mounts under D and the pod network namespaces containerd made, deepest first.
  awk -v d="$D" 'index($5, d) == 1 || $5 ~ "^/run/netns/cni-" {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  rm -f /run/netns/cni-*
  ip netns del $NS 2>/dev/null || true
  if mountpoint -q /run/netns && [ -z "$(ls -A /run/netns)" ]; then umount /run/netns 2>/dev/null && rmdir /run/netns; fi
  for h in /sys/fs/cgroup/*/; do
    for c in kubepods k8s.io; do [ -d "$h$c" ] && find "$h$c" -depth -type d -exec rmdir {} + 2>/dev/null; done
  done
  if [ -f "$D/sysctl.saved" ]; then while IFS== read -r k v; do sysctl -qw "$k=$v"; done <"$D/sysctl.saved"; fi
  # Paths kubelet and containerd write whatever their --root-dir and state say.
  rm -rf /var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni /run/containerd/io.containerd.*
  rm -rf "$D/volumes" "$D/ctrd" "$D/kubelet"
  return 0
}

case "${1:-}" in
  start) [ $# -eq 3 ] || usage; D=$2; KUBE_DIR=$(cd "$3" && pwd); KC=$KUBE_DIR/kubeconfig; cmd_start ;;
  import) [ $# -ge 3 ] || usage; D=$2; shift 2; cmd_import "$@" ;;
  restart-kubelet) [ $# -eq 2 ] || usage; D=$(cd "$2" && pwd); stop_pid kubelet; start_kubelet ;;
  stop) [ $# -eq 2 ] || usage; D=$2; cmd_stop ;;
  *) usage ;;
esac
