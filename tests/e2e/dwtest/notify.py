# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""The service's dovewarden-notify socket, spoken to directly: as the
mail plugin does, or as another local uid would."""

import os
import socket

HELLO = b"VERSION\tdovewarden-notify\t1\t0\n"


def notify_path(pair, side="A"):
    return os.path.join(pair.dw_dir, side, "run", "dovewarden-notify")


def notify_connect(pair, side="A", timeout=30):
    """a connection to side's notify socket (the handshake not sent)"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(notify_path(pair, side))
    return s


def as_uid(uid, fn):
    """Run fn() in a child process with uid (and gid) uid; returns the
    bytes fn returned. Raises AssertionError when the child failed."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            os.setgid(uid)
            os.setuid(uid)
            os.write(wfd, fn())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    out = b""
    while True:
        data = os.read(rfd, 65536)
        if not data:
            break
        out += data
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise AssertionError("the uid %d client failed" % uid)
    return out
