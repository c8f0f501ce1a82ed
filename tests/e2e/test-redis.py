#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Two service instances share one queue in a real redis-server.

Both A's and B's dovewarden services use dovewarden_queue_backend=redis
with the same Redis: a change notified to either instance may be synced
by either one (dsync is two-way), each user by one instance at a time.

(a) A change notified only to A's instance is known to B's instance
    (its doveadm status reads the shared queue), and is replicated.
(b) A workload runs on both servers; in its middle, A's service is
    killed with SIGKILL while it holds a claim (a running sync). The
    restarted instance gives its previous run's claims back at start (or
    they expire, dovewarden_redis_claim_timeout = 3s), an instance syncs
    the user again, and once the workload stops every user is the same
    on both servers.
(c) A workload runs on both servers; in its middle, redis-server is
    stopped, the workload goes on for a few seconds (the services keep
    the notifications in memory), and Redis is started again. Every user
    ends the same on both servers, and the services logged the outage
    and the replay.
(d) With redis-server stopped, a change is made on A and A's service is
    killed with SIGKILL before Redis is back: the restarted instance
    still knows the change (its buffer is kept in state_dir), and it is
    replicated once Redis is started again. Before, that change waited
    for the user's next periodic full sync.
(e) A settle full sync that also carries a new change (a change on A
    made while a settle of the user was due) can't be verified: another
    settle follows once the user is quiet, and that one logs its verdict.
    Without it, what dsync left different among the changes made on both
    servers at about the same time stayed so until the user's next full
    sync (seen under the load of (c))."""

import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.tap import diag  # noqa: E402
from dwtest.load import MixedLoad  # noqa: E402
from dwtest.pair import own_pid  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

USERS = ["user%02d" % i for i in range(1, 11)]
PREP_TIMEOUT = 60.0
CONVERGE_TIMEOUT = 60.0
LOAD_SECS = 8.0
SETTLE_SECS = 2

os.environ["DW_E2E_REDIS"] = "1"
r = Runner(
    "test-redis",
    extra_conf="dovewarden_retry_min_interval = 1s\n"
               "dovewarden_retry_max_interval = 3s\n"
               "dovewarden_settle_delay = %ds\n" % SETTLE_SECS)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def fmt_diffs(diffs, limit=30):
    lines = []
    for u, d in sorted(diffs.items()):
        lines += ["  %s: %s" % (u, x) for x in d]
    return "\n".join(lines[:limit])


def run_load(pair, seed, during):
    """MixedLoad on both servers for LOAD_SECS; during(load) runs in this
    thread after a third of it. Returns the load."""
    load = MixedLoad(pair, USERS, seed, threads_per_side=2,
                     duration=LOAD_SECS)
    th = threading.Thread(target=load.run, daemon=True)
    th.start()
    time.sleep(LOAD_SECS / 3)
    during(load)
    th.join(LOAD_SECS + 180)
    expect(not th.is_alive(), "the workload did not stop")
    expect(not load.bad, "the workload sent bad commands: %r"
           % load.bad[:5])
    return load


def dump_queue(pair, users, max_users=3):
    """what the shared queue holds about each of users (its user hash and
    where it is queued), for a failure's diagnostics"""
    for u in sorted(users)[:max_users]:
        try:
            h = pair.redis.cmd("HGETALL", "dovewarden:u:" + u) or []
            where = [z for z in ("wait", "ready", "claims", "pending")
                     if pair.redis.cmd("ZSCORE", "dovewarden:" + z, u)
                     is not None]
        except (OSError, RuntimeError) as e:
            diag("----- %s in Redis: %s -----" % (u, e))
            continue
        fields = ["%s=%r" % (h[i], h[i + 1]) for i in range(0, len(h), 2)
                  if not h[i].startswith("st:")]
        diag("----- %s in Redis (in %s) -----\n  %s" % (
            u, ", ".join(where) or "no queue", " ".join(fields)))


