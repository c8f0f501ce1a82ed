#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The settle full sync runs only where it buys something.

Incremental dsync fails to converge only where a user changed on both
servers at about the same time (the same message's flags changed on
both, for example); the plugin reports both its clients' changes and
the changes dsync made (imports), so the service settles only those
users. With dovewarden_settle_delay = 2s:

(a) One-sided changes: users get new mail, flag changes and an expunge
    on A only. Once B has them and the settle delay has passed twice,
    neither service has run a settle full sync, and B's service has run
    no sync at all of those users (dsync's changes cause none).
(b) Changes on both servers at once: with both services stopped
    (SIGSTOP), the same message gets a different flag on A and on B, and
    each side gets a new message. After SIGCONT every such user gets a
    settle full sync and A and B end up identical (the flags of both
    sides on both), within the convergence bound.
(c) Mail delivered on one server, read on the other, one after the
    other: users that B's service has synced before get a delivery on A
    (A's service brings it to B), then B's client flags the new message
    \\Seen. A must get the flag within the settle delay plus a margin,
    with no further change on A. dsync with B's saved state, older than
    A's sync, does not carry the flag; a second incremental sync does.

Without the settle rule, (a) fails: every change was settled. Without
the follow-up sync after a sync whose state was older than the other
server's last sync, (c) fails."""

import os
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

SETTLE_SECS = 2
ONE_SIDED = ["user%02d" % i for i in range(21, 27)]
BOTH_SIDES = ["user%02d" % i for i in range(27, 31)]
DELIVERED_READ = ["user%02d" % i for i in range(16, 21)]
BOUND = 30.0

r = Runner("test-settle",
           extra_conf="dovewarden_settle_delay = %ds" % SETTLE_SECS)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sync_lines(pair, side, users, kind=""):
    """The "Starting <kind> sync" debug lines of side's service for users
    since the last mark"""
    return [line for line in pair.log_since_mark(side)
            if " sync (priority" in line and
            any((" %s: Starting %s" % (u, kind)) in line for u in users)]


def add_flag(pair, side, users, seq, flag):
    """STORE +FLAGS flag on message seq of each user's INBOX on side"""
    for u in users:
        m = pair.imap(side, u)
        try:
            check_ok(m.select("INBOX"), "SELECT")
            check_ok(m.store(seq, "+FLAGS", flag), "STORE")
        finally:
            m.logout()


def settled_quietly(pair, users, what, timeout=BOUND):
    """Both servers equal for users, both services idle with them"""
    pair.wait_converged(users, timeout, what)
    for u in users:
        pair.wait_service_idle(u, timeout=30)


def prepare(pair, users):
    for u in users:
        pair.append("A", u, make_message("seed-" + u))
    settled_quietly(pair, users, "the seeding", 60)
    # the seeding's own settles (first full syncs) are over
    time.sleep(SETTLE_SECS * 2 + 1)


@r.case("changes on one server only: no settle, no sync from the other")
def _(pair):
    prepare(pair, ONE_SIDED)
    for side in SIDES:
        pair.mark_log(side)
    for u in ONE_SIDED:
        m = pair.imap("A", u)
        try:
            pair.append("A", u, make_message("one-" + u), conn=m)
            check_ok(m.select("INBOX"), "SELECT")
            check_ok(m.store("1", "+FLAGS", "\\Flagged"), "STORE")
            pair.append("A", u, make_message("gone-" + u), conn=m)
            check_ok(m.store("3", "+FLAGS", "\\Deleted"), "STORE")
            check_ok(m.expunge(), "EXPUNGE")
        finally:
            m.logout()
    settled_quietly(pair, ONE_SIDED, "the one-sided changes")
    time.sleep(SETTLE_SECS * 2 + 2)
    for u in ONE_SIDED:
        pair.wait_service_idle(u, timeout=30)
    settles = {s: sync_lines(pair, s, ONE_SIDED, "settle full")
               for s in SIDES}
    expect(not settles["A"] and not settles["B"],
           "settle full syncs after one-sided changes:\n  "
           + "\n  ".join(settles["A"] + settles["B"]))
    on_b = sync_lines(pair, "B", ONE_SIDED)
    expect(not on_b, "B's service synced users that changed on A only:"
           "\n  " + "\n  ".join(on_b))
    expect(sync_lines(pair, "A", ONE_SIDED),
           "A's debug log has no sync lines (log format changed?)")
    return "no settle, %d syncs on A, none on B" % len(
        sync_lines(pair, "A", ONE_SIDED))


@r.case("changes on both servers at once: settled and identical")
def _(pair):
    prepare(pair, BOTH_SIDES)
    for side in SIDES:
        pair.mark_log(side)
    pids = {s: pair.service_pid(s) for s in SIDES}
    try:
        for pid in pids.values():
            os.kill(pid, signal.SIGSTOP)
        for u in BOTH_SIDES:
            for side, flag in (("A", "\\Answered"), ("B", "$Label1")):
                m = pair.imap(side, u)
                try:
                    check_ok(m.select("INBOX"), "SELECT")
                    check_ok(m.store("1", "+FLAGS", flag), "STORE")
                    pair.append(side, u, make_message(
                        "both-%s-%s" % (side, u)), conn=m)
                finally:
                    m.logout()
    finally:
        for pid in pids.values():
            os.kill(pid, signal.SIGCONT)
    t0 = time.monotonic()
    pair.wait_converged(BOTH_SIDES, BOUND, "the changes on both servers")
    took = time.monotonic() - t0
    for u in BOTH_SIDES:
        for side in SIDES:
            snap = pair.snapshot(side, u)
            expect(snap.count() == 3, "%s on %s has %d messages, not 3"
                   % (u, side, snap.count()))

    # A full sync that starts after both changes settles them as well:
    # the Redis queue runs one at once for a user whose changes from
    # both servers it got before any instance claimed it (a loaded
    # machine); the others get a settle full sync after the settle delay
    def all_settled():
        return all(any(sync_lines(pair, s, [u], kind) for s in SIDES
                       for kind in ("settle full", "full"))
                   for u in BOTH_SIDES)
    wait_until(all_settled, BOUND, "a settle full sync of every user "
               "changed on both servers")
    pair.wait_converged(BOTH_SIDES, BOUND, "after the settles")
    return "identical %.1f s after the services went on" % took


@r.case("delivered on A, read on B: the flag reaches A")
def _(pair):
    users = DELIVERED_READ
    prepare(pair, users)
    # B's service syncs each user once, so that it has a dsync state
    add_flag(pair, "B", users, "1", "\\Answered")
    settled_quietly(pair, users, "B's first changes")
    # B's changes are older than the settle delay when the deliveries
    # come: no settle (a full sync would give B a fresh state)
    time.sleep(SETTLE_SECS * 2 + 1)
    for side in SIDES:
        pair.mark_log(side)
    marks = dict(pair.log_marks)
    for u in users:
        pair.lmtp_deliver("A", u, make_message("delivered-" + u))
    settled_quietly(pair, users, "the deliveries on A")
    # the imports into B are older than the settle delay: the flags set
    # on B below are one-sided changes, which the settle rule leaves alone
    time.sleep(SETTLE_SECS * 2 + 1)
    for side in SIDES:
        pair.mark_log(side)
    seen_marks = dict(pair.log_marks)
    add_flag(pair, "B", users, "2", "\\Seen")
    t0 = time.monotonic()
    pair.wait_converged(users, SETTLE_SECS + 8, "the flags set on B")
    took = time.monotonic() - t0
    # carried by B's follow-ups, not by a settle full sync
    for side in SIDES:
        pair.log_marks[side] = marks[side]
    settles = sync_lines(pair, "A", users, "settle full") + \
        sync_lines(pair, "B", users, "settle full")
    expect(not settles, "settle full syncs of one-sided changes:\n  "
           + "\n  ".join(settles))
    pair.log_marks.update(seen_marks)
    followed = [u for u in users if any(
        (" %s: Follow-up incremental sync" % u) in line
        for line in pair.log_since_mark("B"))]
    expect(sorted(followed) == sorted(users),
           "B's service ran no follow-up sync of %s" % sorted(
               set(users) - set(followed)))
    return "A has B's flags %.1f s after they were set" % took


if __name__ == "__main__":
    sys.exit(run(r))
