# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Harness for dovewarden's end-to-end tests.

Each test program starts its own pair of Dovecot instances (A and B) with
testenv/pair, runs its cases against them over 127.0.0.1 and stops the pair
again, also when a case fails. The checker compares what a user sees over
IMAP on A and on B.

Environment: DW_DIR (default /srv/dt), DW_PORT_OFFSET (default 0) and
DW_EXTRA_CONF are passed on to testenv/pair. DW_E2E_VERBOSE=1 prints the
Dovecot log lines of every case, not only of failed ones.
"""

import collections
import concurrent.futures
import email.parser
import hashlib
import imaplib
import json
import os
import poplib
import random
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
PAIR = os.path.join(REPO, "testenv", "pair")

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
SERVICE_BIN = "/usr/lib/dovecot/dovewarden"
PLUGIN_SO = "/usr/lib/dovecot/modules/lib20_dovewarden_plugin.so"
SETTINGS_SO = "/usr/lib/dovecot/modules/settings/libdovewarden_settings.so"

SIDES = ("A", "B")
HOSTNAMES = {"A": "a.test", "B": "b.test"}
EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77

# Users of testenv/pair (not "norepl", which has replication turned off)
NAMED_USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
NUMBERED_USERS = ["user%02d" % i for i in range(1, 41)]
ALL_USERS = NUMBERED_USERS + NAMED_USERS

POLL_INTERVAL = 0.1

class Skip(Exception):
    pass


def listen_unix(path, backlog=64):
    """Listen on a unix socket at path (replacing a stale one), open to
    the mail uid. Returns the listening socket."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(backlog)
    return srv


class SilentListener:
    """Accepts connections on a listening socket and never answers (a
    hung peer or doveadm-server). conns holds the accepted ones; close()
    drops them and the listener."""

    def __init__(self, srv):
        self.srv = srv
        self.srv.settimeout(0.2)
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            try:
                c, _ = self.srv.accept()
                self.conns.append(c)
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.srv.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


def password(user):
    return user + "pass" if user in NAMED_USERS else "pass"


def peer(side):
    return "B" if side == "A" else "A"


def log(msg):
    print(msg, flush=True)


