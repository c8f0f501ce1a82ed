/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_QUEUE_RULES_H
#define DOVEWARDEN_QUEUE_RULES_H

#include "dovewarden-protocol.h"

/* The scheduling rules that every queue backend follows (see
   dovewarden-queue.h for how the built-in queue applies them; the Redis
   backend's scripts get the same numbers from here as arguments):
   priorities with their head starts, CHANGED retries, failure back-off,
   full-sync slots, settling. */

/* How much earlier than its real time a change of this priority sorts */
#define DOVEWARDEN_QUEUE_SYNC_BOOST_SECS (45 * 60)
#define DOVEWARDEN_QUEUE_HIGH_BOOST_SECS (30 * 60)
#define DOVEWARDEN_QUEUE_LOW_BOOST_SECS (15 * 60)
/* A sync that ended with CHANGED runs again after this long */
#define DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS 2
/* After this many CHANGED results in a row the next sync is a full one:
   dsync answers CHANGED also when an incremental sync can't work at all
   ("retry with a full sync"), and retrying incrementally would loop */
#define DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT 2
/* CHANGED retries back off up to this (see
   dovewarden_queue_changed_retry_secs()): a full sync a minute costs
   little, and a new change waits no longer */
#define DOVEWARDEN_QUEUE_CHANGED_RETRY_MAX_SECS 60
/* A full sync that repaired a difference is followed by another one
   after the settle delay, at most this many times in a row */
#define DOVEWARDEN_QUEUE_REPAIR_SETTLE_MAX 3
/* Sync slots: new mail (HIGH and SYNC) may take every slot; the rest is
   background work, which takes at most dovewarden_queue_background_slots()
   of them, so that new mail never waits for a slot behind it: periodic
   and settle full syncs (NONE), and flag changes, expunges and mailbox
   changes (LOW, also forced full syncs and retries of failed background
   syncs). A backend's pop() without allow_background claims no user
   whose pending priority is this or lower. */
#define DOVEWARDEN_QUEUE_BACKGROUND_MAX_PRIORITY DOVEWARDEN_PRIORITY_LOW

enum dovewarden_sync_result {
	/* dsync succeeded; the new state replaces the old one */
	DOVEWARDEN_SYNC_RESULT_OK,
	/* dsync succeeded but saw changes during the sync (CHANGED):
	   run again soon, keep the state */
	DOVEWARDEN_SYNC_RESULT_CHANGED,
	/* temporary failure, lock timeout, timeout, lost connection:
	   retry with exponential back-off */
	DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
	/* the user does not exist (NOUSER): forget the user */
	DOVEWARDEN_SYNC_RESULT_NOUSER,
	/* configuration error (USAGE, NOPERM, no replica, ...): retry only
	   after the longest back-off */
	DOVEWARDEN_SYNC_RESULT_CONFIG,
};

struct dovewarden_queue_settings {
	/* Every user gets a full sync at least this often (0 = never) */
	unsigned int full_sync_interval_secs;
	/* Back-off after a failure: min * 2^(failures-1), at most max,
	   plus up to 25% random jitter */
	unsigned int retry_min_secs;
	unsigned int retry_max_secs;
	/* A user's settle full sync runs this long after its last change
	   (0 = never), and at most settle_max_secs after the first change
	   that it covers (raised to settle_delay_secs if lower) */
	unsigned int settle_delay_secs;
	unsigned int settle_max_secs;
};

/* A user's settle full sync runs at most this long after the first
   change it covers, also while changes keep coming (dovewarden_settle_delay
   sets the normal delay) */
#define DOVEWARDEN_QUEUE_SETTLE_MAX_SECS (5 * 60)

/* How a change counts for the settle full sync. Incremental dsync fails to
   converge where a user changed on two servers at about the same time
   (e.g. the same message's flags changed on both): only those users need
   a settle. A server's mail plugin reports both its clients' changes and
   the changes dsync made there (imports from the other server), so where
   both come from such a plugin the settle runs only when they overlap;
   changes from other sources are settled always. */
enum dovewarden_queue_settle_kind {
	/* settled always: event input, admins, older plugins */
	DOVEWARDEN_QUEUE_SETTLE_ALWAYS = 0,
	/* a client's change, from a plugin that also reports imports */
	DOVEWARDEN_QUEUE_SETTLE_CLIENT,
	/* a change dsync made on this server: settles nothing by itself */
	DOVEWARDEN_QUEUE_SETTLE_IMPORT,
};