def converge(pair, load, what):
    t, diffs = pair.converge_report(USERS, CONVERGE_TIMEOUT)
    if t is None:
        dump_queue(pair, diffs)
        pair.dump_user_logs(diffs)
        pair.dump_dsync_reasons(diffs)
    expect(t is not None, "A and B differ %.0f s after the workload (%s):\n"
           "%s" % (CONVERGE_TIMEOUT, what, fmt_diffs(diffs)))
    return "%d ops (%s); converged %.1f s after the load" % (
        load.total_ops(), load.summary(), t)


@r.case("prepare: both instances sync the users through one queue")
def _(pair):
    t = MixedLoad.prepare(pair, USERS, PREP_TIMEOUT)
    known = set(pair.redis.cmd("SMEMBERS", "dovewarden:users"))
    expect(set(USERS) <= known, "Redis does not know %s"
           % sorted(set(USERS) - known))
    return "prepared in %.1f s; Redis knows %d users" % (t, len(known))


@r.case("(a) a change notified to A's instance is in B's status")
def _(pair):
    user = "alice"
    pair.append("A", user, make_message("redis-shared"))
    pair.wait_converged(user, 20, "APPEND on A")
    st = wait_until(
        lambda: pair.dw_users("B", user).get(user), 10,
        "B's instance to show %s" % user)
    expect(st["success_sync"] not in ("", "0", 0, None, "-"),
           "B's status shows no successful sync of %s: %r" % (user, st))
    a = pair.dw_overview("A")
    b = pair.dw_overview("B")
    key = "Total number of known users"
    expect(a.get(key) is not None and a.get(key) == b.get(key),
           "the instances see different queues: A %r, B %r" % (a, b))
    return "B shows %s (last success %s); both see %s users" % (
        user, st["success_sync"], a.get(key))


def a_claims(pair, pid):
    """users claimed by A's instance of this PID (owner
    "a.test:<instance id>:<pid>:<random>", the PID as the instance sees
    itself: own_pid)"""
    owner_re = re.compile(r"a\.test:[0-9a-f]+:%d:" % pid)
    out = []
    for u in pair.redis.cmd("ZRANGE", "dovewarden:claims", 0, -1):
        owner = pair.redis.cmd("HGET", "dovewarden:u:" + u, "o")
        if owner and owner_re.match(owner):
            out.append(u)
    return out


@r.case("(b) kill -9 of A's instance while it syncs loses nothing")
def _(pair):
    info = {}

    def kill_during_claim(load):
        pid = pair.service_pid("A")
        info["own_pid"] = own_pid(pid)
        claimed = wait_until(lambda: a_claims(pair, info["own_pid"]), 20,
                             "A's instance to hold a claim",
                             interval=0.005)
        os.kill(pid, signal.SIGKILL)
        info["claimed"] = claimed
        info["pid"] = pid

    load = run_load(pair, "redis-kill", kill_during_claim)
    note = converge(pair, load, "after kill -9")
    # the killed instance's dsync processes may finish its syncs, so the
    # servers can be the same before its claims expire
    took_back = wait_until(
        lambda: [s for s in SIDES
                 if "Took back" in "\n".join(pair.log_since_mark(s))],
        15, "an instance to log that it took back the expired claims of "
        "the killed one (claimed: %r)" % info["claimed"])
    stale = a_claims(pair, info["own_pid"])
    expect(not stale, "claims of the killed instance are left: %r" % stale)
    return "killed %d holding %r; taken back by %s; %s" % (
        info["pid"], info["claimed"], "/".join(took_back), note)


@r.case("(c) a Redis restart during the workload loses nothing")
def _(pair):
    def restart(load):
        pair.redis.stop()
        time.sleep(3)
        pair.redis.start()

    load = run_load(pair, "redis-restart", restart)
    note = converge(pair, load, "after the Redis restart")
    logs = "\n".join(l for s in SIDES for l in pair.log_since_mark(s))
    expect("keeping notifications in memory" in logs,
           "no instance logged that it buffered notifications")
    expect("Connected again" in logs,
           "no instance logged that Redis came back")
    return note


