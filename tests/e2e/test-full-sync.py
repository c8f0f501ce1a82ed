#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""`doveadm dovewarden replicate -f` really runs a full sync.

Each instance's service talks to doveadm-server through a recording
proxy (dovewarden_doveadm_socket_path = dwtest-doveadm, which this
program forwards to the real doveadm-server socket), so the test sees the
sync commands the service sends.

(a) An ordinary change after the first sync makes the service send a
    sync without -f; then
    `replicate -f <user>` makes it send one with -f, logged as a full
    sync, the status shows a fresh full sync, and A and B are identical.
(b) B is changed behind the services' backs (doveadm on B with
    -o dovewarden_noreplicate=yes, so the plugin stays quiet): A and B
    differ and stay so; `replicate -f <user>` on A repairs it.
(c) The verdict of a full sync's verification pass ("the servers
    differed and were repaired" or "were the same", which
    dovewarden_repairs_total and the status's last repaired time
    follow) agrees with the checker: forced full syncs of a user the
    checker finds identical, on A alone and on A and B at once (the
    peer's own syncs of the user overlap), say "same"; one after B was
    changed behind the services' backs says "repaired"."""

import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message  # noqa: E402
from dwtest.common import SIDES, hms_secs, wait_until  # noqa: E402
from dwtest.pair import listen_unix, user_setting_opt  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

PROXY_NAME = "dwtest-doveadm"
# a change made with these doveadm options is not notified
QUIET = user_setting_opt("dovewarden_noreplicate", "yes")
QUIET_WINDOW = 1.5

r = Runner("test-full-sync",
           extra_conf="dovewarden_doveadm_socket_path = "
                             + PROXY_NAME)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Proxy:
    """Forwards unix connections from path to target and records what
    the clients send."""

    def __init__(self, path, target):
        self.path = path
        self.target = target
        self.sent = []          # one bytes object per connection
        self.lock = threading.Lock()
        self.srv = None
        self.stopping = False

    def start(self):
        self.srv = listen_unix(self.path)
        self.srv.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopping = True
        self.srv.close()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                idx = len(self.sent)
                self.sent.append(b"")
            threading.Thread(target=self._pump, args=(c, s, idx),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, None),
                             daemon=True).start()

    def _pump(self, src, dst, idx):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if idx is not None:
                    with self.lock:
                        self.sent[idx] += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def sync_commands(self, user):
        """The argument lists of the sync commands sent for user."""
        cmds = []
        with self.lock:
            data = list(self.sent)
        for conn in data:
            for line in conn.split(b"\n"):
                f = line.decode("utf-8", "replace").split("\t")
                if len(f) > 3 and f[1] == user and f[2] == "sync":
                    cmds.append(f[3:])
        return cmds


proxies = {}


def setup(pair):
    if not proxies:
        for s in SIDES:
            run = os.path.join(pair.dw_dir, s, "run")
            p = Proxy(os.path.join(run, PROXY_NAME),
                      os.path.join(run, "doveadm-server"))
            p.start()
            proxies[s] = p
    return proxies["A"]


def wait_settled(pair, user, timeout=60):
    """The services idle for user, with no settle due either (a settle
    would replicate a change made behind their backs)."""
    def settled(side):
        st = pair.dw_users(side, user).get(user)
        if st is None:
            return True
        secs = hms_secs(st["next_sync"])
        return st["priority"] == "none" and (secs is None or secs > 60)
    wait_until(lambda: all(settled(s) for s in SIDES), timeout,
               "no settle due for %s" % user)
    pair.wait_service_idle(user, timeout=timeout)


def wait_sync_cmd(proxy, user, n_before, what):
    return wait_until(
        lambda: proxy.sync_commands(user)[n_before:], 10, what)


@r.case("(a) replicate -f sends a full sync (dsync -f)")
def _(pair):
    proxy = setup(pair)
    user = "carol"
    pair.append("A", user, make_message("full-a"))
    pair.wait_converged(user, 15, "the first change")
    # and the sync of dsync's own notification on B (INBOX created
    # there): with the Redis queue it is B's, and a flag change on A
    # while it waits would be changes on both servers, a full sync
    pair.wait_service_idle(user)
    cmds = proxy.sync_commands(user)
    expect(cmds, "the service sent no sync command for %s through %s"
           % (user, proxy.path))
    # the first sync may be a full one; the next one is incremental. It
    # may run on either side: with the Redis queue B's service may take
    # it, and A's proxy then sees only the settle full sync that follows
    before = {s: len(proxies[s].sync_commands(user)) for s in SIDES}
    m = pair.imap("A", user)
    try:
        check_ok(m.select("INBOX"), "SELECT")
        check_ok(m.store("1", "+FLAGS", "\\Seen"), "STORE")
    finally:
        m.logout()
    pair.wait_converged(user, 15, "the flag change")
    cmds = wait_until(
        lambda: [c for s in SIDES
                 for c in proxies[s].sync_commands(user)[before[s]:]],
        10, "a sync for the flag change")
    expect(all("-f" not in c for c in cmds), "a flag change made a full "
           "sync: %r" % cmds)
    # its sync may have a follow-up pass still to send (the other
    # server synced the user last): not the forced sync's command
    pair.wait_service_idle(user)

    n = len(proxy.sync_commands(user))
    pair.mark_log("A")
    out = pair.dw("A", "replicate", "-f", user).stdout.strip()
    expect(out == "1 users updated", "replicate -f output %r" % out)
    cmds = wait_sync_cmd(proxy, user, n, "the forced sync command")
    expect(any("-f" in c for c in cmds), "replicate -f sent no -f: %r"
           % cmds)
    pair.wait_log("A", lambda l: "%s: Starting full sync" % user in l, 10,
                  "the service's 'Starting full sync' line")
    pair.wait_log("A", lambda l: "%s: Full sync" % user in l
                  and "finished" in l, 10, "the full sync to finish")
    st = pair.dw_users("A", user)[user]
    age = hms_secs(st["full_sync"])
    expect(age is not None and age <= 10, "status shows no fresh full "
           "sync: %r" % st)
    pair.wait_converged(user, 10, "after the full sync")
    return "forced sync: dsync %s" % " ".join(
        x for x in [c for c in cmds if "-f" in c][0] if len(x) < 40)


