#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""What the mail plugin sends, seen by a stand-in for the service.

The pair runs with dovewarden_notify_socket_path = dwtest-notify, so the
plugin of each instance talks to <base_dir>/dwtest-notify, where this
program listens (answering the VERSION handshake) and records every line.
The real service gets nothing, so no replication happens, except through
the manual doveadm sync of the dsync case.

Checked: the priority of each kind of change (IMAP, POP3, LMTP, doveadm),
one line per command, at most two a second for a busy session, nothing
for read-only access, for a noreplicate user or for dsync's own changes,
fast APPENDs while nobody listens, and the pending notification delivered
once the listener is back."""

import os
import selectors
import smtplib
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.pair import listen_unix  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

SOCKET_NAME = "dwtest-notify"
LINE_TIMEOUT = 1.0    # a notification must arrive within this
QUIET_WINDOW = 0.3    # how long to watch for lines that must not come
APPEND_BOUND = 0.1    # seconds an APPEND may take while nobody listens
RECONNECT_TIMEOUT = 8.0
HOLDOFF = 0.5         # DOVEWARDEN_NOTIFY_HOLDOFF_MSECS
STREAM_SECS = 2.0     # how long a session APPENDs back to back

r = Runner("test-plugin-notify",
           extra_conf="dovewarden_notify_socket_path = " + SOCKET_NAME)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Listener:
    """Records the notify lines sent to one instance's socket."""

    def __init__(self, path, minor=1):
        self.path = path
        # the notify protocol's minor version this listener announces:
        # 0 is a service older than the import (I) lines
        self.minor = minor
        self.lines = []
        self.cond = threading.Condition()
        self.srv = None
        self.thread = None
        self.stopping = False
        # freeze(): stop reading the connections; die(): close them
        # unread, as a service killed with lines in its socket
        self.frozen = False
        self.die_request = threading.Event()
        self.died = threading.Event()

    def start(self):
        self.srv = listen_unix(self.path)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self):
        """Stop listening; the socket file stays, so connects are refused."""
        self.stopping = True
        self.thread.join(5)
        self.srv.close()

    def _loop(self):
        sel = selectors.DefaultSelector()
        sel.register(self.srv, selectors.EVENT_READ)
        bufs = {}
        while not self.stopping:
            if self.die_request.is_set():
                for s in list(bufs):
                    sel.unregister(s)
                    s.close()
                bufs.clear()
                self.frozen = False
                self.die_request.clear()
                self.died.set()
            for key, _ in sel.select(0.05):
                s = key.fileobj
                if self.frozen and s is not self.srv:
                    time.sleep(0.01)
                    continue
                if s is self.srv:
                    c, _ = s.accept()
                    try:
                        c.sendall(b"VERSION\tdovewarden-notify\t1\t%d\n"
                                  % self.minor)
                    except OSError:
                        pass  # the client may be gone already
                    sel.register(c, selectors.EVENT_READ)
                    bufs[c] = b""
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    del bufs[s]
                    continue
                bufs[s] += data
                while b"\n" in bufs[s]:
                    line, bufs[s] = bufs[s].split(b"\n", 1)
                    fields = tuple(line.decode().split("\t"))
                    if fields[0] == "VERSION":
                        continue
                    with self.cond:
                        self.lines.append(fields)
                        self.cond.notify_all()
        for s in list(bufs):
            s.close()
        sel.close()

    def mark(self):
        with self.cond:
            return len(self.lines)

    def freeze(self):
        self.frozen = True

    def die(self):
        """Close every connection without reading what is in it, and read
        again from new ones"""
        self.died.clear()
        self.die_request.set()
        self.died.wait(5)

    def since(self, mark):
        with self.cond:
            return self.lines[mark:]

    def wait(self, mark, count, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.lines) - mark < count:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return self.lines[mark:]


listeners = {}


def listener(pair, side):
    if side not in listeners:
        lst = Listener(os.path.join(pair.dw_dir, side, "run", SOCKET_NAME))
        lst.start()
        listeners[side] = lst
    return listeners[side]


def changes(lines):
    """The client changes (N lines) among lines: [(user, priority)]"""
    return [tuple(f[1:]) for f in lines if f[0] == "N"]


def expect_lines(lst, mark, expected, what):
    """Exactly the expected (user, priority) lines arrive, and no more."""
    got = lst.wait(mark, len(expected), LINE_TIMEOUT)
    time.sleep(QUIET_WINDOW)
    got = [tuple(f[1:]) for f in lst.since(mark)]
    expect(sorted(got) == sorted(expected),
           "%s: expected %r, got %r" % (what, expected, got))


