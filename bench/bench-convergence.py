#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""What the convergence guarantee costs: the extra sync work of the settle
full syncs against plain incremental replication, measured in one run.

The same load runs twice, each time on a fresh testenv/pair with the
service's HTTP listener on (for /metrics):
  plain   dovewarden_settle_delay = 0: incremental syncs after changes only
  settle  the default dovewarden_settle_delay: a full sync (and its
          verification pass) of each user once it has been quiet that long
The load is tests/e2e's MixedLoad (APPEND, LMTP, flags, expunges, copies,
moves, folder operations on the same users from A and B at once) with a
fixed seed and a fixed number of operations per client thread (--ops), so
both runs make the same choices and the same amount of work. Counted from
the load's start until the window (--window, default 30 s, the
guarantee's bound) after it stopped, on both sides together:
  notifications  dovewarden_notifications_total (plugin)
  syncs          dovewarden_syncs_total, all results
  dsync runs     syncs + dovewarden_verifications_total +
                 dovewarden_followup_syncs_total (a verification pass or
                 a follow-up after a stale state is one more dsync run
                 within the same sync)
  full syncs     "Starting full sync" / "Starting settle full sync" log
                 lines (the service's debug log)
  repairs        dovewarden_repairs_total
Then the checker compares every user (differing users at the end of the
window) and waits for convergence (time to converge after the load).

Run inside the chroot, as root, with the dovewarden build installed:
    DW_DIR=/srv/dt-x DW_PORT_OFFSET=1200 \\
        python3 /src/dovewarden/bench/bench-convergence.py [--seed S]
It starts the pairs and stops them again when it ends.
"""

import argparse
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dwtest.common import (  # noqa: E402
    NUMBERED_USERS, SIDES, Skip, time_secs, wait_until)
from dwtest.load import MixedLoad  # noqa: E402
from dwtest.pair import Pair  # noqa: E402
from dwtest.web import (  # noqa: E402
    http_listener_conf, http_port, scrape, wait_http)

_START = re.compile(r"dovewarden: Debug: ([^:]+): Starting (settle full|full|"
                    r"incremental|normal) sync ")


def side_conf(pair):
    return {s: http_listener_conf(http_port(pair, s))
            for s in SIDES}


def counters(pair):
    out = {}
    for s in SIDES:
        _r, m = scrape(http_port(pair, s))
        out[s] = {
            "notifications": m.sum("dovewarden_notifications_total"),
            "syncs": m.sum("dovewarden_syncs_total"),
            "verifications": m.sum("dovewarden_verifications_total"),
            "repairs": m.sum("dovewarden_repairs_total"),
            "followups": m.sum("dovewarden_followup_syncs_total"),
        }
    return out


def log_starts(pair):
    """Counter of sync kinds started since the log mark, both sides."""
    kinds = {}
    users = set()
    for s in SIDES:
        for line in pair.log_since_mark(s):
            m = _START.search(line)
            if m:
                kinds[m.group(2)] = kinds.get(m.group(2), 0) + 1
                if "full" in m.group(2):
                    users.add(m.group(1))
    return kinds, users


def one_run(name, settle_conf, args, users):
    os.environ["DW_EXTRA_CONF"] = settle_conf
    pair = Pair(side_conf=side_conf)
    res = {"name": name}
    try:
        pair.start()
        for s in SIDES:
            wait_http(http_port(pair, s))
        settle = time_secs(pair.doveconf("A",
                                         "dovewarden_settle_delay"))
        res["settle"] = settle
        MixedLoad.prepare(pair, users, 60)
        # the first syncs of the preparation and their settle syncs
        # are not part of the measurement
        if settle:
            time.sleep(settle + 5)
        wait_until(lambda: all(pair.queues_empty(s)
                               for s in SIDES), 60,
                   "empty queues after the preparation")
        for s in SIDES:
            pair.mark_log(s)
        c0 = counters(pair)
        load = MixedLoad(pair, users, args.seed, args.threads,
                         args.duration, max_ops=args.ops)
        t0 = time.monotonic()
        res["ran"] = load.run()
        t_stop = time.monotonic()
        res["ops"] = load.total_ops()
        res["changes"] = sum(n for (s, op), n in load.ops.items()
                             if op != "select") - sum(
            n for (s, op), n in load.no.items() if op != "select")
        conv_t, _d = pair.converge_report(users, args.window)
        res["t_converged"] = (None if conv_t is None
                              else time.monotonic() - t_stop)
        left = t_stop + args.window - time.monotonic()
        if left > 0:
            time.sleep(left)
        window = time.monotonic() - t0
        c1 = counters(pair)
        kinds, full_users = log_starts(pair)
        diffs = pair.diff_users(users)
        res["diff_end"] = len(diffs)
        # what the syncs left: the evidence for the settle rules
        for u in sorted(diffs):
            for d in diffs[u][:5]:
                print("# %s: %s left %s" % (name, u, d), file=sys.stderr)
        res["window"] = window
        for k in ("notifications", "syncs", "verifications", "repairs",
                  "followups"):
            res[k] = sum(c1[s][k] - c0[s][k] for s in SIDES)
        res["dsyncs"] = (res["syncs"] + res["verifications"] +
                         res["followups"])
        res["full"] = kinds.get("full", 0) + kinds.get("settle full", 0)
        res["settle_full"] = kinds.get("settle full", 0)
        res["incremental"] = kinds.get("incremental", 0)
        res["full_users"] = len(full_users)
        if res["t_converged"] is None:
            t, _d = pair.converge_report(users, 60)
            res["late"] = None if t is None else time.monotonic() - t_stop
    finally:
        pair.stop()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", default="1")
    ap.add_argument("--users", type=int, default=24)
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--ops", type=int, default=200,
                    help="operations per client thread (default 200)")
    ap.add_argument("--duration", type=float, default=60.0,
                    help="the longest the load may run (default 60 s)")
    ap.add_argument("--window", type=float, default=30.0)
    args = ap.parse_args()
    users = NUMBERED_USERS[:args.users]

    try:
        Pair().check_available(True)
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    base_extra = os.environ.get("DW_EXTRA_CONF", "")
    runs = []
    for name, conf in (("plain", "dovewarden_settle_delay = 0"),
                       ("settle", "")):
        runs.append(one_run(name, "\n".join(x for x in (base_extra, conf)
                                            if x), args, users))
    plain, settle = runs

    print("dovewarden convergence cost: seed %s, %d users, %d+%d client "
          "threads x %d operations; counted from the load's start until "
          "%.0f s after its end (%d cores)" % (
              args.seed, len(users), args.threads, args.threads, args.ops,
              args.window, os.cpu_count() or 0))
    print("settle delay: plain %s, settle %s" % (
        "%g s" % plain["settle"] if plain["settle"] is not None else "n/a",
        "%g s" % settle["settle"] if settle["settle"] is not None
        else "n/a"))

    def per(a, b):
        return a / b if b else float("nan")

    rows = [
        ("client operations (changes)", lambda r: "%d (%d)" % (
            r["ops"], r["changes"]), None),
        ("load time, counted window", lambda r: "%.1f s, %.1f s" % (
            r["ran"], r["window"]), None),
        ("notifications", lambda r: "%d" % r["notifications"],
         "notifications"),
        ("syncs (dovewarden_syncs_total)", lambda r: "%d" % r["syncs"],
         "syncs"),
        ("  incremental", lambda r: "%d" % r["incremental"], "incremental"),
        ("  full (settle full)", lambda r: "%d (%d)" % (
            r["full"], r["settle_full"]), "full"),
        ("verification passes", lambda r: "%d" % r["verifications"],
         "verifications"),
        ("follow-up passes (stale state)", lambda r: "%d" % r["followups"],
         "followups"),
        ("dsync runs (syncs + both passes)", lambda r: "%d" % r["dsyncs"],
         "dsyncs"),
        ("repairs", lambda r: "%d" % r["repairs"], None),
        ("dsync runs per change", lambda r: "%.3f" % per(r["dsyncs"],
                                                         r["changes"]),
         lambda r: per(r["dsyncs"], r["changes"])),
        ("dsync runs per notification", lambda r: "%.3f" % per(
            r["dsyncs"], r["notifications"]),
         lambda r: per(r["dsyncs"], r["notifications"])),
        ("full syncs per hour (window rate)", lambda r: "%.0f" % (
            r["full"] / r["window"] * 3600),
         lambda r: r["full"] / r["window"] * 3600),
        ("full syncs per hour per user", lambda r: "%.1f" % (
            r["full"] / r["window"] * 3600 / len(users)),
         lambda r: r["full"] / r["window"] * 3600 / len(users)),
        ("full syncs per user in the window", lambda r: "%.2f" % (
            r["full"] / len(users)), None),
        ("users with a full sync", lambda r: "%d" % r["full_users"], None),
        ("users differing after %.0f s" % args.window,
         lambda r: "%d" % r["diff_end"], None),
        ("time to converge after the load", lambda r: (
            "%.1f s" % r["t_converged"] if r["t_converged"] is not None
            else "> %.0f s%s" % (args.window, "" if r.get("late") is None
                                 else " (%.1f s)" % r["late"])), None),
    ]
    print("%-38s %16s %16s %12s" % ("", "plain", "settle", "settle/plain"))
    for label, fmt, ratio in rows:
        rv = ""
        if ratio is not None:
            f = ratio if callable(ratio) else (lambda r, k=ratio: r[k])
            a, b = f(plain), f(settle)
            rv = "%.2fx" % (b / a) if a else ("inf" if b else "-")
        print("%-38s %16s %16s %12s" % (label, fmt(plain), fmt(settle), rv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
