#!/usr/bin/python3
"""Live demo, run inside the chroot by testenv/demo: two Dovecot 2.4
servers with dovewarden on 127.0.0.1. A message delivered to A over LMTP is
shown arriving on B, a message appended to B over IMAP is shown arriving on
A, and the service's state is printed. With --redis both services share
one queue in a redis-server that the demo starts and stops."""
import email.utils
import imaplib
import os
import re
import smtplib
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PAIR = os.path.join(HERE, "pair")
DW_DIR = os.environ.get("DW_DIR", "/srv/dt")
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from dwtest.pair import RedisServer  # noqa: E402

# extra dovecot.conf lines of both servers
EXTRA_CONF = ""


def pair(*args):
    return subprocess.run([PAIR, *args], check=True, text=True,
                          capture_output=True,
                          env=dict(os.environ, DW_EXTRA_CONF=EXTRA_CONF)
                          ).stdout


def env():
    return dict(line.split("=", 1) for line in pair("env").split())


def message(subject):
    return ("From: demo@example.org\r\nTo: alice@example.org\r\n"
            "Subject: %s\r\nDate: %s\r\nMessage-ID: <%s@demo>\r\n\r\n"
            "Hello from dovewarden.\r\n"
            % (subject, email.utils.formatdate(), time.time())).encode()


def wait_for_subject(port, subject, timeout=10.0):
    """Poll INBOX of alice on the given server until the subject shows up.
    Returns the seconds it took, or None."""
    start = time.monotonic()
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login("alice", "alicepass")
    try:
        while time.monotonic() - start < timeout:
            imap.select("INBOX", readonly=True)
            typ, data = imap.search(None, "SUBJECT", '"%s"' % subject)
            if typ == "OK" and data[0].split():
                return time.monotonic() - start
            imap.close()
            time.sleep(0.02)
        return None
    finally:
        imap.logout()


def service_log(name):
    """The service's own log lines about syncs and its queue."""
    path = os.path.join(DW_DIR, name, "log", "dovecot.log")
    with open(path, errors="replace") as f:
        return [l.rstrip() for l in f
                if re.match(r"\w+ +\d+ [\d:]+ dovewarden: ", l)
                and "conn unix" not in l and "admin" not in l]


def doveadm(name, *args):
    host = name.lower() + ".test"
    return subprocess.run(
        ["doveadm", "-c", os.path.join(DW_DIR, name, "dovecot.conf"), *args],
        env=dict(os.environ, DOVECOT_HOSTNAME=host), text=True,
        capture_output=True)


def show_redis(redis):
    print("\n== the shared queue in Redis (127.0.0.1:%d)" % redis.port)
    keys = sorted(redis.cmd("KEYS", "dovewarden:*"))
    users = [k for k in keys if k.startswith("dovewarden:u:")]
    print("   keys: %s, and %d user hashes"
          % (", ".join(k for k in keys if k not in users), len(users)))
    fields = redis.cmd("HGETALL", "dovewarden:u:alice") or []
    h = dict(zip(fields[0::2], fields[1::2]))
    print("   dovewarden:u:alice: priority %s, last sync %s, last full "
          "sync %s, syncs claimed %s, dsync state %d bytes"
          % (h.get("p"), h.get("lf"), h.get("lfull"), h.get("seq"),
             len(h.get("st", ""))))


def main():
    global EXTRA_CONF
    redis = None
    if "--redis" in sys.argv[1:]:
        redis = RedisServer()
        print("== starting redis-server on 127.0.0.1:%d" % redis.port)
        redis.start(fresh=True)
        EXTRA_CONF = redis.conf()
    print("== starting Dovecot 2.4 instances A and B with dovewarden%s"
          % (" (queue in Redis)" if redis else ""))
    pair("start")
    ok = True
    try:
        e = env()
        print("   A: IMAP %s  LMTP %s  doveadm %s" %
              (e["A_IMAP"], e["A_LMTP"], e["A_DOVEADM"]))
        print("   B: IMAP %s  LMTP %s  doveadm %s" %
              (e["B_IMAP"], e["B_LMTP"], e["B_DOVEADM"]))

        subject = "demo A to B %d" % time.time()
        print("\n== delivering '%s' to alice on A over LMTP" % subject)
        lmtp = smtplib.LMTP("127.0.0.1", int(e["A_LMTP"]),
                            local_hostname="localhost")
        lmtp.sendmail("demo@example.org", ["alice"], message(subject))
        lmtp.quit()
        took = wait_for_subject(int(e["B_IMAP"]), subject)
        if took is None:
            print("   NOT on B after 10 s")
            ok = False
        else:
            print("   readable on B over IMAP after %.3f s" % took)

        subject = "demo B to A %d" % time.time()
        print("\n== appending '%s' to alice's INBOX on B over IMAP" % subject)
        imap = imaplib.IMAP4("127.0.0.1", int(e["B_IMAP"]))
        imap.login("alice", "alicepass")
        imap.append("INBOX", None, None, message(subject))
        imap.logout()
        took = wait_for_subject(int(e["A_IMAP"]), subject)
        if took is None:
            print("   NOT on A after 10 s")
            ok = False
        else:
            print("   readable on A over IMAP after %.3f s" % took)

        for name in ("A", "B"):
            print("\n== service state on %s: doveadm dovewarden status" % name)
            for args in (("status",), ("status", "alice")):
                st = doveadm(name, "dovewarden", *args)
                out = st.stdout if st.returncode == 0 else st.stderr
                print("\n".join("   " + l for l in out.rstrip().split("\n")))
            print("   -- its log:")
            for line in service_log(name)[-6:]:
                print("   " + line)
        if redis is not None:
            show_redis(redis)
    finally:
        print("\n== stopping A and B")
        pair("stop")
        if redis is not None:
            redis.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
