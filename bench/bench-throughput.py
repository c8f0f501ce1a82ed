#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Replication throughput against bare doveadm sync, in one run on one
testenv/pair.

Throughput: --users users (default 200, added to both userdbs as
tp001...), each primed with a message and replicated, each with an IMAP
session open on A. Then every session APPENDs one message at once:

  floor    Dovecot without dovewarden (the pair restarted without the
           plugin, the notify plugin or the service): the changes are
           synced by this script through A's doveadm-server socket,
           --parallel at a time (default 10, dovewarden_max_syncs), with
           the dsync state of a bare sync run just before (so they are
           incremental syncs, as the service's are). Timed from the first
           APPEND until every message is visible on B (polled over IMAP
           as for the service).
  service  the pair restarted with dovewarden; a first burst of the same
           kind, not timed, lets the services follow up the states that
           a restart leaves stale. Then timed from the first APPEND until
           every message is visible on B over IMAP.

Each round (--rounds, default 4) runs both phases, the floor first in
odd rounds and the service first in even ones. Printed: users/s of both
and their ratio; the CPU seconds of every process of both Dovecot
instances (the services included) from the first APPEND until the last
message was visible, their ratio and the processes that took it; the
syncs each server's service started for the burst (until it was idle
again after the settle delay), by kind, from its debug log.

Burst cost (--big-folders x --big-messages, default 100 x 1,000; 0
skips): a user with that many folders and messages, replicated, and
then one new message in one folder:
  bare     Dovecot without dovewarden, one incremental doveadm sync of
           the change (the median of --big-runs changes)
  service  with dovewarden (after one change not counted, as above): the
           dsync seconds the services spent on one such change, from its
           APPEND until both were idle after the settle delay (the
           durations of their "... sync ... finished after" lines)

Run inside the chroot, as root, with the dovewarden build installed:
    DW_DIR=/srv/dt-t DW_PORT_OFFSET=1300 \\
        python3 /src/dovewarden/bench/bench-throughput.py [--users N]
