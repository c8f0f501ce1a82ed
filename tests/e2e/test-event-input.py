#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Event input over HTTP: Dovecot's own event exporter, not the mail
plugin, tells the service what changed; and hostile HTTP input.

The pair runs without the mail plugin. A's Dovecot exports successful
mailbox-changing IMAP commands and finished deliveries (dwtest's
EVENT_FILTER) with driver = http-post, format = json to A's own dovewarden
HTTP listener, with dovewarden_http_secret set and passed as the Basic
auth password in the exporter's URL. Full syncs and the userdb sweep are
off, so only the exported events can make A sync a user.

Checked: APPEND, STORE, EXPUNGE, CREATE, COPY/MOVE/RENAME/SUBSCRIBE/
DELETE and LMTP delivery on A each reach B, the service counted them as
HTTP notifications and none from the plugin. Then hostile requests:
missing or wrong credentials (401, 403), events on B's listener, which
listens on "*" without a secret (403, an error at start), malformed JSON, wrong shapes,
invalid users (400), oversized bodies by Content-Length and chunked
(413), deep nesting (400), broken HTTP, a stalled client and many
connections. Each rejection by the service's own code is counted in
dovewarden_rejected_inputs_total{source="http"} (what lib-http refuses
before the service sees a request, such as a Content-Length over its
request_max_payload_size, may not be). The service process survives all
of it and a following APPEND still replicates."""

import base64
import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import check_ok, make_message, msg_hash  # noqa: E402
from dwtest.common import wait_until  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402
from dwtest.web import (  # noqa: E402
    event_exporter_conf, http_listener_conf, http_port, http_raw,
    http_request, scrape, wait_http)

SECRET = "dwtest-http-secret"
CONVERGE = 20.0
MAX_BODY = 64 * 1024     # DOVEWARDEN_EVENT_MAX_BODY_SIZE
MAX_DEPTH = 16           # DOVEWARDEN_EVENT_MAX_DEPTH


def side_conf(pair):
    port = http_port(pair, "A")
    url = "http://dovecot:%s@127.0.0.1:%d/events" % (SECRET, port)
    # B: the listener on the wildcard address, as a global "listen = *"
    # makes it, and no secret
    return {"A": http_listener_conf(port) +
            "dovewarden_http_secret = %s\n" % SECRET +
            event_exporter_conf(url),
            "B": http_listener_conf(http_port(pair, "B"), listen="*")}


r = Runner(
    "test-event-input", no_plugin=True, need_plugin=False,
    extra_conf="dovewarden_full_sync_interval = 0\n"
               "dovewarden_userdb_sweep_interval = 0",
    side_conf=side_conf)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def port(pair):
    return http_port(pair, "A")


def auth(secret=SECRET, user="dovecot"):
    tok = base64.b64encode(("%s:%s" % (user, secret)).encode()).decode()
    return {"Authorization": "Basic " + tok}


def post(pair, body, headers=None, with_auth=True):
    h = {"Content-Type": "application/json"}
    if with_auth:
        h.update(auth())
    h.update(headers or {})
    if isinstance(body, str):
        body = body.encode()
    return http_request(port(pair), "POST", "/events", body, h)


def metrics(pair, side="A"):
    return scrape(http_port(pair, side))[1]


def http_counts(pair):
    return http_counts_of(pair, "A")


def http_counts_of(pair, side):
    m = metrics(pair, side)
    return (m.value("dovewarden_notifications_total", source="http"),
            m.value("dovewarden_notifications_total", source="plugin"),
            m.value("dovewarden_rejected_inputs_total", source="http"))


def imap_event(user, cmd="APPEND", state="OK", **fields):
    f = {"user": user, "cmd_name": cmd, "tagged_reply_state": state,
         "tagged_reply": state + " done.", "mailbox": "INBOX",
         "session": "dwtest"}
    f.update(fields)
    return {"event": "imap_command_finished", "hostname": "a.test",
            "start_time": "2026-11-29T07:00:00.000000Z",
            "end_time": "2026-11-29T07:00:00.001000Z",
            "categories": ["service:imap", "imap"], "fields": f}


def wait_http_notified(pair, before, what, timeout=10.0):
    """Wait until notifications_total{source="http"} exceeds before."""
    def grown():
        n = http_counts(pair)[0]
        return n if n > before else None
    return wait_until(grown, timeout, "an HTTP notification for "
                      + what)


def change_reaches_b(pair, user, what, action, check_b):
    """Run action() on A, then wait until the exporter's event was
    counted, A and B converged and check_b(snapshot of B) holds."""
    n0, p0, _r0 = http_counts(pair)
    action()
    n1 = wait_http_notified(pair, n0, what)
    t = pair.wait_converged(user, CONVERGE, what)
    snap = pair.snapshot("B", user)
    expect(check_b(snap), "%s: A and B agree, but not on the change: %r"
           % (what, snap))
    _n, p1, _r = http_counts(pair)
    expect(p1 == p0 == 0, "notifications from the plugin, which is not "
           "loaded: %r -> %r" % (p0, p1))
    return "%d HTTP notification(s), converged in %.2f s" % (n1 - n0, t)


@r.case("listener: healthz, readyz, metrics, 404, 405")
def _(pair):
    p = port(pair)
    wait_http(p)
    h = http_request(p, "GET", "/healthz")
    expect(h.status == 200, "GET /healthz: %r" % h)
    rd = wait_until(
        lambda: (lambda x: x if x.status == 200 else None)(
            http_request(p, "GET", "/readyz")), 10,
        "GET /readyz to answer 200")
    resp, m = scrape(p)
    expect(resp.headers.get("content-type", "").startswith("text/plain"),
           "/metrics Content-Type: %r" % resp.headers)
    expect(m.value("dovewarden_notifications_total", source="plugin") == 0,
           "plugin notifications without the plugin")
    nf = http_request(p, "GET", "/nonexistent")
    expect(nf.status == 404, "GET /nonexistent: %r" % nf)
    bm = http_request(p, "GET", "/events", headers=auth())
    expect(bm.status == 405, "GET /events: %r" % bm)
    bm2 = http_request(p, "POST", "/metrics", body=b"x")
    expect(bm2.status == 405, "POST /metrics: %r" % bm2)
    return "healthz %r, readyz %r" % (h.body, rd.body)


@r.case("APPEND on A reaches B through the event exporter")
def _(pair):
    user = "user01"
    msg = make_message("event-append")
    return change_reaches_b(
        pair, user, "APPEND", lambda: pair.append("A", user, msg),
        lambda b: msg_hash(msg) in b.hashes())


@r.case("STORE on A reaches B")
def _(pair):
    user = "user02"
    msg = make_message("event-store")
    pair.append("A", user, msg)
    pair.wait_converged(user, CONVERGE, "seeding")

    def store():
        m = pair.imap("A", user)
        try:
            check_ok(m.select("INBOX"), "SELECT")
            check_ok(m.store("1", "+FLAGS", "(\\Flagged $Dwtest)"), "STORE")
        finally:
            m.logout()
    return change_reaches_b(
        pair, user, "STORE", store,
        lambda b: any({"\\Flagged", "$Dwtest"} <= f
                      for f in b.flags_of(msg_hash(msg))))


@r.case("EXPUNGE on A reaches B")
def _(pair):
    user = "user03"
    keep, gone = make_message("event-keep"), make_message("event-expunge")
    pair.append("A", user, keep)
    pair.append("A", user, gone)
    pair.wait_converged(user, CONVERGE, "seeding")

    def expunge():
        m = pair.imap("A", user)
        try:
            check_ok(m.select("INBOX"), "SELECT")
            check_ok(m.store("2", "+FLAGS", "\\Deleted"), "STORE")
            check_ok(m.expunge(), "EXPUNGE")
        finally:
            m.logout()
    return change_reaches_b(
        pair, user, "EXPUNGE", expunge,
        lambda b: msg_hash(keep) in b.hashes() and
        msg_hash(gone) not in b.hashes())


@r.case("CREATE on A reaches B")
def _(pair):
    user = "user04"
    pair.append("A", user, make_message("event-create-seed"))
    pair.wait_converged(user, CONVERGE, "seeding")

    def create():
        m = pair.imap("A", user)
        try:
            check_ok(m.create("Projects"), "CREATE")
        finally:
            m.logout()
    return change_reaches_b(pair, user, "CREATE", create,
                            lambda b: "Projects" in b.mailboxes)


@r.case("COPY, MOVE, RENAME, SUBSCRIBE, DELETE on A reach B")
def _(pair):
    user = "user05"
    a, b = make_message("event-copy"), make_message("event-move")
    pair.append("A", user, a)
    pair.append("A", user, b)
    m = pair.imap("A", user)
    try:
        check_ok(m.create("Old"), "CREATE")
        check_ok(m.create("Gone"), "CREATE")
    finally:
        m.logout()
    pair.wait_converged(user, CONVERGE, "seeding")
    notes = []

    def step(what, fn, check_b):
        def action():
            m = pair.imap("A", user)
            try:
                fn(m)
            finally:
                m.logout()
        notes.append(what + ": " + change_reaches_b(pair, user, what,
                                                    action, check_b))

    def copy(m):
        check_ok(m.select("INBOX"), "SELECT")
        check_ok(m.copy("1", "Old"), "COPY")
    step("COPY", copy, lambda s: msg_hash(a) in s.hashes("Old"))

    def move(m):
        check_ok(m.select("INBOX"), "SELECT")
        check_ok(m._simple_command("MOVE", "2", "Old"), "MOVE")
    step("MOVE", move, lambda s: msg_hash(b) in s.hashes("Old") and
         msg_hash(b) not in s.hashes("INBOX"))
    step("RENAME", lambda m: check_ok(m.rename("Old", "Archive"), "RENAME"),
         lambda s: "Archive" in s.mailboxes and "Old" not in s.mailboxes)
    step("SUBSCRIBE", lambda m: check_ok(m.subscribe("Archive"),
                                         "SUBSCRIBE"),
         lambda s: "Archive" in s.subscriptions)
    step("DELETE", lambda m: check_ok(m.delete("Gone"), "DELETE"),
         lambda s: "Gone" not in s.mailboxes)
    return "; ".join(notes)


@r.case("LMTP delivery on A reaches B")
def _(pair):
    user = "user06"
    tag = "event-lmtp-%d" % os.getpid()
    # LMTP adds Return-Path and Received: look for the Subject
    return change_reaches_b(
        pair, user, "LMTP delivery",
        lambda: pair.lmtp_deliver("A", user, make_message(tag)),
        lambda b: tag in {b.subjects[h] for h in b.hashes()})


@r.case("a posted event is queued; an array queues each user")
def _(pair):
    n0, _p, _r = http_counts(pair)
    resp = post(pair, json.dumps(imap_event("user07")))
    expect(resp.status == 202, "a valid APPEND event: %r" % resp)
    resp = post(pair, json.dumps([imap_event("user08", "STORE"),
                                  imap_event("user09", "CREATE")]))
    expect(resp.status == 202, "an array of two events: %r" % resp)
    n1, _p, _r = http_counts(pair)
    expect(n1 - n0 == 3, "3 users queued, but notifications grew by %d"
           % (n1 - n0))
    st = wait_until(
        lambda: (lambda u: u if all(
            x in u and u[x]["success_sync"] != "-"
            for x in ("user07", "user08", "user09")) else None)(
            pair.dw_users("A", "user0*")), 15,
        "user07..09 synced after the posted events")
    # events that change nothing: no user queued, 204
    for ev in (imap_event("user07", "SELECT"),
               imap_event("user07", "APPEND", state="NO"),
               imap_event("user07", "FETCH", cmd_args="1 (BODY.PEEK[])"),
               {"event": "auth_request_finished", "fields": {"user": "x"}},
               {"event": "mail_delivery_finished",
                "fields": {"user": "user07", "error": "quota"}}):
        resp = post(pair, json.dumps(ev))
        expect(resp.status == 204, "ignored event %r: %r" % (ev, resp))
    n2, _p, _r = http_counts(pair)
    expect(n2 == n1, "ignored events were counted as notifications")
    return "status: %r" % {u: (v["priority"], v["success_sync"])
                           for u, v in st.items()
                           if u in ("user07", "user08", "user09")}


@r.case("credentials: none 401, wrong 403, Bearer accepted")
def _(pair):
    _n, _p, r0 = http_counts(pair)
    body = json.dumps(imap_event("user10", "SELECT"))
    resp = post(pair, body, with_auth=False)
    expect(resp.status == 401, "no credentials: %r" % resp)
    expect("basic" in resp.headers.get("www-authenticate", "").lower(),
           "401 without a Basic challenge: %r" % resp.headers)
    resp = post(pair, body, headers=auth("wrong"))
    expect(resp.status == 403, "wrong Basic password: %r" % resp)
    resp = post(pair, body, headers=auth(SECRET + "x"))
    expect(resp.status == 403, "secret with a suffix: %r" % resp)
    resp = post(pair, body, headers=auth(SECRET[:-1]))
    expect(resp.status == 403, "secret prefix: %r" % resp)
    resp = post(pair, body, headers={"Authorization": "Bearer wrong"})
    expect(resp.status == 403, "wrong Bearer token: %r" % resp)
    resp = post(pair, body, headers={"Authorization": "Basic !!!"})
    expect(resp.status in (400, 403), "undecodable Basic: %r" % resp)
    resp = post(pair, body, headers={"Authorization": "Bearer " + SECRET})
    expect(resp.status == 204, "right Bearer token: %r" % resp)
    resp = post(pair, body, headers=auth(SECRET, user="anyone"))
    expect(resp.status == 204, "right secret, other user name: %r" % resp)
    _n, _p, r1 = http_counts(pair)
    expect(r1 - r0 == 6, "6 rejected requests, counter grew by %d"
           % (r1 - r0))
    return "rejected_inputs_total{source=\"http\"} %d -> %d" % (r0, r1)


@r.case("no secret on a wildcard listener: events 403, error at start")
def _(pair):
    port_b = http_port(pair, "B")
    wait_http(port_b)
    _n, _p, r0 = http_counts_of(pair, "B")
    body = json.dumps(imap_event("user10", "APPEND"))
    resp = http_request(port_b, "POST", "/events", body=body,
                        headers={"Content-Type": "application/json"})
    expect(resp.status == 403, "events on B's listener on *: %r" % resp)
    _n, _p, r1 = http_counts_of(pair, "B")
    expect(r1 - r0 == 1, "the refusal was not counted: %d -> %d"
           % (r0, r1))
    resp = http_request(port_b, "GET", "/healthz")
    expect(resp.status == 200, "/healthz on B: %r" % resp)
    expect(any("dovewarden_http_secret is not set" in line and
               "dovewarden-http" in line for line in pair.log_tail("B", 500)),
           "no error about the insecure listener in B's log")
    expect(not any("dovewarden_http_secret is not set" in line
                   for line in pair.log_tail("A", 500)),
           "A's listener on 127.0.0.1 with a secret was called insecure")
    return "B: POST /events 403, /healthz 200, error logged at start"


@r.case("malformed bodies: 400, counted")
def _(pair):
    _n, _p, r0 = http_counts(pair)
    bad = [
        ("not JSON", b"this is not json"),
        ("truncated JSON", json.dumps(imap_event("user10"))[:-5].encode()),
        ("empty body", b""),
        ("trailing garbage", (json.dumps(imap_event("user10")) +
                              "}}").encode()),
        ("a number", b"42"),
        ("an array of numbers", b"[1, 2]"),
        ("no event name", json.dumps({"fields": {"user": "u"}}).encode()),
        ("event name not a string", json.dumps(
            {"event": 7, "fields": {"user": "user10"}}).encode()),
        ("no fields", json.dumps({"event": "mail_delivery_finished"})
         .encode()),
        ("user not a string", json.dumps(imap_event(12)).encode()),
        ("no cmd_name", json.dumps({"event": "imap_command_finished",
                                    "fields": {
                                        "user": "user10",
                                        "tagged_reply_state": "OK"}})
         .encode()),
        ("empty user", json.dumps(imap_event("")).encode()),
        ("user too long", json.dumps(imap_event("u" * 2000)).encode()),
        ("user not UTF-8", b'{"event":"imap_command_finished","fields":'
         b'{"user":"us\xff\xfeer","cmd_name":"APPEND",'
         b'"tagged_reply_state":"OK"}}'),
        ("NUL in user", json.dumps(imap_event("us\u0000er")).encode()),
        ("too many events", json.dumps(
            [{"event": "x"}] * 1001).encode()),
    ]
    got = []
    for what, body in bad:
        resp = post(pair, body)
        got.append((what, resp.status))
    wrong = [(w, s) for w, s in got if s != 400]
    expect(not wrong, "expected 400 for each, got: %r" % wrong)
    _n, _p, r1 = http_counts(pair)
    expect(r1 - r0 == len(bad), "%d malformed bodies, rejected counter "
           "grew by %d" % (len(bad), r1 - r0))
    return "%d bodies rejected with 400" % len(bad)


@r.case("deep nesting: 400")
def _(pair):
    # all within the size limit, so the JSON parser sees them
    bodies = [
        ("deep array", b"[" * 30000 + b"]" * 30000),
        ("deep object", b'{"a":' * 10000 + b"1" + b"}" * 10000),
        ("deep array, unterminated", b"[" * (MAX_BODY - 10)),
        ("deeper than the limit in fields", (
            '{"event":"imap_command_finished","fields":' +
            '{"x":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH + "}").encode()),
    ]
    got = []
    for what, body in bodies:
        resp = post(pair, body)
        got.append((what, resp.status))
    wrong = [(w, s) for w, s in got if s != 400]
    expect(not wrong, "expected 400, got: %r" % wrong)
    # the depth of Dovecot's own events is accepted
    resp = post(pair, json.dumps(imap_event("user10", "SELECT")))
    expect(resp.status == 204, "a normal event after them: %r" % resp)
    return "statuses: %r" % got


@r.case("oversized bodies: 413")
def _(pair):
    p = port(pair)
    _n, _p, r0 = http_counts(pair)
    cred = auth()["Authorization"]

    def head(extra):
        return ("POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Authorization: %s\r\nContent-Type: application/json\r\n"
                "%s\r\n" % (cred, extra)).encode()
    # declared one byte too large: refused before the body is read
    body = b" " * (MAX_BODY + 1)
    resp = http_raw(p, head("Content-Length: %d\r\n" % len(body)),
                    [body[i:i + 8192]
                     for i in range(0, len(body), 8192)])
    expect(resp is not None and resp.status == 413,
           "Content-Length %d: %r" % (len(body), resp))
    # absurdly large: answered without waiting for the body
    t0 = time.monotonic()
    resp = http_raw(p, head("Content-Length: 10000000000\r\n"),
                    [b"x" * 65536] * 4)
    expect(resp is not None and resp.status == 413,
           "Content-Length 10^10: %r" % resp)
    t_big = time.monotonic() - t0
    # exactly at the limit: read, then judged as JSON
    resp = post(pair, b" " * (MAX_BODY - 2) + b"{}")
    expect(resp.status == 400, "a %d byte body of the wrong shape: %r"
           % (MAX_BODY, resp))
    _n, _p, r1 = http_counts(pair)
    # lib-http itself refuses a Content-Length over its
    # request_max_payload_size before the service sees the request, so
    # that one may not be counted
    expect(r1 - r0 in (2, 3), "3 rejected requests, counter grew by %d"
           % (r1 - r0))
    return ("Content-Length 10^10 answered in %.2f s, %s"
            % (t_big, "counted" if r1 - r0 == 3 else
               "not counted (refused by lib-http)"))


@r.case("oversized chunked body: 413 and counted")
def _(pair):
    p = port(pair)
    _n, _p, r0 = http_counts(pair)
    head = ("POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Authorization: %s\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
            % auth()["Authorization"]).encode()
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    resp = http_raw(p, head, [chunk] * 16 + [b"0\r\n\r\n"])
    expect(resp is not None and resp.status == 413,
           "256 KiB chunked: %r" % resp)
    _n, _p, r1 = http_counts(pair)
    expect(r1 - r0 == 1, "an oversized chunked body was rejected, but "
           "dovewarden_rejected_inputs_total{source=\"http\"} grew by %d"
           % (r1 - r0))


@r.case("broken HTTP, a stalled client, many connections: still served")
def _(pair):
    p = port(pair)
    pid = pair.service_pid("A")
    notes = []
    for what, raw in (
            ("garbage request line", b"HELLO THERE\r\n\r\n"),
            ("binary junk", bytes(range(256)) * 4 + b"\r\n\r\n"),
            ("huge header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " +
             b"a" * 200000 + b"\r\n\r\n"),
            ("bad Content-Length", b"POST /events HTTP/1.1\r\nHost: x\r\n"
             b"Content-Length: -5\r\n\r\n"),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")):
        resp = http_raw(p, raw, timeout=5)
        status = resp.status if resp else None
        expect(status is None or 400 <= status < 600,
               "%s: %r" % (what, resp))
        notes.append("%s: %s" % (what, status or "closed"))
    # a client that sends half a request and stalls must not block others
    stalled = socket.create_connection(("127.0.0.1", p), timeout=10)
    stalled.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"event\":")
    many = []
    try:
        for _ in range(100):
            many.append(socket.create_connection(("127.0.0.1", p),
                                                 timeout=10))
        t0 = time.monotonic()
        h = http_request(p, "GET", "/healthz", timeout=5)
        dt = time.monotonic() - t0
        expect(h.status == 200, "healthz beside a stalled client: %r" % h)
        expect(dt < 2.0, "healthz took %.2f s beside a stalled client" % dt)
    finally:
        stalled.close()
        for s in many:
            s.close()
    # keep-alive: two requests on one connection, as the exporter does
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
    try:
        for i in range(2):
            c.request("POST", "/events",
                      json.dumps(imap_event("user10", "SELECT")),
                      dict(auth(), **{"Content-Type": "application/json"}))
            resp = c.getresponse()
            resp.read()
            expect(resp.status == 204, "keep-alive request %d: %d"
                   % (i + 1, resp.status))
    finally:
        c.close()
    expect(pair.service_pid("A") == pid, "the service process changed "
           "(crashed and restarted?)")
    return "; ".join(notes)


@r.case("after all that: the service still works")
def _(pair):
    user = "user11"
    pid = pair.service_pid("A")
    msg = make_message("event-after-hostile")
    note = change_reaches_b(pair, user, "APPEND after hostile input",
                            lambda: pair.append("A", user, msg),
                            lambda b: msg_hash(msg) in b.hashes())
    h = http_request(port(pair), "GET", "/healthz")
    expect(h.status == 200, "healthz: %r" % h)
    expect(pair.service_pid("A") == pid, "the service process changed")
    bad = [l for l in pair.log_tail("A", 2000)
           if "Panic" in l or "Fatal" in l or "killed with signal" in l]
    expect(not bad, "A's log has panics or fatal errors:\n" +
           "\n".join(bad[-10:]))
    return note


if __name__ == "__main__":
    run(r)
