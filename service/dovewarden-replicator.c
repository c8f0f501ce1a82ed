/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "llist.h"
#include "ioloop.h"
#include "hostpid.h"
#include "str-sanitize.h"
#include "time-util.h"
#include "dovewarden-settings.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "dovewarden-redis-queue.h"
#include "dovewarden-log-limit.h"
#include "dovewarden-doveadm.h"
#include "dovewarden-userdb.h"
#include "dovewarden-sweep.h"
#include "dovewarden-metrics.h"
#include "dovewarden-replicator.h"

#include <stdio.h>
#include <sys/stat.h>

/* The longest a fill timer sleeps; the queue is checked again then */
#define REPLICATOR_FILL_MAX_SECS (60 * 60)
/* How much of a username goes into log prefixes */
#define REPLICATOR_LOG_USERNAME_MAX 100
/* At most this many sync failures are logged per window, whatever the
   users: a dead peer fails every user at once */
#define REPLICATOR_FAILURE_LOG_WINDOW_SECS 60
#define REPLICATOR_FAILURE_LOG_MAX_PER_WINDOW 20
/* With the Redis backend, other instances' notifications are seen by
   polling the shared queue this often (our own start syncs at once) */
#define REPLICATOR_REDIS_POLL_MSECS 1000
/* A sweep that could not ask Redis for its lock tries again after this */
#define REPLICATOR_SWEEP_REDIS_RETRY_SECS 10

struct replicator_sync {
	struct dovewarden_replicator *replicator;
	struct dovewarden_user *user;
	struct event *event;
	struct dovewarden_doveadm_sync *dsync;

	/* Sequence number of this sync's start, for waits */
	uint64_t seq;
	struct timeval start_time;
	enum dovewarden_priority priority;
	/* dsync destination, kept for the verification pass */
	char *destination;
	/* The state the full sync returned, while its verification pass
	   runs (NULL otherwise) */
	char *full_state;
	bool full:1;
	bool incremental:1;
	/* The full sync is the user's settle */
	bool settle:1;
};

struct dovewarden_replicator_wait {
	struct dovewarden_replicator_wait *prev, *next;
	struct dovewarden_replicator *replicator;

	char *username;
	unsigned int id;
	/* Answered by a sync with a higher sequence number */
	uint64_t registered_seq;
	/* Redis backend: answered by a sync (of any instance) whose claim
	   sequence is higher than redis_seq, once that is known; until then
	   the highest successful one seen */
	uint64_t redis_seq, redis_ok_seq_seen;
	bool redis_seq_known;
	struct timeout *to;
	dovewarden_replicator_wait_callback_t *callback;
	void *context;
};

struct dovewarden_replicator {
	const struct dovewarden_settings *set;
	struct event *event;
	char *doveadm_socket_path;

	struct dovewarden_queue_settings queue_set;
	struct dovewarden_queue *queue;
	/* The Redis backend, or NULL for the built-in queue (then queue
	   holds the users; with Redis it stays empty) */
	struct dovewarden_redis_queue *rqueue;
	char *redis_owner;
	unsigned int wait_id_counter;
	/* Redis backend: the built-in queue's state file being moved into
	   Redis (NULL when there is none or it is done) */
	struct dovewarden_queue *import_queue;
	char *import_path;
	unsigned int import_pending, import_new, import_failed;
	/* NULL when the state is not kept */
	struct dovewarden_store *store;
	struct timeout *to_save;
	/* When the running background save started */
	struct timeval save_start;
	time_t journal_error_logged;
	struct dovewarden_doveadm *doveadm;
	struct dovewarden_userdb *userdb;
	char *auth_socket_path;

	/* the running userdb sweep, or the timer of the next one */
	struct dovewarden_sweep *sweep;
	struct timeout *to_sweep;
	time_t next_sweep;

	ARRAY(struct replicator_sync *) syncs;
	struct dovewarden_replicator_wait *waits;
	uint64_t sync_seq;

	/* username -> when its NOUSER was logged as a warning */
	HASH_TABLE(char *, void *) nouser_logged;

	struct dovewarden_log_limit failure_log_limit;

	struct timeout *to_fill;
	/* to_fill is a 0-ms timeout */
	bool fill_now:1;
	/* Redis backend: a pop is waiting for its reply */
	bool redis_pop_running:1;
	/* Redis backend: the sweep waits for the connection */
	bool sweep_at_connect:1;
	/* "No replica configured" was already logged */
	bool no_replica_logged:1;
	bool deinitializing:1;
};

static void replicator_fill(struct dovewarden_replicator *replicator);
static void replicator_fill_soon(struct dovewarden_replicator *replicator);
static void replicator_sweep_start(struct dovewarden_replicator *replicator);

static const char *
replicator_socket_path(const char *base_dir, const char *path)
{
	if (path[0] == '/')
		return path;
	return t_strconcat(base_dir, "/", path, NULL);
}

static void replicator_save(struct dovewarden_replicator *replicator)
{
	const char *error;

	if (dovewarden_store_save(replicator->store, replicator->queue,
				  &error) < 0) {
		e_error(replicator->event, "Couldn't save the queue state "
			"(the journal keeps the changes): %s", error);
	}
}

static void
replicator_save_finished(int ret, const char *error,
			 struct dovewarden_replicator *replicator)
{
	if (ret < 0) {
		e_error(replicator->event, "Couldn't save the queue state "
			"(the journal keeps the changes): %s", error);
	} else {
		/* not ioloop_timeval: at deinit the ioloop no longer runs */
		struct timeval now;

		i_gettimeofday(&now);
		e_debug(replicator->event, "Saved the queue state in the "
			"background in %lld ms",
			timeval_diff_msecs(&now, &replicator->save_start));
	}
}

/* Saving a million users takes a second: a child process does it while
   the service goes on */
static void
replicator_save_background(struct dovewarden_replicator *replicator)
{
	const char *error;

	if (dovewarden_store_save_is_running(replicator->store)) {
		e_warning(replicator->event, "The previous save of the queue "
			  "state is still running - skipping this one");
		return;
	}
	i_gettimeofday(&replicator->save_start);
	if (dovewarden_store_save_background(replicator->store,
					     replicator->queue,
					     replicator_save_finished,
					     replicator, &error) < 0) {
		e_error(replicator->event, "Couldn't save the queue state in "
			"the background, saving it now: %s", error);
		replicator_save(replicator);
	} else {
		/* fork() copies the page tables: the service's only pause */
		struct timeval now;

		i_gettimeofday(&now);
		e_debug(replicator->event, "Saving the queue state in the "
			"background (starting it took %lld us)",
			timeval_diff_usecs(&now, &replicator->save_start));
	}
}

