#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Thousands of IMAP sessions stay logged in after changing something,
as IDLE clients do: new mail in the last of them must reach the peer as
fast as with a handful of sessions. (Mail processes used to keep their
notify connection for life; past the service's client_limit, new
connections waited for a slot and replication took 20 s.)

DW_E2E_SESSIONS sets the number of sessions (default 1500);
bench/bench-sessions.py prints the latency against the number."""

import concurrent.futures
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import BView, check_ok, make_message  # noqa: E402
from dwtest.common import NUMBERED_USERS  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

SESSIONS = int(os.environ.get("DW_E2E_SESSIONS", "1500"))
# the sessions whose new mail is timed
MEASURED = 30
LOGIN_WORKERS = 16

# Dovecot's own limits, raised for thousands of sessions
MANY_SESSIONS_CONF = """
default_process_limit = 5000
default_client_limit = 10000
mail_max_userip_connections = 10000
service imap {
  process_limit = 5000
}
service anvil {
  client_limit = 20000
}
service stats {
  client_limit = 20000
}
# logins in high-performance mode: a login process per connection would
# make opening the sessions the slowest part of the test
service imap-login {
  restart_request_count = unlimited
  process_min_avail = 2
  client_limit = 1000
}
"""

r = Runner("test-many-sessions", extra_conf=MANY_SESSIONS_CONF)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def open_sessions(pair, count, tag):
    """count IMAP sessions on A over the numbered users, each of which
    APPENDs a message and stays logged in. Returns [(user, conn)]."""
    users = NUMBERED_USERS

    def one(i):
        user = users[i % len(users)]
        m = pair.imap("A", user)
        pair.append("A", user, make_message("%s-%d" % (tag, i)), conn=m)
        return user, m
    with concurrent.futures.ThreadPoolExecutor(LOGIN_WORKERS) as ex:
        return list(ex.map(one, range(count)))


def close_sessions(sessions):
    def one(s):
        try:
            s[1].logout()
        except Exception:
            pass
    with concurrent.futures.ThreadPoolExecutor(LOGIN_WORKERS) as ex:
        list(ex.map(one, sessions))


def measure(pair, sessions, views, tag):
    """APPEND a message in each session and time until it is on B."""
    lat = []
    for i, (user, m) in enumerate(sessions):
        msg = make_message("%s-%d" % (tag, i))
        t0 = time.monotonic()
        pair.append("A", user, msg, conn=m)
        view = views[user]
        deadline = t0 + 60
        while not view.has(msg):
            expect(time.monotonic() < deadline, "%s: new mail not on B "
                   "after 60 s" % user)
            time.sleep(0.01)
        lat.append(time.monotonic() - t0)
    return lat


def p90(lat):
    return sorted(lat)[int(len(lat) * 0.9) - 1]


def summary(lat):
    return "median %.3f s, 90th percentile %.3f s, max %.3f s" % (
        statistics.median(lat), p90(lat), max(lat))


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
        base = measure(pair, few, views, "base")
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
        lat = measure(pair, many[-MEASURED:], views, "last")
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
