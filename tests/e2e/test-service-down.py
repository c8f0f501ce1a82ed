#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Mail keeps flowing while A's dovewarden service is down.

(a) The service of A is stopped with SIGSTOP: every IMAP APPEND on A still
    returns OK within 0.5 s, the messages do not reach B while it is
    stopped, and after SIGCONT they do.
(b) The service of A is killed with SIGKILL: Dovecot's master starts a new
    one, the plugin reconnects, and the messages appended right after the
    kill reach B.
(c) Like (a), with LMTP deliveries instead of APPENDs.
(d) The peer B is down: APPENDs on A stay fast, and once B is back the
    service's retry carries the messages over.
Only the service process of this test's own instance A is signalled: it
is found as the child of A's master whose executable or title is
dovewarden."""

import os
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import POLL_INTERVAL, wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

APPEND_BOUND = 0.5   # seconds an APPEND may take (the acceptance bound)
LOGOUT_BOUND = 1.0   # a LOGOUT must not hang on the missing service
CONVERGE_TIMEOUT = float(os.environ.get("DW_E2E_RECOVERY_TIMEOUT", "30"))
ABSENCE_WINDOW = 1.0  # how long B is watched for mail that must not come
N = 20

r = Runner("test-service-down")
users = iter(["alice", "bob", "carol", "dave", "erin", "frank"])


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def prepare(pair):
    """A user with INBOX and one message on A that replication has
    carried to B, while the service runs normally."""
    user = next(users)
    seed = make_message("seed-" + user)
    m = pair.imap("A", user)
    try:
        check_ok(m.select("INBOX"), "SELECT INBOX")
        pair.append("A", user, seed, conn=m)
    finally:
        m.logout()
    wait_until(lambda: pair.inbox_dir_exists("B", user), 10,
               "replication to create %s's INBOX on B" % user)
    pair.wait_converged(user, 10, "preparation of " + user)
    # the sync's own notifications (dsync creating INBOX on B) are
    # synced by B's instance with the Redis queue: a first sync from B
    # compares everything, and would carry the test's messages
    pair.wait_service_idle(user)
    expect(msg_hash(seed) in pair.snapshot("B", user).hashes(),
           "seed not on B")
    return user


def append_many(pair, user, tag):
    """N APPENDs on A: half in one session, half each in a session of its
    own. Returns the message hashes and the slow operations."""
    msgs = [make_message("%s-%d" % (tag, i)) for i in range(N)]
    slow = []
    times = []
    m = pair.imap("A", user)
    try:
        for i, msg in enumerate(msgs[:N // 2]):
            dt = pair.append("A", user, msg, conn=m)
            times.append(dt)
            if dt >= APPEND_BOUND:
                slow.append("APPEND #%d took %.3f s" % (i, dt))
    finally:
        t0 = time.monotonic()
        m.logout()
        dt = time.monotonic() - t0
        if dt >= LOGOUT_BOUND:
            slow.append("LOGOUT took %.3f s" % dt)
    for i, msg in enumerate(msgs[N // 2:], N // 2):
        m = pair.imap("A", user)
        try:
            dt = pair.append("A", user, msg, conn=m)
            times.append(dt)
            if dt >= APPEND_BOUND:
                slow.append("APPEND #%d (own session) took %.3f s" % (i, dt))
        finally:
            t0 = time.monotonic()
            m.logout()
            dt = time.monotonic() - t0
            if dt >= LOGOUT_BOUND:
                slow.append("LOGOUT after APPEND #%d took %.3f s" % (i, dt))
    return [msg_hash(x) for x in msgs], slow, max(times)


def assert_absent_on_b(pair, user, hashes):
    """None of hashes shows up on B while A's service is stopped."""
    end = time.monotonic() + ABSENCE_WINDOW
    while True:
        arrived = set(hashes) & pair.snapshot("B", user).hashes()
        expect(not arrived, "%d of %d messages reached B although A's "
               "service was stopped" % (len(arrived), len(hashes)))
        if time.monotonic() >= end:
            return
        time.sleep(POLL_INTERVAL)


def assert_all_on_b(pair, user, hashes):
    missing = set(hashes) - pair.snapshot("B", user).hashes()
    expect(not missing, "%d of %d messages missing on B" %
           (len(missing), len(hashes)))


