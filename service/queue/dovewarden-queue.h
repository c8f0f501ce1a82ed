/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_QUEUE_H
#define DOVEWARDEN_QUEUE_H

#include "priorityq.h"
#include "dovewarden-queue-rules.h"

/* The replication queue: every known user, ordered by when a sync of it is
   due. Pure logic: it does no I/O and never reads the clock; every call
   that depends on time takes "now". A user is either idle (nothing to do
   until its next full sync), queued (in the priority queue) or syncing
   (popped; not in the priority queue until dovewarden_queue_sync_finished()).

   Ordering: a user with pending changes is due at once, unless it is in
   failure back-off. Among due users, higher priority goes first, but a
   lower priority change gains a head start the longer it waits, so no
   priority starves: the sort key is last_update minus a per-priority
   boost (see DOVEWARDEN_QUEUE_*_BOOST_SECS).

   In detail, a queued user is either waiting (not yet due: in failure
   back-off, or an idle user before its next full sync) or ready (due).
   Waiting users are ordered by due time; once due (checked by
   dovewarden_queue_pop()), a user moves to the ready users, which are
   ordered by sort key alone:

     - pending changes: the smallest "time of change minus its priority's
       boost" among the changes merged since the last sync started (so a
       repeated or raised notification never moves a user backwards, and
       a failed sync keeps the key of the changes it did not replicate)
     - idle user due for its periodic full sync: the time it became due
       (no boost)

   A user with pending changes is due at once, or at next_try while in
   failure back-off. An idle user is due at its next full sync:
   last_full_sync + full_sync_interval_secs, or, if it was never fully
   synced (however it became known) or restore() found its full sync
   overdue, at its slot: the first time after it became known (or was
   restored) whose phase within the interval matches a hash of its
   username. Slots spread users evenly over the interval and stay the
   same across restarts. Whatever makes it run, the first sync of a user
   that was never fully synced is a full one (dsync without -f does not
   merge mailboxes created on both sides independently); an idle user
   runs it at its slot, a user with a change at once. With
   full_sync_interval_secs = 0 idle users are never due, and no sync is
   a full one unless forced.

   Settling (settle_delay_secs > 0): incremental syncs alone do not
   always converge (dsync can leave flag differences behind when both
   servers change a user at once, and its saved state then hides them),
   so a user whose mail changed gets one full sync once it has been
   quiet: notify() with a priority above NONE records the change
   (settle_first_change, settle_last_change), and the user is due for
   its settle at settle_last_change + settle_delay_secs, or at
   settle_first_change + settle_max_secs if changes keep coming. A
   change restarts the delay. An idle user waits for its settle like
   for a periodic full sync, and sorts like one (by due time, without a
   boost), so it goes after every interactive change made within the
   last DOVEWARDEN_QUEUE_LOW_BOOST_SECS. When a sync is popped while
   the settle is due, it is a full one. Any full sync that succeeds and
   saw no new change while it ran ends the settle (so no settle runs
   when a full sync already ran after the last change); one that saw a
   change keeps it pending, counting the delay anew from that change. A
   full sync that repaired a difference (the caller set last_repaired to
   its start) starts a new settle instead, so another full sync follows
   after the delay (at most DOVEWARDEN_QUEUE_REPAIR_SETTLE_MAX in a row):
   dsync does not always repair everything in one pass. */

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
	   (last_fast_sync >= last_full_sync). A change made before
	   last_successful_sync has been replicated. */
	time_t last_fast_sync, last_full_sync, last_successful_sync;
	/* Not before this: failure back-off (0 = no back-off) */
	time_t next_try;
	unsigned int consecutive_failures;
	/* Syncs in a row that ended with CHANGED (not persisted) */
	unsigned int consecutive_changed;
	/* Full syncs in a row that repaired a difference since the last
	   change (not persisted) */
	unsigned int consecutive_repairs;
	/* Reason of the last failure, NULL after a success */
	char *last_error;
	/* Changes not covered by a full sync yet, for the settle: the first
	   and the last one (0 = none) */
	time_t settle_first_change, settle_last_change;
	/* When the last successful full sync started (the user's mail was
	   verified to be the same on both servers), and when the last one
	   started that found and repaired a difference (0 = never). The
	   queue sets last_verified; the caller sets last_repaired (see
	   dovewarden_queue_sync_finished()). */
	time_t last_verified, last_repaired;
	/* The settle rule's evidence (see dovewarden_queue_settle_kind):
	   when a client change and a change made by dsync (an import) were
	   last reported (0 = never; not persisted) */
	time_t last_client_change, last_import;

	/* While syncing: the pending priority the sync was started for
	   (NONE for a periodic full sync) */
	enum dovewarden_priority syncing_priority;

	/* Popped by dovewarden_queue_pop(), sync running */
	bool syncing:1;
	/* The running sync is a full sync */
	bool syncing_full:1;
	/* The admin asked for a full sync, or a full sync failed: the next
	   sync sends -f */
	bool force_full_sync:1;
	/* The running sync is (also) the settle */
	bool syncing_settle:1;
	/* dsync changed the user on this server (an import) since its last
	   sync from here began: the saved state may be older than the
	   other server's last sync (see dovewarden_queue_take_state_stale());
	   the running sync started with such a state. Not persisted: a
	   restored user with a state has it. */
	bool state_stale:1;
	bool syncing_state_stale:1;
	/* dovewarden_queue_take_state_stale() told the running sync to run
	   a follow-up */
	bool syncing_followup:1;

	/* private to the queue */
	struct dovewarden_user *prev, *next;
	/* Sort key of the pending changes (see the top of this file) */
	time_t pending_key;
	/* The user's position, fixed while it is queued */
	time_t queue_due, queue_key;
	/* Scheduled full sync that replaces last_full_sync + interval: the
	   user's slot (see the top of this file) while it was never fully
	   synced or after restore() found it overdue (0 = none) */
	time_t first_full_sync;
	/* pending_key when the running sync was popped */
	time_t syncing_pending_key;
	/* Time of the oldest change not replicated yet (0 = none), and of
	   the changes the running sync started with; the user's place in
	   the queue's pending age heap */
	time_t pending_since, syncing_pending_since, pending_age_key;
	struct priorityq_item pending_age_item;
	bool pending_age_queued:1;
	/* A change arrived while the user was syncing */
	bool settle_changed_while_syncing:1;
	/* A client change (DOVEWARDEN_QUEUE_SETTLE_CLIENT) waits for its
	   sync; the running sync carries one */
	bool client_change_pending:1;
	bool syncing_client_change:1;
	bool queued:1;
	bool queued_ready:1;
	bool removed:1;
};

