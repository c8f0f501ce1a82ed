# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Load generators: a mixed random workload on both sides at once, and
concurrent APPENDs each checked on B at their OK."""

import collections
import concurrent.futures
import imaplib
import random
import smtplib
import statistics
import threading
import time

from dwtest.clients import (BView, check_ok, fmt_flags, imap_quote,
                            make_message)
from dwtest.common import NUMBERED_USERS, SIDES
from dwtest.pair import conf_by_series

class MixedLoad:
    """Client threads on A and on B that, until a deadline, pick a user at
    random (the same users on both sides), log in over IMAP and run a few
    random operations: APPEND (to INBOX or a folder, with flags), LMTP
    delivery, UID STORE +FLAGS/-FLAGS (system flags and keywords),
    EXPUNGE and UID EXPUNGE, UID COPY and UID MOVE between INBOX and
    folders, SELECT of another mailbox, CREATE, RENAME, DELETE,
    SUBSCRIBE and UNSUBSCRIBE. Every choice comes from a random.Random
    seeded with (seed, side, thread), so a seed fixes each thread's
    sequence of choices; what the threads meet still depends on timing.

    NO answers (a mailbox the other side just deleted, a CREATE of an
    existing name, ...) and disconnects (the selected mailbox deleted by
    another session) are expected and counted, not errors. A BAD answer
    means the test sent something wrong: counted as "bad"."""

    FOLDERS = ["F1", "F2", "Archive", "Work/Sub"]
    TEMP = ["Tmp1", "Tmp2", "Work/Tmp"]
    FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Deleted", "$Label1",
             "kwx"]
    OPS = (("append", 14), ("lmtp", 10), ("store", 22), ("expunge", 5),
           ("uid_expunge", 4), ("copy", 8), ("move", 8), ("select", 8),
           ("create", 4), ("rename", 3), ("delete", 3), ("subscribe", 3),
           ("unsubscribe", 3))

    @staticmethod
    def prepare(pair, users, timeout):
        """Give each user a message and the folders F1 and Archive
        (subscribed) on A, and wait until B has the same. Returns the time
        that took."""
        def prep(user):
            m = pair.imap("A", user)
            try:
                pair.append("A", user, make_message("seed-" + user), conn=m)
                for box in ("F1", "Archive"):
                    check_ok(m.create(imap_quote(box)), "CREATE")
                    check_ok(m.subscribe(imap_quote(box)), "SUBSCRIBE")
            finally:
                m.logout()
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(prep, users))
        return pair.wait_converged(users, timeout, "preparation")

    def __init__(self, pair, users, seed, threads_per_side=3,
                 duration=10.0, pause=0.0, max_ops=None, sides=SIDES):
        """sides: where the client threads run (both by default).
        max_ops: each thread stops after this many operations (or at
        the duration, whichever comes first), so that runs on machines of
        different speed do the same work."""
        self.pair = pair
        self.max_ops = max_ops
        self._tl = threading.local()
        self.users = list(users)
        self.seed = seed
        self.threads_per_side = threads_per_side
        self.sides = sides
        self.duration = duration
        self.pause = pause
        self.lock = threading.Lock()
        self.ops = collections.Counter()     # (side, op) -> done
        self.no = collections.Counter()      # (side, op) -> NO answers
        self.aborts = collections.Counter()  # side -> disconnects
        self.bad = []                        # BAD answers / test errors
        self.bad_at = []                     # (monotonic time, side) of each
        self._names = [n for n, _w in self.OPS]
        self._weights = [w for _n, w in self.OPS]

    # -- counters --

    def total_ops(self):
        return sum(self.ops.values())

    def total_no(self):
        return sum(self.no.values())

    def total_aborts(self):
        return sum(self.aborts.values())

    def summary(self):
        by_op = collections.Counter()
        for (_s, op), n in self.ops.items():
            by_op[op] += n
        no_op = collections.Counter()
        for (_s, op), n in self.no.items():
            no_op[op] += n
        return ", ".join("%s %d%s" % (op, by_op[op],
                                      " (%d NO)" % no_op[op]
                                      if no_op[op] else "")
                         for op in self._names if by_op[op])

    def _done(self):
        return (time.monotonic() >= self.deadline or
                (self.max_ops is not None and
                 getattr(self._tl, "n", 0) >= self.max_ops))

    def _count(self, side, op, typ):
        self._tl.n = getattr(self._tl, "n", 0) + 1
        with self.lock:
            self.ops[(side, op)] += 1
            if typ != "OK":
                self.no[(side, op)] += 1

    # -- running --

    def run(self):
        """Run the threads until the duration has passed; returns the
        seconds the load ran."""
        self.deadline = time.monotonic() + self.duration
        threads = [threading.Thread(target=self._worker, args=(s, i),
                                    daemon=True)
                   for i in range(self.threads_per_side)
                   for s in self.sides]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.duration + 120)
        return time.monotonic() - t0

    def _worker(self, side, idx):
        rng = random.Random("%s/%s/%d" % (self.seed, side, idx))
        while not self._done():
            user = rng.choice(self.users)
            try:
                self._session(side, user, rng)
            except (imaplib.IMAP4.abort, OSError, EOFError,
                    smtplib.SMTPException):
                with self.lock:
                    self.aborts[side] += 1
            except Exception as e:
                with self.lock:
                    self.bad.append("%s %s: %s: %s" % (
                        side, user, type(e).__name__, e))
                    self.bad_at.append((time.monotonic(), side))

    def _session(self, side, user, rng):
        m = self.pair.imap(side, user)
        st = {"box": None}
        try:
            self._select(m, side, rng, "INBOX", st)
            for _ in range(rng.randint(3, 12)):
                if self._done():
                    break
                op = rng.choices(self._names, self._weights)[0]
                if op != "lmtp" and st["box"] is None:
                    if not self._select(m, side, rng, "INBOX", st):
                        break
                getattr(self, "_op_" + op)(m, side, user, rng, st)
                if self.pause:
                    time.sleep(self.pause)
        finally:
            try:
                m.logout()
            except Exception:
                pass

    def _select(self, m, side, rng, box, st):
        typ, _d = m.select(imap_quote(box))
        self._count(side, "select", typ)
        st["box"] = box if typ == "OK" else None
        return st["box"] is not None

    def _uid_set(self, m, rng):
        typ, data = m.uid("SEARCH", "ALL")
        if typ != "OK" or not data or not data[0]:
            return None
        uids = [int(x) for x in data[0].split()]
        if not uids:
            return None
        if rng.random() < 0.3:
            a = rng.randrange(len(uids))
            b = min(len(uids) - 1, a + rng.randint(0, 4))
            return "%d:%d" % (uids[a], uids[b])
        return ",".join(str(u) for u in
                        sorted(rng.sample(uids, min(len(uids),
                                                    rng.randint(1, 3)))))

    def _other_box(self, rng, st):
        return rng.choice([b for b in ["INBOX"] * 3 + self.FOLDERS +
                           self.TEMP if b != st["box"]])

    def _op_append(self, m, side, user, rng, st):
        box = rng.choice(["INBOX"] * 4 + self.FOLDERS + self.TEMP[:1])
        flags = rng.sample(self.FLAGS, rng.randint(0, 2))
        msg = make_message("mixed-%s-%s" % (side, user),
                           rng.choice([0, 0, 0, 2000]))
        typ, _d = m.append(imap_quote(box),
                           fmt_flags(flags) if flags else None, None, msg)
        self._count(side, "append", typ)

    def _op_lmtp(self, m, side, user, rng, st):
        msg = make_message("lmtp-%s-%s" % (side, user))
        try:
            self.pair.lmtp_deliver(side, user, msg)
            self._count(side, "lmtp", "OK")
        except (AssertionError, smtplib.SMTPException, OSError):
            self._count(side, "lmtp", "NO")

    def _op_store(self, m, side, user, rng, st):
        uids = self._uid_set(m, rng)
        if uids is None:
            return self._op_append(m, side, user, rng, st)
        flags = rng.sample(self.FLAGS, rng.randint(1, 2))
        typ, _d = m.uid("STORE", uids, rng.choice(["+FLAGS", "-FLAGS"]),
                        fmt_flags(flags))
        self._count(side, "store", typ)

    def _op_expunge(self, m, side, user, rng, st):
        typ, _d = m.expunge()
        self._count(side, "expunge", typ)

    def _op_uid_expunge(self, m, side, user, rng, st):
        uids = self._uid_set(m, rng)
        if uids is None:
            return
        m.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)")
        typ, _d = m.uid("EXPUNGE", uids)
        self._count(side, "uid_expunge", typ)

    def _op_copy(self, m, side, user, rng, st, cmd="COPY"):
        uids = self._uid_set(m, rng)
        if uids is None:
            return
        typ, _d = m.uid(cmd, uids, imap_quote(self._other_box(rng, st)))
        self._count(side, cmd.lower(), typ)

    def _op_move(self, m, side, user, rng, st):
        self._op_copy(m, side, user, rng, st, cmd="MOVE")

    def _op_select(self, m, side, user, rng, st):
        if not self._select(m, side, rng, self._other_box(rng, st), st):
            self._select(m, side, rng, "INBOX", st)

    def _op_create(self, m, side, user, rng, st):
        typ, _d = m.create(imap_quote(rng.choice(self.FOLDERS + self.TEMP)))
        self._count(side, "create", typ)

    def _op_rename(self, m, side, user, rng, st):
        src, dst = rng.sample(self.TEMP, 2)
        if st["box"] in (src, dst):
            return
        typ, _d = m.rename(imap_quote(src), imap_quote(dst))
        self._count(side, "rename", typ)

    def _op_delete(self, m, side, user, rng, st):
        box = rng.choice(self.TEMP + ["F2"])
        if box == st["box"]:
            return
        typ, _d = m.delete(imap_quote(box))
        self._count(side, "delete", typ)

    def _op_subscribe(self, m, side, user, rng, st):
        typ, _d = m.subscribe(imap_quote(rng.choice(self.FOLDERS +
                                                     self.TEMP)))
        self._count(side, "subscribe", typ)

    def _op_unsubscribe(self, m, side, user, rng, st):
        typ, _d = m.unsubscribe(imap_quote(rng.choice(self.FOLDERS +
                                                       self.TEMP)))
        self._count(side, "unsubscribe", typ)


def appends_checked_on_b(pair, users, rounds, tag):
    """One IMAP session on A per entry of users (a user may repeat), each
    APPENDing rounds messages at the same time and checking right after
    each OK that the message is on B already. Returns (APPEND times,
    errors)."""
    errors, times = [], []
    lock = threading.Lock()

    def worker(n, user):
        try:
            b = BView(pair, user)
            a = pair.imap("A", user)
            try:
                for i in range(rounds):
                    msg = make_message("%s %d.%d" % (tag, n, i))
                    dt = pair.append("A", user, msg, conn=a)
                    ok = b.has(msg)
                    with lock:
                        times.append(dt)
                        if not ok:
                            errors.append("session %d (%s) message %d "
                                          "not on B at OK" % (n, user, i))
            finally:
                a.logout()
                b.close()
        except Exception as e:
            with lock:
                errors.append("session %d (%s): %r" % (n, user, e))

    threads = [threading.Thread(target=worker, args=(n, u), daemon=True)
               for n, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return times, errors


# ---------------------------------------------------------------------------
# Many logged-in sessions

# Dovecot's own limits, raised for thousands of sessions
MANY_SESSIONS_CONF = """
default_process_limit = 5000
default_client_limit = 10000
mail_max_userip_connections = 10000
service imap {
  process_limit = 5000
}
service anvil {
  client_limit = 20000
}
service stats {
  client_limit = 20000
}
# logins in high-performance mode: a login process per connection would
# make opening the sessions the slowest part of the test
service imap-login {
  restart_request_count = unlimited
  process_min_avail = 2
  client_limit = 1000
}
"""
# Dovecot 2.3 names restart_request_count = unlimited service_count = 0
MANY_SESSIONS_CONF = conf_by_series(
    MANY_SESSIONS_CONF, MANY_SESSIONS_CONF.replace(
        "restart_request_count = unlimited", "service_count = 0"))

SESSION_WORKERS = 16


def open_sessions(pair, count, tag):
    """count IMAP sessions on A over the numbered users, each of which
    APPENDs a message and stays logged in. Returns [(user, conn)]."""
    users = NUMBERED_USERS

    def one(i):
        user = users[i % len(users)]
        m = pair.imap("A", user)
        pair.append("A", user, make_message("%s-%d" % (tag, i)), conn=m)
        return user, m
    with concurrent.futures.ThreadPoolExecutor(SESSION_WORKERS) as ex:
        return list(ex.map(one, range(count)))


def close_sessions(sessions):
    def one(s):
        try:
            s[1].logout()
        except Exception:
            pass
    with concurrent.futures.ThreadPoolExecutor(SESSION_WORKERS) as ex:
        list(ex.map(one, sessions))


def measure_new_mail(pair, sessions, views, tag):
    """APPEND a message in each session and time until it is on B."""
    lat = []
    for i, (user, m) in enumerate(sessions):
        msg = make_message("%s-%d" % (tag, i))
        t0 = time.monotonic()
        pair.append("A", user, msg, conn=m)
        view = views[user]
        deadline = t0 + 60
        while not view.has(msg):
            if time.monotonic() >= deadline:
                raise AssertionError("%s: new mail not on B after 60 s"
                                     % user)
            time.sleep(0.01)
        lat.append(time.monotonic() - t0)
    return lat


def p90(lat):
    return sorted(lat)[int(len(lat) * 0.9) - 1]


def summary(lat):
    return "median %.3f s, 90th percentile %.3f s, max %.3f s" % (
        statistics.median(lat), p90(lat), max(lat))
