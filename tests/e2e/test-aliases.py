#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Names that the userdb resolves to another user (ALICE and AlIcE with
auth_username_format = %{user | lower}) must not become queue users of
their own that each sync the same mailbox: the queue keeps the userdb's
name only."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.pair import conf_by_series  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

r = Runner("test-aliases",
           extra_conf=conf_by_series("auth_username_format = %{user | lower}",
                                     "auth_username_format = %Lu"))

ALIASES = ("ALICE", "AlIcE")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


@r.case("aliases are replicated as the userdb's user and forgotten")
def _(pair):
    pair.append("A", "alice", make_message("alias prime"))
    pair.wait_converged("alice", 15, "the first change")
    before = pair.dw_users("A", "alice")["alice"]["fast_sync"]
    time.sleep(1.1)
    for name in ALIASES:
        out = pair.dw("A", "replicate", name).stdout.strip()
        expect(out == "1 users updated", "replicate %s: %r" % (name, out))

    def settled():
        users = pair.dw_users("A", "*")
        return (not any(a in users for a in ALIASES) and
                users["alice"]["fast_sync"] != before)
    wait_until(settled, 15, "the aliases to be replicated as alice and "
               "forgotten")
    # they stay forgotten
    time.sleep(2)
    users = pair.dw_users("A", "*")
    expect(not any(a in users for a in ALIASES),
           "aliases back in the queue: %s" % sorted(
               u for u in users if u.lower() == "alice"))
    pair.wait_converged("alice", 15, "after the aliases")
    return "queue users like alice: %s" % sorted(
        u for u in users if u.lower() == "alice")


if __name__ == "__main__":
    run(r)
