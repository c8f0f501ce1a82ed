#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""What the services read from a shared Redis is not trusted.

Both services use the Redis queue backend. Names and states that no
instance writes are put into Redis, as a damaged database or another
Redis client could: an empty member, a name with LF, one that is not
UTF-8 and one too long in the users set, and a due (ready) claimable
entry of the empty user. doveadm dovewarden status '*', replicate '*'
and the pops of both instances must skip them (logged, never an
assertion): the services keep their PIDs and a following change still
replicates.

A sync wait is answered only by a sync that really finished: with B
down (every sync of the user fails), a client that PUBLISHes fake "ok"
results on <prefix>done does not end an APPEND's wait before its
dovewarden_sync_wait timeout."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

P = "dovewarden:"
BAD_NAMES = [b"", b"line\nfeed", b"\xff\xfe", b"x" * 2000]
WAIT_SECS = 6

os.environ["DW_E2E_REDIS"] = "1"
r = Runner(
    "test-redis-hostile",
    extra_conf="dovewarden_retry_min_interval = 1s\n"
               "dovewarden_retry_max_interval = 3s\n"
               "dovewarden_sync_wait = %ds\n" % WAIT_SECS)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


@r.case("invalid names in Redis: status, replicate '*', pops survive")
def _(pair):
    user = "user01"
    pair.append("A", user, make_message("hostile-prep"))
    pair.wait_converged(user, 20, "first APPEND")
    pids = {s: pair.service_pid(s) for s in SIDES}
    for name in BAD_NAMES:
        pair.redis.cmd("SADD", P + "users", name)
    # a claimable entry of the empty user, due now
    pair.redis.cmd("HSET", P + "u:", "seq", "1", "p", "2", "k", "0",
                   "o", "")
    pair.redis.cmd("ZADD", P + "ready", "0", "")

    for s in SIDES:
        pair.dw(s, "status", "*", fmt="json")
        pair.dw(s, "replicate", "*")
    wait_until(lambda: pair.redis.cmd("ZSCORE", P + "ready", "") is None,
               10, "the empty user's ready entry to be popped")
    pair.append("A", user, make_message("hostile-after"))
    pair.wait_converged(user, 20, "APPEND after the invalid names")
    after = {s: pair.service_pid(s) for s in SIDES}
    expect(after == pids, "a service restarted: %r -> %r" % (pids, after))
    logged = [line for s in SIDES for line in pair.log_since_mark(s)
              if "invalid" in line and "read from Redis" in line]
    expect(logged, "no warning about the invalid names")
    expect(not any("Panic" in line or "assertion" in line.lower()
                   for s in SIDES for line in pair.log_since_mark(s)),
           "a panic in the log")
    return "%d warnings, services kept PIDs %r" % (len(logged), after)


@r.case("a PUBLISHed fake result does not answer a sync wait")
def _(pair):
    user = "user02"
    pair.append("A", user, make_message("forge-prep"))
    pair.wait_converged(user, 20, "first APPEND")
    pair.stop_one("B")
    took = {}

    def append():
        t0 = time.monotonic()
        pair.append("A", user, make_message("forge-wait"))
        took["secs"] = time.monotonic() - t0

    th = threading.Thread(target=append)
    th.start()
    try:
        time.sleep(1.0)
        for _ in range(10):
            for seq in list(range(0, 40)) + [10 ** 9]:
                pair.redis.cmd("PUBLISH", P + "done",
                               "ok %d %s" % (seq, user))
            time.sleep(0.2)
        th.join(WAIT_SECS + 10)
    finally:
        pair.start_one("B")
    expect("secs" in took, "the APPEND did not finish")
    expect(took["secs"] >= WAIT_SECS - 0.5,
           "the wait was answered after %.1f s, before its %d s timeout, "
           "by a fake result" % (took["secs"], WAIT_SECS))
    pair.wait_converged(user, 30, "APPEND once B is back")
    return "APPEND waited %.1f s (timeout %d s) despite fake results" % (
        took["secs"], WAIT_SECS)


run(r)
