#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""An upgrade of the installed package while Dovecot runs (packaging/
test-deb runs it inside its chroot, where NEW is installed):

    test-upgrade.py OLD.deb NEW.deb

OLD is the package of an earlier commit (test-deb builds it; see there
which one). It replaces what is installed (purged first), then the pair
runs on it and NEW is installed over it. So this tests what the upgrade
does (the maintainer scripts, conffiles, files replaced under running
processes) and what changed between the two commits: the queue state file
that the old service saved, the new plugin's notifications to the service
still running the old binary.

(a) Before: the pair replicates with the old package, and A's queue
    knows every user (its userdb sweep).
(b) The new package is installed while A and B run: a session opened
    before still runs the old plugin, its next change reaches B, and so
    does one of a new session.
(c) A restarted (its service now the new binary) loads the queue state
    the old one saved: the same users."""

import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

OLD, NEW = sys.argv[1:3]
r = Runner("test-upgrade")
state = {}


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True,
                          text=True).stdout


def deb_version(deb):
    return sh("dpkg-deb", "-f", deb, "Version").strip()


def installed_version():
    return sh("dpkg-query", "-W", "-f", "${Version}", "dovewarden").strip()


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
    ver = installed_version()
    expect(ver == deb_version(OLD), "the old package is not installed: %s"
           % ver)
    return "%d users queued on A (dovewarden %s)" % (len(state["users"]),
                                                   ver)


@r.case("(b) upgrade while running: an old session and a new one replicate")
def _(pair):
    sh("dpkg", "-i", NEW)
    ver = installed_version()
    expect(ver == deb_version(NEW), "the upgrade did not happen: %s" % ver)
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
    if subprocess.run(["dpkg", "--compare-versions", deb_version(OLD), "lt",
                       deb_version(NEW)]).returncode != 0:
        sys.exit("%s is not older than %s" % (OLD, NEW))
    sh("dpkg", "--purge", "dovewarden")
    sh("dpkg", "-i", OLD)
    run(r)
