#!/usr/bin/env python3
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Both services share a queue in a real redis-server that speaks TLS
only (--port 0 --tls-port N, tls-auth-clients on): the certificates are
made with openssl for this run, the services verify the server's
certificate against their CA file (dovewarden_redis_ssl_ca_file) and
present a client certificate.

(a) Changes made on A and on B replicate both ways through the TLS
    queue, and Redis knows the users.
(b) B's service is restarted with a CA file that did not sign Redis's
    certificate: it refuses the server (a clear log line, "TLS: The
    server's certificate is not valid"), keeps running and retrying,
    and B's IMAP still takes mail. With the right CA again (a restart,
    which logs the notification it could not write to Redis), a full
    sync of the user replicates the change made meanwhile on B.
(c) The same with dovewarden_redis_ssl_server_name set to a name the
    server's certificate does not carry (hostname mismatch)."""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dwtest.clients import make_message  # noqa: E402
from dwtest.common import SIDES, wait_until  # noqa: E402
from dwtest.pair import RedisServer  # noqa: E402
from dwtest.runner import Runner, run  # noqa: E402

OPENSSL = "/usr/bin/openssl"


def openssl(*args, cwd):
    subprocess.run([OPENSSL] + list(args), cwd=cwd, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=dovewarden test %s" % name,
            "-addext", "keyUsage = critical, keyCertSign, cRLSign",
            "-keyout", name + ".key", "-out", name + ".pem", cwd=d)


