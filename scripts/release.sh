#!/usr/bin/env bash
# Builds a release of dhis2-operator into dist/ (or --out DIR):
#
#   dhis2ctl_VERSION-1_amd64.deb             dhis2ctl and kubectl-dhis2, the man page dhis2ctl(1),
#                                            bash/zsh/fish completions, the example manifests
#   dhis2ctl-VERSION-x86_64-linux.tar.gz     the same for any Linux with glibc >= 2.34
#   dhis2-operator-image-VERSION.oci.tar     the operator's image (dhis2-operator:VERSION), for
#                                            `k3s ctr images import` / `ctr -n k8s.io images import`
#   dhis2-operator-VERSION.tgz               the Helm chart (its CRDs included)
#   install.yaml                             everything without Helm (kubectl apply --server-side)
#   SHA256SUMS                               `sha256sum -c SHA256SUMS`
#
#   scripts/release.sh VERSION [--out DIR] [--binaries DIR] [--pg-major N]
#
#   VERSION          must be Cargo.toml's version and the chart's version and appVersion
#   --binaries DIR   package dhis2-operator, dhis2ctl and kubectl-dhis2 from DIR (e.g. a debug
#                    build, for tests); default: `cargo build --release --locked --bins`
#   --pg-major N     the image's PostgreSQL client tools (scripts/image.sh --pg-major)
#
# The .deb is built with dpkg-deb. Archives are reproducible: file times are the last commit's
# (SOURCE_DATE_EPOCH), owners root, entries sorted. Needs what scripts/image.sh needs (root,
# mmdebstrap) and python3 with helm-python-sdk (scripts/testenv/install.sh installs both).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "release.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage 0 ;; -*) usage ;; esac
version=$1; shift
out=$ROOT/dist binaries="" pg_major=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out DIR}; shift 2 ;;
    --binaries) binaries=${2:?--binaries DIR}; shift 2 ;;
    --pg-major) pg_major=${2:?--pg-major N}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument '$1' (--help lists them)" ;;
  esac
done

[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] ||
  die "VERSION '$version' is not a semantic version like 0.1.0"
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
chart_version=$(sed -n 's/^version: *//p' "$ROOT/charts/dhis2-operator/Chart.yaml")
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/dhis2-operator/Chart.yaml")
for pair in "Cargo.toml's version:$crate_version" "Chart.yaml's version:$chart_version" "Chart.yaml's appVersion:$app_version"; do
  [ "${pair##*:}" = "$version" ] ||
    die "VERSION $version is not ${pair%%:*} (${pair##*:}): set it there first, and a CHANGELOG.md section"
done
grep -q "^## \[$version\]" "$ROOT/CHANGELOG.md" || die "CHANGELOG.md has no section '## [$version]'"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 releases are built (this machine is $(uname -m))"

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
if [ -z "$binaries" ]; then
  (cd "$ROOT" && cargo build --release --locked --bins)
  binaries=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
for b in dhis2-operator dhis2ctl kubectl-dhis2; do
  [ -x "$binaries/$b" ] || die "no $binaries/$b"
done
"$binaries/dhis2ctl" --version | grep -qF " $version" ||
  die "$binaries/dhis2ctl is not version $version: $("$binaries/dhis2ctl" --version)"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -f "$out"/dhis2ctl_*.deb "$out"/dhis2ctl-*.tar.gz "$out"/dhis2-operator-image-*.oci.tar \
  "$out"/dhis2-operator-*.tgz "$out/install.yaml" "$out/SHA256SUMS"

# What dhis2ctl's packages hold, in the Filesystem Hierarchy's places (under /usr).
stage=$work/usr
install -d "$stage/bin" "$stage/share/man/man1" "$stage/share/bash-completion/completions" \
  "$stage/share/zsh/vendor-completions" "$stage/share/fish/vendor_completions.d" \
  "$stage/share/doc/dhis2ctl/examples"
for b in dhis2ctl kubectl-dhis2; do
  install -m 0755 "$binaries/$b" "$stage/bin/$b"
  objcopy --strip-debug "$stage/bin/$b"
