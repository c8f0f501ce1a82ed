/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_QUEUE_BACKEND_H
#define DOVEWARDEN_QUEUE_BACKEND_H

#include "array.h"
#include "dovewarden-queue-rules.h"

struct dovewarden_settings;
struct dovewarden_admin_user_status;

/* The replication queue as the service sees it, whichever backend keeps
   it (dovewarden_queue_backend = builtin | redis): every known user, its
   pending changes, its dsync state and its schedule, following the rules
   of dovewarden-queue-rules.h. The scheduler claims due users as jobs,
   runs their syncs and finishes the jobs with the results; mail
   processes, the HTTP input and the admin notify changes; the admin and
   the metrics read what the queue holds. Nothing above this interface
   knows which backend runs.

   A backend is a driver (struct dovewarden_queue_backend_vfuncs in
   dovewarden-queue-backend-private.h), registered by name, in the style
   of Dovecot's dict and fs drivers.

   Calls that take a callback call it exactly once, also when the backend
   can't do the work now (e.g. Redis is not connected: then with an
   error). The callback may be called before the function returns (the
   built-in queue answers at once) or later from the ioloop; callers must
   be ready for both. Calls without a callback never fail: what a backend
   can't record now it keeps and records later. */

struct dovewarden_queue_backend_settings {
	/* The service's settings (the backend picks its own, e.g.
	   dovewarden_redis_*); valid until deinit */
	const struct dovewarden_settings *set;
	/* The rules' parameters */
	struct dovewarden_queue_settings queue;
	/* The built-in queue's state file: the built-in backend loads and
	   saves it; the Redis backend imports it once if it exists. NULL:
	   none (the built-in queue is then kept in memory only). */
	const char *state_path;
	/* Dovecot 2.3's replicator.db (see dovewarden-replicator-db.h): it
	   is imported once when there is no state at state_path yet, then
	   renamed to <path>.imported. NULL: none. */
	const char *replicator_db_path;
	/* This Dovecot server's name (its host name): dsync states are kept
	   per server */
	const char *server;
};

struct dovewarden_queue_backend_callbacks {
	/* Work may be due that no notify() or finish() of this process
	   announced (e.g. the Redis connection is back): pop again. May be
	   NULL. */
	void (*ready)(void *context);
	/* A sync of the user finished with result (error: its reason, NULL
	   if none), on this instance or, with a shared backend, another
	   one. seq is the job's sequence number (see
	   dovewarden_queue_backend_notify_wait()). May be NULL. */
	void (*sync_done)(const char *username, uint64_t seq,
			  enum dovewarden_sync_result result,
			  const char *error, void *context);
};

/* A claimed sync of a user. The caller only reads it (but no_dsync); the
   backend owns it until dovewarden_queue_backend_finish() or _release(). */
struct dovewarden_queue_job {
	struct dovewarden_queue_backend *backend;
	const char *username;
	/* The user's dsync state for syncs from this server, "" if none */
	const char *state;
	/* The pending priority the sync was claimed for; NONE for
	   background work (a periodic or settle full sync) */
	enum dovewarden_priority priority;
	/* Its sequence number: the job started after every change recorded
	   before a notify_wait() answered with a smaller one */
	uint64_t seq;
	/* Failures in a row before this sync, and the last one's reason
	   ("" if none) */
	unsigned int consecutive_failures;
	const char *last_error;
	/* The sync must be a full one (dsync -f) */
	bool full:1;
	/* It is (also) the user's settle full sync */
	bool settle:1;
	/* Set by the caller before finishing it: no dsync ran (the sync
	   was held, or failed before its dsync), so it changed nothing */
	bool no_dsync:1;
};

