# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""What every part of the end-to-end harness shares: the two sides, the
users of testenv/pair, polling and Dovecot's time formats."""

import re
import time

SIDES = ("A", "B")

# Users of testenv/pair (not "norepl", which has replication turned off)
NAMED_USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
NUMBERED_USERS = ["user%02d" % i for i in range(1, 41)]
ALL_USERS = NUMBERED_USERS + NAMED_USERS

POLL_INTERVAL = 0.1


class Skip(Exception):
    pass


def password(user):
    return user + "pass" if user in NAMED_USERS else "pass"


def peer(side):
    return "B" if side == "A" else "A"


def wait_until(pred, timeout, what, interval=POLL_INTERVAL):
    """Poll pred() until it returns a true value; returns that value.
    Raises AssertionError naming what after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError("timed out after %.1f s waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


_TIME_UNITS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1,
               "seconds": 1, "m": 60, "min": 60, "mins": 60, "minute": 60,
               "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600,
               "d": 86400, "day": 86400, "days": 86400, "ms": 0.001,
               "msec": 0.001, "msecs": 0.001}


def time_secs(value):
    """A Dovecot time setting as doveconf prints it ("10 secs", "10s",
    "1min", "500ms", "0") -> seconds as float; None for None or an
    unparsable value."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
    if not m or m.group(2) not in _TIME_UNITS:
        return None
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def hms_secs(value):
    """doveadm dovewarden status's "hh:mm:ss" -> seconds; "-" -> None."""
    if value in (None, "", "-"):
        return None
    h, m, s = (int(x) for x in str(value).split(":"))
    return h * 3600 + m * 60 + s
