#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Sync waits in an imap process shared by several sessions.

A's imap service runs every session in one process (client_limit = 10,
process_limit = 1, restart_request_count = unlimited) with dovewarden_sync_wait = 5s and the imap_dovewarden
plugin, which holds back only the waiting APPEND's tagged reply.

(a) With B stopped, one session's APPEND waits for its timeout (about
    5 s) while other sessions of the same process, other users, get their
    replies at once (NOOP, SELECT, FETCH and a STORE, each well under a
    second); their own APPENDs wait only their own time.
(b) With B running, three sessions of the one process APPEND at the same
    time: every message is on B when its session gets OK.
"""

import os
import re
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message  # noqa: E402
from dwtest.load import appends_checked_on_b  # noqa: E402
from dwtest.pair import conf_by_series  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

WAIT_SECS = 5.0
# a reply that the waiting session would hold up takes the whole wait
OTHER_MAX_SECS = 1.0

r = Runner(
    "sync-wait-shared",
    extra_conf="dovewarden_sync_wait = 5s\n",
    side_conf={"A": conf_by_series("""
service imap {
  client_limit = 10
  process_limit = 1
  restart_request_count = unlimited
}
protocol imap {
  mail_plugins {
    imap_dovewarden = yes
  }
}
""", """
service imap {
  client_limit = 10
  process_limit = 1
  service_count = 0
}
protocol imap {
  mail_plugins = $mail_plugins imap_dovewarden
}
""")})


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def imap_pids(pair, users):
    """user -> the imap process PIDs that logged for it since the mark"""
    pids = {}
    for line in pair.log_since_mark("A"):
        m = re.search(r" imap\(([^)]+)\)<(\d+)>", line)
        if m and m.group(1) in users:
            pids.setdefault(m.group(1), set()).add(int(m.group(2)))
    return pids


@r.case("(a) B stopped: other sessions of the process are not held up")
def _(pair):
    waiter, others = "alice", ["bob", "carol"]
    conns = {u: pair.imap("A", u) for u in [waiter] + others}
    for u in others:
        check_ok(conns[u].select("INBOX"), "SELECT")
        pair.append("A", u, make_message("shared-seed"), conn=conns[u])
    pair.stop_one("B")
    result = {}

    def append():
        t0 = time.monotonic()
        try:
            pair.append("A", waiter, make_message("shared-wait"),
                        conn=conns[waiter])
        except Exception as e:
            result["error"] = repr(e)
        result["secs"] = time.monotonic() - t0

    try:
        th = threading.Thread(target=append, daemon=True)
        th.start()
        time.sleep(0.5)
        expect(th.is_alive(), "the APPEND did not wait (B is stopped)")
        times = []
        while th.is_alive() and len(times) < 40:
            for u in others:
                m = conns[u]
                t0 = time.monotonic()
                check_ok(m.noop(), "NOOP")
                check_ok(m.select("INBOX"), "SELECT")
                check_ok(m.fetch("1", "(FLAGS)"), "FETCH")
                check_ok(m.store("1", "+FLAGS", "\\Seen"), "STORE")
                times.append(time.monotonic() - t0)
            time.sleep(0.2)
        th.join(WAIT_SECS + 30)
        expect(not th.is_alive(), "the waiting APPEND never returned")
        expect("error" not in result, "the APPEND failed: %s"
               % result.get("error"))
        slow = [t for t in times if t > OTHER_MAX_SECS]
        expect(not slow, "other sessions were held up: %d of %d rounds "
               "took over %.1f s (max %.2f s)"
               % (len(slow), len(times), OTHER_MAX_SECS, max(times)))
        expect(WAIT_SECS - 0.5 <= result["secs"] <= WAIT_SECS + 3,
               "the waiting APPEND took %.2f s, not about the %.0f s "
               "timeout" % (result["secs"], WAIT_SECS))
        pids = imap_pids(pair, [waiter] + others)
        one = set().union(*pids.values()) if pids else set()
        expect(len(pids) == 3 and len(one) == 1,
               "the sessions did not share one imap process: %r" % pids)
    finally:
        for m in conns.values():
            try:
                m.logout()
            except Exception:
                pass
        pair.start_one("B")
    pair.wait_converged([waiter] + others, 40, "after B was started")
    return ("APPEND %.2f s; %d rounds of NOOP+SELECT+FETCH+STORE in other "
            "sessions, max %.3f s; one imap process %s"
            % (result["secs"], len(times), max(times), sorted(one)))


@r.case("(b) concurrent APPENDs of three sessions of one process: on B at OK")
def _(pair):
    users = ["dave", "erin", "frank"]
    rounds = 15
    times, errors = appends_checked_on_b(pair, users, rounds,
                                         "sync-wait shared")
    expect(not errors, "; ".join(errors[:10]))
    expect(len(times) == rounds * len(users), "only %d APPENDs ran"
           % len(times))
    pids = imap_pids(pair, users)
    one = set().union(*pids.values()) if pids else set()
    expect(len(one) == 1, "the sessions did not share one imap process: %r"
           % pids)
    times.sort()
    return "%d/%d on B at OK; APPEND median %.0f ms, max %.0f ms" % (
        len(times), len(times), times[len(times) // 2] * 1000,
        times[-1] * 1000)


run(r)
