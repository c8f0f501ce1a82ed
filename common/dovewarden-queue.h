/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_QUEUE_H
#define DOVEWARDEN_QUEUE_H

#include "priorityq.h"
#include "dovewarden-protocol.h"

/* The replication queue: every known user, ordered by when a sync of it is
   due. Pure logic: it does no I/O and never reads the clock; every call
   that depends on time takes "now". A user is either idle (nothing to do
   until its next full sync), queued (in the priority queue) or syncing
   (popped; not in the priority queue until dovewarden_queue_sync_finished()).

   Ordering: a user with pending changes is due at once, unless it is in
   failure back-off. Among due users, higher priority goes first, but a
   lower priority change gains a head start the longer it waits, so no
   priority starves: the sort key is last_update minus a per-priority
   boost (see DOVEWARDEN_QUEUE_*_BOOST_SECS). */

/* How much earlier than its real time a change of this priority sorts */
#define DOVEWARDEN_QUEUE_SYNC_BOOST_SECS (45 * 60)
#define DOVEWARDEN_QUEUE_HIGH_BOOST_SECS (30 * 60)
#define DOVEWARDEN_QUEUE_LOW_BOOST_SECS (15 * 60)

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
	/* configuration error (USAGE, NOTFOUND, no replica, ...): retry only
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
};

struct dovewarden_user {
	/* private to the queue */
	struct priorityq_item item;

	/* Owned by the queue; valid until the user is removed */
	char *username;
	/* Last dsync state, "" when unknown (dsync then does a normal
	   sync). Replaced only by a successful sync. */
	char *state;
	/* Pending change: NONE when there is nothing to replicate. While
	   the user is syncing, a change that arrives raises it again, and
	   dovewarden_queue_sync_finished() queues one more sync. */
	enum dovewarden_priority priority;
	/* When the pending priority was last raised */
	time_t last_update;
	/* When a sync (of any kind) / full sync / successful sync started
	   (last_fast_sync >= last_full_sync) */
	time_t last_fast_sync, last_full_sync, last_successful_sync;
	/* Not before this: failure back-off (0 = no back-off) */
	time_t next_try;
	unsigned int consecutive_failures;
	/* Reason of the last failure, NULL after a success */
	char *last_error;

	/* Popped by dovewarden_queue_pop(), sync running */
	bool syncing:1;
	/* The running sync is a full sync */
	bool syncing_full:1;
	/* The admin asked for a full sync: the next sync sends -f */
	bool force_full_sync:1;
};

struct dovewarden_queue *
dovewarden_queue_init(const struct dovewarden_queue_settings *set);
/* Frees all users. Pointers to them become invalid. */
void dovewarden_queue_deinit(struct dovewarden_queue **queue);

/* Returns the user or NULL when unknown. */
struct dovewarden_user *
dovewarden_queue_lookup(struct dovewarden_queue *queue, const char *username);
/* Record a change of the user's mail (creating the user if unknown) and
   raise its pending priority. A change for a queued user only moves it
   forward; one for a syncing user makes it sync once more afterwards.
   Returns the user. */
struct dovewarden_user *
dovewarden_queue_notify(struct dovewarden_queue *queue, const char *username,
			enum dovewarden_priority priority, time_t now);
/* Like notify with NONE: make the user known, with its first full sync
   spread over the full sync interval. Returns the user. */
struct dovewarden_user *
dovewarden_queue_add(struct dovewarden_queue *queue, const char *username,
		     time_t now);
/* Ask for a full sync of the user as soon as possible (at priority). */
void dovewarden_queue_force_full_sync(struct dovewarden_queue *queue,
				      struct dovewarden_user *user,
				      enum dovewarden_priority priority,
				      time_t now);
/* Forget the user. If it is syncing, it is freed when the sync
   finishes; the caller must not touch it after this call. */
void dovewarden_queue_remove(struct dovewarden_queue *queue,
			     struct dovewarden_user *user);

/* Return the user whose sync is due first at now, or NULL. The user is
   marked syncing and leaves the priority queue; its pending priority is
   reset to NONE, and syncing_full tells whether this sync must be a full
   one. The caller must call dovewarden_queue_sync_finished() for it. */
struct dovewarden_user *
dovewarden_queue_pop(struct dovewarden_queue *queue, time_t now);
/* When the next queued user becomes due; 0 when nothing is queued.
   The value may be in the past: then a user is due now. */
time_t dovewarden_queue_next_due(struct dovewarden_queue *queue);
/* Finish the sync that dovewarden_queue_pop() started. new_state is used
   only on OK (NULL or "" keeps the old state); error is stored as
   last_error on failures. Re-queues the user as the result asks. */
void dovewarden_queue_sync_finished(struct dovewarden_queue *queue,
				    struct dovewarden_user *user,
				    enum dovewarden_sync_result result,
				    const char *new_state, const char *error,
				    time_t now);

/* Counts for status output */
struct dovewarden_queue_stats {
	unsigned int users;
	unsigned int syncing;
	/* pending (or syncing with pending changes) by priority */
	unsigned int pending[DOVEWARDEN_PRIORITY_COUNT];
	/* users in failure back-off */
	unsigned int failed;
};
void dovewarden_queue_get_stats(struct dovewarden_queue *queue, time_t now,
				struct dovewarden_queue_stats *stats_r);

/* Iterate all known users, in no particular order. The queue must not be
   changed during the iteration. */
struct dovewarden_queue_iter *
dovewarden_queue_iter_init(struct dovewarden_queue *queue);
struct dovewarden_user *
dovewarden_queue_iter_next(struct dovewarden_queue_iter *iter);
void dovewarden_queue_iter_deinit(struct dovewarden_queue_iter **iter);

/* The result of a doveadm-server status line ("+", "-NOUSER", ...) */
enum dovewarden_sync_result dovewarden_sync_result_from_reply(const char *line);
const char *dovewarden_sync_result_to_str(enum dovewarden_sync_result result);

#endif
