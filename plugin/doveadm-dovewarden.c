/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "str.h"
#include "ostream.h"
#include "connection.h"
#include "doveadm.h"
#include "doveadm-print.h"
#include "dovewarden-compat.h"
#include "dovewarden-admin-protocol.h"
#include "doveadm-dovewarden.h"

/* Longest wait for the service's handshake or for the next reply line */
#define ADMIN_CLIENT_TIMEOUT_SECS 5
/* ADD with a mask iterates the userdb before it answers */
#define ADMIN_CLIENT_ADD_TIMEOUT_SECS 120
/* Retry a connect() that fails with EAGAIN (full listen queue) this long */
#define ADMIN_CLIENT_CONNECT_RETRY_MSECS 2000

struct admin_client;

/* Handles one reply line. Returns 1 for more lines, 0 when the reply is
   complete, -1 when the line is invalid (error_r set). */
typedef int
admin_reply_line_t(struct admin_client *client, const char *const *args,
		   const char **error_r);

struct admin_client {
	struct connection conn;
	struct doveadm_cmd_context *cctx;
	struct ioloop *ioloop;
	const char *socket_path;
	unsigned int timeout_secs;

	admin_reply_line_t *reply_line;
	unsigned int lines;
	/* REPLICATE, ADD, REMOVE: the "+" count (-1 = none) */
	int count;

	bool finished:1;
	/* set when an error was logged and doveadm_exit_code set */
	bool failed:1;
};

const char *doveadm_dovewarden_plugin_version = DOVECOT_ABI_VERSION;
/* see DOVEWARDEN_DOVEADM_CMD_EVENT() */
struct event *dovewarden_doveadm_event;

/* 2.3's replicator labels where the meaning is the same */
static const char *const status_labels[] = {
	[DOVEWARDEN_ADMIN_STATUS_PENDING_SYNC] = "Queued 'sync' requests",
	[DOVEWARDEN_ADMIN_STATUS_PENDING_HIGH] = "Queued 'high' requests",
	[DOVEWARDEN_ADMIN_STATUS_PENDING_LOW] = "Queued 'low' requests",
	[DOVEWARDEN_ADMIN_STATUS_FULL_SYNC_DUE] =
		"Queued 'full resync' requests",
	[DOVEWARDEN_ADMIN_STATUS_FAILED] = "Users whose last sync failed",
	[DOVEWARDEN_ADMIN_STATUS_FAILED_WAITING] =
		"Failed users waiting to retry",
	[DOVEWARDEN_ADMIN_STATUS_SYNCING] = "Syncs running",
	[DOVEWARDEN_ADMIN_STATUS_USERS] = "Total number of known users",
};
static_assert_array_size(status_labels, DOVEWARDEN_ADMIN_STATUS_COUNT);

static void
admin_client_fail(struct admin_client *client, int exit_code,
		  const char *error)
{
	if (client->failed)
		return;
	client->failed = TRUE;
	e_error(DOVEWARDEN_DOVEADM_CMD_EVENT(client->cctx), "%s", error);
	doveadm_exit_code = exit_code;
}

static void admin_client_stop(struct admin_client *client)
{
	client->finished = TRUE;
	io_loop_stop(client->ioloop);
}

static void admin_client_destroy(struct connection *conn)
{
	struct admin_client *client =
		container_of(conn, struct admin_client, conn);
	const char *reason;

	if (!client->finished) {
		if (conn->disconnect_reason ==
		    CONNECTION_DISCONNECT_HANDSHAKE_FAILED) {
			admin_client_fail(client, EX_PROTOCOL, t_strdup_printf(
				"%s is not a dovewarden admin socket",
				client->socket_path));
		} else {
			reason = conn->disconnect_reason ==
				CONNECTION_DISCONNECT_IDLE_TIMEOUT ?
				connection_input_timeout_reason(conn) :
				connection_disconnect_reason(conn);
			admin_client_fail(client, EX_TEMPFAIL, t_strdup_printf(
				"dovewarden service (%s): %s",
				client->socket_path, reason));
		}
	}
	connection_disconnect(conn);
	admin_client_stop(client);
}

static int
admin_client_input_args(struct connection *conn, const char *const *args)
{
	struct admin_client *client =
		container_of(conn, struct admin_client, conn);
	const char *error;
	int ret;

	if (client->finished) {
		admin_client_fail(client, EX_PROTOCOL,
				  "dovewarden service sent unexpected input");
		return -1;
	}
	ret = client->reply_line(client, args, &error);
	client->lines++;
	if (ret < 0) {
		admin_client_fail(client, EX_PROTOCOL, t_strdup_printf(
			"dovewarden service (%s): %s",
			client->socket_path, error));
		admin_client_stop(client);
		return -1;
	}
	if (ret == 0) {
		admin_client_stop(client);
		return 0;
	}
	return 1;
}

static const struct connection_settings admin_client_set = {
	.service_name_in = DOVEWARDEN_ADMIN_SERVER_NAME,
	.service_name_out = DOVEWARDEN_ADMIN_CLIENT_NAME,
	.major_version = DOVEWARDEN_ADMIN_MAJOR_VERSION,
	.minor_version = DOVEWARDEN_ADMIN_MINOR_VERSION,
	.unix_client_connect_msecs = ADMIN_CLIENT_CONNECT_RETRY_MSECS,
	.input_max_size = SIZE_MAX,
	.output_max_size = SIZE_MAX,
	.allow_empty_args_input = TRUE,
	.client = TRUE,
};

static const struct connection_vfuncs admin_client_vfuncs = {
	.destroy = admin_client_destroy,
	.input_args = admin_client_input_args,
};

static const char *admin_socket_path(struct doveadm_cmd_context *cctx)
{
	const char *path;

	if (doveadm_cmd_param_str(cctx, "socket-path", &path))
		return path;
	return t_strconcat(doveadm_settings->base_dir, "/",
			   DOVEWARDEN_ADMIN_SOCKET_NAME, NULL);
}

/* Send one request and feed the reply lines to reply_line until it says
   the reply is complete. Returns 0, or -1 after logging the error and
   setting doveadm_exit_code. */
static int
admin_request(struct admin_client *client, const string_t *request)
{
	struct connection_list *list;

	client->ioloop = io_loop_create();
	list = connection_list_init(&admin_client_set, &admin_client_vfuncs);
	client->conn.event_parent =
		DOVEWARDEN_DOVEADM_CMD_EVENT(client->cctx);
	client->conn.input_idle_timeout_secs = client->timeout_secs;
	connection_init_client_unix(list, &client->conn, client->socket_path);
	if (connection_client_connect(&client->conn) < 0) {
		admin_client_fail(client, EX_TEMPFAIL, t_strdup_printf(
			"Cannot connect to the dovewarden service: "
			"connect(%s) failed: %m", client->socket_path));
	} else {
		o_stream_nsend(client->conn.output, str_data(request),
			       str_len(request));
		io_loop_run(client->ioloop);
	}
	connection_deinit(&client->conn);
	connection_list_deinit(&list);
	io_loop_destroy(&client->ioloop);
	return client->failed ? -1 : 0;
}

static struct admin_client *
admin_client_init(struct doveadm_cmd_context *cctx,
		  admin_reply_line_t *reply_line)
{
	struct admin_client *client;

	client = t_new(struct admin_client, 1);
	client->cctx = cctx;
	client->socket_path = admin_socket_path(cctx);
	client->reply_line = reply_line;
	client->count = -1;
	client->timeout_secs = ADMIN_CLIENT_TIMEOUT_SECS;
	return client;
}

static const char *time_hms(long long secs)
{
	if (secs < 0)
		secs = 0;
	return t_strdup_printf("%02lld:%02lld:%02lld", secs / 3600,
			       (secs / 60) % 60, secs % 60);
}

static const char *time_ago(time_t t)
{
	if (t == 0)
		return "-";
	return time_hms((long long)(ioloop_time - t));
}

/* A list reply that begins with an error line is the whole reply */
static bool
admin_list_error(struct admin_client *client, const char *const *args)
{
	if (client->lines > 0 || !dovewarden_admin_is_error_line(args))
		return FALSE;
	admin_client_fail(client, EX_USAGE, t_strdup_printf(
		"dovewarden service failed: %s", args[1]));
	return TRUE;
}

static int
status_overview_line(struct admin_client *client, const char *const *args,
		     const char **error_r)
{
	const char *key, *value;
	unsigned int i;

	if (args[0] == NULL)
		return 0;
	if (admin_list_error(client, args))
		return 0;
	if (dovewarden_admin_parse_stats_line(args, &key, &value, error_r) < 0)
		return -1;
	for (i = 0; i < DOVEWARDEN_ADMIN_STATUS_COUNT; i++) {
		if (strcmp(key, dovewarden_admin_status_keys[i]) == 0) {
			key = status_labels[i];
			break;
		}
	}
	doveadm_print(key);
	doveadm_print(value);
	return 1;
}

static int
status_users_line(struct admin_client *client, const char *const *args,
		  const char **error_r)
{
	struct dovewarden_admin_user_status status;

	if (args[0] == NULL)
		return 0;
	if (admin_list_error(client, args))
		return 0;
	if (dovewarden_admin_parse_user_status(args, &status, error_r) < 0)
		return -1;
	doveadm_print(status.username);
	doveadm_print(dovewarden_priority_to_str(status.priority));
	doveadm_print(time_ago(status.last_fast_sync));
	doveadm_print(time_ago(status.last_full_sync));
	doveadm_print(time_ago(status.last_successful_sync));
	doveadm_print_num(status.consecutive_failures);
	doveadm_print(status.next_sync_secs < 0 ? "-" :
		      time_hms(status.next_sync_secs));
	doveadm_print(status.last_error[0] == '\0' ? "-" :
		      status.last_error);
	doveadm_print(time_ago(status.last_verified));
	doveadm_print(time_ago(status.last_repaired));
	return 1;
}

static void cmd_dovewarden_status(struct doveadm_cmd_context *cctx)
{
	struct admin_client *client;
	const char *mask = NULL;
	string_t *request = t_str_new(128);

	(void)doveadm_cmd_param_str(cctx, "user-mask", &mask);
	client = admin_client_init(cctx, mask == NULL ?
				   status_overview_line : status_users_line);
	dovewarden_admin_append_status(request, mask);

	doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
	if (mask == NULL) {
		doveadm_print_header("field", "field",
				     DOVEADM_PRINT_HEADER_FLAG_HIDE_TITLE);
		doveadm_print_header("value", "value",
				     DOVEADM_PRINT_HEADER_FLAG_HIDE_TITLE);
	} else {
		doveadm_print_header("username", "username",
				     DOVEADM_PRINT_HEADER_FLAG_EXPAND);
		doveadm_print_header_simple("priority");
		doveadm_print_header("fast_sync", "fast sync", 0);
		doveadm_print_header("full_sync", "full sync", 0);
		doveadm_print_header("success_sync", "success sync", 0);
		doveadm_print_header("failed", "failed",
				     DOVEADM_PRINT_HEADER_FLAG_NUMBER);
		doveadm_print_header("next_sync", "next sync", 0);
		doveadm_print_header("last_error", "last error", 0);
		doveadm_print_header_simple("verified");
		doveadm_print_header_simple("repaired");
	}
	(void)admin_request(client, request);
}

static int
dsync_status_line(struct admin_client *client, const char *const *args,
		  const char **error_r)
{
	struct dovewarden_admin_dsync_status status;

	if (args[0] == NULL)
		return 0;
	if (admin_list_error(client, args))
		return 0;
	if (dovewarden_admin_parse_dsync_status(args, &status, error_r) < 0)
		return -1;
	doveadm_print(status.username);
	doveadm_print(status.type);
	doveadm_print(status.state);
	doveadm_print(time_hms(status.running_secs));
	return 1;
}

static void cmd_dovewarden_dsync_status(struct doveadm_cmd_context *cctx)
{
	struct admin_client *client;
	string_t *request = t_str_new(32);

	client = admin_client_init(cctx, dsync_status_line);
	dovewarden_admin_append_status_dsync(request);

	doveadm_print_init(DOVEADM_PRINT_TYPE_TABLE);
	doveadm_print_header("username", "username",
			     DOVEADM_PRINT_HEADER_FLAG_EXPAND);
	doveadm_print_header_simple("type");
	doveadm_print_header_simple("status");
	doveadm_print_header("running", "running", 0);
	(void)admin_request(client, request);
}

static int
simple_reply_line(struct admin_client *client, const char *const *args,
		  const char **error_r)
{
	const char *error_msg;
	bool success;

	if (dovewarden_admin_parse_reply(args, &success, &client->count,
					 &error_msg, error_r) < 0)
		return -1;
	if (!success) {
		admin_client_fail(client,
			strcmp(error_msg,
			       DOVEWARDEN_ADMIN_ERROR_USER_NOT_FOUND) == 0 ?
			EX_NOUSER : EX_USAGE,
			t_strdup_printf("dovewarden service failed: %s",
					error_msg));
	}
	return 0;
}

/* Returns NULL after reporting a missing argument */
static const char *
cmd_param_required(struct doveadm_cmd_context *cctx, const char *name)
{
	const char *value;

	if (doveadm_cmd_param_str(cctx, name, &value))
		return value;
	if (cctx->conn_type == DOVEADM_CONNECTION_TYPE_CLI)
		help_ver2(cctx->cmd);
	/* doveadm-server (HTTP API): help_ver2() would exit the process */
	e_error(DOVEWARDEN_DOVEADM_CMD_EVENT(cctx), "Missing parameter: %s",
		name);
	doveadm_exit_code = EX_USAGE;
	return NULL;
}

static void
print_count_result(struct admin_client *client, const char *what)
{
	doveadm_print_init(DOVEADM_PRINT_TYPE_FLOW);
	doveadm_print_header("result", "result",
			     DOVEADM_PRINT_HEADER_FLAG_HIDE_TITLE);
	if (client->count >= 0) {
		doveadm_print(t_strdup_printf("%d users %s", client->count,
					      what));
	}
}

static void cmd_dovewarden_replicate(struct doveadm_cmd_context *cctx)
{
	struct admin_client *client;
	enum dovewarden_priority priority = DOVEWARDEN_PRIORITY_LOW;
	const char *mask, *priority_str;
	bool full_sync = FALSE;
	string_t *request = t_str_new(128);

	if ((mask = cmd_param_required(cctx, "user-mask")) == NULL)
		return;
	(void)doveadm_cmd_param_bool(cctx, "full-sync", &full_sync);
	if (doveadm_cmd_param_str(cctx, "priority", &priority_str) &&
	    (!dovewarden_priority_parse(priority_str, &priority) ||
	     priority == DOVEWARDEN_PRIORITY_NONE)) {
		e_error(DOVEWARDEN_DOVEADM_CMD_EVENT(cctx),
			"Invalid priority '%s' (expected low, high or sync)",
			priority_str);
		doveadm_exit_code = EX_USAGE;
		return;
	}
	client = admin_client_init(cctx, simple_reply_line);
	dovewarden_admin_append_replicate(request, priority, full_sync, mask);
	if (admin_request(client, request) == 0)
		print_count_result(client, "updated");
}

static void cmd_dovewarden_add(struct doveadm_cmd_context *cctx)
{
	struct admin_client *client;
	const char *mask;
	string_t *request = t_str_new(128);

	if ((mask = cmd_param_required(cctx, "user-mask")) == NULL)
		return;
	client = admin_client_init(cctx, simple_reply_line);
	if (dovewarden_admin_is_mask(mask))
		client->timeout_secs = ADMIN_CLIENT_ADD_TIMEOUT_SECS;
	dovewarden_admin_append_add(request, mask);
	if (admin_request(client, request) == 0)
		print_count_result(client, "added");
}

