# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The service's HTTP listener: its configuration, Dovecot's event
exporter that posts to it, HTTP clients, and a strict parser of the
Prometheus text format of /metrics."""

import re
import time

from dwtest.common import wait_until
from dwtest.pair import conf_by_series

# Name of the inet listener of "service dovewarden" that speaks HTTP
HTTP_LISTENER = "dovewarden-http"

# Dovecot's event exporter filter that reproduces the plugin's triggers at
# the IMAP and delivery level: successful mailbox-changing IMAP commands
# and finished deliveries (LMTP, LDA).
EVENT_FILTER = (
    'event=mail_delivery_finished OR (event=imap_command_finished AND '
    'tagged_reply_state=OK AND (cmd_name=APPEND OR cmd_name=COPY OR '
    'cmd_name=MOVE OR cmd_name=STORE OR cmd_name=EXPUNGE OR '
    'cmd_name="UID COPY" OR cmd_name="UID MOVE" OR cmd_name="UID STORE" OR '
    'cmd_name="UID EXPUNGE" OR cmd_name=CREATE OR cmd_name=DELETE OR '
    'cmd_name=RENAME OR cmd_name=SUBSCRIBE OR cmd_name=UNSUBSCRIBE))')


def http_port(pair, side):
    """The port testenv/pair reserves for side's HTTP listener."""
    return pair.port(side, "http")


def http_listener_conf(port, listen=None):
    """listen: the listener's own address (default: the service's
    default, 127.0.0.1). A BySeries: 2.3 names the address "address"."""
    def conf(key):
        return ("service dovewarden {\n"
                "  inet_listener %s {\n"
                "    port = %d\n"
                "%s"
                "  }\n"
                "}\n" % (HTTP_LISTENER, port,
                          "    %s = %s\n" % (key, listen) if listen else ""))
    return conf_by_series(conf("listen"), conf("address"))


def event_exporter_conf(url, name="dwtest", event_filter=EVENT_FILTER):
    """Dovecot's configuration that posts the events selected by
    event_filter, as JSON, to url: a BySeries of 2.4's and 2.3's."""
    exporter = conf_by_series("  driver = http-post\n"
                              "  http_post_url = %s\n"
                              "  format = json\n"
                              "  time_format = rfc3339\n" % url,
                              "  transport = http-post\n"
                              "  transport_args = %s\n"
                              "  format = json\n"
                              "  format_args = time-rfc3339\n" % url)
    return ("event_exporter %s {\n" % name + exporter +
            "}\n"
            "metric %s_changes {\n"
            "  exporter = %s\n"
            "  filter = %s\n"
            "}\n" % (name, name, event_filter))


class HttpResponse:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers      # lower-case name -> value
        self.body = body

    def __repr__(self):
        return "<HTTP %s %s, %d bytes: %r>" % (
            self.status, self.reason, len(self.body), self.body[:200])


