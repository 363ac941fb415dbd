#!/usr/bin/env bash
# The operator's image (the Dockerfile's content) built without Docker or a registry, as an OCI
# archive that `ctr images import`, `k3s ctr images import` and `nerdctl load` accept: for
# air-gapped clusters and for test clusters that have no registry.
#
#   scripts/image.sh [--binaries DIR] [--tag TAG] [--repository REPO] [--out FILE]
#                    [--pg-major N] [--strip-debug]
#
#   --binaries DIR    take dhis2-operator, dhis2ctl and kubectl-dhis2 from DIR; default: run
#                     `cargo build --release --locked --bins` (honours CARGO_TARGET_DIR) and
#                     take them from its release directory
#   --repository REPO default: the chart's image.repository (charts/dhis2-operator/values.yaml)
#   --tag TAG         default: the crate's version (Cargo.toml), which is the chart's appVersion
#                     and so its default image tag: `helm install` finds the imported image as is
#   --out FILE        default: dist/dhis2-operator-TAG.oci.tar
#   --pg-major N      install the PostgreSQL N client tools instead of the Dockerfile's
#                     ARG PG_MAJOR, e.g. Debian's own 15 where apt.postgresql.org is unreachable
#                     (the archive then differs from the Dockerfile's image: say so to
#                     tests/image.rs with DHIS2_OPERATOR_IMAGE_PG_MAJOR=N)
#   --strip-debug     drop the binaries' debug information (objcopy --strip-debug; symbols stay
#                     for backtraces): debug builds' 300 MB each become ~50 MB, as release
#                     builds are without debug information anyway
#
# Two layers. The base: a Debian minbase root filesystem of the Dockerfile's DEBIAN_RELEASE
# (mmdebstrap, as debian:RELEASE-slim is made) with the runtime packages installed inside it by
# the same docker/install-runtime-packages.sh that the Dockerfile runs, so the two cannot
# drift; it is cached under ${DHIS2_TESTENV_CACHE:-/var/cache/dhis2-operator}/images/operator/,
# keyed by this script, the package script, the release and the PostgreSQL major. On top: the
# three binaries in /usr/local/bin. The image's user, entrypoint, command and labels are read from
# the Dockerfile's runtime stage. Before writing the archive the binaries are run inside the
# root filesystem as the image's user, as the Dockerfile's RUN does, and so is the package
# script's --verify.
#
# Needs root (mmdebstrap --mode=root, chroot), mmdebstrap, python3 and network access to
# deb.debian.org for the first build of a base. Prints the image's name and the archive's path.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKERFILE=$ROOT/Dockerfile
PACKAGE_SCRIPT=$ROOT/docker/install-runtime-packages.sh
BINS=(dhis2-operator dhis2ctl kubectl-dhis2)

die() { echo "image.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }

binaries="" tag="" repository="" out="" pg_major="" strip_debug=false
while [ $# -gt 0 ]; do
  case "$1" in
    --binaries) binaries=${2:?--binaries DIR}; shift 2 ;;
    --tag) tag=${2:?--tag TAG}; shift 2 ;;
    --repository) repository=${2:?--repository REPO}; shift 2 ;;
    --out) out=${2:?--out FILE}; shift 2 ;;
    --pg-major) pg_major=${2:?--pg-major N}; shift 2 ;;
    --strip-debug) strip_debug=true; shift ;;
    -h|--help) usage 0 ;;
    *) echo "image.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
CHROOT=$(command -v chroot || true)
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root and chroot)"
for tool in mmdebstrap python3 chroot flock sha256sum tar; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install mmdebstrap python3)"
done

