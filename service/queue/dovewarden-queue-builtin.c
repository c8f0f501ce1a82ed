/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "priorityq.h"
#include "time-util.h"
#include "str.h"
#include "strnum.h"
#include "str-sanitize.h"
#include "safe-mkstemp.h"
#include "write-full.h"
#include "wildcard-match.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "dovewarden-replicator-db.h"
#include "dovewarden-queue-backend-private.h"

#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>

/* The built-in backend: the queue of dovewarden-queue.h in this process's
   memory, persisted by dovewarden-store.h (a snapshot saved in the
   background every DOVEWARDEN_QUEUE_BUILTIN_SAVE_INTERVAL_SECS and at
   deinit, and a journal of every change in between). Every change of the
   queue, from any caller, goes through the journal first. */

#ifndef DOVEWARDEN_QUEUE_BUILTIN_SAVE_INTERVAL_SECS
#  define DOVEWARDEN_QUEUE_BUILTIN_SAVE_INTERVAL_SECS (5 * 60)
#endif
/* A journal this big is compacted into a snapshot at once, without
   waiting for the periodic save: a flood of notifications for new (or
   junk) names must not grow the state files without bound. Its size is
   checked every BUILTIN_JOURNAL_CHECK_INTERVAL changes. */
#define BUILTIN_JOURNAL_MAX_SIZE (8 * 1024 * 1024)
#define BUILTIN_JOURNAL_CHECK_INTERVAL 1024
/* The longest a pop asks the caller to wait before it looks again */
#define BUILTIN_RETRY_MAX_SECS (60 * 60)

/* A status iteration of a mask is made in steps, so that a mask matching
   a million users does not stop the ioloop (and the notifications) for a
   second: the known users are walked this many per step and the matching
   usernames copied (users may be freed between the steps; each is looked
   up again when its status is returned), the names are sorted in chunks
   of BUILTIN_ITER_SORT_CHUNK, one chunk per step, and the sorted chunks
   are merged while the statuses are returned. */
#define BUILTIN_ITER_COLLECT_PER_STEP 32768
#define BUILTIN_ITER_SORT_CHUNK 8192

struct builtin_backend {
	struct dovewarden_queue_backend backend;

	struct dovewarden_queue_settings set;
	struct dovewarden_queue *queue;
	/* NULL when the state is not kept */
	struct dovewarden_store *store;
	/* <state path>.lock. (a lock's file is this plus its name), NULL
	   when the state is not kept */
	char *lock_path_prefix;
	struct timeout *to_save;
	/* When the running background save started */
	struct timeval save_start;
	time_t journal_error_logged;
	unsigned int journal_changes;
	/* Claims so far: a job's sequence number */
	uint64_t claim_seq;
	time_t last_successful_sync;
	/* Corrupt state file records found at the load, and those of them
	   kept in the quarantine file */
	unsigned int corrupt_records, quarantined_records;
};

struct builtin_job {
	struct dovewarden_queue_job job;
	struct dovewarden_user *user;
};

/* A sorted chunk of names being merged */
struct builtin_iter_run {
	/* first, as the priorityq needs */
	struct priorityq_item item;
	const char *const *names;
	unsigned int pos, end;
};

struct builtin_iter {
	struct dovewarden_queue_backend_iter iter;
	/* the copied usernames, the runs and this struct */
	pool_t pool;
	const char *mask;
	/* walking the users; NULL once all matching names are copied */
	struct dovewarden_queue_iter *users_iter;
	/* the names (an array of the default pool: a growing array in an
	   alloconly pool would keep every old copy) */
	ARRAY_TYPE(const_string) names;
	struct builtin_iter_run *runs;
	unsigned int run_count, sorted_runs;
	/* runs that still have names; created after the last chunk is
	   sorted */
	struct priorityq *merge;
	/* the name returned last */
	const char *last_name;
	struct dovewarden_admin_user_status status;
	struct timeout *to_more;
};

#define BUILTIN(_backend) \
	(container_of(_backend, struct builtin_backend, backend))
#define BUILTIN_JOB(_job) \
	(container_of(_job, struct builtin_job, job))

static void
builtin_save_finished(int ret, const char *error, struct builtin_backend *b)
{
	if (ret < 0) {
		e_error(b->backend.event, "Couldn't save the queue state "
			"(the journal keeps the changes): %s", error);
	} else {
		/* not ioloop_timeval: at deinit the ioloop no longer runs */
		struct timeval now;

		i_gettimeofday(&now);
		e_debug(b->backend.event, "Saved the queue state in the "
			"background in %lld ms", /* int on 2.3 */
			(long long)timeval_diff_msecs(&now, &b->save_start));
	}
}

