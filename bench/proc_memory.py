#!/usr/bin/env python3
"""Where a process's resident memory is, from /proc/PID/status and /proc/PID/smaps (Linux).

    bench/proc_memory.py PID [LABEL]

prints one line, in KiB rounded to MiB with one decimal:
  rss        VmRSS
  anon/file  RssAnon and RssFile (RssFile is mostly the binary's own code pages)
  binary     resident pages of the executable (text + data)
  libs       resident pages of every other file mapping (libc, ...)
  heap       [heap]: glibc's main malloc arena (brk)
  arenas     anonymous mappings aligned to 64 MiB: glibc's per-thread malloc arenas
  anon-other every other anonymous mapping: thread stacks, allocations >= the mmap threshold,
             allocators that mmap their own chunks (jemalloc, mimalloc)
  threads    Threads
  sockets    open sockets (connections to the API server, the metrics listener)
"""

import os
import sys

ARENA_ALIGN = 64 * 1024 * 1024  # glibc HEAP_MAX_SIZE on 64-bit


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else ""
    return fields


def smaps(pid):
    """Yields (start, pathname, rss_kib) for every mapping."""
    start, path, rss = None, None, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):
                if start is not None:
                    yield start, path, rss
                start = int(head[0].split("-")[0], 16)
                path = head[5] if len(head) > 5 else ""
                rss = 0
            elif head[0] == "Rss:":
                rss = int(head[1])
    if start is not None:
        yield start, path, rss


def breakdown(pid):
    exe = os.readlink(f"/proc/{pid}/exe")
    parts = dict(binary=0, libs=0, heap=0, arenas=0, anon_other=0, stack=0)
    for start, path, rss in smaps(pid):
        if path == exe:
            parts["binary"] += rss
        elif path == "[heap]":
            parts["heap"] += rss
        elif path == "[stack]":
            parts["stack"] += rss
        elif path.startswith("/"):
            parts["libs"] += rss
        elif path.startswith("["):
            pass  # [vdso], [vvar]: kernel pages, not counted in VmRSS
        elif start % ARENA_ALIGN == 0:
            parts["arenas"] += rss
        else:
            parts["anon_other"] += rss
    return parts


def sockets(pid):
    fds = os.listdir(f"/proc/{pid}/fd")
    return sum(1 for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def mib(kib):
    return f"{int(kib) / 1024:.1f}"


def main():
    pid = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else pid
    st = status(pid)
    p = breakdown(pid)
    print(
        f"  memory {label}: rss {mib(st['VmRSS'])} = anon {mib(st['RssAnon'])} + file {mib(st['RssFile'])}"
        f" MiB | binary {mib(p['binary'])}, libs {mib(p['libs'])}, heap {mib(p['heap'])},"
        f" arenas {mib(p['arenas'])}, anon-other {mib(p['anon_other'] + p['stack'])} MiB"
        f" | threads {st['Threads']}, sockets {sockets(pid)}"
    )


if __name__ == "__main__":
    main()
