#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Every kind of change made on one side reaches the other.

Each case runs in both directions with a user of its own. It prepares the
user on the origin side (INBOX, seed messages, mailboxes), waits until
replication has carried that to the peer, then makes one change on the
origin only and waits (bounded) until the checker finds both sides the
same, and checks that the change itself is on the peer. The IMAP session
that made the change stays open while the test waits: a client that keeps
its connection must not hold changes back."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import (  # noqa: E402
    check_ok, imap_quote, make_message, msg_hash)
from dwtest.common import (  # noqa: E402
    ALL_USERS, POLL_INTERVAL, SIDES, peer, wait_until)
from dwtest.runner import Runner, run  # noqa: E402

TIMEOUT = float(os.environ.get("DW_E2E_TIMEOUT", "10"))

r = Runner("test-replicate-ops")
users = iter(ALL_USERS)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Prepared:
    def __init__(self, user, origin, hashes, prep_secs):
        self.user = user
        self.origin = origin
        self.peer = peer(origin)
        self.hashes = hashes
        self.prep_secs = prep_secs


def prepare(pair, origin, nmsgs=2, seed_flags=None, mailboxes=(),
            subscribe=(), mailbox_msgs=()):
    """A fresh user whose state (made on origin) has reached the peer:
    INBOX with nmsgs messages, the mailboxes, subscriptions and one
    message in each of mailbox_msgs."""
    try:
        user = next(users)
    except StopIteration:
        raise RuntimeError("test-replicate-ops ran out of users")
    msgs = [make_message("seed-%s-%d" % (user, i)) for i in range(nmsgs)]
    extra = {mb: make_message("seed-%s-%s" % (user, mb))
             for mb in mailbox_msgs}
    m = pair.imap(origin, user)
    try:
        check_ok(m.select("INBOX"), "SELECT INBOX on " + origin)
        for msg in msgs:
            pair.append(origin, user, msg, flags=seed_flags, conn=m)
        for mb in mailboxes:
            check_ok(m.create(imap_quote(mb)), "CREATE " + mb)
        for mb in subscribe:
            check_ok(m.subscribe(imap_quote(mb)), "SUBSCRIBE " + mb)
        for mb, msg in extra.items():
            pair.append(origin, user, msg, mailbox=mb, conn=m)
    finally:
        m.logout()
    # No access on the peer before replication made the user's INBOX
    # there, so the peer does not create an INBOX of its own.
    wait_until(lambda: pair.inbox_dir_exists(peer(origin), user),
               TIMEOUT, "replication to create %s's INBOX on %s"
               % (user, peer(origin)))
    t = pair.wait_converged(user, TIMEOUT, "preparation of " + user)
    p = pair.snapshot(peer(origin), user)
    for msg in msgs:
        expect(msg_hash(msg) in p.hashes(), "seed message not on the peer")
    for mb, msg in extra.items():
        expect(msg_hash(msg) in p.hashes(mb), "seed message not in " + mb)
    for mb in mailboxes:
        expect(mb in p.mailboxes, "mailbox %r not on the peer" % mb)
    return Prepared(user, origin, [msg_hash(x) for x in msgs], t), \
        {mb: msg_hash(x) for mb, x in extra.items()}


def converge(pair, prep, what):
    """Wait until the change reached the peer; returns the peer's and the
    origin's snapshots and a note for the report."""
    t = pair.wait_converged(prep.user, TIMEOUT, what)
    note = "%s converged %.2f s after the change (prep %.2f s)" % (
        prep.user, t, prep.prep_secs)
    return (pair.snapshot(prep.peer, prep.user),
            pair.snapshot(prep.origin, prep.user), note)


def both_ways(name):
    def deco(fn):
        for origin in SIDES:
            def case(pair, origin=origin):
                return fn(pair, origin)
            r.case("%s %s->%s" % (name, origin, peer(origin)))(case)
        return fn
    return deco


def imap_session(pair, prep, mailbox="INBOX"):
    m = pair.imap(prep.origin, prep.user)
    check_ok(m.select(imap_quote(mailbox)), "SELECT " + mailbox)
    return m


def logout(m):
    try:
        m.logout()
    except Exception:
        pass


# ---------------------------------------------------------------------------

