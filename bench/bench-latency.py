#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Replication latency of one change against a bare dsync of the same
change through doveadm-server, measured in one run on one testenv/pair.

Measured user (replicated by dovewarden): user30, with a long-lived IMAP
session on each server. Baseline user: norepl (userdb
noreplicate=yes, so dovewarden leaves it alone): the same change, then at
once the command the service would send, `sync -N -l 30 -s <state>
tcp:<peer>`, over a new connection to the origin's doveadm-server socket
(no doveadm process start; the dsync state kept between syncs as the
service keeps it).

Each round runs every case for both users, interleaved, one change each:
origin A or B, an IMAP APPEND in the long-lived session or an LMTP
delivery, and the peer's client either idle (a session that polls STATUS
INBOX) or in a read-write SELECTed INBOX (polling NOOP for EXISTS); a
session's changes are at least 1.1 s apart. The time runs from the
APPEND's OK (LMTP: the DATA reply) until the peer's client sees the
message; the peer is polled every 10 ms.

Then the same again while 200 other users are being replicated: every
5 s a change on A for each of bgr001..bgr200 (replicated by the service)
and of bgn001..bgn200 (noreplicate), whose changes ten threads replicate
with the same bare syncs through A's doveadm-server, ten at a time, as
the service runs at most dovewarden_max_syncs = 10. Both kinds of load
run together, so both users see the same load. The change (--load) is
by default a doveadm flags command toggling \\Flagged on all their mail
(a low priority change, background work for the service); with lmtp it
is an LMTP delivery (new mail: high priority, the same as the measured
change, so that one waits its turn behind them).

Prints medians and 90th percentiles and the ratio dovewarden / bare
dsync of each case. Under load a change that is not on the peer within
STALL_SECS counts as a stall of that length, printed with its case; the
next case starts once it arrived. Run inside the chroot, as root, with the dovewarden
build installed:
    DW_DIR=/srv/dt-l DW_PORT_OFFSET=850 \\
        python3 /src/dovewarden/bench/bench-latency.py [--rounds N]
