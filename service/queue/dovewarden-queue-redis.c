/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "hostpid.h"
#include "hex-binary.h"
#include "randgen.h"
#include "mkdir-parents.h"
#include "safe-mkstemp.h"
#include "write-full.h"
#include "str.h"
#include "wildcard-match.h"
#include "dovewarden-settings.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-redis-queue.h"
#include "dovewarden-redis-import.h"
#include "dovewarden-queue-backend-private.h"

#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>

/* The Redis backend: the queue of dovewarden-redis-queue.h, shared by
   every instance that uses the same Redis database and key prefix. */

/* Other instances' notifications are seen by polling the shared queue
   this often (our own start syncs at once) */
#define REDIS_BACKEND_POLL_MSECS 1000
/* A status iteration reads the users' fields this many at once */
#define REDIS_BACKEND_GET_BATCH 200

struct redis_backend {
	struct dovewarden_queue_backend backend;

	struct dovewarden_queue_settings set;
	struct dovewarden_redis_queue *rqueue;
	char *owner;
	/* <host name>:<id kept in state_dir>, NULL without a state_dir */
	char *identity;
	/* the built-in queue's state being moved into Redis */
	struct dovewarden_redis_import *import;
};

struct redis_backend_job {
	struct dovewarden_queue_job job;
	struct dovewarden_redis_job *rjob;
};

/* A callback's context: what to call, and for whom */
struct redis_backend_request {
	struct redis_backend *rb;
	void *callback;
	void *context;
};

struct redis_backend_iter {
	struct dovewarden_queue_backend_iter iter;
	pool_t pool;
	const char *mask;
	/* matching usernames, sorted once the listing ended */
	ARRAY_TYPE(const_string) names;
	/* the next name to read, and the statuses read for names
	   [pos - count, pos) */
	unsigned int pos;
	ARRAY(struct dovewarden_admin_user_status) statuses;
	unsigned int status_idx;
	char *error;
	/* a Redis request is running (its callback frees us after deinit) */
	bool running:1;
	bool listed:1;
	bool deinitialized:1;
};

#define REDIS_BACKEND(_backend) \
	(container_of(_backend, struct redis_backend, backend))
#define REDIS_BACKEND_JOB(_job) \
	(container_of(_job, struct redis_backend_job, job))

static const char *redis_not_connected = "Redis is not connected";

static struct redis_backend_request *
redis_backend_request(struct redis_backend *rb, void *callback, void *context)
{
	struct redis_backend_request *req;

	req = i_new(struct redis_backend_request, 1);
	req->rb = rb;
	req->callback = callback;
	req->context = context;
	return req;
}

static bool redis_result_parse(const char *str,
			       enum dovewarden_sync_result *result_r)
{
	for (enum dovewarden_sync_result r = DOVEWARDEN_SYNC_RESULT_OK;
	     r <= DOVEWARDEN_SYNC_RESULT_CONFIG; r++) {
		if (strcmp(dovewarden_sync_result_to_str(r), str) == 0) {
			*result_r = r;
			return TRUE;
		}
	}
	return FALSE;
}

static void redis_backend_connected(void *context)
{
	struct redis_backend *rb = context;

	if (rb->import != NULL &&
	    dovewarden_redis_import_run(rb->import, rb->rqueue))
		dovewarden_redis_import_deinit(&rb->import);
	dovewarden_queue_backend_ready(&rb->backend);
}

static void
redis_backend_sync_done(const char *username, uint64_t seq,
			const char *result_str, void *context)
{
	struct redis_backend *rb = context;
	enum dovewarden_sync_result result;

	/* "release" and unknown results are no sync */
	if (redis_result_parse(result_str, &result)) {
		dovewarden_queue_backend_sync_done(&rb->backend, username,
						   seq, result, NULL);
	}
}

static const struct dovewarden_redis_queue_callbacks redis_backend_callbacks = {
	.connected = redis_backend_connected,
	.sync_done = redis_backend_sync_done,
};

/* The random part of the identity: made at the first start, kept in
   <state path>.instance. Returns NULL (logged) when it can't be kept. */
