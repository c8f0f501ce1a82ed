/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "priorityq.h"
#include "str.h"
#include "ostream.h"
#include "connection.h"
#include "wildcard-match.h"
#include "master-service.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-redis-queue.h"
#include "dovewarden-admin.h"
#include "dovewarden-metrics.h"

/* Admin clients are root tools that send a command or two; one that stays
   silent this long is gone. */
#define ADMIN_INPUT_IDLE_TIMEOUT_SECS 60

/* A STATUS <mask> reply is sent in steps from the output's flush
   callback, so that a mask matching a million users does not stop the
   ioloop (and the notifications) for a second, nor build the whole reply
   in memory. The known users are walked this many per step and the
   matching usernames copied (users may be freed between the steps; each
   is looked up again when its line is sent), the names are sorted in
   chunks of ADMIN_STATUS_SORT_CHUNK, one chunk per step, and the sorted
   chunks are merged while the lines are sent. */
#define ADMIN_STATUS_COLLECT_PER_STEP 32768
#define ADMIN_STATUS_SORT_CHUNK 8192
/* Each step sends at most this many lines, and none while the output
   buffer holds this much */
#define ADMIN_STATUS_LINES_PER_STEP 2048
#define ADMIN_STATUS_OUTPUT_BUFFER_LIMIT (64 * 1024)
/* With the Redis backend, the users' fields are read this many at once */
#define ADMIN_REDIS_GET_BATCH 200

/* A sorted chunk of names being merged */
struct admin_status_run {
	/* first, as the priorityq needs */
	struct priorityq_item item;
	const char *const *names;
	unsigned int pos, end;
};

struct admin_status_reply {
	/* the copied usernames, the runs and this struct */
	pool_t pool;
	char *mask;
	/* walking the users; NULL once all matching names are copied */
	struct dovewarden_queue_iter *iter;
	/* the names (an array of the default pool: a growing array in an
	   alloconly pool would keep every old copy) */
	ARRAY_TYPE(const_string) names;
	struct admin_status_run *runs;
	unsigned int run_count, sorted_runs;
	/* runs that still have names; created after the last chunk is
	   sorted */
	struct priorityq *merge;
	/* the name of the previous line */
	const char *last_name;
	string_t *line;
};

/* STATUS <mask> or REPLICATE <mask> with the Redis backend: the known
   users are listed with SSCAN, the matching ones collected, and then
   either replicated or read and sent in batches */
struct admin_redis_op {
	pool_t pool;
	/* NULL once the client is gone: the pending callback frees us */
	struct admin_client *client;
	const char *mask;
	ARRAY_TYPE(const_string) names;
	unsigned int pos;
	bool replicate;
	enum dovewarden_priority priority;
	bool full_sync;
};

struct admin_client {
	struct connection conn;
	/* Redis backend: a command waiting for Redis; input waits */
	struct admin_redis_op *redis_op;
	/* ADD <mask> running; input waits until it has been answered */
	struct dovewarden_sweep *add_sweep;
	char *add_mask;
	/* STATUS <mask> reply being sent; input waits until it is done */
	struct admin_status_reply *status_reply;
};

struct admin_server {
	struct dovewarden_queue *queue;
	struct dovewarden_redis_queue *rqueue;
	struct dovewarden_queue_settings queue_set;
	struct dovewarden_admin_callbacks callbacks;
	struct event *event;
	struct connection_list *clients;
};

static struct event_category event_category_dovewarden = {
	.name = "dovewarden",
};

static struct admin_server *admin_server = NULL;

static void admin_reply_error(struct admin_client *client, const char *error)
{
	string_t *str = t_str_new(128);

	dovewarden_admin_append_error(str, error);
	o_stream_nsend(client->conn.output, str_data(str), str_len(str));
}

static void admin_reply_ok(struct admin_client *client, int count)
{
	string_t *str = t_str_new(16);

	dovewarden_admin_append_ok(str, count);
	o_stream_nsend(client->conn.output, str_data(str), str_len(str));
}