static void
replicator_load(struct dovewarden_replicator *replicator, const char *path)
{
	struct dovewarden_store_load_result result;
	const char *error;

	replicator->store = dovewarden_store_init(path);
	if (dovewarden_store_load(replicator->store, replicator->queue,
				  ioloop_time, &result, &error) < 0)
		i_fatal("Couldn't load the queue state: %s", error);
	if (result.snapshot_corrupt_error != NULL) {
		e_error(replicator->event, "%s - moved it to %s and started "
			"without it (the periodic full syncs repair what it "
			"had)", result.snapshot_corrupt_error,
			result.snapshot_corrupt_path);
	}
	if (result.snapshot_lines_skipped > 0) {
		e_warning(replicator->event, "%s: Skipped %u corrupt records "
			  "(first at line %u)", path,
			  result.snapshot_lines_skipped,
			  result.snapshot_first_skipped_line);
	}
	if (result.journal_lines_skipped > 0) {
		e_warning(replicator->event, "%s: Skipped %u corrupt journal "
			  "lines (first at line %u)",
			  result.journal_first_skipped_path,
			  result.journal_lines_skipped,
			  result.journal_first_skipped_line);
	}
	e_info(replicator->event, "Loaded %u users from %s and %u pending "
	       "changes from its journal", result.users_loaded, path,
	       result.journal_lines_replayed);
	/* compact the journals into the snapshot; with nothing replayed the
	   snapshot is already current */
	if (result.journal_lines_replayed > 0 ||
	    result.journal_lines_skipped > 0 ||
	    result.snapshot_corrupt_error != NULL)
		replicator_save_background(replicator);
	replicator->to_save = timeout_add(
		DOVEWARDEN_REPLICATOR_SAVE_INTERVAL_SECS * 1000,
		replicator_save_background, replicator);
}

static void replicator_sweep_timeout(struct dovewarden_replicator *replicator)
{
	timeout_remove(&replicator->to_sweep);
	if (replicator->next_sweep > ioloop_time) {
		/* a long interval is waited for in steps */
		replicator->to_sweep = timeout_add(
			I_MIN(replicator->next_sweep - ioloop_time,
			      REPLICATOR_FILL_MAX_SECS) * 1000,
			replicator_sweep_timeout, replicator);
		return;
	}
	replicator_sweep_start(replicator);
}

static void
replicator_sweep_schedule(struct dovewarden_replicator *replicator,
			  unsigned int secs)
{
	timeout_remove(&replicator->to_sweep);
	replicator->next_sweep = ioloop_time + secs;
	replicator->to_sweep = timeout_add(
		I_MIN(secs, REPLICATOR_FILL_MAX_SECS) * 1000,
		replicator_sweep_timeout, replicator);
}

static void
replicator_sweep_finished(const struct dovewarden_sweep_result *result,
			  void *context)
{
	struct dovewarden_replicator *replicator = context;
	unsigned int interval =
		replicator->set->dovewarden_userdb_sweep_interval;
	unsigned int retry_secs =
		I_MIN(interval, DOVEWARDEN_REPLICATOR_SWEEP_RETRY_SECS);

	replicator->sweep = NULL;
	if (result->invalid > 0) {
		e_warning(replicator->event, "Userdb sweep: Skipped %u users "
			  "with invalid names (longer than %u bytes or not "
			  "UTF-8)", result->invalid,
			  DOVEWARDEN_USERNAME_MAX_LENGTH);
	}
	if (result->error != NULL) {
		e_error(replicator->event, "Userdb sweep failed after "
			"%lld.%03lld secs (%u users listed, %u new): %s - "
			"retrying in %u secs (dovewarden_userdb_sweep_interval"
			"=0 turns sweeps off)", result->duration_msecs / 1000,
			result->duration_msecs % 1000, result->listed,
			result->added, result->error, retry_secs);
		replicator_sweep_schedule(replicator, retry_secs);
	} else if (replicator->rqueue != NULL) {
		e_info(replicator->event, "Userdb sweep finished in "
		       "%lld.%03lld secs: %u users listed and made known in "
		       "the shared queue", result->duration_msecs / 1000,
		       result->duration_msecs % 1000, result->listed);
		replicator_sweep_schedule(replicator, interval);
	} else {
		e_info(replicator->event, "Userdb sweep finished in "
		       "%lld.%03lld secs: %u users listed, %u of them new "
		       "(first full syncs spread over %u secs)",
		       result->duration_msecs / 1000,
		       result->duration_msecs % 1000, result->listed,
		       result->added,
		       replicator->queue_set.full_sync_interval_secs);
		replicator_sweep_schedule(replicator, interval);
	}
	replicator_fill_soon(replicator);
}

static bool replicator_sweep_add(const char *username, void *context)
{
	return dovewarden_replicator_add_user(context, username);
}

static void
replicator_sweep_lock_callback(bool acquired, void *context)
{
	struct dovewarden_replicator *replicator = context;

	if (replicator->deinitializing || replicator->sweep != NULL)
		return;
	if (!acquired) {
		e_debug(replicator->event, "Userdb sweep: another instance "
			"ran it within dovewarden_userdb_sweep_interval");
		replicator_sweep_schedule(replicator,
			replicator->set->dovewarden_userdb_sweep_interval);
		return;
	}
	e_debug(replicator->event, "Userdb sweep started");
	replicator->sweep = dovewarden_sweep_start(
		replicator_sweep_add, replicator,
		replicator->auth_socket_path, "*",
		replicator->event, replicator_sweep_finished, replicator);
}

static void replicator_sweep_start(struct dovewarden_replicator *replicator)
{
	if (replicator->rqueue != NULL) {
		/* one instance sweeps per interval: the one that takes the
		   lock, which expires when the next sweep is due */
		timeout_remove(&replicator->to_sweep);
		if (dovewarden_redis_queue_try_lock(replicator->rqueue,
				"sweep",
				replicator->set->dovewarden_userdb_sweep_interval,
				replicator_sweep_lock_callback,
				replicator) < 0) {
			/* not connected yet: at the connect, or later */
			replicator->sweep_at_connect = TRUE;
			replicator_sweep_schedule(replicator,
				REPLICATOR_SWEEP_REDIS_RETRY_SECS);
		}
		return;
	}

	i_assert(replicator->sweep == NULL);

	timeout_remove(&replicator->to_sweep);
	e_debug(replicator->event, "Userdb sweep started");
	replicator->sweep = dovewarden_sweep_start(
		replicator_sweep_add, replicator,
		replicator->auth_socket_path, "*",
		replicator->event, replicator_sweep_finished, replicator);
}