static const char *
redis_backend_instance_id(const char *path, struct event *event)
{
	unsigned char rand[8];
	char buf[64];
	string_t *tmp_path;
	const char *id, *dir;
	ssize_t ret;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd != -1) {
		ret = read(fd, buf, sizeof(buf) - 1);
		i_close_fd(&fd);
		if (ret > 0) {
			buf[ret] = '\0';
			id = t_strcut(buf, '\n');
			if (id[0] != '\0')
				return t_strdup(id);
		}
	} else if (errno != ENOENT) {
		e_error(event, "open(%s) failed: %m", path);
		return NULL;
	}

	random_fill(rand, sizeof(rand));
	id = binary_to_hex(rand, sizeof(rand));
	dir = strrchr(path, '/') == NULL ? "." :
		t_strdup_until(path, strrchr(path, '/'));
	if (mkdir_parents(dir, 0700) < 0 && errno != EEXIST) {
		e_error(event, "mkdir(%s) failed: %m", dir);
		return NULL;
	}
	tmp_path = t_str_new(128);
	str_append(tmp_path, path);
	fd = safe_mkstemp(tmp_path, 0600, (uid_t)-1, (gid_t)-1);
	if (fd == -1) {
		e_error(event, "safe_mkstemp(%s) failed: %m", path);
		return NULL;
	}
	if (write_full(fd, t_strconcat(id, "\n", NULL), strlen(id) + 1) < 0 ||
	    fsync(fd) < 0 || rename(str_c(tmp_path), path) < 0) {
		e_error(event, "Couldn't write %s: %m", path);
		i_unlink(str_c(tmp_path));
		id = NULL;
	}
	i_close_fd(&fd);
	return id;
}

static struct dovewarden_queue_backend *
redis_backend_init(const struct dovewarden_queue_backend_settings *bset,
		   struct event *event, const char **error_r)
{
	const struct dovewarden_settings *set = bset->set;
	struct dovewarden_redis_queue_settings rset;
	struct redis_backend *rb;

	rb = i_new(struct redis_backend, 1);
	rb->backend.event = event;
	rb->set = bset->queue;
	/* The identity stays across restarts, so that a restarted instance
	   gives the claims of its previous run back at once; the host name
	   alone is not enough (containers may share it). The owner is
	   unique also across restarts: a claim of the previous run must not
	   look like ours. */
	if (bset->state_path != NULL) {
		const char *id = redis_backend_instance_id(
			t_strconcat(bset->state_path, ".instance", NULL),
			event);

		if (id != NULL)
			rb->identity = i_strdup_printf("%s:%s", my_hostname,
						       id);
	}
	if (rb->identity != NULL) {
		rb->owner = i_strdup_printf("%s:%s:%x", rb->identity, my_pid,
					    i_rand());
	} else {
		rb->owner = i_strdup_printf("%s:%s:%x", my_hostname, my_pid,
					    i_rand());
	}
	i_zero(&rset);
	rset.redis.host = set->dovewarden_redis_host;
	rset.redis.port = set->dovewarden_redis_port;
	rset.redis.username = set->dovewarden_redis_username;
	rset.redis.password = set->dovewarden_redis_password;
	rset.redis.db = set->dovewarden_redis_db;
	rset.redis.timeout_msecs = set->dovewarden_redis_timeout;
	rset.redis.ssl = set->dovewarden_redis_ssl;
	rset.redis.ssl_ca_file = set->dovewarden_redis_ssl_ca_file;
	rset.redis.ssl_cert_file = set->dovewarden_redis_ssl_cert_file;
	rset.redis.ssl_key_file = set->dovewarden_redis_ssl_key_file;
	rset.redis.ssl_server_name = set->dovewarden_redis_ssl_server_name;
	rset.queue = bset->queue;
	rset.prefix = set->dovewarden_redis_prefix;
	rset.owner = rb->owner;
	rset.identity = rb->identity;
	rset.server = bset->server;
	rset.claim_timeout_secs = set->dovewarden_redis_claim_timeout;
	rset.buffer_limit = set->dovewarden_redis_buffer_limit;
	if (bset->state_path != NULL) {
		rset.buffer_path = t_strconcat(bset->state_path,
			".redis-buffer", NULL);
		const char *error;

		rb->import = dovewarden_redis_import_init(bset->state_path,
							  &rb->set, event,
							  &error);
		if (rb->import == NULL && error == NULL &&
		    bset->replicator_db_path != NULL) {
			rb->import = dovewarden_redis_import_init_replicator_db(
				bset->replicator_db_path, bset->state_path,
				&rb->set, event, &error);
		}
		if (error != NULL) {
			/* as the built-in queue does with a state it can't
			   read: no start without it */
			*error_r = error;
			i_free(rb->identity);
			i_free(rb->owner);
			i_free(rb);
			return NULL;
		}
	}
	rb->rqueue = dovewarden_redis_queue_init(&rset, event,
						 &redis_backend_callbacks, rb);
	e_info(event, "Queue in Redis at %s%s, database %u, key prefix '%s' "
	       "(this instance: %s)",
	       dovewarden_redis_settings_address(&rset.redis),
	       rset.redis.ssl ? " (TLS)" : "",
	       set->dovewarden_redis_db, set->dovewarden_redis_prefix,
	       rb->owner);
	return &rb->backend;
}