static void admin_send_stats(struct admin_client *client,
			     const struct dovewarden_queue_stats *stats)
{
	string_t *str = t_str_new(128);

	dovewarden_admin_append_stats(str, stats);
	o_stream_nsend(client->conn.output, str_data(str), str_len(str));
}

static void admin_redis_op_done(struct admin_redis_op *op);
static void admin_redis_op_free(struct admin_redis_op *op);
static struct admin_redis_op *
admin_redis_op_new(struct admin_client *client, const char *mask);

static void
admin_redis_stats_callback(const struct dovewarden_redis_queue_stats *rstats,
			   const char *error, void *context)
{
	struct admin_redis_op *op = context;
	struct dovewarden_queue_stats stats;

	if (op->client == NULL) {
		admin_redis_op_free(op);
		return;
	}
	if (rstats == NULL) {
		e_error(op->client->conn.event, "STATUS: %s", error);
		admin_reply_error(op->client, t_strdup_printf(
			"Reading the queue in Redis failed: %s", error));
		admin_redis_op_done(op);
		return;
	}
	/* over the whole shared queue; failed_waiting and full_sync_due
	   are not counted */
	i_zero(&stats);
	stats.users = rstats->users;
	stats.syncing = rstats->syncing;
	memcpy(stats.pending, rstats->pending_by_priority,
	       sizeof(stats.pending));
	stats.failed = rstats->failed;
	admin_send_stats(op->client, &stats);
	admin_redis_op_done(op);
}

/* Returns TRUE when the reply was sent, FALSE when it is sent later */
static bool admin_cmd_status(struct admin_client *client)
{
	struct dovewarden_queue_stats stats;
	struct admin_redis_op *op;

	if (admin_server->rqueue != NULL) {
		op = admin_redis_op_new(client, "");
		if (dovewarden_redis_queue_read_stats(admin_server->rqueue,
				admin_redis_stats_callback, op) < 0) {
			admin_reply_error(client, "Redis is not connected");
			admin_redis_op_done(op);
			return TRUE;
		}
		return FALSE;
	}
	dovewarden_queue_get_stats(admin_server->queue, ioloop_time, &stats);
	admin_send_stats(client, &stats);
	return TRUE;
}

static void admin_client_destroy(struct connection *conn);

static int admin_name_cmp(const void *p1, const void *p2)
{
	const char *const *name1 = p1, *const *name2 = p2;

	return strcmp(*name1, *name2);
}

static int admin_run_cmp(const void *p1, const void *p2)
{
	const struct admin_status_run *run1 = p1, *run2 = p2;

	return strcmp(run1->names[run1->pos], run2->names[run2->pos]);
}

static void admin_status_reply_free(struct admin_status_reply **_reply)
{
	struct admin_status_reply *reply = *_reply;

	if (reply == NULL)
		return;
	*_reply = NULL;
	if (reply->iter != NULL)
		dovewarden_queue_iter_deinit(&reply->iter);
	if (reply->merge != NULL)
		priorityq_deinit(&reply->merge);
	str_free(&reply->line);
	array_free(&reply->names);
	pool_unref(&reply->pool);
}

static void
admin_status_send_user(struct admin_client *client,
		       struct admin_status_reply *reply,
		       const struct dovewarden_user *user)
{
	struct dovewarden_admin_user_status status;

	dovewarden_admin_user_status_init(&status, user,
		admin_server->queue_set.full_sync_interval_secs, ioloop_time);
	str_truncate(reply->line, 0);
	dovewarden_admin_append_user_status(reply->line, &status);
	o_stream_nsend(client->conn.output, str_data(reply->line),
		       str_len(reply->line));
}

static void admin_status_merge_init(struct admin_status_reply *reply)
{
	unsigned int i;

	reply->merge = priorityq_init(admin_run_cmp,
				      I_MAX(reply->run_count, 1));
	for (i = 0; i < reply->run_count; i++) {
		if (reply->runs[i].pos < reply->runs[i].end)
			priorityq_add(reply->merge, &reply->runs[i].item);
	}
}

