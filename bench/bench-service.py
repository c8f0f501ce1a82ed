#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Scale benchmark of the installed dovewarden service with N known users
(default 1,000,000), in a real testenv/pair. Not a test: it prints figures.

Run inside the chroot (root), with dovewarden installed:

    DW_DIR=/srv/dt-b DW_PORT_OFFSET=700 \\
        python3 /src/dovewarden/bench/bench-service.py [--users N]

Setup. The pair is started with dovewarden_max_syncs = 1 and
dovewarden_doveadm_socket_path pointing at a unix socket of this script
that accepts and never answers (dovewarden_sync_timeout = 1h). The first
notification (alice, who exists in the userdb) starts the one sync, which
then hangs: every later notification only queues, nothing is synced or
forgotten, so the pending counts show exactly what the service accepted.
B is stopped (not needed). Debug logging is off (log_debug =), as in
production; --debug-log keeps the pair's log_debug = category=dovewarden,
which logs a line per notification. service dovewarden gets
vsz_limit = 2G: with the default 256 MB the service cannot load 1,000,000
users (it dies with "Out of memory" at start and the master throttles
it).

The state file: A is stopped, <state_dir>/dovewarden.db is written with
N idle users (fully synced within the last 23 hours, a 160-byte dsync
state each; format in service/queue/dovewarden-store.h), A is started again.

Notification rates: several connections send their lines at once, each
ending with a wait request (W) of 1 ms; its reply means the connection's
earlier lines were all processed. Responsiveness: the latency of a
notify+wait(1 ms) and of a notify+STATUS round trip, idle and while
`doveadm dovewarden status '*'` runs. The NOUSER drain phase (--drain N)
restarts A with the clean snapshot, queues N users the userdb does not
know behind the hanging sync and then ends that sync. The sweep phase
(--sweep N, off by default) appends N users to A's passwd-file userdb and
restarts A with an empty state; with Dovecot 2.4.1 a userdb listing of
more than a few thousand users fails in auth ("auth-worker: Aborted LIST
request for *: Shutting down", doveadm user '*' too), so it reports that.

Times of the snapshot save/load come from the process start time
(/proc/<pid>/stat), the birth time of the new snapshot (the .tmp file
the save creates and renames) and its mtime (last write of the save).
Every process the script starts is stopped by PID at the end; the pair
with testenv/pair stop.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

from dwtest.pair import SilentListener, listen_unix  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIR = os.path.join(SRC, "testenv", "pair")
DW_DIR = os.environ.get("DW_DIR", "/srv/dt-b")
OFFSET = os.environ.get("DW_PORT_OFFSET", "700")
STATE_LEN = 160
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

FAKE_DOVEADM = os.path.join(DW_DIR, "fake-doveadm")
EXTRA_CONF_FMT = """
dovewarden_max_syncs = 1
dovewarden_sync_timeout = 1h
dovewarden_doveadm_socket_path = %s
log_debug =
service dovewarden {
  vsz_limit = %s
}
"""

EXTRA_CONF = EXTRA_CONF_FMT % (FAKE_DOVEADM, "2G")

rows = []


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def row(name, value, unit, note=""):
    rows.append((name, value, unit, note))
    log("%s: %s %s %s" % (name, fmt(value), unit, note))


def fmt(v):
    if isinstance(v, float):
        return "%.3f" % v if v < 100 else "%.0f" % v
    return str(v)


def pair(*args, timeout=120):
    env = dict(os.environ, DW_DIR=DW_DIR, DW_PORT_OFFSET=OFFSET,
               DW_EXTRA_CONF=EXTRA_CONF)
    subprocess.run([PAIR] + list(args), env=env, check=True,
                   timeout=timeout, stdout=subprocess.DEVNULL)


def apath(*p):
    return os.path.join(DW_DIR, "A", *p)


def master_pid():
    with open(apath("run", "master.pid")) as f:
        return int(f.read().strip())


def service_pid(timeout=30.0):
    master = master_pid()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d, "rb") as f:
                    st = f.read()
                ppid = int(st[st.rindex(b")") + 2:].split()[1])
                if ppid == master and os.path.basename(
                        os.readlink("/proc/%s/exe" % d)) == "dovewarden":
                    return int(d)
            except (OSError, ValueError):
                continue
        time.sleep(0.05)
    raise RuntimeError("no dovewarden process under A's master")


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no %s for %d" % (key, pid))