def expect_none(lst, mark, what):
    time.sleep(QUIET_WINDOW)
    got = lst.since(mark)
    expect(got == [], "%s: expected no notification, got %r" % (what, got))


def step(lst, user, prio, what, fn):
    mark = lst.mark()
    fn()
    if prio is None:
        expect_none(lst, mark, what)
    else:
        expect_lines(lst, mark, [(user, prio)], what)


@r.case("IMAP changes notify with their priority, read-only access does not")
def _(pair):
    lst = listener(pair, "A")
    user = "user01"
    m = pair.imap("A", user)
    try:
        step(lst, user, "high", "APPEND",
             lambda: pair.append("A", user, make_message("n1"), conn=m))
        pair.append("A", user, make_message("n2"), conn=m)
        time.sleep(QUIET_WINDOW)
        check_ok(m.select("INBOX"), "SELECT")
        step(lst, user, "low", "STORE \\Seen",
             lambda: m.store("1", "+FLAGS", "\\Seen"))
        step(lst, user, "low", "STORE keyword",
             lambda: m.store("1", "+FLAGS", "kw1"))
        step(lst, user, "low", "CREATE", lambda: m.create("Box1"))
        step(lst, user, "high", "COPY", lambda: m.copy("1:2", "Box1"))
        step(lst, user, "low", "STORE \\Deleted",
             lambda: m.store("2", "+FLAGS", "\\Deleted"))
        step(lst, user, "low", "EXPUNGE", lambda: m.expunge())
        step(lst, user, "low", "SUBSCRIBE", lambda: m.subscribe("Box1"))
        step(lst, user, "low", "UNSUBSCRIBE", lambda: m.unsubscribe("Box1"))
        step(lst, user, "low", "RENAME", lambda: m.rename("Box1", "Box2"))
        step(lst, user, "low", "DELETE", lambda: m.delete("Box2"))
        check_ok(m.select("INBOX", readonly=True), "EXAMINE")
        step(lst, user, None, "FETCH on a read-only mailbox",
             lambda: m.fetch("1:*", "(FLAGS BODY.PEEK[])"))
    finally:
        m.logout()


def append_lines(pair, lst, m, user, tag, more):
    """APPEND in session m while more(APPENDs so far, seconds so far);
    returns the APPENDs, the seconds they took and the lines sent for
    them (waiting for the hold-off of the last one)."""
    mark = lst.mark()
    start = time.monotonic()
    n = 0
    while more(n, time.monotonic() - start):
        pair.append("A", user, make_message("%s%d" % (tag, n)), conn=m)
        n += 1
    elapsed = time.monotonic() - start
    lst.wait(mark, 1, LINE_TIMEOUT)
    time.sleep(HOLDOFF + QUIET_WINDOW)
    return n, elapsed, lst.since(mark)


@r.case("a burst of APPENDs is coalesced")
def _(pair):
    lst = listener(pair, "A")
    user = "user02"
    m = pair.imap("A", user)
    try:
        _n, _secs, got = append_lines(pair, lst, m, user, "burst",
                                      lambda n, _secs: n < 5)
        expect(1 <= len(got) <= 2 and
               all(f[1:] == (user, "high") for f in got),
               "5 quick APPENDs: expected 1-2 high lines, got %r" % got)
        return "%d line(s) for 5 APPENDs" % len(got)
    finally:
        m.logout()


@r.case("a session that APPENDs all the time sends a few lines a second")
def _(pair):
    lst = listener(pair, "A")
    user = "user10"
    m = pair.imap("A", user)
    try:
        # the first APPEND creates the INBOX (a low change of its own)
        append_lines(pair, lst, m, user, "stream-first",
                     lambda n, _secs: n < 1)
        n, elapsed, got = append_lines(pair, lst, m, user, "stream",
                                       lambda _n, secs: secs < STREAM_SECS)
        # one line soon, then at most one per hold-off interval
        bound = int(elapsed / HOLDOFF) + 2
        expect(all(f[1:] == (user, "high") for f in got),
               "expected only high lines, got %r" % got)
        expect(1 <= len(got) <= bound,
               "%d APPENDs in %.1f s: expected 1-%d lines, got %d"
               % (n, elapsed, bound, len(got)))
        return "%d line(s) for %d APPENDs in %.1f s" % (len(got), n,
                                                        elapsed)
    finally:
        m.logout()