static void builtin_save(struct builtin_backend *b)
{
	const char *error;

	if (dovewarden_store_save(b->store, b->queue, &error) < 0) {
		e_error(b->backend.event, "Couldn't save the queue state "
			"(the journal keeps the changes): %s", error);
	}
}

/* Saving a million users takes a second: a child process does it while
   the service goes on */
static void builtin_save_background(struct builtin_backend *b)
{
	const char *error;

	if (dovewarden_store_save_is_running(b->store)) {
		e_warning(b->backend.event, "The previous save of the queue "
			  "state is still running - skipping this one");
		return;
	}
	i_gettimeofday(&b->save_start);
	if (dovewarden_store_save_background(b->store, b->queue,
					     builtin_save_finished, b,
					     &error) < 0) {
		e_error(b->backend.event, "Couldn't save the queue state in "
			"the background, saving it now: %s", error);
		builtin_save(b);
	} else {
		/* fork() copies the page tables: the service's only pause */
		struct timeval now;

		i_gettimeofday(&now);
		e_debug(b->backend.event, "Saving the queue state in the "
			"background (starting it took %lld us)",
			timeval_diff_usecs(&now, &b->save_start));
	}
}

/* The first start after Dovecot 2.3's replicator: its users with their
   dsync states, saved as the first snapshot before replicator.db is
   renamed (a crash before the rename imports it again into the still
   empty store; after it, the snapshot exists and nothing is imported). */
static int
builtin_import_replicator_db(struct builtin_backend *b, const char *path,
			     const char **error_r)
{
	struct dovewarden_store_load_result result;
	struct event *event = b->backend.event;
	const char *imported_path;
	int ret;

	ret = dovewarden_replicator_db_import(b->store, path, b->queue,
					      ioloop_time, &result, error_r);
	if (ret <= 0)
		return ret;
	dovewarden_replicator_db_log_skipped(event, path, &result);
	b->corrupt_records = result.snapshot_lines_skipped;
	b->quarantined_records = result.records_quarantined;
	if (dovewarden_store_save(b->store, b->queue, error_r) < 0)
		return -1;
	imported_path = t_strconcat(path, ".imported", NULL);
	if (rename(path, imported_path) < 0) {
		e_error(event, "rename(%s, %s) failed: %m (it is not imported "
			"again: the queue state exists now)", path,
			imported_path);
	}
	e_info(event, "Imported %u users from %s (renamed it to %s)",
	       result.users_loaded, path, imported_path);
	return 1;
}

static int builtin_load_state(struct builtin_backend *b, const char *path,
			      const char **error_r)
{
	struct dovewarden_store_load_result result;
	struct event *event = b->backend.event;

	if (dovewarden_store_load(b->store, b->queue, ioloop_time, &result,
				  error_r) < 0) {
		*error_r = t_strdup_printf("Couldn't load the queue state: %s",
					   *error_r);
		return -1;
	}
	if (result.snapshot_corrupt_error != NULL) {
		e_error(event, "%s - moved it to %s and started without it "
			"(the periodic full syncs repair what it had)",
			result.snapshot_corrupt_error,
			result.snapshot_corrupt_path);
	}
	if (result.snapshot_lines_skipped > 0) {
		e_warning(event, "%s: Skipped %u corrupt records (first at "
			  "line %u)", path, result.snapshot_lines_skipped,
			  result.snapshot_first_skipped_line);
	}
	if (result.journal_lines_skipped > 0) {
		e_warning(event, "%s: Skipped %u corrupt journal lines (first "
			  "at line %u)", result.journal_first_skipped_path,
			  result.journal_lines_skipped,
			  result.journal_first_skipped_line);
	}
	b->corrupt_records = result.snapshot_lines_skipped +
		result.journal_lines_skipped;
	b->quarantined_records = result.records_quarantined;
	dovewarden_store_log_quarantine(event, &result);
	e_info(event, "Loaded %u users from %s%s and %u pending changes from "
	       "its journal", result.users_loaded, path,
	       result.snapshot_writer == NULL ? "" :
	       t_strdup_printf(" (written by %s)", result.snapshot_writer),
	       result.journal_lines_replayed);

	/* compact the journals into the snapshot; with nothing replayed the
	   snapshot is already current */
	if (result.journal_lines_replayed > 0 ||
	    result.journal_lines_skipped > 0 ||
	    result.snapshot_corrupt_error != NULL)
		builtin_save_background(b);
	return 0;
}

