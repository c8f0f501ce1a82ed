/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_REPLICATOR_H
#define DOVEWARDEN_REPLICATOR_H

#include "array.h"
#include "dovewarden-queue-backend.h"

struct dovewarden_settings;
struct dovewarden_admin_dsync_status;

/* The scheduler: claims due users from the queue backend, looks up their
   replica and runs at most dovewarden_max_syncs syncs through
   doveadm-server at once, one per user, a quarter of the slots kept for
   interactive changes. A full sync of a user that was synced before is
   followed by a verification pass that tells whether it repaired a
   difference; a settle that also carried new changes, which no pass can
   verify, by another settle once the user is quiet. */

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

/* set and queue must stay valid until deinit. base_dir resolves the
   relative socket paths in set. orphans_path is the record of started
   dsyncs (see dovewarden-orphans.h), NULL for none. */
struct dovewarden_replicator *
dovewarden_replicator_init(const struct dovewarden_settings *set,
			   const char *base_dir, const char *orphans_path,
			   struct dovewarden_queue_backend *queue,
			   struct event *event_parent);
/* Aborts the running syncs and gives their jobs back to the queue (their
   users are synced again soon after a restart). */
void dovewarden_replicator_deinit(struct dovewarden_replicator **replicator);

/* Queue a change of the user's mail (see
   dovewarden_queue_backend_notify()) and start its sync if it is due. */
void dovewarden_replicator_notify(struct dovewarden_replicator *replicator,
				  const char *username,
				  enum dovewarden_priority priority,
				  enum dovewarden_queue_notify_flags flags);
/* Someone else changed the queue: start the syncs that are due (from the
   ioloop, not from within this call). */
void
dovewarden_replicator_queue_changed(struct dovewarden_replicator *replicator);

/* Number of running syncs */
unsigned int
dovewarden_replicator_get_running_count(
	struct dovewarden_replicator *replicator);
/* Add a line per running sync, sorted by username; the strings are
   allocated from the data stack. */
ARRAY_DEFINE_TYPE(dovewarden_admin_dsync_status,
		  struct dovewarden_admin_dsync_status);
void dovewarden_replicator_get_dsync_status(
	struct dovewarden_replicator *replicator,
	ARRAY_TYPE(dovewarden_admin_dsync_status) *statuses);

#endif