static void admin_status_runs_init(struct admin_status_reply *reply)
{
	const char *const *names;
	unsigned int i, count;

	names = array_get(&reply->names, &count);
	reply->run_count = (count + ADMIN_STATUS_SORT_CHUNK - 1) /
		ADMIN_STATUS_SORT_CHUNK;
	reply->runs = p_new(reply->pool, struct admin_status_run,
			    I_MAX(reply->run_count, 1));
	for (i = 0; i < reply->run_count; i++) {
		reply->runs[i].names = names;
		reply->runs[i].pos = i * ADMIN_STATUS_SORT_CHUNK;
		reply->runs[i].end = I_MIN(count,
			(i + 1) * ADMIN_STATUS_SORT_CHUNK);
	}
}

/* Copy the names of the next users that match; after the last one, set
   up the chunks to sort */
static void admin_status_collect(struct admin_status_reply *reply)
{
	struct dovewarden_user *user;
	const char *name;
	unsigned int i;

	for (i = 0; i < ADMIN_STATUS_COLLECT_PER_STEP; i++) {
		user = dovewarden_queue_iter_next(reply->iter);
		if (user == NULL) {
			dovewarden_queue_iter_deinit(&reply->iter);
			admin_status_runs_init(reply);
			return;
		}
		if (wildcard_match(user->username, reply->mask)) {
			name = p_strdup(reply->pool, user->username);
			array_push_back(&reply->names, &name);
		}
	}
}

/* One step of the reply. Returns TRUE when the reply is complete. */
static bool admin_status_reply_step(struct admin_client *client)
{
	struct admin_status_reply *reply = client->status_reply;
	struct ostream *output = client->conn.output;
	struct admin_status_run *run;
	struct dovewarden_user *user;
	const char *name;
	unsigned int lines;

	if (reply->iter != NULL) {
		admin_status_collect(reply);
		return FALSE;
	}
	if (reply->sorted_runs < reply->run_count) {
		run = &reply->runs[reply->sorted_runs++];
		qsort(array_idx_modifiable(&reply->names, run->pos),
		      run->end - run->pos,
		      sizeof(const char *), admin_name_cmp);
		return FALSE;
	}
	if (reply->merge == NULL)
		admin_status_merge_init(reply);

	for (lines = 0; lines < ADMIN_STATUS_LINES_PER_STEP; lines++) {
		if (o_stream_get_buffer_used_size(output) >=
		    ADMIN_STATUS_OUTPUT_BUFFER_LIMIT)
			return FALSE;
		run = (struct admin_status_run *)priorityq_pop(reply->merge);
		if (run == NULL) {
			o_stream_nsend_str(output, "\n");
			return TRUE;
		}
		name = run->names[run->pos++];
		if (run->pos < run->end)
			priorityq_add(reply->merge, &run->item);
		/* a user removed and added again while the users were
		   walked may have been seen twice */
		if (reply->last_name != NULL &&
		    strcmp(reply->last_name, name) == 0)
			continue;
		reply->last_name = name;
		/* a user removed since the names were collected is left
		   out */
		user = dovewarden_queue_lookup(admin_server->queue, name);
		if (user != NULL)
			admin_status_send_user(client, reply, user);
	}
	return FALSE;
}

static int admin_status_reply_flush(struct admin_client *client)
{
	struct connection *conn = &client->conn;

	if (o_stream_flush(conn->output) < 0) {
		e_debug(conn->event, "STATUS reply aborted: %s",
			o_stream_get_error(conn->output));
		admin_client_destroy(conn);
		return 1;
	}
	if (!admin_status_reply_step(client))
		return 0;

	admin_status_reply_free(&client->status_reply);
	o_stream_unset_flush_callback(conn->output);
	/* the commands that arrived meanwhile */
	connection_input_resume(conn);
	return 1;
}

static void admin_status_reply_start(struct admin_client *client,
				     const char *mask)
{
	struct admin_status_reply *reply;
	pool_t pool;

	i_assert(client->status_reply == NULL);

	pool = pool_alloconly_create("admin status reply", 64 * 1024);
	reply = p_new(pool, struct admin_status_reply, 1);
	reply->pool = pool;
	reply->mask = p_strdup(pool, mask);
	reply->line = str_new(default_pool, 256);
	i_array_init(&reply->names, 64);
	reply->iter = dovewarden_queue_iter_init(admin_server->queue);
	client->status_reply = reply;

	o_stream_set_flush_callback(client->conn.output,
				    admin_status_reply_flush, client);
	o_stream_set_flush_pending(client->conn.output, TRUE);
	/* the following commands are answered after this one */
	connection_input_halt(&client->conn);
}

