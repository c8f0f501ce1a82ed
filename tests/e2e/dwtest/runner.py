# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Running the cases of one test program against one pair, reported in
TAP (see tap.py): meson names each case that fails."""

import os
import re
import signal
import sys
import threading
import time
import traceback

from dwtest.common import SIDES, Skip
from dwtest.pair import Pair, RedisServer, SERVICE_BIN, rootfs, side_path
from dwtest.tap import Tap, diag

# A skipped program exits 0: its TAP plan says that it skipped
EXIT_PASS, EXIT_FAIL = 0, 1


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
                    diag("simulator: sync of %s failed: %s" % (user, e))
            self.stopping.wait(0.2)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(60)


# ---------------------------------------------------------------------------
# Running a test program

def side_has_redis_tls(side):
    """Whether side's service was built with TLS to Redis: it links
    hiredis_ssl. (A side with its own root file system, e.g. the 2.3 one
    of a mixed pair, has its own build, which meson's DW_BUILD_REDIS_TLS
    does not describe.)"""
    if rootfs(side) is None:
        return True
    try:
        with open(side_path(side, SERVICE_BIN), "rb") as f:
            return b"libhiredis_ssl" in f.read()
    except OSError:
        return False


class Runner:
    """Runs the cases of one test program against one pair.

        r = Runner("replicate-ops")
        @r.case("append A->B")
        def _(pair): ...
        run(r)

    Each case is one TAP result, named by its name; a case passes when
    it returns (what it returns is printed with the result), fails with
    an AssertionError and is an error with any other exception. A case
    that fails does not stop the later ones. A failure outside the cases
    (the pair does not start) gives up: "Bail out!".
    """

    def __init__(self, name, no_plugin=False, need_plugin=True,
                 extra_conf=None, side_conf=None, redis_extra_conf=None,
                 need_redis=False, need_redis_tls=False):
        """need_redis: the program uses the Redis backend itself (without
        DW_E2E_REDIS), so it skips where that is not built; need_redis_tls:
        TLS to Redis too (hiredis >= 1.0)"""
        self.name = name
        self.need_redis = need_redis or need_redis_tls
        self.need_redis_tls = need_redis_tls
        self.no_plugin = no_plugin
        self.need_plugin = need_plugin and not no_plugin
        self.extra_conf = extra_conf
        # with DW_E2E_REDIS=1: after the Redis settings, so it can
        # override them
        self.redis_extra_conf = redis_extra_conf
        self.side_conf = side_conf
        self.cases = []
        self.results = []
        self.tap = Tap()
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
        self.tap.version()
        extra_conf = self.extra_conf
        # what the build has (meson test sets them; unset: yes)
        if ((self.need_redis or os.environ.get("DW_E2E_REDIS") == "1")
                and os.environ.get("DW_BUILD_REDIS", "1") == "0"):
            self.tap.skip_all("%s: this dovewarden was built without the "
                              "Redis backend (hiredis)" % self.name)
            return EXIT_PASS
        if (self.need_redis_tls
                and (os.environ.get("DW_BUILD_REDIS_TLS", "1") == "0" or
                     not all(side_has_redis_tls(s) for s in SIDES))):
            self.tap.skip_all("%s: this dovewarden was built without TLS "
                              "to Redis (it needs hiredis >= 1.0)"
                              % self.name)
            return EXIT_PASS
        if os.environ.get("DW_E2E_REDIS") == "1" and self.redis is None:
            self.redis = RedisServer()
            if not self.redis.available():
                self.tap.skip_all("%s: %s is not available"
                                  % (self.name, RedisServer.BIN))
                return EXIT_PASS
            extra_conf = ((extra_conf or "") + "\n" + self.redis.conf() +
                          "dovewarden_redis_claim_timeout = 3s\n" +
                          (self.redis_extra_conf or ""))
            self.name += " (Redis backend)"
        pair = Pair(no_plugin=self.no_plugin, extra_conf=extra_conf,
                    side_conf=self.side_conf)
        self.pair = pair
        try:
            pair.check_available(self.need_plugin)
        except Skip as e:
            self.tap.skip_all("%s: %s" % (self.name, e))
            return EXIT_PASS
        cases = self._selected()
        self.tap.plan(len(cases))
        try:
            if self.redis is not None:
                try:
                    self.redis.start(fresh=True)
                except Exception as e:
                    self.tap.bail_out("%s: redis-server did not start: %s"
                                      % (self.name, e))
                    diag(traceback.format_exc())
                    return EXIT_FAIL
                pair.redis = self.redis
            return self._main(pair, cases)
        finally:
            if self.redis is not None:
                self.redis.stop()

    def _main(self, pair, cases):
        failed = False
        verbose = os.environ.get("DW_E2E_VERBOSE") == "1"
        try:
            t0 = time.monotonic()
            pair.start()
            diag("%s: pair started in %.2f s (DW_DIR=%s, A imap %d, "
                 "B imap %d)" % (self.name, time.monotonic() - t0,
                                 pair.dw_dir, pair.port("A", "imap"),
                                 pair.port("B", "imap")))
            if os.environ.get("DW_E2E_SIMULATE_SYNC") == "1":
                diag("WARNING: DW_E2E_SIMULATE_SYNC=1: no plugin, doveadm "
                     "sync stands in for dovewarden")
                self.simulator = SyncSimulator(pair)
                pair.simulator = self.simulator
                self.simulator.start()
            for name, fn in cases:
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
                if status == "PASS":
                    self.tap.result(name, True, "%.2f s%s" % (
                        dt, ": " + detail if detail else ""))
                    if verbose:
                        pair.dump_logs(n=40, since_mark=True)
                else:
                    failed = True
                    text = "%s after %.2f s:\n%s" % (
                        status, dt, "\n".join(
                            "    " + l for l in detail.rstrip().split("\n")))
                    self.tap.result(name, False, text)
                    pair.dump_logs(n=80, since_mark=True,
                                   header="[%s] " % name, to_stderr=True)
                    self.tap.failure_to_stderr(name, text)
        except Exception as e:
            failed = True
            self.tap.bail_out("%s: %s: %s" % (self.name, type(e).__name__,
                                              e))
            diag(traceback.format_exc())
            pair.dump_logs(n=40)
        finally:
            if self.simulator:
                self.simulator.stop()
            if failed and self.results:
                pair.dump_logs(n=30)
            pair.stop()
        n_pass = sum(1 for r in self.results if r[1] == "PASS")
        diag("%s: %d/%d cases passed" % (self.name, n_pass,
                                         len(self.results)))
        for name, status, dt, _d in self.results:
            if status != "PASS":
                diag("  %s: %s" % (status, name))
        return EXIT_FAIL if failed else EXIT_PASS


def run(runner):
    # a SIGTERM from meson's timeout still stops the pair
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)
    try:
        code = runner.main()
    except KeyboardInterrupt as e:
        runner.tap.bail_out("%s: interrupted (%s)" % (runner.name,
                                                     e or "SIGINT"))
        if runner.pair is not None:
            runner.pair.stop()
        if runner.redis is not None:
            runner.redis.stop()
        code = EXIT_FAIL
    sys.exit(code)