It starts the pair, restarts it between the phases and stops it when
it ends."""

import argparse
import collections
import concurrent.futures
import os
import re
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dwtest.clients import (  # noqa: E402
    check_ok, imap_quote, make_message, message_id)
from dwtest.common import (  # noqa: E402
    SIDES, Skip, hms_secs, time_secs, wait_until)
from dwtest.cpu import cpu_between, tree_cpu  # noqa: E402
from dwtest.load import MANY_SESSIONS_CONF, close_sessions  # noqa: E402
from dwtest.pair import Pair, conf_by_series  # noqa: E402

_FINISHED = re.compile(r"dovewarden: Debug: ([^:]+): (Settle full|Full|"
                       r"Incremental|Normal) sync \(priority \w+\) "
                       r"finished.* after (\d+\.\d+) secs")
_STARTED = re.compile(r"dovewarden: Debug: ([^:]+): Starting (settle full|"
                      r"full|incremental|normal) sync ")
_VERIFY = re.compile(r"dovewarden: Debug: ([^:]+): (Settle|Verification): ")
_FOLLOWUP = re.compile(r"dovewarden: Debug: ([^:]+): Follow-up incremental ")

# Dovecot without dovewarden, for the floor (as "none" in
# bench-plugin-cpu): no plugin, no notify plugin, no service
_NO_SERVICE = "service dovewarden {\n  process_min_avail = 0\n}\n"
PLAIN_CONF = conf_by_series(
    _NO_SERVICE + "mail_plugins {\n  notify = no\n}\n",
    _NO_SERVICE + "mail_plugins =\n")


# One timed burst: seconds until every message was on B, CPU seconds of
# both instances meanwhile, and those by process ({"A imap": secs, ...})
Burst = collections.namedtuple("Burst", "secs cpu cpu_by_name")


def log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


def userdb_lines(users):
    return ["%s:{PLAIN}pass::::::" % u for u in users]


def add_users(pair, users):
    """Add users to both userdbs; restart() adds them again"""
    if not hasattr(pair, "bench_users"):
        pair.bench_users = []
    pair.add_userdb_lines(userdb_lines(users))
    pair.bench_users += users


class Doveadm:
    """A bare sync through A's doveadm-server socket, as the service runs
    it (dovewarden-doveadm.c)."""

    def __init__(self, pair):
        self.path = os.path.join(pair.dw_dir, "A", "run", "doveadm-server")
        self.dest = "tcp:127.0.0.1:%d" % pair.port("B", "doveadm")

    def sync(self, user, state="", full=False):
        """Returns (seconds, new state); raises on failure."""
        t0 = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(600)
        try:
            s.connect(self.path)
            f = s.makefile("rwb")
            f.write(b"VERSION\tdoveadm-server\t1\t0\n")
            f.flush()
            line = f.readline()
            if line != b"+\n":
                raise AssertionError("doveadm handshake: %r" % line)
            args = ["", user, "sync", "-N", "-l", "30"]
            if full:
                args.append("-f")
            args += ["-s", state, self.dest]
            f.write(("\t".join(args) + "\n").encode())
            f.flush()
            out = f.readline().decode().rstrip("\n").split("\t")[0]
            status = f.readline().decode().rstrip("\n")
            if status != "+":
                raise AssertionError("sync of %s: %s" % (user, status))
            return time.monotonic() - t0, out
        finally:
            s.close()


def restart(pair, plain):
    """Restart both servers (their mail, state and logs kept), without
    dovewarden if plain"""
    pair.no_plugin = plain
    pair.extra_conf = MANY_SESSIONS_CONF + (PLAIN_CONF if plain else "")
    for s in SIDES:
        pair.stop_one(s)
        # a new configuration and userdb: the bench's users again
        pair.gen_one(s)
        pair.add_userdb_lines(userdb_lines(pair.bench_users), [s])
        pair.start_one(s)


def pair_cpu(pair):
    return {s: tree_cpu(pair.master_pid(s)) for s in SIDES}


def timed_burst(pair, t0, cpu0, users, msgs):
    """Wait until every message is visible on B: the Burst since t0 and
    the pair_cpu() snapshot cpu0"""
    t = visible_on_b(pair, users, msgs, 600) - t0
    cpu1 = pair_cpu(pair)
    by_name = {}
    for s in SIDES:
        for name, secs in cpu_between(cpu0[s], cpu1[s]).items():
            by_name["%s %s" % (s, name)] = secs
    return Burst(t, sum(by_name.values()), by_name)


def fmt_cpu(by_name):
    """The processes that took 2% or more, busiest first"""
    total = sum(by_name.values()) or 1.0
    return ", ".join("%s %.2f" % (k, v) for k, v in
                     sorted(by_name.items(), key=lambda kv: -kv[1])
                     if v >= 0.02 * total)


def side_idle(pair, side, horizon):
    """Nothing pending or running on side, and no user due (a settle)
    within horizon seconds."""
    if not pair.queues_empty(side):
        return False
    for st in pair.dw_users(side).values():
        secs = hms_secs(st["next_sync"])
        if st["priority"] != "none" or (secs is not None and
                                        secs <= horizon):
            return False
    return True


def wait_idle(pair, settle, what, timeout=600):
    """Both services idle, with no settle due soon, in three checks in a
    row at least settle + 3 s apart in all."""
    end = time.monotonic() + timeout
    since, polls = None, 0
    while time.monotonic() < end:
        if all(side_idle(pair, s, settle + 5) for s in SIDES):
            since = since or time.monotonic()
            polls += 1
            if polls >= 3 and time.monotonic() - since >= settle + 3:
                return
        else:
            since, polls = None, 0
        time.sleep(0.5)
    raise AssertionError("services not idle after %d s: %s" % (timeout,
                                                               what))


def log_syncs(pair, only_user=None):
    """Syncs started and their dsync seconds since the log marks, per
    side: {side: {"kinds": {kind: n}, "secs": float, "verify": n,
    "users": set}}."""
    res = {}
    for s in SIDES:
        r = {"kinds": {}, "secs": 0.0, "verify": 0, "repaired": 0,
             "followup": 0, "users": set()}
        for line in pair.log_since_mark(s):
            m = _STARTED.search(line)
            if m and (only_user is None or m.group(1) == only_user):
                r["kinds"][m.group(2)] = r["kinds"].get(m.group(2), 0) + 1
                r["users"].add(m.group(1))
            m = _FINISHED.search(line)
            if m and (only_user is None or m.group(1) == only_user):
                r["secs"] += float(m.group(3))
            m = _FOLLOWUP.search(line)
            if m and (only_user is None or m.group(1) == only_user):
                r["followup"] += 1
            m = _VERIFY.search(line)
            if m and (only_user is None or m.group(1) == only_user):
                r["verify"] += 1
                if "repaired" in line:
                    r["repaired"] += 1
        res[s] = r
    return res


def fmt_syncs(r):
    kinds = ", ".join("%s %d" % (k, n) for k, n in sorted(r["kinds"].items()))
    return ("%s; follow-up passes %d; users %d, verification/settle "
            "verdicts %d (repaired %d)" % (
                kinds or "none", r["followup"], len(r["users"]), r["verify"],
                r["repaired"]))


def append_all(pair, sessions, tag, done=None):
    """APPEND one message in every session at once. done(user) is called
    after each APPEND. Returns {user: message}."""
    msgs = {u: make_message("%s-%s" % (tag, u)) for u in sessions}

    def one(u):
        pair.append("A", u, msgs[u], conn=sessions[u])
        if done:
            done(u)
    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        list(ex.map(one, sessions))
    return msgs


def visible_on_b(pair, users, msgs, timeout):
    """Poll B (one connection per worker) until every message is there;
    returns when the last one was seen."""
    left = set(users)
    lock = threading.Lock()
    last = [time.monotonic()]
    end = time.monotonic() + timeout

    def worker(part):
        conns = {}
        try:
            todo = list(part)
            while todo and time.monotonic() < end:
                nxt = []
                for u in todo:
                    m = conns.get(u)
                    if m is None:
                        m = conns[u] = pair.imap("B", u)
                        check_ok(m.select("INBOX"), "SELECT")
                    m.noop()
                    typ, data = m.uid("SEARCH", "HEADER", "Message-ID",
                                      '"<%s>"' % message_id(msgs[u]))
                    if typ == "OK" and data and data[0].split():
                        with lock:
                            left.discard(u)
                            last[0] = time.monotonic()
                    else:
                        nxt.append(u)
                todo = nxt
                if todo:
                    time.sleep(0.2)
        finally:
            close_sessions(list(conns.items()))
    parts = [users[i::8] for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(worker, parts))
    if left:
        raise AssertionError("%d messages not on B after %d s: %s" % (
            len(left), timeout, sorted(left)[:5]))
    return last[0]


def open_sessions(pair, users):
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        conns = list(ex.map(lambda u: pair.imap("A", u), users))
    return dict(zip(users, conns))


def floor_burst(pair, dadm, users, args, tag):
    """Dovecot without dovewarden: the Burst from the first APPEND"""
    restart(pair, True)
    sessions = open_sessions(pair, users)
    try:
        states = {}
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as ex:
            for u, (_t, st) in zip(users, ex.map(
                    lambda u: dadm.sync(u), users)):
                states[u] = st
        work = concurrent.futures.ThreadPoolExecutor(args.parallel)
        futs = []
        cpu0 = pair_cpu(pair)
        t0 = time.monotonic()
        msgs = append_all(pair, sessions, tag,
                          lambda u: futs.append(work.submit(
                              dadm.sync, u, states[u])))
        # the same IMAP polling of B as for the service
        burst = timed_burst(pair, t0, cpu0, users, msgs)
        for f in futs:
            f.result()
        work.shutdown()
    finally:
        close_sessions(list(sessions.items()))
    return burst


def service_burst(pair, users, settle, tag):
    """With dovewarden: the Burst from the first APPEND, and the syncs
    the services ran for it (log_syncs()); a first burst, not timed,
    lets the services follow up the states that the restart left
    stale"""
    restart(pair, False)
    sessions = open_sessions(pair, users)
    try:
        msgs = append_all(pair, sessions, tag + "-warm")
        visible_on_b(pair, users, msgs, 600)
        wait_idle(pair, settle, "after the warm-up burst")
        for s in SIDES:
            pair.mark_log(s)
        cpu0 = pair_cpu(pair)
        t0 = time.monotonic()
        msgs = append_all(pair, sessions, tag)
        burst = timed_burst(pair, t0, cpu0, users, msgs)
        wait_idle(pair, settle, "after the service's burst")
    finally:
        close_sessions(list(sessions.items()))
    return burst, log_syncs(pair)


def throughput(pair, dadm, users, settle, args):
    res = {}
    for rnd in range(args.rounds):
        # the phases alternate which goes first (a warmer cache)
        if rnd % 2 == 1:
            svc, syncs = service_burst(pair, users, settle, "svc%d" % rnd)
        floor = floor_burst(pair, dadm, users, args, "floor%d" % rnd)
        if rnd % 2 == 0:
            svc, syncs = service_burst(pair, users, settle, "svc%d" % rnd)
        res.setdefault("floor", []).append(floor)
        res.setdefault("service", []).append(svc)
        res.setdefault("syncs", []).append(syncs)
        log("round %d: floor %.1f s (CPU %.1f s), service %.1f s "
            "(CPU %.1f s)" % (rnd + 1, floor.secs, floor.cpu, svc.secs,
                              svc.cpu))
    return res


def make_big_user(pair, user, folders, messages):
    """folders folders (F001...) of messages messages each on A: one is
    APPENDed, the others are copies of it."""
    m = pair.imap("A", user)
    try:
        check_ok(m.create("F001"), "CREATE")
        for i in range(messages):
            pair.append("A", user, make_message("big-%d" % i), "F001",
                        conn=m)
        check_ok(m.select("F001"), "SELECT")
        for i in range(2, folders + 1):
            box = "F%03d" % i
            check_ok(m.create(box), "CREATE")
            check_ok(m.copy("1:*", box), "COPY")
    finally:
        m.logout()


def big_counts(pair, side, user, folders):
    m = pair.imap(side, user)
    try:
        n = 0
        for i in range(1, folders + 1):
            typ, data = m.status("F%03d" % i, "(MESSAGES)")
            if typ != "OK":
                return -1
            n += int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
        return n
    finally:
        m.logout()


def burst_cost(pair, dadm, settle, args):
    user = "tpbig"
    if pair.no_plugin:
        # the last round's floor ran last
        restart(pair, False)
    add_users(pair, [user])
    t0 = time.monotonic()
    make_big_user(pair, user, args.big_folders, args.big_messages)
    want = args.big_folders * args.big_messages
    wait_until(lambda: big_counts(pair, "B", user, args.big_folders) == want,
               1800, "the big user on B", interval=2)
    log("big user created and replicated in %.0f s" % (
        time.monotonic() - t0))
    wait_idle(pair, settle, "after the big user", 1800)
    box = "F%03d" % (args.big_folders // 2 + 1)

    bare = []
    restart(pair, True)
    _t, state = dadm.sync(user)
    for i in range(args.big_runs):
        pair.append("A", user, make_message("bare-%d" % i), box)
        secs, state = dadm.sync(user, state)
        bare.append(secs)
    full, _st = dadm.sync(user, state, full=True)
    restart(pair, False)
    # not counted: the restart left the services' states stale
    pair.append("A", user, make_message("svc-warm"), box)
    wait_idle(pair, settle, "after the warm-up change", 600)

    svc = []
    kinds = []
    for i in range(args.big_runs):
        for s in SIDES:
            pair.mark_log(s)
        pair.append("A", user, make_message("svc-%d" % i), box)
        wait_idle(pair, settle, "after the big user's change", 600)
        r = log_syncs(pair, user)
        svc.append(sum(r[s]["secs"] for s in SIDES))
        kinds.append(r)
    return bare, full, svc, kinds


def print_throughput(tp, n, settle, args):
    print("dovewarden throughput: %d users, one new message each over open "
          "sessions, at once; floor = bare doveadm sync, %d at a time, "
          "Dovecot without dovewarden; settle delay %g s (%d cores)" % (
              n, args.parallel, settle, os.cpu_count() or 0))
    print("%-6s %8s %9s %8s %10s %11s %8s %8s %9s" % (
        "round", "floor s", "floor u/s", "CPU s", "service s",
        "service u/s", "CPU s", "ratio", "CPU ratio"))
    rounds = list(zip(tp["floor"], tp["service"]))
    for i, (f, s) in enumerate(rounds):
        print("%-6d %8.1f %9.1f %8.1f %10.1f %11.1f %8.1f %7.2fx %8.2fx" % (
            i + 1, f.secs, n / f.secs, f.cpu, s.secs, n / s.secs, s.cpu,
            f.secs / s.secs, s.cpu / f.cpu))
    ratios = [f.secs / s.secs for f, s in rounds]
    print("throughput ratio: median %.2fx (%.2f-%.2f); CPU ratio median "
          "%.2fx" % (statistics.median(ratios), min(ratios), max(ratios),
                     statistics.median(s.cpu / f.cpu for f, s in rounds)))
    for i, (f, s) in enumerate(rounds):
        print("round %d CPU s, floor: %s" % (i + 1, fmt_cpu(f.cpu_by_name)))
        print("round %d CPU s, service: %s" % (i + 1,
                                                fmt_cpu(s.cpu_by_name)))
    for i, syncs in enumerate(tp["syncs"]):
        for s in SIDES:
            print("round %d syncs on %s: %s" % (i + 1, s,
                                                fmt_syncs(syncs[s])))


def print_burst_cost(big, args):
    bare, full, svc, kinds = big
    b = statistics.median(bare)
    print("burst cost, %d folders x %d messages: bare incremental "
          "%s s (median %.3f s), bare full %.3f s (%.1fx)" % (
              args.big_folders, args.big_messages,
              " ".join("%.3f" % x for x in bare), b, full, full / b))
    for i, (secs, r) in enumerate(zip(svc, kinds)):
        print("  change %d: service dsync %.3f s (%.2fx bare); A: %s; "
              "B: %s" % (i + 1, secs, secs / b, fmt_syncs(r["A"]),
                         fmt_syncs(r["B"])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--big-folders", type=int, default=100)
    ap.add_argument("--big-messages", type=int, default=1000)
    ap.add_argument("--big-runs", type=int, default=3)
    args = ap.parse_args()
    users = ["tp%03d" % i for i in range(1, args.users + 1)]

    pair = Pair(extra_conf=MANY_SESSIONS_CONF)
    try:
        pair.check_available(True)
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    try:
        pair.start()
        settle = time_secs(pair.doveconf("A", "dovewarden_settle_delay")) or 0
        add_users(pair, users)
        dadm = Doveadm(pair)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda u: pair.append("A", u, make_message(
                "prime-" + u)), users))
        pair.wait_converged(users, 600, "priming")
        wait_idle(pair, settle, "after priming")
        log("%d users primed in %.0f s" % (len(users),
                                            time.monotonic() - t0))
        tp = throughput(pair, dadm, users, settle, args)
        # printed before the burst cost, which takes long
        print_throughput(tp, len(users), settle, args)
        if args.big_folders > 0 and args.big_messages > 0:
            print_burst_cost(burst_cost(pair, dadm, settle, args), args)
    finally:
        pair.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