static void replicator_nouser_clear(struct dovewarden_replicator *replicator)
{
	struct hash_iterate_context *iter;
	char *username;
	void *value;

	iter = hash_table_iterate_init(replicator->nouser_logged);
	while (hash_table_iterate(iter, replicator->nouser_logged,
				  &username, &value))
		i_free(username);
	hash_table_iterate_deinit(&iter);
	hash_table_clear(replicator->nouser_logged, FALSE);
}

static void replicator_redis_import_done(struct dovewarden_replicator *replicator)
{
	unsigned int total = replicator->import_new + replicator->import_failed;
	const char *suffixes[] = { "", ".journal", ".journal.old" };
	struct dovewarden_queue_stats counts;
	const char *from, *to;

	if (replicator->import_failed > 0) {
		e_error(replicator->event, "Importing %s into Redis: %u of "
			"%u users failed - trying again at the next connect",
			replicator->import_path, replicator->import_failed,
			total);
		replicator->import_failed = 0;
		replicator->import_new = 0;
		return;
	}
	/* the files stay, renamed, for a way back to the built-in queue */
	for (unsigned int i = 0; i < N_ELEMENTS(suffixes); i++) {
		from = t_strconcat(replicator->import_path, suffixes[i], NULL);
		to = t_strconcat(from, ".imported", NULL);
		if (rename(from, to) < 0 && errno != ENOENT) {
			e_error(replicator->event, "rename(%s, %s) failed: %m",
				from, to);
		}
	}
	dovewarden_queue_get_counts(replicator->import_queue, &counts);
	e_info(replicator->event, "Imported the built-in queue's state (%u "
	       "users, %u of them new to Redis) from %s; renamed it to "
	       "%s.imported", counts.users, replicator->import_new,
	       replicator->import_path, replicator->import_path);
	dovewarden_queue_deinit(&replicator->import_queue);
	i_free(replicator->import_path);
}

static void replicator_redis_import_callback(int ret, const char *error,
					     void *context)
{
	struct dovewarden_replicator *replicator = context;

	if (ret < 0) {
		if (replicator->import_failed++ == 0 &&
		    !replicator->deinitializing) {
			e_error(replicator->event, "Importing a user into "
				"Redis failed: %s", error);
		}
	} else if (ret > 0) {
		replicator->import_new++;
	}
	i_assert(replicator->import_pending > 0);
	if (--replicator->import_pending == 0 &&
	    !replicator->deinitializing) T_BEGIN {
		replicator_redis_import_done(replicator);
	} T_END;
}

/* Copy every user of the built-in queue's state file into Redis (users
   Redis knows already are left alone), so that switching the backend
   keeps every user's dsync state and schedule */
static void replicator_redis_import(struct dovewarden_replicator *replicator)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;

	if (replicator->import_queue == NULL || replicator->import_pending > 0)
		return;
	iter = dovewarden_queue_iter_init(replicator->import_queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		int ret;

		T_BEGIN {
			ret = dovewarden_redis_queue_import(replicator->rqueue,
				user, replicator_redis_import_callback,
				replicator);
		} T_END;
		if (ret < 0) {
			replicator->import_failed++;
			break;
		}
		replicator->import_pending++;
	}
	dovewarden_queue_iter_deinit(&iter);
	if (replicator->import_pending == 0) T_BEGIN {
		replicator_redis_import_done(replicator);
	} T_END;
}

static void
replicator_redis_import_load(struct dovewarden_replicator *replicator,
			     const char *path)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_store *store;
	struct stat st;
	const char *error;

	if (stat(path, &st) < 0) {
		if (errno != ENOENT)
			e_error(replicator->event, "stat(%s) failed: %m", path);
		return;
	}
	replicator->import_queue =
		dovewarden_queue_init(&replicator->queue_set);
	store = dovewarden_store_init(path);
	if (dovewarden_store_load(store, replicator->import_queue,
				  ioloop_time, &result, &error) < 0) {
		e_error(replicator->event, "Couldn't load %s to import it into "
			"Redis: %s", path, error);
		dovewarden_queue_deinit(&replicator->import_queue);
	} else {
		replicator->import_path = i_strdup(path);
		e_info(replicator->event, "Found the built-in queue's state "
		       "(%u users) in %s: importing it into Redis",
		       result.users_loaded, path);
	}
	dovewarden_store_deinit(&store);
}

static void replicator_redis_connected(void *context)
{
	struct dovewarden_replicator *replicator = context;

	replicator_redis_import(replicator);
	if (replicator->sweep_at_connect && replicator->sweep == NULL) {
		replicator->sweep_at_connect = FALSE;
		replicator_sweep_start(replicator);
	}
	replicator_fill_soon(replicator);
}

static void
replicator_redis_sync_done(const char *username, uint64_t seq,
			   const char *result, void *context);

static const struct dovewarden_redis_queue_callbacks replicator_redis_callbacks = {
	.connected = replicator_redis_connected,
	.sync_done = replicator_redis_sync_done,
};

static void replicator_redis_init(struct dovewarden_replicator *replicator)
{
	const struct dovewarden_settings *set = replicator->set;
	struct dovewarden_redis_queue_settings rset;

	/* unique also across restarts: a claim of our previous life must
	   not look like ours */
	replicator->redis_owner = i_strdup_printf("%s:%s:%x", my_hostname,
						  my_pid, i_rand());
	i_zero(&rset);
	rset.redis.host = set->dovewarden_redis_host;
	rset.redis.port = set->dovewarden_redis_port;
	rset.redis.username = set->dovewarden_redis_username;
	rset.redis.password = set->dovewarden_redis_password;
	rset.redis.db = set->dovewarden_redis_db;
	rset.redis.timeout_msecs = set->dovewarden_redis_timeout;
	rset.queue = replicator->queue_set;
	rset.prefix = set->dovewarden_redis_prefix;
	rset.owner = replicator->redis_owner;
	rset.server = my_hostname;
	rset.claim_timeout_secs = set->dovewarden_redis_claim_timeout;
	rset.buffer_limit = set->dovewarden_redis_buffer_limit;
	replicator->rqueue = dovewarden_redis_queue_init(
		&rset, replicator->event, &replicator_redis_callbacks,
		replicator);
	e_info(replicator->event, "Queue in Redis at %s, database %u, "
	       "key prefix '%s' (this instance: %s)",
	       dovewarden_redis_settings_address(&rset.redis),
	       set->dovewarden_redis_db, set->dovewarden_redis_prefix,
	       replicator->redis_owner);
}

