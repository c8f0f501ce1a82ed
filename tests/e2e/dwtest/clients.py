# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""IMAP, POP3 and LMTP clients of the pair's servers, the parsing of
imaplib's responses, and the test messages."""

import collections
import email.parser
import hashlib
import imaplib
import os
import poplib
import re
import smtplib
import time

from dwtest.common import password


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


def message_id(msg):
    return re.search(rb"Message-ID: <([^>]+)>", msg).group(1).decode()


def msg_hash(body):
    return hashlib.sha256(body).hexdigest()[:16]


def msg_subject(body):
    try:
        hdr = email.parser.BytesHeaderParser().parsebytes(body)
        return str(hdr.get("Subject", ""))
    except Exception:
        return ""


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


def pairs(lst):
    it = iter(lst)
    return {str(k).upper(): v for k, v in zip(it, it)}


def check_ok(resp, what):
    typ, data = resp
    if typ != "OK":
        raise AssertionError("%s failed: %s %r" % (what, typ, data))
    return data


def fmt_flags(flags):
    return "(" + " ".join(flags) + ")"


# ---------------------------------------------------------------------------
# Sessions on the pair's servers

class PairClients:
    """Pair's client methods: IMAP, POP3 and LMTP sessions of a user on
    side's servers (Pair gives port() and touched)."""

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
                              fmt_flags(flags) if flags else None,
                              None, msg), "APPEND on %s" % side)
            return time.monotonic() - t0
        finally:
            if conn is None:
                m.logout()

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
                        return int(pairs(item)["UIDVALIDITY"])
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
