#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, starts a throw-away PostgreSQL 15 +
# PostGIS, a SeaweedFS S3 server, the test control plane and one real node where pods run (with
# this checkout's image loaded on it), runs format, lint and every test, stops them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Run from the one fixed mirror of the checkout (scripts/mirror.sh says why): CI on this machine
# then rebuilds only what changed. DHIS2_TEST_IN_PLACE=1 runs in the checkout itself.
MIRROR=${DHIS2_MIRROR:-/var/cache/dhis2-operator/checkout}
if [ -z "${DHIS2_TEST_IN_PLACE:-}" ] && [ "$(pwd -P)" != "$MIRROR" ]; then
  mirror=$(scripts/mirror.sh)
  echo "== running from $mirror (a mirror of $(pwd -P))"
  exec "$mirror/scripts/test.sh" "$@"
fi

# Builds live outside the clone so CI on the same machine rebuilds only what changed.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}
mkdir -p "$CARGO_TARGET_DIR"
# One CI run failed with "No space left on device" in the linker: drop week-old build leftovers
# and say how much room there is before building.
scripts/prune_build_cache.sh "$CARGO_TARGET_DIR"

ENV_DIR=$(mktemp -d /tmp/dhis2-test.XXXXXX)
chmod 755 "$ENV_DIR"
cleanup() {
  scripts/testenv/down.sh "$ENV_DIR" >/dev/null 2>&1 || true
  rm -rf "$ENV_DIR"
}
trap cleanup EXIT

scripts/testenv/up.sh "$ENV_DIR" --with-node
# shellcheck disable=SC1091
source "$ENV_DIR/env"

echo "== module graph (no import cycles; cli/ and rules/ never import operator/)"
python3 scripts/module_cycles.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets
