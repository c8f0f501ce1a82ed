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

struct admin_client {
	struct connection conn;
	/* ADD <mask> running; input waits until it has been answered */
	struct dovewarden_sweep *add_sweep;
	char *add_mask;
	/* STATUS <mask> reply being sent; input waits until it is done */
	struct admin_status_reply *status_reply;
};

struct admin_server {
	struct dovewarden_queue *queue;
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

static void admin_cmd_status(struct admin_client *client)
{
	struct dovewarden_queue_stats stats;
	string_t *str = t_str_new(128);

	dovewarden_queue_get_stats(admin_server->queue, ioloop_time, &stats);
	dovewarden_admin_append_stats(str, &stats);
	o_stream_nsend(client->conn.output, str_data(str), str_len(str));
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

/* Returns TRUE when the reply was sent, FALSE when it is sent later */
static bool admin_cmd_status_users(struct admin_client *client,
				   const char *mask)
{
	struct dovewarden_user *user;
	struct dovewarden_admin_user_status status;
	string_t *str;

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
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	struct dovewarden_admin_dsync_status status;
	ARRAY(struct dovewarden_user *) users;
	string_t *str = t_str_new(256);

	/* only the running syncs, not every known user; sorted by
	   username (the queue has them in no order) */
	t_array_init(&users, 16);
	iter = dovewarden_queue_iter_init_syncing(admin_server->queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL)
		array_push_back(&users, &user);
	dovewarden_queue_iter_deinit(&iter);
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

static void
admin_replicate_user(const char *username,
		     const struct dovewarden_admin_request *req)
{
	const struct dovewarden_admin_callbacks *cb = &admin_server->callbacks;

	cb->replicate(username, req->priority, req->full_sync, cb->context);
}

static int admin_cmd_replicate(const struct dovewarden_admin_request *req)
{
	struct dovewarden_queue *queue = admin_server->queue;
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	ARRAY_TYPE(const_string) usernames;
	const char *username;

	if (!dovewarden_admin_is_mask(req->mask)) {
		admin_replicate_user(req->mask, req);
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
		admin_replicate_user(username, req);
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
		(void)dovewarden_queue_add(admin_server->queue, mask,
					   ioloop_time);
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
		admin_cmd_status(client);
		return TRUE;
	case DOVEWARDEN_ADMIN_CMD_STATUS_USERS:
		return admin_cmd_status_users(client, req->mask);
	case DOVEWARDEN_ADMIN_CMD_STATUS_DSYNC:
		admin_cmd_status_dsync(client);
		return TRUE;
	case DOVEWARDEN_ADMIN_CMD_REPLICATE:
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

void dovewarden_admin_server_deinit(void)
{
	if (admin_server == NULL)
		return;
	/* destroys every client through admin_client_destroy() */
	connection_list_deinit(&admin_server->clients);
	event_unref(&admin_server->event);
	i_free(admin_server);
}
