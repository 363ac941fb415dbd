#!/usr/bin/env bash
# Operator overhead on an on-demand backup (issue 9): wall time of the real
# `dhis2ctl backup create INSTANCE --wait` until Completed, minus the engine's own time
# (status.durationSeconds), BENCH_RUNS times (default 5); prints every run and the medians.
# Runs the ignored test tests/bench_backup_overhead.rs against an already running test
# environment (its own namespace, database and bucket).
#
#   DHIS2_TEST_ENV_FILE=/tmp/dhis2-shared-env/env bench/backup_overhead.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${DHIS2_TEST_ENV_FILE:?set DHIS2_TEST_ENV_FILE to the env file of a running test environment}"
# shellcheck disable=SC1090
source "$DHIS2_TEST_ENV_FILE"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dhis2-operator/target}
exec cargo test --release --test bench_backup_overhead -- --ignored --nocapture