static int builtin_load(struct builtin_backend *b, const char *path,
			const char *replicator_db_path, const char **error_r)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	int ret = 0;

	b->store = dovewarden_store_init(path);
	if (replicator_db_path != NULL) {
		ret = dovewarden_store_exists(b->store, error_r);
		/* imported only into a store that was never saved */
		if (ret == 0) {
			ret = builtin_import_replicator_db(b,
				replicator_db_path, error_r);
		} else if (ret > 0) {
			ret = 0;
		}
	}
	if (ret < 0) {
		*error_r = t_strdup_printf("Couldn't import Dovecot 2.3's "
			"replicator state: %s", *error_r);
		return -1;
	}
	/* once imported (and saved) there is nothing else to load */
	if (ret == 0 && builtin_load_state(b, path, error_r) < 0)
		return -1;

	iter = dovewarden_queue_iter_init(b->queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		if (user->last_successful_sync > b->last_successful_sync)
			b->last_successful_sync = user->last_successful_sync;
	}
	dovewarden_queue_iter_deinit(&iter);

	b->to_save = timeout_add(DOVEWARDEN_QUEUE_BUILTIN_SAVE_INTERVAL_SECS *
				 1000, builtin_save_background, b);
	return 0;
}

static struct dovewarden_queue_backend *
builtin_init(const struct dovewarden_queue_backend_settings *set,
	     struct event *event, const char **error_r)
{
	struct builtin_backend *b;

	b = i_new(struct builtin_backend, 1);
	b->backend.event = event;
	b->set = set->queue;
	b->queue = dovewarden_queue_init(&b->set);
	if (set->state_path != NULL)
		b->lock_path_prefix = i_strconcat(set->state_path, ".lock.",
						  NULL);
	if (set->state_path != NULL &&
	    builtin_load(b, set->state_path, set->replicator_db_path,
			 error_r) < 0) {
		i_free(b->lock_path_prefix);
		dovewarden_store_deinit(&b->store);
		dovewarden_queue_deinit(&b->queue);
		i_free(b);
		return NULL;
	}
	return &b->backend;
}

static void builtin_deinit(struct dovewarden_queue_backend *backend)
{
	struct builtin_backend *b = BUILTIN(backend);

	timeout_remove(&b->to_save);
	if (b->store != NULL) {
		/* waits for a running background save first; the process is
		   exiting, so blocking is fine */
		builtin_save(b);
		dovewarden_store_deinit(&b->store);
	}
	dovewarden_queue_deinit(&b->queue);
	i_free(b->lock_path_prefix);
	i_free(b);
}

static bool builtin_is_ready(struct dovewarden_queue_backend *backend ATTR_UNUSED,
			     const char **reason_r ATTR_UNUSED)
{
	return TRUE;
}

/* A change was journaled: save early when the journal got big */
static void builtin_journal_changed(struct builtin_backend *b)
{
	if (++b->journal_changes < BUILTIN_JOURNAL_CHECK_INTERVAL)
		return;
	b->journal_changes = 0;
	if (dovewarden_store_journal_get_size(b->store) <
	    BUILTIN_JOURNAL_MAX_SIZE ||
	    dovewarden_store_save_is_running(b->store))
		return;
	e_debug(b->backend.event, "The journal has grown past %u MB: "
		"saving the queue state now",
		BUILTIN_JOURNAL_MAX_SIZE / (1024 * 1024));
	builtin_save_background(b);
}

static void builtin_journal_error(struct builtin_backend *b, const char *error)
{
	if (b->journal_error_logged != ioloop_time) {
		b->journal_error_logged = ioloop_time;
		e_error(b->backend.event, "%s", error);
	}
}

enum builtin_journal_change {
	/* before dovewarden_queue_notify() or _add() */
	BUILTIN_JOURNAL_NOTIFY,
	/* before dovewarden_queue_force_full_sync() */
	BUILTIN_JOURNAL_FORCE_FULL_SYNC,
	/* after a change of the user's fields, e.g. a sync's result: a
	   restart resumes from them instead of redoing the sync */
	BUILTIN_JOURNAL_USER,
	/* before dovewarden_queue_remove() */
	BUILTIN_JOURNAL_REMOVE,
};

/* Every change of the queue is journaled here: after a kill -9 the
   journal is replayed at start */
static void builtin_journal_kind(struct builtin_backend *b,
				 enum builtin_journal_change change,
				 const char *username,
				 enum dovewarden_priority priority,
				 enum dovewarden_queue_settle_kind kind)
{
	const char *error = NULL;
	int ret = 0;