def proc_start_boottime(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        st = f.read()
    return int(st[st.rindex(b")") + 2:].split()[19]) / CLOCK_TICKS


def boottime():
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def wall_to_boot(t):
    return t - time.time() + boottime()


def file_times(path):
    """(birth, mtime) of path as wall clock times"""
    out = subprocess.run(["stat", "-c", "%.9W %.9Y", path], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


# -- admin and notify protocol clients --

class Line:
    def __init__(self, path, hello):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(path)
        self.input = self.sock.makefile("rb", buffering=1 << 16)
        self.sock.sendall(hello)
        self.readline()  # the server's VERSION

    def readline(self):
        line = self.input.readline()
        if not line.endswith(b"\n"):
            raise RuntimeError("connection closed")
        return line[:-1]

    def close(self):
        self.input.close()
        self.sock.close()


class Admin(Line):
    def __init__(self):
        super().__init__(apath("run", "dovewarden-admin"),
                         b"VERSION\tdovewarden-admin-client\t1\t0\n")

    def status(self):
        self.sock.sendall(b"STATUS\n")
        res = {}
        while True:
            line = self.readline()
            if line == b"":
                return res
            k, v = line.decode().split("\t")
            res[k] = int(v)


class Notify(Line):
    def __init__(self):
        super().__init__(apath("run", "dovewarden-notify"),
                         b"VERSION\tdovewarden-notify\t1\t0\n")

    def send(self, data):
        self.sock.sendall(data)


def wait_status(admin, pred, timeout, what, interval=0.01):
    end = time.monotonic() + timeout
    while True:
        st = admin.status()
        if pred(st):
            return st
        if time.monotonic() > end:
            raise RuntimeError("timed out waiting for %s: %s" % (what, st))
        time.sleep(interval)


# -- the never-answering doveadm-server --

def fake_doveadm():
    """A doveadm-server socket that accepts and never answers"""
    return SilentListener(listen_unix(FAKE_DOVEADM, 16))


# -- phases --

def write_db(path, n):
    now = int(time.time())
    state = "S" * STATE_LEN
    with open(path, "w") as f:
        f.write("dovewarden-db\t1\n")
        chunk = []
        for i in range(n):
            t = now - 60 - (i * 7919) % (23 * 3600)
            chunk.append("user%07d@example.test\tnone\t0\t%d\t%d\t%d\t0\t0\t"
                         "0\t%s\t\n" % (i, t, t, t, state))
            if len(chunk) == 10000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))
        f.flush()
        os.fsync(f.fileno())


def start_a_and_measure(n):
    """Start A with the prepared snapshot; return the service pid"""
    db = apath("state", "dovewarden.db")
    t0 = boottime()
    pair("start-one", "A")
    pid = service_pid()
    admin = None
    end = time.monotonic() + 60
    while admin is None:
        try:
            admin = Admin()
        except (OSError, RuntimeError):
            if time.monotonic() > end or not os.path.exists(
                    "/proc/%d" % pid):
                raise RuntimeError("the service did not come up; see "
                                   "the end of %s"
                                   % apath("log", "dovecot.log"))
            time.sleep(0.01)
    st = admin.status()
    t_ready = boottime()
    start = proc_start_boottime(pid)
    birth, mtime = file_times(db)
    if st["users"] != n:
        raise RuntimeError("service knows %d users, expected %d"
                           % (st["users"], n))
    row("service start to admin reply (load + compaction save)",
        t_ready - start, "s", "(master start: %.2f s before)"
        % (start - t0))
    row("  load snapshot (process start -> save begins)",
        wall_to_boot(birth) - start, "s", "10 ms resolution")
    row("  compaction save at start (file birth -> mtime)",
        mtime - birth, "s", "+ fsync/rename")
    admin.close()
    return pid


