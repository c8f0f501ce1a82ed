#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Thousands of IMAP sessions stay logged in after changing something,
as IDLE clients do: new mail in the last of them must reach the peer as
fast as with a handful of sessions. (Mail processes used to keep their
notify connection for life; past the service's client_limit, new
connections waited for a slot and replication took 20 s.)

DW_E2E_SESSIONS sets the number of sessions (default 1500);
bench/bench-sessions.py prints the latency against the number."""

import os
import statistics
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import BView, make_message  # noqa: E402
from dwtest.common import NUMBERED_USERS  # noqa: E402
from dwtest.load import (  # noqa: E402
    MANY_SESSIONS_CONF, close_sessions, measure_new_mail, open_sessions, p90,
    summary)
from dwtest.runner import Runner, run  # noqa: E402

SESSIONS = int(os.environ.get("DW_E2E_SESSIONS", "1500"))
# the sessions whose new mail is timed
MEASURED = 30

r = Runner("test-many-sessions", extra_conf=MANY_SESSIONS_CONF)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


@r.case("new mail in the last of %d sessions replicates as fast as "
        "with 10" % SESSIONS)
def _(pair):
    users = NUMBERED_USERS
    # every user's INBOX comes from A before B is looked at
    for u in users:
        pair.append("A", u, make_message("prime-" + u))
    pair.wait_converged(users, 60, "priming")
    views = {u: BView(pair, u, prime=False) for u in users}
    try:

        few = open_sessions(pair, 10, "few")
        pair.wait_converged(users, 60, "the 10 sessions' changes")
        # idle like IMAP clients in IDLE
        time.sleep(6)
        base = measure_new_mail(pair, few, views, "base")
        close_sessions(few)

        t0 = time.monotonic()
        many = open_sessions(pair, SESSIONS, "many")
        t_open = time.monotonic() - t0
        pair.wait_converged(users, 120, "the %d sessions' changes"
                            % SESSIONS)
        time.sleep(6)
        # every session is still logged in
        alive = sum(1 for _, m in many[-MEASURED:]
                    if m.noop()[0] == "OK")
        expect(alive == MEASURED, "only %d of the last %d sessions are "
               "still logged in" % (alive, MEASURED))
        lat = measure_new_mail(pair, many[-MEASURED:], views, "last")
        close_sessions(many)
    finally:
        for v in views.values():
            v.close()

    b, m = statistics.median(base), statistics.median(lat)
    expect(m <= max(2 * b, b + 0.3), "with %d sessions: %s; with 10: %s"
           % (SESSIONS, summary(lat), summary(base)))
    expect(p90(lat) <= max(4 * b, 2.0), "with %d sessions: %s; with 10: "
           "%s" % (SESSIONS, summary(lat), summary(base)))
    return ("10 sessions: %s; %d sessions (opened in %.0f s): %s"
            % (summary(base), SESSIONS, t_open, summary(lat)))


if __name__ == "__main__":
    run(r)