static void admin_redis_op_free(struct admin_redis_op *op)
{
	if (op->client != NULL)
		op->client->redis_op = NULL;
	array_free(&op->names);
	pool_unref(&op->pool);
}

static void admin_redis_op_done(struct admin_redis_op *op)
{
	struct admin_client *client = op->client;

	admin_redis_op_free(op);
	connection_input_resume(&client->conn);
}

static void admin_redis_get_next(struct admin_redis_op *op);

static void
admin_redis_get_callback(const struct dovewarden_user *const *users,
			 unsigned int count, const char *error, void *context)
{
	struct admin_redis_op *op = context;
	struct admin_client *client = op->client;
	const char *const *names = array_front(&op->names);
	struct dovewarden_admin_user_status status;
	struct dovewarden_user user;
	string_t *str;
	unsigned int i;

	if (client == NULL) {
		admin_redis_op_free(op);
		return;
	}
	if (error != NULL) {
		e_error(client->conn.event, "STATUS: Reading users from "
			"Redis failed: %s", error);
		o_stream_nsend_str(client->conn.output, "\n");
		admin_redis_op_done(op);
		return;
	}
	str = t_str_new(256);
	for (i = 0; i < count; i++) {
		if (users[i] == NULL)
			continue;
		user = *users[i];
		user.username = (char *)names[op->pos + i];
		dovewarden_admin_user_status_init(&status, &user,
			admin_server->queue_set.full_sync_interval_secs,
			ioloop_time);
		str_truncate(str, 0);
		dovewarden_admin_append_user_status(str, &status);
		o_stream_nsend(client->conn.output, str_data(str),
			       str_len(str));
	}
	op->pos += count;
	admin_redis_get_next(op);
}

static void admin_redis_get_next(struct admin_redis_op *op)
{
	const char *const *names;
	unsigned int count;

	names = array_get(&op->names, &count);
	if (op->pos == count) {
		o_stream_nsend_str(op->client->conn.output, "\n");
		admin_redis_op_done(op);
		return;
	}
	count = I_MIN(count - op->pos, ADMIN_REDIS_GET_BATCH);
	if (dovewarden_redis_queue_get_users(admin_server->rqueue,
					     names + op->pos, count,
					     admin_redis_get_callback,
					     op) < 0) {
		e_error(op->client->conn.event,
			"STATUS: Redis is not connected");
		o_stream_nsend_str(op->client->conn.output, "\n");
		admin_redis_op_done(op);
	}
}

static void admin_replicate_user(const char *username,
				 enum dovewarden_priority priority,
				 bool full_sync);

static void admin_redis_collected(struct admin_redis_op *op)
{
	const char *username;

	if (!op->replicate) {
		array_sort(&op->names, i_strcmp_p);
		admin_redis_get_next(op);
		return;
	}
	array_foreach_elem(&op->names, username)
		admin_replicate_user(username, op->priority, op->full_sync);
	e_info(op->client->conn.event, "Replication requested for %u "
	       "user(s) (priority=%s%s)", array_count(&op->names),
	       dovewarden_priority_to_str(op->priority),
	       op->full_sync ? ", full sync" : "");
	admin_reply_ok(op->client, (int)I_MIN(array_count(&op->names),
					      INT_MAX));
	admin_redis_op_done(op);
}