def stop_a_and_measure():
    db = apath("state", "dovewarden.db")
    pid = service_pid()
    mpid = master_pid()
    t_kill = time.time()
    os.kill(mpid, 15)
    end = time.monotonic() + 60
    while os.path.exists("/proc/%d" % pid) and time.monotonic() < end:
        time.sleep(0.005)
    t_exit = time.time()
    birth, mtime = file_times(db)
    size = os.path.getsize(db)
    row("stop: SIGTERM to master -> service exit", t_exit - t_kill, "s")
    row("  SIGTERM to master -> save begins", birth - t_kill, "s")
    row("  save at shutdown (file birth -> mtime)", mtime - birth, "s",
        "%d bytes" % size)
    while os.path.exists("/proc/%d" % mpid) and time.monotonic() < end:
        time.sleep(0.01)
    if os.path.exists("/proc/%d" % mpid):
        os.kill(mpid, 9)
    try:
        os.unlink(apath("run", "master.pid"))
    except OSError:
        pass


class Sender(Notify):
    """Sends its payload, which ends with a wait request (W) of 1 ms for
    a marker user; the reply to it means every earlier line of this
    connection has been processed."""

    def run(self, payload):
        self.sock.sendall(payload)
        self.t_sent = time.monotonic()
        while True:
            line = self.readline()
            if line.startswith((b"+\t1", b"-\t1")):
                break
        self.t_done = time.monotonic()


markers = [0]


def wait_line(k):
    markers[0] += 1
    return b"W\t1\tmarker%d-%d\t1\n" % (markers[0], k)