# The Dockerfile's facts: `dockerfile release|pg_major|config`. config prints the arguments of
# scripts/oci_image.py for the runtime stage's USER, ENTRYPOINT, CMD and LABELs, one a line.
dockerfile() {
  python3 - "$DOCKERFILE" "$1" <<'EOF'
import json, shlex, sys

path, what = sys.argv[1], sys.argv[2]
instructions, current = [], ""
for raw in open(path, encoding="utf-8").read().splitlines():
    line = raw.strip()
    if line.startswith("#") or (not line and not current):
        continue
    if line.endswith("\\"):
        current += line[:-1] + " "
        continue
    current += line
    keyword, _, rest = current.strip().partition(" ")
    instructions.append((keyword.upper(), rest.strip()))
    current = ""

args, stage = {}, []
for keyword, rest in instructions:
    if keyword == "ARG" and "=" in rest:
        name, value = rest.split("=", 1)
        args[name.strip()] = value.strip()
    if keyword == "FROM":
        stage = [(keyword, rest)]
    else:
        stage.append((keyword, rest))

def fail(message):
    sys.exit(f"image.sh: {path}: {message}")

release = args.get("DEBIAN_RELEASE") or fail("no ARG DEBIAN_RELEASE=")
base = stage[0][1] if stage else ""
if base != "debian:${DEBIAN_RELEASE}-slim":
    fail(f"the runtime stage starts FROM {base!r}, not debian:${{DEBIAN_RELEASE}}-slim: "
         "scripts/image.sh builds only that base")
if what == "release":
    print(release)
elif what == "pg_major":
    print(args.get("PG_MAJOR") or fail("no ARG PG_MAJOR="))
elif what == "config":
    last = {}
    labels = []
    for keyword, rest in stage:
        if keyword in ("USER", "ENTRYPOINT", "CMD"):
            last[keyword] = rest
        elif keyword == "LABEL":
            labels += shlex.split(rest)
        elif keyword in ("ENV", "WORKDIR", "VOLUME", "EXPOSE", "STOPSIGNAL", "SHELL"):
            fail(f"{keyword} in the runtime stage: teach scripts/image.sh to carry it over")
    for keyword in ("ENTRYPOINT", "CMD"):
        value = last.get(keyword) or fail(f"no {keyword}")
        try:
            json.loads(value)
        except ValueError:
            fail(f"{keyword} is not in JSON (exec) form: {value}")
        print(f"--{keyword.lower()}")
        print(value)
    print("--user")
    print(last.get("USER") or fail("no USER"))
    for label in labels:
        "=" in label or fail(f"LABEL {label}: not KEY=VALUE")
        print("--label")
        print(label)
EOF
}

