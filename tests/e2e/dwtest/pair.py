# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The pair of Dovecot instances A and B that testenv/pair makes: its
configuration, start and stop, doveadm and the dovewarden admin commands,
the service process and the Dovecot logs; the real redis-server of the
Redis queue backend, and listeners that stand in for a hung peer."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from dwtest.checker import PairChecker
from dwtest.clients import PairClients
from dwtest.common import SIDES, Skip, peer, wait_until
from dwtest.tap import diag

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
PAIR = os.path.join(REPO, "testenv", "pair")

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
SERVICE_BIN = "/usr/lib/dovecot/dovewarden"
PLUGIN_SO = "/usr/lib/dovecot/modules/lib20_dovewarden_plugin.so"
SETTINGS_SO = "/usr/lib/dovecot/modules/settings/libdovewarden_settings.so"

HOSTNAMES = {"A": "a.test", "B": "b.test"}


_SERIES = {}


def dovecot_series(side):
    """"2.3" or "2.4": the Dovecot release series that side runs (its
    dovecot --version; "2.4" for 2.4 and later). The e2e suite runs on
    both, and on a mixed pair (one side on each); what differs for 2.3
    (its configuration syntax) is decided here and in testenv/pair's
    gen23."""
    key = (side, rootfs(side))
    if key not in _SERIES:
        try:
            ver = dovecot_version(side)
        except (OSError, subprocess.SubprocessError):
            ver = ""
        _SERIES[key] = "2.3" if ver.startswith("2.3.") else "2.4"
    return _SERIES[key]


def dovecot_version(side):
    """side's dovecot --version"""
    return subprocess.run(side_cmd(side, [DOVECOT, "--version"]),
                          capture_output=True, text=True,
                          timeout=30).stdout.strip()


class BySeries:
    """A text that Dovecot 2.3 writes differently from 2.4 (e.g.
    %{user | lower} is %Lu there): configuration given to Pair as
    extra_conf or side_conf, or an argument of Pair.doveadm. Each side
    gets the text of its own series (for_side), so that a mixed pair
    gets both. Adding a str or another BySeries gives a BySeries."""

    def __init__(self, v24, v23):
        self.v24 = v24
        self.v23 = v23

    def for_series(self, series):
        return self.v23 if series == "2.3" else self.v24

    def __add__(self, other):
        return BySeries(self.v24 + for_series(other, "2.4"),
                        self.v23 + for_series(other, "2.3"))

    def __radd__(self, other):
        return BySeries(for_series(other, "2.4") + self.v24,
                        for_series(other, "2.3") + self.v23)


def for_series(text, series):
    """text (a str or a BySeries) as Dovecot series writes it"""
    return text.for_series(series) if isinstance(text, BySeries) else text


def for_side(text, side):
    """text (a str or a BySeries) as side's Dovecot writes it"""
    return for_series(text, dovecot_series(side))


def conf_by_series(v24, v23):
    """A configuration text written v24 on Dovecot 2.4, v23 on 2.3 (a
    BySeries: Pair gives each side its own)"""
    return BySeries(v24, v23)


def user_setting_opt(name, value):
    """doveadm's -o option setting the per-user setting name (e.g.
    dovewarden_noreplicate): in plugin { } on 2.3, at the top level on
    2.4 (for Pair.doveadm, which gives the side's own)"""
    return ["-o", conf_by_series("", "plugin/") + name + "=" + value]


def rootfs(side):
    """The root file system that side's Dovecot runs from, when it is not
    this one: DW_ROOTFS_A or DW_ROOTFS_B (a container image's; see
    testenv/pair). None otherwise."""
    return os.environ.get("DW_ROOTFS_" + side) or None


def side_path(side, path):
    """path (absolute) of one of side's programs, as seen from here"""
    r = rootfs(side)
    return os.path.join(r, path.lstrip("/")) if r else path


def side_cmd(side, cmd):
    """cmd (a list) running one of side's programs: chrooted into side's
    root file system when it has its own"""
    r = rootfs(side)
    return ["chroot", r] + list(cmd) if r else list(cmd)


def own_pid(pid):
    """pid as that process sees itself: in a side run as a container, its
    own PID namespace numbers it differently (the last of NSpid)"""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return pid


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