It starts the pair and stops it again when it ends."""

import argparse
import collections
import concurrent.futures
import os
import queue
import smtplib
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dwtest.clients import check_ok, make_message, pairs, \
    parse_untagged  # noqa: E402
from dwtest.common import Skip, peer, wait_until  # noqa: E402
from dwtest.pair import Pair  # noqa: E402

DW_USER, BARE_USER = "user30", "norepl"
BG_USERS = 200
BG_PERIOD = 5.0
BG_SYNCS = 10
POLL = 0.01
# Under load a change that is not on the peer after this long counts as
# a stall of this length (printed per case) instead of ending the run:
# where the service syncs through Dovecot's own doveadm-server socket
# (not dovewarden-doveadm, see the README), a saturated pair's
# doveadm-server can leave the peer's TCP connection in its accept queue
# for minutes while it serves its own unix socket's (new processes take
# the unix listener first), and that hits dovewarden's syncs and the
# bare ones alike.
STALL_SECS = 30
SPACING = 1.1
LOCK_SECS = 30


def tabescape(s):
    return (s.replace("\x01", "\x011").replace("\t", "\x01t")
            .replace("\r", "\x01r").replace("\n", "\x01n"))


class BareSync:
    """dsync of a user as dovewarden runs it: one command over a new
    connection to side's doveadm-server socket (the one the service
    uses, dovewarden_doveadm_socket_path), the state kept per (side,
    user)."""

    def __init__(self, pair):
        self.pair = pair
        self.states = {}
        self.paths = {}
        self.lock = threading.Lock()

    def socket_path(self, side):
        """The socket the service runs its syncs through
        (dovewarden_doveadm_socket_path)"""
        with self.lock:
            path = self.paths.get(side)
        if path is None:
            path = self.pair.doveadm_socket_path(side)
            with self.lock:
                self.paths[side] = path
        return path

    def sync(self, side, user):
        with self.lock:
            state = self.states.get((side, user), "")
        dest = "tcp:127.0.0.1:%d" % self.pair.port(peer(side), "doveadm")
        path = self.socket_path(side)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        try:
            s.connect(path)
            s.sendall(b"VERSION\tdoveadm-server\t1\t0\n")
            f = s.makefile("rb")
            line = f.readline().rstrip(b"\n")
            if line.startswith(b"VERSION\t"):
                line = f.readline().rstrip(b"\n")
            if line != b"+":
                raise RuntimeError("doveadm-server handshake: %r" % line)
            s.sendall(("\t%s\tsync\t-N\t-l\t%d\t-T\t600\t-s\t%s\t%s\n" % (
                tabescape(user), LOCK_SECS, tabescape(state), dest))
                .encode())
            out = f.readline().rstrip(b"\n").decode()
            status = f.readline().rstrip(b"\n").decode()
        finally:
            s.close()
        if status != "+":
            return status or "disconnected"
        with self.lock:
            self.states[(side, user)] = out.split("\t")[0]
        return None


class PeerView:
    """The peer's client of a user: idle (STATUS INBOX from a session with
    nothing selected) or read-write (INBOX SELECTed, NOOP)."""

    def __init__(self, pair, side, user, rw):
        self.conn = pair.imap(side, user)
        self.rw = rw
        self.exists = 0
        if rw:
            typ, data = self.conn.select("INBOX")
            check_ok((typ, data), "SELECT INBOX on %s" % side)
            self.exists = int(data[0])

    def count(self):
        if self.rw:
            check_ok(self.conn.noop(), "NOOP")
            _, data = self.conn.response("EXISTS")
            if data and data[-1] is not None:
                self.exists = int(data[-1])
            return self.exists
        data = check_ok(self.conn.status("INBOX", "(MESSAGES)"), "STATUS")
        for resp in parse_untagged(data):
            for item in resp:
                if isinstance(item, list):
                    return int(pairs(item)["MESSAGES"])
        raise AssertionError("no MESSAGES in STATUS: %r" % data)

    def wait_more(self, base, what, timeout=120, stall=False):
        """The time the peer's client saw more than base messages; with
        stall=True None after timeout seconds instead of failing."""
        end = time.monotonic() + timeout
        while self.count() <= base:
            if time.monotonic() > end:
                if stall:
                    return None
                raise AssertionError("%s did not reach the peer in %d s"
                                     % (what, timeout))
            time.sleep(POLL)
        return time.monotonic()

    def close(self):
        try:
            self.conn.logout()
        except Exception:
            pass


def lmtp(pair, side, users, msg):
    """Deliver msg to users over one LMTP connection; returns the time
    of the DATA reply."""
    c = smtplib.LMTP("127.0.0.1", pair.port(side, "lmtp"),
                     local_hostname="localhost", timeout=60)
    try:
        refused = c.sendmail("sender@example.test", users, msg)
        t = time.monotonic()
        if refused:
            raise AssertionError("LMTP refused %r" % refused)
    finally:
        try:
            c.quit()
        except Exception:
            pass
    return t


class Background:
    """Every BG_PERIOD seconds a change for each background user: with
    kind "flags" one doveadm flags command per user set toggles \\Flagged
    on their INBOX's mails (a low priority change), with kind "lmtp" an
    LMTP delivery to each (new mail, high priority). The noreplicate
    users' changes are then synced by BG_SYNCS threads."""

    def __init__(self, pair, bare, kind):
        self.pair = pair
        self.bare = bare
        self.kind = kind
        self.stop = threading.Event()
        self.todo = queue.Queue()
        self.rounds = 0
        self.synced = 0
        self.failed = 0
        self.threads = [threading.Thread(target=self._change, daemon=True)]
        self.threads += [threading.Thread(target=self._sync, daemon=True)
                         for _ in range(BG_SYNCS)]

    def start(self):
        for t in self.threads:
            t.start()

    def _change(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            for prefix in ("bgr", "bgn"):
                users = bg_users(prefix)
                if self.kind == "lmtp":
                    deliver_all(self.pair, users)
                else:
                    self.pair.doveadm(
                        "A", "flags", "add" if self.rounds % 2 == 0
                        else "remove", "-u", prefix + "*", "\\Flagged",
                        "mailbox", "INBOX", "ALL", timeout=120)
                if prefix == "bgn":
                    for u in users:
                        self.todo.put(u)
            self.rounds += 1
            self.stop.wait(max(0.0, BG_PERIOD - (time.monotonic() - t0)))

    def _sync(self):
        while not self.stop.is_set():
            try:
                user = self.todo.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.bare.sync("A", user) is None:
                self.synced += 1
            else:
                self.failed += 1

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(120)


def bg_users(prefix):
    return ["%s%03d" % (prefix, i) for i in range(1, BG_USERS + 1)]


def deliver_all(pair, users):
    for i in range(0, len(users), 50):
        lmtp(pair, "A", users[i:i + 50], make_message("background"))


def stats(values):
    s = sorted(values)
    return (statistics.median(s) * 1000,
            s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))] * 1000)