release=$(dockerfile release)
pg_major=${pg_major:-$(dockerfile pg_major)}
mapfile -t config_args < <(dockerfile config)
[ ${#config_args[@]} -gt 0 ] || die "could not read the Dockerfile's runtime stage"
image_user=$(printf '%s\n' "${config_args[@]}" | sed -n '/^--user$/{n;p}')

if [ -z "$repository" ]; then
  repository=$(awk '/^image:/ { in_image = 1; next } /^[^ #]/ { in_image = 0 }
    in_image && $1 == "repository:" { print $2; exit }' "$ROOT/charts/dhis2-operator/values.yaml")
  [ -n "$repository" ] || die "no image.repository in charts/dhis2-operator/values.yaml"
fi
if [ -z "$tag" ]; then
  tag=$(awk '/^\[/ { in_package = ($0 == "[package]") } in_package && $1 == "version" {
    gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.toml")
  [ -n "$tag" ] || die "no [package] version in Cargo.toml"
fi
out=${out:-$ROOT/dist/dhis2-operator-$tag.oci.tar}
ref=$repository:$tag

if [ -z "$binaries" ]; then
  (cd "$ROOT" && cargo build --release --locked --bins)
  target=${CARGO_TARGET_DIR:-target}
  case "$target" in /*) ;; *) target=$ROOT/$target ;; esac
  binaries=$target/release
fi
for bin in "${BINS[@]}"; do
  [ -x "$binaries/$bin" ] || die "$binaries/$bin is missing or not executable"
done

# A directory of its own: scripts/testenv/images.sh prunes what it does not know in images/.
cache=${DHIS2_TESTENV_CACHE:-/var/cache/dhis2-operator}/images/operator
mkdir -p "$cache"
# One build at a time: a base is built once, and an old one is never removed while in use.
exec 9>"$cache/image.lock"
flock 9

key=$( (cat "${BASH_SOURCE[0]}" "$PACKAGE_SCRIPT"; echo "$release $pg_major") | sha256sum | cut -c1-16)
base=$cache/base-$release-pg$pg_major-$key.tar
work=$(mktemp -d "$cache/work.XXXXXX")
# --one-file-system: never into a mount an interrupted mmdebstrap left in its root filesystem
# (its dev/shm is the host's /dev/shm, bind-mounted).
trap 'rm -rf --one-file-system "$work"' EXIT

# A layer from a directory: sorted, numeric owners, fixed times (as scripts/oci_image.py does).
layer_tar() {
  tar -C "$1" --numeric-owner --xattrs --sort=name --mtime=@0 --clamp-mtime -cf "$2" .
}

if [ -s "$base" ]; then
  echo "== base layer (cached): $base"
else
  echo "== base layer: Debian $release minbase + runtime packages (PostgreSQL $pg_major client)"
  started=$(date +%s)
  rootfs=$work/base
  # debian:RELEASE-slim's sources and the dpkg excludes that make it slim (debuerreotype).
  mirrors=(
    "deb http://deb.debian.org/debian $release main"
    "deb http://deb.debian.org/debian $release-updates main"
    "deb http://deb.debian.org/debian-security $release-security main"
  )
  slim=()
  for rule in path-exclude=/usr/share/doc/* path-include=/usr/share/doc/*/copyright \
              path-exclude=/usr/share/groff/* path-exclude=/usr/share/info/* \
              path-exclude=/usr/share/linda/* path-exclude=/usr/share/lintian/overrides/* \
              path-exclude=/usr/share/locale/* path-include=/usr/share/locale/locale.alias \
              path-exclude=/usr/share/man/*; do
    slim+=(--dpkgopt="$rule")
  done
  # The Dockerfile: COPY the package script to /usr/local/sbin, then RUN it with PG_MAJOR.
  # shellcheck disable=SC2016 # "$1" is the hook's root filesystem, expanded by mmdebstrap
  mmdebstrap --variant=minbase --mode=root --quiet "${slim[@]}" \
    --customize-hook='mkdir -p "$1/usr/local/sbin"' \
    --customize-hook="upload '$PACKAGE_SCRIPT' /usr/local/sbin/install-runtime-packages.sh" \
    --customize-hook='chmod 0755 "$1/usr/local/sbin/install-runtime-packages.sh"' \
    --customize-hook="env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PG_MAJOR=$pg_major chroot \"\$1\" /usr/local/sbin/install-runtime-packages.sh" \
    "$release" "$rootfs" "${mirrors[@]}" \
    || die "mmdebstrap failed (above). Where Debian $release has no postgresql-client-$pg_major," \
           "install-runtime-packages.sh needs apt.postgresql.org; --pg-major N takes a major" \
           "that Debian $release has itself"
  chmod 0755 "$rootfs"
  # What debuerreotype does to debian:RELEASE-slim: the excluded paths of what was unpacked
  # before the dpkg rules applied; no build host's name or DNS, no device nodes (the container
  # runtime provides them).
  (
    cd "$rootfs"
    find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    find usr/share/groff usr/share/info usr/share/linda usr/share/lintian/overrides usr/share/man \
      -mindepth 1 -delete 2>/dev/null || true
    find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + \
      2>/dev/null || true
    rm -f etc/resolv.conf etc/hostname
    rm -rf --one-file-system dev/* proc/* sys/*
  )
  layer_tar "$rootfs" "$base.partial"
  mv "$base.partial" "$base"
  rm -rf --one-file-system "$rootfs"
  # Bases of older scripts are not used again.
  find "$cache" -maxdepth 1 -name "base-$release-pg$pg_major-*.tar" ! -path "$base" -delete
  echo "   built in $(( $(date +%s) - started )) s: $base"
fi

# The binaries' layer: /usr/local/bin/{dhis2-operator,dhis2ctl,kubectl-dhis2}, 0755, root's.
layer=$work/binaries
install -d -m 0755 -o 0 -g 0 "$layer" "$layer/usr" "$layer/usr/local" "$layer/usr/local/bin"
for bin in "${BINS[@]}"; do
  install -m 0755 -o 0 -g 0 "$binaries/$bin" "$layer/usr/local/bin/$bin"
  if $strip_debug; then
    objcopy --strip-debug "$layer/usr/local/bin/$bin" || die "objcopy --strip-debug $bin failed (binutils)"
  fi
done

# As the Dockerfile's RUN: the binaries start in the image, as the image's user; the tools check.
check=$work/check
mkdir -m 0755 "$check"
tar -C "$check" -xf "$base"
cp -a "$layer/usr/local/bin/." "$check/usr/local/bin/"
mknod -m 0666 "$check/dev/null" c 1 3   # as a container runtime provides it
for bin in "${BINS[@]}"; do
  env -i PATH=/usr/local/bin:/usr/bin:/bin "$CHROOT" --userspec="$image_user" "$check" "$bin" --version \
    || die "$bin --version fails in the image as $image_user"
done
env -i PATH=/usr/local/bin:/usr/bin:/bin PG_MAJOR="$pg_major" "$CHROOT" --userspec="$image_user" "$check" \
  /usr/local/sbin/install-runtime-packages.sh --verify
rm -rf --one-file-system "$check"

mkdir -p "$(dirname "$out")"
written=$(python3 "$ROOT/scripts/oci_image.py" --ref "$ref" --out "$out" --layer "$base" \
  --layer "$layer" "${config_args[@]}")
if [ "$pg_major" != "$(dockerfile pg_major)" ]; then
  echo "note: PostgreSQL $pg_major client tools, not the Dockerfile's $(dockerfile pg_major) (--pg-major)" >&2
fi
echo "image: $ref (containerd: ${written%% *}), $(du -h "$out" | cut -f1)"
echo "archive: $out"