	if (b->store == NULL)
		return;
	switch (change) {
	case BUILTIN_JOURNAL_NOTIFY:
		ret = dovewarden_store_journal_notify_kind(b->store,
							   b->queue, username,
							   priority, kind,
							   &error);
		break;
	case BUILTIN_JOURNAL_FORCE_FULL_SYNC:
		ret = dovewarden_store_journal_force_full_sync(b->store,
							       b->queue,
							       username,
							       priority,
							       &error);
		break;
	case BUILTIN_JOURNAL_USER:
		ret = dovewarden_store_journal_user(b->store, b->queue,
						    username, &error);
		break;
	case BUILTIN_JOURNAL_REMOVE:
		ret = dovewarden_store_journal_remove(b->store, b->queue,
						      username, &error);
		break;
	}
	if (ret < 0)
		builtin_journal_error(b, error);
	builtin_journal_changed(b);
}

static void builtin_journal(struct builtin_backend *b,
			    enum builtin_journal_change change,
			    const char *username,
			    enum dovewarden_priority priority)
{
	builtin_journal_kind(b, change, username, priority,
			     DOVEWARDEN_QUEUE_SETTLE_ALWAYS);
}

/* Debug log: why a user's settle full sync was armed, once per settle */
static void
builtin_log_settle_armed(struct builtin_backend *b,
			 const struct dovewarden_user *user,
			 enum dovewarden_queue_settle_kind kind)
{
	struct event *event;
	const char *why = "";

	switch (kind) {
	case DOVEWARDEN_QUEUE_SETTLE_ALWAYS:
		why = "a change from a source that reports no imports";
		break;
	case DOVEWARDEN_QUEUE_SETTLE_CLIENT:
		why = "a client change soon after an import";
		break;
	case DOVEWARDEN_QUEUE_SETTLE_IMPORT:
		why = "an import while a client change was pending or recent";
		break;
	}
	event = event_create(b->backend.event);
	event_add_str(event, "user", user->username);
	event_set_append_log_prefix(event, t_strdup_printf(
		"%s: ", str_sanitize(user->username, 100)));
	e_debug(event, "Settle full sync armed: %s", why);
	event_unref(&event);
}

static void
builtin_notify(struct dovewarden_queue_backend *backend, const char *username,
	       enum dovewarden_priority priority,
	       enum dovewarden_queue_notify_flags flags)
{
	struct builtin_backend *b = BUILTIN(backend);
	enum dovewarden_queue_settle_kind kind =
		dovewarden_queue_notify_settle_kind(flags);
	struct dovewarden_user *user;
	bool debug, armed;

	if ((flags & DOVEWARDEN_QUEUE_NOTIFY_FLAG_FULL_SYNC) == 0) {
		builtin_journal_kind(b, BUILTIN_JOURNAL_NOTIFY, username,
				     priority, kind);
		/* the lookup only for the debug log: notifications are the
		   busiest path */
		debug = event_want_debug(b->backend.event);
		user = !debug ? NULL :
			dovewarden_queue_lookup(b->queue, username);
		armed = user != NULL && user->settle_first_change != 0;
		user = dovewarden_queue_notify_kind(b->queue, username,
						    priority, kind,
						    ioloop_time);
		if (debug && !armed && user->settle_first_change != 0)
			builtin_log_settle_armed(b, user, kind);
		return;
	}
	builtin_journal(b, BUILTIN_JOURNAL_FORCE_FULL_SYNC, username,
			priority);
	user = dovewarden_queue_lookup(b->queue, username);
	if (user == NULL)
		user = dovewarden_queue_add(b->queue, username, ioloop_time);
	dovewarden_queue_force_full_sync(b->queue, user, priority,
					 ioloop_time);
}

static bool
builtin_add(struct dovewarden_queue_backend *backend, const char *username)
{
	struct builtin_backend *b = BUILTIN(backend);

	if (dovewarden_queue_lookup(b->queue, username) != NULL)
		return FALSE;
	builtin_journal(b, BUILTIN_JOURNAL_NOTIFY, username,
			DOVEWARDEN_PRIORITY_NONE);
	(void)dovewarden_queue_add(b->queue, username, ioloop_time);
	return TRUE;
}

static void
builtin_notify_wait(struct dovewarden_queue_backend *backend,
		    const char *username,
		    enum dovewarden_queue_notify_flags flags,
		    dovewarden_queue_backend_wait_callback_t *callback,
		    void *context)
{
	struct builtin_backend *b = BUILTIN(backend);

	builtin_notify(backend, username, DOVEWARDEN_PRIORITY_SYNC, flags);
	/* the next claim of the user starts after this change */
	callback(TRUE, b->claim_seq, context);
}

