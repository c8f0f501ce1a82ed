#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Replication latency of new mail against the number of logged-in IMAP
sessions.

Starts a testenv pair with Dovecot's limits raised (as
tests/e2e/test-many-sessions.py does), then opens sessions in steps (10,
1,000, then up to --max): every session APPENDs a message and stays
logged in, as IDLE clients do. After each step, once the sessions'
changes are replicated and the sessions have been idle for a few
seconds, it times new mail in --measured of the newest sessions until
it is on B, and prints the median and 90th percentile with the ratio to
the 10-session figure of the same run. Run inside the chroot as root:

    DW_DIR=/srv/dt-s DW_PORT_OFFSET=800 \\
        python3 /src/dovewarden/bench/bench-sessions.py [--max N]

About 2 MB of RAM per session; ends by itself and stops the pair."""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dwtest.clients import BView, make_message  # noqa: E402
from dwtest.common import NUMBERED_USERS, Skip  # noqa: E402
from dwtest.load import (  # noqa: E402
    MANY_SESSIONS_CONF, close_sessions, measure_new_mail, open_sessions, p90)
from dwtest.pair import Pair  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max", type=int, default=3000,
                    help="sessions in the last step (default 3000)")
    ap.add_argument("--measured", type=int, default=30)
    args = ap.parse_args()
    steps = [n for n in (10, 1000) if n < args.max] + [args.max]

    pair = Pair(extra_conf=MANY_SESSIONS_CONF)
    try:
        pair.check_available(True)
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    users = NUMBERED_USERS
    sessions = []
    views = {}
    rows = []
    try:
        pair.start()
        for u in users:
            pair.append("A", u, make_message("prime-" + u))
        pair.wait_converged(users, 120, "priming")
        views = {u: BView(pair, u, prime=False) for u in users}
        for n in steps:
            t0 = time.monotonic()
            sessions += open_sessions(pair, n - len(sessions),
                                      "step%d" % n)
            t_open = time.monotonic() - t0
            pair.wait_converged(users, 300, "%d sessions' changes" % n)
            time.sleep(6)
            lat = measure_new_mail(pair, sessions[-args.measured:], views,
                                   "new%d" % n)
            rows.append((n, statistics.median(lat), p90(lat), max(lat),
                         t_open))
    finally:
        close_sessions(sessions)
        for v in views.values():
            v.close()
        pair.stop()

    base = rows[0][1]
    print("%-10s %12s %12s %12s %10s %14s" % (
        "sessions", "median ms", "p90 ms", "max ms", "vs 10", "opened in s"))
    for n, med, q90, mx, t_open in rows:
        print("%-10d %12.1f %12.1f %12.1f %9.2fx %14.1f" % (
            n, med * 1000, q90 * 1000, mx * 1000, med / base, t_open))
    return 0


if __name__ == "__main__":
    sys.exit(main())
