#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The checker must see a change that did not reach the other side.

Starts the pair without the mail plugin (DW_NO_PLUGIN=1) and with an empty
dovewarden_replica, so nothing replicates by itself. Each case makes one
change on one side, asserts that compare() names it, then runs doveadm
sync by hand and asserts that compare() is empty and the change is on the
other side. The synthetic cases test the comparison itself."""

import collections
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.checker import Snapshot, compare_snapshots  # noqa: E402
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import NUMBERED_USERS  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

# No plugin, and no replica for the service either, so that nothing (not
# even a sync of all users that the service might run by itself) changes
# what the cases set up.
r = Runner("test-checker", no_plugin=True,
           extra_conf="dovewarden_replica =")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_diff(diffs, *words):
    """One difference line contains all of words."""
    for d in diffs:
        if all(w in d for w in words):
            return d
    raise AssertionError("no difference mentions %r; differences: %r"
                         % (words, diffs))


# ---------------------------------------------------------------------------
# The comparison on synthetic snapshots

def base(side):
    s = Snapshot(side, "synthetic")
    s.delimiter = "/"
    s.mailboxes = {"INBOX": frozenset(), "Sent": frozenset(),
                   "a": frozenset({"\\noselect"}), "a/b": frozenset()}
    s.subscriptions = {"INBOX", "Sent"}
    s.add_message("INBOX", b"Subject: one\r\n\r\n1\r\n", ["\\Seen"])
    s.add_message("INBOX", b"Subject: two\r\n\r\n2\r\n",
                  ["\\Flagged", "$Label1", "\\Recent"])
    s.add_message("Sent", b"Subject: three\r\n\r\n3\r\n", [])
    s.messages.setdefault("a/b", collections.Counter())
    return s


H1 = msg_hash(b"Subject: one\r\n\r\n1\r\n")
H2 = msg_hash(b"Subject: two\r\n\r\n2\r\n")


@r.case("synthetic: identical snapshots compare equal")
def _(pair):
    a, b = base("A"), base("B")
    expect(compare_snapshots(a, b) == [], compare_snapshots(a, b))
    # \Recent is ignored
    b.messages["INBOX"] = collections.Counter()
    b.add_message("INBOX", b"Subject: one\r\n\r\n1\r\n",
                  ["\\Seen", "\\Recent"])
    b.add_message("INBOX", b"Subject: two\r\n\r\n2\r\n",
                  ["$Label1", "\\Flagged"])
    expect(compare_snapshots(a, b) == [], compare_snapshots(a, b))


@r.case("synthetic: missing message")
def _(pair):
    a, b = base("A"), base("B")
    del b.messages["INBOX"][(H1, ("\\Seen",))]
    d = compare_snapshots(a, b)
    expect(len(d) == 1, d)
    expect_diff(d, "'INBOX'", H1, "'one'", "on A only")
    d = compare_snapshots(b, a)
    expect_diff(d, H1, "on A only")


@r.case("synthetic: different flag")
def _(pair):
    a, b = base("A"), base("B")
    del b.messages["INBOX"][(H1, ("\\Seen",))]
    b.add_message("INBOX", b"Subject: one\r\n\r\n1\r\n", [])
    d = compare_snapshots(a, b)
    expect(len(d) == 1, d)
    expect_diff(d, H1, "flags differ", "A (\\Seen)", "B ()")


@r.case("synthetic: different keyword")
def _(pair):
    a, b = base("A"), base("B")
    key = (H2, tuple(sorted(["\\Flagged", "$Label1"])))
    del b.messages["INBOX"][key]
    b.add_message("INBOX", b"Subject: two\r\n\r\n2\r\n",
                  ["\\Flagged", "$Label2"])
    d = compare_snapshots(a, b)
    expect(len(d) == 1, d)
    expect_diff(d, H2, "flags differ", "$Label1", "$Label2")


@r.case("synthetic: missing mailbox")
def _(pair):
    a, b = base("A"), base("B")
    del b.mailboxes["a/b"]
    del b.messages["a/b"]
    d = compare_snapshots(a, b)
    expect(len(d) == 1, d)
    expect_diff(d, "mailbox 'a/b' exists on A only")
    # a missing mailbox that holds mail says so too
    a, b = base("A"), base("B")
    del b.mailboxes["Sent"]
    del b.messages["Sent"]
    d = compare_snapshots(a, b)
    expect_diff(d, "mailbox 'Sent' exists on A only")
    expect_diff(d, "'Sent'", "1 message(s) on A, 0 on B")
    # \Noselect against selectable
    a, b = base("A"), base("B")
    b.mailboxes["a"] = frozenset()
    expect_diff(compare_snapshots(a, b), "'a'", "attributes differ")


@r.case("synthetic: different subscription")
def _(pair):
    a, b = base("A"), base("B")
    b.subscriptions.discard("Sent")
    b.subscriptions.add("a/b")
    d = compare_snapshots(a, b)
    expect(len(d) == 2, d)
    expect_diff(d, "subscription 'Sent' on A only")
    expect_diff(d, "subscription 'a/b' on B only")


@r.case("synthetic: duplicate count")
def _(pair):
    a, b = base("A"), base("B")
    b.add_message("INBOX", b"Subject: one\r\n\r\n1\r\n", ["\\Seen"])
    d = compare_snapshots(a, b)
    expect(len(d) == 1, d)
    expect_diff(d, H1, "1 copy on A", "2 on B")
    # same count, but the duplicates carry different flags
    a.add_message("INBOX", b"Subject: one\r\n\r\n1\r\n", [])
    d = compare_snapshots(a, b)
    expect(len(d) == 1, d)
    expect_diff(d, H1, "flags differ")


# ---------------------------------------------------------------------------
# Real servers, no replication: a change on A is a difference until
# doveadm sync carries it over

users = iter(NUMBERED_USERS)


def prepared(pair, nmsgs=1):
    """A user with INBOX and nmsgs messages on A, synced to B."""
    user = next(users)
    msgs = [make_message("seed-%s-%d" % (user, i)) for i in range(nmsgs)]
    m = pair.imap("A", user)
    try:
        check_ok(m.select("INBOX"), "SELECT INBOX")
        for msg in msgs:
            pair.append("A", user, msg, conn=m)
    finally:
        m.logout()
    d = pair.compare(user)
    expect(d, "compare() found no difference after APPEND on A without "
           "replication")
    pair.manual_sync(user)
    d = pair.compare(user)
    expect(d == [], "differences after doveadm sync: %r" % d)
    b = pair.snapshot("B", user)
    for msg in msgs:
        expect(msg_hash(msg) in b.hashes(), "seed not on B")
    return user, [msg_hash(x) for x in msgs]


def still_differs(pair, user, *words):
    """The difference is there and stays there (nothing replicates)."""
    d = expect_diff(pair.compare(user), *words)
    t = pair.snapshot("A", user)  # let some time pass with a real access
    del t
    expect_diff(pair.compare(user), *words)
    return d


def synced(pair, user):
    pair.manual_sync(user)
    d = pair.compare(user)
    expect(d == [], "differences after doveadm sync: %r" % d)


@r.case("real: APPEND on A only is a difference")
def _(pair):
    user, _seed = prepared(pair)
    msg = make_message("checker-append")
    pair.append("A", user, msg)
    h = msg_hash(msg)
    d = still_differs(pair, user, "'INBOX'", h, "on A only")
    expect(h not in pair.snapshot("B", user).hashes(), "message on B")
    synced(pair, user)
    expect(h in pair.snapshot("B", user).hashes(), "message not on B")
    return d


@r.case("real: flag on A only is a difference")
def _(pair):
    user, (h,) = prepared(pair)
    m = pair.imap("A", user)
    try:
        check_ok(m.select("INBOX"), "SELECT")
        check_ok(m.store("1", "+FLAGS", "(\\Flagged)"), "STORE")
    finally:
        m.logout()
    d = still_differs(pair, user, h, "flags differ", "\\Flagged")
    synced(pair, user)
    expect({"\\Flagged"} <= pair.snapshot("B", user).flags_of(h)[0],
           "\\Flagged not on B")
    return d


@r.case("real: keyword on A only is a difference")
def _(pair):
    user, (h,) = prepared(pair)
    m = pair.imap("A", user)
    try:
        check_ok(m.select("INBOX"), "SELECT")
        check_ok(m.store("1", "+FLAGS", "($Label1 checkerkw)"),
                 "STORE")
    finally:
        m.logout()
    d = still_differs(pair, user, h, "flags differ", "$Label1", "checkerkw")
    synced(pair, user)
    expect({"$Label1", "checkerkw"} <= pair.snapshot("B", user).flags_of(h)[0],
           "keywords not on B")
    return d


@r.case("real: mailbox created on A only is a difference")
def _(pair):
    user, _seed = prepared(pair)
    m = pair.imap("A", user)
    try:
        check_ok(m.create("checkerbox"), "CREATE")
    finally:
        m.logout()
    d = still_differs(pair, user, "mailbox 'checkerbox' exists on A only")
    synced(pair, user)
    expect("checkerbox" in pair.snapshot("B", user).mailboxes,
           "mailbox not on B")
    return d


@r.case("real: nested mailbox created on A only is a difference")
def _(pair):
    # dsync creates the \Noselect parent as a real mailbox on B; only a
    # second run makes it real on A too. The checker must show the step
    # between.
    user, _seed = prepared(pair)
    m = pair.imap("A", user)
    try:
        check_ok(m.create("checker/nested"), "CREATE")
    finally:
        m.logout()
    d = still_differs(pair, user, "mailbox 'checker/nested' exists on A only")
    pair.manual_sync(user)
    d2 = pair.compare(user)
    if d2:
        expect_diff(d2, "mailbox 'checker' attributes differ",
                    "A (\\noselect)", "B ()")
    synced(pair, user)
    expect("checker/nested" in pair.snapshot("B", user).mailboxes,
           "mailbox not on B")
    return d + (" / after 1st sync: " + d2[0] if d2 else "")


@r.case("real: subscription on A only is a difference")
def _(pair):
    user, _seed = prepared(pair)
    m = pair.imap("A", user)
    try:
        check_ok(m.create("subbed"), "CREATE")
    finally:
        m.logout()
    synced(pair, user)
    m = pair.imap("A", user)
    try:
        check_ok(m.subscribe("subbed"), "SUBSCRIBE")
    finally:
        m.logout()
    d = still_differs(pair, user, "subscription 'subbed' on A only")
    synced(pair, user)
    expect("subbed" in pair.snapshot("B", user).subscriptions,
           "subscription not on B")
    return d


@r.case("real: expunge on B only is a difference")
def _(pair):
    user, (h1, h2) = prepared(pair, nmsgs=2)
    m = pair.imap("B", user)
    try:
        check_ok(m.select("INBOX"), "SELECT")
        check_ok(m.store("1", "+FLAGS", "(\\Deleted)"), "STORE")
        check_ok(m.expunge(), "EXPUNGE")
    finally:
        m.logout()
    d = still_differs(pair, user, h1, "on A only")
    synced(pair, user)
    expect(pair.snapshot("A", user).hashes() == {h2},
           "expunged message still on A")
    return d


@r.case("real: wait_converged() times out and lists the difference")
def _(pair):
    user, _seed = prepared(pair)
    msg = make_message("checker-timeout")
    pair.append("B", user, msg)
    try:
        pair.wait_converged(user, timeout=0.5)
    except AssertionError as e:
        text = str(e)
        expect(msg_hash(msg) in text and "on B only" in text
               and user in text, "unexpected message: " + text)
        synced(pair, user)
        dt = pair.wait_converged(user, timeout=2)
        return "timed out as expected; after sync converged in %.2f s" % dt
    raise AssertionError("wait_converged() did not time out")


if __name__ == "__main__":
    run(r)