@r.case("(a) SIGSTOP service of A, APPEND x%d, SIGCONT" % N)
def _(pair):
    user = prepare(pair)
    pid = pair.service_pid("A")
    os.kill(pid, signal.SIGSTOP)
    try:
        hashes, slow, tmax = append_many(pair, user, "stopped")
        expect(not slow, "with the service stopped: " + "; ".join(slow))
        assert_absent_on_b(pair, user, hashes)
    finally:
        os.kill(pid, signal.SIGCONT)
    t = pair.wait_converged(user, CONVERGE_TIMEOUT, "after SIGCONT")
    assert_all_on_b(pair, user, hashes)
    expect(pair.service_pids("A") == [pid],
           "service pid changed: %s -> %s" % (pid, pair.service_pids("A")))
    return ("slowest APPEND %.3f s; %s converged %.2f s after SIGCONT"
            % (tmax, user, t))


@r.case("(b) SIGKILL service of A, APPEND x%d at once" % N)
def _(pair):
    user = prepare(pair)
    pid = pair.service_pid("A")
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    hashes, slow, tmax = append_many(pair, user, "killed")
    expect(not slow, "after SIGKILL of the service: " + "; ".join(slow))
    t = pair.wait_converged(user, CONVERGE_TIMEOUT, "after SIGKILL")
    assert_all_on_b(pair, user, hashes)
    new = pair.service_pid("A")
    expect(new != pid, "the killed service %d is still there" % pid)
    return ("slowest APPEND %.3f s; %s converged %.2f s after the kill "
            "(%.2f s after the last APPEND); new service pid %d"
            % (tmax, user, time.monotonic() - t0, t, new))


@r.case("(c) SIGSTOP service of A, LMTP delivery x5, SIGCONT")
def _(pair):
    user = prepare(pair)
    pid = pair.service_pid("A")
    msgs = [make_message("lmtp-stopped-%d" % i) for i in range(5)]
    slow = []
    os.kill(pid, signal.SIGSTOP)
    try:
        for i, msg in enumerate(msgs):
            t0 = time.monotonic()
            pair.lmtp_deliver("A", user, msg)
            dt = time.monotonic() - t0
            if dt >= APPEND_BOUND:
                slow.append("LMTP delivery #%d took %.3f s" % (i, dt))
        expect(not slow, "with the service stopped: " + "; ".join(slow))
        end = time.monotonic() + ABSENCE_WINDOW
        while True:
            b = pair.snapshot("B", user)
            subjects = {b.subjects[h] for h in b.hashes()}
            expect(not any(s.startswith("lmtp-stopped") for s in subjects),
                   "a delivered message reached B although A's service "
                   "was stopped")
            if time.monotonic() >= end:
                break
            time.sleep(POLL_INTERVAL)
    finally:
        os.kill(pid, signal.SIGCONT)
    t = pair.wait_converged(user, CONVERGE_TIMEOUT, "after SIGCONT")
    b = pair.snapshot("B", user)
    subjects = {b.subjects[h] for h in b.hashes()}
    expect(all("lmtp-stopped-%d" % i in subjects for i in range(5)),
           "delivered messages missing on B")
    return "%s converged %.2f s after SIGCONT" % (user, t)


@r.case("(d) peer B down, APPEND x5 on A, B back: the retry syncs")
def _(pair):
    user = prepare(pair)
    pair.stop_one("B")
    try:
        msgs = [make_message("peer-down-%d" % i) for i in range(5)]
        slow = []
        m = pair.imap("A", user)
        try:
            for i, msg in enumerate(msgs):
                dt = pair.append("A", user, msg, conn=m)
                if dt >= APPEND_BOUND:
                    slow.append("APPEND #%d took %.3f s" % (i, dt))
        finally:
            m.logout()
        expect(not slow, "with B down: " + "; ".join(slow))
        # let the service's first attempt fail against the missing peer
        wait_until(
            lambda: any("sync" in l.lower() and user in l
                        and ("fail" in l.lower() or "error" in l.lower())
                        for l in pair.log_since_mark("A")),
            10, "A's service to log a failed sync of %s" % user)
    finally:
        pair.start_one("B")
    t = pair.wait_converged(user, CONVERGE_TIMEOUT, "after B came back")
    assert_all_on_b(pair, user, [msg_hash(x) for x in msgs])
    return "%s converged %.2f s after B was started again" % (user, t)


if __name__ == "__main__":
    run(r)