def make_cert(d, ca, name, ext):
    """a certificate NAME.pem with key NAME.key signed by CA"""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        # what X.509 strict verification (Python's default) wants
        f.write("basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\n"
                "subjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid, issuer\n" + ext)
    openssl("req", "-newkey", "rsa:2048", "-nodes",
            "-subj", "/CN=dovewarden test %s" % name,
            "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-days", "2",
            "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial",
            "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)


class TlsRedisServer(RedisServer):
    """RedisServer on a TLS port only, with certificates made in
    DW_DIR/redis-tls: ca (signs the server's and the client's), other-ca
    (signs nothing of this server), server (subjectAltName 127.0.0.1 and
    localhost) and client."""

    def __init__(self):
        super().__init__()
        self.certs = os.path.join(os.path.dirname(self.dir), "redis-tls")

    def path(self, name):
        return os.path.join(self.certs, name)

    def make_certs(self):
        shutil.rmtree(self.certs, ignore_errors=True)
        os.makedirs(self.certs)
        make_ca(self.certs, "ca")
        make_ca(self.certs, "other-ca")
        make_cert(self.certs, "ca", "server",
                  "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                  "extendedKeyUsage = serverAuth\n")
        make_cert(self.certs, "ca", "client",
                  "extendedKeyUsage = clientAuth\n")
        # the services read them as their user
        os.chmod(self.certs, 0o755)
        for f in os.listdir(self.certs):
            os.chmod(self.path(f), 0o644)

    def start(self, fresh=False):
        if fresh or not os.path.exists(self.path("server.pem")):
            self.make_certs()
        super().start(fresh)

    def listen_args(self):
        return ["--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", self.path("server.pem"),
                "--tls-key-file", self.path("server.key"),
                "--tls-ca-cert-file", self.path("ca.pem"),
                "--tls-auth-clients", "yes"]

    def conf(self, prefix="dovewarden:", ca="ca.pem", server_name=None):
        return (super().conf(prefix) +
                "dovewarden_redis_ssl = yes\n"
                "dovewarden_redis_ssl_ca_file = %s\n"
                "dovewarden_redis_ssl_cert_file = %s\n"
                "dovewarden_redis_ssl_key_file = %s\n"
                % (self.path(ca), self.path("client.pem"),
                   self.path("client.key")) +
                ("dovewarden_redis_ssl_server_name = %s\n" % server_name
                 if server_name else ""))

    def connect(self):
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        ctx.load_cert_chain(self.path("client.pem"), self.path("client.key"))
        s = socket.create_connection(("127.0.0.1", self.port), 5)
        return ctx.wrap_socket(s, server_hostname="127.0.0.1")


redis = TlsRedisServer()
r = Runner(
    "test-redis-tls", need_redis_tls=True,
    extra_conf=redis.conf() +
    "dovewarden_redis_claim_timeout = 3s\n"
    "dovewarden_retry_min_interval = 1s\n"
    "dovewarden_retry_max_interval = 3s\n"
    "dovewarden_settle_delay = 1s\n")
r.redis = redis


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def no_panic(pair):
    bad = [line for s in SIDES for line in pair.log_since_mark(s)
           if "Panic" in line or "Fatal" in line or
           "assertion" in line.lower()]
    expect(not bad, "a panic or fatal error in the log:\n  " +
           "\n  ".join(bad[:10]))


def plain_port_closed(pair):
    """redis-server has no plain TCP listener"""
    with socket.create_connection(("127.0.0.1", pair.redis.port), 5) as s:
        s.sendall(b"PING\r\n")
        s.settimeout(5)
        try:
            data = s.recv(100)
        except (socket.timeout, ConnectionResetError):
            data = b""
    return not data.startswith(b"+PONG")


@r.case("(a) both services replicate through Redis over TLS")
def _(pair):
    expect(plain_port_closed(pair), "Redis answers plain-text PING on %d"
           % pair.redis.port)
    pids = {s: pair.service_pid(s) for s in SIDES}
    pair.append("A", "alice", make_message("tls-from-a"))
    pair.wait_converged("alice", 30, "APPEND on A")
    pair.append("B", "bob", make_message("tls-from-b"))
    pair.wait_converged("bob", 30, "APPEND on B")
    pair.append("B", "alice", make_message("tls-back-to-a"))
    pair.wait_converged("alice", 30, "APPEND on B to alice")
    known = set(pair.redis.cmd("SMEMBERS", "dovewarden:users"))
    expect({"alice", "bob"} <= known, "Redis knows only %r" % sorted(known))
    for s in SIDES:
        st = pair.dw_users(s, "alice").get("alice")
        expect(st is not None, "%s's instance does not show alice" % s)
    expect({s: pair.service_pid(s) for s in SIDES} == pids,
           "a service restarted")
    no_panic(pair)
    clients = pair.redis.cmd("CLIENT", "LIST")
    return "%d users in Redis; %d clients connected" % (
        len(known), clients.strip().count("\n") + 1 if clients else 0)


def set_b_conf(pair, conf):
    """restart B with CONF appended to its dovecot.conf (after the
    Redis settings, so it overrides them); None restores it"""
    path = os.path.join(pair.dw_dir, "B", "dovecot.conf")
    marker = "# test-redis-tls override\n"
    with open(path) as f:
        text = f.read()
    text = text.split(marker)[0]
    if conf is not None:
        text += marker + conf
    pair.stop_one("B")
    with open(path, "w") as f:
        f.write(text)
    pair.mark_log("B")
    pair.start_one("B")


def refused_case(pair, conf, reason):
    user = "carol"
    pair.append("A", user, make_message("tls-before"))
    pair.wait_converged(user, 30, "APPEND on A before B's change")

    set_b_conf(pair, conf)
    line = pair.wait_log(
        "B", lambda l: "redis:" in l and reason in l, 20,
        "B's service to log that it refuses the server (%r)" % reason)
    pid = pair.service_pid("B")
    # the mail processes do not wait for the service's Redis
    t0 = time.monotonic()
    pair.append("B", user, make_message("tls-while-refused"))
    append_secs = time.monotonic() - t0
    expect(append_secs < 5, "APPEND on B took %.1f s" % append_secs)
    time.sleep(4)
    expect(pair.service_pid("B") == pid,
           "B's service restarted while the server was refused")
    refused = [l for l in pair.log_since_mark("B")
               if "Error: redis:" in l and reason in l]
    # once per outage (for each of its connections), not per retry
    expect(len(refused) <= 2, "the refusal was logged %d times as an "
           "error:\n  %s" % (len(refused), "\n  ".join(refused[:5])))
    no_panic(pair)

    set_b_conf(pair, None)
    # B's service could not hand the notification of that change to
    # Redis before its restart: it says so at shutdown, and the periodic
    # full sync would replicate the change; run it now.
    lost = [l for l in pair.log_tail("B", 200)
            if "At shutdown" in l and "could not be written to Redis" in l]
    expect(lost, "B's service did not log the notification it kept")
    pair.dw("B", "replicate", "-f", user)
    pair.wait_converged(user, 40, "B's change after the right CA is back")
    return "%s; %d such errors in 4 s; APPEND on B %.2f s" % (
        line.split(": ", 1)[-1][:160], len(refused), append_secs)


@r.case("(b) a CA that did not sign Redis's certificate is refused")
def _(pair):
    return refused_case(pair, "dovewarden_redis_ssl_ca_file = %s\n"
                        % pair.redis.path("other-ca.pem"),
                        "TLS: The server's certificate is not valid")


@r.case("(c) a name the server's certificate lacks is refused")
def _(pair):
    return refused_case(pair, "dovewarden_redis_ssl_server_name = "
                        "redis.wrong.test\n", "hostname mismatch")


if __name__ == "__main__":
    if not os.access(OPENSSL, os.X_OK):
        r.tap.version()
        r.tap.skip_all("test-redis-tls: %s is not available" % OPENSSL)
        sys.exit(0)
    run(r)