static void
builtin_remove(struct dovewarden_queue_backend *backend, const char *username,
	       dovewarden_queue_backend_remove_callback_t *callback,
	       void *context)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct dovewarden_user *user;

	user = dovewarden_queue_lookup(b->queue, username);
	if (user == NULL) {
		callback(0, NULL, context);
		return;
	}
	builtin_journal(b, BUILTIN_JOURNAL_REMOVE, username,
			DOVEWARDEN_PRIORITY_NONE);
	dovewarden_queue_remove(b->queue, user);
	callback(1, NULL, context);
}

/* When to pop again when nothing is due now */
static int builtin_retry_msecs(struct builtin_backend *b)
{
	time_t next_due = dovewarden_queue_next_due(b->queue);

	if (next_due == 0)
		return -1;
	/* a user due now that pop() did not return would make this a busy
	   loop: wait at least a second */
	if (next_due <= ioloop_time)
		return 1000;
	return I_MIN(next_due - ioloop_time, BUILTIN_RETRY_MAX_SECS) * 1000;
}

static void
builtin_pop(struct dovewarden_queue_backend *backend, bool allow_background,
	    dovewarden_queue_backend_pop_callback_t *callback, void *context)
{
	struct builtin_backend *b = BUILTIN(backend);
	const struct dovewarden_user *next;
	struct dovewarden_user *user;
	struct builtin_job *bjob;

	next = dovewarden_queue_peek(b->queue, ioloop_time);
	if (next == NULL) {
		callback(NULL, builtin_retry_msecs(b), NULL, context);
		return;
	}
	if (dovewarden_queue_priority_is_background(next->priority) &&
	    !allow_background) {
		/* the rest is background work: a finishing sync or a new
		   change pops again */
		callback(NULL, -1, NULL, context);
		return;
	}
	user = dovewarden_queue_pop(b->queue, ioloop_time);
	i_assert(user == next);

	bjob = i_new(struct builtin_job, 1);
	bjob->user = user;
	bjob->job.backend = backend;
	bjob->job.username = user->username;
	bjob->job.state = user->state == NULL ? "" : user->state;
	bjob->job.priority = user->syncing_priority;
	bjob->job.seq = ++b->claim_seq;
	bjob->job.consecutive_failures = user->consecutive_failures;
	bjob->job.last_error = user->last_error == NULL ? "" :
		user->last_error;
	bjob->job.full = user->syncing_full;
	bjob->job.settle = user->syncing_settle;
	callback(&bjob->job, 0, NULL, context);
}

static bool builtin_job_changed(struct dovewarden_queue_backend *backend ATTR_UNUSED,
				struct dovewarden_queue_job *job)
{
	const struct dovewarden_user *user = BUILTIN_JOB(job)->user;

	return user->removed || user->priority != DOVEWARDEN_PRIORITY_NONE;
}

static bool builtin_job_removed(struct dovewarden_queue_backend *backend ATTR_UNUSED,
				struct dovewarden_queue_job *job)
{
	return BUILTIN_JOB(job)->user->removed;
}

static bool
builtin_job_take_state_stale(struct dovewarden_queue_backend *backend ATTR_UNUSED,
			     struct dovewarden_queue_job *job)
{
	return dovewarden_queue_take_state_stale(BUILTIN_JOB(job)->user);
}

static void
builtin_finish(struct dovewarden_queue_backend *backend,
	       struct dovewarden_queue_job *job,
	       enum dovewarden_sync_result result, const char *new_state,
	       const char *error, bool repaired)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct builtin_job *bjob = BUILTIN_JOB(job);
	struct dovewarden_user *user = bjob->user;
	uint64_t seq = job->seq;
	const char *username;

	username = t_strdup(user->username);
	if (repaired && !user->removed)
		user->last_repaired = user->last_full_sync;
	if (result == DOVEWARDEN_SYNC_RESULT_OK &&
	    user->last_fast_sync > b->last_successful_sync)
		b->last_successful_sync = user->last_fast_sync;
	i_free(bjob);
	/* frees the user after NOUSER or when it was removed */
	dovewarden_queue_sync_finished(b->queue, user, result, new_state,
				       error, ioloop_time);
	builtin_journal(b, BUILTIN_JOURNAL_USER, username,
			DOVEWARDEN_PRIORITY_NONE);
	dovewarden_queue_backend_sync_done(backend, username, seq, result,
					   error);
}

