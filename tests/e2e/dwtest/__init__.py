# Copyright (c) 2026 dovewarden authors, see the included COPYING file
"""Harness for dovewarden's end-to-end tests.

Each test program starts its own pair of Dovecot instances (A and B) with
testenv/pair, runs its cases against them over 127.0.0.1 and stops the pair
again, also when a case fails. The checker compares what a user sees over
IMAP on A and on B.

Environment: DW_DIR (default /srv/dt), DW_PORT_OFFSET (default 0) and
DW_EXTRA_CONF are passed on to testenv/pair. DW_E2E_VERBOSE=1 prints the
Dovecot log lines of every case, not only of failed ones. DW_ROOTFS_A and
DW_ROOTFS_B run a side's Dovecot, doveadm and doveconf from another root
file system, as a container (testenv/pair; packaging/test-image).

The modules, by concern:
  common   the sides, the users of testenv/pair, wait_until, time formats
  clients  IMAP, POP3 and LMTP sessions, imaplib response parsing, messages
  checker  snapshots of a user on A and B and their comparison
  pair     the pair (start, stop, doveadm, logs, the service process),
           RedisServer, stand-ins for a hung peer
  web      the service's HTTP listener: requests, event exporter, /metrics
  notify   the notify socket, spoken to directly (as another uid too)
  load     load generators: MixedLoad, concurrent APPENDs checked on B
  runner   running a program's cases against one pair
  tap      their TAP output
"""