@both_ways("IMAP APPEND")
def _(pair, origin):
    prep, _x = prepare(pair, origin)
    msg = make_message("append")
    m = pair.imap(origin, prep.user)
    try:
        pair.append(origin, prep.user, msg, conn=m)
        p, _o, note = converge(pair, prep, "APPEND")
    finally:
        logout(m)
    expect(msg_hash(msg) in p.hashes(), "appended message not on the peer")
    expect(p.count() == 3, "peer INBOX holds %d messages, not 3" % p.count())
    return note


@both_ways("LMTP delivery")
def _(pair, origin):
    prep, _x = prepare(pair, origin)
    msg = make_message("lmtp")
    pair.lmtp_deliver(origin, prep.user, msg)
    p, _o, note = converge(pair, prep, "LMTP delivery")
    # LMTP adds Return-Path and Received, so look for the Subject
    subjects = {p.subjects[h] for h in p.hashes()}
    expect("lmtp" in subjects, "delivered message not on the peer")
    expect(p.count() == 3, "peer INBOX holds %d messages, not 3" % p.count())
    return note


def store_case(pair, origin, flags, op="+FLAGS", seed_flags=None):
    prep, _x = prepare(pair, origin, seed_flags=seed_flags)
    m = imap_session(pair, prep)
    try:
        check_ok(m.store("1", op, "(%s)" % " ".join(flags)),
                 "STORE 1 %s" % op)
        p, o, note = converge(pair, prep, "STORE %s %s" % (op, flags))
    finally:
        logout(m)
    h1, h2 = prep.hashes
    (f1,) = p.flags_of(h1)
    (f2,) = p.flags_of(h2)
    if op == "+FLAGS":
        expect(set(flags) <= f1, "peer: message 1 has %s, lacks %s"
               % (sorted(f1), flags))
        expect(not set(flags) & f2, "peer: message 2 got %s too" % flags)
    else:
        expect(not set(flags) & f1, "peer: message 1 still has %s"
               % sorted(set(flags) & f1))
        expect(set(flags) <= f2, "peer: message 2 lost %s" % flags)
    expect(p.count() == 2, "peer INBOX holds %d messages" % p.count())
    return note


@both_ways("STORE +FLAGS \\Seen")
def _(pair, origin):
    return store_case(pair, origin, ["\\Seen"])


@both_ways("STORE +FLAGS \\Flagged")
def _(pair, origin):
    return store_case(pair, origin, ["\\Flagged"])


@both_ways("STORE +FLAGS \\Answered")
def _(pair, origin):
    return store_case(pair, origin, ["\\Answered"])


@both_ways("STORE +FLAGS \\Deleted (no expunge)")
def _(pair, origin):
    return store_case(pair, origin, ["\\Deleted"])


@both_ways("STORE +FLAGS $Label1")
def _(pair, origin):
    return store_case(pair, origin, ["$Label1"])


@both_ways("STORE +FLAGS custom keyword")
def _(pair, origin):
    return store_case(pair, origin, ["dwcustom"])


@both_ways("STORE -FLAGS \\Seen and keyword")
def _(pair, origin):
    return store_case(pair, origin, ["\\Seen", "dwkw"], op="-FLAGS",
                      seed_flags=["\\Seen", "dwkw"])


@both_ways("EXPUNGE")
def _(pair, origin):
    prep, _x = prepare(pair, origin)
    m = imap_session(pair, prep)
    try:
        check_ok(m.store("1", "+FLAGS", "(\\Deleted)"), "STORE")
        check_ok(m.expunge(), "EXPUNGE")
        p, _o, note = converge(pair, prep, "EXPUNGE")
    finally:
        logout(m)
    h1, h2 = prep.hashes
    expect(h1 not in p.hashes(), "expunged message still on the peer")
    expect(p.hashes() == {h2}, "peer INBOX: %r" % p.messages.get("INBOX"))
    return note


@both_ways("COPY")
def _(pair, origin):
    prep, _x = prepare(pair, origin, mailboxes=["Archive"])
    m = imap_session(pair, prep)
    try:
        check_ok(m.copy("1", "Archive"), "COPY")
        p, _o, note = converge(pair, prep, "COPY")
    finally:
        logout(m)
    h1, h2 = prep.hashes
    expect(p.hashes("Archive") == {h1}, "copied message not in the peer's "
           "Archive: %r" % p.messages.get("Archive"))
    expect(p.hashes() == {h1, h2}, "peer INBOX changed")
    return note