static void
admin_redis_scan_callback(const char *const *usernames, unsigned int count,
			  const char *next_cursor, const char *error,
			  void *context)
{
	struct admin_redis_op *op = context;
	const char *name;
	unsigned int i;

	if (op->client == NULL) {
		admin_redis_op_free(op);
		return;
	}
	if (error != NULL) {
		e_error(op->client->conn.event, "Listing users in Redis "
			"failed: %s", error);
		if (op->replicate)
			admin_reply_error(op->client, error);
		else
			o_stream_nsend_str(op->client->conn.output, "\n");
		admin_redis_op_done(op);
		return;
	}
	for (i = 0; i < count; i++) {
		if (wildcard_match(usernames[i], op->mask)) {
			name = p_strdup(op->pool, usernames[i]);
			array_push_back(&op->names, &name);
		}
	}
	if (strcmp(next_cursor, "0") != 0 &&
	    dovewarden_redis_queue_scan(admin_server->rqueue, next_cursor,
					admin_redis_scan_callback, op) == 0)
		return;
	/* SSCAN may return a name twice */
	array_sort(&op->names, i_strcmp_p);
	for (i = 1; i < array_count(&op->names); ) {
		if (strcmp(array_idx_elem(&op->names, i - 1),
			   array_idx_elem(&op->names, i)) == 0)
			array_delete(&op->names, i, 1);
		else
			i++;
	}
	admin_redis_collected(op);
}

/* Input waits until admin_redis_op_done() */
static struct admin_redis_op *
admin_redis_op_new(struct admin_client *client, const char *mask)
{
	struct admin_redis_op *op;
	pool_t pool;

	pool = pool_alloconly_create("admin redis op", 1024);
	op = p_new(pool, struct admin_redis_op, 1);
	op->pool = pool;
	op->client = client;
	op->mask = p_strdup(pool, mask);
	i_array_init(&op->names, 64);
	client->redis_op = op;
	connection_input_halt(&client->conn);
	return op;
}

/* The reply is sent later; input waits for it */
static void
admin_redis_op_start(struct admin_client *client, const char *mask,
		     bool replicate, const struct dovewarden_admin_request *req)
{
	struct admin_redis_op *op;
	int ret;

	op = admin_redis_op_new(client, mask);
	op->replicate = replicate;
	if (req != NULL) {
		op->priority = req->priority;
		op->full_sync = req->full_sync;
	}

	if (!dovewarden_admin_is_mask(mask)) {
		array_push_back(&op->names, &op->mask);
		admin_redis_collected(op);
		return;
	}
	ret = dovewarden_redis_queue_scan(admin_server->rqueue, "0",
					  admin_redis_scan_callback, op);
	if (ret < 0) {
		e_error(client->conn.event, "Redis is not connected");
		if (replicate)
			admin_reply_error(client, "Redis is not connected");
		else
			o_stream_nsend_str(client->conn.output, "\n");
		admin_redis_op_done(op);
	}
}

/* Returns TRUE when the reply was sent, FALSE when it is sent later */
static bool admin_cmd_status_users(struct admin_client *client,
				   const char *mask)
{
	struct dovewarden_user *user;
	struct dovewarden_admin_user_status status;
	string_t *str;

	if (admin_server->rqueue != NULL) {
		admin_redis_op_start(client, mask, FALSE, NULL);
		return FALSE;
	}
	if (dovewarden_admin_is_mask(mask)) {
		admin_status_reply_start(client, mask);
		return FALSE;
	}
	/* one user: no need to walk them all */
	user = dovewarden_queue_lookup(admin_server->queue, mask);
	if (user != NULL) {
		str = t_str_new(256);
		dovewarden_admin_user_status_init(&status, user,
			admin_server->queue_set.full_sync_interval_secs,
			ioloop_time);
		dovewarden_admin_append_user_status(str, &status);
		o_stream_nsend(client->conn.output, str_data(str),
			       str_len(str));
	}
	o_stream_nsend_str(client->conn.output, "\n");
	return TRUE;
}

static int
admin_user_cmp(struct dovewarden_user *const *user1,
	       struct dovewarden_user *const *user2)
{
	return strcmp((*user1)->username, (*user2)->username);
}

static const char *admin_sync_type(const struct dovewarden_user *user)
{
	if (user->syncing_full)
		return "full";
	return user->state != NULL && user->state[0] != '\0' ?
		"incremental" : "normal";
}

