#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The output of every `doveadm dovewarden` command, in the default table
format, with -f json (parsed) and with -f tab, and its exit codes.

To see queued users with their priority and a running sync, the service
runs with dovewarden_max_syncs = 1 and one sync is held: B is stopped and
a fake doveadm server that accepts but never answers listens on B's
doveadm port, so the sync of the holder user hangs and every other user
stays queued. At the end the fake is closed, B started, and the held and
queued users must sync."""

import json
import os
import re
import socket
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message, msg_hash  # noqa: E402
from dwtest.common import hms_secs, wait_until  # noqa: E402
from dwtest.pair import SilentListener, dovecot_series  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

# doveadm replicator ... is dovewarden's on 2.4; 2.3's own stays there
# (the cases ask A)
ALIASES = dovecot_series("A") != "2.3"

EX_USAGE, EX_NOUSER, EX_TEMPFAIL = 64, 67, 75
USER_COLUMNS = ["username", "priority", "fast sync", "full sync",
                "success sync", "failed", "next sync", "last error",
                "verified", "repaired"]
USER_FIELDS = ["username", "priority", "fast_sync", "full_sync",
               "success_sync", "failed", "next_sync", "last_error",
               "verified", "repaired"]
DSYNC_FIELDS = ["username", "type", "status", "running"]

r = Runner(
    "test-doveadm-commands",
    extra_conf="dovewarden_max_syncs = 1\n"
               "dovewarden_retry_min_interval = 1s\n"
               "dovewarden_retry_max_interval = 3s")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def overview_value(ov, pattern):
    """The value of the one overview field whose label matches."""
    hits = [v for k, v in ov.items() if re.search(pattern, k, re.I)]
    expect(len(hits) == 1, "overview: %d fields match %r: %r"
           % (len(hits), pattern, ov))
    return hits[0]


def parse_tab(out):
    lines = out.splitlines()
    expect(lines, "-f tab printed nothing")
    head = lines[0].split("\t")
    return head, [dict(zip(head, x.split("\t"))) for x in lines[1:]]


def dw_fail(pair, *args, fmt=None):
    return pair.dw("A", *args, fmt=fmt, check=False)


@r.case("status: the overview in table, json and tab format")
def _(pair):
    # the userdb sweep at the start makes the users known (with the Redis
    # backend after the instance got its lock)
    wait_until(
        lambda: overview_value(pair.dw_overview("A"), r"known users") > 0,
        10, "the first userdb sweep")
    table = pair.dw("A", "status").stdout.splitlines()
    js = json.loads(pair.dw("A", "status", fmt="json").stdout)
    head, tab = parse_tab(pair.dw("A", "status", fmt="tab").stdout)

    expect(isinstance(js, list) and len(js) >= 5, "json: %r" % js)
    expect(all(set(d) == {"field", "value"} for d in js),
           "json entries must have field and value: %r" % js)
    ov = {d["field"]: int(d["value"]) for d in js}
    known = overview_value(ov, r"known users")
    expect(known >= 1, "no known users after the start: %r" % ov)
    for pat in (r"'sync'", r"'high'", r"'low'", r"running", r"fail"):
        vals = [v for k, v in ov.items() if re.search(pat, k, re.I)]
        expect(vals and all(v >= 0 for v in vals),
               "overview has no field for %s: %r" % (pat, ov))

    expect(head == ["field", "value"], "-f tab header %r" % head)
    expect([d["field"] for d in tab] == [d["field"] for d in js],
           "-f tab and -f json list different fields: %r / %r"
           % (tab, js))
    expect(all(re.fullmatch(r"\d+", d["value"]) for d in tab),
           "-f tab values must be numbers: %r" % tab)

    expect(len(table) == len(js), "table has %d lines, json %d entries: %r"
           % (len(table), len(js), table))
    for line, d in zip(table, js):
        m = re.fullmatch(r"(.*\S)\s+(\d+)\s*", line)
        expect(m and m.group(1) == d["field"],
               "table line %r does not match %r" % (line, d))

    if not ALIASES:
        # 2.3's own doveadm replicator stays: it finds no replicator
        r23 = pair.doveadm("A", "replicator", "status", check=False)
        expect(r23.returncode != 0 and "replicator-doveadm" in r23.stderr,
               "replicator status on 2.3 is not 2.3's own: rc %d, %r"
               % (r23.returncode, r23.stderr))
        return "%d fields, %d known users" % (len(js), known)
    alias = dw_fail(pair, "status", fmt="json")
    r23 = pair.doveadm("A", "-f", "json", "replicator", "status")
    expect([d["field"] for d in json.loads(r23.stdout)] ==
           [d["field"] for d in json.loads(alias.stdout)],
           "replicator status lists other fields than dovewarden status")
    return "%d fields, %d known users" % (len(js), known)


@r.case("add <user>, add <mask>, status <mask> in three formats")
def _(pair):
    # "N users added" counts either every match or only the users that
    # were not known before (the userdb sweep may know them all)
    known_before = set(pair.dw_users("A", "*"))
    out = pair.dw("A", "add", "user01").stdout.strip()
    expect(out in ("1 users added", "0 users added"), "add user01: %r" % out)
    js = json.loads(pair.dw("A", "add", "user01", fmt="json").stdout)
    expect(js in ([{"result": "1 users added"}],
                  [{"result": "0 users added"}]), "add -f json: %r" % js)
    ten = ["user%02d" % i for i in range(10, 20)]
    out = pair.dw("A", "add", "user1*").stdout.strip()
    expect(out in {"%d users added" % n for n in
                   (10, len(set(ten) - known_before))},
           "add user1*: %r (known before: %d of them)"
           % (out, len(set(ten) & known_before)))
    twenty = ["user%02d" % i for i in range(20, 30)]
    head, tab = parse_tab(pair.dw("A", "add", "user2?", fmt="tab").stdout)
    expect(head == ["result"] and len(tab) == 1 and tab[0]["result"] in
           {"%d users added" % n for n in
            (10, len(set(twenty) - known_before))},
           "add -f tab: %r %r" % (head, tab))
    expect(set(twenty) <= set(pair.dw_users("A", "user2?")),
           "add user2? did not make user20..user29 known")

    users = pair.dw_users("A", "user1*")
    expect(sorted(users) == ["user%02d" % i for i in range(10, 20)],
           "status user1*: %r" % sorted(users))
    for u, d in users.items():
        expect(list(d) == USER_FIELDS, "json fields %r" % list(d))
        expect(d["priority"] in ("none", "low", "high", "sync"),
               "priority %r" % d)
        expect(isinstance(d["failed"], int) and d["failed"] >= 0,
               "failed %r" % d)
        for k in ("fast_sync", "full_sync", "success_sync", "next_sync"):
            expect(d[k] == "-" or hms_secs(d[k]) is not None,
                   "%s %r" % (k, d))

    head, tab = parse_tab(pair.dw("A", "status", "user1*", fmt="tab").stdout)
    expect(head == USER_COLUMNS, "-f tab header %r" % head)
    expect([d["username"] for d in tab] == sorted(users),
           "-f tab users %r" % tab)

    table = pair.dw("A", "status", "user1*").stdout.splitlines()
    expect(re.match(r"username\s+priority\s+fast sync\s+full sync\s+"
                    r"success sync\s+failed\s+next sync\s+last error",
                    table[0]), "table header %r" % table[0])
    expect([x.split()[0] for x in table[1:]] == sorted(users),
           "table users %r" % table)

    js = json.loads(pair.dw("A", "status", "nosuchuser*",
                            fmt="json").stdout or "[]")
    expect(js == [], "status of an unmatched mask: %r" % js)
    ov = pair.dw_overview("A")
    expect(overview_value(ov, r"known users") >= 20,
           "known users after adding 21: %r" % ov)


def fake_peer(port):
    """A peer doveadm port that accepts TCP connections and never
    answers."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    return SilentListener(srv)


