#!/usr/bin/env bash
# Refreshes the one fixed mirror of this checkout that builds and tests run from, and prints
# its path:
#
#   cd "$(scripts/mirror.sh)" && cargo test --test helm_chart
#
# Cargo keys the crate's build on its files' modification times, and a test binary reads the
# repository's files from the absolute path it was built at (CARGO_MANIFEST_DIR). So a clean
# clone elsewhere rebuilds the whole crate and every test binary (~10 of CI's minutes here),
# and a binary built in one checkout and found fresh from another reads the first one's files.
# One mirror, refreshed by rsync by checksum (modification times not copied: only the files
# whose content changed get a new one), keeps one build of the crate for CI and development.
set -euo pipefail
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MIRROR=${DHIS2_MIRROR:-/var/cache/dhis2-operator/checkout}
command -v rsync >/dev/null || { apt-get update -q && apt-get install -y -q rsync; } >/dev/null
mkdir -p "$MIRROR"
exec 9>"$MIRROR.lock"
flock 9
rsync --recursive --links --perms --checksum --delete --exclude=/target --exclude=/dist \
  "$SOURCE/" "$MIRROR/"
# The tests read ../shared/ (the real DHIS2 database, CloudNativePG's CRDs) beside the checkout.
if [ -d "$SOURCE/../shared" ]; then
  ln -sfn "$(cd "$SOURCE/.." && pwd -P)/shared" "$(dirname "$MIRROR")/shared"
fi
echo "$MIRROR"