/* Whether a change of one kind (a client change or an import) overlaps
   the other kind's latest change on the user: that one is still pending
   or being synced, or was made at most the settle delay before now
   (other_time 0 = none). The built-in queue compares a server's client
   changes with its imports; the Redis queue, which sees the client
   changes of every server, those of different servers. */
bool dovewarden_queue_settle_concurrent(const struct dovewarden_queue_settings *set,
					time_t other_time, bool other_pending,
					time_t now);

/* How much earlier than its real time a change of this priority sorts */
time_t dovewarden_queue_priority_boost(enum dovewarden_priority priority);
/* TRUE when a sync of this priority is background work (see
   DOVEWARDEN_QUEUE_BACKGROUND_MAX_PRIORITY) */
static inline bool
dovewarden_queue_priority_is_background(enum dovewarden_priority priority)
{
	return priority <= DOVEWARDEN_QUEUE_BACKGROUND_MAX_PRIORITY;
}
/* How many of max_syncs sync slots background work may take: all but a
   quarter of them, at least one left free (but one of one) */
unsigned int dovewarden_queue_background_slots(unsigned int max_syncs);
/* The first time after now in the user's full sync slot (see the top of
   this file); 0 when interval is 0 */
time_t dovewarden_queue_full_sync_slot(const char *username,
				       unsigned int interval, time_t now);

/* What tells when a user's next sync runs (status output) */
struct dovewarden_queue_next_sync {
	/* a sync of the user runs now */
	bool syncing;
	/* when the queue has the user due (0 = not queued) */
	time_t due;
	/* not queued: pending changes, a forced full sync or a failure
	   wait for next_try; otherwise the next full sync is an interval
	   after the last one */
	bool waiting;
	time_t next_try;
	time_t last_full_sync;
};
/* Seconds until the user's next sync: 0 when it is due or runs now, -1
   when never (or at a slot that only the queue knows) */
long long
dovewarden_queue_next_sync_secs(const struct dovewarden_queue_next_sync *next,
				unsigned int full_sync_interval_secs,
				time_t now);

/* The result of a doveadm-server status line: "+" is OK; "-CHANGED"
   CHANGED; "-NOUSER" (and 2.3's "-NOREPLICATE") NOUSER; "-USAGE",
   "-NOPERM" and "-REFERRAL" CONFIG; any other line (also "-NOTFOUND",
   which dsync answers when a mailbox is deleted during the sync), and NULL
   (the connection closed before a status line), TEMPFAIL. 2.3 has no
   "-CHANGED": its "-UNKNOWN" is CHANGED after an incremental sync
   (full_sync FALSE) and TEMPFAIL after a full one. */
enum dovewarden_sync_result
dovewarden_sync_result_from_reply(const char *line, bool full_sync);
const char *dovewarden_sync_result_to_str(enum dovewarden_sync_result result);

/* The back-off before the retry of a user whose last failures syncs in a
   row failed: retry_min_secs * 2^(failures-1), at most retry_max_secs
   (config: always retry_max_secs). Without the jitter. */
unsigned int
dovewarden_queue_retry_secs(const struct dovewarden_queue_settings *set,
			    unsigned int failures, bool config);
/* The jitter added to a back-off of secs: up to a quarter, at random */
unsigned int dovewarden_queue_retry_jitter(unsigned int secs);
/* The wait before the retry of a user whose last changed syncs in a row
   ended with CHANGED: DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS, and when no
   new change was notified during the sync (busy is FALSE), doubled for
   each one past DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT, at most
   DOVEWARDEN_QUEUE_CHANGED_RETRY_MAX_SECS or retry_max_secs, whichever is
   shorter (but not shorter than the CHANGED retry). Then the full
   syncs answer CHANGED with nothing changing: dsync keeps finding a
   conflict of its own, and a full sync of a big mailbox every few
   seconds for hours would cost more than it brings. A user whose clients
   keep changing it is retried soon: its syncs carry their changes. */
unsigned int
dovewarden_queue_changed_retry_secs(const struct dovewarden_queue_settings *set,
				    unsigned int changed, bool busy);

#endif
