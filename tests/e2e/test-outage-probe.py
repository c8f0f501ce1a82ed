#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The outage ends within seconds of the peer's return, also when the
probe's dsync hangs.

B is stopped and USERS users change on A, with a long failure back-off
(dovewarden_retry_min_interval RETRY_MIN): each user's first sync fails,
and once its back-off has passed it fails again (held: the outage is
known), so every user waits at least 2 * RETRY_MIN more. While the
outage lasts, the service probes one of the users that failed last
every 5 s regardless of its back-off; the first success ends every
user's back-off.

Then every user's dsync lock is held (as a process of a previous run of
the server can hold it after a restart; dsync takes it on A here, the
side with the smaller host name) and B is started. Once a probe's dsync
waits for its lock, the other users' locks are released: they must be on
B within CATCHUP seconds, while the probe's dsync still waits, much less
than their back-off. Before, every probe asked for the user whose dsync
was still waiting (for up to dovewarden_lock_timeout, and then again),
and nothing caught up until the users' back-off ended."""

import fcntl
import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import NUMBERED_USERS  # noqa: E402
from dwtest.pair import side_path  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

RETRY_MIN = 20
# B's start, a probe interval (5 s) for the probe to find another user,
# and the syncs
CATCHUP = 15.0
PROBE_SECS = 5
USERS = NUMBERED_USERS[20:28]
TRYING = re.compile(r"Outage: trying (\S+) ")

r = Runner(
    "test-outage-probe",
    extra_conf="dovewarden_retry_min_interval = %ds\n"
               "dovewarden_retry_max_interval = %ds\n" % (RETRY_MIN,
                                                          RETRY_MIN * 16))


def hold_dsync_lock(pair, user):
    """Hold user's dsync lock on A (dsync locks on the side with the
    smaller host name only). Returns the fd to close."""
    home = side_path("A", os.path.join(pair.dw_dir, "A", "mail", user))
    st = os.stat(home)
    fd = os.open(os.path.join(home, ".dovecot-sync.lock"),
                 os.O_RDWR | os.O_CREAT, 0o600)
    os.fchown(fd, st.st_uid, st.st_gid)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    return fd


@r.case("B back while the probe's dsync waits for its user's lock: the "
        "others caught up within %g s" % CATCHUP)
def _(pair):
    for u in USERS:
        pair.append("A", u, make_message("seed-" + u))
    pair.wait_converged(USERS, 30, "seeding")

    pair.stop_one("B")
    locks = {}
    started = False
    try:
        t_down = time.monotonic()
        for u in USERS:
            pair.append("A", u, make_message("outage-" + u))

        pair.wait_failed("A", USERS, 2, RETRY_MIN * 3,
                         "every user failed twice")
        outage = time.monotonic() - t_down
        for u in USERS:
            locks[u] = hold_dsync_lock(pair, u)
        pair.start_one("B")
        started = True
    finally:
        if not started:
            for fd in locks.values():
                os.close(fd)
            pair.start_one("B")
    pair.mark_log("A")
    try:
        line = pair.wait_log("A", TRYING.search, PROBE_SECS * 2 + 5,
                             "a probe after B's start")
        probe = TRYING.search(line).group(1)
        pair.wait_log("A", lambda l: (": %s: Starting " % probe) in l,
                      PROBE_SECS + 5, "the probe's sync")
        # its dsync now waits for the lock
        time.sleep(1)
        others = [u for u in USERS if u != probe]
        for u in others:
            os.close(locks.pop(u))
        t = pair.wait_converged(others, CATCHUP,
                                "the users whose locks were released")
        tried = sorted(set(TRYING.findall(
            "\n".join(pair.log_since_mark("A")))))
    finally:
        for fd in locks.values():
            os.close(fd)
    # its dsync gets the lock now
    pair.wait_converged([probe], CATCHUP, "the probe's user")
    return ("outage %.1f s; %d users caught up %.1f s after their locks "
            "were released, while the first probe's (%s) dsync waited; "
            "probes: %s" % (outage, len(others), t, probe,
                            " ".join(tried)))


if __name__ == "__main__":
    run(r)
