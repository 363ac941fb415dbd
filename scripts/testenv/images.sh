#!/usr/bin/env bash
# The container images the one-node test cluster runs, built without any registry or Docker
# engine: root filesystems from Debian (mmdebstrap) written as OCI archives by
# scripts/oci_image.py, for `ctr -n k8s.io images import --all-platforms FILE`.
#
#   images.sh build      build (or reuse) the archives (cold ~2 min, mostly mmdebstrap; cached 0.1 s)
#   images.sh archives   the current build's archive paths, one a line (fails if not built)
#   images.sh env        `export DHIS2_TEST_*_IMAGE=...` lines naming the images
#   images.sh prune      delete cached archives and layers the current build does not use
#
# The images (amd64):
#   localhost/dhis2-test/pause:1        the pod sandbox image: a static C pause program
#   localhost/dhis2-test/busybox:1      busybox-static with its applet links (cmd /bin/sh): test pods
#   localhost/dhis2-test/postgis:15-3.3 PostgreSQL 15 + PostGIS 3.3 from Debian bookworm, postgres
#       user/group forced to 999 (as postgis/postgis), entrypoint compatible with postgis/postgis's
#       (postgis-entrypoint.sh), StopSignal SIGINT (fast shutdown). PostgreSQL 15 because it is
#       Debian bookworm's: the operator defaults to postgis/postgis:16-3.4, but PostgreSQL 16 is
#       packaged in no reachable Debian release (bookworm has 15, trixie 17) and there is no registry.
#   localhost/dhis2-test/dhis2:{2.41.3,2.42.1,2.43.0}  the DHIS2 stand-in (dhis2-standin/): DHIS2
#       itself is in no reachable registry. Python on a bookworm rootfs; the three tags share their
#       layers and differ only in DHIS2_VERSION; 2.43.0 fails its Flyway migration on purpose.
#
# Cache ($DHIS2_TESTENV_CACHE/images, default /var/cache/dhis2-operator/images): an archive's
# name carries a hash of its inputs (this script, oci_image.py, its own sources, its rootfs
# recipe); root filesystems are cached as layer tars (layers/) keyed by their recipe (suite,
# mirrors, packages, hooks), so editing the stand-in rebuilds only its small layer. Debian's own
# updates are not in the key: delete layers/*-rootfs-*.tar to take them. Other tools share
# $CACHE/images: this script touches only its own file names. Concurrent builds serialise on a
# flock; every file appears atomically (written aside, then renamed). Needs root (mmdebstrap).
# The mmdebstrap hooks below are sh scripts run with the rootfs as $1: single quotes on purpose.
# shellcheck disable=SC2016,SC2089,SC2090
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
OCI=$HERE/../oci_image.py
STANDIN=$HERE/dhis2-standin/dhis2_standin.py
PG_ENTRYPOINT=$HERE/postgis-entrypoint.sh
CACHE=${DHIS2_TESTENV_CACHE:-/var/cache/dhis2-operator}/images
REPO=localhost/dhis2-test
DHIS2_VERSIONS=(2.41.3 2.42.1 2.43.0)
PG_TAG=15-3.3

die() { echo "images.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 build | archives | env | prune" >&2; exit 2; }

# --- root filesystem recipes (everything mmdebstrap is given is also the cache key) ---------
MIRRORS=("deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main")
DPKG_OPTS=('path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias')
# postgres 999:999 exists before postgresql-common would pick another id; no main cluster.
PG_ESSENTIAL_HOOK='set -e
echo "postgres:x:999:999:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash" >>"$1/etc/passwd"
echo "postgres:x:999:" >>"$1/etc/group"
mkdir -p "$1/etc/postgresql-common/createcluster.d"
echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/docker.conf"'
# As the official image: en_US.UTF-8, listen_addresses='*' in every new cluster, the default
# PGDATA writable by postgres (the socket directory is in the entrypoint's layer: mmdebstrap
# empties /run).
PG_CUSTOMIZE_HOOK='set -e
chroot "$1" localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8
sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '"'*'"'!" "$1/usr/share/postgresql/15/postgresql.conf.sample"
grep -qF "listen_addresses = '"'*'"'" "$1/usr/share/postgresql/15/postgresql.conf.sample"
install -d -m 1777 -o 999 -g 999 "$1/var/lib/postgresql/data"
install -d -m 0755 "$1/docker-entrypoint-initdb.d"'
# DHIS2's directories as in dhis2/core (uid 65534), so the mounts have somewhere to land.
DHIS2_CUSTOMIZE_HOOK='set -e
for d in opt/dhis2 opt/dhis2/files opt/dhis2/logs usr/local/tomcat usr/local/tomcat/temp \
  usr/local/tomcat/work usr/local/tomcat/logs; do install -d -m 0755 -o 65534 -g 65534 "$1/$d"; done'