def wait_until(pred, timeout, what, interval=POLL_INTERVAL):
    """Poll pred() until it returns a true value; returns that value.
    Raises AssertionError naming what after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError("timed out after %.1f s waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Parsing IMAP responses as imaplib hands them over

_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(\{\d+\+?\})\s*$'
                    rb'|([^\s()"]+))')


class Literal(bytes):
    pass


def _tokenize_into(stack, text):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            if text[pos:].strip() == b"":
                break
            raise ValueError("cannot parse IMAP response at %r" % text[pos:])
        pos = m.end()
        if m.group(1):
            new = []
            stack[-1].append(new)
            stack.append(new)
        elif m.group(2):
            if len(stack) == 1:
                raise ValueError("unbalanced ')' in %r" % text)
            stack.pop()
        elif m.group(3) is not None:
            stack[-1].append(re.sub(rb'\\(.)', rb'\1', m.group(3))
                             .decode("utf-8", "surrogateescape"))
        elif m.group(4):
            pass  # the literal follows as the second half of the tuple
        else:
            atom = m.group(5).decode("utf-8", "surrogateescape")
            stack[-1].append(None if atom.upper() == "NIL" else atom)


def parse_untagged(data):
    """imaplib's data list -> one token list per untagged response.
    Parenthesized lists become lists, strings become str, literals
    become Literal (bytes). imaplib gives a response with a literal as a
    (text up to the literal, literal) tuple followed by the rest of the
    line as the next item."""
    out = []
    stack = None
    for item in data:
        if item is None:
            continue
        if stack is None:
            stack = [[]]
        if isinstance(item, tuple):
            _tokenize_into(stack, item[0])
            stack[-1].append(Literal(item[1]))
            continue
        _tokenize_into(stack, item)
        if len(stack) == 1:
            out.append(stack[0])
            stack = None
    if stack is not None:
        out.append(stack[0])
    return out


def imap_quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pairs(lst):
    it = iter(lst)
    return {str(k).upper(): v for k, v in zip(it, it)}


def check_ok(resp, what):
    typ, data = resp
    if typ != "OK":
        raise AssertionError("%s failed: %s %r" % (what, typ, data))
    return data


# ---------------------------------------------------------------------------
# Snapshots and their comparison

# Mailbox attributes that follow from the existence of other mailboxes or
# from \Recent; a real difference shows up as a missing mailbox instead.
_DERIVED_ATTRS = {"\\haschildren", "\\hasnochildren", "\\marked",
                  "\\unmarked"}


def msg_hash(body):
    return hashlib.sha256(body).hexdigest()[:16]


def msg_subject(body):
    try:
        hdr = email.parser.BytesHeaderParser().parsebytes(body)
        return str(hdr.get("Subject", ""))
    except Exception:
        return ""


class Snapshot:
    """What one user sees on one server.

    mailboxes: name -> frozenset of LIST attributes (derived ones removed)
    delimiter: hierarchy separator
    subscriptions: set of names
    messages: name -> Counter of (hash, flags tuple), flags sorted, no
              \\Recent; duplicates count
    subjects: hash -> Subject header (for readable differences)
    """

    def __init__(self, side, user):
        self.side = side
        self.user = user
        self.mailboxes = {}
        self.delimiter = None
        self.subscriptions = set()
        self.messages = {}
        self.subjects = {}

    def hashes(self, mailbox="INBOX"):
        return {h for (h, _f) in self.messages.get(mailbox, ())}

    def flags_of(self, h, mailbox="INBOX"):
        """The flag sets of all messages with hash h in mailbox."""
        return [set(f) for (hh, f), n in
                self.messages.get(mailbox, {}).items()
                for _ in range(n) if hh == h]

    def count(self, mailbox="INBOX"):
        return sum(self.messages.get(mailbox, {}).values())

    def add_message(self, mailbox, body, flags):
        h = msg_hash(body)
        self.subjects.setdefault(h, msg_subject(body))
        key = (h, tuple(sorted(f for f in flags if f.lower() != "\\recent")))
        self.messages.setdefault(mailbox, collections.Counter())[key] += 1

    def __repr__(self):
        return "<Snapshot %s %s: %d mailboxes, %d subscriptions, %d msgs>" % (
            self.side, self.user, len(self.mailboxes),
            len(self.subscriptions),
            sum(sum(c.values()) for c in self.messages.values()))


def _fmt_flags(flags):
    return "(" + " ".join(flags) + ")"


def compare_snapshots(a, b):
    """Return a list of human-readable differences between two snapshots
    of one user (empty when the user sees the same on both)."""
    na, nb = a.side, b.side
    diffs = []
    for name in sorted(set(a.mailboxes) | set(b.mailboxes)):
        if name not in b.mailboxes:
            diffs.append("mailbox %r exists on %s only" % (name, na))
        elif name not in a.mailboxes:
            diffs.append("mailbox %r exists on %s only" % (name, nb))
        elif a.mailboxes[name] != b.mailboxes[name]:
            diffs.append("mailbox %r attributes differ: %s %s, %s %s" % (
                name, na, _fmt_flags(sorted(a.mailboxes[name])),
                nb, _fmt_flags(sorted(b.mailboxes[name]))))
    if a.delimiter != b.delimiter and a.mailboxes and b.mailboxes:
        diffs.append("hierarchy delimiter differs: %s %r, %s %r"
                     % (na, a.delimiter, nb, b.delimiter))
    for name in sorted(a.subscriptions - b.subscriptions):
        diffs.append("subscription %r on %s only" % (name, na))
    for name in sorted(b.subscriptions - a.subscriptions):
        diffs.append("subscription %r on %s only" % (name, nb))
    for name in sorted(set(a.messages) | set(b.messages)):
        if name not in a.mailboxes or name not in b.mailboxes:
            n_a = sum(a.messages.get(name, {}).values())
            n_b = sum(b.messages.get(name, {}).values())
            if n_a or n_b:
                diffs.append("mailbox %r holds %d message(s) on %s, %d on %s"
                             % (name, n_a, na, n_b, nb))
            continue
        ca = a.messages.get(name, collections.Counter())
        cb = b.messages.get(name, collections.Counter())
        if ca == cb:
            continue
        for h in sorted({k[0] for k in ca} | {k[0] for k in cb}):
            la = sorted((f, n) for (hh, f), n in ca.items() if hh == h)
            lb = sorted((f, n) for (hh, f), n in cb.items() if hh == h)
            if la == lb:
                continue
            subj = a.subjects.get(h) or b.subjects.get(h) or ""
            desc = "%r: message %s (Subject %r)" % (name, h, subj)

            def fmt(lst):
                return ", ".join(_fmt_flags(f) + ("x%d" % n if n > 1 else "")
                                 for f, n in lst)
            if not lb:
                diffs.append("%s on %s only, flags %s" % (desc, na, fmt(la)))
            elif not la:
                diffs.append("%s on %s only, flags %s" % (desc, nb, fmt(lb)))
            else:
                ta = sum(n for _f, n in la)
                tb = sum(n for _f, n in lb)
                if ta != tb:
                    diffs.append("%s: %d cop%s on %s %s, %d on %s %s" % (
                        desc, ta, "y" if ta == 1 else "ies", na, fmt(la),
                        tb, nb, fmt(lb)))
                else:
                    diffs.append("%s: flags differ: %s %s, %s %s" % (
                        desc, na, fmt(la), nb, fmt(lb)))
    return diffs


# ---------------------------------------------------------------------------
# The pair

class Pair:
    def __init__(self, no_plugin=False, extra_conf=None, side_conf=None):
        """side_conf: extra configuration of A or B only, as a dict
        side -> text, or a function(pair) returning one; the function is
        called when the ports are known (pair.port() works), before the
        pair starts."""
        self.dw_dir = os.environ.get("DW_DIR", "/srv/dt")
        self.port_offset = os.environ.get("DW_PORT_OFFSET", "0")
        self.no_plugin = no_plugin
        self.extra_conf = extra_conf
        self.side_conf = side_conf
        self.ports = {}
        self.started = False
        self.log_marks = {}
        self.touched = set()
        self.simulator = None
        # the RedisServer of the Redis backend, when it is used
        self.redis = None

    # -- lifecycle --

    def _env(self):
        env = dict(os.environ)
        env["DW_DIR"] = self.dw_dir
        env["DW_PORT_OFFSET"] = self.port_offset
        if self.no_plugin:
            env["DW_NO_PLUGIN"] = "1"
        else:
            env.pop("DW_NO_PLUGIN", None)
        extra = [env.get("DW_EXTRA_CONF", "")]
        if self.extra_conf:
            extra.append(self.extra_conf)
        env["DW_EXTRA_CONF"] = "\n".join(x for x in extra if x)
        sides = self.side_conf if isinstance(self.side_conf, dict) else {}
        for s in SIDES:
            env["DW_EXTRA_CONF_" + s] = sides.get(s, "")
        return env

    def _pair(self, *args, timeout=60):
        # Output goes to a file, not a pipe: the daemons that pair starts
        # could keep a pipe open and make the wait for EOF hang.
        with tempfile.TemporaryFile("w+") as out:
            r = subprocess.run([PAIR] + list(args), env=self._env(),
                               stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, text=True,
                               timeout=timeout)
            out.seek(0)
            r.stdout = out.read()
            r.stderr = ""
            return r

    def check_available(self, need_plugin):
        for path in (PAIR, DOVECOT, DOVEADM):
            if not os.access(path, os.X_OK):
                raise Skip("%s is not available" % path)
        try:
            ver = subprocess.run([DOVECOT, "--version"], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            raise Skip("cannot run %s: %s" % (DOVECOT, e))
        if not re.match(r"2\.([4-9]|\d\d)|[3-9]\.", ver):
            raise Skip("Dovecot 2.4 or later is needed, found %r" % ver)
        if shutil.which("ss") is None:
            raise Skip("ss (iproute2) is not available")
        extra = os.environ.get("DW_EXTRA_CONF", "")
        if (os.path.exists(SETTINGS_SO) and not os.access(SERVICE_BIN, os.X_OK)
                and "executable" not in extra):
            raise Skip("the dovewarden service is not installed (%s)"
                       % SERVICE_BIN)
        if need_plugin and not os.path.exists(PLUGIN_SO):
            raise Skip("the dovewarden plugin is not installed (%s)"
                       % PLUGIN_SO)

    def _read_env(self):
        r = self._pair("env")
        if r.returncode != 0:
            raise RuntimeError("testenv/pair env failed: " + r.stdout)
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            self.ports[k] = v

    def start(self):
        if callable(self.side_conf):
            self._read_env()
            self.side_conf = self.side_conf(self)
        self.started = True
        r = self._pair("start", timeout=120)
        if r.returncode != 0:
            raise RuntimeError("testenv/pair start failed (rc %d): %s%s"
                               % (r.returncode, r.stdout, r.stderr))
        self._read_env()
        for s in SIDES:
            self.mark_log(s)

    def stop(self):
        if not self.started:
            return
        r = self._pair("stop", timeout=120)
        if r.returncode != 0:
            log("WARNING: testenv/pair stop failed: %s%s"
                % (r.stdout, r.stderr))
        self.started = False

    def stop_one(self, side):
        r = self._pair("stop-one", side, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("pair stop-one %s: %s" % (side, r.stdout))

    def start_one(self, side):
        r = self._pair("start-one", side, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("pair start-one %s: %s" % (side, r.stdout))

    def port(self, side, proto):
        return int(self.ports["%s_%s" % (side, proto.upper())])

    # -- logs --

    def log_path(self, side):
        return os.path.join(self.dw_dir, side, "log", "dovecot.log")

    def mark_log(self, side):
        try:
            self.log_marks[side] = os.path.getsize(self.log_path(side))
        except OSError:
            self.log_marks[side] = 0

    def log_since_mark(self, side):
        try:
            with open(self.log_path(side), "rb") as f:
                f.seek(self.log_marks.get(side, 0))
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def log_tail(self, side, n=60):
        try:
            with open(self.log_path(side), "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return lines[-n:]
        except OSError as e:
            return ["(cannot read %s: %s)" % (self.log_path(side), e)]

    def dump_logs(self, n=60, since_mark=False, header=""):
        for s in SIDES:
            lines = (self.log_since_mark(s) if since_mark
                     else self.log_tail(s, n * 20))
            lines = [l for l in lines if not _LOG_NOISE.search(l)][-n:]
            log("----- %s%s %s (%s) -----" % (
                header, s, "log lines of this case" if since_mark
                else "log tail", self.log_path(s)))
            for line in lines:
                log("  " + line)

    # -- clients --

    def imap(self, side, user):
        self.touched.add(user)
        m = imaplib.IMAP4("127.0.0.1", self.port(side, "imap"), timeout=30)
        check_ok(m.login(user, password(user)),
                 "IMAP LOGIN %s on %s" % (user, side))
        return m

    def pop3(self, side, user):
        self.touched.add(user)
        p = poplib.POP3("127.0.0.1", self.port(side, "pop3"), timeout=30)
        p.user(user)
        p.pass_(password(user))
        return p

    def lmtp_deliver(self, side, user, msg):
        self.touched.add(user)
        if isinstance(msg, str):
            msg = msg.encode()
        c = smtplib.LMTP("127.0.0.1", self.port(side, "lmtp"),
                         local_hostname="localhost", timeout=30)
        try:
            refused = c.sendmail("sender@example.test", [user], msg)
            if refused:
                raise AssertionError("LMTP refused %s: %r" % (user, refused))
        finally:
            try:
                c.quit()
            except Exception:
                pass

    def append(self, side, user, msg, mailbox="INBOX", flags=None, conn=None):
        """APPEND msg; returns the seconds the command took."""
        if isinstance(msg, str):
            msg = msg.encode()
        m = conn or self.imap(side, user)
        try:
            t0 = time.monotonic()
            check_ok(m.append(imap_quote(mailbox),
                              _fmt_flags(flags) if flags else None,
                              None, msg), "APPEND on %s" % side)
            return time.monotonic() - t0
        finally:
            if conn is None:
                m.logout()

    # -- doveadm --

    def doveadm(self, side, *args, timeout=60, check=True):
        env = dict(os.environ)
        env["DOVECOT_HOSTNAME"] = HOSTNAMES[side]
        cmd = [DOVEADM, "-c", os.path.join(self.dw_dir, side, "dovecot.conf")]
        cmd += list(args)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s failed (rc %d): %s%s" % (
                " ".join(cmd), r.returncode, r.stdout, r.stderr))
        return r

    def manual_sync(self, user, side="A"):
        """Sync user between the instances with doveadm sync, run on
        side, as the service would."""
        dest = "tcp:127.0.0.1:%d" % self.port(peer(side), "doveadm")
        return self.doveadm(side, "sync", "-l", "30", "-u", user, dest)

    # -- the dovewarden admin commands --

    def dw(self, side, *args, fmt=None, check=True, timeout=60):
        """doveadm [-f fmt] dovewarden args... on side."""
        pre = ["-f", fmt] if fmt else []
        return self.doveadm(side, *(pre + ["dovewarden"] + list(args)),
                            check=check, timeout=timeout)

    def dw_users(self, side, mask="*"):
        """doveadm -f json dovewarden status <mask> on side, as
        username -> dict of the JSON fields (username, priority,
        fast_sync, full_sync, success_sync, failed, next_sync,
        last_error)."""
        r = self.dw(side, "status", mask, fmt="json")
        return {u["username"]: u for u in json.loads(r.stdout or "[]")}

    def dw_overview(self, side):
        """doveadm -f json dovewarden status on side, as label -> int."""
        r = self.dw(side, "status", fmt="json")
        return {d["field"]: int(d["value"]) for d in json.loads(r.stdout)}

    def service_idle(self, side, user):
        """True when side's service has nothing pending or running for
        user (or does not know it)."""
        st = self.dw_users(side, user).get(user)
        if st is not None and st["priority"] != "none":
            return False
        r = self.dw(side, "dsync-status", fmt="json")
        return not any(d.get("username") == user
                       for d in json.loads(r.stdout or "[]"))

    def wait_service_idle(self, user, timeout=10.0, sides=SIDES, polls=3):
        """Poll until the services of sides have had nothing pending or
        running for user in polls checks in a row."""
        quiet = [0]

        def check():
            if all(self.service_idle(s, user) for s in sides):
                quiet[0] += 1
            else:
                quiet[0] = 0
            return quiet[0] >= polls
        wait_until(check, timeout, "the services to be idle for " + user)

    def wait_log(self, side, pred, timeout, what):
        """Poll side's log lines since the case's mark until pred(line)
        holds for one; returns that line."""
        def find():
            for line in self.log_since_mark(side):
                if pred(line):
                    return line
            return None
        return wait_until(find, timeout, what)

    # -- the checker --

    def snapshot(self, side, user):
        snap = Snapshot(side, user)
        m = self.imap(side, user)
        try:
            data = check_ok(m.list('""', '"*"'), "LIST on %s" % side)
            for resp in parse_untagged(data):
                attrs, delim, name = resp[0], resp[1], resp[2]
                name = (name.decode("utf-8", "surrogateescape")
                        if isinstance(name, bytes) else name)
                snap.delimiter = delim
                snap.mailboxes[name] = frozenset(
                    a.lower() if a.lower() in _NORMALIZED else a
                    for a in attrs if a.lower() not in _DERIVED_ATTRS)
            data = check_ok(m.lsub('""', '"*"'), "LSUB on %s" % side)
            for resp in parse_untagged(data):
                name = resp[2]
                name = (name.decode("utf-8", "surrogateescape")
                        if isinstance(name, bytes) else name)
                snap.subscriptions.add(name)
            for name, attrs in sorted(snap.mailboxes.items()):
                if attrs & {"\\noselect", "\\nonexistent"}:
                    continue
                typ, data = m.select(imap_quote(name), readonly=True)
                if typ != "OK":
                    # deleted between LIST and EXAMINE (sync running)
                    continue
                snap.messages[name] = collections.Counter()
                if int(data[0]) == 0:
                    continue
                data = check_ok(m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])"),
                                "FETCH in %r on %s" % (name, side))
                for resp in parse_untagged(data):
                    # imaplib strips "* " and "FETCH": "<seq> (<items>)"
                    if len(resp) != 2 or not isinstance(resp[1], list):
                        continue
                    items = _pairs(resp[1])
                    body = items.get("BODY[]")
                    if body is None:
                        continue
                    flags = items.get("FLAGS") or []
                    snap.add_message(name, bytes(body), flags)
        finally:
            try:
                m.logout()
            except Exception:
                pass
        return snap

    def snapshots(self, user):
        return self.snapshot("A", user), self.snapshot("B", user)

    def compare(self, user):
        a, b = self.snapshots(user)
        return compare_snapshots(a, b)

    def wait_converged(self, users, timeout=10.0, what=""):
        """Poll until every user looks the same on A and B. Returns the
        seconds it took. Raises AssertionError listing the differences
        after timeout seconds."""
        if isinstance(users, str):
            users = [users]
        t0 = time.monotonic()
        end = t0 + timeout
        while True:
            diffs = {}
            for u in users:
                try:
                    d = self.compare(u)
                except (AssertionError, imaplib.IMAP4.error, OSError) as e:
                    # e.g. a mailbox deleted between EXAMINE and FETCH
                    # while a sync runs: look again
                    d = ["cannot take a snapshot: %s" % e]
                if d:
                    diffs[u] = d
            if not diffs:
                return time.monotonic() - t0
            if time.monotonic() >= end:
                lines = ["A and B did not converge within %.1f s%s:"
                         % (timeout, " (" + what + ")" if what else "")]
                for u, d in diffs.items():
                    lines += ["  %s: %s" % (u, x) for x in d]
                raise AssertionError("\n".join(lines))
            time.sleep(POLL_INTERVAL)

    def diff_users(self, users, workers=4):
        """One pass of the checker over users, in parallel: user ->
        list of differences, for the users that differ only."""

        def one(u):
            try:
                return u, self.compare(u)
            except (AssertionError, imaplib.IMAP4.error, OSError) as e:
                return u, ["cannot take a snapshot: %s" % e]
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            return {u: d for u, d in ex.map(one, users) if d}

    def converge_report(self, users, timeout, what="", workers=4):
        """Like wait_converged, but never raises: polls until every user
        looks the same on A and B or timeout seconds have passed.
        Returns (seconds it took or None, {user: differences} of the
        last pass, which is empty when they converged)."""
        t0 = time.monotonic()
        end = t0 + timeout
        while True:
            diffs = self.diff_users(users, workers)
            if not diffs:
                return time.monotonic() - t0, {}
            if time.monotonic() >= end:
                return None, diffs
            time.sleep(POLL_INTERVAL)

    def uidvalidity(self, side, user, mailbox="INBOX", conn=None):
        """STATUS mailbox (UIDVALIDITY) on side, as int (None when the
        mailbox does not exist)."""
        m = conn or self.imap(side, user)
        try:
            typ, data = m.status(imap_quote(mailbox), "(UIDVALIDITY)")
            if typ != "OK":
                return None
            for resp in parse_untagged(data):
                for item in resp:
                    if isinstance(item, list):
                        return int(_pairs(item)["UIDVALIDITY"])
            return None
        finally:
            if conn is None:
                m.logout()

    def message_ids(self, side, user, mailbox="INBOX"):
        """The Message-ID headers of the messages in mailbox on side, as
        a Counter of "<id>" strings."""
        ids = collections.Counter()
        m = self.imap(side, user)
        try:
            typ, data = m.select(imap_quote(mailbox), readonly=True)
            if typ != "OK" or int(data[0]) == 0:
                return ids
            data = check_ok(m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS "
                                    "(MESSAGE-ID)])"), "FETCH Message-ID")
            for item in data:
                if isinstance(item, tuple):
                    mm = re.search(rb"<[^>]*>", item[1])
                    if mm:
                        ids[mm.group(0).decode()] += 1
            return ids
        finally:
            m.logout()

    def mailbox_guid(self, side, user, mailbox="INBOX"):
        """The mailbox GUID from doveadm mailbox status (None when it
        does not exist)."""
        r = self.doveadm(side, "mailbox", "status", "-u", user, "guid",
                         mailbox, check=False)
        m = re.search(r"guid=([0-9a-f]+)", r.stdout)
        return m.group(1) if m else None

    def doveconf(self, side, name):
        """doveconf -h name of side's configuration; None when the
        setting is unknown."""
        r = subprocess.run(["/usr/bin/doveconf", "-c",
                            os.path.join(self.dw_dir, side, "dovecot.conf"),
                            "-h", name], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None

    def queues_empty(self, side):
        """True when side's service has nothing queued or running
        (doveadm dovewarden status; periodic full syncs not counted)."""
        ov = self.dw_overview(side)
        return all(v == 0 for k, v in ov.items()
                   if k.startswith("Queued '") and "full" not in k
                   or k == "Syncs running")

    def inbox_dir_exists(self, side, user):
        return os.path.isdir(os.path.join(
            self.dw_dir, side, "mail", user, "sdbox", "mailboxes", "INBOX"))

    # -- the service process --

    def master_pid(self, side):
        with open(os.path.join(self.dw_dir, side, "run", "master.pid")) as f:
            return int(f.read().strip())

    def service_pids(self, side):
        """PIDs of side's dovewarden service: children of that instance's
        master whose executable or process title is dovewarden."""
        master = self.master_pid(side)
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d, "rb") as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
                if ppid != master:
                    continue
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(
                        "utf-8", "replace")
                try:
                    exe = os.readlink("/proc/%s/exe" % d)
                except OSError:
                    exe = ""
            except (OSError, ValueError, IndexError):
                continue
            if (os.path.basename(exe) == "dovewarden"
                    or re.search(r"(^|[/ ])dovewarden\b", cmdline)):
                pids.append(int(d))
        return pids

    def service_pid(self, side, timeout=10.0):
        def one():
            p = self.service_pids(side)
            return p[0] if len(p) == 1 else None
        return wait_until(one, timeout,
                          "exactly one dovewarden process of %s" % side)


# Log lines that every IMAP/POP3 access writes and that explain nothing,
# and lib-http's per-request debug lines of the service's HTTP listener
_LOG_NOISE = re.compile(r"-login: Info: Logged in: |"
                        r": Info: Disconnected: Logged out |"
                        r": Debug: http: http-server: ")

_NORMALIZED = {"\\noselect", "\\nonexistent", "\\noinferiors"}


# ---------------------------------------------------------------------------
# Stand-in for the service while developing the tests: with
# DW_E2E_SIMULATE_SYNC=1 the pair runs without the plugin and a thread
# runs doveadm sync for every user the test has touched, over and over.
# Not for judging dovewarden.

class SyncSimulator:
    def __init__(self, pair):
        self.pair = pair
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stopping.is_set():
            for user in sorted(self.pair.touched):
                if self.stopping.is_set() or self.paused.is_set():
                    break
                try:
                    self.pair.manual_sync(user)
                except Exception as e:
                    log("simulator: sync of %s failed: %s" % (user, e))
            self.stopping.wait(0.2)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(60)


# ---------------------------------------------------------------------------
# Running a test program

class Runner:
    """Runs the cases of one test program against one pair.

        r = Runner("replicate-ops")
        @r.case("append A->B")
        def _(pair): ...
        sys.exit(r.main())
    """

    def __init__(self, name, no_plugin=False, need_plugin=True,
                 extra_conf=None, side_conf=None):
        self.name = name
        self.no_plugin = no_plugin
        self.need_plugin = need_plugin and not no_plugin
        self.extra_conf = extra_conf
        self.side_conf = side_conf
        self.cases = []
        self.results = []
        self.pair = None
        self.simulator = None
        # a RedisServer the program made itself, or one for DW_E2E_REDIS
        self.redis = None
        if os.environ.get("DW_E2E_SIMULATE_SYNC") == "1":
            self.no_plugin = True
            self.need_plugin = False

    def case(self, name):
        def deco(fn):
            self.cases.append((name, fn))
            return fn
        return deco

    def _selected(self):
        only = os.environ.get("DW_E2E_ONLY")
        if not only:
            return self.cases
        pat = re.compile(only)
        return [(n, f) for n, f in self.cases if pat.search(n)]

    def main(self):
        """With DW_E2E_REDIS=1 the program runs against the Redis queue
        backend: a real redis-server is started first (see RedisServer)
        and both services share it."""
        extra_conf = self.extra_conf
        if os.environ.get("DW_E2E_REDIS") == "1" and self.redis is None:
            self.redis = RedisServer()
            if not self.redis.available():
                log("SKIP %s: %s is not available" % (self.name,
                                                      RedisServer.BIN))
                return EXIT_SKIP
            extra_conf = ((extra_conf or "") + "\n" + self.redis.conf() +
                          "dovewarden_redis_claim_timeout = 3s\n")
            self.name += " (Redis backend)"
        pair = Pair(no_plugin=self.no_plugin, extra_conf=extra_conf,
                    side_conf=self.side_conf)
        self.pair = pair
        try:
            pair.check_available(self.need_plugin)
        except Skip as e:
            log("SKIP %s: %s" % (self.name, e))
            return EXIT_SKIP
        if self.redis is not None:
            self.redis.start(fresh=True)
            pair.redis = self.redis
        try:
            return self._main(pair)
        finally:
            if self.redis is not None:
                self.redis.stop()

    def _main(self, pair):
        failed = False
        verbose = os.environ.get("DW_E2E_VERBOSE") == "1"
        try:
            t0 = time.monotonic()
            pair.start()
            log("# %s: pair started in %.2f s (DW_DIR=%s, A imap %d, "
                "B imap %d)" % (self.name, time.monotonic() - t0,
                                pair.dw_dir, pair.port("A", "imap"),
                                pair.port("B", "imap")))
            if os.environ.get("DW_E2E_SIMULATE_SYNC") == "1":
                log("# WARNING: DW_E2E_SIMULATE_SYNC=1: no plugin, doveadm "
                    "sync stands in for dovewarden")
                self.simulator = SyncSimulator(pair)
                pair.simulator = self.simulator
                self.simulator.start()
            for name, fn in self._selected():
                for s in SIDES:
                    pair.mark_log(s)
                t0 = time.monotonic()
                status, detail = "PASS", ""
                try:
                    note = fn(pair)
                    if note:
                        detail = str(note)
                except AssertionError as e:
                    status, detail = "FAIL", str(e)
                except Exception:
                    status, detail = "ERROR", traceback.format_exc()
                dt = time.monotonic() - t0
                self.results.append((name, status, dt, detail))
                line = "%-5s %s (%.2f s)" % (status, name, dt)
                if status == "PASS":
                    log(line + (": " + detail if detail else ""))
                    if verbose:
                        pair.dump_logs(n=40, since_mark=True)
                else:
                    failed = True
                    log(line)
                    for l in detail.rstrip().splitlines():
                        log("      " + l)
                    pair.dump_logs(n=80, since_mark=True,
                                   header="[%s] " % name)
        except Exception:
            failed = True
            log("ERROR %s: %s" % (self.name, traceback.format_exc()))
            pair.dump_logs(n=40)
        finally:
            if self.simulator:
                self.simulator.stop()
            if failed and self.results:
                pair.dump_logs(n=30)
            pair.stop()
        n_pass = sum(1 for r in self.results if r[1] == "PASS")
        log("# %s: %d/%d cases passed" % (self.name, n_pass,
                                          len(self.results)))
        for name, status, dt, _d in self.results:
            if status != "PASS":
                log("#   %s: %s" % (status, name))
        return EXIT_FAIL if failed else EXIT_PASS


def run(runner):
    # a SIGTERM from meson's timeout still stops the pair
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)
    try:
        code = runner.main()
    except KeyboardInterrupt:
        if runner.pair is not None:
            runner.pair.stop()
        if runner.redis is not None:
            runner.redis.stop()
        code = EXIT_FAIL
    sys.exit(code)


_TIME_UNITS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1,
               "seconds": 1, "m": 60, "min": 60, "mins": 60, "minute": 60,
               "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600,
               "d": 86400, "day": 86400, "days": 86400, "ms": 0.001,
               "msec": 0.001, "msecs": 0.001}


def time_secs(value):
    """A Dovecot time setting as doveconf prints it ("10 secs", "10s",
    "1min", "500ms", "0") -> seconds as float; None for None or an
    unparsable value."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
    if not m or m.group(2) not in _TIME_UNITS:
        return None
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def hms_secs(value):
    """doveadm dovewarden status's "hh:mm:ss" -> seconds; "-" -> None."""
    if value in (None, "", "-"):
        return None
    h, m, s = (int(x) for x in str(value).split(":"))
    return h * 3600 + m * 60 + s


