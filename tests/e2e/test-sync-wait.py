#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Synchronous replication of new mail (dovewarden_sync_wait = 5s).

New mail must already be on B when the client gets its OK: every check
looks at B right after the OK, over an IMAP connection to B opened before
(NOOP, then UID SEARCH for the Message-ID), without waiting any further.
With B stopped, APPEND and LMTP delivery still succeed, after about the
timeout, and the mail reaches B once it is back. Flag changes never wait.
"""

import os
import re
import signal
import socket
import statistics
import time

from dwtest.clients import BView, make_message
from dwtest.common import wait_until
from dwtest.load import appends_checked_on_b
from dwtest.runner import Runner, run

WAIT_SECS = 5.0
r = Runner("sync-wait", extra_conf="dovewarden_sync_wait = 5s")

N_MESSAGES = int(os.environ.get("DW_SYNC_WAIT_N", "100"))


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def fmt_latency(values):
    return "median %.0f ms, p90 %.0f ms, max %.0f ms" % (
        statistics.median(values) * 1000, percentile(values, 90) * 1000,
        max(values) * 1000)


class Lmtp:
    """A minimal LMTP client: smtplib reads only one reply after DATA,
    but LMTP sends one per recipient."""

    def __init__(self, pair):
        self.sock = socket.create_connection(
            ("127.0.0.1", pair.port("A", "lmtp")), timeout=60)
        self.f = self.sock.makefile("rb")
        self._reply()
        self._cmd("LHLO client.test")

    def _reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise AssertionError("LMTP connection closed")
            lines.append(line.decode().rstrip())
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def _cmd(self, line, expect=(250,)):
        self.sock.sendall(line.encode() + b"\r\n")
        code, lines = self._reply()
        assert code in expect, "LMTP %s: %r" % (line, lines)
        return code

    def send(self, rcpts, msg):
        """Deliver msg; returns the seconds from the end of the data to
        the last recipient's reply."""
        self._cmd("MAIL FROM:<sender@example.test>")
        for rcpt in rcpts:
            self._cmd("RCPT TO:<%s>" % rcpt)
        self._cmd("DATA", expect=(354,))
        data = re.sub(rb"(?m)^\.", b"..", msg)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        t0 = time.monotonic()
        self.sock.sendall(data + b".\r\n")
        for rcpt in rcpts:
            code, lines = self._reply()
            assert code == 250, "LMTP delivery to %s: %r" % (rcpt, lines)
        return time.monotonic() - t0

    def close(self):
        try:
            self._cmd("QUIT", expect=(221,))
        except Exception:
            pass
        self.sock.close()


@r.case("IMAP APPEND: %d of %d on B at OK" % (N_MESSAGES, N_MESSAGES))
def _(pair):
    user = "alice"
    b = BView(pair, user)
    a = pair.imap("A", user)
    missing, times = [], []
    try:
        for i in range(N_MESSAGES):
            msg = make_message("sync-wait append %d" % i)
            times.append(pair.append("A", user, msg, conn=a))
            if not b.has(msg):
                missing.append(i)
    finally:
        a.logout()
        b.close()
    assert not missing, "%d of %d APPENDs were not on B at OK (first: %r)" % (
        len(missing), N_MESSAGES, missing[:10])
    return "%d/%d on B; APPEND %s" % (N_MESSAGES, N_MESSAGES,
                                      fmt_latency(times))


@r.case("LMTP delivery: %d of %d on B at OK" % (N_MESSAGES, N_MESSAGES))
def _(pair):
    user = "bob"
    pair.touched.add(user)
    b = BView(pair, user)
    c = Lmtp(pair)
    missing, times = [], []
    try:
        for i in range(N_MESSAGES):
            msg = make_message("sync-wait lmtp %d" % i)
            times.append(c.send([user], msg))
            if not b.has(msg):
                missing.append(i)
    finally:
        c.close()
        b.close()
    assert not missing, "%d of %d deliveries were not on B at OK " \
        "(first: %r)" % (len(missing), N_MESSAGES, missing[:10])
    return "%d/%d on B; delivery %s" % (N_MESSAGES, N_MESSAGES,
                                        fmt_latency(times))


@r.case("LMTP with 4 recipients: all on B at OK, syncs run together")
def _(pair):
    users = ["carol", "dave", "erin", "frank"]
    for u in users:
        pair.touched.add(u)
    views = {u: BView(pair, u) for u in users}
    c = Lmtp(pair)
    times, missing = [], []
    try:
        for i in range(10):
            msg = make_message("sync-wait multi %d" % i)
            times.append(c.send(users, msg))
            missing += ["%s#%d" % (u, i) for u in users
                        if not views[u].has(msg)]
    finally:
        c.close()
        for v in views.values():
            v.close()
    assert not missing, "not on B at OK: %r" % missing
    return "40/40 on B; 4-recipient delivery %s" % fmt_latency(times)