struct dovewarden_queue *
dovewarden_queue_init(const struct dovewarden_queue_settings *set);
/* Frees all users, including syncing and removed-while-syncing ones.
   Pointers to them become invalid. */
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
/* Like notify, with the kind of change for the settle rule (notify():
   DOVEWARDEN_QUEUE_SETTLE_ALWAYS). A client change arms the settle only
   if an import was reported within the settle delay, an import only if a
   client change was (or is not replicated yet). An import with NONE
   priority changes nothing else; one with LOW queues a sync like any
   other change. */
struct dovewarden_user *
dovewarden_queue_notify_kind(struct dovewarden_queue *queue,
			     const char *username,
			     enum dovewarden_priority priority,
			     enum dovewarden_queue_settle_kind kind,
			     time_t now);
/* Like notify with NONE: make the user known (its first full sync at its
   slot, like every new user). A known user is not changed. Returns the
   user. */
struct dovewarden_user *
dovewarden_queue_add(struct dovewarden_queue *queue, const char *username,
		     time_t now);
/* Re-create a user from saved fields (see dovewarden-store.h): the
   username must not be known yet. Copies priority, last_update,
   last_fast_sync, last_full_sync, last_successful_sync, next_try,
   consecutive_failures, force_full_sync, settle_first_change,
   settle_last_change, last_verified, last_repaired, state (NULL = "")
   and last_error (NULL or "" = none), keeps the counters right and
   queues the user as sync_finished() would: pending (sort key
   last_update minus its priority's boost) due at once or at next_try;
   idle at its settle or its next full sync, whichever is first (the
   latter at its slot if it never had one or that is overdue already,
   so a restart after a long downtime does not run every overdue full
   sync before the new changes).
   force_full_sync with priority NONE is queued at LOW. Other fields of
   *fields are ignored; its strings are copied. Returns the user. */
