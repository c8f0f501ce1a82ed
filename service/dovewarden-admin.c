/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "str.h"
#include "str-sanitize.h"
#include "ostream.h"
#include "connection.h"
#include "master-service.h"
#include "dovewarden-compat.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-queue-backend.h"
#include "dovewarden-replicator.h"
#include "dovewarden-sweep.h"
#include "dovewarden-metrics.h"
#include "dovewarden-admin.h"

/* Admin clients are root tools that send a command or two; one that stays
   silent this long is gone. */
#define ADMIN_INPUT_IDLE_TIMEOUT_SECS 60

/* A STATUS <mask> reply is sent in steps from the output's flush
   callback and the queue iteration's async callback, so that a mask
   matching a million users neither stops the ioloop (and the
   notifications) for a second nor builds the whole reply in memory: each
   step sends at most this many lines, and none while the output buffer
   holds this much */
#define ADMIN_STATUS_LINES_PER_STEP 2048
#define ADMIN_STATUS_OUTPUT_BUFFER_LIMIT (64 * 1024)

/* A command whose reply comes later (STATUS, STATUS <mask>, REPLICATE
   <mask>, REMOVE); the client's input waits for it */
struct admin_op {
	pool_t pool;
	/* NULL once the client is gone: a pending callback frees us */
	struct admin_client *client;
	struct dovewarden_admin_request req;
	struct dovewarden_queue_backend_iter *iter;
	/* REPLICATE <mask>: the matching names */
	ARRAY_TYPE(const_string) names;
	string_t *line;
};

struct admin_client {
	struct connection conn;
	/* a command waiting for the queue's callback */
	struct admin_op *op;
	/* STATUS <mask> or REPLICATE <mask> iterating the queue */
	struct admin_op *status_op;
	/* ADD <mask> running */
	struct dovewarden_sweep *add_sweep;
	char *add_mask;
};

struct admin_server {
	struct dovewarden_queue_backend *queue;
	struct dovewarden_replicator *replicator;
	char *auth_socket_path;
	struct event *event;
	struct connection_list *clients;
};

static struct admin_server *admin_server = NULL;

static void admin_client_destroy(struct connection *conn);

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

/* The following commands are answered after this one */
static struct admin_op *
admin_op_new(struct admin_client *client,
	     const struct dovewarden_admin_request *req)
{
	struct admin_op *op;
	pool_t pool;

	pool = pool_alloconly_create("admin op", 1024);
	op = p_new(pool, struct admin_op, 1);
	op->pool = pool;
	op->client = client;
	op->req.cmd = req->cmd;
	op->req.mask = p_strdup(pool, req->mask);
	op->req.priority = req->priority;
	op->req.full_sync = req->full_sync;
	connection_input_halt(&client->conn);
	return op;
}

static void admin_op_free(struct admin_op **_op)
{
	struct admin_op *op = *_op;
	const char *error;

	if (op == NULL)
		return;
	*_op = NULL;
	if (op->iter != NULL)
		(void)dovewarden_queue_backend_iter_deinit(&op->iter, &error);
	if (array_is_created(&op->names))
		array_free(&op->names);
	if (op->line != NULL)
		str_free(&op->line);
	pool_unref(&op->pool);
}

/* The reply was sent: the client's next commands */
static void admin_op_done(struct admin_op **_op)
{
	struct admin_op *op = *_op;
	struct admin_client *client = op->client;

	admin_op_free(_op);
	if (client != NULL)
		connection_input_resume(&client->conn);
}

/* STATUS */

static void
admin_status_callback(const struct dovewarden_queue_counts *counts,
		      const char *error, void *context)
{
	struct admin_op *op = context;
	struct admin_client *client = op->client;
	string_t *str;

	if (client == NULL) {
		admin_op_free(&op);
		return;
	}
	client->op = NULL;
	if (counts == NULL) {
		e_error(client->conn.event, "STATUS: %s", error);
		admin_reply_error(client, t_strdup_printf(
			"Reading the queue failed: %s", error));
	} else {
		const unsigned int values[] = {
			[DOVEWARDEN_ADMIN_STATUS_USERS] = counts->users,
			[DOVEWARDEN_ADMIN_STATUS_SYNCING] = counts->syncing,
			[DOVEWARDEN_ADMIN_STATUS_PENDING_SYNC] =
				counts->pending[DOVEWARDEN_PRIORITY_SYNC],
			[DOVEWARDEN_ADMIN_STATUS_PENDING_HIGH] =
				counts->pending[DOVEWARDEN_PRIORITY_HIGH],
			[DOVEWARDEN_ADMIN_STATUS_PENDING_LOW] =
				counts->pending[DOVEWARDEN_PRIORITY_LOW],
			[DOVEWARDEN_ADMIN_STATUS_FULL_SYNC_DUE] =
				counts->full_sync_due,
			[DOVEWARDEN_ADMIN_STATUS_FAILED] = counts->failed,
			[DOVEWARDEN_ADMIN_STATUS_FAILED_WAITING] =
				counts->failed_waiting,
		};

		static_assert_array_size(values,
					 DOVEWARDEN_ADMIN_STATUS_COUNT);
		str = t_str_new(256);
		dovewarden_admin_append_stats(str, values);
		o_stream_nsend(client->conn.output, str_data(str),
			       str_len(str));
	}
	admin_op_done(&op);
}

/* STATUS <mask> and REPLICATE <mask>: the queue's status iteration */

static void admin_replicate_user(const char *username,
				 const struct dovewarden_admin_request *req)
{
	dovewarden_replicator_notify(admin_server->replicator, username,
		req->priority, DOVEWARDEN_QUEUE_NOTIFY_FLAG_ANY_SERVER |
		(!req->full_sync ? 0 : DOVEWARDEN_QUEUE_NOTIFY_FLAG_FULL_SYNC));
}

static void admin_iter_finished(struct admin_client *client)
{
	struct admin_op *op = client->status_op;
	const char *username, *error;
	int ret;

	ret = dovewarden_queue_backend_iter_deinit(&op->iter, &error);
	if (op->req.cmd == DOVEWARDEN_ADMIN_CMD_STATUS_USERS) {
		if (ret < 0) {
			e_error(client->conn.event, "STATUS: Reading the "
				"users failed: %s", error);
		}
		o_stream_nsend_str(client->conn.output, "\n");
		return;
	}
	if (ret < 0) {
		e_error(client->conn.event, "REPLICATE: Listing the users "
			"failed: %s", error);
		admin_reply_error(client, error);
		return;
	}
	array_foreach_elem(&op->names, username)
		admin_replicate_user(username, &op->req);
	e_info(client->conn.event, "Replication requested for %u user(s) "
	       "(priority=%s%s)", array_count(&op->names),
	       dovewarden_priority_to_str(op->req.priority),
	       op->req.full_sync ? ", full sync" : "");
	admin_reply_ok(client, (int)I_MIN(array_count(&op->names), INT_MAX));
}

/* One step. Returns TRUE when the reply is complete. */
static bool admin_iter_step(struct admin_client *client)
{
	struct admin_op *op = client->status_op;
	struct ostream *output = client->conn.output;
	const struct dovewarden_admin_user_status *status;
	const char *name;
	unsigned int lines;

	for (lines = 0; lines < ADMIN_STATUS_LINES_PER_STEP; lines++) {
		if (o_stream_get_buffer_used_size(output) >=
		    ADMIN_STATUS_OUTPUT_BUFFER_LIMIT)
			return FALSE;
		if (!dovewarden_queue_backend_iter_next(op->iter, &status)) {
			if (dovewarden_queue_backend_iter_has_more(op->iter))
				return FALSE;
			admin_iter_finished(client);
			return TRUE;
		}
		if (op->req.cmd == DOVEWARDEN_ADMIN_CMD_REPLICATE) {
			name = p_strdup(op->pool, status->username);
			array_push_back(&op->names, &name);
			continue;
		}
		str_truncate(op->line, 0);
		dovewarden_admin_append_user_status(op->line, status);
		o_stream_nsend(output, str_data(op->line),
			       str_len(op->line));
	}
	o_stream_set_flush_pending(output, TRUE);
	return FALSE;
}

static int admin_iter_flush(struct admin_client *client)
{
	struct connection *conn = &client->conn;

	if (o_stream_flush(conn->output) < 0) {
		e_debug(conn->event, "STATUS reply aborted: %s",
			o_stream_get_error(conn->output));
		admin_client_destroy(conn);
		return 1;
	}
	o_stream_cork(conn->output);
	if (!admin_iter_step(client)) {
		o_stream_uncork(conn->output);
		return 0;
	}
	o_stream_uncork(conn->output);
	admin_op_free(&client->status_op);
	o_stream_unset_flush_callback(conn->output);
	/* the commands that arrived meanwhile */
	connection_input_resume(conn);
	return 1;
}

static void admin_iter_more(void *context)
{
	struct admin_client *client = context;

	o_stream_set_flush_pending(client->conn.output, TRUE);
}

static void admin_iter_start(struct admin_client *client,
			     const struct dovewarden_admin_request *req)
{
	struct admin_op *op;

	i_assert(client->status_op == NULL);
	op = admin_op_new(client, req);
	op->line = str_new(default_pool, 256);
	i_array_init(&op->names, 64);
	op->iter = dovewarden_queue_backend_iter_init(admin_server->queue,
						      req->mask);
	dovewarden_queue_backend_iter_set_async_callback(op->iter,
		admin_iter_more, client);
	client->status_op = op;
	o_stream_set_flush_callback(client->conn.output, admin_iter_flush,
				    client);
	o_stream_set_flush_pending(client->conn.output, TRUE);
}

/* STATUS-DSYNC */

static void admin_cmd_status_dsync(struct admin_client *client)
{
	const struct dovewarden_admin_dsync_status *status;
	ARRAY_TYPE(dovewarden_admin_dsync_status) statuses;
	string_t *str = t_str_new(256);

	/* only this instance's running syncs, not every known user */
	t_array_init(&statuses, 16);
	dovewarden_replicator_get_dsync_status(admin_server->replicator,
					       &statuses);
	array_foreach(&statuses, status) {
		str_truncate(str, 0);
		dovewarden_admin_append_dsync_status(str, status);
		o_stream_nsend(client->conn.output, str_data(str),
			       str_len(str));
	}
	o_stream_nsend_str(client->conn.output, "\n");
}

/* ADD */

static bool admin_add_user(const char *username, void *context ATTR_UNUSED)
{
	return dovewarden_queue_backend_add(admin_server->queue, username);
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
		dovewarden_replicator_queue_changed(admin_server->replicator);
	connection_input_resume(&client->conn);
}

/* Returns TRUE when the reply was sent, FALSE when it is sent later */
static bool admin_cmd_add(struct admin_client *client, const char *mask)
{
	if (!dovewarden_admin_is_mask(mask)) {
		(void)admin_add_user(mask, NULL);
		e_info(client->conn.event, "Added user %s",
		       str_sanitize(mask, 100));
		admin_reply_ok(client, 1);
		dovewarden_replicator_queue_changed(admin_server->replicator);
		return TRUE;
	}
	i_assert(client->add_sweep == NULL);
	client->add_mask = i_strdup(mask);
	client->add_sweep = dovewarden_sweep_start(admin_add_user, NULL,
		admin_server->auth_socket_path, mask, client->conn.event,
		admin_add_users_finished, client);
	/* the following commands are answered after this one */
	connection_input_halt(&client->conn);
	return FALSE;
}

/* REMOVE */

static void admin_remove_callback(int ret, const char *error, void *context)
{
	struct admin_op *op = context;
	struct admin_client *client = op->client;
	const char *username = str_sanitize(op->req.mask, 100);

	if (client == NULL) {
		admin_op_free(&op);
		return;
	}
	client->op = NULL;
	if (ret < 0) {
		e_error(client->conn.event, "REMOVE %s: %s", username, error);
		admin_reply_error(client, error);
	} else if (ret == 0) {
		e_info(client->conn.event, "REMOVE: %s",
		       DOVEWARDEN_ADMIN_ERROR_USER_NOT_FOUND);
		admin_reply_error(client, DOVEWARDEN_ADMIN_ERROR_USER_NOT_FOUND);
	} else {
		e_info(client->conn.event, "Removed user %s", username);
		admin_reply_ok(client, -1);
		dovewarden_replicator_queue_changed(admin_server->replicator);
	}
	admin_op_done(&op);
}

/* Returns FALSE when the reply comes later (input must stop) */
static bool
admin_client_handle(struct admin_client *client,
		    const struct dovewarden_admin_request *req)
{
	switch (req->cmd) {
	case DOVEWARDEN_ADMIN_CMD_STATUS:
		client->op = admin_op_new(client, req);
		dovewarden_queue_backend_read_counts(admin_server->queue,
			admin_status_callback, client->op);
		return client->op == NULL;
	case DOVEWARDEN_ADMIN_CMD_STATUS_USERS:
		admin_iter_start(client, req);
		return FALSE;
	case DOVEWARDEN_ADMIN_CMD_STATUS_DSYNC:
		admin_cmd_status_dsync(client);
		return TRUE;
	case DOVEWARDEN_ADMIN_CMD_REPLICATE:
		if (dovewarden_admin_is_mask(req->mask)) {
			admin_iter_start(client, req);
			return FALSE;
		}
		/* an exact name is made known if it is not yet */
		admin_replicate_user(req->mask, req);
		e_info(client->conn.event, "Replication requested for 1 "
		       "user(s) (priority=%s%s)",
		       dovewarden_priority_to_str(req->priority),
		       req->full_sync ? ", full sync" : "");
		admin_reply_ok(client, 1);
		return TRUE;
	case DOVEWARDEN_ADMIN_CMD_ADD:
		return admin_cmd_add(client, req->mask);
	case DOVEWARDEN_ADMIN_CMD_REMOVE:
		client->op = admin_op_new(client, req);
		dovewarden_queue_backend_remove(admin_server->queue, req->mask,
						admin_remove_callback,
						client->op);
		return client->op == NULL;
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
	if (client->op != NULL) {
		/* freed by its pending callback */
		client->op->client = NULL;
	}
	admin_op_free(&client->status_op);
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

void dovewarden_admin_server_init(struct dovewarden_queue_backend *queue,
				  struct dovewarden_replicator *replicator,
				  const char *auth_socket_path,
				  struct event *event_parent)
{
	i_assert(admin_server == NULL);

	admin_server = i_new(struct admin_server, 1);
	admin_server->queue = queue;
	admin_server->replicator = replicator;
	admin_server->auth_socket_path = i_strdup(auth_socket_path);
	admin_server->event = event_create(event_parent);
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
	i_free(admin_server->auth_socket_path);
	i_free(admin_server);
}