static void admin_cmd_status_dsync(struct admin_client *client)
{
	const struct dovewarden_admin_callbacks *cb = &admin_server->callbacks;
	struct dovewarden_user *user;
	struct dovewarden_admin_dsync_status status;
	ARRAY_TYPE(dovewarden_user_p) users;
	string_t *str = t_str_new(256);

	/* only this instance's running syncs, not every known user;
	   sorted by username */
	t_array_init(&users, 16);
	cb->get_syncing_users(&users, cb->context);
	array_sort(&users, admin_user_cmp);

	array_foreach_elem(&users, user) {
		i_zero(&status);
		status.username = user->username;
		status.type = admin_sync_type(user);
		if (cb->sync_state != NULL)
			status.state = cb->sync_state(user, cb->context);
		if (status.state == NULL)
			status.state = "syncing";
		status.running_secs = ioloop_time <= user->last_fast_sync ? 0 :
			(unsigned int)(ioloop_time - user->last_fast_sync);
		str_truncate(str, 0);
		dovewarden_admin_append_dsync_status(str, &status);
		o_stream_nsend(client->conn.output, str_data(str),
			       str_len(str));
	}
	o_stream_nsend_str(client->conn.output, "\n");
}

static void admin_replicate_user(const char *username,
				 enum dovewarden_priority priority,
				 bool full_sync)
{
	const struct dovewarden_admin_callbacks *cb = &admin_server->callbacks;

	cb->replicate(username, priority, full_sync, cb->context);
}

static int admin_cmd_replicate(const struct dovewarden_admin_request *req)
{
	struct dovewarden_queue *queue = admin_server->queue;
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	ARRAY_TYPE(const_string) usernames;
	const char *username;

	if (!dovewarden_admin_is_mask(req->mask)) {
		admin_replicate_user(req->mask, req->priority,
				     req->full_sync);
		return 1;
	}

	/* the queue must not change while it is iterated */
	t_array_init(&usernames, 64);
	iter = dovewarden_queue_iter_init(queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		if (wildcard_match(user->username, req->mask)) {
			username = t_strdup(user->username);
			array_push_back(&usernames, &username);
		}
	}
	dovewarden_queue_iter_deinit(&iter);

	array_foreach_elem(&usernames, username)
		admin_replicate_user(username, req->priority,
				     req->full_sync);
	return (int)I_MIN(array_count(&usernames), INT_MAX);
}

static void admin_queue_changed(void)
{
	const struct dovewarden_admin_callbacks *cb = &admin_server->callbacks;

	cb->queue_changed(cb->context);
}

static void
admin_add_users_finished(const struct dovewarden_sweep_result *result,
			 void *context)
{
	struct admin_client *client = context;

	client->add_sweep = NULL;
	o_stream_cork(client->conn.output);
	if (result->error != NULL) {
		e_error(client->conn.event, "ADD %s failed (%u users added "
			"before the failure): %s", client->add_mask,
			result->added, result->error);
		admin_reply_error(client, t_strdup_printf(
			"Userdb iteration failed (%u users added before the "
			"failure): %s", result->added, result->error));
	} else {
		e_info(client->conn.event, "ADD %s: %u users listed, %u of "
		       "them new%s", client->add_mask, result->listed,
		       result->added, result->invalid == 0 ? "" :
		       t_strdup_printf(" (%u invalid names skipped)",
				       result->invalid));
		admin_reply_ok(client, (int)I_MIN(result->added, INT_MAX));
	}
	o_stream_uncork(client->conn.output);
	i_free(client->add_mask);
	if (result->added > 0)
		admin_queue_changed();
	connection_input_resume(&client->conn);
}

/* Returns TRUE when the reply was sent, FALSE when it is sent later */
static bool admin_cmd_add(struct admin_client *client, const char *mask)
{
	const struct dovewarden_admin_callbacks *cb = &admin_server->callbacks;

	if (!dovewarden_admin_is_mask(mask)) {
		(void)cb->add_user(mask, cb->context);
		e_info(client->conn.event, "Added user %s", mask);
		admin_reply_ok(client, 1);
		admin_queue_changed();
		return TRUE;
	}
	if (cb->add_users == NULL) {
		admin_reply_error(client, "User masks are not supported");
		return TRUE;
	}
	i_assert(client->add_sweep == NULL);
	client->add_mask = i_strdup(mask);
	client->add_sweep = cb->add_users(mask, admin_add_users_finished,
					  client, cb->context);
	/* the following commands are answered after this one */
	connection_input_halt(&client->conn);
	return FALSE;
}

