#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""A flood on the notify socket costs nothing lasting and holds up no real
user: junk names (DW_E2E_FLOOD_NAMES, default 200,000; the long run in
README uses millions), sync waits for junk names (DW_E2E_FLOOD_WAITS,
2,000) and idle connections (DW_E2E_FLOOD_IDLE, 1,000), all at once,
while a real user's new mail is timed until it is on B. Afterwards the
service's memory and state files are back near their size, the junk is
gone from the queue, and the log has few, rate-limited lines about it."""

import os
import socket
import statistics
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import BView, make_message  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.load import measure_new_mail  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.web import http_listener_conf, http_port, scrape  # noqa: E402

NAMES = int(os.environ.get("DW_E2E_FLOOD_NAMES", "200000"))
WAITS = int(os.environ.get("DW_E2E_FLOOD_WAITS", "2000"))
IDLE = int(os.environ.get("DW_E2E_FLOOD_IDLE", "1000"))
USER = "user05"
SAMPLES = 8


def side_conf(pair):
    return {s: http_listener_conf(http_port(pair, s)) for s in SIDES}


r = Runner("test-flood", side_conf=side_conf)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def notify_path(pair):
    return os.path.join(pair.dw_dir, "A", "run", "dovewarden-notify")


def connect(pair):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(notify_path(pair))
    s.sendall(b"VERSION\tdovewarden-notify\t1\t0\n")
    return s


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def state_bytes(pair):
    d = os.path.join(pair.dw_dir, "A", "state")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if f.startswith("dovewarden.db"))


def send_junk(pair, count, errors):
    try:
        s = connect(pair)
        batch = []
        for i in range(count):
            batch.append(b"N\tdwtest-junk-%d@flood.invalid\thigh\n" % i)
            if len(batch) == 2000:
                s.sendall(b"".join(batch))
                batch = []
        s.sendall(b"".join(batch))
        s.close()
    except OSError as e:
        errors.append("junk sender: %s" % e)


def send_waits(pair, count, answers, errors):
    try:
        s = connect(pair)
        s.sendall(b"".join(b"W\t%d\tdwtest-wait-%d@flood.invalid\t30000\n"
                           % (i + 1, i) for i in range(count)))
        buf = b""
        deadline = time.monotonic() + 120
        # the VERSION line, then an answer per wait
        while buf.count(b"\n") < count + 1 and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            buf += data
        answers.extend(buf.split(b"\n")[1:count + 1])
        s.close()
    except OSError as e:
        errors.append("wait sender: %s" % e)


@r.case("junk names, junk waits and idle connections at once")
def _(pair):
    pair.append("A", USER, make_message("flood prime"))
    pair.wait_converged(USER, 30, "priming")
    view = BView(pair, USER, prime=False)
    conn = pair.imap("A", USER)
    try:
        base = measure_new_mail(pair, [(USER, conn)] * SAMPLES,
                                {USER: view}, "base")
        pid = pair.service_pid("A")
        users0 = pair.dw_overview("A")["Total number of known users"]
        rss0, state0 = rss_kb(pid), state_bytes(pair)
        pair.mark_log("A")

        idle = [connect(pair) for _ in range(IDLE)]
        errors, answers = [], []
        threads = [threading.Thread(target=send_junk,
                                    args=(pair, NAMES, errors)),
                   threading.Thread(target=send_waits,
                                    args=(pair, WAITS, answers, errors))]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.5)
        during = measure_new_mail(pair, [(USER, conn)] * SAMPLES,
                                  {USER: view}, "during")
        for t in threads:
            t.join(180)
        t_flood = time.monotonic() - t0
        expect(not errors, "; ".join(errors))
        rss1 = rss_kb(pid)
        for s in idle:
            s.close()
    finally:
        try:
            conn.logout()
        except Exception:
            pass
        view.close()

    expect(len(answers) == WAITS, "%d of %d waits answered"
           % (len(answers), WAITS))
    expect(all(a.startswith(b"-\t") for a in answers),
           "a wait for a junk name succeeded")
    b, d = statistics.median(base), statistics.median(during)
    expect(d <= max(3 * b, b + 1.0), "new mail during the flood: median "
           "%.3f s, before it %.3f s" % (d, b))

    # the junk is forgotten, the state files compacted
    wait_until(lambda: pair.dw_overview("A")["Total number of known users"] <= users0, 120,
               "the junk users to be forgotten")
    _, m = scrape(http_port(pair, "A"))
    dropped = m.value("dovewarden_notify_unknown_dropped_total")
    expect(dropped > 0, "no junk name was dropped")
    rss2 = rss_kb(pair.service_pid("A"))
    expect(pair.service_pid("A") == pid, "the service restarted")
    state1 = state_bytes(pair)
    expect(state1 <= state0 + 16 * 1024 * 1024, "state files grew from %d "
           "to %d bytes" % (state0, state1))
    expect(rss2 <= rss0 + 64 * 1024, "RSS grew from %d kB to %d kB"
           % (rss0, rss2))
    # the test pair logs debug lines too: count what an admin sees
    lines = [ln for ln in pair.log_since_mark("A")
             if "flood.invalid" in ln and ": Debug: " not in ln]
    expect(len(lines) <= 50, "%d log lines name junk users" % len(lines))
    return ("%d names, %d waits, %d idle connections in %.1f s: new mail "
            "median %.3f s (before %.3f s); %d dropped as unknown; RSS "
            "%d -> %d -> %d kB; state files %d -> %d bytes; %d log lines"
            % (NAMES, WAITS, IDLE, t_flood, d, b, dropped, rss0, rss1,
               rss2, state0, state1, len(lines)))


if __name__ == "__main__":
    run(r)