static void redis_backend_deinit(struct dovewarden_queue_backend *backend)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);

	/* writes the buffer and gives the claims back */
	dovewarden_redis_queue_deinit(&rb->rqueue);
	dovewarden_redis_import_deinit(&rb->import);
	i_free(rb->owner);
	i_free(rb->identity);
	i_free(rb);
}

static bool redis_backend_is_ready(struct dovewarden_queue_backend *backend,
				   const char **reason_r)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);

	if (dovewarden_redis_queue_is_connected(rb->rqueue))
		return TRUE;
	*reason_r = "Redis queue backend is not connected "
		"(notifications are buffered)";
	return FALSE;
}

static void
redis_backend_notify(struct dovewarden_queue_backend *backend,
		     const char *username, enum dovewarden_priority priority,
		     enum dovewarden_queue_notify_flags flags)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);

	dovewarden_redis_queue_notify_kind(rb->rqueue, username, priority,
		(flags & DOVEWARDEN_QUEUE_NOTIFY_FLAG_FULL_SYNC) != 0,
		(flags & DOVEWARDEN_QUEUE_NOTIFY_FLAG_ANY_SERVER) != 0,
		dovewarden_queue_notify_settle_kind(flags));
}

static bool
redis_backend_add(struct dovewarden_queue_backend *backend,
		  const char *username)
{
	redis_backend_notify(backend, username, DOVEWARDEN_PRIORITY_NONE, 0);
	/* Redis is not asked */
	return TRUE;
}

static void
redis_backend_notify_wait(struct dovewarden_queue_backend *backend,
			  const char *username,
			  enum dovewarden_queue_notify_flags flags,
			  dovewarden_queue_backend_wait_callback_t *callback,
			  void *context)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);

	/* the sync may run on another instance: the user's claim sequence
	   tells whether it started after this change */
	dovewarden_redis_queue_notify_seq(rb->rqueue, username,
		dovewarden_queue_notify_settle_kind(flags), callback, context);
}

static void redis_backend_remove_callback(int ret, const char *error,
					  void *context)
{
	struct redis_backend_request *req = context;
	dovewarden_queue_backend_remove_callback_t *callback = req->callback;
	void *callback_context = req->context;

	i_free(req);
	callback(ret, error, callback_context);
}

static void
redis_backend_remove(struct dovewarden_queue_backend *backend,
		     const char *username,
		     dovewarden_queue_backend_remove_callback_t *callback,
		     void *context)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_request *req;

	req = redis_backend_request(rb, callback, context);
	if (dovewarden_redis_queue_remove(rb->rqueue, username,
					  redis_backend_remove_callback,
					  req) < 0) {
		i_free(req);
		callback(-1, redis_not_connected, context);
	}
}