@r.case("replicate -p, dsync-status, remove, errors, with a held sync")
def _(pair):
    holder, u_high, u_sync, u_low, u_gone = (
        "user30", "user31", "user32", "user33", "user34")
    pair.stop_one("B")
    fake = fake_peer(pair.port("B", "doveadm"))
    try:
        msg = make_message("held")
        pair.append("A", holder, msg)

        def running():
            js = json.loads(pair.dw("A", "dsync-status", fmt="json").stdout
                            or "[]")
            return [d for d in js if d.get("username") == holder]
        d = wait_until(running, 10, "dsync-status to list %s"
                       % holder)[0]
        expect(list(d) == DSYNC_FIELDS, "dsync-status json fields %r" % d)
        expect(d["type"] in ("full", "incremental", "normal") and
               d["status"] and hms_secs(d["running"]) is not None,
               "dsync-status %r" % d)
        head, tab = parse_tab(pair.dw("A", "dsync-status",
                                      fmt="tab").stdout)
        expect(head == ["username", "type", "status", "running"] and
               [x["username"] for x in tab] == [holder],
               "dsync-status -f tab %r %r" % (head, tab))
        table = pair.dw("A", "dsync-status").stdout.splitlines()
        expect(re.match(r"username\s+type\s+status\s+running", table[0])
               and len(table) == 2 and table[1].split()[0] == holder,
               "dsync-status table %r" % table)
        ov = pair.dw_overview("A")
        expect(overview_value(ov, r"running") == 1, "syncs running: %r"
               % ov)

        for user, args, prio in ((u_high, ["-p", "high"], "high"),
                                 (u_sync, ["-p", "sync"], "sync"),
                                 (u_low, [], "low"),
                                 (u_gone, ["-p", "low"], "low")):
            out = pair.dw("A", "replicate", *(args + [user])).stdout.strip()
            expect(out == "1 users updated", "replicate %s %s: %r"
                   % (args, user, out))
            st = pair.dw_users("A", user)[user]
            expect(st["priority"] == prio, "after replicate %s %s: %r"
                   % (args, user, st))
        ov = pair.dw_overview("A")
        expect(overview_value(ov, r"'high'") >= 1 and
               overview_value(ov, r"'sync'") >= 1 and
               overview_value(ov, r"'low'") >= 2,
               "queued counts in the overview: %r" % ov)

        n = len(pair.dw_users("A", "user3?"))
        js = json.loads(pair.dw("A", "replicate", "-p", "high", "user3?",
                                fmt="json").stdout)
        expect(js == [{"result": "%d users updated" % n}],
               "replicate -p high user3? -f json: %r (%d known)" % (js, n))
        head, tab = parse_tab(pair.dw("A", "replicate", "-f", "user3?",
                                      fmt="tab").stdout)
        expect(tab == [{"result": "%d users updated" % n}],
               "replicate -f user3? -f tab: %r" % tab)
        st = pair.dw_users("A", u_low)[u_low]
        expect(st["priority"] == "high", "replicate -p high did not raise "
               "%s: %r" % (u_low, st))
        st = pair.dw_users("A", u_sync)[u_sync]
        expect(st["priority"] == "sync", "replicate -p high lowered "
               "%s: %r" % (u_sync, st))

        rm = pair.dw("A", "remove", u_gone)
        expect(rm.stdout.strip() == "" and rm.stderr.strip() == "",
               "remove printed %r %r" % (rm.stdout, rm.stderr))
        expect(u_gone not in pair.dw_users("A", "user3?"),
               "%s still listed after remove" % u_gone)
        for user in (u_gone, "nosuchuser"):
            rm = dw_fail(pair, "remove", user)
            expect(rm.returncode == EX_NOUSER and
                   "User not found" in rm.stderr,
                   "remove of unknown %s: rc %d, %r" % (user, rm.returncode,
                                                        rm.stderr))
        bad = dw_fail(pair, "replicate", "-p", "urgent", u_high)
        expect(bad.returncode == EX_USAGE and "priority" in bad.stderr,
               "bad priority: rc %d, %r" % (bad.returncode, bad.stderr))
        nomask = dw_fail(pair, "replicate")
        expect(nomask.returncode == EX_USAGE, "replicate without a mask: "
               "rc %d" % nomask.returncode)
        nosock = dw_fail(pair, "status", "-a",
                         os.path.join(pair.dw_dir, "A", "run", "nosuch"))
        expect(nosock.returncode == EX_TEMPFAIL and
               "connect" in nosock.stderr.lower(),
               "status with a missing socket: rc %d, %r"
               % (nosock.returncode, nosock.stderr))
        cmd = "replicator" if ALIASES else "dovewarden"
        r23 = pair.doveadm("A", cmd, "replicate", u_high)
        expect(r23.stdout.strip() == "1 users updated",
               "replicator replicate: %r" % r23.stdout)
        r23 = pair.doveadm("A", "-f", "json", cmd, "dsync-status")
        expect([x["username"] for x in json.loads(r23.stdout)] == [holder],
               "replicator dsync-status: %r" % r23.stdout)
    finally:
        fake.close()
        pair.start_one("B")

    users = [holder, u_high, u_sync, u_low]

    def all_synced():
        st = pair.dw_users("A", "user3?")
        return all(u in st and st[u]["priority"] == "none" and
                   st[u]["failed"] == 0 and st[u]["success_sync"] != "-"
                   for u in users)
    wait_until(all_synced, 30, "the held and queued users to sync "
               "after B came back")
    pair.wait_converged(users, 10, "after B came back")
    expect(msg_hash(msg) in pair.snapshot("B", holder).hashes(),
           "the held message is not on B")


if __name__ == "__main__":
    run(r)