@both_ways("MOVE")
def _(pair, origin):
    prep, _x = prepare(pair, origin, mailboxes=["Archive"])
    m = imap_session(pair, prep)
    try:
        check_ok(m._simple_command("MOVE", "1", "Archive"), "MOVE")
        p, _o, note = converge(pair, prep, "MOVE")
    finally:
        logout(m)
    h1, h2 = prep.hashes
    expect(p.hashes("Archive") == {h1}, "moved message not in the peer's "
           "Archive: %r" % p.messages.get("Archive"))
    expect(p.hashes() == {h2}, "moved message still in the peer's INBOX")
    return note


@both_ways("CREATE")
def _(pair, origin):
    prep, _x = prepare(pair, origin)
    m = imap_session(pair, prep)
    try:
        check_ok(m.create("Projects"), "CREATE")
        p, _o, note = converge(pair, prep, "CREATE")
    finally:
        logout(m)
    expect("Projects" in p.mailboxes, "mailbox not on the peer")
    expect(not p.mailboxes["Projects"] & {"\\noselect", "\\nonexistent"},
           "mailbox on the peer is not selectable")
    return note


@both_ways("CREATE nested a/b")
def _(pair, origin):
    prep, _x = prepare(pair, origin)
    m = imap_session(pair, prep)
    try:
        check_ok(m.create("a/b"), "CREATE")
        try:
            p, o, note = converge(pair, prep, "CREATE a/b")
        except AssertionError as e:
            if "mailbox 'a' attributes differ" in str(e):
                raise AssertionError(
                    str(e) + "\nNote: one dsync run creates the \\Noselect "
                    "parent 'a' as a real mailbox on the peer; only a second "
                    "run (e.g. triggered by dsync's own mailbox create on "
                    "the peer, as in 2.3) makes it real on the origin too.")
            raise
    finally:
        logout(m)
    expect(p.delimiter == "/", "delimiter %r" % p.delimiter)
    expect("a/b" in p.mailboxes, "mailbox a/b not on the peer")
    expect("a" in p.mailboxes, "parent a not on the peer")
    return note


@both_ways("RENAME")
def _(pair, origin):
    prep, extra = prepare(pair, origin, mailboxes=["Old"],
                          mailbox_msgs=["Old"])
    m = imap_session(pair, prep)
    try:
        check_ok(m.rename("Old", "New"), "RENAME")
        p, _o, note = converge(pair, prep, "RENAME")
    finally:
        logout(m)
    expect("Old" not in p.mailboxes, "old name still on the peer")
    expect("New" in p.mailboxes, "new name not on the peer")
    expect(p.hashes("New") == {extra["Old"]},
           "the renamed mailbox's message is not in New on the peer")
    return note


@both_ways("DELETE")
def _(pair, origin):
    prep, _x = prepare(pair, origin, mailboxes=["Trashme"],
                       mailbox_msgs=["Trashme"])
    m = imap_session(pair, prep)
    try:
        check_ok(m.delete("Trashme"), "DELETE")
        p, _o, note = converge(pair, prep, "DELETE")
    finally:
        logout(m)
    expect("Trashme" not in p.mailboxes, "deleted mailbox still on the peer")
    return note


@both_ways("SUBSCRIBE")
def _(pair, origin):
    prep, _x = prepare(pair, origin, mailboxes=["Lists"])
    m = imap_session(pair, prep)
    try:
        check_ok(m.subscribe("Lists"), "SUBSCRIBE")
        p, _o, note = converge(pair, prep, "SUBSCRIBE")
    finally:
        logout(m)
    expect("Lists" in p.subscriptions, "subscription not on the peer")
    return note