static void
admin_redis_remove_callback(int ret, const char *error, void *context)
{
	struct admin_redis_op *op = context;
	struct admin_client *client = op->client;

	if (client == NULL) {
		admin_redis_op_free(op);
		return;
	}
	if (ret < 0) {
		e_error(client->conn.event, "REMOVE %s: %s", op->mask, error);
		admin_reply_error(client, error);
	} else if (ret == 0) {
		e_info(client->conn.event, "REMOVE: %s",
		       DOVEWARDEN_ADMIN_ERROR_USER_NOT_FOUND);
		admin_reply_error(client, DOVEWARDEN_ADMIN_ERROR_USER_NOT_FOUND);
	} else {
		e_info(client->conn.event, "Removed user %s", op->mask);
		admin_reply_ok(client, -1);
	}
	admin_redis_op_done(op);
}

/* Returns TRUE when the reply was sent, FALSE when it is sent later */
static bool admin_redis_remove(struct admin_client *client,
			       const char *username)
{
	struct admin_redis_op *op = admin_redis_op_new(client, username);

	if (dovewarden_redis_queue_remove(admin_server->rqueue, username,
					  admin_redis_remove_callback,
					  op) < 0) {
		admin_reply_error(client, "Redis is not connected");
		admin_redis_op_done(op);
		return TRUE;
	}
	return FALSE;
}

static int admin_cmd_remove(const char *username, const char **error_r)
{
	struct dovewarden_user *user;

	user = dovewarden_queue_lookup(admin_server->queue, username);
	if (user == NULL) {
		*error_r = DOVEWARDEN_ADMIN_ERROR_USER_NOT_FOUND;
		return -1;
	}
	dovewarden_queue_remove(admin_server->queue, user);
	return 0;
}

/* Returns FALSE when the reply comes later (input must stop) */
static bool
admin_client_handle(struct admin_client *client,
		    const struct dovewarden_admin_request *req)
{
	const char *error;
	int count;

	switch (req->cmd) {
	case DOVEWARDEN_ADMIN_CMD_STATUS:
		return admin_cmd_status(client);
	case DOVEWARDEN_ADMIN_CMD_STATUS_USERS:
		return admin_cmd_status_users(client, req->mask);
	case DOVEWARDEN_ADMIN_CMD_STATUS_DSYNC:
		admin_cmd_status_dsync(client);
		return TRUE;
	case DOVEWARDEN_ADMIN_CMD_REPLICATE:
		if (admin_server->rqueue != NULL &&
		    dovewarden_admin_is_mask(req->mask)) {
			admin_redis_op_start(client, req->mask, TRUE, req);
			return FALSE;
		}
		/* the replicate callback journals and schedules */
		count = admin_cmd_replicate(req);
		e_info(client->conn.event,
		       "Replication requested for %d user(s) "
		       "(priority=%s%s)", count,
		       dovewarden_priority_to_str(req->priority),
		       req->full_sync ? ", full sync" : "");
		admin_reply_ok(client, count);
		return TRUE;
	case DOVEWARDEN_ADMIN_CMD_ADD:
		return admin_cmd_add(client, req->mask);
	case DOVEWARDEN_ADMIN_CMD_REMOVE:
		if (admin_server->rqueue != NULL)
			return admin_redis_remove(client, req->mask);
		if (admin_cmd_remove(req->mask, &error) < 0) {
			e_info(client->conn.event, "REMOVE: %s", error);
			admin_reply_error(client, error);
			return TRUE;
		}
		e_info(client->conn.event, "Removed user %s", req->mask);
		admin_reply_ok(client, -1);
		admin_queue_changed();
		return TRUE;
	}
	i_unreached();
}