def http_request(port, method, path, body=None, headers=None, timeout=10.0):
    """One HTTP/1.1 request to 127.0.0.1:port on a new connection.
    Returns an HttpResponse."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return HttpResponse(r.status, r.reason,
                            {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        c.close()


def _parse_raw_response(data):
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("incomplete HTTP response: %r" % data[:300])
    lines = head.decode("iso-8859-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ?(.*)$", lines[0])
    if not m:
        raise ValueError("bad HTTP status line: %r" % lines[0])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return HttpResponse(int(m.group(1)), m.group(2), headers, rest)


def http_raw(port, head, body_chunks=(), timeout=10.0):
    """Send head (bytes, the request line and headers with the blank line)
    and then the body chunks, but stop sending as soon as the server
    answers or closes, as it may for an oversized request. Returns the
    HttpResponse (its body is whatever arrived), or None when the server
    closed without answering."""
    import select
    import socket
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    end = time.monotonic() + timeout
    data = b""
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            r, _w, _x = select.select([sock], [], [], 0)
            if r:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() > end:
                raise AssertionError("sending the request took over %.0f s"
                                     % timeout)
        while time.monotonic() < end:
            r, _w, _x = select.select([sock], [], [],
                                      max(0.0, end - time.monotonic()))
            if not r:
                break
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                resp = _parse_raw_response(data)
                n = int(resp.headers.get("content-length", "-1"))
                if n >= 0 and len(resp.body) >= n:
                    break
    finally:
        sock.close()
    if not data:
        return None
    return _parse_raw_response(data)


def wait_http(port, timeout=10.0):
    """Wait until GET /healthz on port answers at all (any status)."""
    def probe():
        try:
            return http_request(port, "GET", "/healthz", timeout=2.0)
        except OSError:
            return None
    return wait_until(probe, timeout, "the HTTP listener on port %d" % port)


# -- the Prometheus text exposition format (version 0.0.4) --

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _parse_float(text):
    if text in ("+Inf", "Inf"):
        return float("inf")
    if text == "-Inf":
        return float("-inf")
    if text == "NaN":
        return float("nan")
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ValueError("bad sample value %r" % text)
    return float(text)


def _parse_labels(text, pos, lineno):
    """text[pos] is just after '{'. Returns (labels dict, pos after '}')."""
    labels = {}
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "}":
            return labels, pos + 1
        m = _LABEL_NAME.match(text, pos)
        if not m:
            raise ValueError("line %d: bad label name at %r"
                             % (lineno, text[pos:pos + 30]))
        name = m.group(0)
        pos = m.end()
        if text[pos:pos + 2] != '="':
            raise ValueError("line %d: expected =\" after label %s"
                             % (lineno, name))
        pos += 2
        val = []
        while True:
            if pos >= len(text):
                raise ValueError("line %d: unterminated label value"
                                 % lineno)
            c = text[pos]
            if c == "\\":
                nxt = text[pos + 1:pos + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ValueError("line %d: bad escape \\%s in a label "
                                     "value" % (lineno, nxt))
                val.append("\n" if nxt == "n" else nxt)
                pos += 2
            elif c == '"':
                pos += 1
                break
            else:
                val.append(c)
                pos += 1
        if name in labels:
            raise ValueError("line %d: label %s twice" % (lineno, name))
        labels[name] = "".join(val)
        if pos < len(text) and text[pos] == ",":
            pos += 1


class Metrics:
    """A parsed /metrics page.

    types: family -> type; helps: family -> help text;
    samples: list of (sample name, labels dict, value), in page order."""

    def __init__(self):
        self.types = {}
        self.helps = {}
        self.samples = []
        self._index = {}

    def family_of(self, sample_name):
        if sample_name in self.types:
            return sample_name
        for suf in ("_bucket", "_sum", "_count"):
            if sample_name.endswith(suf):
                base = sample_name[:-len(suf)]
                if self.types.get(base) in ("histogram", "summary"):
                    return base
        return sample_name

    def get(self, name, **labels):
        """The value of the sample with exactly these labels, or None."""
        return self._index.get((name, tuple(sorted(labels.items()))))

    def value(self, name, **labels):
        """Like get(), but a missing sample is an AssertionError."""
        v = self.get(name, **labels)
        if v is None:
            raise AssertionError("no sample %s%r in /metrics (has: %s)" % (
                name, labels, ", ".join(sorted(
                    "%s%r" % (n, l) for n, l, _v in self.samples
                    if n == name)) or "none"))
        return v

    def select(self, name, **labels):
        """(labels, value) of every sample of name whose labels include
        the given ones."""
        return [(l, v) for n, l, v in self.samples if n == name and
                all(l.get(k) == w for k, w in labels.items())]

    def sum(self, name, **labels):
        return sum(v for _l, v in self.select(name, **labels))

    def histogram(self, name, **labels):
        """{"buckets": [(le, count)...] sorted by le, "sum", "count"}."""
        buckets = sorted((_parse_float(l["le"]), v) for l, v in
                         self.select(name + "_bucket", **labels))
        return {"buckets": buckets,
                "sum": self.get(name + "_sum", **labels),
                "count": self.get(name + "_count", **labels)}


def parse_metrics(text):
    """Parse and strictly check a Prometheus text format page. Raises
    ValueError for anything a Prometheus server would reject or that the
    format forbids: unknown TYPE, TYPE after a family's samples, a family
    split in two, duplicate series, bad names, values or escapes, negative
    counters, and inconsistent histograms."""
    m = Metrics()
    if text and not text.endswith("\n"):
        raise ValueError("the page does not end with a newline")
    seen_families = []
    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                fam = parts[2]
                if not _METRIC_NAME.fullmatch(fam):
                    raise ValueError("line %d: bad metric name %r"
                                     % (lineno, fam))
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "TYPE":
                    if rest not in _TYPES:
                        raise ValueError("line %d: unknown type %r"
                                         % (lineno, rest))
                    if fam in m.types:
                        raise ValueError("line %d: second TYPE for %s"
                                         % (lineno, fam))
                    if fam in seen_families:
                        raise ValueError("line %d: TYPE of %s after its "
                                         "samples" % (lineno, fam))
                    m.types[fam] = rest
                else:
                    if fam in m.helps:
                        raise ValueError("line %d: second HELP for %s"
                                         % (lineno, fam))
                    m.helps[fam] = rest
            continue
        mm = _METRIC_NAME.match(line)
        if not mm:
            raise ValueError("line %d: bad sample line %r" % (lineno, line))
        name = mm.group(0)
        pos = mm.end()
        labels = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = _parse_labels(line, pos + 1, lineno)
        rest = line[pos:].split()
        if len(rest) not in (1, 2) or line[pos:pos + 1] not in (" ", "\t"):
            raise ValueError("line %d: expected value [timestamp]: %r"
                             % (lineno, line))
        value = _parse_float(rest[0])
        fam = m.family_of(name)
        if fam in seen_families and seen_families[-1] != fam:
            raise ValueError("line %d: samples of %s are not grouped"
                             % (lineno, fam))
        if not seen_families or seen_families[-1] != fam:
            seen_families.append(fam)
        key = (name, tuple(sorted(labels.items())))
        if key in m._index:
            raise ValueError("line %d: duplicate series %s%r"
                             % (lineno, name, labels))
        typ = m.types.get(fam, "untyped")
        if typ == "counter" and not value >= 0:
            raise ValueError("line %d: counter %s is %r" % (lineno, name,
                                                            value))
        if typ == "histogram" and name == fam:
            raise ValueError("line %d: histogram sample %s without "
                             "_bucket/_sum/_count" % (lineno, name))
        if name.endswith("_bucket") and typ == "histogram" and \
                "le" not in labels:
            raise ValueError("line %d: bucket without le" % lineno)
        m._index[key] = value
        m.samples.append((name, labels, value))
    for fam, typ in m.types.items():
        if typ != "histogram":
            continue
        series = {}
        for n, l, v in m.samples:
            if n == fam + "_bucket":
                rest = tuple(sorted((k, w) for k, w in l.items()
                                    if k != "le"))
                series.setdefault(rest, []).append((_parse_float(l["le"]),
                                                    v))
        for rest, buckets in series.items():
            buckets.sort()
            if buckets[-1][0] != float("inf"):
                raise ValueError("histogram %s%r has no +Inf bucket"
                                 % (fam, dict(rest)))
            counts = [v for _le, v in buckets]
            if counts != sorted(counts):
                raise ValueError("histogram %s%r: buckets not cumulative: %r"
                                 % (fam, dict(rest), buckets))
            count = m._index.get((fam + "_count", rest))
            if count is None or m._index.get((fam + "_sum", rest)) is None:
                raise ValueError("histogram %s%r without _sum or _count"
                                 % (fam, dict(rest)))
            if count != buckets[-1][1]:
                raise ValueError("histogram %s%r: _count %r != +Inf bucket "
                                 "%r" % (fam, dict(rest), count,
                                         buckets[-1][1]))
    return m


def scrape(port, timeout=10.0):
    """GET /metrics from 127.0.0.1:port; returns (HttpResponse, Metrics).
    A status other than 200 or a page that does not parse is an
    AssertionError."""
    r = http_request(port, "GET", "/metrics", timeout=timeout)
    if r.status != 200:
        raise AssertionError("GET /metrics: %r" % r)
    try:
        return r, parse_metrics(r.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise AssertionError("GET /metrics: bad page: %s\n%s"
                             % (e, r.body.decode("utf-8", "replace")))