@r.case("(b) B changed behind the services' backs: replicate -f repairs")
def _(pair):
    proxy = setup(pair)
    user = "dave"
    for i in range(3):
        pair.append("A", user, make_message("full-b-%d" % i))
    pair.wait_converged(user, 15, "seeding")
    # the syncs of the seeding may echo one more sync, and a settle may
    # follow: let them finish
    wait_settled(pair, user)
    pair.doveadm("B", *QUIET, "flags", "add",
                 "-u", user, "\\Flagged", "mailbox", "INBOX", "ALL")
    pair.doveadm("B", *QUIET, "mailbox",
                 "create", "-u", user, "Behind")
    end = time.monotonic() + QUIET_WINDOW
    while True:
        d = pair.compare(user)
        expect(d, "A and B became identical without a sync: the change on "
               "B was replicated after all")
        if time.monotonic() >= end:
            break
        time.sleep(0.3)
    n = len(proxy.sync_commands(user))
    out = pair.dw("A", "replicate", "-f", user).stdout.strip()
    expect(out == "1 users updated", "replicate -f output %r" % out)
    t = pair.wait_converged(user, 15, "after replicate -f")
    cmds = proxy.sync_commands(user)[n:]
    expect(any("-f" in c for c in cmds), "no -f sync was sent: %r" % cmds)
    b = pair.snapshot("A", user)
    expect("Behind" in b.mailboxes and all(
        "\\Flagged" in f for h in b.hashes() for f in b.flags_of(h)),
        "the change made on B is not on A")
    return "differences before: %d; converged %.2f s after replicate -f" % (
        len(d), t)


def verdicts(pair, side, user):
    """The verification verdicts logged on side since its mark:
    a list of True (repaired) / False (same)."""
    out = []
    for line in pair.log_since_mark(side):
        if "%s: Verification: " % user in line or \
                "%s: Settle: " % user in line:
            out.append("differed and were repaired" in line)
    return out


def forced_verdicts(pair, user, sides):
    """replicate -f on sides at once; returns the verdicts logged on
    both sides (with the Redis backend, the two services share the
    queue and either may run a sync that the other was asked for)."""
    for s in SIDES:
        pair.mark_log(s)
    threads = [threading.Thread(target=pair.dw, args=(
        s, "replicate", "-f", user)) for s in sides]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the second request may join the first's sync: one verdict, then
    # nothing running
    wait_until(lambda: any(verdicts(pair, s, user) for s in SIDES), 20,
               "the verification verdicts of replicate -f on %s"
               % "+".join(sides))
    wait_settled(pair, user)
    return sum((verdicts(pair, s, user) for s in SIDES), [])


@r.case("(c) a 'repaired' verdict means the checker saw a difference")
def _(pair):
    user = "erin"
    m = pair.imap("A", user)
    try:
        for i in range(3):
            pair.append("A", user, make_message("verdict-%d" % i), conn=m)
        check_ok(m.create("Sub"), "CREATE")
    finally:
        m.logout()
    pair.wait_converged(user, 20, "seeding")
    wait_settled(pair, user)
    # both services have a state for the user: their full syncs are
    # verified
    for s in SIDES:
        pair.dw(s, "replicate", user)
    wait_settled(pair, user)
    expect(not pair.compare(user), "A and B differ before the test")

    # (a settle may follow and add its own verdict)
    v = forced_verdicts(pair, user, ["A"])
    expect(not any(v), "identical servers, full sync on A: verdicts %r "
           "(True = repaired)" % v)
    v2 = forced_verdicts(pair, user, ["A", "B"])
    expect(not any(v2), "identical servers, full syncs on A and B at "
           "once: verdicts %r (True = repaired)" % v2)
    expect(not pair.compare(user), "the full syncs made A and B differ")

    pair.doveadm("B", *QUIET, "flags", "add",
                 "-u", user, "\\Answered", "mailbox", "INBOX", "ALL")
    d = pair.compare(user)
    expect(d, "the change on B behind the services' backs made no "
           "difference")
    v3 = forced_verdicts(pair, user, ["A"])
    expect(any(v3), "B changed behind the services' backs, full "
           "sync on A: verdicts %r (True = repaired)" % v3)
    pair.wait_converged(user, 10, "after the repair")
    return "same: A %r, A+B %r; repaired: %r (%d differences)" % (
        v, v2, v3, len(d))


def cleanup():
    for p in proxies.values():
        p.stop()


if __name__ == "__main__":
    try:
        run(r)
    finally:
        cleanup()
