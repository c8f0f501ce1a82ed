/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_REPLICATOR_H
#define DOVEWARDEN_REPLICATOR_H

#include "array.h"
#include "dovewarden-queue.h"

struct dovewarden_settings;

/* The scheduler: owns the queue, pops due users, looks up their replica
   and runs at most dovewarden_max_syncs syncs through doveadm-server at
   once, one per user. */

/* How long userdb lookups may take and how long their results are used */
#define DOVEWARDEN_REPLICATOR_USERDB_TIMEOUT_MSECS (3 * 1000)
#define DOVEWARDEN_REPLICATOR_USERDB_CACHE_SECS 60
/* A failure with the same reason as the previous one is logged only
   every this many times */
#define DOVEWARDEN_REPLICATOR_FAILURE_LOG_INTERVAL 10
/* A user forgotten because of NOUSER comes back with its next
   notification or userdb sweep; its next NOUSER within this long is
   logged only at debug level. At most ..._NOUSER_LOG_MAX_USERS are
   remembered (then all are forgotten). */
#define DOVEWARDEN_REPLICATOR_NOUSER_LOG_SECS (24 * 60 * 60)
#define DOVEWARDEN_REPLICATOR_NOUSER_LOG_MAX_USERS 10000

/* Called when a sync of the user that began after the wait was
   registered has finished (success=TRUE only for a successful sync; a
   sync that ends with CHANGED or a temporary failure is not an answer,
   its re-run is), or with success=FALSE and a reason when the sync
   failed for good (user unknown, configuration), the user is dropped,
   the wait times out or the service shuts down. */
typedef void dovewarden_replicator_wait_callback_t(bool success,
						   const char *reason,
						   void *context);

/* A user's settle full sync runs at most this long after the first
   change it covers, also while changes keep coming (see
   dovewarden-queue.h; dovewarden_settle_delay sets the normal delay) */
#define DOVEWARDEN_REPLICATOR_SETTLE_MAX_SECS (5 * 60)

/* How often the queue state is saved (the journal covers the time
   between) */
#ifndef DOVEWARDEN_REPLICATOR_SAVE_INTERVAL_SECS
#  define DOVEWARDEN_REPLICATOR_SAVE_INTERVAL_SECS (5 * 60)
#endif
/* A failed userdb sweep is retried after this long (or after
   dovewarden_userdb_sweep_interval, if that is shorter) */
#define DOVEWARDEN_REPLICATOR_SWEEP_RETRY_SECS (60 * 60)

/* set must stay valid until deinit. base_dir resolves the relative
   socket paths in set. The queue state is loaded from state_path (and its
   journal), saved there periodically and at deinit; NULL keeps it in
   memory only. A state file that can't be read is fatal. Every known
   user gets a full sync at least every dovewarden_full_sync_interval.
   Unless dovewarden_userdb_sweep_interval is 0, a userdb sweep (see
   dovewarden-sweep.h) of all users starts from the ioloop right away,
   and again that long after each sweep ended. */
struct dovewarden_replicator *
dovewarden_replicator_init(const struct dovewarden_settings *set,
			   const char *base_dir, const char *state_path,
			   struct event *event_parent);
/* Aborts the running syncs (their users keep their old state and are
   synced again soon after a restart), calls the pending wait callbacks
   with success=FALSE and saves the queue state. */
void dovewarden_replicator_deinit(struct dovewarden_replicator **replicator);

/* Queue a change of the user's mail. The username must be valid
   (dovewarden_username_is_valid()). */
void dovewarden_replicator_notify(struct dovewarden_replicator *replicator,
				  const char *username,
				  enum dovewarden_priority priority);

/* An admin asked for a full sync of the user (made known if it is not):
   the next sync of it sends -f. Journaled like notify, so a restart
   right after it loses nothing. The username must be valid. */
void
dovewarden_replicator_force_full_sync(struct dovewarden_replicator *replicator,
				      const char *username,
				      enum dovewarden_priority priority);

/* Like notify with DOVEWARDEN_PRIORITY_SYNC, and call the callback once
   a sync that starts after now has finished, or when timeout_msecs has
   passed (success=FALSE). Returns a handle for
   dovewarden_replicator_wait_cancel(). */
struct dovewarden_replicator_wait *
dovewarden_replicator_wait(struct dovewarden_replicator *replicator,
			   const char *username, unsigned int timeout_msecs,
			   dovewarden_replicator_wait_callback_t *callback,
			   void *context);
/* Forget a wait without calling its callback. */
void
dovewarden_replicator_wait_cancel(struct dovewarden_replicator_wait **wait);

/* Make the user known (its first full sync at its slot). Returns TRUE
   when it was not known before (always with Redis, which is not asked).
   The username must be valid. */
bool dovewarden_replicator_add_user(struct dovewarden_replicator *replicator,
				    const char *username);
/* The Redis queue when dovewarden_queue_backend=redis, else NULL (then
   dovewarden_replicator_get_queue() has the users) */
struct dovewarden_redis_queue *
dovewarden_replicator_get_redis_queue(struct dovewarden_replicator *replicator);
/* Add this instance's running syncs' users to users (valid until the
   ioloop runs) */
ARRAY_DEFINE_TYPE(dovewarden_user_p, struct dovewarden_user *);
void dovewarden_replicator_get_syncing_users(
	struct dovewarden_replicator *replicator,
	ARRAY_TYPE(dovewarden_user_p) *users);

/* The queue, for status output and admin changes, and the settings it
   was created with. Both stay valid until deinit. */
struct dovewarden_queue *
dovewarden_replicator_get_queue(struct dovewarden_replicator *replicator);
const struct dovewarden_queue_settings *
dovewarden_replicator_get_queue_settings(
	struct dovewarden_replicator *replicator);
/* Someone else changed the queue: start the syncs that are due soon (from
   the ioloop, not from within this call). */
void
dovewarden_replicator_queue_changed(struct dovewarden_replicator *replicator);

/* Number of running syncs */
unsigned int
dovewarden_replicator_get_running_count(
	struct dovewarden_replicator *replicator);
/* What the running sync of the user is doing (a static string), or NULL
   when the replicator runs no sync for it. */
const char *
dovewarden_replicator_get_sync_state(struct dovewarden_replicator *replicator,
				     const struct dovewarden_user *user);

#endif
