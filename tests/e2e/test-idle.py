#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The service installed but not configured: A has no dovewarden_replica
(nor mail_replica), as on a server where the package was just installed.

(a) A's service says once that it is idle, never sweeps the userdb and
    writes nothing in state_dir, not even when it stops; a change on A
    stays on A. B, configured as usual, sweeps and saves its queue: the
    same checks fail there.
(b) A user whose userdb gives a replica is still replicated from A."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message, msg_hash  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

IDLE_LINE = "idle (no userdb sweep, no queue state written)"
SWEEP_LINE = "Userdb sweep started"

r = Runner("test-idle", side_conf={"A": "dovewarden_replica =\n"})


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def state_files(pair, side):
    d = os.path.join(pair.dw_dir, side, "state")
    return sorted(f for f in os.listdir(d) if f.startswith("dovewarden"))


def whole_log(pair, side):
    with open(pair.log_path(side), "rb") as f:
        return f.read().decode("utf-8", "replace").splitlines()


@r.case("(a) no replica: idle, no sweep, nothing in state_dir")
def _(pair):
    # logged at the start, before the case's log mark
    wait_until(lambda: any(IDLE_LINE in l for l in whole_log(pair, "A")),
               10, "A's service to say that it is idle")
    wait_until(lambda: any(SWEEP_LINE in l for l in whole_log(pair, "B")),
               10, "B's service to sweep the userdb")
    user = "user36"
    msg = make_message("idle-a")
    pair.append("A", user, msg)
    # long enough for the settle delay and a sweep
    time.sleep(3)
    expect(not pair.inbox_dir_exists("B", user) or
           msg_hash(msg) not in pair.snapshot("B", user).hashes(),
           "a change on the idle A reached B")
    pair.stop_one("A")
    pair.stop_one("B")
    try:
        log = whole_log(pair, "A")
        expect(sum(IDLE_LINE in l for l in log) == 1,
               "A did not say once that it is idle")
        sweeps = [l for l in log if SWEEP_LINE in l]
        expect(not sweeps, "the idle A swept the userdb: %r" % sweeps)
        expect(state_files(pair, "A") == [],
               "the idle A wrote %r in state_dir" % state_files(pair, "A"))
        expect(state_files(pair, "B") != [],
               "B (with a replica) wrote nothing in state_dir")
    finally:
        pair.start_one("A")
        pair.start_one("B")
    return "A idle; B wrote %s" % ", ".join(state_files(pair, "B"))


@r.case("(b) a replica from the userdb still replicates")
def _(pair):
    user = "user37"
    pair.set_userdb_fields("A", {user: "dovewarden_replica=tcp:127.0.0.1:%d"
                                       % pair.port("B", "doveadm")})
    pair.append("A", user, make_message("idle-b"))
    pair.wait_converged(user, 20, "the user with a replica in the userdb")
    return "%s replicated by the idle service" % user


if __name__ == "__main__":
    run(r)
