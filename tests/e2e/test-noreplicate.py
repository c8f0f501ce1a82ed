#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Per-user replication settings from the userdb.

(a) norepl has userdb_noreplicate=yes (the 2.3 field name): its changes on
    A never reach B, not even when an admin asks with `doveadm dovewarden
    replicate [-f] norepl`; the service logs why it does not replicate.
(b) A user whose userdb sets dovewarden_replica to a port where nobody
    listens fails, with the reason in the status, while another user
    changed at the same time replicates; the same for mail_replica (the
    2.3 name). The users files are edited after the start (passwd-file
    rereads a changed file)."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

ABSENCE_WINDOW = 3.0   # how long B is watched for what must not come
OVERRIDE_USERS = {"user38": "dovewarden_replica", "user39": "mail_replica"}

r = Runner(
    "test-noreplicate",
    extra_conf="dovewarden_retry_min_interval = 1s\n"
               "dovewarden_retry_max_interval = 3s")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def assert_never_on_b(pair, user, hashes, window=ABSENCE_WINDOW):
    end = time.monotonic() + window
    while True:
        if pair.inbox_dir_exists("B", user):
            got = set(hashes) & pair.snapshot("B", user).hashes()
            expect(not got, "%d of %d messages of %s reached B"
                   % (len(got), len(hashes), user))
        if time.monotonic() >= end:
            return
        time.sleep(0.2)


@r.case("(a) noreplicate user: changes and admin requests never reach B")
def _(pair):
    user = "norepl"
    msgs = [make_message("norepl-%d" % i) for i in range(3)]
    m = pair.imap("A", user)
    try:
        for msg in msgs:
            pair.append("A", user, msg, conn=m)
        check_ok(m.select("INBOX"), "SELECT")
        check_ok(m.store("1", "+FLAGS", "\\Flagged"), "STORE")
        check_ok(m.create("NoReplBox"), "CREATE")
    finally:
        m.logout()
    hashes = [msg_hash(x) for x in msgs]
    assert_never_on_b(pair, user, hashes)

    for args in (["replicate", user], ["replicate", "-f", "-p", "sync",
                                       user]):
        pair.mark_log("A")
        out = pair.dw("A", *args).stdout.strip()
        expect(out == "1 users updated", "%s: output %r" % (args, out))
        line = pair.wait_log(
            "A", lambda l: "%s: Not replicating: " % user in l
            and "noreplicate" in l, 10,
            "A's service to log why %s is not replicated" % user)
        assert_never_on_b(pair, user, hashes)
    expect(not pair.inbox_dir_exists("B", user) or
           "NoReplBox" not in pair.snapshot("B", user).mailboxes,
           "norepl's new mailbox reached B")
    return line.split("Debug: ")[-1]


@r.case("(b) userdb replica override: a bogus replica fails, others sync")
def _(pair):
    port = free_port()
    bogus = "tcp:127.0.0.1:%d" % port
    # both servers' userdbs: with the Redis queue either service may run
    # a user's sync, with its own userdb (a pair shares one in practice)
    for side in ("A", "B"):
        pair.set_userdb_fields(side, {u: "%s=%s" % (f, bogus)
                                      for u, f in OVERRIDE_USERS.items()})

    # the overridden users first: their failures must not be taken for
    # an outage of the global replica that the good user's sync ends
    hashes = {}
    for u in sorted(OVERRIDE_USERS):
        msg = make_message("override-" + u)
        pair.append("A", u, msg)
        hashes[u] = msg_hash(msg)
    for u in sorted(OVERRIDE_USERS):
        st = wait_until(
            lambda: (lambda s: s if s and int(s["failed"]) >= 1 else None)(
                pair.dw_users("A", u).get(u)), 15,
            "a failed sync of %s to %s" % (u, bogus))
        expect(st["last_error"] not in ("", "-"), "%s: no last error: %r"
               % (u, st))
        pair.wait_log("A", lambda l: "%s: Starting " % u in l and bogus in l,
                      5, "A's service to sync %s to %s" % (u, bogus))
    good = "user37"
    pair.append("A", good, make_message("override-" + good))
    pair.wait_converged(good, 20, "the user without an override")
    for u in sorted(OVERRIDE_USERS):
        expect(hashes[u] not in (pair.snapshot("B", u).hashes()
                                 if pair.inbox_dir_exists("B", u) else ()),
               "%s's message reached B despite its replica override" % u)
    expect(not [l for l in pair.log_since_mark("A")
                if "The replica answers again" in l],
           "failures to a user's own replica were taken for an outage of "
           "the global one, which user37's sync then ended")
    return "replica override %s honoured for %s" % (
        bogus, ", ".join("%s (%s)" % (u, f)
                         for u, f in sorted(OVERRIDE_USERS.items())))


if __name__ == "__main__":
    run(r)