# mmdebstrap's arguments for rootfs NAME up to the suite, NUL-separated (then come the target
# directory and MIRRORS).
rootfs_args() {
  local include essential="" customize
  case $1 in
    postgis) include=postgresql-15,postgresql-15-postgis-3,locales
      essential=$PG_ESSENTIAL_HOOK; customize=$PG_CUSTOMIZE_HOOK ;;
    dhis2) include=python3,python3-psycopg2,python3-bcrypt; customize=$DHIS2_CUSTOMIZE_HOOK ;;
    *) die "no rootfs recipe $1" ;;
  esac
  printf '%s\0' --variant=minbase --mode=root --format=directory \
    --aptopt='Apt::Install-Recommends "false"' "${DPKG_OPTS[@]/#/--dpkgopt=}" \
    --include="$include" ${essential:+"--essential-hook=$essential"} \
    "--customize-hook=$customize" bookworm
}

hash_of() { sha256sum | cut -c1-16; }
rootfs_key() { { rootfs_args "$1"; printf '%s\0' "${MIRRORS[@]}"; } | hash_of; }
layer_path() { echo "$CACHE/layers/$1-rootfs-$(rootfs_key "$1").tar"; }

# The archive of image NAME (pause, busybox, postgis, dhis2-<version>): its file name hashes
# this script, oci_image.py, the image's own sources and its rootfs recipe or host tools.
archive_path() {
  local name=$1 key
  key=$({
    cat "$SELF" "$OCI"
    case $name in
      pause) dpkg-query -W gcc libc6-dev 2>/dev/null || true ;;
      busybox) dpkg-query -W busybox-static 2>/dev/null || true ;;
      postgis) cat "$PG_ENTRYPOINT"; rootfs_key postgis ;;
      dhis2-*) cat "$STANDIN"; rootfs_key dhis2 ;;
    esac
  } | hash_of)
  echo "$CACHE/$name-$key.tar"
}
image_names() { echo pause busybox postgis; printf 'dhis2-%s\n' "${DHIS2_VERSIONS[@]}"; }

# A directory as a layer tar (sorted, numeric owners; more tar options after DIR OUT, e.g. fixed
# mtimes for the small layers; a rootfs keeps its mtimes, or every .pyc would be stale), written
# aside then renamed.
dir_to_tar() {
  local dir=$1 out=$2; shift 2
  tar -C "$dir" --numeric-owner --xattrs --sort=name "$@" -cf "$out.partial" .
  mv -f "$out.partial" "$out"
}

