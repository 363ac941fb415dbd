#!/usr/bin/env bash
# Stop everything up.sh started in DIR. Each service is stopped even if another fails, and a
# service that is not running is fine. Leaves DIR in place (the caller deletes it).
#
#   down.sh DIR
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
[ -d "$DIR" ] || exit 0

# The node first: its pods use the services below.
if [ -d "$DIR/node" ]; then "$HERE/node.sh" stop "$DIR/node" || echo "down.sh: the node did not stop cleanly" >&2; fi

# Stop in parallel: SeaweedFS (~3 s) and the kube processes (~2.5 s) are slow to exit.
pids=()
if [ -d "$DIR/kube" ]; then "$HERE/kube.sh" stop "$DIR/kube" & pids+=($!); fi
"$HERE/seaweedfs.sh" stop "$DIR/s3" & pids+=($!)
"$HERE/postgres.sh" stop "$DIR/pg" & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc -eq 0 ] || echo "down.sh: some services failed to stop (see messages above)" >&2
exit $rc
