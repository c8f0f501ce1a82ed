# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""CPU time of a Dovecot instance's process tree, for the benchmarks:
tree_cpu() snapshots a master and every process below it, cpu_between()
tells what two snapshots of it used in between, the exited processes'
share included (their parents reaped them)."""

import collections
import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    # the fields after "(comm)": state is [0], ppid [1], utime [11]
    return data[data.rindex(b")") + 2:].split()


def tree_cpu(master):
    """master and every process below it: pid -> (process name (comm),
    its own CPU seconds, those of the children it reaped)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(d))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    procs = {}
    todo = [master]
    while todo:
        pid = todo.pop()
        try:
            with open("/proc/%d/schedstat" % pid) as f:
                own = int(f.read().split()[0]) / 1e9
            with open("/proc/%d/comm" % pid) as f:
                name = f.read().strip()
            fields = _stat_fields(pid)
            reaped = (int(fields[13]) + int(fields[14])) / CLK_TCK
        except (OSError, ValueError, IndexError):
            continue
        procs[pid] = (name, own, reaped)
        todo += children.get(pid, [])
    return procs


def cpu_between(procs0, procs1):
    """CPU seconds between two tree_cpu() snapshots by process name, and
    under "reaped" that of the processes that exited meanwhile (minus
    what those seen in the first snapshot had used before it)."""
    by_name = collections.Counter()
    for pid, (name, own, reaped) in procs1.items():
        _name0, own0, reaped0 = procs0.get(pid, (name, 0.0, 0.0))
        by_name[name] += own - own0
        by_name["reaped"] += reaped - reaped0
    for pid, (name, own0, reaped0) in procs0.items():
        if pid not in procs1:
            by_name["reaped"] -= own0 + reaped0
    return by_name