static void cmd_dovewarden_remove(struct doveadm_cmd_context *cctx)
{
	struct admin_client *client;
	const char *username;
	string_t *request = t_str_new(128);

	if ((username = cmd_param_required(cctx, "user")) == NULL)
		return;
	client = admin_client_init(cctx, simple_reply_line);
	dovewarden_admin_append_remove(request, username);
	(void)admin_request(client, request);
}

#define DOVEWARDEN_CMD_PARAM_SOCKET \
	DOVEADM_CMD_PARAM('a', "socket-path", CMD_PARAM_STR, 0)

/* The name is set at registration, see command_names[] */
static const struct doveadm_cmd_ver2 dovewarden_commands[] = {
	{
		.cmd = cmd_dovewarden_status,
		.usage = "[-a <admin socket path>] [<user mask>]",
DOVEADM_CMD_PARAMS_START
DOVEWARDEN_CMD_PARAM_SOCKET
DOVEADM_CMD_PARAM('\0', "user-mask", CMD_PARAM_STR,
		  CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
	},
	{
		.cmd = cmd_dovewarden_dsync_status,
		.usage = "[-a <admin socket path>]",
DOVEADM_CMD_PARAMS_START
DOVEWARDEN_CMD_PARAM_SOCKET
DOVEADM_CMD_PARAMS_END
	},
	{
		.cmd = cmd_dovewarden_replicate,
		.usage = "[-a <admin socket path>] [-f] [-p <priority>] "
			 "<user mask>",
DOVEADM_CMD_PARAMS_START
DOVEWARDEN_CMD_PARAM_SOCKET
DOVEADM_CMD_PARAM('f', "full-sync", CMD_PARAM_BOOL, 0)
DOVEADM_CMD_PARAM('p', "priority", CMD_PARAM_STR, 0)
DOVEADM_CMD_PARAM('\0', "user-mask", CMD_PARAM_STR,
		  CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
	},
	{
		.cmd = cmd_dovewarden_add,
		.usage = "[-a <admin socket path>] <user mask>",
DOVEADM_CMD_PARAMS_START
DOVEWARDEN_CMD_PARAM_SOCKET
DOVEADM_CMD_PARAM('\0', "user-mask", CMD_PARAM_STR,
		  CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
	},
	{
		.cmd = cmd_dovewarden_remove,
		.usage = "[-a <admin socket path>] <user>",
DOVEADM_CMD_PARAMS_START
DOVEWARDEN_CMD_PARAM_SOCKET
DOVEADM_CMD_PARAM('\0', "user", CMD_PARAM_STR, CMD_PARAM_FLAG_POSITIONAL)
DOVEADM_CMD_PARAMS_END
	},
};

/* The names of dovewarden_commands[], also under their 2.3 names */
static const char *const command_names[][2] = {
	{ "dovewarden status", "replicator status" },
	{ "dovewarden dsync-status", "replicator dsync-status" },
	{ "dovewarden replicate", "replicator replicate" },
	{ "dovewarden add", "replicator add" },
	{ "dovewarden remove", "replicator remove" },
};
static_assert_array_size(command_names, N_ELEMENTS(dovewarden_commands));

void doveadm_dovewarden_plugin_init(struct module *module ATTR_UNUSED)
{
	struct doveadm_cmd_ver2 cmd;
	unsigned int i, j;

	dovewarden_doveadm_event = event_create(NULL);
	for (i = 0; i < N_ELEMENTS(dovewarden_commands); i++) {
		for (j = 0; j < N_ELEMENTS(command_names[i]); j++) {
			/* never shadow a command of doveadm itself */
			if (doveadm_cmd_find_ver2(command_names[i][j]) != NULL)
				continue;
			cmd = dovewarden_commands[i];
			cmd.name = command_names[i][j];
			/* doveadm copies the struct */
			doveadm_cmd_register_ver2(&cmd);
		}
	}
}

void doveadm_dovewarden_plugin_deinit(void)
{
	event_unref(&dovewarden_doveadm_event);
}