struct dovewarden_replicator *
dovewarden_replicator_init(const struct dovewarden_settings *set,
			   const char *base_dir, const char *state_path,
			   struct event *event_parent)
{
	struct dovewarden_replicator *replicator;

	replicator = i_new(struct dovewarden_replicator, 1);
	replicator->set = set;
	replicator->event = event_create(event_parent);
	replicator->failure_log_limit.window_secs =
		REPLICATOR_FAILURE_LOG_WINDOW_SECS;
	replicator->failure_log_limit.max_per_window =
		REPLICATOR_FAILURE_LOG_MAX_PER_WINDOW;
	replicator->doveadm_socket_path = i_strdup(replicator_socket_path(
		base_dir, set->dovewarden_doveadm_socket_path));

	replicator->queue_set.full_sync_interval_secs =
		set->dovewarden_full_sync_interval;
	replicator->queue_set.retry_min_secs =
		set->dovewarden_retry_min_interval;
	replicator->queue_set.retry_max_secs =
		set->dovewarden_retry_max_interval;
	replicator->queue_set.settle_delay_secs = set->dovewarden_settle_delay;
	replicator->queue_set.settle_max_secs =
		DOVEWARDEN_REPLICATOR_SETTLE_MAX_SECS;
	replicator->queue = dovewarden_queue_init(&replicator->queue_set);
	replicator->doveadm = dovewarden_doveadm_init();
	replicator->auth_socket_path = i_strdup(replicator_socket_path(
		base_dir, set->dovewarden_auth_socket_path));
	replicator->userdb = dovewarden_userdb_init(
		replicator->auth_socket_path,
		DOVEWARDEN_REPLICATOR_USERDB_TIMEOUT_MSECS,
		DOVEWARDEN_REPLICATOR_USERDB_CACHE_SECS, replicator->event);
	i_array_init(&replicator->syncs, set->dovewarden_max_syncs);
	hash_table_create(&replicator->nouser_logged, default_pool, 0,
			  str_hash, strcmp);
	if (dovewarden_settings_use_redis(set)) {
		replicator_redis_init(replicator);
		if (state_path != NULL)
			replicator_redis_import_load(replicator, state_path);
	} else if (state_path != NULL)
		replicator_load(replicator, state_path);
	/* the loaded users may be due already */
	replicator_fill_soon(replicator);
	if (set->dovewarden_userdb_sweep_interval > 0) {
		replicator->to_sweep = timeout_add_short(
			0, replicator_sweep_timeout, replicator);
	}
	return replicator;
}

static void replicator_wait_free(struct dovewarden_replicator_wait *wait)
{
	DLLIST_REMOVE(&wait->replicator->waits, wait);
	timeout_remove(&wait->to);
	i_free(wait->username);
	i_free(wait);
}

static void
replicator_wait_answer(struct dovewarden_replicator_wait *wait, bool success,
		       const char *reason)
{
	dovewarden_replicator_wait_callback_t *callback = wait->callback;
	void *context = wait->context;

	replicator_wait_free(wait);
	callback(success, reason, context);
}

static void
replicator_waits_answer(struct dovewarden_replicator *replicator,
			const char *username, uint64_t sync_seq,
			bool success, const char *reason)
{
	struct dovewarden_replicator_wait *wait, *next;

	for (wait = replicator->waits; wait != NULL; wait = next) {
		next = wait->next;
		if (wait->registered_seq < sync_seq &&
		    strcmp(wait->username, username) == 0)
			replicator_wait_answer(wait, success, reason);
	}
}

static void replicator_sync_free(struct replicator_sync *sync)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	struct replicator_sync *const *syncp;

	array_foreach(&replicator->syncs, syncp) {
		if (*syncp == sync) {
			array_delete(&replicator->syncs,
				     array_foreach_idx(&replicator->syncs,
						       syncp), 1);
			break;
		}
	}
	event_unref(&sync->event);
	i_free(sync->destination);
	i_free(sync->full_state);
	i_free(sync);
}

void dovewarden_replicator_deinit(struct dovewarden_replicator **_replicator)
{
	struct dovewarden_replicator *replicator = *_replicator;
	struct replicator_sync *sync;

	if (replicator == NULL)
		return;
	*_replicator = NULL;

	replicator->deinitializing = TRUE;
	timeout_remove(&replicator->to_fill);
	dovewarden_sweep_abort(&replicator->sweep);
	timeout_remove(&replicator->to_sweep);
	while (array_count(&replicator->syncs) > 0) {
		sync = array_idx_elem(&replicator->syncs, 0);
		e_debug(sync->event, "Aborting sync: shutting down");
		dovewarden_doveadm_sync_abort(&sync->dsync);
		/* not a failure: the user is synced again soon after the
		   restart, without back-off. With Redis the queue gives
		   the claims back at its deinit. */
		if (replicator->rqueue == NULL) {
			dovewarden_queue_sync_finished(replicator->queue,
				sync->user, DOVEWARDEN_SYNC_RESULT_CHANGED,
				NULL, NULL, ioloop_time);
		}
		replicator_sync_free(sync);
	}
	while (replicator->waits != NULL)
		replicator_wait_answer(replicator->waits, FALSE,
				       "Replication service shutting down");

	timeout_remove(&replicator->to_save);
	if (replicator->store != NULL) {
		/* waits for a running background save first; the process is
		   exiting, so blocking is fine */
		replicator_save(replicator);
		dovewarden_store_deinit(&replicator->store);
	}
	if (replicator->rqueue != NULL)
		dovewarden_redis_queue_deinit(&replicator->rqueue);
	if (replicator->import_queue != NULL)
		dovewarden_queue_deinit(&replicator->import_queue);
	i_free(replicator->import_path);
	i_free(replicator->redis_owner);
	dovewarden_doveadm_deinit(&replicator->doveadm);
	dovewarden_userdb_deinit(&replicator->userdb);
	dovewarden_queue_deinit(&replicator->queue);
	array_free(&replicator->syncs);
	replicator_nouser_clear(replicator);
	hash_table_destroy(&replicator->nouser_logged);
	event_unref(&replicator->event);
	i_free(replicator->auth_socket_path);
	i_free(replicator->doveadm_socket_path);
	i_free(replicator);
}