enum dovewarden_queue_notify_flags {
	/* Ask for a full sync (the next sync sends -f), also during
	   failure back-off */
	DOVEWARDEN_QUEUE_NOTIFY_FLAG_FULL_SYNC = 0x01,
	/* Not a change made on this server (an admin's request): with a
	   shared queue, an instance of any server may sync it. Without it,
	   only this server's instances sync it incrementally (a sync sees
	   only the changes of the side it runs from). */
	DOVEWARDEN_QUEUE_NOTIFY_FLAG_ANY_SERVER = 0x02,
	/* A change made by a client of this server, reported by a mail
	   plugin that also reports dsync's changes (IMPORT): the user's
	   settle full sync runs only if it changed on two servers at about
	   the same time (dovewarden_queue_settle_concurrent()). Without it
	   (event input, admins, older plugins) every change is settled. */
	DOVEWARDEN_QUEUE_NOTIFY_FLAG_CLIENT = 0x04,
	/* dsync changed the user on this server, importing changes made on
	   another one. Priority NONE: nothing to sync, the change is only
	   evidence for the settle rule; LOW: a mailbox list change that a
	   sync from this server must follow. */
	DOVEWARDEN_QUEUE_NOTIFY_FLAG_IMPORT = 0x08,
};

/* How the flags' change counts for the settle rule */
static inline enum dovewarden_queue_settle_kind
dovewarden_queue_notify_settle_kind(enum dovewarden_queue_notify_flags flags)
{
	if ((flags & DOVEWARDEN_QUEUE_NOTIFY_FLAG_IMPORT) != 0)
		return DOVEWARDEN_QUEUE_SETTLE_IMPORT;
	if ((flags & DOVEWARDEN_QUEUE_NOTIFY_FLAG_CLIENT) != 0)
		return DOVEWARDEN_QUEUE_SETTLE_CLIENT;
	return DOVEWARDEN_QUEUE_SETTLE_ALWAYS;
}

/* Counts over the whole queue */
struct dovewarden_queue_counts {
	unsigned int users;
	/* claimed users (with a shared backend: by any instance) */
	unsigned int syncing;
	/* users with pending changes (also those in back-off), by
	   priority; NONE is unused */
	unsigned int pending[DOVEWARDEN_PRIORITY_COUNT];
	/* users whose last sync failed */
	unsigned int failed;
	/* Only from dovewarden_queue_backend_read_counts(), where the
	   backend can count them (else 0): of failed, those still in
	   back-off; idle users whose periodic full sync is due now */
	unsigned int failed_waiting;
	unsigned int full_sync_due;
	/* The oldest change not replicated yet, 0 if none */
	time_t oldest_pending;
	/* The newest successful sync the backend knows of, 0 if none */
	time_t last_successful_sync;
};

/* A backend-specific gauge for /metrics */
struct dovewarden_queue_metric {
	/* Prometheus name, help text and type ("gauge" or "counter") */
	const char *name, *help, *type;
	uint64_t value;
};
ARRAY_DEFINE_TYPE(dovewarden_queue_metric, struct dovewarden_queue_metric);

typedef void
dovewarden_queue_backend_wait_callback_t(bool success, uint64_t seq,
					 void *context);
typedef void
dovewarden_queue_backend_pop_callback_t(struct dovewarden_queue_job *job,
					int retry_msecs, const char *error,
					void *context);
typedef void
dovewarden_queue_backend_remove_callback_t(int ret, const char *error,
					   void *context);
typedef void
dovewarden_queue_backend_lock_callback_t(bool acquired, const char *error,
					 void *context);
typedef void
dovewarden_queue_backend_counts_callback_t(
	const struct dovewarden_queue_counts *counts, const char *error,
	void *context);

/* The backend that keeps the queue in the service (in memory when it has
   no state_path): dovewarden_queue_backend's default, and the idle
   service's whatever it is set to */
#define DOVEWARDEN_QUEUE_BACKEND_DEFAULT "builtin"

/* Register every backend by its name (queue_backends_dep in
   service/queue/meson.build), and unregister them after the last
   backend's deinit */
