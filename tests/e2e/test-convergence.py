#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Convergence under a mixed load on both sides at once.

For each seed (DW_SEED: one seed or a comma-separated list; default
1,2,3), on one pair:

(1) Load: DW_CONV_USERS users (default 24 of user01..user30, prepared on A
    and converged first) get, for DW_CONV_DURATION seconds (default 10),
    random operations from DW_CONV_THREADS client threads per side
    (default 3) on A and on B at once: APPEND, LMTP delivery, STORE
    +FLAGS/-FLAGS, EXPUNGE, UID EXPUNGE, COPY, MOVE, CREATE, RENAME,
    DELETE, SUBSCRIBE, UNSUBSCRIBE (dwtest.load.MixedLoad). Once it stops,
    the checker must find no difference between A and B within the bound
    plus a margin, and the INBOX UIDVALIDITY of every user must be the
    one it had before the load, on both sides.
(2) New users: users that have never been synced (3 of user31..user40,
    erin, frank per seed) get mail on A and on B while both services are
    stopped (SIGSTOP), so each side creates the INBOX on its own: one user
    in the same second on both sides, two with B's INBOX created 1.1 s
    later (a higher UIDVALIDITY) and B getting more, or fewer, messages
    than A. After SIGCONT they must converge within the bound, every
    Message-ID must be on both sides, and the INBOX UIDVALIDITY must be
    what dsync promises: it merges the two INBOXes and keeps the
    UIDVALIDITY of the side with more messages (the higher one on a tie),
    so only the other side's INBOX changes, and only when the two
    differed.

The bound is DW_CONV_BOUND seconds (default 30, the guarantee's default;
at least dovewarden_settle_delay + 20 s when that setting is larger). The
margin (DW_CONV_MARGIN, default 10 s) covers a sync started just before
the bound (a full sync of a user under load takes up to a few seconds
here) and the checker's own passes (one pass over all users takes
1-3 s). Per seed it prints the operations, NO answers, the users that
differed when the load stopped and when both services' queues were
empty, and the time to converge.

