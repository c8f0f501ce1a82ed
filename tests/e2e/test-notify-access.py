#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Only mail processes notify, and only for their own users.

The notify socket is mode 0666 (mail processes of any uid connect), so
the service checks each request: its peer's uid must be root, mail_uid
(5000 here) or the uid the userdb gives the user. A local user with
another uid can't queue anybody (a wait is answered "Permission denied",
the same for a user that does not exist, so it learns nothing), the
refusals are counted in /metrics, and mail_uid's processes still
notify."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.notify import HELLO, notify_connect  # noqa: E402
from dwtest.notify import as_uid as notify_as_uid  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.web import http_listener_conf, http_port, scrape  # noqa: E402

MAIL_UID = 5000
OTHER_UID = 4321


def side_conf(pair):
    return {s: http_listener_conf(http_port(pair, s)) for s in SIDES}


r = Runner("test-notify-access", side_conf=side_conf)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def as_uid(uid, pair, lines, replies):
    """Connect to A's notify socket as uid (in a child process), send
    lines and return the first `replies` reply lines."""
    def client():
        s = notify_connect(pair, timeout=10)
        s.sendall(HELLO + b"".join(x + b"\n" for x in lines))
        buf = b""
        # the service's VERSION line, then the replies
        while buf.count(b"\n") < replies + 1:
            data = s.recv(4096)
            if not data:
                break
            buf += data
        s.close()
        return buf

    out = notify_as_uid(uid, client)
    return out.decode().split("\n")[1:1 + replies]


def refused(pair):
    _, m = scrape(http_port(pair, "A"))
    return m.value("dovewarden_notify_refused_total")


def fast_sync(pair, user):
    return pair.dw_users("A", user)[user]["fast_sync"]


@r.case("another uid can't notify or learn which users exist")
def _(pair):
    before = refused(pair)
    replies = as_uid(OTHER_UID, pair, [
        b"N\tuser01\thigh",
        b"W\t7\tuser01\t5000",
        b"W\t8\tdwtest-nosuchuser\t5000",
    ], 2)
    expect(len(replies) == 2, "replies %r" % replies)
    expect(replies[0].startswith("-\t7\t") and
           replies[1].startswith("-\t8\t"), "replies %r" % replies)
    known = replies[0].split("\t", 2)[2]
    unknown = replies[1].split("\t", 2)[2]
    expect(known == unknown, "a known and an unknown user are answered "
           "differently: %r" % replies)
    expect("Permission denied" in known, "replies %r" % replies)
    wait_until(lambda: refused(pair) >= before + 3, 10,
               "3 refusals counted")
    pair.wait_log("A", lambda l: "Refused a request for user user01 from "
                  "uid %d" % OTHER_UID in l, 10, "the refusal's log line")
    return "replies %r" % replies


@r.case("mail_uid's processes and root notify")
def _(pair):
    for uid, user in ((MAIL_UID, "user02"), (0, "user03")):
        before = fast_sync(pair, user)
        time.sleep(1.1)
        replies = as_uid(uid, pair, [
            b"N\t" + user.encode() + b"\thigh",
            b"W\t9\t" + user.encode() + b"\t10000",
        ], 1)
        expect(replies and replies[0] == "+\t9",
               "uid %d: wait answered %r" % (uid, replies))
        expect(fast_sync(pair, user) != before, "uid %d: %s not synced"
               % (uid, user))
    return "uid %d and root notified and waited" % MAIL_UID


if __name__ == "__main__":
    run(r)