@r.case("POP3 DELE, LMTP, doveadm notify")
def _(pair):
    lst = listener(pair, "A")
    user = "user03"
    pair.append("A", user, make_message("p1"))
    pair.append("A", user, make_message("p2"))
    time.sleep(QUIET_WINDOW)

    def pop3_dele():
        p = pair.pop3("A", user)
        p.dele(1)
        p.quit()
    step(lst, user, "low", "POP3 DELE", pop3_dele)

    mark = lst.mark()
    c = smtplib.LMTP("127.0.0.1", pair.port("A", "lmtp"),
                     local_hostname="localhost", timeout=30)
    try:
        c.sendmail("s@example.test", ["user04", "user05"],
                   make_message("lmtp"))
    finally:
        c.quit()
    expect_lines(lst, mark, [("user04", "high"), ("user05", "high")],
                 "LMTP to two recipients")

    step(lst, user, "low", "doveadm mailbox create",
         lambda: pair.doveadm("A", "mailbox", "create", "-u", user, "Dv"))
    step(lst, user, "low", "doveadm flags add",
         lambda: pair.doveadm("A", "flags", "add", "-u", user, "\\Flagged",
                              "mailbox", "INBOX", "ALL"))
    step(lst, user, "low", "doveadm mailbox delete",
         lambda: pair.doveadm("A", "mailbox", "delete", "-u", user, "Dv"))


@r.case("no notification for a noreplicate user")
def _(pair):
    lst = listener(pair, "A")
    step(lst, "norepl", None, "APPEND by norepl",
         lambda: pair.append("A", "norepl", make_message("nr")))
    expect(any("norepl" in l and "noreplicate is set" in l
               for l in pair.log_since_mark("A")),
           "no debug line about noreplicate in A's log")


@r.case("dsync's own message changes are reported as imports only")
def _(pair):
    lst_a, lst_b = listener(pair, "A"), listener(pair, "B")
    user = "user06"

    def change_a(*ops):
        m = pair.imap("A", user)
        try:
            for op in ops:
                op(m)
        finally:
            m.logout()
        time.sleep(QUIET_WINDOW)

    def sync_quietly(what, b_reports=True):
        """A one-sided change: B's dsync-server reports importing it
        (I, none), nothing asks for a sync, and A's own dsync, which
        imports nothing from B, reports nothing."""
        mark_a, mark_b = lst_a.mark(), lst_b.mark()
        pair.manual_sync(user, "A")
        expect_none(lst_a, mark_a, "A during " + what)
        got = lst_b.since(mark_b)
        expect(not changes(got), "B during %s: dsync's changes notified "
               "as client changes: %r" % (what, got))
        if b_reports:
            expect(got and all(f == ("I", user, "none") for f in got),
                   "B during %s: expected imports of %s, got %r"
                   % (what, user, got))
        else:
            # only the last line of an ending process, sent before it
            # read the service's version, may be an import
            expect(all(f[0] == "I" for f in got[-1:]) and
                   not got[:-1], "B during %s (a service older than "
                   "imports): expected nothing, got %r" % (what, got))

    change_a(lambda m: pair.append("A", user, make_message("d1"), conn=m))
    # the first sync creates the user's INBOX on B: a mailbox list change,
    # which asks for a sync back (see the next case)
    pair.manual_sync(user, "A")
    time.sleep(QUIET_WINDOW)
    change_a(lambda m: pair.append("A", user, make_message("d1b"), conn=m))
    sync_quietly("the first sync")
    change_a(lambda m: check_ok(m.select("INBOX"), "SELECT"),
             lambda m: check_ok(m.store("1", "+FLAGS", "\\Answered"),
                                "STORE"),
             lambda m: pair.append("A", user, make_message("d2"), conn=m))
    sync_quietly("the second sync")
    expect(pair.snapshot("B", user).count() == 3, "the sync missed B")
    expect(any("Reporting changes made by dsync as imports" in l
               for l in pair.log_since_mark("B")),
           "no debug line about dsync's imports in B's log")
    # a service that doesn't know imports gets none
    lst_b.stop()
    old_b = Listener(lst_b.path, minor=0)
    old_b.start()
    listeners["B"] = lst_b = old_b
    change_a(lambda m: pair.append("A", user, make_message("d3"), conn=m))
    sync_quietly("a sync to a service older than imports", b_reports=False)