static void replicator_fill_soon(struct dovewarden_replicator *replicator)
{
	if (replicator->fill_now || replicator->deinitializing)
		return;
	timeout_remove(&replicator->to_fill);
	replicator->to_fill = timeout_add_short(0, replicator_fill, replicator);
	replicator->fill_now = TRUE;
}

static bool
replicator_failure_log_allowed(struct dovewarden_replicator *replicator)
{
	unsigned int suppressed;

	if (!dovewarden_log_limit_allow(&replicator->failure_log_limit,
					ioloop_time, &suppressed))
		return FALSE;
	if (suppressed > 0) {
		e_warning(replicator->event, "%u more sync failures "
			  "were logged only at debug level", suppressed);
	}
	return TRUE;
}

/* NOUSER makes the queue forget the user, so a user that exists here but
   not in the replica would be warned about at every notification */
static bool
replicator_nouser_log_allowed(struct dovewarden_replicator *replicator,
			      const char *username)
{
	char *key;
	void *value;
	time_t logged;

	if (hash_table_lookup_full(replicator->nouser_logged, username,
				   &key, &value)) {
		logged = (time_t)POINTER_CAST_TO(value, uintptr_t);
		if (logged + DOVEWARDEN_REPLICATOR_NOUSER_LOG_SECS >
		    ioloop_time)
			return FALSE;
		hash_table_update(replicator->nouser_logged, key,
				  POINTER_CAST(ioloop_time));
		return TRUE;
	}
	if (hash_table_count(replicator->nouser_logged) >=
	    DOVEWARDEN_REPLICATOR_NOUSER_LOG_MAX_USERS)
		replicator_nouser_clear(replicator);
	hash_table_insert(replicator->nouser_logged, i_strdup(username),
			  POINTER_CAST(ioloop_time));
	return TRUE;
}

/* Log the first failure of a user, a change of its reason, and every
   Nth repetition, within the global limit */
static bool
replicator_sync_should_log_failure(struct replicator_sync *sync,
				   const char *error)
{
	const struct dovewarden_user *user = sync->user;

	if (user->last_error != NULL && user->consecutive_failures > 0 &&
	    strcmp(user->last_error, error) == 0 &&
	    (user->consecutive_failures + 1) %
	    DOVEWARDEN_REPLICATOR_FAILURE_LOG_INTERVAL != 0)
		return FALSE;
	return replicator_failure_log_allowed(sync->replicator);
}

static void
replicator_sync_log(struct replicator_sync *sync,
		    enum dovewarden_sync_result result, const char *error,
		    long long duration_usecs)
{
	struct dovewarden_user *user = sync->user;
	const char *what;
	unsigned int failures = user->consecutive_failures + 1;

	struct event_passthrough *e = event_create_passthrough(sync->event)->
		set_name("dovewarden_sync_finished")->
		add_str("priority",
			dovewarden_priority_to_str(sync->priority))->
		add_str("full", sync->full ? "yes" : "no")->
		add_str("incremental", sync->incremental ? "yes" : "no")->
		add_str("settle", sync->settle ? "yes" : "no")->
		add_int("duration_usecs", duration_usecs)->
		add_str("result", dovewarden_sync_result_to_str(result));
	if (error != NULL)
		e->add_str("error", error);

	what = t_strdup_printf(
		"%s sync (priority %s) %s after %lld.%03lld secs",
		sync->settle ? "Settle full" : sync->full ? "Full" :
		(sync->incremental ? "Incremental" : "Normal"),
		dovewarden_priority_to_str(sync->priority),
		result == DOVEWARDEN_SYNC_RESULT_OK ? "finished" :
		(result == DOVEWARDEN_SYNC_RESULT_CHANGED ?
		 "finished with changes during the sync" : "failed"),
		duration_usecs / 1000000, (duration_usecs / 1000) % 1000);

	switch (result) {
	case DOVEWARDEN_SYNC_RESULT_OK:
	case DOVEWARDEN_SYNC_RESULT_CHANGED:
		e_debug(e->event(), "%s", what);
		break;
	case DOVEWARDEN_SYNC_RESULT_TEMPFAIL:
		if (replicator_sync_should_log_failure(sync, error)) {
			e_warning(e->event(), "%s: %s (%u failures in a row, "
				  "retrying with back-off)",
				  what, error, failures);
		} else {
			e_debug(e->event(), "%s: %s", what, error);
		}
		break;
	case DOVEWARDEN_SYNC_RESULT_NOUSER:
		if (replicator_nouser_log_allowed(sync->replicator,
						  sync->user->username) &&
		    replicator_failure_log_allowed(sync->replicator)) {
			e_warning(e->event(), "%s: %s (forgetting the user)",
				  what, error);
		} else {
			e_debug(e->event(), "%s: %s", what, error);
		}
		break;
	case DOVEWARDEN_SYNC_RESULT_CONFIG:
		if (replicator_sync_should_log_failure(sync, error)) {
			e_error(e->event(), "%s: %s (%u failures in a row)",
				what, error, failures);
		} else {
			e_debug(e->event(), "%s: %s", what, error);
		}
		break;
	}
}

static void
replicator_queue_sync_finished(struct dovewarden_replicator *replicator,
			       struct dovewarden_user *user,
			       enum dovewarden_sync_result result,
			       const char *new_state, const char *error)
{
	struct dovewarden_redis_job *job;

	if (replicator->rqueue == NULL) {
		dovewarden_queue_sync_finished(replicator->queue, user, result,
					       new_state, error, ioloop_time);
		return;
	}
	job = container_of(user, struct dovewarden_redis_job, user);
	dovewarden_redis_queue_finish(replicator->rqueue, &job, result,
				      new_state, error,
				      user->last_repaired != 0);
}