build_rootfs_layer() {
  local name=$1 out dir start=$SECONDS
  out=$(layer_path "$name")
  [ -s "$out" ] && return 0
  dir=$WORK/rootfs-$name
  echo "images.sh: mmdebstrap $name rootfs (~1 min; log $WORK/$name.log)" >&2
  local args=()
  mapfile -d '' args < <(rootfs_args "$name")
  mmdebstrap "${args[@]}" "$dir" "${MIRRORS[@]}" >"$WORK/$name.log" 2>&1 ||
    { tail -n 30 "$WORK/$name.log" >&2; die "mmdebstrap $name failed"; }
  # runc mounts /dev, /proc, /sys itself: no device nodes in an image layer. (mmdebstrap has
  # unmounted them by now; --one-file-system everywhere anyway: it bind-mounts the host's
  # /dev/shm and /sys while it runs, and rm -rf must never reach into those.)
  rm -rf --one-file-system "${dir:?}"/dev/* "${dir:?}"/proc/* "${dir:?}"/sys/* "$dir/etc/machine-id"
  dir_to_tar "$dir" "$out"
  rm -rf --one-file-system "$dir"
  echo "images.sh: $name rootfs layer $(du -h "$out" | cut -f1) in $((SECONDS - start)) s" >&2
}

oci() { python3 "$OCI" "$@" >/dev/null; }

build_image() {
  local name=$1 out d
  out=$(archive_path "$name")
  [ -s "$out" ] && return 0
  d=$WORK/$name; mkdir -p "$d"
  case $name in
    pause)
      cat >"$d/pause.c" <<'C'
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void die(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0};
  a.sa_handler = die; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
  a.sa_handler = reap; a.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &a, 0);
  for (;;) pause();
}
C
      mkdir -p "$d/root"
      gcc -Os -static -s -o "$d/root/pause" "$d/pause.c"
      oci --ref "$REPO/pause:1" --out "$out" --layer "$d/root" --entrypoint '["/pause"]' ;;
    busybox)
      mkdir -p "$d/root/bin" "$d/root/etc" "$d/root/tmp"; chmod 1777 "$d/root/tmp"
      cp /bin/busybox "$d/root/bin/busybox"
      local applet
      for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$d/root/bin/$applet"
      done
      printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$d/root/etc/passwd"
      printf 'root:x:0:\nnogroup:x:65534:\n' >"$d/root/etc/group"
      oci --ref "$REPO/busybox:1" --out "$out" --layer "$d/root" --cmd '["/bin/sh"]' ;;
    postgis)
      build_rootfs_layer postgis
      install -D -m 0755 "$PG_ENTRYPOINT" "$d/root/usr/local/bin/docker-entrypoint.sh"
      install -d -m 0755 "$d/root/run"
      install -d -m 3777 -o 999 -g 999 "$d/root/run/postgresql"   # as the official image
      dir_to_tar "$d/root" "$d/entrypoint.tar" --mtime=@0 --clamp-mtime
      oci --ref "$REPO/postgis:$PG_TAG" --out "$out" --layer "$(layer_path postgis)" \
        --layer "$d/entrypoint.tar" --entrypoint '["/usr/local/bin/docker-entrypoint.sh"]' \
        --cmd '["postgres"]' --stop-signal SIGINT --env LANG=en_US.utf8 --env PG_MAJOR=15 \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/15/bin \
        --env PGDATA=/var/lib/postgresql/data ;;
    dhis2-*)
      build_rootfs_layer dhis2
      # One stand-in layer, byte-identical for every tag (containerd stores it once).
      if [ ! -s "$WORK/standin.tar" ]; then
        install -D -m 0644 "$STANDIN" "$WORK/standin/usr/local/lib/dhis2-standin/dhis2_standin.py"
        dir_to_tar "$WORK/standin" "$WORK/standin.tar" --mtime=@0 --clamp-mtime
      fi
      local v=${name#dhis2-}
      oci --ref "$REPO/dhis2:$v" --out "$out" --layer "$(layer_path dhis2)" \
        --layer "$WORK/standin.tar" --user 65534:65534 --workdir /usr/local/tomcat \
        --entrypoint '["/usr/bin/python3", "/usr/local/lib/dhis2-standin/dhis2_standin.py"]' \
        --env DHIS2_HOME=/opt/dhis2 --env DHIS2_VERSION="$v" --env PYTHONDONTWRITEBYTECODE=1 \
        --env PYTHONUNBUFFERED=1 --label org.opencontainers.image.version="$v" ;;
  esac
  echo "images.sh: $(basename "$out") $(du -h "$out" | cut -f1)" >&2
}

cmd_build() {
  [ "$(id -u)" = 0 ] || die "build must run as root (mmdebstrap, writes $CACHE)"
  local tools=() t
  for t in mmdebstrap:mmdebstrap gcc:gcc /usr/include/stdio.h:libc6-dev /bin/busybox:busybox-static; do
    [ -e "${t%%:*}" ] || command -v "${t%%:*}" >/dev/null 2>&1 || tools+=("${t#*:}")
  done
  if [ ${#tools[@]} -gt 0 ]; then
    echo "images.sh: installing ${tools[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${tools[@]}" >/dev/null ||
      die "apt-get install ${tools[*]} failed"
  fi
  mkdir -p "$CACHE/layers"
  exec 9>"$CACHE/.testimages.lock"
  flock 9
  WORK=$(mktemp -d "$CACHE/.testimages-work.XXXXXX")
  trap 'rm -rf --one-file-system "$WORK"' EXIT
  local name
  for name in $(image_names); do build_image "$name"; done
}

cmd_archives() {
  local name path
  for name in $(image_names); do
    path=$(archive_path "$name")
    [ -s "$path" ] || die "$path is missing: run '$0 build' first"
    echo "$path"
  done
}

cmd_env() {
  cat <<EOF
export DHIS2_TEST_POSTGRES_IMAGE=$REPO/postgis:$PG_TAG
export DHIS2_TEST_DHIS2_IMAGE=$REPO/dhis2
export DHIS2_TEST_PAUSE_IMAGE=$REPO/pause:1
export DHIS2_TEST_BUSYBOX_IMAGE=$REPO/busybox:1
EOF
}

# Only files of this script's own naming: other tools share $CACHE (e.g. the operator's image
# build). Work directories of killed builds are left alone: mounts may linger in them.
cmd_prune() {
  [ -d "$CACHE" ] || return 0
  exec 9>"$CACHE/.testimages.lock"
  flock 9
  local keep=() f
  mapfile -t keep < <(for n in $(image_names); do archive_path "$n"; done; layer_path postgis; layer_path dhis2)
  for f in "$CACHE"/{pause,busybox,postgis,dhis2-*}-????????????????.tar "$CACHE"/layers/*-rootfs-*.tar; do
    [ -f "$f" ] || continue
    printf '%s\n' "${keep[@]}" | grep -qxF "$f" || { echo "images.sh: removing $f" >&2; rm -f "$f"; }
  done
}

case ${1:-} in
  build) cmd_build ;;
  archives) cmd_archives ;;
  env) cmd_env ;;
  prune) cmd_prune ;;
  *) usage ;;
esac
