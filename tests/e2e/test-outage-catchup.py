#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""After a peer outage long enough for the users' back-off to reach its
maximum, catch-up starts within seconds of the peer's return.

B is stopped and USERS users change on A. Their syncs fail until each
user has failed FAILURES times, so its next try is
dovewarden_retry_max_interval (RETRY_MAX, plus jitter) away. Then B is
started again, and every user must be on B within CATCHUP seconds of its
start, much less than the back-off they wait in: while the outage lasts
the service tries the user that failed last every 5 s regardless of its
back-off, and the first success ends the back-off of all of them (the
scheduler's dovewarden_max_syncs keeps the pace). Before, they waited for
their back-off (up to RETRY_MAX * 1.25 after the peer's return).

While B is down, A starts at most two dsyncs per probe interval (5 s:
the probe and one other user): the other users' syncs are held (answered as failed without running, so they
still count their failures). Before, every retry of every user ran a
dsync in A's doveadm-server that could only fail."""

import math
import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import NUMBERED_USERS  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.tap import diag  # noqa: E402

RETRY_MIN = 1
RETRY_MAX = 30
# failures at 0, 1, 3, 7, 15, 31 s: the 6th one waits RETRY_MAX
FAILURES = 6
# B's start, at most one probe interval (5 s), and the syncs
CATCHUP = 15.0
USERS = NUMBERED_USERS[:10]
PROBE_SECS = 5
STARTED = re.compile(r"dovewarden: Debug: .*: Starting .* sync \(")
HELD = re.compile(r"dovewarden: Debug: .*: Not syncing now: the replica")

r = Runner(
    "test-outage-catchup",
    extra_conf="dovewarden_retry_min_interval = %ds\n"
               "dovewarden_retry_max_interval = %ds\n" % (RETRY_MIN,
                                                          RETRY_MAX))


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


@r.case("B down until the back-off is at its maximum, B back: every user "
        "caught up within %g s" % CATCHUP)
def _(pair):
    for u in USERS:
        pair.append("A", u, make_message("seed-" + u))
    pair.wait_converged(USERS, 30, "seeding")

    pair.stop_one("B")
    pair.mark_log("A")
    try:
        t_down = time.monotonic()
        for u in USERS:
            pair.append("A", u, make_message("outage-" + u))

        pair.wait_failed("A", USERS, FAILURES, RETRY_MAX * 3 + 30,
                         "every user failed %d times" % FAILURES)
        outage = time.monotonic() - t_down
        lines = pair.log_since_mark("A")
    finally:
        pair.start_one("B")
    t_up = time.monotonic()
    t = pair.wait_converged(USERS, CATCHUP, "after B's return")
    tried = sum(1 for line in lines if STARTED.search(line))
    held = sum(1 for line in lines if HELD.search(line))
    summary = ("outage %.1f s (every user failed %d times, back-off %d s): "
               "%d dsyncs run, %d syncs held; caught up %.1f s after B's "
               "start" % (outage, FAILURES, RETRY_MAX, tried, held, t))
    diag(summary)
    # the users' first tries (before the outage was seen), then two a
    # probe interval; before, each of the users' FAILURES tries ran
    expect(tried <= len(USERS) + 2 * (1 + math.ceil(outage / PROBE_SECS)),
           "A ran too many dsyncs while B was down: " + summary)
    expect(held > 0, "no sync was held while B was down: " + summary)
    st = pair.dw_users("A", "user*")
    expect(all(int(st[u]["failed"]) == 0 for u in USERS),
           "failures left after the catch-up: %r" % {
               u: st[u]["failed"] for u in USERS})
    expect(any("The replica answers again" in line
               for line in pair.log_since_mark("A")),
           "A's log does not say the back-off ended")
    return summary + " (%.1f s after it was up)" % (time.monotonic() - t_up)


if __name__ == "__main__":
    run(r)
