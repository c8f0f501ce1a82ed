#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Many users change at once, on both sides.

(1) 40 users, prepared on A. Then, in parallel, every user gets APPENDs on
    A and LMTP deliveries on B, and one flag change on each side. All users
    must converge within a bound (more users than dovewarden_max_syncs).
(2) Users that have never been synced receive mail on both sides before
    any sync: each side creates the INBOX on its own, and replication must
    still end with one INBOX holding all the mail on both sides."""

import concurrent.futures
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import (  # noqa: E402
    NAMED_USERS, NUMBERED_USERS, SIDES, wait_until)
from dwtest.runner import Runner, run  # noqa: E402

TIMEOUT = float(os.environ.get("DW_E2E_LOAD_TIMEOUT", "30"))
WORKERS = 8

r = Runner("test-many-users")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def parallel(fn, items):
    """Run fn(item) for all items on WORKERS threads; raise the first
    failure with the item it belongs to."""
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
        futs = {ex.submit(fn, it): it for it in items}
        errors = []
        results = {}
        for f in concurrent.futures.as_completed(futs):
            try:
                results[futs[f]] = f.result()
            except Exception as e:
                errors.append("%s: %s" % (futs[f], e))
    expect(not errors, "; ".join(sorted(errors)[:5]))
    return results


@r.case("40 users change on A and B at once")
def _(pair):
    users = NUMBERED_USERS

    def prep(user):
        seed = make_message("seed-" + user)
        m = pair.imap("A", user)
        try:
            check_ok(m.select("INBOX"), "SELECT")
            pair.append("A", user, seed, conn=m)
        finally:
            m.logout()
        return msg_hash(seed)
    seeds = parallel(prep, users)
    wait_until(lambda: all(pair.inbox_dir_exists("B", u)
                           for u in users), TIMEOUT,
               "replication to create every INBOX on B")
    t_prep = pair.wait_converged(users, TIMEOUT, "preparation")

    def load(user):
        a = [make_message("load-a-%s-%d" % (user, i)) for i in range(3)]
        b = [make_message("load-b-%s-%d" % (user, i)) for i in range(2)]
        m = pair.imap("A", user)
        try:
            check_ok(m.select("INBOX"), "SELECT on A")
            for msg in a:
                pair.append("A", user, msg, conn=m)
            check_ok(m.store("1", "+FLAGS", "(\\Flagged)"), "STORE on A")
        finally:
            m.logout()
        for msg in b:
            pair.lmtp_deliver("B", user, msg)
        m = pair.imap("B", user)
        try:
            check_ok(m.select("INBOX"), "SELECT on B")
            check_ok(m.store("1", "+FLAGS", "(\\Seen)"), "STORE on B")
        finally:
            m.logout()
        return [msg_hash(x) for x in a], ["load-b-%s-%d" % (user, i)
                                           for i in range(2)]
    sent = parallel(load, users)
    t = pair.wait_converged(users, TIMEOUT, "load")
    for user in users:
        snap = pair.snapshot("A", user)
        want_a, want_b = sent[user]
        expect(set(want_a) | {seeds[user]} <= snap.hashes(),
               "%s: APPENDed messages missing" % user)
        subjects = {snap.subjects[h] for h in snap.hashes()}
        expect(set(want_b) <= subjects,
               "%s: delivered messages missing" % user)
        expect(snap.count() == 6, "%s: %d messages, not 6"
               % (user, snap.count()))
        (f,) = snap.flags_of(seeds[user])
        expect({"\\Flagged", "\\Seen"} <= f,
               "%s: the seed's flags are %s" % (user, sorted(f)))
    return "prep converged in %.2f s, the load in %.2f s" % (t_prep, t)


@r.case("new users get mail on A and B before any sync")
def _(pair):
    users = NAMED_USERS

    def deliver(user):
        ma = make_message("first-a-" + user)
        mb = make_message("first-b-" + user)
        f = concurrent.futures.ThreadPoolExecutor(2)
        fa = f.submit(pair.lmtp_deliver, "A", user, ma)
        fb = f.submit(pair.lmtp_deliver, "B", user, mb)
        fa.result()
        fb.result()
        f.shutdown()
        return "first-a-" + user, "first-b-" + user
    sent = parallel(deliver, users)
    t = pair.wait_converged(users, TIMEOUT, "first mail on both sides")
    for user in users:
        for side in SIDES:
            snap = pair.snapshot(side, user)
            subjects = {snap.subjects[h] for h in snap.hashes()}
            expect(set(sent[user]) <= subjects,
                   "%s on %s: INBOX holds %s" % (user, side,
                                                 sorted(subjects)))
    return "converged in %.2f s" % t


if __name__ == "__main__":
    run(r)