@r.case("(d) a kill -9 while Redis is down loses no buffered change")
def _(pair):
    # no case before touched this user: nothing else is due for it
    user = "user20"
    pair.redis.stop()
    try:
        pair.append("A", user, make_message("buffered-at-kill"))
        wait_until(lambda: "keeping notifications in memory" in
                   "\n".join(pair.log_since_mark("A")), 10,
                   "A's instance to buffer the change")
        old = pair.service_pid("A")
        os.kill(old, signal.SIGKILL)
        new = wait_until(lambda: [p for p in pair.service_pids("A")
                                  if p != old], 15,
                         "A's service to be started again")
        # the new process runs before Redis is back
        time.sleep(1)
    finally:
        pair.redis.start()
    t = pair.wait_converged(user, 20, "the change buffered before the "
                            "kill, after Redis came back")
    logs = "\n".join(pair.log_since_mark("A"))
    expect("buffered while Redis was unreachable" in logs,
           "A's new instance did not log the buffer it loaded")
    return "killed %d, the new instance %r sent the change; converged " \
        "%.1f s after Redis came back" % (old, new, t)


def user_lines(pair, user, pattern):
    """(side, line) of both services' log lines since the case's mark
    about user that match pattern"""
    pat = re.compile(r" %s: %s" % (re.escape(user), pattern))
    return [(s, line) for s in SIDES for line in pair.log_since_mark(s)
            if pat.search(line)]


@r.case("(e) a settle that also carried new changes is followed by a "
        "verified one")
def _(pair):
    # no case before touched this user
    user = "user21"
    uk = "dovewarden:u:" + user
    pair.append("A", user, make_message("settle-seed"))
    pair.wait_converged(user, 20, "the seeding")

    def quiet():
        now = int(pair.redis.cmd("TIME")[0])
        return (all(pair.service_idle(s, user) for s in SIDES) and
                pair.redis.cmd("HGET", uk, "sf") in (None, "", "0") and
                now - int(pair.redis.cmd("HGET", uk, "lct") or 0) >
                SETTLE_SECS)
    # with no client change within the settle delay, the new one alone
    # is not settled
    wait_until(quiet, 20, "the seeding's syncs and settles to be over")
    pids = [pair.service_pid(s) for s in SIDES]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        # a new change on A, while a settle of the user is due (as if
        # both servers had changed it a while ago): the sync that
        # carries the change is that settle
        pair.append("A", user, make_message("settle-carried"))
        past = int(pair.redis.cmd("TIME")[0]) - 5
        pair.redis.cmd("HSET", uk, "sf", past, "sl", past)
        # as if B's instance had run every sync of the user so far: A's
        # has no dsync state of it (the settle is no less a settle)
        pair.redis.cmd("HDEL", uk, "st:a.test")
        # the settle that carries it never logs a verdict: any verdict
        # from here on is a later settle's
        for s in SIDES:
            pair.mark_log(s)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    pair.wait_converged(user, 20, "the change made while a settle was due")
    carried = wait_until(
        lambda: user_lines(pair, user, r"Starting settle full sync "
                           r"\(priority high\)"), 20,
        "the settle full sync that carries the new change")
    # dsync may leave a difference in what it settles together with new
    # changes, and a verification pass can't tell (the new changes move
    # the state): another settle follows once the user is quiet
    verdict = wait_until(
        lambda: user_lines(pair, user, r"Settle: the servers "), 20,
        "a quiet settle with a verdict after the one that carried the "
        "change (%s)" % carried[0][1].strip())
    pair.wait_converged(user, 20, "after the settles")
    return "carried by %s's settle, then %s" % (
        carried[0][0], verdict[0][1].split(": ", 3)[-1])


run(r)
