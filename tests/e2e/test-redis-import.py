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
work must be replicated: both servers end the same.

The same for Dovecot 2.3's replicator.db (written here from A's
dovewarden.db): imported into Redis with the dsync states, renamed to
replicator.db.imported, a line that is not valid kept aside, and the
first sync of an imported user incremental."""

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


def start_with_redis(pair, redis, what, log_text):
    """Start both servers with the Redis backend and wait for A's import
    (its log line with log_text). Returns A's log since the start."""
    for side in SIDES:
        conf = os.path.join(pair.dw_dir, side, "dovecot.conf")
        with open(conf, "a") as f:
            f.write("\n" + redis.conf())
    pair.mark_log("A")
    pair.start_one("A")
    pair.start_one("B")
    wait_until(lambda: any(log_text in l for l in pair.log_since_mark("A")),
               20, "A's service to import " + what)
    return pair.log_since_mark("A")


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
        log = start_with_redis(pair, redis, "its state file",
                               "Imported the built-in queue's state")
        line = [l for l in log
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


def write_replicator_db(state, path):
    """Write A's queue state (dovewarden.db) as Dovecot 2.3's replicator
    would have, with a line that is not valid, and remove the state"""
    prio = {"none": 0, "low": 1, "high": 2, "sync": 3}
    lines = []
    with open(state) as f:
        for line in f.read().splitlines()[1:]:
            a = line.split("\t")
            # user prio last_update fast full failed state successful
            lines.append("\t".join([a[0], str(prio[a[1]]), a[2], a[3], a[4],
                                    "1" if a[6] != "0" else "0", a[9],
                                    a[5]]))
    lines.append("not\ta\tvalid\tline")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    for suffix in ("", ".journal", ".journal.old"):
        if os.path.exists(state + suffix):
            os.unlink(state + suffix)


@r.case("Dovecot 2.3's replicator.db is imported into Redis")
def _(pair):
    pair.start()
    state_dir = os.path.join(pair.dw_dir, "A", "state")
    state = os.path.join(state_dir, "dovewarden.db")
    db = os.path.join(state_dir, "replicator.db")
    for u in USERS + [IDLE_USER]:
        pair.append("A", u, make_message("before the migration"))
    pair.wait_converged(USERS + [IDLE_USER], 20, "before the migration")
    # not pair.stop(): the pair must stay marked started, so that the
    # final stop stops the servers started again below
    pair.stop_one("A")
    pair.stop_one("B")
    write_replicator_db(state, db)
    # B imports nothing: no race for the users with A's import
    b_state = os.path.join(pair.dw_dir, "B", "state", "dovewarden.db")
    for suffix in ("", ".journal", ".journal.old"):
        if os.path.exists(b_state + suffix):
            os.unlink(b_state + suffix)
    with open(db) as f:
        db_lines = f.read().splitlines()
    # every user the sweep found, and the line that is not valid
    n_users = len(db_lines) - 1
    idle_state = [l.split("\t")[6] for l in db_lines
                  if l.startswith(IDLE_USER + "\t")][0]
    expect(len(idle_state) > 12, "%s has no dsync state" % IDLE_USER)

    redis = RedisServer()
    redis.start(fresh=True)
    try:
        log = start_with_redis(pair, redis, "replicator.db",
                               "replicator.db into Redis")
        line = [l for l in log if "replicator.db into Redis" in l][0]
        expect("Imported %d users from " % n_users in line,
               "not every user imported: %s" % line)
        expect(any("Skipped 1 lines that are not valid" in l for l in log),
               "the line that is not valid was not reported")
        expect(os.path.exists(state + ".quarantine"),
               "the line that is not valid was not kept")
        expect(not os.path.exists(db) and os.path.exists(db + ".imported"),
               "%s was not renamed to .imported" % db)
        h = redis.cmd("HGETALL", "dovewarden:u:" + IDLE_USER) or []
        h = dict(zip(h[0::2], h[1::2]))
        expect(h.get("st:a.test") == idle_state and
               int(h.get("lfull", "0")) > 0 and h.get("seq") == "0",
               "%s did not keep its dsync state and last full sync "
               "without a sync in Redis: %r" % (IDLE_USER, h))
        # the first sync after the migration is incremental
        pair.mark_log("A")
        pair.append("A", IDLE_USER, make_message("after the migration"))
        t = pair.wait_converged([IDLE_USER], 20, "after the migration")
        syncs = [l for l in pair.log_since_mark("A")
                 if IDLE_USER + ": Starting " in l]
        expect(syncs and all("incremental sync" in l for l in syncs),
               "%s's first sync was not incremental: %r" %
               (IDLE_USER, syncs))
    finally:
        pair.stop()
        redis.stop()
    return "%s; converged %.1f s after the change" % (
        line.split("dovewarden: Info: ")[-1], t)


run(r)