static void
redis_backend_pop_callback(struct dovewarden_redis_job *rjob,
			   int next_due_secs, const char *error,
			   void *context)
{
	struct redis_backend_request *req = context;
	struct redis_backend *rb = req->rb;
	dovewarden_queue_backend_pop_callback_t *callback = req->callback;
	void *callback_context = req->context;
	struct redis_backend_job *bjob;
	int retry_msecs = REDIS_BACKEND_POLL_MSECS;

	i_free(req);
	if (rjob == NULL) {
		/* nothing due (or only background work while its slots are
		   taken): poll, other instances' changes appear there */
		if (error == NULL && next_due_secs == 0) {
			/* due now (e.g. an invalid claim was skipped) */
			retry_msecs = 10;
		}
		callback(NULL, retry_msecs, error, callback_context);
		return;
	}
	bjob = i_new(struct redis_backend_job, 1);
	bjob->rjob = rjob;
	bjob->job.backend = &rb->backend;
	bjob->job.username = rjob->username;
	bjob->job.state = rjob->state;
	bjob->job.priority = rjob->priority;
	bjob->job.seq = rjob->seq;
	bjob->job.consecutive_failures = rjob->consecutive_failures;
	bjob->job.last_error = rjob->last_error;
	bjob->job.full = rjob->full;
	bjob->job.settle = rjob->settle;
	callback(&bjob->job, 0, NULL, callback_context);
}

static void
redis_backend_pop(struct dovewarden_queue_backend *backend,
		  bool allow_background,
		  dovewarden_queue_backend_pop_callback_t *callback,
		  void *context)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_request *req;

	req = redis_backend_request(rb, callback, context);
	if (dovewarden_redis_queue_pop(rb->rqueue, allow_background,
				       redis_backend_pop_callback, req) < 0) {
		/* the ready callback pops again */
		i_free(req);
		callback(NULL, -1, redis_not_connected, context);
	}
}

static bool
redis_backend_job_changed(struct dovewarden_queue_backend *backend ATTR_UNUSED,
			  struct dovewarden_queue_job *job ATTR_UNUSED)
{
	/* not known here: the finish script ignores a repair when a change
	   arrived meanwhile */
	return FALSE;
}

static bool
redis_backend_job_removed(struct dovewarden_queue_backend *backend ATTR_UNUSED,
			  struct dovewarden_queue_job *job ATTR_UNUSED)
{
	/* a removed user's claim is lost: its finish changes nothing */
	return FALSE;
}

static bool
redis_backend_job_take_state_stale(struct dovewarden_queue_backend *backend ATTR_UNUSED,
				   struct dovewarden_queue_job *job)
{
	struct dovewarden_redis_job *rjob = REDIS_BACKEND_JOB(job)->rjob;
	bool stale = rjob->state_stale;

	/* a failed sync leaves the user's state and its last syncing
	   server alone: the retry is told again */
	rjob->state_stale = FALSE;
	return stale;
}

static void
redis_backend_finish(struct dovewarden_queue_backend *backend,
		     struct dovewarden_queue_job *job,
		     enum dovewarden_sync_result result,
		     const char *new_state, const char *error, bool repaired)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_job *bjob = REDIS_BACKEND_JOB(job);

	bjob->rjob->no_dsync = job->no_dsync;
	/* sync_done comes through Redis, also to the other instances */
	dovewarden_redis_queue_finish(rb->rqueue, &bjob->rjob, result,
				      new_state, error, repaired);
	i_free(bjob);
}

static void
redis_backend_release(struct dovewarden_queue_backend *backend,
		      struct dovewarden_queue_job *job)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_job *bjob = REDIS_BACKEND_JOB(job);

	dovewarden_redis_queue_release(rb->rqueue, &bjob->rjob);
	i_free(bjob);
}

static void
redis_backend_lock_callback(bool acquired, const char *error, void *context)
{
	struct redis_backend_request *req = context;
	dovewarden_queue_backend_lock_callback_t *callback = req->callback;
	void *callback_context = req->context;

	i_free(req);
	callback(acquired, error, callback_context);
}

static void
redis_backend_try_lock(struct dovewarden_queue_backend *backend,
		       const char *name, unsigned int secs,
		       dovewarden_queue_backend_lock_callback_t *callback,
		       void *context)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_request *req;

	req = redis_backend_request(rb, callback, context);
	if (dovewarden_redis_queue_try_lock(rb->rqueue, name, secs,
					    redis_backend_lock_callback,
					    req) < 0) {
		i_free(req);
		callback(FALSE, redis_not_connected, context);
	}
}