static void
builtin_release(struct dovewarden_queue_backend *backend,
		struct dovewarden_queue_job *job)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct builtin_job *bjob = BUILTIN_JOB(job);
	struct dovewarden_user *user = bjob->user;
	const char *username = t_strdup(user->username);

	i_free(bjob);
	/* not a failure: synced again soon, without back-off */
	dovewarden_queue_sync_finished(b->queue, user,
				       DOVEWARDEN_SYNC_RESULT_CHANGED,
				       NULL, NULL, ioloop_time);
	builtin_journal(b, BUILTIN_JOURNAL_USER, username,
			DOVEWARDEN_PRIORITY_NONE);
}

/* Returns the expiry of the lock in path, 0 when there is none (or it
   can't be read: a lock that is lost is only taken again) */
static time_t builtin_lock_read(struct builtin_backend *b, const char *path)
{
	char buf[MAX_INT_STRLEN + 1];
	time_t expiry;
	ssize_t ret;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd == -1) {
		if (errno != ENOENT)
			e_error(b->backend.event, "open(%s) failed: %m", path);
		return 0;
	}
	ret = read(fd, buf, sizeof(buf) - 1);
	if (ret < 0)
		e_error(b->backend.event, "read(%s) failed: %m", path);
	i_close_fd(&fd);
	if (ret <= 0)
		return 0;
	buf[ret] = '\0';
	if (str_to_time(t_strcut(buf, '\n'), &expiry) < 0)
		return 0;
	return expiry;
}

static void builtin_lock_write(struct builtin_backend *b, const char *path,
			       time_t expiry)
{
	string_t *tmp_path = t_str_new(128);
	const char *data = t_strdup_printf("%"PRIdTIME_T"\n", expiry);
	int fd;

	str_append(tmp_path, path);
	fd = safe_mkstemp(tmp_path, 0600, (uid_t)-1, (gid_t)-1);
	if (fd == -1) {
		e_error(b->backend.event, "safe_mkstemp(%s) failed: %m", path);
		return;
	}
	if (write_full(fd, data, strlen(data)) < 0) {
		e_error(b->backend.event, "write(%s) failed: %m",
			str_c(tmp_path));
		i_unlink(str_c(tmp_path));
	} else if (rename(str_c(tmp_path), path) < 0) {
		e_error(b->backend.event, "rename(%s, %s) failed: %m",
			str_c(tmp_path), path);
		i_unlink(str_c(tmp_path));
	}
	i_close_fd(&fd);
}

static void
builtin_try_lock(struct dovewarden_queue_backend *backend, const char *name,
		 unsigned int secs,
		 dovewarden_queue_backend_lock_callback_t *callback,
		 void *context)
{
	struct builtin_backend *b = BUILTIN(backend);
	const char *path;
	bool acquired = TRUE;

	/* nobody else uses this queue, but a restart must not take the lock
	   again (e.g. sweep the userdb at every start) */
	if (b->lock_path_prefix != NULL) T_BEGIN {
		path = t_strconcat(b->lock_path_prefix, name, NULL);
		if (builtin_lock_read(b, path) > ioloop_time)
			acquired = FALSE;
		else
			builtin_lock_write(b, path, ioloop_time + secs);
	} T_END;
	callback(acquired, NULL, context);
}

/* A user's back-off ended: a restart must not bring it back */
static void builtin_retry_journal(struct dovewarden_user *user, void *context)
{
	struct builtin_backend *b = context;

	builtin_journal(b, BUILTIN_JOURNAL_USER, user->username,
			DOVEWARDEN_PRIORITY_NONE);
}

static void
builtin_retry_failed(struct dovewarden_queue_backend *backend,
		     const char *username,
		     dovewarden_queue_backend_retry_callback_t *callback,
		     void *context)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct dovewarden_user *user = NULL;
	unsigned int count = 0;

	if (username != NULL)
		user = dovewarden_queue_lookup(b->queue, username);
	if (username == NULL || user != NULL) {
		count = dovewarden_queue_retry_failed(b->queue, user,
						      ioloop_time,
						      builtin_retry_journal,
						      b);
	}
	if (callback != NULL)
		callback(count, NULL, context);
}

static void
builtin_unlock(struct dovewarden_queue_backend *backend, const char *name)
{
	struct builtin_backend *b = BUILTIN(backend);

	if (b->lock_path_prefix != NULL) T_BEGIN {
		i_unlink_if_exists(t_strconcat(b->lock_path_prefix, name,
					       NULL));
	} T_END;
}