struct dovewarden_user *
dovewarden_queue_restore(struct dovewarden_queue *queue,
			 const struct dovewarden_user *fields, time_t now);
/* Ask for a full sync of the user as soon as possible (at priority), also
   when it is in failure back-off (next_try is reset). */
void dovewarden_queue_force_full_sync(struct dovewarden_queue *queue,
				      struct dovewarden_user *user,
				      enum dovewarden_priority priority,
				      time_t now);
/* Forget the user. If it is syncing, it is freed when the sync
   finishes (the pointer stays valid until the caller's
   dovewarden_queue_sync_finished() for it, which then only frees it);
   otherwise it is freed at once. Apart from that, the caller must not
   touch it after this call. A later notify of the same username creates
   a new user. */
void dovewarden_queue_remove(struct dovewarden_queue *queue,
			     struct dovewarden_user *user);

/* Return the user whose sync is due first at now, or NULL. The user is
   marked syncing and leaves the priority queue; its pending priority is
   reset to NONE, and syncing_full tells whether this sync must be a full
   one (force_full_sync was set, or its next full sync or its settle is
   due; syncing_settle tells the latter). pop sets
   last_fast_sync (and for a full sync last_full_sync) to now and clears
   force_full_sync; a full sync that does not end with OK sets
   force_full_sync again, so the retry is full too. The caller must call
   dovewarden_queue_sync_finished() for it. */
struct dovewarden_user *
dovewarden_queue_pop(struct dovewarden_queue *queue, time_t now);
/* When the user's next sync is due as the queue has it scheduled (a time
   in the past: due now), or 0 when the user is not queued (syncing, or
   idle with full syncs off). */
time_t dovewarden_queue_user_get_next_sync(const struct dovewarden_user *user);
/* Return the user that dovewarden_queue_pop() would return at now,
   without popping it, or NULL. */
const struct dovewarden_user *
dovewarden_queue_peek(struct dovewarden_queue *queue, time_t now);
/* When the next queued user becomes due; 0 when nothing is queued.
   The value may be in the past: then a user is due now. */
time_t dovewarden_queue_next_due(struct dovewarden_queue *queue);
/* Finish the sync that dovewarden_queue_pop() started. new_state is used
   only on OK (NULL or "" keeps the old state); error is stored as
   last_error on failures. Re-queues the user as the result asks:

     OK       success; queued again only if a change arrived meanwhile
              (or a settle is pending). After a full sync, last_verified
              is set to its start (last_full_sync); a caller that found
              the full sync changed something sets user->last_repaired
              before this call.
     CHANGED  not a failure: the changes the sync started with (at least
              LOW) are due again after DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS
     TEMPFAIL consecutive_failures++, next_try = now + back-off; the
              unreplicated changes (at least LOW) stay pending
     CONFIG   like TEMPFAIL, but the back-off is retry_max_secs (plus
              jitter)
     NOUSER   the user is removed and freed

   The user must not be used after NOUSER, nor after any result when it
   was removed during the sync (it is freed then). */
void dovewarden_queue_sync_finished(struct dovewarden_queue *queue,
				    struct dovewarden_user *user,
				    enum dovewarden_sync_result result,
				    const char *new_state, const char *error,
				    time_t now);
/* Whether the running sync of the user started with a stale state (see
   state_stale) or an import arrived since it started, and forget both:
   the caller runs a second incremental sync with the state the first
   one returned. dsync with a state older than the other server's last
   sync does not carry this server's changes to the messages that sync
   brought here (e.g. a flag set on mail the other server delivered);
   the next incremental sync, with the state that sync returned, carries
   them. Imports from now on count for the next sync. */
