#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Switching from the built-in queue to Redis keeps the queue.

The pair runs with the built-in queue: users are synced (each gets a
dsync state), then B is stopped and more mail arrives on A (pending
work). A is stopped (its service saves dovewarden.db), both servers are
switched to dovewarden_queue_backend = redis with a fresh redis-server,
and started again. A's service must import its state file into Redis
(a user untouched since keeps its dsync state and last syncs without any
sync in Redis), rename it to dovewarden.db.imported, and the pending
work must be replicated: both servers end the same."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.pair import RedisServer  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

USERS = ["user%02d" % i for i in range(1, 7)]
# synced before the switch, then left alone
IDLE_USER = "user07"

r = Runner(
    "redis-import", need_redis=True,
    extra_conf="dovewarden_retry_min_interval = 1s\n"
               "dovewarden_retry_max_interval = 3s\n")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


@r.case("the built-in queue's state is imported when switching to Redis")
def _(pair):
    state = os.path.join(pair.dw_dir, "A", "state", "dovewarden.db")
    for u in USERS + [IDLE_USER]:
        pair.append("A", u, make_message("before the switch"))
    pair.wait_converged(USERS + [IDLE_USER], 20, "before the switch")
    pair.stop_one("B")
    for u in USERS:
        pair.append("A", u, make_message("pending at the switch"))
    time.sleep(0.5)
    pair.stop_one("A")
    expect(os.path.exists(state), "A's service saved no %s" % state)

    redis = RedisServer()
    redis.start(fresh=True)
    try:
        for side in SIDES:
            conf = os.path.join(pair.dw_dir, side, "dovecot.conf")
            with open(conf, "a") as f:
                f.write("\n" + redis.conf())
        pair.mark_log("A")
        pair.start_one("A")
        pair.start_one("B")
        wait_until(
            lambda: any("Imported the built-in queue's state" in l
                        for l in pair.log_since_mark("A")),
            20, "A's service to import its state file")
        line = [l for l in pair.log_since_mark("A")
                if "Imported the built-in queue's state" in l][0]
        expect(not os.path.exists(state) and
               os.path.exists(state + ".imported"),
               "%s was not renamed to .imported" % state)
        h = redis.cmd("HGETALL", "dovewarden:u:" + IDLE_USER) or []
        h = dict(zip(h[0::2], h[1::2]))
        # A's dsync state, kept under A's host name
        expect(h.get("st:a.test") and int(h.get("lfull", "0")) > 0 and
               h.get("seq") == "0",
               "%s did not keep its dsync state and last full sync "
               "without a sync in Redis: %r" % (IDLE_USER, h))
        t = pair.wait_converged(USERS + [IDLE_USER], 40,
                                "after the switch to Redis")
    finally:
        pair.stop()
        redis.stop()
    return "%s; converged %.1f s after the start" % (
        line.split("dovewarden: Info: ")[-1], t)


run(r)
