#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Dovecot's CPU per IMAP APPEND with the dovewarden plugin and service,
against the same Dovecot without them, measured in one run.

Starts single Dovecot instances (testenv/pair's A; its B is stopped at
once: the replica refuses connections, so that the service's syncs fail
at once instead of adding dsync's work), all with their whole directory
(mail, indexes, logs) on a tmpfs that this program mounts:

    none     no dovewarden plugin, no notify plugin, no service
    dw       the notify and dovewarden plugins and the service
    notify   the notify plugin alone (no consumer), no service
    old      with --old-plugin-dir: dw with another build of the plugin

Each instance gets --conns IMAP sessions (one user each) that stay logged
in for the whole run. In every round each configuration in turn gets the
load: the sessions APPEND a small message at a fixed total rate of --rate
per second (LITERAL+, one command in flight per session) for --secs
seconds after a one second warm-up; once before the first round for
--warmup seconds, while the users' first syncs fail. The CPU of a round
is the on-CPU time (/proc/<pid>/schedstat) of every process under the
instance's master, the master included, plus the CPU of those that
exited during the round (the cutime and cstime of their parent), divided
by the APPENDs completed in the round; the rate reached is printed too
(a busy machine may not reach --rate). The order of the configurations rotates from
round to round. At the end it prints per configuration the median CPU
per APPEND, and the median, minimum and maximum of the per-round ratios
to "none" of the same round, also without the CPU of doveadm-server
(the service's failing syncs, each in a process of its own that the
master reaps).

Run inside the chroot as root, with the plugin built with optimization
(the figures of a -O0 build say little):

    DW_DIR=/srv/dt-p DW_PORT_OFFSET=900 \\
        python3 /src/dovewarden/bench/bench-plugin-cpu.py [--rounds 8]
        [--secs 10] [--rate 1000] [--conns 20] [--warmup 20]
        [--by-process] [--no-notify-only] [--old-plugin-dir DIR]

About 40 s per round and one minute more with the defaults; it stops everything it started
and unmounts the tmpfs when it ends."""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dwtest.clients import make_message  # noqa: E402
from dwtest.common import NUMBERED_USERS, Skip, password  # noqa: E402
from dwtest.cpu import cpu_between, tree_cpu  # noqa: E402
from dwtest.pair import Pair  # noqa: E402

# No debug logging (testenv/pair turns it on for the dovewarden category)
COMMON_CONF = "log_debug =\n"
# Without dovewarden the service would still be started with Dovecot
NO_SERVICE_CONF = "service dovewarden {\n  process_min_avail = 0\n}\n"
CONFIGS = {
    "none": (True, COMMON_CONF + NO_SERVICE_CONF +
             "mail_plugins {\n  notify = no\n}\n"),
    "dw": (False, COMMON_CONF),
    "notify": (True, COMMON_CONF + NO_SERVICE_CONF),
}


class Session:
    """An IMAP session logged in as user, APPENDing with LITERAL+."""

    def __init__(self, port, user, body):
        self.sock = socket.create_connection(("127.0.0.1", port), 10)
        self.file = self.sock.makefile("rb")
        self.body = body
        self.tag = 0
        self.file.readline()
        self._cmd(b"LOGIN %s %s" % (user.encode(), password(user).encode()))

    def _cmd(self, line, literal=None):
        self.tag += 1
        tag = b"b%d" % self.tag
        out = tag + b" " + line + b"\r\n"
        if literal is not None:
            out += literal + b"\r\n"
        self.sock.sendall(out)
        while True:
            resp = self.file.readline()
            if not resp:
                raise OSError("the server closed the connection")
            if resp.startswith(tag + b" "):
                if not resp.startswith(tag + b" OK"):
                    raise RuntimeError("IMAP: %r" % resp)
                return

    def append(self):
        self._cmd(b"APPEND INBOX {%d+}" % len(self.body), self.body)

    def close(self):
        try:
            self._cmd(b"LOGOUT")
        except (OSError, RuntimeError):
            pass
        self.sock.close()


class Load:
    """APPENDs at a fixed total rate from one thread per session, each on
    its own schedule, until stop()."""

    def __init__(self, sessions, rate):
        self.sessions = sessions
        self.interval = len(sessions) / rate
        self.count = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.errors = []
        self.threads = []

    def _run(self, i, session):
        start = time.monotonic() + i * self.interval / len(self.sessions)
        n = 0
        try:
            while not self.stopping:
                due = start + n * self.interval
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                session.append()
                n += 1
                with self.lock:
                    self.count += 1
        except (OSError, RuntimeError) as e:
            self.errors.append(str(e))

    def start(self):
        for i, s in enumerate(self.sessions):
            t = threading.Thread(target=self._run, args=(i, s), daemon=True)
            t.start()
            self.threads.append(t)

    def completed(self):
        with self.lock:
            return self.count

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(30)
        if self.errors:
            raise RuntimeError("APPEND failed: %s" % self.errors[0])


def mount_tmpfs(path):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=755",
                    "tmpfs", path], check=True)


def umount(path):
    subprocess.run(["umount", path], check=False)


class Instance:
    def __init__(self, name, root, offset, conns, old_plugin_dir=None):
        self.name = name
        if name == "old":
            no_plugin, conf = CONFIGS["dw"]
            conf += "mail_plugin_dir = %s\n" % old_plugin_dir
        else:
            no_plugin, conf = CONFIGS[name]
        self.dir = os.path.join(root, name)
        self.pair = Pair(no_plugin=no_plugin, extra_conf=conf)
        self.pair.dw_dir = self.dir
        self.pair.port_offset = str(offset)
        self.conns = conns
        self.sessions = []
        self.mounted = False

    def start(self, body):
        mount_tmpfs(self.dir)
        self.mounted = True
        self.pair.start()
        # the replica refuses connections from now on
        self.pair.stop_one("B")
        port = self.pair.port("A", "imap")
        for user in NUMBERED_USERS[:self.conns]:
            self.sessions.append(Session(port, user, body))

    def measure(self, rate, secs):
        """Returns (CPU seconds, APPENDs) of one round."""
        master = self.pair.master_pid("A")
        load = Load(self.sessions, rate)
        load.start()
        try:
            time.sleep(1.0)
            procs0, n0 = tree_cpu(master), load.completed()
            time.sleep(secs)
            procs1, n1 = tree_cpu(master), load.completed()
        finally:
            load.stop()
        return cpu_between(procs0, procs1), n1 - n0

    def stop(self):
        for s in self.sessions:
            s.close()
        self.pair.stop()
        if self.mounted:
            umount(self.dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--secs", type=float, default=10.0,
                    help="measured seconds per configuration and round")
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="APPENDs per second over all sessions")
    ap.add_argument("--conns", type=int, default=20)
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="unmeasured seconds of load per configuration "
                    "before the rounds")
    ap.add_argument("--by-process", action="store_true",
                    help="also print the us/APPEND of each process name")
    ap.add_argument("--no-notify-only", action="store_true",
                    help="leave the notify-plugin-only configuration out")
    ap.add_argument("--old-plugin-dir",
                    help="also run \"old\": dw with the plugin from this "
                    "mail_plugin_dir (another build of "
                    "lib20_dovewarden_plugin.so, next to a link to "
                    "lib15_notify_plugin.so)")
    args = ap.parse_args()
    if args.conns > len(NUMBERED_USERS):
        ap.error("at most %d sessions" % len(NUMBERED_USERS))

    root = os.environ.get("DW_DIR", "/srv/dt-p")
    offset = int(os.environ.get("DW_PORT_OFFSET", "900"))
    names = ["none", "dw"] + ([] if args.no_notify_only else ["notify"])
    if args.old_plugin_dir:
        names.append("old")
    insts = [Instance(n, root, offset + 10 * i, args.conns,
                      args.old_plugin_dir)
             for i, n in enumerate(names)]
    try:
        insts[0].pair.check_available(True)
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    body = make_message("bench-plugin-cpu", size=1000)
    per_append = {n: [] for n in names}
    per_append_nodsync = {n: [] for n in names}
    try:
        for inst in insts:
            inst.start(body)
        # the first syncs of the users fail (slowly) here, before the
        # rounds: then the service only tries one user every few seconds
        for inst in insts:
            inst.measure(args.rate, args.warmup)
        print("%-6s %-7s %9s %9s %12s %7s" % (
            "round", "config", "APPENDs", "CPU s", "us/APPEND", "/s"))
        for r in range(args.rounds):
            order = insts[r % len(insts):] + insts[:r % len(insts)]
            for inst in order:
                by_name, n = inst.measure(args.rate, args.secs)
                cpu = sum(by_name.values())
                # the failing syncs: doveadm-server runs each in a new
                # process (its CPU shows as reaped once it exits)
                dsync = by_name["doveadm-server"] + by_name["reaped"]
                per_append_nodsync[inst.name].append((cpu - dsync) / n)
                if args.by_process:
                    detail = "  " + " ".join(
                        "%s=%.0f" % (k, v / n * 1e6)
                        for k, v in sorted(by_name.items())
                        if abs(v) / n * 1e6 >= 0.5)
                else:
                    detail = ""
                per_append[inst.name].append(cpu / n)
                print("%-6d %-7s %9d %9.3f %12.1f %7.0f%s" % (
                    r + 1, inst.name, n, cpu, cpu / n * 1e6, n / args.secs,
                    detail))
                sys.stdout.flush()
    finally:
        for inst in insts:
            inst.stop()

    print()
    print("%-7s %14s %10s %10s %10s   %s" % (
        "config", "us/APPEND med", "ratio med", "ratio min", "ratio max",
        "without doveadm-server: med (min-max)"))
    for name in names:
        ratios = [x / b for x, b in zip(per_append[name], per_append["none"])]
        ratios_nd = [x / b for x, b in zip(per_append_nodsync[name],
                                           per_append_nodsync["none"])]
        print("%-7s %14.1f %9.3fx %9.3fx %9.3fx   %.3fx (%.3f-%.3f)" % (
            name, statistics.median(per_append[name]) * 1e6,
            statistics.median(ratios), min(ratios), max(ratios),
            statistics.median(ratios_nd), min(ratios_nd), max(ratios_nd)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