class Pair(PairClients, PairChecker):
    """The instances A and B of testenv/pair. The IMAP, POP3 and LMTP
    sessions come from PairClients, the checker from PairChecker."""

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
        # extra_conf and side_conf go to each side in its own series'
        # syntax (see BySeries), after DW_EXTRA_CONF of the environment
        sides = self.side_conf if isinstance(self.side_conf, dict) else {}
        for s in SIDES:
            extra = [for_side(self.extra_conf or "", s),
                     for_side(sides.get(s, ""), s)]
            env["DW_EXTRA_CONF_" + s] = "\n".join(x for x in extra if x)
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
        if not os.access(PAIR, os.X_OK):
            raise Skip("%s is not available" % PAIR)
        if shutil.which("ss") is None:
            raise Skip("ss (iproute2) is not available")
        for side in SIDES:
            self._check_side(side, need_plugin)

    def _check_side(self, side, need_plugin):
        def path(p):
            return side_path(side, p)
        for p in (DOVECOT, DOVEADM):
            if not os.access(path(p), os.X_OK):
                raise Skip("%s is not available" % path(p))
        try:
            ver = dovecot_version(side)
        except (OSError, subprocess.SubprocessError) as e:
            raise Skip("cannot run %s: %s" % (path(DOVECOT), e))
        if not re.match(r"2\.([4-9]|\d\d)|[3-9]\.|2\.3\.(19|[2-9]\d)",
                        ver):
            raise Skip("Dovecot 2.3.19 or later is needed, found %r" % ver)
        extra = os.environ.get("DW_EXTRA_CONF", "")
        if (os.path.exists(path(SETTINGS_SO))
                and not os.access(path(SERVICE_BIN), os.X_OK)
                and "executable" not in extra):
            raise Skip("the dovewarden service is not installed (%s)"
                       % path(SERVICE_BIN))
        if need_plugin and not os.path.exists(path(PLUGIN_SO)):
            raise Skip("the dovewarden plugin is not installed (%s)"
                       % path(PLUGIN_SO))

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
            self._check_root(s)

    def _check_root(self, side):
        """A side with its own root file system runs from it"""
        r = rootfs(side)
        if r and not os.path.samefile("/proc/%d/root" % self.master_pid(side),
                                      r):
            raise RuntimeError("%s's Dovecot does not run from %s" % (side, r))

    def stop(self):
        if not self.started:
            return
        r = self._pair("stop", timeout=120)
        if r.returncode != 0:
            diag("WARNING: testenv/pair stop failed: %s%s"
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

    def gen_one(self, side):
        """Rewrite side's configuration (testenv/pair gen-one): for a
        side stopped to run another Dovecot, or reloaded"""
        r = self._pair("gen-one", side, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("pair gen-one %s: %s" % (side, r.stdout))

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

    def dump_user_logs(self, users, n=60, max_users=3):
        """The services' debug lines of this case about each of users
        (its syncs, settles and their verdicts; not the doveadm
        connection chatter), the last n per side, for the first
        max_users users: what a failure of one user needs."""
        for u in sorted(users)[:max_users]:
            pat = re.compile(r"dovewarden: [A-Za-z]+: %s: " % re.escape(u))
            for s in SIDES:
                lines = [l for l in self.log_since_mark(s)
                         if pat.search(l) and ": conn " not in l][-n:]
                diag("\n".join(["----- %s: %s service lines of this case "
                                 "-----" % (u, s)] +
                                ["  " + line for line in lines]))

    def dump_logs(self, n=60, since_mark=False, header="", to_stderr=False):
        """The servers' last log lines as diagnostics; with to_stderr also
        on stderr, which is what meson --print-errorlogs shows"""
        for s in SIDES:
            lines = (self.log_since_mark(s) if since_mark
                     else self.log_tail(s, n * 20))
            lines = [l for l in lines if not _LOG_NOISE.search(l)][-n:]
            text = "\n".join(["----- %s%s %s (%s) -----" % (
                header, s, "log lines of this case" if since_mark
                else "log tail", self.log_path(s))] +
                ["  " + line for line in lines])
            diag(text)
            if to_stderr:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()

    # -- doveadm --

    def doveadm(self, side, *args, timeout=60, check=True):
        env = dict(os.environ)
        env["DOVECOT_HOSTNAME"] = HOSTNAMES[side]
        cmd = side_cmd(side, [DOVEADM, "-c", os.path.join(
            self.dw_dir, side, "dovecot.conf")] +
            [for_side(a, side) for a in args])
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

    def dsync_reasons(self, user, side="A", limit=20):
        """A forced full doveadm -D sync of user from side, for a
        failure's diagnostics: its exit code and dsync's own reasons
        (its "Change during sync", warning and error lines), which
        doveadm-server does not log"""
        dest = "tcp:127.0.0.1:%d" % self.port(peer(side), "doveadm")
        try:
            r = self.doveadm(side, "-D", "sync", "-f", "-l", "30", "-u",
                             user, dest, check=False)
        except subprocess.TimeoutExpired:
            return ["doveadm sync -f of %s timed out" % user]
        pat = re.compile(r"Change during sync|Warning:|Error:|Fatal:|"
                         r"Panic:")
        lines = [l for l in (r.stdout + r.stderr).splitlines()
                 if pat.search(l)]
        return ["doveadm sync -f of %s from %s: exit code %d" % (
            user, side, r.returncode)] + lines[:limit]

    def dump_dsync_reasons(self, users, max_users=3):
        """dsync_reasons() of the first max_users users as diagnostics
        (its forced full syncs may make them the same)"""
        for u in sorted(users)[:max_users]:
            diag("\n  ".join(["----- %s: dsync's view -----" % u] +
                             self.dsync_reasons(u)))

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

    def wait_failed(self, side, users, count, timeout, what):
        """Poll until side's service has every one of users failed at
        least count times in a row."""
        def failed():
            st = self.dw_users(side, "*")
            return all(u in st and int(st[u]["failed"]) >= count
                       for u in users)
        wait_until(failed, timeout, what, interval=0.5)

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

    # -- mailboxes, settings, queues --

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
        cmd = side_cmd(side, ["/usr/bin/doveconf", "-c", os.path.join(
            self.dw_dir, side, "dovecot.conf"), "-h", name])
        r = subprocess.run(cmd, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None

    def queues_empty(self, side):
        """True when side's service has nothing queued or running
        (doveadm dovewarden status; periodic full syncs not counted)."""
        ov = self.dw_overview(side)
        return all(v == 0 for k, v in ov.items()
                   if k.startswith("Queued '") and "full" not in k
                   or k == "Syncs running")

    def _edit_users(self, side, edit):
        """Replace side's passwd-file by edit(its lines), in one rename:
        a passwd-file read while it was being written would be taken as
        current."""
        path = os.path.join(self.dw_dir, side, "users")
        with open(path) as f:
            lines = f.read().splitlines()
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(edit(lines)) + "\n")
        os.chmod(tmp, os.stat(path).st_mode)
        os.rename(tmp, path)
        # passwd-file notices a change by mtime; make sure it differs
        st = os.stat(path)
        os.utime(path, (st.st_atime, st.st_mtime + 2))

    def add_userdb_lines(self, lines, sides=SIDES):
        """Append passwd-file lines to the users files of sides."""
        for side in sides:
            self._edit_users(side, lambda old: old + list(lines))

    def set_userdb_fields(self, side, fields):
        """Give users extra userdb fields in side's passwd-file, as a dict
        user -> "name=value" (replacing the user's extra fields)."""
        def edit(lines):
            # passwd-file: user:password:uid:gid:gecos:home:shell:extra
            out = []
            for line in lines:
                f = line.split(":")
                if f[0] in fields:
                    f = f[:7] + ["userdb_" + fields[f[0]]]
                out.append(":".join(f))
            return out
        self._edit_users(side, edit)

    def doveadm_socket_path(self, side):
        """The doveadm-server socket side's service syncs through
        (dovewarden_doveadm_socket_path, relative to base_dir)"""
        return os.path.join(self.dw_dir, side, "run", self.doveconf(
            side, "dovewarden_doveadm_socket_path"))

    def inbox_dir_exists(self, side, user):
        return os.path.isdir(os.path.join(
            self.dw_dir, side, "mail", user, "sdbox", "mailboxes", "INBOX"))

    # -- the service process --

    def master_pid(self, side):
        """side's master process, as seen here (testenv/pair's pidfile)"""
        path = (os.path.join(self.dw_dir, side, "master.pid") if rootfs(side)
                else os.path.join(self.dw_dir, side, "run", "master.pid"))
        with open(path) as f:
            return int(f.read().strip())

    def child_pids(self, side, pred):
        """PIDs of the children of side's master for which
        pred(executable path, command line) holds"""
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
            if pred(exe, cmdline):
                pids.append(int(d))
        return pids

    def service_pids(self, side):
        """PIDs of side's dovewarden service: children of that instance's
        master whose executable or process title is dovewarden."""
        return self.child_pids(side, lambda exe, cmdline: (
            os.path.basename(exe) == "dovewarden" or
            re.search(r"(^|[/ ])dovewarden\b", cmdline)))

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
            [self.BIN] + self.listen_args() +
            ["--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes",
             "--appendfsync", "always", "--save", "",
             "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        wait_until(lambda: self._ping(), 10, "redis-server to answer PING")

    def listen_args(self):
        """redis-server's arguments for its listener"""
        return ["--port", str(self.port)]

    def connect(self):
        """a socket connected to this server, for cmd()"""
        return socket.create_connection(("127.0.0.1", self.port), 5)

    def _ping(self):
        try:
            return self.cmd("PING") == "PONG"
        except OSError:
            return False
        except RuntimeError as e:
            # a restarted server answers -LOADING while it reads its AOF
            if "LOADING" in str(e):
                return False
            raise

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
        with self.connect() as s:
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