After a failed seed, a forced full sync of every user (doveadm dovewarden
replicate -f) makes A and B equal again, so that the next seed starts
from equal sides and reports on its own."""

import concurrent.futures
import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_subject  # noqa: E402
from dwtest.common import (  # noqa: E402
    NUMBERED_USERS, POLL_INTERVAL, SIDES, time_secs)
from dwtest.load import MixedLoad  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.tap import diag  # noqa: E402

SEEDS = [s.strip() for s in os.environ.get("DW_SEED", "1,2,3").split(",")
         if s.strip()]
DURATION = float(os.environ.get("DW_CONV_DURATION", "10"))
N_USERS = int(os.environ.get("DW_CONV_USERS", "24"))
THREADS = int(os.environ.get("DW_CONV_THREADS", "3"))
MARGIN = float(os.environ.get("DW_CONV_MARGIN", "10"))
PREP_TIMEOUT = 60.0

LOAD_USERS = NUMBERED_USERS[:min(N_USERS, 30)]
NEW_USERS = NUMBERED_USERS[30:] + ["erin", "frank"]
NEW_PER_SEED = 3

r = Runner("test-convergence")
results = []


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def message_id(msg):
    start = msg.index(b"Message-ID: <") + len(b"Message-ID: ")
    return msg[start:msg.index(b">", start) + 1].decode()


def bound_of(pair):
    """(bound in seconds, settle delay in seconds or None when the
    service has no such setting)."""
    settle = time_secs(pair.doveconf("A", "dovewarden_settle_delay"))
    bound = float(os.environ.get("DW_CONV_BOUND", "30"))
    if settle:
        bound = max(bound, settle + 20)
    return bound, settle


def fmt_diffs(diffs, limit=40):
    lines = []
    for u in sorted(diffs):
        lines += ["  %s: %s" % (u, d) for d in diffs[u]]
    if len(lines) > limit:
        lines = lines[:limit] + ["  ... %d more" % (len(lines) - limit)]
    return "\n".join(lines)


def uidvalidities(pair, users):
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = {(s, u): ex.submit(pair.uidvalidity, s, u)
                for s in SIDES for u in users}
        return {k: f.result() for k, f in futs.items()}


def repair(pair, users):
    """After a failed seed: a forced full sync of every user, so the
    next seed starts from equal sides. Returns a description."""
    pair.dw("A", "replicate", "-f", "*")
    t, diffs = pair.converge_report(users, 60)
    if diffs:
        return "still %d user(s) differ 60 s after a forced full sync" % (
            len(diffs))
    return "a forced full sync repaired them in %.1f s" % t


@r.case("prepare %d users on A" % len(LOAD_USERS))
def _(pair):
    t = MixedLoad.prepare(pair, LOAD_USERS, PREP_TIMEOUT)
    t0 = time.monotonic()
    pair.diff_users(LOAD_USERS)
    bound, settle = bound_of(pair)
    return ("converged in %.1f s; one checker pass %.1f s; bound %.0f s + "
            "margin %.0f s (dovewarden_settle_delay %s)" % (
                t, time.monotonic() - t0, bound, MARGIN,
                "unknown: not in this build" if settle is None
                else "%g s" % settle))


def load_case(seed):
    def case(pair):
        bound, _settle = bound_of(pair)
        users = LOAD_USERS
        uv0 = uidvalidities(pair, users)
        expect(all(uv0.values()), "INBOX missing before the load: %s"
               % [k for k, v in uv0.items() if not v])
        load = MixedLoad(pair, users, seed, THREADS, DURATION)
        ran = load.run()
        t_stop = time.monotonic()
        res = {"seed": seed, "ops": load.total_ops(), "no": load.total_no(),
               "aborts": load.total_aborts(), "bad": len(load.bad),
               "ran": ran}
        results.append(res)
        expect(not load.bad, "the test sent bad commands:\n  "
               + "\n  ".join(load.bad[:10]))

        # Poll until converged or past the bound: every pass runs the
        # checker; the first pass is the state at the load's stop, the
        # first pass that began with both queues empty is the state when
        # "the replicators report empty queues".
        end = t_stop + bound + MARGIN
        res["diff_at_queues"] = res["t_queues"] = None
        first = True
        while True:
            empty = (res["t_queues"] is None and
                     all(pair.queues_empty(s) for s in SIDES))
            t_empty = time.monotonic() - t_stop
            diffs = pair.diff_users(users)
            if first:
                res["diff_at_stop"] = len(diffs)
                first = False
            if empty:
                res["t_queues"] = t_empty
                res["diff_at_queues"] = len(diffs)
            if not diffs or time.monotonic() >= end:
                break
            time.sleep(POLL_INTERVAL)
        t = None if diffs else time.monotonic() - t_stop
        res["t_converged"] = t
        res["diff_after_bound"] = len(diffs)
        res["diffs"] = diffs
        uv1 = uidvalidities(pair, users)
        changed = ["%s on %s: %s -> %s" % (u, s, uv0[(s, u)], uv1[(s, u)])
                   for (s, u) in sorted(uv0) if uv0[(s, u)] != uv1[(s, u)]]
        res["uv_changed"] = len(changed)
        summary = ("seed %s: %d ops in %.1f s (%d NO, %d disconnects) on %d "
                   "users; differing users: %d at load stop, %s when queues "
                   "were empty (%s s after), %d after the bound; %s" % (
                       seed, res["ops"], ran, res["no"], res["aborts"],
                       len(users), res["diff_at_stop"],
                       "-" if res["diff_at_queues"] is None
                       else res["diff_at_queues"],
                       "-" if res["t_queues"] is None
                       else "%.1f" % res["t_queues"],
                       res["diff_after_bound"],
                       "converged %.1f s after the load stopped"
                       % res["t_converged"] if t is not None
                       else "NOT converged within %.0f+%.0f s"
                       % (bound, MARGIN)))
        diag(summary)
        diag("  ops: " + load.summary())
        if diffs or changed:
            msg = summary
            if diffs:
                msg += "\ndifferences:\n" + fmt_diffs(diffs)
            if changed:
                msg += ("\nINBOX UIDVALIDITY changed:\n  "
                        + "\n  ".join(changed))
            if diffs:
                pair.dump_user_logs(diffs)
                # a forced full sync of the first three, before repair()
                pair.dump_dsync_reasons(diffs)
            msg += "\n" + repair(pair, users)
            raise AssertionError(msg)
        return "%d ops, %d NO, converged in %.1f s" % (
            res["ops"], res["no"], res["t_converged"])
    return case


def new_users_case(seed, idx):
    users = NEW_USERS[idx * NEW_PER_SEED:(idx + 1) * NEW_PER_SEED]
    # (messages A gets, messages B gets, B creates its INBOX 1.1 s later)
    # while both services are stopped, so nothing is synced in between:
    # same second (same UIDVALIDITY), B later with more mail (B's higher
    # UIDVALIDITY wins), B later with less mail (A's lower one wins)
    plans = [(3, 3, False), (2, 4, True), (4, 2, True)]

    def case(pair):
        if len(users) < NEW_PER_SEED:
            return "skipped: no fresh users left for a %dth seed" % (idx + 1)
        bound, _settle = bound_of(pair)
        sent = {u: [] for u in users}
        first = {}
        lock = threading.Lock()

        def first_append(user, side, barrier=None):
            msg = make_message("new-%s-%s" % (side, user))
            m = pair.imap(side, user)
            try:
                if barrier:
                    barrier.wait(10)
                typ, data = m.append("INBOX", None, None, msg)
                check_ok((typ, data), "APPEND on %s" % side)
                mm = re.search(rb"APPENDUID (\d+) ", data[0])
            finally:
                m.logout()
            with lock:
                sent[user].append(msg)
                first[(side, user)] = int(mm.group(1)) if mm else None

        def more(user, side, n):
            for i in range(n):
                msg = make_message("new-lmtp-%s-%s-%d" % (side, user, i))
                pair.lmtp_deliver(side, user, msg)
                with lock:
                    sent[user].append(msg)

        pids = {s: pair.service_pid(s) for s in SIDES}
        try:
            for pid in pids.values():
                os.kill(pid, signal.SIGSTOP)
            with concurrent.futures.ThreadPoolExecutor(8) as ex:
                futs = []
                for u, (_na, _nb, later) in zip(users, plans):
                    bar = None if later else threading.Barrier(2)
                    futs.append(ex.submit(first_append, u, "A", bar))
                    if not later:
                        futs.append(ex.submit(first_append, u, "B", bar))
                for f in futs:
                    f.result()
                time.sleep(1.1)
                futs = [ex.submit(first_append, u, "B")
                        for u, (_na, _nb, later) in zip(users, plans)
                        if later]
                for f in futs:
                    f.result()
                futs = [ex.submit(more, u, s, n - 1)
                        for u, (na, nb, _l) in zip(users, plans)
                        for s, n in (("A", na), ("B", nb))]
                for f in futs:
                    f.result()
            guids = {(s, u): pair.mailbox_guid(s, u)
                     for u in users for s in SIDES}
        finally:
            for pid in pids.values():
                os.kill(pid, signal.SIGCONT)
        t, diffs = pair.converge_report(users, bound + MARGIN)
        expect(not diffs, "new users did not converge within %.0f+%.0f s:\n%s"
               % (bound, MARGIN, fmt_diffs(diffs)))
        lost = []
        for u in users:
            for s in SIDES:
                have = pair.message_ids(s, u)
                lost += ["%s on %s: %s" % (u, s, msg_subject(msg))
                         for msg in sent[u] if message_id(msg) not in have]
        expect(not lost, "messages lost:\n  " + "\n  ".join(lost))
        final = uidvalidities(pair, users)
        bad = []
        for u, (na, nb, _l) in zip(users, plans):
            ua, ub = first[("A", u)], first[("B", u)]
            fa, fb = final[("A", u)], final[("B", u)]
            want = ub if nb > na or (nb == na and ub > ua) else ua
            changed = [s for s, v0, v1 in (("A", ua, fa), ("B", ub, fb))
                       if v0 != v1]
            diag("  %s: INBOX created on both (GUIDs %s), %d "
                 "messages on A, %d on B; UIDVALIDITY A %s, B %s -> "
                 "%s; changed on: %s" % (
                           u, "differ" if guids[("A", u)] != guids[("B", u)]
                           else "EQUAL", na, nb, ua, ub, fa,
                           ", ".join(changed) or "neither"))
            if guids[("A", u)] == guids[("B", u)]:
                bad.append("%s: the INBOX was not created independently"
                           % u)
            if fa != fb:
                bad.append("%s: UIDVALIDITY differs: A %s, B %s" % (u, fa, fb))
            elif fa != want:
                bad.append("%s: UIDVALIDITY %s, expected %s: that of the "
                           "side with more messages, or the higher one"
                           % (u, fa, want))
        expect(not bad, "\n".join(bad))
        return ("%d users, %d messages, converged %.1f s after the services "
                "went on" % (len(users), sum(len(v) for v in sent.values()),
                             t))
    return case


for _i, _seed in enumerate(SEEDS):
    r.case("seed %s: mixed load on A and B, then convergence" % _seed)(
        load_case(_seed))
    r.case("seed %s: new users get mail on A and B before any sync"
           % _seed)(new_users_case(_seed, _i))


@r.case("summary")
def _(pair):
    for res in results:
        diag("seed %s: ops %d, NO %d, disconnects %d, differing "
             "users at stop %s, at empty queues %s, after the bound "
             "%s, converged after %s s" % (
                       res["seed"], res["ops"], res["no"], res["aborts"],
                       res.get("diff_at_stop", "-"),
                       "-" if res.get("diff_at_queues") is None
                       else res["diff_at_queues"],
                       res.get("diff_after_bound", "-"),
                       "-" if res.get("t_converged") is None
                       else "%.1f" % res["t_converged"]))


if __name__ == "__main__":
    run(r)