/* Finish a sync that was started; frees it. */
static void
replicator_sync_finish(struct replicator_sync *sync,
		       enum dovewarden_sync_result result,
		       const char *new_state, const char *error)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	struct dovewarden_user *user = sync->user;
	long long duration_usecs;
	const char *username;

	if (result != DOVEWARDEN_SYNC_RESULT_OK && error == NULL)
		error = dovewarden_sync_result_to_str(result);
	duration_usecs = timeval_diff_usecs(&ioloop_timeval, &sync->start_time);
	replicator_sync_log(sync, result, error, duration_usecs);
	dovewarden_metrics_sync_finished(result, duration_usecs, ioloop_time);

	username = t_strdup(user->username);
	replicator_queue_sync_finished(replicator, user, result, new_state,
				       error);
	/* the user may be freed now. After CHANGED the queue runs the
	   sync again soon: the waits are answered by that one. After
	   TEMPFAIL they wait on for the retry or their timeout: new mail is
	   acknowledged only once replicated or after the timeout, also
	   while the peer is down. */
	if (result != DOVEWARDEN_SYNC_RESULT_CHANGED &&
	    result != DOVEWARDEN_SYNC_RESULT_TEMPFAIL) {
		replicator_waits_answer(replicator, username, sync->seq,
					result == DOVEWARDEN_SYNC_RESULT_OK,
					error);
	}
	replicator_sync_free(sync);
	replicator_fill_soon(replicator);
}

/* The user is dropped without a sync: replication is off for it. */
static void replicator_sync_skip(struct replicator_sync *sync,
				 const char *reason)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	const char *username = t_strdup(sync->user->username);

	e_debug(sync->event, "Not replicating: %s", reason);
	replicator_queue_sync_finished(replicator, sync->user,
				       DOVEWARDEN_SYNC_RESULT_NOUSER,
				       NULL, reason);
	replicator_waits_answer(replicator, username, sync->seq, FALSE, reason);
	replicator_sync_free(sync);
}

static void
replicator_dsync_start(struct replicator_sync *sync, const char *state,
		       bool full);

/* The verification pass after a full sync ended. dsync's state holds
   the modseqs each side had when the sync began, so a full sync that
   changed something returns the same state as before, and only the
   next sync's state shows the change: an incremental sync that returns
   the full sync's state unchanged proves that the full sync changed
   nothing. */
static void
replicator_verify_callback(const struct dovewarden_doveadm_sync_reply *reply,
			   void *context)
{
	struct replicator_sync *sync = context;
	struct dovewarden_user *user = sync->user;
	const char *state = sync->full_state;
	bool repaired = FALSE;

	sync->dsync = NULL;
	if (reply->result == DOVEWARDEN_SYNC_RESULT_OK &&
	    reply->state[0] != '\0') {
		/* a change notified meanwhile would move the state too */
		repaired = strcmp(reply->state, sync->full_state) != 0 &&
			user->priority == DOVEWARDEN_PRIORITY_NONE;
		state = reply->state;
	}
	if (!user->removed) {
		if (repaired)
			user->last_repaired = user->last_full_sync;
		dovewarden_metrics_verification(repaired);
		if (repaired || sync->settle) {
			e_debug(sync->event, "%s: %s",
				sync->settle ? "Settle" : "Verification",
				repaired ? "the servers differed and were "
				"repaired" : "the servers were the same");
		}
	}
	replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_OK, state, NULL);
}

static void
replicator_dsync_callback(const struct dovewarden_doveadm_sync_reply *reply,
			  void *context)
{
	struct replicator_sync *sync = context;

	sync->dsync = NULL;
	if (sync->full && sync->incremental &&
	    reply->result == DOVEWARDEN_SYNC_RESULT_OK &&
	    reply->state[0] != '\0' && !sync->user->removed) {
		/* a full sync of a user that was synced before: run the
		   verification pass (a first sync always changes things) */
		sync->full_state = i_strdup(reply->state);
		replicator_dsync_start(sync, sync->full_state, FALSE);
		return;
	}
	replicator_sync_finish(sync, reply->result, reply->state,
			       reply->error);
}

static void
replicator_dsync_start(struct replicator_sync *sync, const char *state,
		       bool full)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	struct dovewarden_doveadm_sync_settings dset;

	i_zero(&dset);
	dset.socket_path = replicator->doveadm_socket_path;
	dset.username = sync->user->username;
	dset.state = state;
	dset.destination = sync->destination;
	dset.lock_timeout_secs = replicator->set->dovewarden_lock_timeout;
	dset.timeout_msecs = replicator->set->dovewarden_sync_timeout * 1000;
	dset.io_timeout_secs = replicator->set->dovewarden_sync_timeout;
	dset.full = full;
	sync->dsync = dovewarden_doveadm_sync_start(
		replicator->doveadm, &dset, sync->event,
		sync->full_state != NULL ? replicator_verify_callback :
		replicator_dsync_callback, sync);
}

static void
replicator_sync_begin(struct dovewarden_replicator *replicator,
		      struct replicator_sync *sync)
{
	struct dovewarden_user *user = sync->user;
	struct dovewarden_userdb_info info;
	const char *replica, *dest, *error;
	int ret;

	ret = dovewarden_userdb_lookup(replicator->userdb, user->username,
				       &info, &error);
	if (ret < 0) {
		replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
				       NULL, error);
		return;
	}
	if (ret == 0) {
		replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_NOUSER,
				       NULL, "User not found in userdb");
		return;
	}
	if (info.noreplicate) {
		replicator_sync_skip(sync, "noreplicate set in userdb");
		return;
	}

	replica = info.replica != NULL ? info.replica :
		dovewarden_settings_get_replica(replicator->set);
	if (replica[0] == '\0') {
		if (!replicator->no_replica_logged) {
			e_error(replicator->event, "No replica configured: "
				"set dovewarden_replica (or mail_replica) "
				"globally or in the userdb");
			replicator->no_replica_logged = TRUE;
		}
		replicator_sync_skip(sync, "No replica configured");
		return;
	}
	if (dovewarden_replica_parse(replica, &dest, &error) < 0) {
		replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_CONFIG,
				       NULL, error);
		return;
	}

	sync->destination = i_strdup(dest);
	e_debug(sync->event, "Starting %s sync (priority %s) to %s",
		sync->settle ? "settle full" : sync->full ? "full" :
		(sync->incremental ? "incremental" : "normal"),
		dovewarden_priority_to_str(sync->priority), dest);
	replicator_dsync_start(sync, user->state == NULL ? "" : user->state,
			       sync->full);
}

static void
replicator_sync_start(struct dovewarden_replicator *replicator,
		      struct dovewarden_user *user,
		      enum dovewarden_priority priority)
{
	struct replicator_sync *sync;

