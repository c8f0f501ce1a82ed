#!/bin/sh
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
#
# The figures of tests/e2e/test-restart-storm.py: both services killed
# with SIGKILL every 5 s for 2 minutes while a mixed workload changes 24
# users on both servers, with the built-in queue and with the Redis queue.
# The test fails when a change is not on both servers 30 s after the load;
# here the bound is 2 minutes, so that each run prints how long the servers
# took to converge ("converged N s after the load"), next to how long the
# first sync of the same users took without kills (the baseline of the same
# run). Run it inside the chroot after testenv/setup, like the other
# benchmarks:
#   DW_DIR=/srv/dt-s DW_PORT_OFFSET=800 sh /src/dovewarden/bench/restart-storm.sh
# DW_KILL_DURATION, DW_KILL_INTERVAL, DW_STORM_USERS and DW_CONV_BOUND
# change the figures.
set -u
dir=$(dirname "$0")/../tests/e2e
export DW_KILL_DURATION="${DW_KILL_DURATION:-120}"
export DW_CONV_BOUND="${DW_CONV_BOUND:-120}"
export PYTHONDONTWRITEBYTECODE=1
rc=0
for redis in 0 1; do
	DW_E2E_REDIS=$redis python3 "$dir/test-restart-storm.py" || rc=1
done
exit $rc
