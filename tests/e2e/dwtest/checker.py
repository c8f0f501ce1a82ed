# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The checker: snapshots of what a user sees over IMAP on A and on B,
and their comparison."""

import collections
import concurrent.futures
import imaplib
import time

from dwtest.clients import (check_ok, fmt_flags, imap_quote, msg_hash,
                            msg_subject, pairs, parse_untagged)
from dwtest.common import POLL_INTERVAL

# Mailbox attributes that follow from the existence of other mailboxes or
# from \Recent; a real difference shows up as a missing mailbox instead.
_DERIVED_ATTRS = {"\\haschildren", "\\hasnochildren", "\\marked",
                  "\\unmarked"}
# LIST attributes compared without regard to case
_NORMALIZED = {"\\noselect", "\\nonexistent", "\\noinferiors"}


class Snapshot:
    """What one user sees on one server.

    mailboxes: name -> frozenset of LIST attributes (derived ones removed)
    delimiter: hierarchy separator
    subscriptions: set of names
    messages: name -> Counter of (hash, flags tuple), flags sorted, no
              \\Recent; duplicates count
    subjects: hash -> Subject header (for readable differences)
    """

    def __init__(self, side, user):
        self.side = side
        self.user = user
        self.mailboxes = {}
        self.delimiter = None
        self.subscriptions = set()
        self.messages = {}
        self.subjects = {}

    def hashes(self, mailbox="INBOX"):
        return {h for (h, _f) in self.messages.get(mailbox, ())}

    def flags_of(self, h, mailbox="INBOX"):
        """The flag sets of all messages with hash h in mailbox."""
        return [set(f) for (hh, f), n in
                self.messages.get(mailbox, {}).items()
                for _ in range(n) if hh == h]

    def count(self, mailbox="INBOX"):
        return sum(self.messages.get(mailbox, {}).values())

    def add_message(self, mailbox, body, flags):
        h = msg_hash(body)
        self.subjects.setdefault(h, msg_subject(body))
        key = (h, tuple(sorted(f for f in flags if f.lower() != "\\recent")))
        self.messages.setdefault(mailbox, collections.Counter())[key] += 1

    def __repr__(self):
        return "<Snapshot %s %s: %d mailboxes, %d subscriptions, %d msgs>" % (
            self.side, self.user, len(self.mailboxes),
            len(self.subscriptions),
            sum(sum(c.values()) for c in self.messages.values()))


def compare_snapshots(a, b):
    """Return a list of human-readable differences between two snapshots
    of one user (empty when the user sees the same on both)."""
    na, nb = a.side, b.side
    diffs = []
    for name in sorted(set(a.mailboxes) | set(b.mailboxes)):
        if name not in b.mailboxes:
            diffs.append("mailbox %r exists on %s only" % (name, na))
        elif name not in a.mailboxes:
            diffs.append("mailbox %r exists on %s only" % (name, nb))
        elif a.mailboxes[name] != b.mailboxes[name]:
            diffs.append("mailbox %r attributes differ: %s %s, %s %s" % (
                name, na, fmt_flags(sorted(a.mailboxes[name])),
                nb, fmt_flags(sorted(b.mailboxes[name]))))
    if a.delimiter != b.delimiter and a.mailboxes and b.mailboxes:
        diffs.append("hierarchy delimiter differs: %s %r, %s %r"
                     % (na, a.delimiter, nb, b.delimiter))
    for name in sorted(a.subscriptions - b.subscriptions):
        diffs.append("subscription %r on %s only" % (name, na))
    for name in sorted(b.subscriptions - a.subscriptions):
        diffs.append("subscription %r on %s only" % (name, nb))
    for name in sorted(set(a.messages) | set(b.messages)):
        if name not in a.mailboxes or name not in b.mailboxes:
            n_a = sum(a.messages.get(name, {}).values())
            n_b = sum(b.messages.get(name, {}).values())
            if n_a or n_b:
                diffs.append("mailbox %r holds %d message(s) on %s, %d on %s"
                             % (name, n_a, na, n_b, nb))
            continue
        ca = a.messages.get(name, collections.Counter())
        cb = b.messages.get(name, collections.Counter())
        if ca == cb:
            continue
        for h in sorted({k[0] for k in ca} | {k[0] for k in cb}):
            la = sorted((f, n) for (hh, f), n in ca.items() if hh == h)
            lb = sorted((f, n) for (hh, f), n in cb.items() if hh == h)
            if la == lb:
                continue
            subj = a.subjects.get(h) or b.subjects.get(h) or ""
            desc = "%r: message %s (Subject %r)" % (name, h, subj)

            def fmt(lst):
                return ", ".join(fmt_flags(f) + ("x%d" % n if n > 1 else "")
                                 for f, n in lst)
            if not lb:
                diffs.append("%s on %s only, flags %s" % (desc, na, fmt(la)))
            elif not la:
                diffs.append("%s on %s only, flags %s" % (desc, nb, fmt(lb)))
            else:
                ta = sum(n for _f, n in la)
                tb = sum(n for _f, n in lb)
                if ta != tb:
                    diffs.append("%s: %d cop%s on %s %s, %d on %s %s" % (
                        desc, ta, "y" if ta == 1 else "ies", na, fmt(la),
                        tb, nb, fmt(lb)))
                else:
                    diffs.append("%s: flags differ: %s %s, %s %s" % (
                        desc, na, fmt(la), nb, fmt(lb)))
    return diffs


class PairChecker:
    """Pair's checker methods: snapshots of a user on A and B over IMAP
    (through Pair's imap()), their comparison and the wait for them to
    be the same."""

    def snapshot(self, side, user):
        snap = Snapshot(side, user)
        m = self.imap(side, user)
        try:
            data = check_ok(m.list('""', '"*"'), "LIST on %s" % side)
            for resp in parse_untagged(data):
                attrs, delim, name = resp[0], resp[1], resp[2]
                name = (name.decode("utf-8", "surrogateescape")
                        if isinstance(name, bytes) else name)
                snap.delimiter = delim
                snap.mailboxes[name] = frozenset(
                    a.lower() if a.lower() in _NORMALIZED else a
                    for a in attrs if a.lower() not in _DERIVED_ATTRS)
            data = check_ok(m.lsub('""', '"*"'), "LSUB on %s" % side)
            for resp in parse_untagged(data):
                name = resp[2]
                name = (name.decode("utf-8", "surrogateescape")
                        if isinstance(name, bytes) else name)
                snap.subscriptions.add(name)
            for name, attrs in sorted(snap.mailboxes.items()):
                if attrs & {"\\noselect", "\\nonexistent"}:
                    continue
                typ, data = m.select(imap_quote(name), readonly=True)
                if typ != "OK":
                    # deleted between LIST and EXAMINE (sync running)
                    continue
                snap.messages[name] = collections.Counter()
                if int(data[0]) == 0:
                    continue
                data = check_ok(m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])"),
                                "FETCH in %r on %s" % (name, side))
                for resp in parse_untagged(data):
                    # imaplib strips "* " and "FETCH": "<seq> (<items>)"
                    if len(resp) != 2 or not isinstance(resp[1], list):
                        continue
                    items = pairs(resp[1])
                    body = items.get("BODY[]")
                    if body is None:
                        continue
                    flags = items.get("FLAGS") or []
                    snap.add_message(name, bytes(body), flags)
        finally:
            try:
                m.logout()
            except Exception:
                pass
        return snap

    def snapshots(self, user):
        return self.snapshot("A", user), self.snapshot("B", user)

    def compare(self, user):
        a, b = self.snapshots(user)
        return compare_snapshots(a, b)

    def wait_converged(self, users, timeout=10.0, what=""):
        """Poll until every user looks the same on A and B. Returns the
        seconds it took. Raises AssertionError listing the differences
        after timeout seconds."""
        if isinstance(users, str):
            users = [users]
        t0 = time.monotonic()
        end = t0 + timeout
        while True:
            diffs = {}
            for u in users:
                try:
                    d = self.compare(u)
                except (AssertionError, imaplib.IMAP4.error, OSError) as e:
                    # e.g. a mailbox deleted between EXAMINE and FETCH
                    # while a sync runs: look again
                    d = ["cannot take a snapshot: %s" % e]
                if d:
                    diffs[u] = d
            if not diffs:
                return time.monotonic() - t0
            if time.monotonic() >= end:
                lines = ["A and B did not converge within %.1f s%s:"
                         % (timeout, " (" + what + ")" if what else "")]
                for u, d in diffs.items():
                    lines += ["  %s: %s" % (u, x) for x in d]
                raise AssertionError("\n".join(lines))
            time.sleep(POLL_INTERVAL)

    def diff_users(self, users, workers=4):
        """One pass of the checker over users, in parallel: user ->
        list of differences, for the users that differ only."""

        def one(u):
            try:
                return u, self.compare(u)
            except (AssertionError, imaplib.IMAP4.error, OSError) as e:
                return u, ["cannot take a snapshot: %s" % e]
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            return {u: d for u, d in ex.map(one, users) if d}

    def converge_report(self, users, timeout, what="", workers=4):
        """Like wait_converged, but never raises: polls until every user
        looks the same on A and B or timeout seconds have passed.
        Returns (seconds it took or None, {user: differences} of the
        last pass, which is empty when they converged)."""
        t0 = time.monotonic()
        end = t0 + timeout
        while True:
            diffs = self.diff_users(users, workers)
            if not diffs:
                return time.monotonic() - t0, {}
            if time.monotonic() >= end:
                return None, diffs
            time.sleep(POLL_INTERVAL)
