#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The migration of the README's guide, from Dovecot 2.3's built-in
replication to dovewarden on 2.3, then to Dovecot 2.4 one server at a
time, with clients working on both servers during every step.

Needs the root file system of a Dovecot 2.3 with dovewarden installed
(DW_ROOTFS_23, as testenv/check-mixed provides it) and runs in the 2.4
one; skips without it. Both servers start on 2.3 (run from DW_ROOTFS_23)
with 2.3's replication plugin, aggregator and replicator, which the
dovewarden service installed next to them must leave alone. Then:

  1. -U is dropped from replication_dsync_parameters on both servers
     (doveadm reload), so that a replicator still running on one server
     does not start the built-in one again on an already migrated one
  2. A, then B a few seconds later: the replication plugin replaced by
     dovewarden's, restarted; each service imports replicator.db
  3. B upgraded to 2.4: stopped, its mail and state dir given to a
     Dovecot 2.4 with the 2.4 configuration, started
  4. A upgraded to 2.4 the same way

During each step, client threads on both servers run a mixed workload
(dwtest.load.MixedLoad) on 16 users (while 2.3's replicator still runs
on a server, steps 1-2, half of them on A only and half on B only: it
does not settle a user changed on both servers at once, and leaves such
users differing), and a writer per server delivers
(LMTP) and appends (IMAP) new mail to 6 other users, noting every
message a server accepted and every error with its time. After each
step the workload stops, and within DW_MIG_BOUND seconds (default 60:
a restarted server's peer waits for its syncs' locks) the checker must
find every user equal on both servers; every message a server accepted
is on both; a writer saw an error only from its own server while that
server restarted. Right after its import each service knows every user
with the full sync the replicator had (so none gets a first full sync;
the dsync states come along), and after no step does
dsync find a state it can't use (the states saved on 2.3 are valid on
2.4). Per step it prints the time the step's restart took, the syncs
each service ran by kind (full syncs that replay a settle interrupted
by a restart, or retry a failed one, are dovewarden's usual rules), and
the time to converge."""

import collections
import concurrent.futures
import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message, message_id  # noqa: E402
from dwtest.common import NUMBERED_USERS, SIDES, peer, wait_until  # noqa: E402
from dwtest.load import MixedLoad  # noqa: E402
from dwtest.pair import dovecot_series  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.tap import Tap, diag  # noqa: E402

ROOTFS23 = os.environ.get("DW_ROOTFS_23")
BOUND = float(os.environ.get("DW_MIG_BOUND", "60"))
# seconds of workload before and after the step's restart
LOAD_BEFORE = float(os.environ.get("DW_MIG_LOAD_BEFORE", "4"))
LOAD_AFTER = float(os.environ.get("DW_MIG_LOAD_AFTER", "6"))

MIXED_USERS = NUMBERED_USERS[:16]
LEDGER_USERS = NUMBERED_USERS[16:22]
ALL = MIXED_USERS + LEDGER_USERS

# "Full sync (priority low) finished after 0.123 secs" and the like
SYNC_LINE = re.compile(r"dovewarden: Debug: .*?(Settle full|Full|Incremental|"
                       r"Normal) sync \(priority \w+\) (finished|failed)")
# dsync could not read a state it was given (a resync that dsync asks
# for after a mailbox renamed during the sync is not this)
RESYNC = "Saved sync state is invalid"

r = Runner("test-migration")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Writers:
    """One thread per server, delivering (LMTP) and appending (IMAP) new
    messages to LEDGER_USERS until stopped. Every message a server
    accepted goes into accepted (Message-ID -> user), every failure into
    errors as (monotonic time, side, text)."""

    def __init__(self, pair, tag):
        self.pair = pair
        self.tag = tag
        self.accepted = {}
        self.errors = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(s,),
                                         daemon=True) for s in SIDES]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def _run(self, side):
        n = 0
        while not self.stopping.is_set():
            user = LEDGER_USERS[n % len(LEDGER_USERS)]
            msg = make_message("%s-%s-%d" % (self.tag, side, n))
            try:
                if n % 2 == 0:
                    self.pair.lmtp_deliver(side, user, msg)
                else:
                    self.pair.append(side, user, msg)
                with self.lock:
                    self.accepted[message_id(msg)] = user
            except Exception as e:
                with self.lock:
                    self.errors.append((time.monotonic(), side, "%s: %s" % (
                        type(e).__name__, e)))
                # a server that is down: do not spin
                self.stopping.wait(0.2)
            n += 1
            self.stopping.wait(0.05)


class Step:
    """One step of the migration: the workload, the change (a function of
    the pair, which may restart servers and notes when through
    self.down()), then the checks."""

    def __init__(self, pair, name, ledger):
        self.pair = pair
        self.name = name
        self.ledger = ledger
        # side -> [(from, to)]: a server restarting, its clients' errors
        # expected
        self.windows = collections.defaultdict(list)
        self.restart_secs = 0.0

    def restart(self, side, change):
        """Stop side, change(), start side; its clients' errors in between
        are the restart's."""
        t0 = time.monotonic()
        self.pair.stop_one(side)
        change()
        self.pair.start_one(side)
        # a client connecting at once may still meet the new master's
        # last listener coming up
        t1 = time.monotonic() + 1.0
        self.windows[side].append((t0, t1))
        self.restart_secs += t1 - 1.0 - t0

    def run(self, change, mixed="both"):
        """mixed: "both", the workload's users changed on both servers;
        "split", half of them on A only, half on B only (while 2.3's
        replicator runs: it does not settle a user changed on both
        servers at once, as dovewarden does; the issue text's 5-13 of 50
        users left differing); None, no workload, new mail only"""
        pair = self.pair
        for s in SIDES:
            pair.mark_log(s)
        writers = Writers(pair, "mig-%s" % self.name)
        duration = LOAD_BEFORE + LOAD_AFTER + 60
        if mixed == "split":
            half = len(MIXED_USERS) // 2
            loads = [MixedLoad(pair, MIXED_USERS[:half], seed=self.name,
                               threads_per_side=2, duration=duration,
                               sides=("A",)),
                     MixedLoad(pair, MIXED_USERS[half:], seed=self.name,
                               threads_per_side=2, duration=duration,
                               sides=("B",))]
        elif mixed == "both":
            loads = [MixedLoad(pair, MIXED_USERS, seed=self.name,
                               threads_per_side=2, duration=duration)]
        else:
            loads = []
        threads = [threading.Thread(target=l.run, daemon=True)
                   for l in loads]
        writers.start()
        for t in threads:
            t.start()
        time.sleep(LOAD_BEFORE)
        change(self)
        time.sleep(LOAD_AFTER)
        for l in loads:
            l.deadline = 0
        writers.stop()
        for t in threads:
            t.join(120)
        t_stop = time.monotonic()

        self.ledger.update(writers.accepted)
        unexpected = [(s, e) for t, s, e in writers.errors
                      if not any(a <= t <= b for a, b in self.windows[s])]
        expect(not unexpected, "clients saw errors from a server that was "
               "not restarting: %s" % unexpected[:5])
        bad = [b for l in loads for b, (t, s) in zip(l.bad, l.bad_at)
               if not any(a <= t <= e for a, e in self.windows[s])]
        expect(not bad, "workload errors: %s" % bad[:5])
        t, diffs = pair.converge_report(ALL, BOUND)
        expect(not diffs, "%d user(s) still differ %.0f s after the "
               "workload:\n%s" % (len(diffs), BOUND, "\n".join(
                   "  %s: %s" % (u, d) for u in sorted(diffs)[:8]
                   for d in diffs[u][:3])))
        lost = lost_messages(pair, self.ledger)
        expect(not lost, "%d accepted message(s) missing: %s"
               % (len(lost), lost[:5]))
        syncs = {s: sync_counts(pair, s) for s in SIDES}
        return {"ops": sum(l.total_ops() for l in loads),
                "mail": len(writers.accepted),
                "restart_errors": len(writers.errors),
                "restart": self.restart_secs,
                "converge": t, "converge_after_load": time.monotonic() -
                t_stop, "syncs": syncs}


def lost_messages(pair, ledger):
    """(user, side, Message-ID) of every accepted message not in the
    user's INBOX on a side"""
    lost = []
    by_user = collections.defaultdict(list)
    for mid, user in ledger.items():
        by_user[user].append(mid)

    def one(key):
        user, side = key
        have = pair.message_ids(side, user)
        return [(user, side, m) for m in by_user[user]
                if "<%s>" % m not in have]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for part in ex.map(one, [(u, s) for u in by_user for s in SIDES]):
            lost += part
    return lost


def sync_counts(pair, side):
    """The syncs side's service logged since the step's mark, by kind"""
    c = collections.Counter()
    for line in pair.log_since_mark(side):
        m = SYNC_LINE.search(line)
        if m:
            c[m.group(1).lower()] += 1
    return dict(c)


def resyncs(pair, side):
    return [l for l in pair.log_since_mark(side) if RESYNC in l]


def fmt_step(name, res):
    syncs = "; ".join("%s: %s" % (s, ", ".join(
        "%d %s" % (n, k) for k, n in sorted(res["syncs"][s].items())) or
        "none") for s in SIDES)
    return ("%s: restart %.1f s, %d operations + %d new messages, %d "
            "client errors during the restart; equal %.1f s after the "
            "workload; dovewarden syncs %s"
            % (name, res["restart"], res["ops"], res["mail"],
               res["restart_errors"], res["converge"], syncs))


def builtin_replicator_users(pair, side):
    """Users in side's built-in replicator with a full sync done"""
    out = pair.doveadm(side, "replicator", "status", "*").stdout
    done = set()
    for line in out.splitlines()[1:]:
        f = line.split()
        # username priority fast-sync full-sync success-sync failed
        if len(f) >= 6 and f[3] != "-":
            done.add(f[0])
    return done


def replicator_processes(pair, side):
    """PIDs of side's built-in replicator processes"""
    return pair.child_pids(side, lambda exe, cmdline: (
        os.path.basename(exe) == "replicator"))


def imported_line(pair, side):
    for line in pair.log_since_mark(side):
        if "dovewarden: Info: Imported " in line:
            return line.split("Info: ", 1)[1]
    return None


@r.case("2.3 built-in replication -> dovewarden on 2.3 -> Dovecot 2.4, "
        "one server at a time, under load")
def _(pair):
    ledger = {}
    notes = []
    # step 0: the built-in replicator has synced every user, and the
    # dovewarden service installed next to it stays idle
    for s in SIDES:
        wait_until(lambda: len(builtin_replicator_users(pair, s)) >= 40,
                   60, "%s's built-in replicator to sync every user" % s)
        with open(pair.log_path(s), errors="replace") as f:
            idle = [l for l in f
                    if "built-in replication plugin: idle" in l]
        expect(idle, "%s's dovewarden service did not say that it leaves "
               "the built-in replication alone" % s)
    MixedLoad.prepare(pair, MIXED_USERS, BOUND)
    res = Step(pair, "0-builtin", ledger).run(lambda st: None, mixed=None)
    for s in SIDES:
        expect(not res["syncs"][s], "%s's dovewarden service synced while "
               "the built-in replication ran: %s" % (s, res["syncs"][s]))
    notes.append(fmt_step("0 built-in replication", res))

    # 1: no -U, reloaded
    def drop_u(st):
        os.environ["DW_DSYNC_PARAMETERS"] = "-d -N -l 30"
        for s in SIDES:
            pair.gen_one(s)
            # doveadm reload, from here: a master run from a root file
            # system has its PID namespace. The reload ends processes that
            # the master counts idle, and 2.3's LMTP answers a connection
            # such a process had just accepted "421 Shutting down": a
            # restart of the server too, if a short one.
            t0 = time.monotonic()
            os.kill(pair.master_pid(s), signal.SIGHUP)
            st.windows[s].append((t0, t0 + 6.0))
    res = Step(pair, "1-no-U", ledger).run(drop_u, mixed="split")
    notes.append(fmt_step("1 -U dropped, reloaded", res))

    # 2: dovewarden instead of the replication plugin, one server after
    # the other. Not one check between them: while one server's
    # replicator is the built-in one, a sync of it that failed (the
    # other's syncs hold the user's lock) is retried only minutes later.
    never_full = {}

    def to_dovewarden(st):
        for side in SIDES:
            def change(side=side):
                os.environ["DW_BUILTIN_REPLICATION_" + side] = "0"
                pair.gen_one(side)
            st.restart(side, change)
            # the import's point: every user has the full sync (and the
            # dsync state) the replicator had, so none gets a first full
            # sync
            wait_until(lambda: imported_line(pair, side), 20,
                       "%s's service to import replicator.db" % side)
            users = pair.dw_users(side)
            never_full[side] = sorted(u for u in ALL if u not in users or
                                      users[u]["full_sync"] == "-")
            time.sleep(LOAD_BEFORE)
    res = Step(pair, "2-dovewarden", ledger).run(to_dovewarden,
                                                 mixed="split")
    imported = []
    for side in SIDES:
        line = imported_line(pair, side)
        expect(line, "%s's service did not import replicator.db" % side)
        imported.append("%s: %s" % (side, line))
        expect(not replicator_processes(pair, side), "a built-in replicator "
               "runs on %s after its migration" % side)
        expect(not never_full[side], "after the import %s's service has "
               "no full sync of %s: they get a first full sync"
               % (side, never_full[side]))
        expect(not resyncs(pair, side), "%s's dsync could not use an "
               "imported state: %s" % (side, resyncs(pair, side)[:3]))
    notes.append("%s (%s)" % (fmt_step("2 A, then B to dovewarden", res),
                              "; ".join(imported)))

    # 3, 4: Dovecot 2.4, one server at a time
    for n, side in ((3, "B"), (4, "A")):
        def to_24(st, side=side):
            def change():
                del os.environ["DW_ROOTFS_" + side]
                pair.gen_one(side)
            st.restart(side, change)
        res = Step(pair, "%d-2.4-%s" % (n, side), ledger).run(to_24)
        # the states saved on 2.3 are valid on 2.4 (a full sync at the
        # start replays a settle the stop interrupted)
        for s in SIDES:
            expect(not resyncs(pair, s), "%s's dsync could not use a "
                   "state after %s's upgrade: %s" % (
                       s, side, resyncs(pair, s)[:3]))
        notes.append(fmt_step("%d %s on 2.4" % (n, side), res))
    expect(all(dovecot_series(s) == "2.4" for s in SIDES),
           "not both servers run 2.4 at the end")
    for line in notes:
        diag(line)
    return "%d messages delivered during the migration, none lost" % len(
        ledger)


if __name__ == "__main__":
    if not ROOTFS23:
        t = Tap()
        t.version()
        t.skip_all("test-migration: needs DW_ROOTFS_23, the root file "
                   "system of a Dovecot 2.3 with dovewarden (run by "
                   "testenv/check-mixed)")
        sys.exit(0)
    for s in SIDES:
        os.environ["DW_ROOTFS_" + s] = ROOTFS23
        os.environ["DW_BUILTIN_REPLICATION_" + s] = "1"
    os.environ.pop("DW_DSYNC_PARAMETERS", None)
    run(r)
