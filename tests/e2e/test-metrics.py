#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""GET /metrics, /healthz and /readyz of the service's HTTP listener, and
whether the metrics tell what really happened.

Both instances have the HTTP listener; the mail plugin is on. The page
is parsed strictly (dwtest.web.parse_metrics: TYPE and HELP lines, grouped
families, label escapes, cumulative histogram buckets), and a scraper
thread keeps parsing it while the workload runs: counters never go down,
the histogram's count is the sum of syncs_total in every scrape, running
syncs stay within dovewarden_max_syncs.

Checked against the workload: N APPENDs (each its own IMAP session) for
M users raise notifications_total{source="plugin"} by at least N*M (the
plugin coalesces only within a session) and the successful syncs by at
least M; afterwards the queue gauges, the oldest pending change and the
running syncs are back to 0, dovewarden_users equals the users that
`doveadm dovewarden status` lists, and the last successful sync is
recent. Notifications and rejections sent over the notify and admin
sockets are counted exactly, and so is a sync of a user the userdb does
not know (nouser). /readyz answers 503 while doveadm-server's socket is
missing. With B stopped, a change makes tempfail and
users_failing rise, the user shows in queue_users and the oldest pending
change ages; with B back, failing users and the queue return to 0."""

import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.web import (  # noqa: E402
    http_listener_conf, http_port, http_request, scrape as scrape_port,
    wait_http)

N_APPENDS = 4
WORK_USERS = ["user%02d" % i for i in range(21, 26)]
DOWN_USERS = ("user30", "user31")    # high and low change while B is down
SOCKET_USERS = ["user%02d" % i for i in range(32, 39)]
MAX_SYNCS = 3
RETRY_MIN, RETRY_MAX = 1, 4
CONVERGE = 30.0

FAMILIES = {
    "dovewarden_queue_users": "gauge",
    "dovewarden_oldest_pending_change_seconds": "gauge",
    "dovewarden_syncs_total": "counter",
    "dovewarden_sync_duration_seconds": "histogram",
    "dovewarden_syncs_running": "gauge",
    "dovewarden_users": "gauge",
    "dovewarden_users_failing": "gauge",
    "dovewarden_notifications_total": "counter",
    "dovewarden_rejected_inputs_total": "counter",
    "dovewarden_last_successful_sync_timestamp_seconds": "gauge",
    "dovewarden_seconds_since_last_successful_sync": "gauge",
}
PRIORITIES = ("sync", "high", "low")
# doveadm dovewarden status's overview line -> the same number as a metric
OVERVIEW = {
    "Total number of known users": ("dovewarden_users", {}),
    "Users whose last sync failed": ("dovewarden_users_failing", {}),
    "Syncs running": ("dovewarden_syncs_running", {}),
    "Queued 'sync' requests": ("dovewarden_queue_users",
                               {"priority": "sync"}),
    "Queued 'high' requests": ("dovewarden_queue_users",
                               {"priority": "high"}),
    "Queued 'low' requests": ("dovewarden_queue_users", {"priority": "low"}),
}
RESULTS = ("ok", "changed", "tempfail", "nouser", "config")
COUNTERS = [("dovewarden_syncs_total", {"result": x}) for x in RESULTS] + \
    [("dovewarden_notifications_total", {"source": x})
     for x in ("plugin", "http")] + \
    [("dovewarden_rejected_inputs_total", {"source": x})
     for x in ("plugin", "http", "admin")] + \
    [("dovewarden_sync_duration_seconds_count", {})]


def side_conf(pair):
    return {s: http_listener_conf(http_port(pair, s))
            for s in SIDES}


r = Runner(
    "test-metrics",
    extra_conf="dovewarden_max_syncs = %d\n"
               "dovewarden_retry_min_interval = %ds\n"
               "dovewarden_retry_max_interval = %ds"
               % (MAX_SYNCS, RETRY_MIN, RETRY_MAX),
    side_conf=side_conf)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def scrape(pair, side="A"):
    return scrape_port(http_port(pair, side))[1]


def counters(m):
    return {(n, tuple(sorted(l.items()))): m.value(n, **l)
            for n, l in COUNTERS}


def syncs(m, *results):
    return sum(m.value("dovewarden_syncs_total", result=x)
               for x in (results or RESULTS))


def queued(m):
    return sum(m.value("dovewarden_queue_users", priority=p)
               for p in PRIORITIES)


def check_consistent(m, where):
    """What holds in every single scrape."""
    h = m.histogram("dovewarden_sync_duration_seconds")
    expect(h["count"] == syncs(m), "%s: histogram count %r != sum of "
           "syncs_total %r" % (where, h["count"], syncs(m)))
    running = m.value("dovewarden_syncs_running")
    expect(0 <= running <= MAX_SYNCS, "%s: %r syncs running, max %d"
           % (where, running, MAX_SYNCS))
    for p in PRIORITIES:
        expect(m.value("dovewarden_queue_users", priority=p) >= 0,
               "%s: negative queue gauge" % where)
    failing = m.value("dovewarden_users_failing")
    expect(0 <= failing <= m.value("dovewarden_users"),
           "%s: %r failing of %r users" % (where, failing,
                                           m.value("dovewarden_users")))
    expect(m.value("dovewarden_oldest_pending_change_seconds") >= 0,
           "%s: negative age" % where)


def wait_quiet(pair, timeout=20.0, side="A"):
    """Poll until nothing is queued, running or failing on side; returns
    that scrape."""
    def quiet():
        m = scrape(pair, side)
        if (queued(m) == 0 and m.value("dovewarden_syncs_running") == 0
                and m.value("dovewarden_users_failing") == 0
                and m.value("dovewarden_oldest_pending_change_seconds")
                == 0):
            return m
        return None
    return wait_until(quiet, timeout, "%s's queue to empty" % side)


class Scraper:
    """Scrapes side's /metrics in a loop until stopped: each page must
    parse, be consistent, and no counter may go down."""

    def __init__(self, pair, side="A", interval=0.05):
        self.pair, self.side, self.interval = pair, side, interval
        self.errors = []
        self.count = 0
        self.max_queued = 0
        self.max_running = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        prev = None
        while not self.stopping.is_set():
            try:
                m = scrape(self.pair, self.side)
                check_consistent(m, "scrape %d" % (self.count + 1))
                cur = counters(m)
                if prev is not None:
                    down = {k: (prev[k], v) for k, v in cur.items()
                            if v < prev[k]}
                    expect(not down, "counters went down: %r" % down)
                prev = cur
                self.count += 1
                self.max_queued = max(self.max_queued, queued(m))
                self.max_running = max(self.max_running,
                                       m.value("dovewarden_syncs_running"))
            except Exception as e:
                self.errors.append(str(e))
                if len(self.errors) > 5:
                    return
            self.stopping.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(30)
        expect(not self.errors, "while scraping: %s"
               % "\n".join(self.errors))
        expect(self.count > 0, "no scrape succeeded")


@r.case("healthz, readyz, and a well-formed /metrics page")
def _(pair):
    notes = []
    for side in SIDES:
        port = http_port(pair, side)
        wait_http(port)
        h = http_request(port, "GET", "/healthz")
        expect(h.status == 200, "%s GET /healthz: %r" % (side, h))
        rd = wait_until(
            lambda: (lambda x: x if x.status == 200 else None)(
                http_request(port, "GET", "/readyz")), 10,
            "%s GET /readyz to answer 200" % side)
        resp, m = scrape_port(port)
        ctype = resp.headers.get("content-type", "")
        expect(ctype.startswith("text/plain") and "0.0.4" in ctype,
               "%s /metrics Content-Type %r" % (side, ctype))
        for fam, typ in FAMILIES.items():
            expect(m.types.get(fam) == typ, "%s: %s has TYPE %r, not %r"
                   % (side, fam, m.types.get(fam), typ))
            expect(m.helps.get(fam), "%s: %s has no HELP" % (side, fam))
        extra = sorted(f for f in m.types if f not in FAMILIES)
        expect(all(f.startswith("dovewarden_") for f in m.types),
               "%s: families not named dovewarden_*: %r" % (side, extra))
        # every label value is there from the start, so that rate() and
        # the alerts work before the first event of each kind
        got = {l["priority"] for l, _v in
               m.select("dovewarden_queue_users")}
        expect(got == set(PRIORITIES), "%s: queue_users priorities %r"
               % (side, got))
        got = {l["result"] for l, _v in m.select("dovewarden_syncs_total")}
        expect(got == set(RESULTS), "%s: syncs_total results %r"
               % (side, got))
        got = {l["source"] for l, _v in
               m.select("dovewarden_notifications_total")}
        expect(got >= {"plugin", "http"}, "%s: notification sources %r"
               % (side, got))
        got = {l["source"] for l, _v in
               m.select("dovewarden_rejected_inputs_total")}
        expect(got == {"plugin", "http", "admin"},
               "%s: rejected input sources %r" % (side, got))
        check_consistent(m, side)
        hd = http_request(port, "HEAD", "/metrics")
        expect(hd.status == 200 and hd.body == b"", "%s HEAD /metrics: %r"
               % (side, hd))
        nf = http_request(port, "GET", "/metrics/x")
        expect(nf.status == 404, "%s GET /metrics/x: %r" % (side, nf))
        notes.append("%s: %d families, %d samples, users %d, readyz %r"
                     % (side, len(m.types), len(m.samples),
                        m.value("dovewarden_users"), rd.body))
    return "; ".join(notes)


@r.case("workload: the counters follow the appends, then all is quiet")
def _(pair):
    wait_quiet(pair)
    m0 = scrape(pair)
    t0 = time.time()
    with Scraper(pair) as sc:
        for i in range(N_APPENDS):
            for user in WORK_USERS:
                pair.append("A", user, make_message("metrics-%d" % i))
        pair.wait_converged(WORK_USERS, CONVERGE, "after the appends")
        m1 = wait_quiet(pair)
    check_consistent(m1, "after the workload")
    d_notify = (m1.value("dovewarden_notifications_total", source="plugin")
                - m0.value("dovewarden_notifications_total",
                           source="plugin"))
    n = N_APPENDS * len(WORK_USERS)
    expect(d_notify >= n, "%d APPEND sessions, but plugin notifications "
           "grew by only %d" % (n, d_notify))
    d_ok = syncs(m1, "ok", "changed") - syncs(m0, "ok", "changed")
    expect(d_ok >= len(WORK_USERS), "%d users changed, successful syncs "
           "grew by only %d" % (len(WORK_USERS), d_ok))
    expect(syncs(m1, "tempfail", "nouser", "config") ==
           syncs(m0, "tempfail", "nouser", "config"),
           "failed syncs without a failure: %r -> %r"
           % (counters(m0), counters(m1)))
    expect(m1.value("dovewarden_notifications_total", source="http") == 0,
           "HTTP notifications without any POST")
    h = m1.histogram("dovewarden_sync_duration_seconds")
    expect(h["sum"] > 0, "syncs ran, but the duration sum is %r" % h["sum"])
    expect(h["count"] == syncs(m1), "histogram count %r, syncs %r"
           % (h["count"], syncs(m1)))
    now = time.time()
    ts = m1.value("dovewarden_last_successful_sync_timestamp_seconds")
    since = m1.value("dovewarden_seconds_since_last_successful_sync")
    expect(t0 - 1 <= ts <= now + 1, "last successful sync at %r, the "
           "workload ran from %.0f to %.0f" % (ts, t0, now))
    expect(0 <= since <= now - t0 + 2 and abs((now - ts) - since) <= 2,
           "seconds since the last successful sync %r, timestamp %r, now "
           "%.0f" % (since, ts, now))
    # the service's user count against doveadm dovewarden status
    users = pair.dw_users("A")
    m2 = scrape(pair)
    expect(m2.value("dovewarden_users") == len(users),
           "dovewarden_users %r, but status lists %d users"
           % (m2.value("dovewarden_users"), len(users)))
    for u in WORK_USERS:
        expect(u in users, "%s not in the status" % u)
    ov = pair.dw_overview("A")
    for label, (metric, labels) in OVERVIEW.items():
        expect(label in ov, "no %r in the overview %r" % (label, ov))
        expect(ov[label] == m2.value(metric, **labels),
               "overview %r is %r, but %s%r is %r" % (
                   label, ov[label], metric, labels,
                   m2.value(metric, **labels)))
    return ("%d scrapes during the workload (max %d queued, %d running); "
            "plugin notifications +%d for %d sessions, successful syncs "
            "+%d, %d users known; overview %r"
            % (sc.count, sc.max_queued, sc.max_running, d_notify, n, d_ok,
               len(users), ov))


def notify_socket(pair):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(pair.dw_dir, "A", "run", "dovewarden-notify"))
    s.sendall(b"VERSION\tdovewarden-notify\t1\t0\n")
    return s


def admin_socket(pair):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(pair.dw_dir, "A", "run", "dovewarden-admin"))
    s.sendall(b"VERSION\tdovewarden-admin-client\t1\t0\n")
    return s


def read_lines(s, n):
    """Read until n lines arrived (bounded by the socket timeout)."""
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode("utf-8", "replace").split("\n")


def wait_counter(pair, name, labels, target, what):
    def reached():
        m = scrape(pair)
        return m if m.value(name, **labels) >= target else None
    m = wait_until(reached, 10, what)
    time.sleep(0.3)
    m = scrape(pair)
    expect(m.value(name, **labels) == target, "%s: %s%r is %r, expected "
           "exactly %r" % (what, name, labels, m.value(name, **labels),
                           target))
    return m


@r.case("notify and admin sockets: notifications and rejections counted "
        "exactly")
def _(pair):
    wait_quiet(pair)
    m0 = scrape(pair)
    n0 = m0.value("dovewarden_notifications_total", source="plugin")
    s = notify_socket(pair)
    try:
        for u in SOCKET_USERS:
            s.sendall(("N\t%s\tlow\n" % u).encode())
    finally:
        s.close()
    wait_counter(pair, "dovewarden_notifications_total",
                 {"source": "plugin"}, n0 + len(SOCKET_USERS),
                 "%d notify lines" % len(SOCKET_USERS))

    rej0 = m0.value("dovewarden_rejected_inputs_total", source="plugin")
    bad = [b"N\t\thigh\n", b"N\tuser32\tbogus\n", b"X\tuser32\n",
           b"N\tus\xff\xfeer\tlow\n"]
    for line in bad:
        s = notify_socket(pair)
        try:
            s.sendall(line)
            read_lines(s, 99)   # until the service disconnects
        except socket.timeout:
            raise AssertionError("the service kept the connection after "
                                 "%r" % line)
        finally:
            s.close()
    wait_counter(pair, "dovewarden_rejected_inputs_total",
                 {"source": "plugin"}, rej0 + len(bad),
                 "%d invalid notify lines" % len(bad))

    a0 = m0.value("dovewarden_rejected_inputs_total", source="admin")
    s = admin_socket(pair)
    try:
        s.sendall(b"BOGUS\nREPLICATE\tweird\t\tuser32\nSTATUS\n")
        lines = read_lines(s, 4)
    finally:
        s.close()
    errs = [l for l in lines if l.startswith("-\t")]
    expect(len(errs) == 2, "two admin errors expected, got %r" % lines)
    m = wait_counter(pair, "dovewarden_rejected_inputs_total",
                     {"source": "admin"}, a0 + 2, "2 invalid admin requests")
    for src in ("plugin", "http"):
        expect(m.value("dovewarden_notifications_total", source=src) ==
               m0.value("dovewarden_notifications_total", source=src) +
               (len(SOCKET_USERS) if src == "plugin" else 0),
               "notifications %s changed unexpectedly" % src)
    pair.wait_converged(SOCKET_USERS[:2], CONVERGE, "after the notify lines")
    wait_quiet(pair)
    return "admin replies: %r" % errs


@r.case("B down: tempfail, failing users and lag rise; B back: all clear")
def _(pair):
    high_user, low_user = DOWN_USERS
    for u in DOWN_USERS:
        pair.append("A", u, make_message("down-seed"))
    pair.wait_converged(list(DOWN_USERS), CONVERGE, "seeding")
    m0 = wait_quiet(pair)
    ready_down = None
    pair.stop_one("B")
    try:
        msg = make_message("metrics-b-down")
        pair.append("A", high_user, msg)
        m = pair.imap("A", low_user)
        try:
            check_ok(m.select("INBOX"), "SELECT")
            check_ok(m.store("1", "+FLAGS", "\\Flagged"), "STORE")
        finally:
            m.logout()

        def failing():
            m = scrape(pair)
            check_consistent(m, "B down")
            if (m.value("dovewarden_users_failing") >= 2 and
                    syncs(m, "tempfail") - syncs(m0, "tempfail") >= 3):
                return m
            return None
        m1 = wait_until(failing, 30, "tempfail and failing users "
                        "to rise while B is down")
        # a user counts in queue_users while it waits, not while its
        # (failing) sync runs
        def both_queued():
            m = scrape(pair)
            return m if (m.value("dovewarden_queue_users", priority="high")
                         >= 1 and m.value("dovewarden_queue_users",
                                          priority="low") >= 1) else None
        wait_until(both_queued, 10, "%s (high) and %s (low) queued "
                   "while B is down" % DOWN_USERS)
        age1 = m1.value("dovewarden_oldest_pending_change_seconds")
        expect(age1 >= 0, "age %r" % age1)
        time.sleep(2.2)
        m2 = scrape(pair)
        age2 = m2.value("dovewarden_oldest_pending_change_seconds")
        expect(age2 >= age1 + 2 and age2 >= 2, "the oldest pending change "
               "does not age: %r, 2.2 s later %r" % (age1, age2))
        expect(syncs(m2, "ok", "changed") == syncs(m1, "ok", "changed"),
               "successful syncs while B is down")
        since = m2.value("dovewarden_seconds_since_last_successful_sync")
        expect(since >= 2, "seconds since the last success %r while B is "
               "down" % since)
        st = pair.dw_users("A")
        nfail = sum(1 for v in st.values() if int(v["failed"]) > 0)
        expect(nfail == m2.value("dovewarden_users_failing"),
               "status shows %d failing users, the metric %r"
               % (nfail, m2.value("dovewarden_users_failing")))
        # readiness is about the local doveadm-server, not the peer
        ready_down = http_request(http_port(pair, "A"),
                                  "GET", "/readyz").status
    finally:
        pair.start_one("B")
    t = pair.wait_converged(list(DOWN_USERS), CONVERGE, "after B is back")
    expect(msg_hash(msg) in pair.snapshot("B", high_user).hashes(),
           "the message is not on B")
    m3 = wait_quiet(pair, timeout=RETRY_MAX * 2 + 10)
    check_consistent(m3, "after B is back")
    expect(syncs(m3, "ok") > syncs(m2, "ok"), "no successful sync after "
           "B came back")
    expect(m3.value("dovewarden_last_successful_sync_timestamp_seconds") >
           m2.value("dovewarden_last_successful_sync_timestamp_seconds") - 1,
           "the last successful sync time did not move")
    return ("tempfail +%d, %d failing users at most seen, age %r -> %r; "
            "readyz with B down %r; converged %.2f s after B was started"
            % (syncs(m2, "tempfail") - syncs(m0, "tempfail"),
               m2.value("dovewarden_users_failing"), age1, age2,
               ready_down, t))


@r.case("a user unknown to the userdb: counted as nouser, then forgotten")
def _(pair):
    m0 = wait_quiet(pair)
    s = notify_socket(pair)
    try:
        s.sendall(b"N\tdwtest-nosuchuser\thigh\n")
    finally:
        s.close()

    def counted():
        m = scrape(pair)
        return m if syncs(m, "nouser") > syncs(m0, "nouser") else None
    m1 = wait_until(counted, 15, "a nouser sync result")
    check_consistent(m1, "after nouser")
    m2 = wait_quiet(pair)
    expect(syncs(m2, "nouser") == syncs(m0, "nouser") + 1,
           "nouser counted %r times" % (syncs(m2, "nouser") -
                                        syncs(m0, "nouser")))
    expect(m2.value("dovewarden_users") == m0.value("dovewarden_users"),
           "known users %r -> %r: the unknown user was not forgotten"
           % (m0.value("dovewarden_users"), m2.value("dovewarden_users")))
    expect("dwtest-nosuchuser" not in pair.dw_users("A"),
           "the unknown user is still in the status")
    return "tempfail/ok unchanged: %r" % (
        syncs(m2, "tempfail", "ok") == syncs(m0, "tempfail", "ok"))


@r.case("readyz: 503 while doveadm-server's socket is gone, 200 again")
def _(pair):
    port = http_port(pair, "A")
    sock = pair.doveadm_socket_path("A")
    moved = sock + ".dwtest-moved"

    def status_is(code):
        def probe():
            resp = http_request(port, "GET", "/readyz")
            return resp if resp.status == code else None
        return probe
    os.rename(sock, moved)
    try:
        # the service caches the probe's result for up to 5 s
        down = wait_until(status_is(503), 10,
                          "GET /readyz to answer 503")
        h = http_request(port, "GET", "/healthz")
        expect(h.status == 200, "healthz while not ready: %r" % h)
        scrape(pair)
    finally:
        os.rename(moved, sock)
    wait_until(status_is(200), 10, "GET /readyz to answer 200 again")
    return "while gone: %r" % down.body


@r.case("B's metrics: consistent, nothing failing")
def _(pair):
    m = scrape(pair, "B")
    check_consistent(m, "B")
    expect(m.value("dovewarden_users_failing") == 0,
           "B has failing users: %r" % m.value("dovewarden_users_failing"))
    return ("B: syncs %r, plugin notifications %r, users %r" % (
        {x: m.value("dovewarden_syncs_total", result=x) for x in RESULTS},
        m.value("dovewarden_notifications_total", source="plugin"),
        m.value("dovewarden_users")))


if __name__ == "__main__":
    run(r)