	sync = i_new(struct replicator_sync, 1);
	sync->replicator = replicator;
	sync->user = user;
	sync->seq = ++replicator->sync_seq;
	sync->start_time = ioloop_timeval;
	sync->priority = priority;
	sync->full = user->syncing_full;
	sync->settle = user->syncing_settle;
	sync->incremental = user->state != NULL && user->state[0] != '\0';
	sync->event = event_create(replicator->event);
	event_add_str(sync->event, "user", user->username);
	event_set_append_log_prefix(sync->event, t_strdup_printf(
		"%s: ", str_sanitize(user->username,
				     REPLICATOR_LOG_USERNAME_MAX)));
	array_push_back(&replicator->syncs, &sync);

	replicator_sync_begin(replicator, sync);
}

/* Background work (periodic and settle full syncs) may take at most this
   many sync slots, so that an interactive change never waits for it */
static unsigned int
replicator_background_limit(struct dovewarden_replicator *replicator)
{
	unsigned int max = replicator->set->dovewarden_max_syncs;

	return max <= 1 ? max : max - I_MAX(1U, max / 4);
}

static unsigned int
replicator_background_running(struct dovewarden_replicator *replicator)
{
	struct replicator_sync *sync;
	unsigned int count = 0;

	array_foreach_elem(&replicator->syncs, sync) {
		if (sync->priority == DOVEWARDEN_PRIORITY_NONE)
			count++;
	}
	return count;
}

static void replicator_fill_redis_later(struct dovewarden_replicator *replicator,
					unsigned int msecs)
{
	timeout_remove(&replicator->to_fill);
	replicator->fill_now = FALSE;
	replicator->to_fill = timeout_add(msecs, replicator_fill, replicator);
}

static void
replicator_redis_pop_callback(struct dovewarden_redis_job *job,
			      int next_due_secs, const char *error,
			      void *context)
{
	struct dovewarden_replicator *replicator = context;

	replicator->redis_pop_running = FALSE;
	if (replicator->deinitializing) {
		/* the queue gives the claim back at its deinit */
		return;
	}
	if (error != NULL) {
		e_debug(replicator->event, "Claiming a user failed: %s",
			error);
		replicator_fill_redis_later(replicator,
					    REPLICATOR_REDIS_POLL_MSECS);
		return;
	}
	if (job == NULL) {
		/* nothing due (or only background work while its slots are
		   taken): poll, other instances' changes appear there */
		replicator_fill_redis_later(replicator,
			next_due_secs >= 0 && next_due_secs * 1000 <
			REPLICATOR_REDIS_POLL_MSECS ?
			I_MAX(next_due_secs, 0) * 1000 + 10 :
			REPLICATOR_REDIS_POLL_MSECS);
		return;
	}
	T_BEGIN {
		replicator_sync_start(replicator, &job->user,
				      job->user.syncing_priority);
	} T_END;
	replicator_fill_soon(replicator);
}

static void replicator_fill_redis(struct dovewarden_replicator *replicator)
{
	bool allow_background;

	if (replicator->redis_pop_running)
		return;
	if (array_count(&replicator->syncs) >=
	    replicator->set->dovewarden_max_syncs) {
		/* a finishing sync calls us again */
		return;
	}
	allow_background = replicator_background_running(replicator) <
		replicator_background_limit(replicator);
	if (dovewarden_redis_queue_pop(replicator->rqueue, allow_background,
				       replicator_redis_pop_callback,
				       replicator) < 0) {
		/* not connected: the connected callback calls us again */
		return;
	}
	replicator->redis_pop_running = TRUE;
}

static void replicator_fill(struct dovewarden_replicator *replicator)
{
	const struct dovewarden_user *next;
	struct dovewarden_user *user;
	enum dovewarden_priority priority;
	time_t next_due;
	unsigned int secs;

	timeout_remove(&replicator->to_fill);
	replicator->fill_now = FALSE;

	if (replicator->rqueue != NULL) {
		replicator_fill_redis(replicator);
		return;
	}
	while (array_count(&replicator->syncs) <
	       replicator->set->dovewarden_max_syncs) {
		next = dovewarden_queue_peek(replicator->queue, ioloop_time);
		if (next == NULL)
			break;
		if (next->priority == DOVEWARDEN_PRIORITY_NONE &&
		    replicator_background_running(replicator) >=
		    replicator_background_limit(replicator)) {
			/* the rest is background work: a finishing sync
			   or a new change calls us again */
			return;
		}
		user = dovewarden_queue_pop(replicator->queue, ioloop_time);
		i_assert(user == next);
		priority = user->syncing_priority;
		T_BEGIN {
			replicator_sync_start(replicator, user, priority);
		} T_END;
		if (replicator->fill_now) {
			/* a sync finished at once and asked for a refill:
			   keep going in this loop instead */
			timeout_remove(&replicator->to_fill);
			replicator->fill_now = FALSE;
		}
	}
	if (array_count(&replicator->syncs) >=
	    replicator->set->dovewarden_max_syncs) {
		/* a finishing sync calls us again */
		return;
	}

	next_due = dovewarden_queue_next_due(replicator->queue);
	if (next_due == 0)
		return;
	/* a user due now that pop() did not return would make this a busy
	   loop: wait at least a second */
	secs = next_due <= ioloop_time ? 1 :
		I_MIN(next_due - ioloop_time, REPLICATOR_FILL_MAX_SECS);
	replicator->to_fill = timeout_add(secs * 1000, replicator_fill,
					  replicator);
}

static void
replicator_journal_error(struct dovewarden_replicator *replicator,
			 const char *error)
{
	if (replicator->journal_error_logged != ioloop_time) {
		replicator->journal_error_logged = ioloop_time;
		e_error(replicator->event, "%s", error);
	}
}

void dovewarden_replicator_notify(struct dovewarden_replicator *replicator,
				  const char *username,
				  enum dovewarden_priority priority)
{
	const char *error;

	i_assert(dovewarden_username_is_valid(username));

	if (replicator->rqueue != NULL) {
		dovewarden_redis_queue_notify(replicator->rqueue, username,
					      priority, FALSE);
		replicator_fill_soon(replicator);
		return;
	}
	/* journal first: after a kill -9 the change is replayed at start */
	if (replicator->store != NULL &&
	    dovewarden_store_journal_notify(replicator->store,
					    replicator->queue, username,
					    priority, &error) < 0)
		replicator_journal_error(replicator, error);
	(void)dovewarden_queue_notify(replicator->queue, username, priority,
				      ioloop_time);
	replicator_fill_soon(replicator);
}

void
dovewarden_replicator_force_full_sync(struct dovewarden_replicator *replicator,
				      const char *username,
				      enum dovewarden_priority priority)
{
	struct dovewarden_user *user;
	const char *error;