def notify_rate(admin, name, lines_per_conn, nconn, expect):
    """lines_per_conn(k) -> bytes for connection k"""
    payloads = []
    total = 0
    for k in range(nconn):
        body = lines_per_conn(k)
        total += body.count(b"\n")
        payloads.append(body + wait_line(k))
    before = admin.status()
    conns = [Sender() for _ in range(nconn)]
    threads = [threading.Thread(target=c.run, args=(p,))
               for c, p in zip(conns, payloads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    secs = max(c.t_done for c in conns) - t0
    t_sent = max(c.t_sent for c in conns) - t0
    for c in conns:
        c.close()
    st = admin.status()
    if expect is not None:
        got = st["pending_high"] - before["pending_high"]
        if got != expect:
            log("WARNING: %s: pending_high grew by %d, expected %d"
                % (name, got, expect))
    row("notify rate: " + name, total / secs, "lines/s",
        "%d lines, %d conns, %.2f s (sent in %.2f s)"
        % (total, nconn, secs, t_sent))
    return total / secs


def wait_round_trip(notify, k):
    """notify line + 1 ms wait request on one connection: the latency of
    the notify path alone (no STATUS)"""
    t0 = time.monotonic()
    notify.send(b"N\tprobe%d\tlow\n" % k + wait_line(0))
    while True:
        line = notify.readline()
        if line.startswith((b"+\t1", b"-\t1")):
            break
    return time.monotonic() - t0


def admin_raw_time(request, runs=5):
    """best time of an admin request whose reply ends with an empty
    line"""
    a = Admin()
    best = None
    for _ in range(runs):
        t0 = time.monotonic()
        a.sock.sendall(request)
        while a.readline() != b"":
            pass
        secs = time.monotonic() - t0
        best = secs if best is None else min(best, secs)
    a.close()
    return best


def doveadm_time(*args, cmd="status", out=subprocess.DEVNULL):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "DOVECOT_HOSTNAME": "a.test"}
    t0 = time.monotonic()
    subprocess.run(["doveadm", "-c", apath("dovecot.conf"), "dovewarden",
                    cmd] + list(args), env=env, check=True,
                   stdout=out, timeout=300)
    return time.monotonic() - t0


def admin_raw_status_all(mask=b"*"):
    """STATUS <mask> over the admin socket, without doveadm: seconds until
    the first line and until the end, and the number of lines"""
    a = Admin()
    t0 = time.monotonic()
    a.sock.sendall(b"STATUS\t" + mask + b"\n")
    first = None
    lines = 0
    while True:
        line = a.readline()
        if first is None:
            first = time.monotonic() - t0
        if line == b"":
            break
        lines += 1
    total = time.monotonic() - t0
    a.close()
    return first, total, lines


def probe_latency(admin, notify, stop_evt, out):
    k = 0
    while not stop_evt.is_set():
        t0 = time.monotonic()
        notify.send(b"N\tprobe%d\tlow\n" % k)
        admin.status()
        out.append(time.monotonic() - t0)
        k += 1
        time.sleep(0.02)


def probe_wait_latency(stop_evt, out):
    notify = Notify()
    k = 0
    while not stop_evt.is_set():
        out.append(wait_round_trip(notify, 100000 + k))
        k += 1
        time.sleep(0.02)
    notify.close()


def responsiveness(pid):
    admin = Admin()
    notify = Notify()
    only = []
    for k in range(50):
        t0 = time.monotonic()
        admin.status()
        only.append(time.monotonic() - t0)
    row("STATUS round trip alone, idle (median / max)",
        "%.2f / %.2f" % (statistics.median(only) * 1000, max(only) * 1000),
        "ms")
    idle_n = [wait_round_trip(notify, k) for k in range(50)]
    row("notify+wait(1 ms) round trip, idle (median / max)",
        "%.2f / %.2f" % (statistics.median(idle_n) * 1000,
                         max(idle_n) * 1000), "ms")
    idle = []
    for k in range(50):
        t0 = time.monotonic()
        notify.send(b"N\tidleprobe%d\tlow\n" % k)
        admin.status()
        idle.append(time.monotonic() - t0)
    hwm0 = proc_status(pid, "VmRSS")
    lat = []
    lat_n = []
    stop_evt = threading.Event()
    th = threading.Thread(target=probe_latency,
                          args=(admin, notify, stop_evt, lat))
    th2 = threading.Thread(target=probe_wait_latency,
                           args=(stop_evt, lat_n))
    th.start()
    th2.start()
    time.sleep(0.2)
    secs = doveadm_time("*")
    stop_evt.set()
    th.join()
    th2.join()
    rss_after = proc_status(pid, "VmRSS")
    row("notify->STATUS round trip, idle (median / max)",
        "%.2f / %.2f" % (statistics.median(idle) * 1000, max(idle) * 1000),
        "ms")
    row("  same, during `status '*'` (median / max)",
        "%.2f / %.2f" % (statistics.median(lat) * 1000, max(lat) * 1000),
        "ms", "%d probes in %.2f s; ratio max/idle median %.0fx"
        % (len(lat), secs, max(lat) / statistics.median(idle)))
    row("  notify+wait(1 ms) during `status '*'` (median / max)",
        "%.2f / %.2f" % (statistics.median(lat_n) * 1000,
                         max(lat_n) * 1000), "ms")
    row("service VmRSS before / after `status '*'`",
        "%.0f / %.0f" % (hwm0 / 1e6, rss_after / 1e6), "MB",
        "VmHWM now %.0f MB" % (proc_status(pid, "VmHWM") / 1e6))
    admin.close()
    notify.close()


def drain_nouser(fake, count):
    """Queue count users that the userdb does not know, behind the hanging
    sync, then end that sync: the service looks each one up (NOUSER) and
    forgets it. How long is the ioloop blocked?"""
    admin = Admin()
    nt = Notify()
    nt.send(b"N\talice\tsync\n")
    wait_status(admin, lambda s: s["syncing"] == 1, 30, "a sync")
    nt.send(b"".join(b"N\tghost%07d@example.test\thigh\n" % i
                     for i in range(count)))
    wait_status(admin, lambda s: s["pending_high"] >= count, 60,
                "the ghost users")
    lat = []
    stop_evt = threading.Event()
    th = threading.Thread(target=probe_wait_latency, args=(stop_evt, lat))
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    for c in fake.conns:
        c.close()
    wait_status(admin, lambda s: s["pending_high"] == 0, 120,
                "the drain", interval=0.25)
    secs = time.monotonic() - t0
    stop_evt.set()
    th.join()
    row("NOUSER drain of %d queued users not in the userdb" % count,
        secs, "s", "%.0f us/user (0.25 s polling resolution)"
        % (secs / count * 1e6))
    row("  notify+wait(1 ms) during the drain (median / max)",
        "%.2f / %.2f" % (statistics.median(lat) * 1000, max(lat) * 1000),
        "ms", "%d probes" % len(lat))
    admin.close()
    nt.close()


def sweep_phase(n):
    """A userdb of n users and an empty state: the sweep at start makes
    them all known. How long does it take, and does the service answer
    meanwhile?"""
    with open(apath("users"), "a") as f:
        f.write("".join("sweep%07d@example.test:{PLAIN}pass::::::\n" % i
                        for i in range(n)))
    for f in ("dovewarden.db", "dovewarden.db.journal"):
        try:
            os.unlink(apath("state", f))
        except OSError:
            pass
    logpath = apath("log", "dovecot.log")
    log_start = os.path.getsize(logpath)
    pair("start-one", "A")
    t0 = time.monotonic()
    lat = []
    notify = None
    end = t0 + 180
    line = None
    while time.monotonic() < end:
        if notify is None:
            try:
                notify = Notify()
            except OSError:
                time.sleep(0.01)
                continue
        lat.append(wait_round_trip(notify, len(lat)))
        with open(logpath, "rb") as f:
            f.seek(log_start)
            for ln in f:
                if b"Userdb sweep" in ln:
                    line = ln.decode("utf-8", "replace").strip()
        if line is not None:
            break
        time.sleep(0.02)
    secs = time.monotonic() - t0
    if notify is not None:
        notify.close()
    if line is None:
        row("userdb sweep of %d users" % n, "timeout", "",
            "no 'Userdb sweep' log line within 180 s")
        return
    pid = service_pid()
    row("userdb sweep of %d users at start (empty state)" % n, secs, "s",
        "until its log line: " + line.split("dovewarden: ", 1)[-1][:90])
    if lat:
        row("  notify+wait(1 ms) during the sweep (median / max)",
            "%.2f / %.2f" % (statistics.median(lat) * 1000,
                             max(lat) * 1000), "ms", "%d probes" % len(lat))
    row("  service VmRSS after the sweep", proc_status(pid, "VmRSS") / 1e6,
        "MB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1000000)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--drain", type=int, default=20000,
                    help="users not in the userdb to queue for the "
                    "NOUSER drain phase (0: skip it)")
    ap.add_argument("--sweep", type=int, default=0,
                    help="userdb size for the sweep phase (0: skip it)")
    ap.add_argument("--debug-log", action="store_true",
                    help="keep the pair's log_debug = category=dovewarden")
    ap.add_argument("--vsz-limit", default="2G",
                    help="vsz_limit of service dovewarden (default 2G)")
    args = ap.parse_args()
    global EXTRA_CONF
    EXTRA_CONF = EXTRA_CONF_FMT % (FAKE_DOVEADM, args.vsz_limit)
    if args.debug_log:
        EXTRA_CONF = EXTRA_CONF.replace("log_debug =\n", "")
    n = args.users
    fake = None
    started = False
    t_begin = time.monotonic()
    try:
        log("starting the pair in %s (offset %s)" % (DW_DIR, OFFSET))
        os.makedirs(DW_DIR, exist_ok=True)
        fake = fake_doveadm()
        pair("start")
        started = True
        pair("stop-one", "B")
        # baseline: the service with no users
        pid = service_pid()
        a = Admin()
        a.status()
        a.close()
        rss_empty = proc_status(pid, "VmRSS")
        a = Admin()
        lat0 = []
        for _ in range(50):
            t0 = time.monotonic()
            a.status()
            lat0.append(time.monotonic() - t0)
        a.close()
        dsync0 = admin_raw_time(b"STATUS-DSYNC\n")
        one0 = admin_raw_time(b"STATUS\tuser0000001@example.test\n")
        row("STATUS round trip, empty service (median)",
            statistics.median(lat0) * 1000, "ms", "baseline")
        t0 = time.monotonic()
        secs_1 = doveadm_time("*")
        log("empty service: VmRSS %.1f MB" % (rss_empty / 1e6))

        pair("stop-one", "A")
        t0 = time.monotonic()
        for f in ("dovewarden.db", "dovewarden.db.journal"):
            try:
                os.unlink(apath("state", f))
            except OSError:
                pass
        write_db(apath("state", "dovewarden.db"), n)
        log("wrote %d users (%d bytes) in %.1f s"
            % (n, os.path.getsize(apath("state", "dovewarden.db")),
               time.monotonic() - t0))

        pid = start_a_and_measure(n)
        rss = proc_status(pid, "VmRSS")
        row("service VmRSS with %d users" % n, rss / 1e6, "MB",
            "empty: %.1f MB" % (rss_empty / 1e6))
        row("  per known user", (rss - rss_empty) / n, "bytes",
            "%d-byte dsync state each" % STATE_LEN)

        admin = Admin()
        # the one sync that hangs
        nt = Notify()
        nt.send(b"N\talice\tsync\n")
        wait_status(admin, lambda s: s["syncing"] == 1, 30, "a sync")
        nt.close()

        # status figures
        s_sum = min(doveadm_time() for _ in range(3))
        s_one = min(doveadm_time("user0000001@example.test")
                    for _ in range(3))
        s_all = doveadm_time("*")
        first, raw_all, lines = admin_raw_status_all()
        row("doveadm dovewarden status (summary)", s_sum, "s",
            "best of 3")
        row("doveadm dovewarden status <one user>", s_one, "s",
            "best of 3; mask without wildcards")
        row("doveadm dovewarden status '*' > /dev/null", s_all, "s",
            "%.0fx <one user>; empty service: %.3f s"
            % (s_all / s_one, secs_1))
        row("admin STATUS-DSYNC (1 sync running), raw",
            admin_raw_time(b"STATUS-DSYNC\n") * 1000, "ms",
            "best of 5; empty service: %.3f ms" % (dsync0 * 1000))
        row("admin STATUS\\t<one user>, raw",
            admin_raw_time(b"STATUS\tuser0000001@example.test\n") * 1000,
            "ms", "best of 5; empty service: %.3f ms" % (one0 * 1000))
        row("  admin STATUS\\t* raw: first line / all lines",
            "%.2f / %.2f" % (first, raw_all), "s", "%d lines" % lines)

        responsiveness(pid)

        # notification rates
        c = args.conns
        per = n // c
        notify_rate(admin, "distinct known users idle->high",
                    lambda k: b"".join(
                        b"N\tuser%07d@example.test\thigh\n" % i
                        for i in range(k * per, (k + 1) * per)),
                    c, per * c)
        notify_rate(admin, "repeated (1000 users, already pending)",
                    lambda k: b"".join(
                        b"N\tuser%07d@example.test\thigh\n" % (i % 1000)
                        for i in range(per)),
                    c, 0)
        new = min(n, 200000) // c
        notify_rate(admin, "new users (not known yet)",
                    lambda k: b"".join(
                        b"N\tnew%d-%07d@example.test\thigh\n" % (k, i)
                        for i in range(new)),
                    c, new * c)
        st = admin.status()
        admin.close()
        row("journal after the notifications",
            os.path.getsize(apath("state", "dovewarden.db.journal")),
            "bytes", "users now %d" % st["users"])
        rss2 = proc_status(pid, "VmRSS")
        row("service VmRSS now", rss2 / 1e6, "MB",
            "%.0f bytes/user" % ((rss2 - rss_empty) / st["users"]))

        stop_a_and_measure()
        n2 = st["users"]
        start_a_and_measure(n2)
        pair("stop-one", "A")

        if args.drain > 0:
            write_db(apath("state", "dovewarden.db"), n)
            os.unlink(apath("state", "dovewarden.db.journal"))
            pair("start-one", "A")
            drain_nouser(fake, args.drain)
            pair("stop-one", "A")

        if args.sweep > 0:
            sweep_phase(args.sweep)
            pair("stop-one", "A")
    finally:
        if started:
            try:
                pair("stop")
            except Exception as e:
                log("pair stop failed: %s" % e)
        if fake is not None:
            fake.close()
            if os.path.exists(FAKE_DOVEADM):
                os.unlink(FAKE_DOVEADM)

    print()
    print("dovewarden service scale benchmark: %d users, %d-byte states, "
          "%s%s" % (n, STATE_LEN, time.strftime("%Y-%m-%d %H:%M"),
                    ", debug logging on" if args.debug_log else ""))
    w = max(len(r[0]) for r in rows)
    for name, value, unit, note in rows:
        print("%-*s %16s %-8s %s" % (w, name, fmt(value), unit, note))
    print("total run time %.0f s" % (time.monotonic() - t_begin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