@both_ways("UNSUBSCRIBE")
def _(pair, origin):
    prep, _x = prepare(pair, origin, mailboxes=["Lists"],
                       subscribe=["Lists"])
    expect("Lists" in pair.snapshot(prep.peer, prep.user).subscriptions,
           "preparation: subscription not on the peer")
    # dsync keeps (un)subscription times in whole seconds and lets the
    # subscription win a tie: an UNSUBSCRIBE in the same second as the
    # replicated SUBSCRIBE is lost by dsync itself (checked with plain
    # doveadm sync). Let the clock pass into the next second.
    second = int(time.time())
    wait_until(lambda: int(time.time()) > second, 2, "next second")
    m = imap_session(pair, prep)
    try:
        check_ok(m.unsubscribe("Lists"), "UNSUBSCRIBE")
        p, _o, note = converge(pair, prep, "UNSUBSCRIBE")
    finally:
        logout(m)
    expect("Lists" not in p.subscriptions, "subscription still on the peer")
    expect("Lists" in p.mailboxes, "the mailbox itself went away")
    return note


@both_ways("POP3 DELE")
def _(pair, origin):
    prep, _x = prepare(pair, origin)
    po = pair.pop3(origin, prep.user)
    try:
        count, _size = po.stat()
        expect(count == 2, "POP3 STAT says %d messages" % count)
        po.dele(1)
    finally:
        po.quit()  # commits the deletion
    p, _o, note = converge(pair, prep, "POP3 DELE")
    h1, h2 = prep.hashes
    expect(p.hashes() == {h2}, "peer INBOX after POP3 DELE: %r"
           % p.messages.get("INBOX"))
    return note


# ---------------------------------------------------------------------------
# Beyond single operations

RACE_ROUNDS = int(os.environ.get("DW_E2E_RACE_ROUNDS", "24"))
# Messages per mailbox: removing their files makes the window wider
RACE_MSGS = 10


@r.case("DELETE and RENAME while dsync runs: none is undone")
def _(pair):
    """Dovecot logs a mailbox's deletion only after the mailbox is gone. A
    dsync reading the mailbox list in between copied the peer's mailbox
    back (with its GUID), and the deletion was lost for good. A dsync
    listing the mailboxes during a RENAME could see both names with one
    GUID and gave the new name a new GUID: the old name came back from
    the peer, and the mailbox was doubled. Plain doveadm syncs run back
    to back the whole time, so that some of them read A's mailbox list
    while a DELETE or RENAME is under way: each round comes a little
    later in a sync than the one before."""
    prep, _x = prepare(pair, "A")
    user = prep.user
    stop = threading.Event()
    started = threading.Semaphore(0)
    syncs = [0]
    took = [0.5]
    errors = []

    def sync_loop():
        # a sync that meets a deletion may fail ("Mailbox was deleted
        # under us"), as the service's do: they are simply run again
        dest = "tcp:127.0.0.1:%d" % pair.port("B", "doveadm")
        try:
            while not stop.is_set():
                started.release()
                t0 = time.monotonic()
                pair.doveadm("A", "sync", "-l", "30", "-u", user, dest,
                             check=False)
                took[0] = time.monotonic() - t0
                syncs[0] += 1
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)
    names = ["Race%d" % i for i in range(RACE_ROUNDS)]
    msgs = {}
    m = pair.imap("A", user)
    t = threading.Thread(target=sync_loop, daemon=True)
    try:
        for mb in names:
            for kind in ("del", "old"):
                box = "%s-%s" % (mb, kind)
                check_ok(m.create(box), "CREATE")
                for i in range(RACE_MSGS):
                    msg = make_message("%s-%d" % (box, i))
                    msgs.setdefault(box, set()).add(msg_hash(msg))
                    pair.append("A", user, msg, mailbox=box, conn=m)
        pair.wait_converged(user, TIMEOUT, "the race mailboxes")
        t.start()
        for i, mb in enumerate(names):
            # wait for the start of the next sync
            while started.acquire(timeout=0):
                pass
            expect(started.acquire(timeout=60), "no sync started")
            time.sleep(took[0] * i / len(names))
            check_ok(m.delete("%s-del" % mb), "DELETE")
            check_ok(m.rename("%s-old" % mb, "%s-new" % mb), "RENAME")
    finally:
        stop.set()
        logout(m)
        t.join(120)
    expect(not errors, "doveadm sync: %s" % (errors[:1],))
    t_conv = pair.wait_converged(user, TIMEOUT, "after the races")
    for side in SIDES:
        snap = pair.snapshot(side, user)
        back = sorted(b for b in snap.mailboxes
                      if b.endswith("-del") or b.endswith("-old"))
        expect(not back, "%s: deleted or renamed mailboxes came back: %s"
               % (side, ", ".join(back)))
        for mb in names:
            new = "%s-new" % mb
            expect(new in snap.mailboxes, "%s: %s missing" % (side, new))
            expect(snap.hashes(new) == msgs["%s-old" % mb] and
                   snap.count(new) == RACE_MSGS,
                   "%s: %s holds %d messages, not the %d renamed"
                   % (side, new, snap.count(new), RACE_MSGS))
    return ("%d deletes and %d renames during %d syncs, converged %.2f s "
            "later" % (len(names), len(names), syncs[0], t_conv))