	i_assert(dovewarden_username_is_valid(username));

	if (replicator->rqueue != NULL) {
		dovewarden_redis_queue_notify(replicator->rqueue, username,
					      priority, TRUE);
		replicator_fill_soon(replicator);
		return;
	}
	if (replicator->store != NULL &&
	    dovewarden_store_journal_force_full_sync(replicator->store,
						     replicator->queue,
						     username, priority,
						     &error) < 0)
		replicator_journal_error(replicator, error);
	user = dovewarden_queue_lookup(replicator->queue, username);
	if (user == NULL) {
		user = dovewarden_queue_add(replicator->queue, username,
					    ioloop_time);
	}
	dovewarden_queue_force_full_sync(replicator->queue, user, priority,
					 ioloop_time);
	replicator_fill_soon(replicator);
}

struct replicator_redis_wait_ref {
	struct dovewarden_replicator *replicator;
	unsigned int wait_id;
};

static void replicator_redis_wait_seq(bool success, uint64_t seq,
				      void *context)
{
	struct replicator_redis_wait_ref *ref = context;
	struct dovewarden_replicator_wait *wait;

	/* the wait may be gone (answered, timed out, cancelled) */
	for (wait = ref->replicator->waits; wait != NULL; wait = wait->next) {
		if (wait->id == ref->wait_id)
			break;
	}
	i_free(ref);
	if (wait == NULL || !success)
		return;
	wait->redis_seq = seq;
	wait->redis_seq_known = TRUE;
	if (wait->redis_ok_seq_seen > seq)
		replicator_wait_answer(wait, TRUE, NULL);
}

static void
replicator_redis_sync_done(const char *username, uint64_t seq,
			   const char *result, void *context)
{
	struct dovewarden_replicator *replicator = context;
	struct dovewarden_replicator_wait *wait, *next;
	bool success = strcmp(result, "ok") == 0;

	/* CHANGED and temporary failures are no answer: the retry is */
	if (!success && strcmp(result, "nouser") != 0 &&
	    strcmp(result, "config") != 0)
		return;
	for (wait = replicator->waits; wait != NULL; wait = next) {
		next = wait->next;
		if (strcmp(wait->username, username) != 0)
			continue;
		if (!wait->redis_seq_known) {
			if (success && seq > wait->redis_ok_seq_seen)
				wait->redis_ok_seq_seen = seq;
		} else if (seq > wait->redis_seq) {
			replicator_wait_answer(wait, success, success ? NULL :
				t_strdup_printf("Sync failed (%s)", result));
		}
	}
}

static void replicator_wait_timeout(struct dovewarden_replicator_wait *wait)
{
	replicator_wait_answer(wait, FALSE, "Timed out waiting for sync");
}

struct dovewarden_replicator_wait *
dovewarden_replicator_wait(struct dovewarden_replicator *replicator,
			   const char *username, unsigned int timeout_msecs,
			   dovewarden_replicator_wait_callback_t *callback,
			   void *context)
{
	struct dovewarden_replicator_wait *wait;

	wait = i_new(struct dovewarden_replicator_wait, 1);
	wait->replicator = replicator;
	wait->username = i_strdup(username);
	wait->registered_seq = replicator->sync_seq;
	wait->callback = callback;
	wait->context = context;
	wait->to = timeout_add(timeout_msecs, replicator_wait_timeout, wait);
	wait->id = ++replicator->wait_id_counter;
	DLLIST_PREPEND(&replicator->waits, wait);

	if (replicator->rqueue != NULL) {
		/* the sync may run on another instance: its claim sequence
		   tells whether it started after this change */
		struct replicator_redis_wait_ref *ref;

		ref = i_new(struct replicator_redis_wait_ref, 1);
		ref->replicator = replicator;
		ref->wait_id = wait->id;
		dovewarden_redis_queue_notify_seq(replicator->rqueue, username,
						  replicator_redis_wait_seq,
						  ref);
		replicator_fill_soon(replicator);
		return wait;
	}
	dovewarden_replicator_notify(replicator, username,
				     DOVEWARDEN_PRIORITY_SYNC);
	return wait;
}

void
dovewarden_replicator_wait_cancel(struct dovewarden_replicator_wait **_wait)
{
	struct dovewarden_replicator_wait *wait = *_wait;

	if (wait == NULL)
		return;
	*_wait = NULL;
	replicator_wait_free(wait);
}

bool dovewarden_replicator_add_user(struct dovewarden_replicator *replicator,
				    const char *username)
{
	if (replicator->rqueue != NULL) {
		dovewarden_redis_queue_notify(replicator->rqueue, username,
					      DOVEWARDEN_PRIORITY_NONE, FALSE);
		return TRUE;
	}
	if (dovewarden_queue_lookup(replicator->queue, username) != NULL)
		return FALSE;
	(void)dovewarden_queue_add(replicator->queue, username, ioloop_time);
	return TRUE;
}

struct dovewarden_redis_queue *
dovewarden_replicator_get_redis_queue(struct dovewarden_replicator *replicator)
{
	return replicator->rqueue;
}

void dovewarden_replicator_get_syncing_users(
	struct dovewarden_replicator *replicator,
	ARRAY_TYPE(dovewarden_user_p) *users)
{
	struct replicator_sync *sync;

	array_foreach_elem(&replicator->syncs, sync) {
		if (!sync->user->removed)
			array_push_back(users, &sync->user);
	}
}

struct dovewarden_queue *
dovewarden_replicator_get_queue(struct dovewarden_replicator *replicator)
{
	return replicator->queue;
}

const struct dovewarden_queue_settings *
dovewarden_replicator_get_queue_settings(
	struct dovewarden_replicator *replicator)
{
	return &replicator->queue_set;
}

void
dovewarden_replicator_queue_changed(struct dovewarden_replicator *replicator)
{
	replicator_fill_soon(replicator);
}

unsigned int
dovewarden_replicator_get_running_count(
	struct dovewarden_replicator *replicator)
{
	return array_count(&replicator->syncs);
}

const char *
dovewarden_replicator_get_sync_state(struct dovewarden_replicator *replicator,
				     const struct dovewarden_user *user)
{
	struct replicator_sync *sync;

	array_foreach_elem(&replicator->syncs, sync) {
		if (sync->user != user)
			continue;
		if (sync->dsync == NULL)
			return "looking up the user";
		return dovewarden_doveadm_sync_get_state(sync->dsync);
	}
	return NULL;
}
