#!/bin/sh
# Copyright (c) 2026 dovewarden authors, see the included COPYING file
#
# The figures of issue #12 in one run on the testenv pair, each against
# the baseline its program measures in the same run:
#   bench-throughput   throughput against bare doveadm sync on Dovecot
#                      without dovewarden, CPU of both instances, the
#                      syncs each service ran by kind (incremental, full,
#                      settle, verification, follow-up, on both servers)
#                      and the big-mailbox burst cost (item 4)
#   bench-latency      one change's latency against a bare sync, without
#                      and with 200 other users being replicated
#   bench-plugin-cpu   CPU per APPEND with and without dovewarden (best
#                      with an optimized build installed)
#   bench-convergence  dsync runs per change and the convergence time
#                      after an active-active workload, against plain
#                      incremental replication
# Each program starts and stops its own pair (distinct port offsets).
# Their figures (stdout) are printed here one after the other; their logs
# (stderr) go to $DW_BENCH_OUT (default /srv/bench-issue12). About 26
# minutes on the 2-core test machine; DW_BENCH_QUICK=1 runs each with
# small parameters (a few minutes, figures not meant to be compared).
# Run it inside the chroot after testenv/setup:
#   sh /src/dovewarden/bench/issue12.sh
set -u
dir=$(dirname "$0")
out=${DW_BENCH_OUT:-/srv/bench-issue12}
mkdir -p "$out"
export PYTHONDONTWRITEBYTECODE=1
if [ "${DW_BENCH_QUICK:-0}" = 1 ]; then
	tp="--users 20 --rounds 2 --big-folders 5 --big-messages 50 --big-runs 1"
	lat="--rounds 1"
	cpu="--rounds 2 --secs 3 --warmup 3"
	conv="--users 6 --ops 40 --duration 15"
else
	tp="" lat="--rounds 12" cpu="" conv=""
fi
rc=0
run() { # run NAME PORT_OFFSET ARGS...
	name=$1 offset=$2
	shift 2
	echo "== $name $*"
	# shellcheck disable=SC2068
	DW_DIR=/srv/dt-b12 DW_PORT_OFFSET=$offset \
		python3 "$dir/$name.py" $@ 2>"$out/$name.log" || {
		echo "$name failed, see $out/$name.log"
		rc=1
	}
	echo
}
# shellcheck disable=SC2086
{
	run bench-throughput 1300 $tp
	run bench-latency 850 $lat
	run bench-plugin-cpu 900 $cpu
	run bench-convergence 1000 $conv
}
exit $rc