@r.case("Concurrent APPENDs of one user (waits share syncs)")
def _(pair):
    user = "user01"
    rounds = 20
    times, errors = appends_checked_on_b(pair, [user] * 3, rounds,
                                         "sync-wait concurrent")
    assert not errors, "\n".join(errors[:20])
    # testenv/pair logs the service's debug lines: one per started sync
    syncs = [l for l in pair.log_since_mark("A")
             if "dovewarden: Debug: %s: Starting " % user in l]
    assert 0 < len(syncs) < len(times), \
        "%d syncs for %d waits: waits did not share syncs" % (
            len(syncs), len(times))
    return "%d/%d on B, %d syncs; APPEND %s" % (
        len(times), 3 * rounds, len(syncs), fmt_latency(times))


def set_userdb_field(pair, user, field):
    """Give user an extra userdb field in A's passwd-file (re-read on
    change)."""
    path = os.path.join(pair.dw_dir, "A", "users")
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        if line.startswith(user + ":"):
            line = line + ("" if line.endswith(":") else " ") + field
        out.append(line)
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.rename(path + ".tmp", path)


@r.case("B stopped: APPEND OK after the timeout, warning once, then on B")
def _(pair):
    user = "user02"
    set_userdb_field(pair, "user03", "userdb_dovewarden_sync_wait=0")
    set_userdb_field(pair, "user04", "userdb_dovewarden_sync_wait=1s")
    # the users exist on B before it goes away
    for u in (user, "user03", "user04"):
        pair.append("A", u, make_message("sync-wait before"))
    pair.stop_one("B")
    try:
        a = pair.imap("A", user)
        try:
            msgs = [make_message("sync-wait B down %d" % i) for i in range(2)]
            times = [pair.append("A", user, m, conn=a) for m in msgs]
            a.select("INBOX")
            t0 = time.monotonic()
            typ, _ = a.store("1:*", "+FLAGS", "(\\Flagged)")
            t_store = time.monotonic() - t0
            assert typ == "OK"
            t0 = time.monotonic()
            typ, _ = a.copy("1", "INBOX")
            t_copy = time.monotonic() - t0
            assert typ == "OK"
        finally:
            a.logout()
        t_user03 = pair.append("A", "user03", make_message("sync-wait 0"))
        t_user04 = pair.append("A", "user04", make_message("sync-wait 1s"))

        c = Lmtp(pair)
        try:
            lmsg = make_message("sync-wait B down lmtp")
            t_lmtp = c.send(["user05", "user06", "user07"], lmsg)
        finally:
            c.close()
        pair.touched.update(["user05", "user06", "user07"])
    finally:
        pair.start_one("B")
        restarted = time.monotonic()

    for i, t in enumerate(times):
        assert 4.5 <= t <= 7.0, "APPEND %d took %.2f s with B stopped" % (i, t)
    assert t_store < 0.5, "STORE took %.2f s with B stopped" % t_store
    assert t_copy < 0.5, "COPY took %.2f s with B stopped" % t_copy
    assert t_user03 < 0.5, \
        "APPEND of user03 (userdb sync_wait=0) took %.2f s" % t_user03
    assert 0.8 <= t_user04 <= 2.5, \
        "APPEND of user04 (userdb sync_wait=1s) took %.2f s" % t_user04
    assert 4.5 <= t_lmtp <= 7.0, \
        "3-recipient LMTP delivery took %.2f s with B stopped" % t_lmtp

    warnings = [l for l in pair.log_since_mark("A")
                if "imap(%s)" % user in l and "Sync wait for user" in l
                and "Warning" in l]
    assert len(warnings) == 1, "expected one warning, got %r" % warnings
    assert ("Sync wait for user %s timed out after 5000 ms - replicating "
            "in the background" % user) in warnings[0], warnings[0]

    # nothing new happens for the user: the service's retry brings them
    b = BView(pair, user, prime=False)
    try:
        for m in msgs:
            wait_until(lambda: b.has(m), 120, "the message on B")
        waited = time.monotonic() - restarted
    finally:
        b.close()
    return ("APPEND %.2f s, %.2f s; STORE %.3f s; COPY %.3f s; userdb 0: "
            "%.3f s, 1s: %.2f s; LMTP x3 %.2f s; on B %.1f s after restart"
            % (times[0], times[1], t_store, t_copy, t_user03, t_user04,
               t_lmtp, waited))


@r.case("Service hung or unreachable: the wait stays bounded")
def _(pair):
    user = "user08"
    pair.append("A", user, make_message("sync-wait before"))
    pid = pair.service_pid("A")
    os.kill(pid, signal.SIGSTOP)
    try:
        t_hung = pair.append("A", user, make_message("sync-wait hung"))
    finally:
        os.kill(pid, signal.SIGCONT)
    sock = os.path.join(pair.dw_dir, "A", "run", "dovewarden-notify")
    os.rename(sock, sock + ".away")
    try:
        t_gone = pair.append("A", user, make_message("sync-wait gone"))
    finally:
        os.rename(sock + ".away", sock)
    assert 4.5 <= t_hung <= 7.0, \
        "APPEND took %.2f s with the service stopped" % t_hung
    assert t_gone < 0.5, \
        "APPEND took %.2f s without the service socket" % t_gone
    return "hung service: APPEND %.2f s; no socket: APPEND %.3f s" % (
        t_hung, t_gone)


@r.case("Everything touched converges")
def _(pair):
    pair.wait_converged(sorted(pair.touched), timeout=120)


if __name__ == "__main__":
    run(r)