@r.case("both sides at once: 5 rounds of APPEND+STORE on A and B together")
def _(pair):
    prep, _x = prepare(pair, "A")
    ca, cb = pair.imap("A", prep.user), pair.imap("B", prep.user)
    notes = []
    want = set(prep.hashes)
    try:
        check_ok(ca.select("INBOX"), "SELECT on A")
        check_ok(cb.select("INBOX"), "SELECT on B")
        for rnd in range(5):
            ma = make_message("both-a-%d" % rnd)
            mb = make_message("both-b-%d" % rnd)
            errors = []

            def do(side, conn, msg, flag):
                try:
                    pair.append(side, prep.user, msg, conn=conn)
                    check_ok(conn.store("1", "+FLAGS", "(%s)" % flag),
                             "STORE on " + side)
                except Exception as e:
                    errors.append("%s: %s" % (side, e))
            ts = [threading.Thread(target=do, args=("A", ca, ma,
                                                     "akw%d" % rnd)),
                  threading.Thread(target=do, args=("B", cb, mb,
                                                     "bkw%d" % rnd))]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
            expect(not errors, "; ".join(errors))
            p, o, note = converge(pair, prep, "round %d" % rnd)
            notes.append(note.split(" converged ")[1].split(" after")[0])
            want |= {msg_hash(ma), msg_hash(mb)}
            expect(p.hashes() == want and o.hashes() == want,
                   "round %d: INBOX is not the expected %d messages"
                   % (rnd, len(want)))
            (f1,) = p.flags_of(prep.hashes[0])
            expect({"akw%d" % rnd, "bkw%d" % rnd} <= f1,
                   "round %d: the keywords set at once on A and B were "
                   "not merged: %s" % (rnd, sorted(f1)))
    finally:
        logout(ca)
        logout(cb)
    return "%s converged after %s" % (prep.user, ", ".join(notes))


@r.case("burst: 50 APPENDs and flag changes in one session A->B")
def _(pair):
    prep, _x = prepare(pair, "A")
    msgs = [make_message("burst-%d" % i) for i in range(50)]
    m = imap_session(pair, prep)
    try:
        for i, msg in enumerate(msgs):
            pair.append("A", prep.user, msg, conn=m)
            if i % 5 == 4:
                check_ok(m.store("%d" % (i + 3), "+FLAGS", "(\\Seen)"),
                         "STORE")
        p, _o, note = converge(pair, prep, "burst")
    finally:
        logout(m)
    expect(p.count() == 52, "peer INBOX holds %d messages, not 52"
           % p.count())
    seen = sum(1 for (_h, f), n in p.messages["INBOX"].items()
               if "\\Seen" in f for _ in range(n))
    expect(seen == 10, "%d messages \\Seen on the peer, not 10" % seen)
    return note


@r.case("noreplicate user: changes stay on A")
def _(pair):
    user = "norepl"
    msg = make_message("norepl")
    m = pair.imap("A", user)
    try:
        check_ok(m.select("INBOX"), "SELECT")
        pair.append("A", user, msg, conn=m)
        check_ok(m.create("Private"), "CREATE")
    finally:
        logout(m)
    # Absence can only be watched for a while: as long as a replicated
    # change takes several times over
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        expect(not os.path.exists(os.path.join(
            pair.dw_dir, "B", "mail", user)),
            "mail of the noreplicate user appeared on B")
        time.sleep(POLL_INTERVAL)
    return "nothing reached B within 1.5 s"


if __name__ == "__main__":
    run(r)