@r.case("dsync's mailbox list changes ask for a low sync once, and stop")
def _(pair):
    lst_a, lst_b = listener(pair, "A"), listener(pair, "B")
    user = "user09"
    pair.append("A", user, make_message("m1"))
    pair.manual_sync(user, "A")
    time.sleep(QUIET_WINDOW)
    m = pair.imap("A", user)
    try:
        check_ok(m.create("Lst/Sub"), "CREATE")
        check_ok(m.subscribe("Lst/Sub"), "SUBSCRIBE")
    finally:
        m.logout()
    time.sleep(QUIET_WINDOW)
    # Each sync may echo low notifications for mailboxes it created (a
    # \\Noselect parent becomes a real mailbox); alternate syncs until a
    # round is quiet, which must come soon.
    got = []
    for rnd in range(4):
        mark_a, mark_b = lst_a.mark(), lst_b.mark()
        pair.manual_sync(user, "A" if rnd % 2 == 0 else "B")
        time.sleep(QUIET_WINDOW)
        # an import, or for B's listener (a service older than imports,
        # see the case before) a low change
        lines = lst_a.since(mark_a) + lst_b.since(mark_b)
        expect(all(f in (("I", user, "low"), ("I", user, "none"),
                         ("N", user, "low")) for f in lines),
               "dsync's mailbox changes may only ask for a low sync, "
               "got %r" % lines)
        new = [f for f in lines if f[2] == "low"]
        got += new
        if not new and rnd > 0:
            break
    else:
        raise AssertionError("dsync kept echoing mailbox changes: %r" % got)
    expect(not pair.compare(user), "A and B differ after the syncs")
    return "%d low notification(s) from dsync" % len(got)


@r.case("a service that dies without reading gets the notification again")
def _(pair):
    lst = listener(pair, "A")
    user = "user08"
    m = pair.imap("A", user)
    try:
        step(lst, user, "high", "APPEND",
             lambda: pair.append("A", user, make_message("r1"), conn=m))
        lst.freeze()
        mark = lst.mark()
        pair.append("A", user, make_message("r2"), conn=m)
        # past the holdoff: the line is in the service's socket
        time.sleep(1.0)
        expect(lst.since(mark) == [], "the frozen listener read a line")
        lst.die()
        expect_lines(lst, mark, [(user, "high")],
                     "the notification the service did not read")
    finally:
        m.logout()


@r.case("nobody listening: APPENDs stay fast, the change is sent later")
def _(pair):
    lst = listener(pair, "A")
    user = "user07"
    pair.append("A", user, make_message("first"))
    time.sleep(QUIET_WINDOW)
    lst.stop()
    m = pair.imap("A", user)
    try:
        times = [pair.append("A", user, make_message("down%d" % i), conn=m)
                 for i in range(5)]
        expect(max(times) < APPEND_BOUND,
               "APPEND took %.3f s while nobody listened" % max(times))
        time.sleep(0.5)
        mark = lst.mark()
        lst.start()
        got = lst.wait(mark, 1, RECONNECT_TIMEOUT)
        expect([f[1:] for f in got] == [(user, "high")],
               "after the listener came back: expected one high line, "
               "got %r" % got)
    finally:
        m.logout()
    # logged when the listener's handshake arrives, which may be a moment
    # after the listener read the notification
    pair.wait_log("A", lambda l: "Reconnected to" in l, 5,
                  "a 'Reconnected' line in A's log")
    log = pair.log_since_mark("A")
    expect(sum("keeping notifications pending" in l for l in log) == 1,
           "expected exactly one connection warning")
    return "APPENDs took at most %.1f ms" % (max(times) * 1000)


@r.case("a session that ends while nobody listens logs the lost change")
def _(pair):
    lst = listener(pair, "A")
    user = "user08"
    lst.stop()
    try:
        t = pair.append("A", user, make_message("lost"))
        expect(t < APPEND_BOUND, "APPEND took %.3f s" % t)
        # the session ends after LOGOUT's reply: keep the socket dead
        # until its last attempt has failed
        wait_until(
            lambda: any(user in l and "notification lost" in l
                        for l in pair.log_since_mark("A")),
            5, "a 'notification lost' warning for " + user)
    finally:
        lst.start()


def cleanup():
    for lst in listeners.values():
        if not lst.stopping:
            lst.stop()


if __name__ == "__main__":
    try:
        run(r)
    finally:
        cleanup()
