#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Repeated restarts resume work instead of redoing it.

Both services are killed with SIGKILL every DW_KILL_INTERVAL seconds
(default 5) for DW_KILL_DURATION seconds (default 120, the issue's
criterion) while a mixed workload changes DW_STORM_USERS users (default
24) on A and on B at once. Once the kills and the load stop, every change
must be on both servers within DW_CONV_BOUND seconds (default 30): the
checker compares every mailbox, message, flag and subscription.

Before sync results were journaled, every restart of the built-in queue
redid the syncs since its last snapshot (first full syncs, settle full
syncs) and swept the userdb; with Redis, a killed instance's claims waited
for dovewarden_redis_claim_timeout (here its default, 1 min) before
anybody synced those users again. Before the service recorded its dsyncs
(dovewarden.dsyncs), each restart started the killed process's syncs
again while their dsyncs still ran in doveadm-server, waiting for those
users' locks; the waiting dsyncs piled up until doveadm's process_limit
was reached on both servers, and then no dsync could connect to the
other server: nothing converged. The test also checks that no restart
swept the userdb (the first start of the pair did), that doveadm's
process_limit was never reached and, with Redis, that the restarted
instances took their own claims back."""

import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.common import NUMBERED_USERS, SIDES  # noqa: E402
from dwtest.load import MixedLoad  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.tap import diag  # noqa: E402

KILL_INTERVAL = float(os.environ.get("DW_KILL_INTERVAL", "5"))
KILL_DURATION = float(os.environ.get("DW_KILL_DURATION", "120"))
N_USERS = int(os.environ.get("DW_STORM_USERS", "24"))
BOUND = float(os.environ.get("DW_CONV_BOUND", "30"))
REDIS = os.environ.get("DW_E2E_REDIS") == "1"
USERS = NUMBERED_USERS[:N_USERS]
# how long the first sync of USERS took without kills: the baseline of
# the time to converge after the kills
prepare_secs = []

r = Runner("test-restart-storm",
           extra_conf="dovewarden_retry_min_interval = 1s\n"
                      "dovewarden_retry_max_interval = 5s\n",
           # the default: what a killed instance's claims would wait for
           redis_extra_conf="dovewarden_redis_claim_timeout = 1min\n")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def count_lines(pair, pattern):
    pat = re.compile(pattern)
    return sum(1 for s in SIDES for line in pair.log_since_mark(s)
               if pat.search(line))


@r.case("prepare %d users" % N_USERS)
def _(pair):
    t = MixedLoad.prepare(pair, USERS, 90)
    prepare_secs.append(t)
    return "converged in %.1f s" % t


@r.case("kill -9 every %g s for %g s during a workload on both sides: "
        "converged within %g s" % (KILL_INTERVAL, KILL_DURATION, BOUND))
def _(pair):
    for s in SIDES:
        pair.mark_log(s)
    load = MixedLoad(pair, USERS, "storm", 3, KILL_DURATION)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    kills = 0
    while time.monotonic() - t0 + KILL_INTERVAL <= KILL_DURATION:
        time.sleep(KILL_INTERVAL)
        for s in SIDES:
            for pid in pair.service_pids(s):
                os.kill(pid, signal.SIGKILL)
                kills += 1
    thread.join(KILL_DURATION + 120)
    expect(not thread.is_alive(), "the workload did not stop")
    t_stop = time.monotonic()
    expect(not load.bad, "the test sent bad commands:\n  "
           + "\n  ".join(load.bad[:10]))
    # the bound counts from the end of the kills and the load
    t, diffs = pair.converge_report(
        USERS, max(0.0, BOUND - (time.monotonic() - t_stop)))
    t_conv = time.monotonic()
    sweeps = count_lines(pair, r"Userdb sweep (started|finished)")
    syncs = count_lines(pair, r"Starting (settle full|full|normal|"
                        r"incremental) sync \(")
    full = count_lines(pair, r"Starting (settle full|full) sync \(")
    took_back = count_lines(pair, r"Took back \d+ (expired claims|claims of "
                            r"this instance)")
    limit = count_lines(pair, r"service\((dovewarden-)?doveadm\): "
                        r"process_limit \(\d+\) reached")
    orphans = count_lines(pair, r"dsyncs started by the previous service "
                          r"process may still run")
    summary = ("%d kills, %d ops (%s); %d syncs (%d full); %s; userdb "
               "sweeps at the restarts: %d; restarts that found dsyncs "
               "still running: %d; doveadm process_limit reached: %d "
               "times%s" % (
                   kills, load.total_ops(), load.summary(), syncs, full,
                   "converged %.1f s after the load (the first sync "
                   "without kills: %.1f s)" % (
                       t_conv - t_stop, prepare_secs[-1])
                   if t is not None
                   else "%d users still differ %.0f s after the load"
                   % (len(diffs), BOUND),
                   sweeps, orphans, limit,
                   "; claim take-backs logged: %d" % took_back
                   if REDIS else ""))
    diag(summary)
    expect(t is not None, summary + "\n" + "\n".join(
        "  %s: %s" % (u, d) for u in sorted(diffs)[:10]
        for d in diffs[u][:3]))
    expect(sweeps == 0, "a restart swept the userdb: " + summary)
    expect(limit == 0, "doveadm's process_limit was reached: " + summary)
    expect(not REDIS or took_back > 0,
           "no restarted instance took its claims back: " + summary)
    return summary


if __name__ == "__main__":
    run(r)