static void
builtin_counts_init(struct builtin_backend *b,
		    const struct dovewarden_queue_stats *stats,
		    struct dovewarden_queue_counts *counts_r)
{
	i_zero(counts_r);
	counts_r->users = stats->users;
	counts_r->syncing = stats->syncing;
	memcpy(counts_r->pending, stats->pending, sizeof(counts_r->pending));
	counts_r->failed = stats->failed;
	counts_r->failed_waiting = stats->failed_waiting;
	counts_r->full_sync_due = stats->full_sync_due;
	counts_r->oldest_pending =
		dovewarden_queue_get_oldest_pending(b->queue);
	counts_r->last_successful_sync = b->last_successful_sync;
}

static void
builtin_get_counts(struct dovewarden_queue_backend *backend,
		   struct dovewarden_queue_counts *counts_r)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct dovewarden_queue_stats stats;

	dovewarden_queue_get_counts(b->queue, &stats);
	builtin_counts_init(b, &stats, counts_r);
}

static void
builtin_read_counts(struct dovewarden_queue_backend *backend,
		    dovewarden_queue_backend_counts_callback_t *callback,
		    void *context)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct dovewarden_queue_stats stats;
	struct dovewarden_queue_counts counts;

	dovewarden_queue_get_stats(b->queue, ioloop_time, &stats);
	builtin_counts_init(b, &stats, &counts);
	callback(&counts, NULL, context);
}

/* status iteration */

static int builtin_name_cmp(const void *p1, const void *p2)
{
	const char *const *name1 = p1, *const *name2 = p2;

	return strcmp(*name1, *name2);
}

static int builtin_run_cmp(const void *p1, const void *p2)
{
	const struct builtin_iter_run *run1 = p1, *run2 = p2;

	return strcmp(run1->names[run1->pos], run2->names[run2->pos]);
}

static struct dovewarden_queue_backend_iter *
builtin_iter_init(struct dovewarden_queue_backend *backend, const char *mask)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct builtin_iter *iter;
	pool_t pool;

	pool = pool_alloconly_create("queue status iter", 1024);
	iter = p_new(pool, struct builtin_iter, 1);
	iter->pool = pool;
	iter->mask = p_strdup(pool, mask);
	i_array_init(&iter->names, 64);
	if (dovewarden_admin_is_mask(mask))
		iter->users_iter = dovewarden_queue_iter_init(b->queue);
	else {
		/* one user: no need to walk them all */
		array_push_back(&iter->names, &iter->mask);
		iter->run_count = iter->sorted_runs = 1;
		iter->runs = p_new(pool, struct builtin_iter_run, 1);
		iter->runs[0].names = array_front(&iter->names);
		iter->runs[0].end = 1;
	}
	return &iter->iter;
}

static void builtin_iter_runs_init(struct builtin_iter *iter)
{
	const char *const *names;
	unsigned int i, count;

	names = array_get(&iter->names, &count);
	iter->run_count = (count + BUILTIN_ITER_SORT_CHUNK - 1) /
		BUILTIN_ITER_SORT_CHUNK;
	iter->runs = p_new(iter->pool, struct builtin_iter_run,
			   I_MAX(iter->run_count, 1));
	for (i = 0; i < iter->run_count; i++) {
		iter->runs[i].names = names;
		iter->runs[i].pos = i * BUILTIN_ITER_SORT_CHUNK;
		iter->runs[i].end = I_MIN(count,
			(i + 1) * BUILTIN_ITER_SORT_CHUNK);
	}
}

/* Copy the names of the next users that match; after the last one, set
   up the chunks to sort */
static void builtin_iter_collect(struct builtin_iter *iter)
{
	struct dovewarden_user *user;
	const char *name;
	unsigned int i;

	for (i = 0; i < BUILTIN_ITER_COLLECT_PER_STEP; i++) {
		user = dovewarden_queue_iter_next(iter->users_iter);
		if (user == NULL) {
			dovewarden_queue_iter_deinit(&iter->users_iter);
			builtin_iter_runs_init(iter);
			return;
		}
		if (wildcard_match(user->username, iter->mask)) {
			name = p_strdup(iter->pool, user->username);
			array_push_back(&iter->names, &name);
		}
	}
}

static void builtin_iter_more(struct builtin_iter *iter)
{
	timeout_remove(&iter->to_more);
	dovewarden_queue_backend_iter_more(&iter->iter);
}

/* Collect or sort one step; returns FALSE when that was done and the
   caller gets the rest from the ioloop */