void dovewarden_queue_backends_register_all(void);
void dovewarden_queue_backends_unregister_all(void);

/* Create the backend of that name ("builtin", "redis"). Returns NULL with
   error_r if there is no such backend or it could not start (e.g. the
   built-in queue's state file can't be read). */
struct dovewarden_queue_backend *
dovewarden_queue_backend_init(const char *name,
			      const struct dovewarden_queue_backend_settings *set,
			      struct event *event_parent,
			      const struct dovewarden_queue_backend_callbacks *callbacks,
			      void *context, const char **error_r);
/* Every job must be finished or released before this. Writes what the
   backend still holds (the built-in queue saves its state; Redis writes
   its buffer). */
void dovewarden_queue_backend_deinit(struct dovewarden_queue_backend **backend);

const char *
dovewarden_queue_backend_get_name(struct dovewarden_queue_backend *backend);
/* Returns FALSE with a reason when the backend can't take or give work
   right now (notifications are kept meanwhile). */
bool dovewarden_queue_backend_is_ready(struct dovewarden_queue_backend *backend,
				       const char **reason_r);

/* Record a change of the user's mail at priority (NONE only makes the
   user known), creating the user if it is unknown. The username must be
   valid (dovewarden_username_is_valid()). */
void dovewarden_queue_backend_notify(struct dovewarden_queue_backend *backend,
				     const char *username,
				     enum dovewarden_priority priority,
				     enum dovewarden_queue_notify_flags flags);
/* Make the user known (its first full sync at its slot). Returns TRUE if
   it was not known, or if the backend can't tell at once. */
bool dovewarden_queue_backend_add(struct dovewarden_queue_backend *backend,
				  const char *username);
/* Like notify at SYNC priority; the callback gets the user's sequence
   number once the change is recorded: a sync_done() with a larger seq
   replicated it. success=FALSE: it could not be recorded now (it is kept
   like any notification, but no seq is known). */
void
dovewarden_queue_backend_notify_wait(struct dovewarden_queue_backend *backend,
				     const char *username,
				     enum dovewarden_queue_notify_flags flags,
				     dovewarden_queue_backend_wait_callback_t *callback,
				     void *context);
/* Forget the user; a running job of it is then lost (its finish changes
   nothing). The callback gets 1 when the user was known, 0 when not, -1
   with an error. */
void dovewarden_queue_backend_remove(struct dovewarden_queue_backend *backend,
				     const char *username,
				     dovewarden_queue_backend_remove_callback_t *callback,
				     void *context);

/* Claim the user whose sync is due first. With allow_background=FALSE
   background work (a user whose pending priority is at most
   DOVEWARDEN_QUEUE_BACKGROUND_MAX_PRIORITY: a low change, a periodic or
   settle full sync) is not claimed. The callback gets the job, or job=NULL and when to pop again
   (retry_msecs; -1: not before the ready callback, a notify or a
   finish), with error set when the backend failed. */
void dovewarden_queue_backend_pop(struct dovewarden_queue_backend *backend,
				  bool allow_background,
				  dovewarden_queue_backend_pop_callback_t *callback,
				  void *context);
/* TRUE when a change of the job's user arrived since it was claimed, or
   the user was removed (as far as the backend can tell at once). */
bool dovewarden_queue_backend_job_changed(struct dovewarden_queue_job *job);
/* TRUE when the job's user was removed since it was claimed (as far as
   the backend can tell at once). */
bool dovewarden_queue_backend_job_removed(struct dovewarden_queue_job *job);
/* TRUE when the job's incremental sync needs a second one with the state
   it returned: dsync changed the user on this server (another server's
   sync imported changes) since its state was saved, or while it ran
   (see dovewarden_queue_take_state_stale()). Asked once, after the
   first sync succeeded: it forgets what it answered. */