bool dovewarden_queue_take_state_stale(struct dovewarden_user *user);

/* End the failure back-off of user (NULL: of every user in back-off):
   it is due at once with its pending changes, and a failure puts it back
   where its back-off was. For when the replica is reachable again after
   an outage. Returns how many users were waiting in back-off; callback,
   if not NULL, is called for each of them after its change (it must not
   change the queue). */
typedef void dovewarden_queue_user_callback_t(struct dovewarden_user *user,
					      void *context);
unsigned int dovewarden_queue_retry_failed(struct dovewarden_queue *queue,
					   struct dovewarden_user *user,
					   time_t now,
					   dovewarden_queue_user_callback_t *callback,
					   void *context);

/* Re-position a user after the caller changed its fields directly (for
   example restored priority, last_full_sync or next_try from a saved
   state). Queued users keep their position until this is called. No-op
   for a syncing user. */
void dovewarden_queue_requeue(struct dovewarden_queue *queue,
			      struct dovewarden_user *user, time_t now);

/* Counts for status output. users, syncing, pending and failed are kept
   up to date as users change; full_sync_due and failed_waiting depend on
   now and are counted over all users (O(n)). */
struct dovewarden_queue_stats {
	unsigned int users;
	unsigned int syncing;
	/* pending (or syncing with pending changes) by priority */
	unsigned int pending[DOVEWARDEN_PRIORITY_COUNT];
	/* users whose last sync failed (consecutive_failures > 0): in
	   failure back-off or due for their retry */
	unsigned int failed;
	/* of failed: those still waiting for their retry (in back-off) */
	unsigned int failed_waiting;
	/* idle users whose periodic full sync is due now (a backlog) */
	unsigned int full_sync_due;
};
void dovewarden_queue_get_stats(struct dovewarden_queue *queue, time_t now,
				struct dovewarden_queue_stats *stats_r);

/* Like dovewarden_queue_get_stats(), but only the fields kept up to date
   (users, syncing, pending, failed) in O(1); the others are 0. */
void dovewarden_queue_get_counts(struct dovewarden_queue *queue,
				 struct dovewarden_queue_stats *stats_r);
/* When the oldest change that is not replicated yet was made (a change
   is replicated once a sync that started after it succeeded), or 0 when
   there is none; O(1). A user restored from saved state counts its
   pending changes from their last_update. */
time_t dovewarden_queue_get_oldest_pending(struct dovewarden_queue *queue);

/* Iterate all known users, in no particular order (users removed while
   syncing are no longer known). The queue may change between the calls
   (the iteration may span ioloop runs): a user removed meanwhile is not
   returned any more, one added meanwhile may or may not be. A returned
   user pointer is valid only until the queue changes. The iteration must
   be deinitialized before dovewarden_queue_deinit(). */
struct dovewarden_queue_iter *
dovewarden_queue_iter_init(struct dovewarden_queue *queue);
/* Iterate only the syncing users (syncing set, not removed), in no
   particular order, in O(syncing users). Unlike the iteration of all
   users, the queue must not be changed during it. */
struct dovewarden_queue_iter *
dovewarden_queue_iter_init_syncing(struct dovewarden_queue *queue);
struct dovewarden_user *
dovewarden_queue_iter_next(struct dovewarden_queue_iter *iter);
void dovewarden_queue_iter_deinit(struct dovewarden_queue_iter **iter);

struct dovewarden_admin_user_status;
/* Fill a user's status line (see dovewarden-admin-protocol.h) from the
   queue's view of it. The strings point into user. The next sync is the
   queue's schedule (dovewarden_queue_user_get_next_sync()); for a user
   that is not in a queue it is computed from its fields and
   full_sync_interval_secs (the queue's setting). */
void
dovewarden_queue_user_status_init(struct dovewarden_admin_user_status *status_r,
				  const struct dovewarden_user *user,
				  unsigned int full_sync_interval_secs,
				  time_t now);

#endif
