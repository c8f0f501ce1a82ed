#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""APPEND latency with and without dovewarden_sync_wait, and the bare
doveadm sync time for the same change, measured in one run on one
testenv/pair.

Three users, interleaved round by round so that all see the same load:
  async  user21: no wait (the default, 0); the next round starts only
         once its message has reached B, so background syncs don't
         overlap the measurements
  wait   user20: userdb field dovewarden_sync_wait=5s (the per-user
         setting); the message is checked on B right after the OK
  dsync  norepl: replication off for it, so nothing else syncs it: one
         IMAP APPEND on A, then the time of
         `doveadm sync -l 30 -u norepl tcp:127.0.0.1:<B doveadm port>`
         run with A's doveadm (process start included)

Run inside the chroot, as root, with the dovewarden build installed:
    DW_DIR=/srv/dt-y DW_PORT_OFFSET=800 \\
        python3 /src/dovewarden/bench/bench-sync-wait.py [--rounds N]
It starts the pair and stops it again when it ends.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dwtest.clients import make_message  # noqa: E402
from dwtest.common import Skip, wait_until  # noqa: E402
from dwtest.pair import Pair  # noqa: E402

WAIT_USER, ASYNC_USER, DSYNC_USER = "user20", "user21", "norepl"


def set_userdb_field(pair, user, field):
    path = os.path.join(pair.dw_dir, "A", "users")
    with open(path) as f:
        lines = f.read().splitlines()
    lines = [line + " " + field if line.startswith(user + ":") else line
             for line in lines]
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(path + ".tmp", path)


def message_id(msg):
    start = msg.index(b"Message-ID: <") + len(b"Message-ID: <")
    return msg[start:msg.index(b">", start)].decode()


def on_b(conn, msg):
    conn.noop()
    typ, data = conn.uid("SEARCH", "HEADER", "Message-ID",
                         '"<%s>"' % message_id(msg))
    return typ == "OK" and bool(data and data[0] and data[0].split())


def stats(values):
    s = sorted(values)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return statistics.median(s) * 1000, p90 * 1000, statistics.mean(s) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()

    pair = Pair()
    try:
        pair.check_available(True)
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    times = {"async": [], "wait": [], "dsync": []}
    wait_missing = 0
    try:
        pair.start()
        set_userdb_field(pair, WAIT_USER, "userdb_dovewarden_sync_wait=5s")
        dest = "tcp:127.0.0.1:%d" % pair.port("B", "doveadm")

        # first syncs create the users on B; open the views after them
        for user in (WAIT_USER, ASYNC_USER):
            pair.append("A", user, make_message("bench prime"))
        pair.append("A", DSYNC_USER, make_message("bench prime"))
        pair.doveadm("A", "sync", "-l", "30", "-u", DSYNC_USER, dest)
        conns = {u: pair.imap("A", u) for u in
                 (WAIT_USER, ASYNC_USER, DSYNC_USER)}
        b_async = pair.imap("B", ASYNC_USER)
        b_wait = pair.imap("B", WAIT_USER)
        for c in (b_async, b_wait):
            c.select("INBOX")

        for i in range(args.rounds):
            msg = make_message("bench async %d" % i)
            times["async"].append(pair.append("A", ASYNC_USER, msg,
                                              conn=conns[ASYNC_USER]))
            wait_until(lambda: on_b(b_async, msg), 30,
                       "the async message on B", interval=0.02)

            msg = make_message("bench wait %d" % i)
            times["wait"].append(pair.append("A", WAIT_USER, msg,
                                             conn=conns[WAIT_USER]))
            if not on_b(b_wait, msg):
                wait_missing += 1

            msg = make_message("bench dsync %d" % i)
            pair.append("A", DSYNC_USER, msg, conn=conns[DSYNC_USER])
            t0 = time.monotonic()
            pair.doveadm("A", "sync", "-l", "30", "-u", DSYNC_USER, dest)
            times["dsync"].append(time.monotonic() - t0)
        for c in list(conns.values()) + [b_async, b_wait]:
            c.logout()
    finally:
        pair.stop()

    n = args.rounds
    print("dovewarden sync wait benchmark: %d rounds, one new message each "
          "(%d cores)" % (n, os.cpu_count() or 0))
    print("%-44s %9s %9s %9s" % ("", "median", "p90", "mean"))
    labels = {
        "async": "APPEND, no wait (sync_wait=0)",
        "wait": "APPEND, sync_wait=5s (replicated at OK)",
        "dsync": "bare doveadm sync -u user tcp:peer",
    }
    med = {}
    for k in ("async", "wait", "dsync"):
        m, p, a = stats(times[k])
        med[k] = m
        print("%-44s %7.1f ms %6.1f ms %6.1f ms" % (labels[k], m, p, a))
    print("wait messages on B at OK: %d of %d" % (n - wait_missing, n))
    print("ratio (medians): wait / no wait = %.1fx, wait / bare doveadm "
          "sync = %.2fx, wait - no wait = %.1f ms"
          % (med["wait"] / med["async"], med["wait"] / med["dsync"],
             med["wait"] - med["async"]))
    return 0 if wait_missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
