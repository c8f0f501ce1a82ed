#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""kill -9 of A's dovewarden service loses no replication work.

(a) A workload of APPENDs and flag changes for 10 users runs on A in a
    background thread; in its middle A's service is killed with SIGKILL.
    Dovecot's master starts a new one, the workload goes on a while, and
    then every user must converge.
(b) The journal matters: B is stopped, so no sync can succeed before the
    kill. Changes on A are accepted by the service (its status shows the
    failed syncs), then it is killed with SIGKILL. The master must start a
    new one by itself (process_min_avail = 1; nothing connects to it),
    which reloads the journal. B is started and, without any further
    change on A, every user converges."""

import os
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

CONVERGE_TIMEOUT = 40.0
RESTART_TIMEOUT = 10.0

r = Runner(
    "test-kill9",
    extra_conf="dovewarden_retry_min_interval = 1s\n"
               "dovewarden_retry_max_interval = 3s")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Workload:
    """APPENDs and flag changes on A, round-robin over users, one IMAP
    session per user, until stopped."""

    FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "kw1", "kw2"]

    def __init__(self, pair, users):
        self.pair = pair
        self.users = users
        self.ops = 0
        self.errors = []
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        conns = {}
        i = 0
        try:
            while not self.stopping.is_set():
                u = self.users[i % len(self.users)]
                i += 1
                try:
                    m = conns.get(u)
                    if m is None:
                        m = conns[u] = self.pair.imap("A", u)
                        check_ok(m.select("INBOX"), "SELECT")
                    self.pair.append("A", u, make_message("wl-" + u),
                                     conn=m)
                    typ, data = m.select("INBOX")
                    n = int(data[0])
                    f = self.FLAGS[i % len(self.FLAGS)]
                    check_ok(m.store(str(1 + i % n),
                                     "-FLAGS" if i % 3 == 0 else "+FLAGS",
                                     f), "STORE")
                except Exception as e:
                    self.errors.append("%s: %s" % (u, e))
                    conns.pop(u, None)
                    if len(self.errors) > 20:
                        return
                with self.cond:
                    self.ops += 1
                    self.cond.notify_all()
        finally:
            for m in conns.values():
                try:
                    m.logout()
                except Exception:
                    pass

    def wait_ops(self, n, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            target = self.ops + n
            while self.ops < target and self.thread.is_alive():
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("workload did only %d of %d "
                                         "operations in %.0f s"
                                         % (self.ops - target + n, n,
                                            timeout))
                self.cond.wait(left)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(60)
        expect(not self.thread.is_alive(), "the workload did not stop")


def wait_new_service(pair, old):
    return wait_until(
        lambda: [p for p in pair.service_pids("A") if p != old],
        RESTART_TIMEOUT, "a new dovewarden service of A after the kill "
        "of %d" % old)[0]


def seed(pair, users):
    for u in users:
        pair.append("A", u, make_message("seed-" + u))
    pair.wait_converged(users, 20, "seeding")


@r.case("(a) kill -9 of A's service in the middle of a workload")
def _(pair):
    users = ["user%02d" % i for i in range(11, 21)]
    seed(pair, users)
    wl = Workload(pair, users)
    wl.start()
    try:
        wl.wait_ops(30, 30)
        old = pair.service_pid("A")
        os.kill(old, signal.SIGKILL)
        t_kill = time.monotonic()
        new = wait_new_service(pair, old)
        wl.wait_ops(30, 30)
    finally:
        wl.stop()
    expect(not wl.errors, "workload errors: %s" % wl.errors[:5])
    t = pair.wait_converged(users, CONVERGE_TIMEOUT, "after the workload")
    return ("%d operations; new service %d; converged %.2f s after the "
            "workload (%.2f s after the kill)"
            % (wl.ops, new, t, time.monotonic() - t_kill))


@r.case("(b) kill -9 with B down: the journal brings the changes over")
def _(pair):
    users = ["user%02d" % i for i in range(21, 27)]
    seed(pair, users)
    pair.stop_one("B")
    try:
        for u in users:
            m = pair.imap("A", u)
            try:
                pair.append("A", u, make_message("journal-" + u), conn=m)
                check_ok(m.select("INBOX"), "SELECT")
                check_ok(m.store("1", "+FLAGS", "\\Answered"), "STORE")
            finally:
                m.logout()
        # the service has the changes: it tried and failed to sync them
        wait_until(
            lambda: all(int(pair.dw_users("A", u).get(u, {})
                            .get("failed", 0)) >= 1 for u in users),
            15, "a failed sync of every user on A")
        journal = os.path.join(pair.dw_dir, "A", "state",
                               "dovewarden.db.journal")
        with open(journal, "rb") as f:
            jtext = f.read().decode("utf-8", "replace")
        unjournaled = [u for u in users if "\t%s\t" % u not in jtext]
        expect(not unjournaled, "the journal %s does not have %s"
               % (journal, unjournaled))

        old = pair.service_pid("A")
        pair.mark_log("A")
        os.kill(old, signal.SIGKILL)
        # nothing connects to the service now: the master must restart
        # it by itself
        new = wait_new_service(pair, old)
        loaded = pair.wait_log(
            "A", lambda l: "dovewarden: Info: Loaded " in l, RESTART_TIMEOUT,
            "the new service's 'Loaded ...' line")
        known = pair.dw_users("A")
        missing = [u for u in users if u not in known]
        expect(not missing, "after the kill A's service does not know %s "
               "(%s)" % (missing, loaded))
    finally:
        pair.start_one("B")
    t = pair.wait_converged(users, CONVERGE_TIMEOUT,
                            "after the kill and the start of B, without "
                            "further changes on A")
    return ("new service %d; %s; converged %.2f s after B started"
            % (new, loaded.split("Info: ")[-1], t))


if __name__ == "__main__":
    run(r)