static void
redis_backend_retry_callback(long long count, const char *error, void *context)
{
	struct redis_backend_request *req = context;
	dovewarden_queue_backend_retry_callback_t *callback = req->callback;
	void *callback_context = req->context;

	i_free(req);
	if (callback != NULL) {
		callback(count < 0 ? 0 : count > UINT_MAX ? UINT_MAX :
			 (unsigned int)count, error, callback_context);
	}
}

static void
redis_backend_retry_failed(struct dovewarden_queue_backend *backend,
			   const char *username,
			   dovewarden_queue_backend_retry_callback_t *callback,
			   void *context)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_request *req;

	req = redis_backend_request(rb, callback, context);
	if (dovewarden_redis_queue_retry_failed(rb->rqueue, username,
						redis_backend_retry_callback,
						req) < 0) {
		i_free(req);
		if (callback != NULL)
			callback(0, redis_not_connected, context);
	}
}

static void
redis_backend_unlock(struct dovewarden_queue_backend *backend, const char *name)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);

	if (dovewarden_redis_queue_unlock(rb->rqueue, name) < 0) {
		e_warning(backend->event, "Couldn't release the %s lock: %s",
			  name, redis_not_connected);
	}
}

static void
redis_backend_counts_init(const struct dovewarden_redis_queue_stats *stats,
			  struct dovewarden_queue_counts *counts_r)
{
	i_zero(counts_r);
	counts_r->users = stats->users;
	counts_r->syncing = stats->syncing;
	memcpy(counts_r->pending, stats->pending_by_priority,
	       sizeof(counts_r->pending));
	counts_r->failed = stats->failed;
	counts_r->oldest_pending = stats->oldest_pending;
}

static void
redis_backend_get_counts(struct dovewarden_queue_backend *backend,
			 struct dovewarden_queue_counts *counts_r)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct dovewarden_redis_queue_stats stats;

	dovewarden_redis_queue_get_stats(rb->rqueue, &stats);
	redis_backend_counts_init(&stats, counts_r);
}

static void
redis_backend_stats_callback(const struct dovewarden_redis_queue_stats *stats,
			     const char *error, void *context)
{
	struct redis_backend_request *req = context;
	dovewarden_queue_backend_counts_callback_t *callback = req->callback;
	void *callback_context = req->context;
	struct dovewarden_queue_counts counts;

	i_free(req);
	if (stats == NULL) {
		callback(NULL, error, callback_context);
		return;
	}
	/* over the whole shared queue; failed_waiting and full_sync_due
	   are not counted */
	redis_backend_counts_init(stats, &counts);
	callback(&counts, NULL, callback_context);
}

static void
redis_backend_read_counts(struct dovewarden_queue_backend *backend,
			  dovewarden_queue_backend_counts_callback_t *callback,
			  void *context)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_request *req;

	req = redis_backend_request(rb, callback, context);
	if (dovewarden_redis_queue_read_stats(rb->rqueue,
					      redis_backend_stats_callback,
					      req) < 0) {
		i_free(req);
		callback(NULL, redis_not_connected, context);
	}
}

static void
redis_backend_get_metrics(struct dovewarden_queue_backend *backend,
			  ARRAY_TYPE(dovewarden_queue_metric) *metrics)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct dovewarden_queue_metric *m;
	unsigned int buffered;
	uint64_t dropped;

	dovewarden_redis_queue_get_buffer(rb->rqueue, &buffered, &dropped);
	m = array_append_space(metrics);
	m->name = "dovewarden_redis_connected";
	m->type = "gauge";
	m->help = "1 when the Redis queue backend is connected.";
	m->value = dovewarden_redis_queue_is_connected(rb->rqueue) ? 1 : 0;
	m = array_append_space(metrics);
	m->name = "dovewarden_redis_buffered_users";
	m->type = "gauge";
	m->help = "Users whose notifications wait in memory for Redis.";
	m->value = buffered;
	m = array_append_space(metrics);
	m->name = "dovewarden_redis_dropped_notifications_total";
	m->type = "counter";
	m->help = "Changes dropped because the buffer for Redis was full.";
	m->value = dropped;
	m = array_append_space(metrics);
	m->name = "dovewarden_redis_claims_taken_back_total";
	m->type = "counter";
	m->help = "Claims of this instance's previous run given back at "
		"start (it was killed or reloaded).";
	m->value = dovewarden_redis_queue_get_claims_taken_back(rb->rqueue);
}

