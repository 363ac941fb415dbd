#!/usr/bin/env bash
# Drop build leftovers older than a week from a CARGO_TARGET_DIR shared by CI runs, and say how
# much disk is free (a full disk shows up as a linker crash, not as a clear error).
#
#   prune_build_cache.sh TARGET_DIR
#
# Kept: everything a build of the current tree uses (cargo touches what it reuses only when it
# rebuilds it, so "older than a week" is what no build in a week has needed: old versions of
# dependencies, incremental sessions, test executables of tests that no longer exist).
set -euo pipefail
TARGET=${1:?usage: $0 TARGET_DIR}
for profile in debug release; do
  for sub in deps incremental build .fingerprint; do
    d="$TARGET/$profile/$sub"
    [ -d "$d" ] || continue
    find "$d" -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf {} + 2>/dev/null || true
  done
done
free_kib=$(df -Pk "$TARGET" | awk 'NR == 2 { print $4 }')
echo "build cache: $(du -sh "$TARGET" 2>/dev/null | cut -f1) in $TARGET; $((free_kib / 1024 / 1024)) GiB free"
if [ "$free_kib" -lt $((4 * 1024 * 1024)) ]; then
  echo "prune_build_cache.sh: less than 4 GiB free on the disk holding $TARGET: a build may fail" \
    "with linker errors; free space or set CARGO_TARGET_DIR elsewhere" >&2
fi
