"""A server's process tree as Linux /proc shows it: its workers, CPU time, memory and open files. One reader
for the tests and bench/ alike."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MB = 1024 * 1024


def children(pid: int) -> list[int]:
    """The child processes of every thread of `pid` (a thread that ends meanwhile is skipped)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def workers(server_pid: int) -> list[int]:
    """The worker processes of a multi-worker `python -m service` (multiprocessing spawns them; its
    resource tracker is not one)."""
    pids = []
    for child in children(server_pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.append(child)
        except FileNotFoundError:  # ended meanwhile
            pass
    return sorted(pids)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process (all its threads) and its live descendants. Per request it
    is robust to other load on the machine, unlike throughput."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        kids = children(pid)
    except FileNotFoundError:  # a child that ended meanwhile
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in kids)


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident memory) of a process, in bytes; neither for one that has exited but
    not been reaped, FileNotFoundError for one that is gone."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


TCP_LISTEN = "0A"  # the st column of /proc/net/tcp{,6}


def listens(pid: int, port: int) -> bool:
    """Whether `pid` holds a socket listening on local port `port` (/proc/net/tcp lists a socket once it
    listens or connects: one only bound is not there). False for a process that is gone."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        tables = [Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6")]
    except FileNotFoundError:
        return False
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == TCP_LISTEN and fields[9] in inodes:
                return True
    return False
