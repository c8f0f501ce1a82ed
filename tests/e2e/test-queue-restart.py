#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Pending replication work survives a restart of the whole instance.

B is stopped, several users change on A, their syncs fail and back off.
Then all of A (master and service) is restarted while B is still down:
the service saves its queue at shutdown and loads it at start, so
`doveadm dovewarden status '*'` on the new A lists the users before B is
back. Once B is started, every user converges without any further change
on A: the plugin does not notify again, only the saved queue knows."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

RETRY_MAX = 3
CONVERGE_TIMEOUT = 30.0
USERS = ["user%02d" % i for i in range(1, 7)]

r = Runner(
    "test-queue-restart",
    extra_conf="dovewarden_retry_min_interval = 1s\n"
               "dovewarden_retry_max_interval = %ds" % RETRY_MAX)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def seed(pair, users, tag):
    for u in users:
        pair.append("A", u, make_message("%s-%s" % (tag, u)))
    pair.wait_converged(users, 20, "seeding")


@r.case("restart A with pending work while B is down: all users converge")
def _(pair):
    seed(pair, USERS, "seed")
    pair.stop_one("B")
    try:
        hashes = {}
        for i, u in enumerate(USERS):
            m = pair.imap("A", u)
            try:
                msg = make_message("pending-" + u)
                pair.append("A", u, msg, conn=m)
                hashes[u] = msg_hash(msg)
                check_ok(m.select("INBOX"), "SELECT")
                check_ok(m.store("1", "+FLAGS", "\\Flagged"), "STORE")
                if i % 2 == 0:
                    check_ok(m.create("Pending-" + u), "CREATE")
            finally:
                m.logout()
        # every user's sync has failed at least once against the dead B
        wait_until(
            lambda: all(int(pair.dw_users("A", u).get(u, {})
                            .get("failed", 0)) >= 1 for u in USERS),
            15, "a failed sync of every user on A")
        before = pair.dw_users("A")

        pair.stop_one("A")
        state = os.path.join(pair.dw_dir, "A", "state", "dovewarden.db")
        expect(os.path.exists(state), "no state file %s after the stop"
               % state)
        pair.mark_log("A")
        pair.start_one("A")
        pair.service_pid("A")
        loaded = pair.wait_log(
            "A", lambda l: "dovewarden: Info: Loaded " in l, 10,
            "the service's 'Loaded ... users' line")
        # the state file names its writer, and the log repeats it
        expect("(written by dovewarden " in loaded, "the 'Loaded' line "
               "does not name the state file's writer: %s" % loaded)
        after = pair.dw_users("A")
        missing = [u for u in USERS if u not in after]
        expect(not missing, "after the restart A's service does not know "
               "%s (before: %s; log: %s)" % (missing, sorted(before),
                                              loaded))
        idle = [u for u in USERS if after[u]["priority"] == "none"]
        expect(not idle, "after the restart A's service has no pending "
               "sync for %s (priority none)" % idle)
    finally:
        pair.start_one("B")
    try:
        t = pair.wait_converged(USERS, CONVERGE_TIMEOUT,
                                "after the restart of A and the start of B")
    except AssertionError as e:
        st = pair.dw_users("A")
        started = [u for u in USERS if any(
            "dovewarden: Debug: %s: Starting " % u in l
            for l in pair.log_since_mark("A"))]
        raise AssertionError("%s\nA's status now: %s\nsyncs started on A "
                             "since its restart: %s" % (
                                 e, "; ".join(
                                     "%s %s failed=%s next=%s" % (
                                         u, st[u]["priority"],
                                         st[u]["failed"], st[u]["next_sync"])
                                     for u in USERS if u in st),
                                 started or "none"))
    for u in USERS:
        b = pair.snapshot("B", u)
        expect(hashes[u] in b.hashes(), "%s: the pending message is not "
               "on B" % u)
    prios = ", ".join("%s %s/%s" % (u, after[u]["priority"],
                                    after[u]["failed"]) for u in USERS)
    return ("%s; converged %.2f s after B started; state after restart "
            "(priority/failed): %s" % (loaded.split("Info: ")[-1], t, prios))


if __name__ == "__main__":
    run(r)