static int
admin_client_input_args(struct connection *conn, const char *const *args)
{
	struct admin_client *client =
		container_of(conn, struct admin_client, conn);
	struct dovewarden_admin_request req;
	const char *error;
	bool replied = TRUE;

	o_stream_cork(conn->output);
	if (dovewarden_admin_parse_request(args, &req, &error) < 0) {
		dovewarden_metrics_rejected(DOVEWARDEN_METRICS_SOURCE_ADMIN);
		e_error(conn->event, "Invalid request: %s", error);
		admin_reply_error(client, error);
	} else
		replied = admin_client_handle(client, &req);
	o_stream_uncork(conn->output);
	/* 0 stops reading the buffered lines too, until input resumes */
	return replied ? 1 : 0;
}

static void admin_client_destroy(struct connection *conn)
{
	struct admin_client *client =
		container_of(conn, struct admin_client, conn);

	if (conn->disconnect_reason == CONNECTION_DISCONNECT_BUFFER_FULL) {
		dovewarden_metrics_rejected(DOVEWARDEN_METRICS_SOURCE_ADMIN);
		e_error(conn->event, "Invalid request: Line longer than %u "
			"bytes, disconnecting",
			DOVEWARDEN_ADMIN_MAX_LINE_LENGTH);
		/* best effort: the client may not be reading */
		admin_reply_error(client, "Request line too long");
	}
	dovewarden_sweep_abort(&client->add_sweep);
	i_free(client->add_mask);
	if (client->redis_op != NULL) {
		/* freed by its pending Redis callback */
		client->redis_op->client = NULL;
	}
	admin_status_reply_free(&client->status_reply);
	connection_deinit(&client->conn);
	i_free(client);
	master_service_client_connection_destroyed(master_service);
}

static const struct connection_settings admin_conn_set = {
	.service_name_in = DOVEWARDEN_ADMIN_CLIENT_NAME,
	.service_name_out = DOVEWARDEN_ADMIN_SERVER_NAME,
	.major_version = DOVEWARDEN_ADMIN_MAJOR_VERSION,
	.minor_version = DOVEWARDEN_ADMIN_MINOR_VERSION,
	.input_idle_timeout_secs = ADMIN_INPUT_IDLE_TIMEOUT_SECS,
	.input_max_size = DOVEWARDEN_ADMIN_MAX_LINE_LENGTH,
	.output_max_size = SIZE_MAX,
	.allow_empty_args_input = TRUE,
	.client = FALSE,
};

static const struct connection_vfuncs admin_conn_vfuncs = {
	.destroy = admin_client_destroy,
	.input_args = admin_client_input_args,
};

void dovewarden_admin_client_create(int fd)
{
	struct admin_client *client;

	i_assert(admin_server != NULL);

	client = i_new(struct admin_client, 1);
	client->conn.event_parent = admin_server->event;
	connection_init_server(admin_server->clients, &client->conn,
			       NULL, fd, fd);
	e_debug(client->conn.event, "Admin client connected");
}

void
dovewarden_admin_server_init(struct dovewarden_queue *queue,
			     const struct dovewarden_queue_settings *queue_set,
			     const struct dovewarden_admin_callbacks *callbacks,
			     struct event *event_parent)
{
	i_assert(admin_server == NULL);
	i_assert(callbacks->queue_changed != NULL);
	i_assert(callbacks->get_syncing_users != NULL);
	i_assert(callbacks->add_user != NULL);

	admin_server = i_new(struct admin_server, 1);
	admin_server->queue = queue;
	admin_server->queue_set = *queue_set;
	admin_server->callbacks = *callbacks;
	admin_server->event = event_create(event_parent);
	event_add_category(admin_server->event, &event_category_dovewarden);
	event_set_append_log_prefix(admin_server->event, "admin: ");
	admin_server->clients = connection_list_init(&admin_conn_set,
						     &admin_conn_vfuncs);
}

void dovewarden_admin_server_set_redis(struct dovewarden_redis_queue *rqueue)
{
	admin_server->rqueue = rqueue;
}

void dovewarden_admin_server_deinit(void)
{
	if (admin_server == NULL)
		return;
	/* destroys every client through admin_client_destroy() */
	connection_list_deinit(&admin_server->clients);
	event_unref(&admin_server->event);
	i_free(admin_server);
}
