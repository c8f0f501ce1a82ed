# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""TAP (version 13) output of a test program, for meson's protocol
'tap': one "ok N - name" or "not ok N - name" line per case. Every other
line a program prints goes out as a "# " diagnostic (diag()), so that
meson takes nothing else for a result."""

import sys
import threading

_lock = threading.Lock()


def _write(lines):
    with _lock:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()


def diag(text):
    """Print text as diagnostic lines, "# " before each line."""
    _write(["# " + line if line else "#"
            for line in str(text).rstrip("\n").split("\n")])


class Tap:
    """The results of one program. version() first, then plan() (or
    skip_all()), then result() per case, or bail_out() to give up."""

    def __init__(self):
        self.n = 0
        self.failed = []

    def version(self):
        _write(["TAP version 13"])

    def plan(self, n):
        _write(["1..%d" % n])

    def skip_all(self, reason):
        _write(["1..0 # SKIP " + _oneline(reason)])

    def result(self, name, passed, detail=""):
        """ok/not ok of the next case, then detail as diagnostics"""
        self.n += 1
        if not passed:
            self.failed.append(name)
        # '#' would start a directive; meson reads the name up to it
        lines = ["%s %d - %s" % ("ok" if passed else "not ok", self.n,
                                 _oneline(name).replace("#", "No."))]
        if detail:
            lines += ["# " + line if line else "#"
                      for line in detail.rstrip("\n").split("\n")]
        _write(lines)

    def failure_to_stderr(self, name, detail):
        """Why a case failed, on stderr too: meson's --print-errorlogs
        shows stderr only (its last 100 lines), so a CI log names the
        reason. Called after the case's log lines went there."""
        sys.stderr.write("not ok - %s\n%s\n" % (_oneline(name),
                                                  detail.rstrip("\n")))
        sys.stderr.flush()

    def bail_out(self, reason):
        _write(["Bail out! " + _oneline(reason)])
        sys.stderr.write("Bail out! %s\n" % _oneline(reason))
        sys.stderr.flush()


def _oneline(text):
    return " ".join(str(text).split())