/* status iteration: the known users are listed with SSCAN, the matching
   ones collected and sorted, then read and returned in batches */

static void redis_iter_free(struct redis_backend_iter *iter)
{
	array_free(&iter->names);
	array_free(&iter->statuses);
	i_free(iter->error);
	pool_unref(&iter->pool);
}

/* A request's callback: returns FALSE when the iteration was
   deinitialized meanwhile (then it is freed) */
static bool redis_iter_callback_begin(struct redis_backend_iter *iter)
{
	iter->running = FALSE;
	if (iter->deinitialized) {
		redis_iter_free(iter);
		return FALSE;
	}
	return TRUE;
}

static void redis_iter_fail(struct redis_backend_iter *iter, const char *error)
{
	if (iter->error == NULL)
		iter->error = i_strdup(error);
}

static void redis_iter_more(struct redis_backend_iter *iter)
{
	dovewarden_queue_backend_iter_more(&iter->iter);
}

static void
redis_iter_get_callback(const struct dovewarden_redis_user *const *users,
			unsigned int count, const char *error, void *context)
{
	struct redis_backend_iter *iter = context;
	struct redis_backend *rb = REDIS_BACKEND(iter->iter.backend);
	const char *const *names;
	struct dovewarden_admin_user_status *status;
	const struct dovewarden_redis_user *user;
	struct dovewarden_queue_next_sync next;
	unsigned int i;

	if (!redis_iter_callback_begin(iter))
		return;
	if (users == NULL)
		redis_iter_fail(iter, error);
	else {
		names = array_front(&iter->names);
		array_clear(&iter->statuses);
		iter->status_idx = 0;
		for (i = 0; i < count; i++) {
			if ((user = users[i]) == NULL)
				continue;
			status = array_append_space(&iter->statuses);
			status->username = names[iter->pos + i];
			status->priority = user->priority;
			status->last_fast_sync = user->last_fast_sync;
			status->last_full_sync = user->last_full_sync;
			status->last_successful_sync =
				user->last_successful_sync;
			status->last_verified = user->last_verified;
			status->last_repaired = user->last_repaired;
			status->consecutive_failures =
				user->consecutive_failures;
			status->last_error = p_strdup(iter->pool,
						      user->last_error);
			i_zero(&next);
			next.syncing = user->syncing;
			next.due = user->due;
			next.waiting = user->priority !=
				DOVEWARDEN_PRIORITY_NONE ||
				user->consecutive_failures > 0;
			next.last_full_sync = user->last_full_sync;
			status->next_sync_secs =
				dovewarden_queue_next_sync_secs(&next,
					rb->set.full_sync_interval_secs,
					ioloop_time);
		}
		iter->pos += count;
	}
	redis_iter_more(iter);
}

static void
redis_iter_scan_callback(const char *const *usernames, unsigned int count,
			 const char *next_cursor, const char *error,
			 void *context)
{
	struct redis_backend_iter *iter = context;
	struct redis_backend *rb = REDIS_BACKEND(iter->iter.backend);
	const char *name;
	unsigned int i;

	if (!redis_iter_callback_begin(iter))
		return;
	if (error != NULL) {
		redis_iter_fail(iter, t_strdup_printf(
			"Listing users in Redis failed: %s", error));
		redis_iter_more(iter);
		return;
	}
	for (i = 0; i < count; i++) {
		if (wildcard_match(usernames[i], iter->mask)) {
			name = p_strdup(iter->pool, usernames[i]);
			array_push_back(&iter->names, &name);
		}
	}
	if (strcmp(next_cursor, "0") != 0) {
		if (dovewarden_redis_queue_scan(rb->rqueue, next_cursor,
						redis_iter_scan_callback,
						iter) == 0) {
			iter->running = TRUE;
			return;
		}
		redis_iter_fail(iter, redis_not_connected);
	}
	/* SSCAN may return a name twice */
	array_sort(&iter->names, i_strcmp_p);
	for (i = 1; i < array_count(&iter->names); ) {
		if (strcmp(array_idx_elem(&iter->names, i - 1),
			   array_idx_elem(&iter->names, i)) == 0)
			array_delete(&iter->names, i, 1);
		else
			i++;
	}
	iter->listed = TRUE;
	redis_iter_more(iter);
}

