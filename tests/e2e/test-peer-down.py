#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""A stopped peer: failures are counted, retried with back-off, shown by
`doveadm dovewarden status` and logged; once the peer is back the change
arrives.

B is stopped and a user changes on A. While B is down, the user's line in
`doveadm -f json dovewarden status <user>` (and -f tab) on A shows the
failure count rising, a next sync in the future and the last error, the
overview counts a user with failed syncs, and A's log has the service's
warning for the failed sync with its reason and doveadm's error naming
the refused connection. Then B is started and the user
converges within the back-off cap (dovewarden_retry_max_interval, set
low here), after which the status shows no failure."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import POLL_INTERVAL, hms_secs, wait_until  # noqa: E402
from dwtest.pair import dovecot_series  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

# the level of A's dsync error (the cases stop B)
CAUSE_LEVEL = "Fatal:" if dovecot_series("A") == "2.3" else "Error:"

RETRY_MIN = 2
RETRY_MAX = 8
CONVERGE_TIMEOUT = RETRY_MAX * 1.25 + 20.0
FAILURES = 3   # watch the count rise to this while B is down

r = Runner(
    "test-peer-down",
    extra_conf="dovewarden_retry_min_interval = %ds\n"
               "dovewarden_retry_max_interval = %ds" % (RETRY_MIN, RETRY_MAX))


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def tab_status(pair, user):
    """doveadm -f tab dovewarden status <user>: header -> value."""
    out = pair.dw("A", "status", user, fmt="tab").stdout.splitlines()
    expect(len(out) == 2, "-f tab status %s: expected a header and one "
           "line, got %r" % (user, out))
    return dict(zip(out[0].split("\t"), out[1].split("\t")))


@r.case("B down: failures rise with back-off, B back: converged")
def _(pair):
    user = "alice"
    pair.append("A", user, make_message("seed"))
    pair.wait_converged(user, 20, "seeding")
    ok = pair.dw_users("A", user)[user]
    expect(int(ok["failed"]) == 0 and ok["last_error"] == "-",
           "before B stops: %r" % ok)

    pair.stop_one("B")
    try:
        msg = make_message("while-b-down")
        m = pair.imap("A", user)
        try:
            pair.append("A", user, msg, conn=m)
            check_ok(m.select("INBOX"), "SELECT")
            check_ok(m.store("1", "+FLAGS", "\\Flagged"), "STORE")
        finally:
            m.logout()

        seen = []   # (failed, next sync secs) as the status showed them
        end = time.monotonic() + RETRY_MIN * (2 ** FAILURES) + 10
        while True:
            st = pair.dw_users("A", user).get(user)
            expect(st is not None, "%s not in A's status while B is down"
                   % user)
            cur = (int(st["failed"]), hms_secs(st["next_sync"]))
            if not seen or seen[-1] != cur:
                seen.append(cur)
            if cur[0] >= FAILURES:
                break
            expect(time.monotonic() < end, "the failure count did not "
                   "reach %d: seen (failed, next sync secs) %r"
                   % (FAILURES, seen))
            time.sleep(POLL_INTERVAL)
        counts = [f for f, _n in seen]
        expect(counts == sorted(counts), "the failure count went down: %r"
               % seen)
        expect(st["last_error"] not in ("", "-"),
               "no last error with %d failures: %r" % (cur[0], st))
        expect(st["priority"] != "none",
               "the change is not pending any more: %r" % st)
        expect(st["success_sync"] != "-", "no successful sync time: %r"
               % st)
        # right after a failure the next try lies in the future
        futures = [n for f, n in seen if f >= 1 and n is not None and n > 0]
        expect(futures, "never a next sync in the future after a failure: "
               "%r" % seen)
        # the service adds up to a quarter of jitter to the delay
        cap = RETRY_MAX + RETRY_MAX // 4 + 1
        expect(max(futures) <= cap, "next sync %d s later exceeds the "
               "back-off cap %d s (+ jitter): %r"
               % (max(futures), RETRY_MAX, seen))
        tab = tab_status(pair, user)
        for col in ("username", "priority", "failed", "next sync",
                    "last error"):
            expect(col in tab, "-f tab status has no column %r: %r"
                   % (col, tab))
        expect(int(tab["failed"]) >= FAILURES and tab["last error"] ==
               st["last_error"], "-f tab status disagrees: %r" % tab)
        ov = pair.dw_overview("A")
        expect(any("fail" in k.lower() and v >= 1 for k, v in ov.items()),
               "the overview shows no failed user: %r" % ov)
        warn = pair.wait_log(
            "A", lambda l: "dovewarden: Warning: %s: " % user in l
            and "failed" in l and st["last_error"] in l, 5,
            "a warning in A's log naming the failed sync's reason")
        # the cause itself is logged by doveadm-server's dsync on A (2.3's
        # dsync gives up on it with a Fatal: line)
        cause = pair.wait_log(
            "A", lambda l: "doveadm(%s)" % user in l and CAUSE_LEVEL in l
            and "connect(127.0.0.1:%d)" % pair.port("B", "doveadm") in l,
            5, "doveadm's error naming the refused connection to B")
    finally:
        pair.start_one("B")
    t = pair.wait_converged(user, CONVERGE_TIMEOUT, "after B was started")
    expect(msg_hash(msg) in pair.snapshot("B", user).hashes(),
           "the message is not on B")
    # B's own sync may converge the user first (its sync that the stop
    # interrupted is settled at its start): A's count goes back to 0 at
    # A's next try, within the back-off cap
    st = wait_until(
        lambda: (lambda s: s if int(s["failed"]) == 0 else None)(
            pair.dw_users("A", user)[user]), RETRY_MAX * 1.25 + 5,
        "the failure count to go back to 0")
    expect(st["last_error"] == "-", "last error after success: %r" % st)
    return ("(failed, next sync secs) seen: %r; log: %s; cause: %s; "
            "converged %.2f s after B started"
            % (seen, warn.split("Warning: ")[-1],
               cause.split("Error: ")[-1], t))


if __name__ == "__main__":
    run(r)