done
"$stage/bin/dhis2ctl" man | gzip -9n >"$stage/share/man/man1/dhis2ctl.1.gz"
"$stage/bin/dhis2ctl" completions bash >"$stage/share/bash-completion/completions/dhis2ctl"
"$stage/bin/dhis2ctl" completions zsh >"$stage/share/zsh/vendor-completions/_dhis2ctl"
"$stage/bin/dhis2ctl" completions fish >"$stage/share/fish/vendor_completions.d/dhis2ctl.fish"
install -m 0644 "$ROOT"/manifests/examples/*.yaml "$stage/share/doc/dhis2ctl/examples/"
install -m 0644 "$ROOT/README.md" "$stage/share/doc/dhis2ctl/README.md"
gzip -9n <"$ROOT/CHANGELOG.md" >"$stage/share/doc/dhis2ctl/changelog.gz"
install -m 0644 "$ROOT/LICENSE" "$stage/share/doc/dhis2ctl/copyright"
find "$work" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# The Debian package.
deb=$work/deb
install -d "$deb/DEBIAN"
cp -a "$work/usr" "$deb/usr"
glibc=$(objdump -T "$stage/bin/dhis2ctl" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
cat >"$deb/DEBIAN/control" <<CONTROL
Package: dhis2ctl
Version: $version-1
Architecture: amd64
Maintainer: dhis2-operator developers <dhis2-operator@users.noreply.github.com>
Installed-Size: $(du -sk "$deb/usr" | cut -f1)
Depends: libc6 (>= $glibc), libgcc-s1
Recommends: postgresql-client
Suggests: age, zstd, kubectl
Section: admin
Priority: optional
Homepage: https://github.com/dhis2-operator/dhis2-operator
Description: back up, restore and upgrade DHIS2 safely
 dhis2ctl backs up a DHIS2 server (database, file store, dhis.conf) to S3-compatible
 storage, verifies and restores backups, runs restore drills, and drives the
 dhis2-operator in a Kubernetes cluster (also as the kubectl plugin "kubectl dhis2").
 Backups need pg_dump of the server's PostgreSQL major version or newer
 (postgresql-client).
CONTROL
(cd "$deb" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$deb/DEBIAN/md5sums"
find "$deb" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz --build "$deb" "$out/dhis2ctl_${version}-1_amd64.deb" >/dev/null

# The tarball: the same files under dhis2ctl-VERSION/.
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  -C "$work" --transform "s,^usr,dhis2ctl-$version," -cf - usr |
  gzip -9n >"$out/dhis2ctl-$version-x86_64-linux.tar.gz"

# The operator's image, as `helm install` finds it once imported: dhis2-operator:VERSION.
image_args=(--binaries "$binaries" --tag "$version" --out "$out/dhis2-operator-image-$version.oci.tar" --strip-debug)
[ -z "$pg_major" ] || image_args+=(--pg-major "$pg_major")
"$ROOT/scripts/image.sh" "${image_args[@]}" >"$work/image.log" ||
  { tail -n 20 "$work/image.log" >&2; die "scripts/image.sh failed"; }

# The chart, and install.yaml (the chart rendered with its defaults: committed, checked current
# by tests/helm_chart.rs).
python3 - "$ROOT/charts/dhis2-operator" "$out" "$version" <<'PY'
import sys
import helm_python
print(helm_python.package(sys.argv[1], destination=sys.argv[2], version=sys.argv[3], app_version=sys.argv[3]))
PY
[ -f "$out/dhis2-operator-$version.tgz" ] || die "the chart package is not $out/dhis2-operator-$version.tgz"
python3 "$ROOT/charts/render.py" check || die "manifests/install.yaml is not the chart's rendering"
install -m 0644 "$ROOT/manifests/install.yaml" "$out/install.yaml"

(cd "$out" && sha256sum dhis2ctl_"$version"-1_amd64.deb dhis2ctl-"$version"-x86_64-linux.tar.gz \
  dhis2-operator-image-"$version".oci.tar dhis2-operator-"$version".tgz install.yaml >SHA256SUMS)
echo "release $version in $out:"
(cd "$out" && ls -l --time-style=+ dhis2ctl_"$version"-1_amd64.deb dhis2ctl-"$version"-x86_64-linux.tar.gz \
  dhis2-operator-image-"$version".oci.tar dhis2-operator-"$version".tgz install.yaml SHA256SUMS |
  awk '{print "  " $NF " (" $5 " bytes)"}')
