/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "str.h"
#include "strescape.h"
#include "strnum.h"
#include "ostream.h"
#include "time-util.h"
#include "connection.h"
#include "wildcard-match.h"
#include "auth-client-interface.h"
#include "dovewarden-compat.h"
#include "dovewarden-protocol.h"
#include "dovewarden-sweep.h"

/* The only request on the connection, and the start of its replies */
#define SWEEP_REQUEST_ID 1
#define SWEEP_LIST_REPLY_PREFIX "LIST\t1\t"
#define SWEEP_INPUT_MAX_SIZE (64 * 1024)
#define SWEEP_OUTPUT_MAX_SIZE 4096

struct dovewarden_sweep {
	struct connection conn;
	struct connection_list *conn_list;
	struct event *event;
	dovewarden_sweep_add_callback_t *add_callback;
	void *add_context;
	char *mask;
	struct timeval start_time;
	struct dovewarden_sweep_result result;
	/* why the sweep failed, set before the connection is closed */
	char *error;

	/* reports an early failure from the ioloop */
	struct timeout *to_failed;

	bool version_received:1;
	/* DONE without failure received */
	bool done:1;
	/* the connection is closed (and deinitialized) */
	bool closed:1;
	bool finished:1;

	dovewarden_sweep_callback_t *callback;
	void *context;
};

static void sweep_free(struct dovewarden_sweep *sweep)
{
	timeout_remove(&sweep->to_failed);
	if (!sweep->closed)
		connection_deinit(&sweep->conn);
	connection_list_deinit(&sweep->conn_list);
	event_unref(&sweep->event);
	i_free(sweep->mask);
	i_free(sweep->error);
	i_free(sweep);
}

static void sweep_finish(struct dovewarden_sweep *sweep)
{
	i_assert(!sweep->finished);
	sweep->finished = TRUE;

	if (sweep->error == NULL && !sweep->done) {
		sweep->error = i_strdup(
			"Auth disconnected before the user list ended");
	}
	sweep->result.error = sweep->error;
	sweep->result.duration_msecs =
		timeval_diff_msecs(&ioloop_timeval, &sweep->start_time);
	e_debug(sweep->event, "Finished after %lld msecs: %u users "
		"listed, %u added%s%s", sweep->result.duration_msecs,
		sweep->result.listed, sweep->result.added,
		sweep->error == NULL ? "" : ", failed: ",
		sweep->error == NULL ? "" : sweep->error);
	sweep->callback(&sweep->result, sweep->context);
	sweep_free(sweep);
}

/* Remember why the sweep failed; the first reason wins. */
static int sweep_set_error(struct dovewarden_sweep *sweep, const char *error)
{
	if (sweep->error == NULL)
		sweep->error = i_strdup(error);
	return -1;
}

static void sweep_user(struct dovewarden_sweep *sweep, const char *username)
{
	/* auth matches the mask case-insensitively, and some userdbs
	   ignore it */
	if (!wildcard_match(username, sweep->mask))
		return;
	if (!dovewarden_username_is_valid(username)) {
		sweep->result.invalid++;
		return;
	}
	sweep->result.listed++;
	if (sweep->add_callback(username, sweep->add_context))
		sweep->result.added++;
}

static void sweep_destroy(struct connection *conn)
{
	struct dovewarden_sweep *sweep =
		container_of(conn, struct dovewarden_sweep, conn);

	if (sweep->error == NULL && !sweep->done) {
		(void)sweep_set_error(sweep, t_strdup_printf(
			"Auth disconnected before the user list ended: %s",
			conn->disconnect_reason ==
			CONNECTION_DISCONNECT_IDLE_TIMEOUT ?
			connection_input_timeout_reason(conn) :
			connection_disconnect_reason(conn)));
	}
	connection_deinit(&sweep->conn);
	sweep->closed = TRUE;
	sweep_finish(sweep);
}

enum dovewarden_sweep_line
dovewarden_sweep_parse_line(const char *line, bool version_received,
			    const char **username_r)
{
	const char *const *args, *name;
	unsigned int major;

	*username_r = NULL;
	if (str_begins(line, SWEEP_LIST_REPLY_PREFIX, &name)) {
		/* the hot path, without splitting the line */
		*username_r = str_tabunescape(t_strdup_noconst(name));
		return DOVEWARDEN_SWEEP_LINE_USER;
	}
	args = t_strsplit_tabescaped(line);
	if (!version_received) {
		/* VERSION <major> <minor> */
		if (str_array_length(args) < 3 ||
		    strcmp(args[0], "VERSION") != 0 ||
		    str_to_uint(args[1], &major) < 0 ||
		    major != AUTH_CLIENT_PROTOCOL_MAJOR_VERSION)
			return DOVEWARDEN_SWEEP_LINE_BAD_HANDSHAKE;
		return DOVEWARDEN_SWEEP_LINE_VERSION;
	}
	if (args[0] == NULL || strcmp(args[0], "SPID") == 0)
		return DOVEWARDEN_SWEEP_LINE_IGNORE;
	if (strcmp(args[0], "DONE") != 0 || args[1] == NULL ||
	    strcmp(args[1], dec2str(SWEEP_REQUEST_ID)) != 0)
		return DOVEWARDEN_SWEEP_LINE_UNEXPECTED;
	if (args[2] != NULL && strcmp(args[2], "fail") == 0)
		return DOVEWARDEN_SWEEP_LINE_FAILED;
	return DOVEWARDEN_SWEEP_LINE_DONE;
}