static bool builtin_iter_prepare(struct builtin_iter *iter)
{
	struct builtin_iter_run *run;
	unsigned int i;

	if (iter->users_iter != NULL)
		builtin_iter_collect(iter);
	else if (iter->sorted_runs < iter->run_count) {
		run = &iter->runs[iter->sorted_runs++];
		qsort(array_idx_modifiable(&iter->names, run->pos),
		      run->end - run->pos, sizeof(const char *),
		      builtin_name_cmp);
	} else {
		if (iter->merge != NULL)
			return TRUE;
		iter->merge = priorityq_init(builtin_run_cmp,
					     I_MAX(iter->run_count, 1));
		for (i = 0; i < iter->run_count; i++) {
			if (iter->runs[i].pos < iter->runs[i].end)
				priorityq_add(iter->merge,
					      &iter->runs[i].item);
		}
		return TRUE;
	}
	iter->iter.has_more = TRUE;
	if (iter->to_more == NULL) {
		iter->to_more = timeout_add_short(0, builtin_iter_more, iter);
	}
	return FALSE;
}

static bool
builtin_iter_next(struct dovewarden_queue_backend_iter *_iter,
		  const struct dovewarden_admin_user_status **status_r)
{
	struct builtin_iter *iter =
		container_of(_iter, struct builtin_iter, iter);
	struct builtin_backend *b = BUILTIN(_iter->backend);
	struct builtin_iter_run *run;
	struct dovewarden_user *user;
	const char *name;

	if (!builtin_iter_prepare(iter))
		return FALSE;
	for (;;) {
		run = (struct builtin_iter_run *)priorityq_pop(iter->merge);
		if (run == NULL)
			return FALSE;
		name = run->names[run->pos++];
		if (run->pos < run->end)
			priorityq_add(iter->merge, &run->item);
		/* a user removed and added again while the users were
		   walked may have been seen twice */
		if (iter->last_name != NULL &&
		    strcmp(iter->last_name, name) == 0)
			continue;
		iter->last_name = name;
		/* a user removed since the names were collected is left
		   out */
		user = dovewarden_queue_lookup(b->queue, name);
		if (user != NULL)
			break;
	}
	dovewarden_queue_user_status_init(&iter->status, user,
					  b->set.full_sync_interval_secs,
					  ioloop_time);
	*status_r = &iter->status;
	return TRUE;
}

static int builtin_iter_deinit(struct dovewarden_queue_backend_iter *_iter,
			       const char **error_r ATTR_UNUSED)
{
	struct builtin_iter *iter =
		container_of(_iter, struct builtin_iter, iter);

	timeout_remove(&iter->to_more);
	if (iter->users_iter != NULL)
		dovewarden_queue_iter_deinit(&iter->users_iter);
	if (iter->merge != NULL)
		priorityq_deinit(&iter->merge);
	array_free(&iter->names);
	pool_unref(&iter->pool);
	return 0;
}

static void
builtin_get_metrics(struct dovewarden_queue_backend *backend,
		    ARRAY_TYPE(dovewarden_queue_metric) *metrics)
{
	struct builtin_backend *b = BUILTIN(backend);
	struct dovewarden_queue_metric *m;

	m = array_append_space(metrics);
	m->name = "dovewarden_state_corrupt_records";
	m->type = "gauge";
	m->help = "Corrupt records skipped when the state file and its "
		"journal were loaded at the start.";
	m->value = b->corrupt_records;
	m = array_append_space(metrics);
	m->name = "dovewarden_state_quarantined_records";
	m->type = "gauge";
	m->help = "Of the corrupt records, those kept in the .quarantine file "
		"(the others were lost: it was full or not writable).";
	m->value = b->quarantined_records;
}

const struct dovewarden_queue_backend_driver dovewarden_queue_backend_builtin = {
	.name = DOVEWARDEN_QUEUE_BACKEND_DEFAULT,
	.v = {
		.init = builtin_init,
		.deinit = builtin_deinit,
		.is_ready = builtin_is_ready,
		.notify = builtin_notify,
		.add = builtin_add,
		.notify_wait = builtin_notify_wait,
		.remove = builtin_remove,
		.pop = builtin_pop,
		.job_changed = builtin_job_changed,
		.job_removed = builtin_job_removed,
		.job_take_state_stale = builtin_job_take_state_stale,
		.finish = builtin_finish,
		.release = builtin_release,
		.try_lock = builtin_try_lock,
		.unlock = builtin_unlock,
		.retry_failed = builtin_retry_failed,
		.get_counts = builtin_get_counts,
		.read_counts = builtin_read_counts,
		.get_metrics = builtin_get_metrics,
		.iter_init = builtin_iter_init,
		.iter_next = builtin_iter_next,
		.iter_deinit = builtin_iter_deinit,
	},
};
