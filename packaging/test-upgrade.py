#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""An upgrade of the installed package while Dovecot runs (packaging/
test-deb runs it inside its chroot, where the package is installed):

    test-upgrade.py NEW.deb

The "old" package is NEW.deb repacked with a lower version (the same
files), installed first over NEW: so this tests what the upgrade itself
does (the maintainer scripts, conffiles, files replaced under running
processes, the queue state left in state_dir), not a change of the
protocol between two commits.

(a) Before: the pair replicates with the old package, and A's queue
    knows every user (its userdb sweep).
(b) The new package is installed while A and B run: a session opened
    before still runs the old plugin, its next change reaches B, and so
    does one of a new session.
(c) A restarted (its service now the new binary) loads the queue state
    the old one saved: the same users."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

NEW = sys.argv[1]
r = Runner("test-upgrade")
state = {}


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True,
                          text=True).stdout


def make_old(new):
    """NEW.deb with the version ~old appended (sorts before it)."""
    d = tempfile.mkdtemp()
    sh("dpkg-deb", "-R", new, d + "/pkg")
    ctl = d + "/pkg/DEBIAN/control"
    with open(ctl) as f:
        text = f.read()
    lines = [("Version: %s~old" % l.split(": ", 1)[1])
             if l.startswith("Version: ") else l for l in text.splitlines()]
    with open(ctl, "w") as f:
        f.write("\n".join(lines) + "\n")
    old = d + "/old.deb"
    sh("dpkg-deb", "-b", d + "/pkg", old)
    return old, d


def queue_users(pair):
    return set(pair.dw_users("A"))


@r.case("(a) the old package replicates; A's queue knows every user")
def _(pair):
    wait_until(lambda: len(queue_users(pair)) >= 40, 20,
               "A's sweep to queue the users")
    pair.append("A", "alice", make_message("upgrade-a"))
    pair.wait_converged("alice", 20, "alice with the old package")
    # a session that keeps the old plugin loaded through the upgrade
    m = pair.imap("A", "bob")
    check_ok(m.select("INBOX"), "SELECT")
    state["old_session"] = m
    state["users"] = queue_users(pair)
    return "%d users queued on A (%s)" % (
        len(state["users"]), sh("dpkg-query", "-W", "dovewarden").strip())


@r.case("(b) upgrade while running: an old session and a new one replicate")
def _(pair):
    sh("dpkg", "-i", NEW)
    ver = sh("dpkg-query", "-W", "dovewarden").strip()
    expect("~old" not in ver, "the upgrade did not happen: %s" % ver)
    m = state["old_session"]
    msg = make_message("upgrade-old-session")
    pair.append("A", "bob", msg, conn=m)
    check_ok(m.noop(), "NOOP")
    m.logout()
    pair.wait_converged("bob", 20, "bob's change from the old session")
    expect(msg_hash(msg) in pair.snapshot("B", "bob").hashes(),
           "the old session's message is not on B")
    pair.append("A", "carol", make_message("upgrade-new-session"))
    pair.wait_converged("carol", 20, "carol's change from a new session")
    return "upgraded to %s" % ver


@r.case("(c) A restarted on the new service keeps its queue state")
def _(pair):
    pair.stop_one("A")
    pair.mark_log("A")
    pair.start_one("A")
    line = pair.wait_log("A", lambda l: "Loaded " in l and
                         "dovewarden.db" in l, 20,
                         "A's new service to load the state file")
    loaded = int(line.split("Loaded ", 1)[1].split()[0])
    expect(loaded >= len(state["users"]),
           "the new service loaded %d users, the old one had %d: %s"
           % (loaded, len(state["users"]), line))
    users = queue_users(pair)
    missing = state["users"] - users
    expect(not missing, "users lost by the upgrade: %s" % sorted(missing))
    pair.append("A", "dave", make_message("upgrade-after-restart"))
    pair.wait_converged("dave", 20, "dave after the restart")
    return "%d users kept" % len(users)


if __name__ == "__main__":
    old, tmp = make_old(NEW)
    try:
        sh("dpkg", "-i", old)
    finally:
        shutil.rmtree(tmp)
    run(r)