# ---------------------------------------------------------------------------
# The service's HTTP listener: event input, metrics, health

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


def http_listener_conf(port):
    return ("service dovewarden {\n"
            "  inet_listener %s {\n"
            "    port = %d\n"
            "  }\n"
            "}\n" % (HTTP_LISTENER, port))


def event_exporter_conf(url, name="dwtest", event_filter=EVENT_FILTER):
    """Dovecot 2.4 configuration that posts the events selected by
    event_filter, as JSON, to url."""
    return ("event_exporter %s {\n"
            "  driver = http-post\n"
            "  http_post_url = %s\n"
            "  format = json\n"
            "  time_format = rfc3339\n"
            "}\n"
            "metric %s_changes {\n"
            "  exporter = %s\n"
            "  filter = %s\n"
            "}\n" % (name, url, name, name, event_filter))


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


# ---------------------------------------------------------------------------
# Messages

_counter = [0]


def make_message(tag, size=0):
    """A message unique in this run; tag goes into the Subject."""
    _counter[0] += 1
    uniq = "%s.%d.%d.%d" % (tag, os.getpid(), _counter[0], time.time_ns())
    body = "This is test message %s.\r\n" % uniq
    if size:
        line = ("x" * 74) + "\r\n"
        body += line * (size // len(line) + 1)
    return ("From: sender@example.test\r\n"
            "To: recipient@example.test\r\n"
            "Subject: %s\r\n"
            "Message-ID: <%s@dovewarden.test>\r\n"
            "Date: Sun, 29 Nov 2026 07:00:00 +0000\r\n"
            "\r\n%s" % (tag, uniq, body)).encode()


# ---------------------------------------------------------------------------
# A mixed random workload on both sides at once

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
                 duration=10.0, pause=0.0, max_ops=None):
        """max_ops: each thread stops after this many operations (or at
        the duration, whichever comes first), so that runs on machines of
        different speed do the same work."""
        self.pair = pair
        self.max_ops = max_ops
        self._tl = threading.local()
        self.users = list(users)
        self.seed = seed
        self.threads_per_side = threads_per_side
        self.duration = duration
        self.pause = pause
        self.lock = threading.Lock()
        self.ops = collections.Counter()     # (side, op) -> done
        self.no = collections.Counter()      # (side, op) -> NO answers
        self.aborts = collections.Counter()  # side -> disconnects
        self.bad = []                        # BAD answers / test errors
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
                   for i in range(self.threads_per_side) for s in SIDES]
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
                           _fmt_flags(flags) if flags else None, None, msg)
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
                        _fmt_flags(flags))
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


