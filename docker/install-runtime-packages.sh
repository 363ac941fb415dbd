#!/bin/sh
# What the runtime image (Dockerfile) needs besides our binaries, installed and checked by one
# script that CI also runs on its own Debian machine (tests/helm_chart.rs, "the Dockerfile"):
#   - the PostgreSQL client tools of major PG_MAJOR (default 16: the operator's managed servers
#     and drill servers run postgis/postgis:16-3.4, and pg_dump must be at least the server's
#     major; the engine picks /usr/lib/postgresql/N/bin, src/backup/pg_tools.rs);
#   - zstd, age, tar and jq, for an emergency restore by hand (README, "Emergency restore");
#   - ca-certificates, for S3 over HTTPS.
# When Debian itself has no postgresql-client-PG_MAJOR (bookworm has 15), the PostgreSQL
# project's Debian repository is added with the script and signing key that Debian's own
# postgresql-common package ships, and postgresql-common is removed again afterwards.
#
# Usage: install-runtime-packages.sh              install, then verify (as root, in the image)
#        install-runtime-packages.sh --verify     only check that everything is there and works
#        install-runtime-packages.sh --plan       print where each package would come from, and
#                                                 let apt resolve Debian's part (apt-get -s)
set -eu

PG_MAJOR=${PG_MAJOR:-16}
PACKAGES="ca-certificates tar zstd age jq"
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin

die() { echo "install-runtime-packages.sh: $*" >&2; exit 1; }

debian_has_pg_client() {
  apt-cache show "postgresql-client-$PG_MAJOR" >/dev/null 2>&1
}

verify() {
  for tool in pg_dump pg_restore psql; do
    [ -x "$PG_BIN/$tool" ] || die "$PG_BIN/$tool is missing (postgresql-client-$PG_MAJOR)"
    # e.g. "pg_dump (PostgreSQL) 16.4 (Debian 16.4-1.pgdg120+1)"
    "$PG_BIN/$tool" --version | grep -Eq "\(PostgreSQL\) $PG_MAJOR(\.|beta|rc)" \
      || die "$PG_BIN/$tool is not PostgreSQL $PG_MAJOR: $("$PG_BIN/$tool" --version)"
  done
  zstd --version >/dev/null || die "zstd does not run"
  age --version >/dev/null || die "age does not run"
  tar --version >/dev/null || die "tar does not run"
  jq --version >/dev/null || die "jq does not run"
  [ -s /etc/ssl/certs/ca-certificates.crt ] || die "no CA certificates (/etc/ssl/certs/ca-certificates.crt)"
  echo "runtime packages: PostgreSQL $PG_MAJOR client tools in $PG_BIN, zstd, age, tar, jq, CA certificates"
}

plan() {
  if debian_has_pg_client; then
    echo "postgresql-client-$PG_MAJOR: Debian"
    debian="postgresql-client-$PG_MAJOR $PACKAGES"
  else
    echo "postgresql-client-$PG_MAJOR: PostgreSQL's repository (via postgresql-common)"
    debian="postgresql-common $PACKAGES"
  fi
  echo "from Debian: $debian"
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  apt-get install -s -q --no-install-recommends $debian >/dev/null \
    || die "apt cannot resolve: $debian"
}

install() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  added_pgdg=false
  if ! debian_has_pg_client; then
    apt-get install -y -q --no-install-recommends postgresql-common ca-certificates
    /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y
    added_pgdg=true
  fi
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends "postgresql-client-$PG_MAJOR" $PACKAGES
  if $added_pgdg; then
    # Only the client stays: postgresql-common is for servers (and pulls in perl's modules).
    # Its source entry names the keyring that goes with it: removed too, so a derived image's
    # `apt-get update` does not fail on it.
    apt-get purge -y -q --auto-remove postgresql-common
    rm -f /etc/apt/sources.list.d/pgdg.sources /etc/apt/sources.list.d/pgdg.list
  fi
  apt-get clean
  rm -rf /var/lib/apt/lists/*
  verify
}

case "${1:-}" in
  "") install ;;
  --verify) verify ;;
  --plan) plan ;;
  *) die "unknown argument '$1' (usage: install-runtime-packages.sh [--verify|--plan])" ;;
esac