static int sweep_input_line(struct connection *conn, const char *line)
{
	struct dovewarden_sweep *sweep =
		container_of(conn, struct dovewarden_sweep, conn);
	const char *username;

	switch (dovewarden_sweep_parse_line(line, sweep->version_received,
					    &username)) {
	case DOVEWARDEN_SWEEP_LINE_USER:
		sweep_user(sweep, username);
		return 1;
	case DOVEWARDEN_SWEEP_LINE_VERSION:
		sweep->version_received = TRUE;
		return 1;
	case DOVEWARDEN_SWEEP_LINE_BAD_HANDSHAKE:
		return sweep_set_error(sweep, "Auth sent an unexpected "
			"handshake (is the socket an auth-userdb socket?)");
	case DOVEWARDEN_SWEEP_LINE_IGNORE:
		return 1;
	case DOVEWARDEN_SWEEP_LINE_UNEXPECTED:
		return sweep_set_error(sweep, "Auth sent an unexpected reply");
	case DOVEWARDEN_SWEEP_LINE_FAILED:
		return sweep_set_error(sweep, "Auth failed to list the "
			"users (see the auth log: a userdb that cannot list "
			"users, or a long list that Dovecot < 2.4.3 "
			"aborted)");
	case DOVEWARDEN_SWEEP_LINE_DONE:
		sweep->done = TRUE;
		return -1;
	}
	i_unreached();
}

static const struct connection_settings sweep_conn_set = {
	/* the auth-master handshake is not the connection API's */
	.major_version = 0,
	.input_max_size = SWEEP_INPUT_MAX_SIZE,
	.output_max_size = SWEEP_OUTPUT_MAX_SIZE,
	.input_idle_timeout_secs = DOVEWARDEN_SWEEP_IDLE_TIMEOUT_SECS,
	.client = TRUE,
};

static const struct connection_vfuncs sweep_conn_vfuncs = {
	.destroy = sweep_destroy,
	.input_line = sweep_input_line,
};

static void sweep_failed_timeout(struct dovewarden_sweep *sweep)
{
	sweep_finish(sweep);
}

/* The callback must not be called from within dovewarden_sweep_start() */
static void
sweep_fail_later(struct dovewarden_sweep *sweep, const char *error)
{
	(void)sweep_set_error(sweep, error);
	connection_deinit(&sweep->conn);
	sweep->closed = TRUE;
	sweep->to_failed = timeout_add_short(0, sweep_failed_timeout, sweep);
}

struct dovewarden_sweep *
dovewarden_sweep_start(dovewarden_sweep_add_callback_t *add_callback,
		       void *add_context, const char *socket_path,
		       const char *mask, struct event *event_parent,
		       dovewarden_sweep_callback_t *callback, void *context)
{
	struct dovewarden_sweep *sweep;
	string_t *request;

	i_assert(socket_path[0] == '/');

	sweep = i_new(struct dovewarden_sweep, 1);
	sweep->conn_list = connection_list_init(&sweep_conn_set,
						&sweep_conn_vfuncs);
	sweep->add_callback = add_callback;
	sweep->add_context = add_context;
	sweep->mask = i_strdup(mask);
	sweep->start_time = ioloop_timeval;
	sweep->callback = callback;
	sweep->context = context;
	sweep->event = event_create(event_parent);
	event_set_append_log_prefix(sweep->event, "userdb sweep: ");
	sweep->conn.event_parent = sweep->event;
	connection_init_client_unix(sweep->conn_list, &sweep->conn,
				    socket_path);

	/* the auth-master protocol has no escaping for the mask */
	if (strpbrk(mask, "\t\r\n") != NULL) {
		sweep_fail_later(sweep, "Invalid user mask");
		return sweep;
	}
	if (connection_client_connect(&sweep->conn) < 0) {
		sweep_fail_later(sweep, t_strdup_printf(
			"net_connect_unix(%s) failed: %m", socket_path));
		return sweep;
	}
	request = t_str_new(128);
	str_printfa(request, "VERSION\t%u\t%u\n",
		    AUTH_CLIENT_PROTOCOL_MAJOR_VERSION,
		    AUTH_CLIENT_PROTOCOL_MINOR_VERSION);
	str_printfa(request, "LIST\t%u\tuser=%s\t"
		    DOVEWARDEN_AUTH_PROTOCOL_FIELD"=dovewarden\n",
		    SWEEP_REQUEST_ID, mask);
	o_stream_nsend(sweep->conn.output, str_data(request),
		       str_len(request));
	e_debug(sweep->event, "Listing users matching '%s'", mask);
	return sweep;
}

void dovewarden_sweep_abort(struct dovewarden_sweep **_sweep)
{
	struct dovewarden_sweep *sweep = *_sweep;

	if (sweep == NULL)
		return;
	*_sweep = NULL;
	sweep->finished = TRUE;
	sweep_free(sweep);
}
