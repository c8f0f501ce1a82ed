#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The notify socket's limits hold, and each is counted in /metrics.

(a) Peer lookups: peers that are neither root nor mail_uid are checked in
    the userdb, at most 100 lookups a second over all clients. 300
    connections of another uid each send one notification within about
    a second: all are refused, and the ones over the limit are refused
    without a lookup (dovewarden_notify_peer_lookups_limited_total).
(b) Sync waits per connection: with the replica down (no sync of the
    user ends, so no wait is answered), one connection asks for 1001
    waits: exactly the 1001st is refused ("Too many pending waits"),
    dovewarden_sync_waits_refused_total counts it, the log says so.
(c) Sync waits in total: 21 connections ask for 20001 waits (at most
    1000 each): exactly one is refused and counted (its log line is
    rate-limited to one a minute, (b)'s). The service keeps its PID, and
    once the replica is back the user replicates."""

import os
import select
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.notify import HELLO, as_uid, notify_connect  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.web import http_listener_conf, http_port, scrape  # noqa: E402

OTHER_UID = 4321
PEER_CLIENTS = 300
PER_CLIENT = 1000
TOTAL = 20000
WAIT_MSECS = 600000
USER = "user05"


def side_conf(pair):
    return {s: http_listener_conf(http_port(pair, s)) for s in SIDES}


r = Runner("test-notify-limits", side_conf=side_conf,
           extra_conf="dovewarden_retry_min_interval = 1s\n"
                      "dovewarden_retry_max_interval = 2s\n")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def metric(pair, name):
    _, m = scrape(http_port(pair, "A"))
    return m.value(name)


def waits(first_id, count):
    return b"".join(b"W\t%d\t%s\t%d\n" % (i, USER.encode(), WAIT_MSECS)
                    for i in range(first_id, first_id + count))


def replies(socks, secs):
    """The wait replies (not the VERSION line) that arrive on socks
    within secs, as (socket index, line)"""
    bufs = {s: b"" for s in socks}
    index = {s: i for i, s in enumerate(socks)}
    out = []
    end = time.monotonic() + secs
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(list(socks), [], [], left)
        for s in ready:
            data = s.recv(65536)
            if not data:
                socks = [x for x in socks if x is not s]
                continue
            bufs[s] += data
            *lines, bufs[s] = bufs[s].split(b"\n")
            out += [(index[s], l.decode()) for l in lines
                    if not l.startswith(b"VERSION")]
        if not socks:
            break
    return out


def refusals(pair, which):
    return [l for l in pair.log_since_mark("A")
            if "Refused a sync wait" in l and which in l]


@r.case("(a) peer lookups over 100 a second are refused and counted")
def _(pair):
    limited = metric(pair, "dovewarden_notify_peer_lookups_limited_total")
    refused = metric(pair, "dovewarden_notify_refused_total")

    def client():
        socks = [notify_connect(pair) for _ in range(PEER_CLIENTS)]
        t0 = time.monotonic()
        for s in socks:
            s.sendall(HELLO + b"N\t%s\thigh\n" % USER.encode())
        secs = time.monotonic() - t0
        # until the service has read them all
        time.sleep(3)
        for s in socks:
            s.close()
        return b"%.3f" % secs

    secs = as_uid(OTHER_UID, client).decode()
    wait_until(lambda: metric(pair, "dovewarden_notify_refused_total") >=
               refused + PEER_CLIENTS, 20,
               "%d refusals counted" % PEER_CLIENTS)
    n = metric(pair, "dovewarden_notify_peer_lookups_limited_total") - \
        limited
    expect(n > 0, "none of %d requests sent in %s s was refused at the "
           "lookup limit" % (PEER_CLIENTS, secs))
    expect(n <= PEER_CLIENTS - 100, "%d of %d requests refused at the "
           "limit: fewer than 100 lookups" % (n, PEER_CLIENTS))
    return "%d requests sent in %s s, %d refused at the lookup limit" % (
        PEER_CLIENTS, secs, n)


def replica_down(pair):
    pair.append("A", USER, make_message("limits-before"))
    pair.wait_converged(USER, 30, "the first APPEND")
    pair.stop_one("B")


@r.case("(b) the 1001st sync wait of one connection is refused")
def _(pair):
    replica_down(pair)
    before = metric(pair, "dovewarden_sync_waits_refused_total")
    s = notify_connect(pair)
    try:
        s.sendall(HELLO + waits(1, PER_CLIENT + 1))
        got = replies([s], 10)
    finally:
        s.close()
    expect(got == [(0, "-\t%d\tToo many pending waits" % (PER_CLIENT + 1))],
           "replies to %d waits: %r" % (PER_CLIENT + 1, got[:5]))
    n = metric(pair, "dovewarden_sync_waits_refused_total") - before
    expect(n == 1, "%d refused waits counted" % n)
    expect(refusals(pair, "per client"), "no log line of the refusal")
    return "1 of %d waits refused, counted and logged" % (PER_CLIENT + 1)


@r.case("(c) the 20001st sync wait in total is refused")
def _(pair):
    pid = pair.service_pid("A")
    before = metric(pair, "dovewarden_sync_waits_refused_total")
    socks = []
    try:
        for i in range(TOTAL // PER_CLIENT):
            s = notify_connect(pair)
            s.sendall(HELLO + waits(1, PER_CLIENT))
            socks.append(s)
        # one more, on a connection of its own
        s = notify_connect(pair)
        s.sendall(HELLO + waits(1, 1))
        socks.append(s)
        got = replies(socks, 15)
    finally:
        for s in socks:
            s.close()
    expect(len(got) == 1 and got[0][1].endswith("\tToo many pending waits"),
           "replies to %d waits: %r" % (TOTAL + 1, got[:5]))
    n = metric(pair, "dovewarden_sync_waits_refused_total") - before
    expect(n == 1, "%d refused waits counted" % n)
    expect(pair.service_pid("A") == pid, "A's service restarted")
    pair.start_one("B")
    pair.wait_converged(USER, 60, "after the replica came back")
    return "1 of %d waits on %d connections refused (connection %d) " \
        "and counted" % (TOTAL + 1, len(socks), got[0][0] + 1)


if __name__ == "__main__":
    run(r)