class RedisServer:
    """A real redis-server on 127.0.0.1 (port 16379 + DW_PORT_OFFSET),
    with its data under DW_DIR/redis and the append-only file on, so that
    a restart keeps the queue, as production Redis would be set up.
    Started and stopped by PID; cmd() speaks RESP itself."""

    BIN = "/usr/bin/redis-server"

    def __init__(self):
        self.dir = os.path.join(os.environ.get("DW_DIR", "/srv/dt"), "redis")
        self.port = 16379 + int(os.environ.get("DW_PORT_OFFSET", "0"))
        self.proc = None

    def available(self):
        return os.access(self.BIN, os.X_OK)

    def conf(self, prefix="dovewarden:"):
        """dovecot.conf lines that point the service at this server"""
        return ("dovewarden_queue_backend = redis\n"
                "dovewarden_redis_host = 127.0.0.1\n"
                "dovewarden_redis_port = %d\n"
                "dovewarden_redis_prefix = %s\n" % (self.port, prefix))

    def start(self, fresh=False):
        if fresh:
            shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir, exist_ok=True)
        logf = open(os.path.join(self.dir, "redis.log"), "a")
        self.proc = subprocess.Popen(
            [self.BIN, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes",
             "--appendfsync", "always", "--save", "",
             "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        wait_until(lambda: self._ping(), 10, "redis-server to answer PING")

    def _ping(self):
        try:
            return self.cmd("PING") == "PONG"
        except OSError:
            return False

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def cmd(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")
            return self._read(f)

    def _read(self, f):
        line = f.readline()
        if not line:
            raise OSError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError("redis: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data.decode("utf-8", "surrogateescape")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read(f) for _ in range(n)]
        raise OSError("unexpected redis reply %r" % line)


def message_id(msg):
    return re.search(rb"Message-ID: <([^>]+)>", msg).group(1).decode()


class BView:
    """An IMAP connection to B with INBOX selected, opened in advance, to
    check right after an OK on A whether a message is on B already."""

    def __init__(self, pair, user, prime=True):
        # A user that is new on both sides gets its INBOX from A's first
        # sync, with A's UIDVALIDITY: open B only after that
        if prime:
            pair.append("A", user, make_message("sync-wait prime"))
        self.conn = pair.imap("B", user)
        typ, _ = self.conn.select("INBOX")
        assert typ == "OK", "SELECT INBOX on B failed"

    def has(self, msg):
        self.conn.noop()
        typ, data = self.conn.uid("SEARCH", "HEADER", "Message-ID",
                                  '"<%s>"' % message_id(msg))
        assert typ == "OK", "SEARCH on B failed: %r" % data
        return bool(data and data[0] and data[0].split())

    def close(self):
        try:
            self.conn.logout()
        except Exception:
            pass


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