static struct dovewarden_queue_backend_iter *
redis_backend_iter_init(struct dovewarden_queue_backend *backend,
			const char *mask)
{
	struct redis_backend *rb = REDIS_BACKEND(backend);
	struct redis_backend_iter *iter;
	pool_t pool;

	pool = pool_alloconly_create("redis status iter", 1024);
	iter = p_new(pool, struct redis_backend_iter, 1);
	iter->pool = pool;
	iter->mask = p_strdup(pool, mask);
	i_array_init(&iter->names, 64);
	i_array_init(&iter->statuses, REDIS_BACKEND_GET_BATCH);
	if (!dovewarden_admin_is_mask(mask)) {
		array_push_back(&iter->names, &iter->mask);
		iter->listed = TRUE;
	} else if (dovewarden_redis_queue_scan(rb->rqueue, "0",
					       redis_iter_scan_callback,
					       iter) == 0)
		iter->running = TRUE;
	else {
		redis_iter_fail(iter, redis_not_connected);
		iter->listed = TRUE;
	}
	return &iter->iter;
}

static bool
redis_backend_iter_next(struct dovewarden_queue_backend_iter *_iter,
			const struct dovewarden_admin_user_status **status_r)
{
	struct redis_backend_iter *iter =
		container_of(_iter, struct redis_backend_iter, iter);
	struct redis_backend *rb = REDIS_BACKEND(_iter->backend);
	const char *const *names;
	unsigned int count;

	if (iter->running) {
		_iter->has_more = TRUE;
		return FALSE;
	}
	if (iter->status_idx < array_count(&iter->statuses)) {
		*status_r = array_idx(&iter->statuses, iter->status_idx++);
		return TRUE;
	}
	if (iter->error != NULL || !iter->listed)
		return FALSE;
	names = array_get(&iter->names, &count);
	if (iter->pos == count)
		return FALSE;
	count = I_MIN(count - iter->pos, REDIS_BACKEND_GET_BATCH);
	if (dovewarden_redis_queue_get_users(rb->rqueue, names + iter->pos,
					     count, redis_iter_get_callback,
					     iter) < 0) {
		redis_iter_fail(iter, redis_not_connected);
		return FALSE;
	}
	iter->running = TRUE;
	_iter->has_more = TRUE;
	return FALSE;
}

static int redis_backend_iter_deinit(struct dovewarden_queue_backend_iter *_iter,
				     const char **error_r)
{
	struct redis_backend_iter *iter =
		container_of(_iter, struct redis_backend_iter, iter);
	int ret = 0;

	if (iter->error != NULL) {
		*error_r = t_strdup(iter->error);
		ret = -1;
	}
	if (iter->running) {
		/* freed by the running request's callback */
		iter->deinitialized = TRUE;
	} else {
		redis_iter_free(iter);
	}
	return ret;
}

const struct dovewarden_queue_backend_driver dovewarden_queue_backend_redis = {
	.name = "redis",
	.v = {
		.init = redis_backend_init,
		.deinit = redis_backend_deinit,
		.is_ready = redis_backend_is_ready,
		.notify = redis_backend_notify,
		.add = redis_backend_add,
		.notify_wait = redis_backend_notify_wait,
		.remove = redis_backend_remove,
		.pop = redis_backend_pop,
		.job_changed = redis_backend_job_changed,
		.job_removed = redis_backend_job_removed,
		.job_take_state_stale = redis_backend_job_take_state_stale,
		.finish = redis_backend_finish,
		.release = redis_backend_release,
		.try_lock = redis_backend_try_lock,
		.unlock = redis_backend_unlock,
		.retry_failed = redis_backend_retry_failed,
		.get_counts = redis_backend_get_counts,
		.read_counts = redis_backend_read_counts,
		.get_metrics = redis_backend_get_metrics,
		.iter_init = redis_backend_iter_init,
		.iter_next = redis_backend_iter_next,
		.iter_deinit = redis_backend_iter_deinit,
	},
};