bool
dovewarden_queue_backend_job_take_state_stale(struct dovewarden_queue_job *job);
/* Finish the job with the sync's result (see dovewarden-queue-rules.h):
   new_state replaces the state on OK (NULL or "": keep it), error is the
   failure's reason, repaired tells that the full sync found the servers
   different. Frees the job. */
void dovewarden_queue_backend_finish(struct dovewarden_queue_job **job,
				     enum dovewarden_sync_result result,
				     const char *new_state, const char *error,
				     bool repaired);
/* Give the job back unfinished (the service is stopping): its changes
   are synced again soon, without back-off. Frees the job. */
void dovewarden_queue_backend_release(struct dovewarden_queue_job **job);

/* Take the named lock for secs seconds unless someone has it (with a
   shared backend only one instance gets it). The lock outlives the
   process that took it: a restarted service does not get it again before
   it expires (the built-in queue keeps it in a file beside its state;
   without a state file it always gives it). When the backend could not
   be asked (e.g. Redis did not answer) the callback gets an error and
   acquired=FALSE: whether someone has the lock is not known. */
void dovewarden_queue_backend_try_lock(struct dovewarden_queue_backend *backend,
				       const char *name, unsigned int secs,
				       dovewarden_queue_backend_lock_callback_t *callback,
				       void *context);
/* End the failure back-off of username (NULL: of every user in back-off)
   now: the replica answers again. The users are synced in their usual
   order, at most max_syncs at once. The callback, if not NULL, gets how
   many users were in back-off, or an error. */
typedef void
dovewarden_queue_backend_retry_callback_t(unsigned int count,
					  const char *error, void *context);
void dovewarden_queue_backend_retry_failed(struct dovewarden_queue_backend *backend,
					   const char *username,
					   dovewarden_queue_backend_retry_callback_t *callback,
					   void *context);
/* Let the named lock go before it expires (the job it guarded failed and
   should be tried again sooner). Failures are only logged. */
void dovewarden_queue_backend_unlock(struct dovewarden_queue_backend *backend,
				     const char *name);

/* The counts as the backend has them now, at most a second old; only the
   fields that are not documented as read_counts() only. */
void dovewarden_queue_backend_get_counts(struct dovewarden_queue_backend *backend,
					 struct dovewarden_queue_counts *counts_r);
/* Count everything now (may walk every user). */
void
dovewarden_queue_backend_read_counts(struct dovewarden_queue_backend *backend,
				     dovewarden_queue_backend_counts_callback_t *callback,
				     void *context);
/* Add the backend's own gauges (connection state, buffers) */
void
dovewarden_queue_backend_get_metrics(struct dovewarden_queue_backend *backend,
				     ARRAY_TYPE(dovewarden_queue_metric) *metrics);

/* Iterate the status of the known users matching mask ('*' and '?'
   wildcards; a name without them is looked up alone), sorted by
   username. Like dict's asynchronous iteration: next() returns FALSE
   when it has nothing now; then has_more() tells whether the async
   callback will be called when it has (it must be set). The iteration
   may span ioloop runs; the queue may change meanwhile (each status is
   of the moment it is returned; a user removed before that is left
   out). */
struct dovewarden_queue_backend_iter *
dovewarden_queue_backend_iter_init(struct dovewarden_queue_backend *backend,
				   const char *mask);
void dovewarden_queue_backend_iter_set_async_callback(
	struct dovewarden_queue_backend_iter *iter,
	void (*callback)(void *context), void *context);
/* The status is valid until the next call. */
bool dovewarden_queue_backend_iter_next(struct dovewarden_queue_backend_iter *iter,
		const struct dovewarden_admin_user_status **status_r);
bool dovewarden_queue_backend_iter_has_more(struct dovewarden_queue_backend_iter *iter);
/* Returns 0, or -1 with error_r when the iteration failed (its results
   may be incomplete). */
int dovewarden_queue_backend_iter_deinit(struct dovewarden_queue_backend_iter **iter,
					 const char **error_r);

#endif
