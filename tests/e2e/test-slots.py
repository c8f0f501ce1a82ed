#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Sync slots: new mail never waits behind background work.

The service runs with dovewarden_max_syncs = 4 (and a short settle
delay, whose full syncs of the seeded users end before the test's
changes; the settle stays on because convergence needs it, also after
the low syncs below: without it, incremental syncs alone once left a
flag change behind with the Redis queue). Six users get a flag change on A (a
low priority change, background work) while the test holds their dsync
lock on A (dsync locks on the side whose host name sorts first, here A),
so each of their syncs waits dovewarden_lock_timeout (30 s) in its slot.
Background work takes at most three of the four slots: a message then
appended for another user reaches B within a few seconds, instead of
waiting half a minute for a low sync's slot. Then the locks are given
back and every user converges."""

import fcntl
import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message, msg_hash  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

MAX_SYNCS = 4
# dovewarden_queue_background_slots(4): all but a quarter
BACKGROUND_SLOTS = 3
LOW_USERS = ["user%02d" % i for i in range(11, 17)]
NEW_MAIL_USER = "user17"
VUID = 5000
# far below dovewarden_lock_timeout (30 s), which a new change would wait
# if the low syncs held every slot
NEW_MAIL_TIMEOUT = 10.0
SETTLE_SECS = 2

r = Runner(
    "test-slots",
    extra_conf="dovewarden_max_syncs = %d\n"
               "dovewarden_settle_delay = %ds" % (MAX_SYNCS, SETTLE_SECS))


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def hold_dsync_lock(pair, user):
    """Take user's dsync lock on A as dsync does (an fcntl lock on
    .dovecot-sync.lock in its home); returns the fd."""
    path = os.path.join(pair.dw_dir, "A", "mail", user, ".dovecot-sync.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchown(fd, VUID, VUID)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    return fd, path


def running_syncs(pair):
    r = pair.dw("A", "dsync-status", fmt="json")
    return [d["username"] for d in json.loads(r.stdout or "[]")]


def full_slots(pair):
    """The running syncs once background work took all its slots"""
    running = running_syncs(pair)
    return running if len(running) >= BACKGROUND_SLOTS else None


@r.case("new mail is not delayed by a full table of low changes")
def _(pair):
    users = LOW_USERS + [NEW_MAIL_USER]
    for u in users:
        pair.append("A", u, make_message("seed " + u))
    pair.wait_converged(users, 60, "seeding")
    wait_until(lambda: pair.queues_empty("A") and pair.queues_empty("B"),
               60, "the first syncs to end")
    # and their settle full syncs
    time.sleep(SETTLE_SECS + 1)
    wait_until(lambda: pair.queues_empty("A") and pair.queues_empty("B"),
               60, "the settle syncs to end")

    locks = [hold_dsync_lock(pair, u) for u in LOW_USERS]
    try:
        for u in LOW_USERS:
            pair.doveadm("A", "flags", "add", "-u", u, "\\Flagged",
                         "mailbox", "INBOX", "ALL")
        # the low syncs take their slots and wait for the locks
        running = wait_until(lambda: full_slots(pair), 15,
                             "the low changes' syncs")
        expect(set(running) <= set(LOW_USERS),
               "unexpected syncs running: %r" % running)
        time.sleep(1)

        msg = make_message("new mail behind low changes")
        t0 = time.monotonic()
        pair.append("A", NEW_MAIL_USER, msg)
        h = msg_hash(msg)
        wait_until(lambda: h in pair.snapshot("B", NEW_MAIL_USER).hashes(),
                   NEW_MAIL_TIMEOUT,
                   "the new mail on B (while %d low syncs held slots: %r)"
                   % (len(running), running))
        took = time.monotonic() - t0
        still = [u for u in running_syncs(pair) if u in LOW_USERS]
        expect(len(still) >= BACKGROUND_SLOTS - 1,
               "the low syncs ended before the new mail arrived: %r"
               % still)
    finally:
        for fd, path in locks:
            try:
                os.unlink(path)
            except OSError:
                pass
            os.close(fd)

    pair.wait_converged(users, 120, "after the locks were given back")
    return "new mail on B after %.1f s, %d low syncs in slots" % (
        took, len(running))


if __name__ == "__main__":
    run(r)