def report(load, times, cases, stalls):
    """Print the figures of one load."""
    ratios = []
    for origin, how, rw in cases:
        dm, dp = stats(times[(load, "dw", origin, how, rw)])
        bm, bp = stats(times[(load, "bare", origin, how, rw)])
        ratios.append(dm / bm)
        ds = stalls[(load, "dw", origin, how, rw)]
        bs = stalls[(load, "bare", origin, how, rw)]
        print("%-10s %-11s %-5s %8.1f ms %8.1f ms %8.1f ms %8.1f ms %6.2fx%s"
              % (load, "%s->%s %s" % (origin, peer(origin), how.upper()),
                 "rw" if rw else "idle", dm, dp, bm, bp, dm / bm,
                 "" if ds + bs == 0 else
                 "  stalls (%d s): dw %d, bare %d" % (STALL_SECS, ds, bs)))
    dw = [x for k, v in times.items() if k[0] == load and k[1] == "dw"
          for x in v]
    b = [x for k, v in times.items() if k[0] == load and k[1] == "bare"
         for x in v]
    print("ratio (medians), load %s: all cases %.2fx, worst case %.2fx"
          % (load, statistics.median(dw) / statistics.median(b),
             max(ratios)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-load", action="store_true",
                    help="skip the cases with 200 other users")
    ap.add_argument("--load-only", action="store_true",
                    help="only the cases with 200 other users")
    ap.add_argument("--load", choices=("flags", "lmtp"), default="flags",
                    help="the background users' changes (default flags)")
    args = ap.parse_args()

    pair = Pair()
    try:
        pair.check_available(True)
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    bare = BareSync(pair)
    times = collections.defaultdict(list)
    stalls = collections.defaultdict(int)
    sessions = {}
    views = {}
    bg = None
    try:
        pair.start()
        pair.add_userdb_lines(["bgr%03d:{PLAIN}pass::::::" % i
                         for i in range(1, BG_USERS + 1)] +
                  ["bgn%03d:{PLAIN}pass::::::userdb_noreplicate=yes" % i
                   for i in range(1, BG_USERS + 1)])
        # the first syncs create the users' INBOXes on B
        pair.append("A", DW_USER, make_message("prime"))
        pair.wait_converged([DW_USER], 60, "priming")
        pair.append("A", BARE_USER, make_message("prime"))
        err = bare.sync("A", BARE_USER) or bare.sync("B", BARE_USER)
        if err:
            raise AssertionError("bare sync failed: %s" % err)
        for side in ("A", "B"):
            for user in (DW_USER, BARE_USER):
                sessions[(side, user)] = pair.imap(side, user)
                for rw in (False, True):
                    views[(side, user, rw)] = PeerView(pair, side, user, rw)
        last = collections.defaultdict(float)

        def change(load, mode, origin, how, rw):
            user = DW_USER if mode == "dw" else BARE_USER
            view = views[(peer(origin), user, rw)]
            base = view.count()
            key = (user, origin, how)
            time.sleep(max(0.0, last[key] + SPACING - time.monotonic()))
            msg = make_message("latency %s %s %s" % (mode, origin, how))
            if how == "imap":
                pair.append(origin, user, msg,
                            conn=sessions[(origin, user)])
                t0 = time.monotonic()
            else:
                t0 = lmtp(pair, origin, [user], msg)
            last[key] = t0
            result = [None]
            if mode == "bare":
                th = threading.Thread(target=lambda: result.__setitem__(
                    0, bare.sync(origin, user)))
                th.start()
            under_load = load != "none"
            t1 = view.wait_more(base, "%s %s->%s %s (%s)" % (
                mode, origin, peer(origin), how, "rw" if rw else "idle"),
                timeout=STALL_SECS if under_load else 120, stall=under_load)
            if t1 is None:
                # counted as STALL_SECS; the next case starts once it
                # arrived, so that it does not take this one for its own
                stalls[(load, mode, origin, how, rw)] += 1
                view.wait_more(base, "stalled %s %s->%s %s" % (
                    mode, origin, peer(origin), how), timeout=600)
                t1 = t0 + STALL_SECS
            if mode == "bare":
                th.join()
                if result[0]:
                    raise AssertionError("bare sync failed: %s" % result[0])
            return t1 - t0

        print("dovewarden latency benchmark: %d rounds, one new message "
              "per case and round (%d cores)" % (args.rounds,
                                                 os.cpu_count() or 0))
        print("visible on the peer after the OK: dovewarden (user30) "
              "against the same change + a bare dsync through "
              "doveadm-server (norepl)")
        print("%-10s %-11s %-5s %11s %11s %11s %11s %7s" % (
            "load", "change", "peer", "dw median", "dw p90",
            "bare median", "bare p90", "ratio"), flush=True)
        cases = [(origin, how, rw) for rw in (False, True)
                 for how in ("imap", "lmtp") for origin in ("A", "B")]
        loads = ["none"] if args.no_load else \
            ["200 users"] if args.load_only else ["none", "200 users"]
        for load in loads:
            if load != "none":
                # the background users' first (full) syncs first
                deliver_all(pair, bg_users("bgr") + bg_users("bgn"))
                time.sleep(1)
                wait_until(lambda: pair.queues_empty("A"), 600,
                           "the background users' first syncs")
                with concurrent.futures.ThreadPoolExecutor(BG_SYNCS) as ex:
                    list(ex.map(lambda u: bare.sync("A", u),
                                bg_users("bgn")))
                bg = Background(pair, bare, args.load)
                bg.start()
                time.sleep(2 * BG_PERIOD)
            for r in range(args.rounds):
                for c in cases:
                    for mode in (("dw", "bare") if r % 2 == 0
                                 else ("bare", "dw")):
                        times[(load, mode) + c].append(
                            change(load, mode, *c))
            report(load, times, cases, stalls)
            if bg is not None:
                bg.close()
                bg_stats = (bg.rounds, bg.synced, bg.failed)
                bg = None
    finally:
        if bg is not None:
            bg.close()
        for c in list(sessions.values()):
            try:
                c.logout()
            except Exception:
                pass
        for v in views.values():
            v.close()
        pair.stop()

    if not args.no_load:
        print("background (%s): %d rounds of changes to %d + %d users, "
              "%d bare syncs (%d failed)" % (args.load, bg_stats[0],
                                             BG_USERS, BG_USERS,
                                             bg_stats[1], bg_stats[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
