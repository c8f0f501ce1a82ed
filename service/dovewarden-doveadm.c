/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "ostream.h"
#include "str.h"
#include "strescape.h"
#include "str-sanitize.h"
#include "connection.h"
#include "dovewarden-doveadm.h"

/* The dsync state grows with the number of mailboxes */
#define DOVEADM_INPUT_MAX_SIZE (16 * 1024 * 1024)
#define DOVEADM_OUTPUT_MAX_SIZE (64 * 1024)
/* How much of an unexpected reply is quoted in errors */
#define DOVEADM_REPLY_QUOTE_MAX 80

enum doveadm_sync_state {
	/* connect() failed; reported from a timeout */
	DOVEADM_SYNC_STATE_CONNECT_FAILED = 0,
	/* VERSION sent, waiting for "+" (preauthenticated) */
	DOVEADM_SYNC_STATE_HANDSHAKE,
	/* sync command sent, waiting for its output line (the state) */
	DOVEADM_SYNC_STATE_OUTPUT,
	/* output received, waiting for the status line */
	DOVEADM_SYNC_STATE_STATUS,
	/* the callback was called, or the sync was aborted */
	DOVEADM_SYNC_STATE_DONE,
};

struct dovewarden_doveadm {
	struct connection_list *conns;
	/* connection_list_deinit() is closing the syncs: no callbacks */
	bool deinitializing:1;
};

struct dovewarden_doveadm_sync {
	struct connection conn;
	struct dovewarden_doveadm *doveadm;

	enum doveadm_sync_state state;
	char *command;
	char *new_state;
	/* an incremental sync: a state was sent without -f */
	bool incremental;
	/* dsync printed a state, even an empty one */
	bool state_printed;
	char *connect_error;
	unsigned int timeout_msecs;
	bool full;
	struct timeout *to;

	dovewarden_doveadm_sync_callback_t *callback;
	void *context;
};

static void doveadm_sync_free(struct dovewarden_doveadm_sync *sync)
{
	timeout_remove(&sync->to);
	connection_deinit(&sync->conn);
	i_free(sync->command);
	i_free(sync->new_state);
	i_free(sync->connect_error);
	i_free(sync);
}

static void doveadm_sync_finish(struct dovewarden_doveadm_sync *sync,
				enum dovewarden_sync_result result,
				const char *error, bool may_still_run)
{
	struct dovewarden_doveadm_sync_reply reply;

	i_assert(sync->state != DOVEADM_SYNC_STATE_DONE);
	sync->state = DOVEADM_SYNC_STATE_DONE;
	timeout_remove(&sync->to);

	i_zero(&reply);
	reply.result = result;
	reply.state = sync->new_state == NULL ? "" : sync->new_state;
	reply.error = error;
	reply.may_still_run = may_still_run;
	/* dsync prints an empty state only when the state it was given
	   can't be used (it logs "retry with a full sync"); it prints none
	   when it did not run */
	reply.needs_full_sync = result != DOVEWARDEN_SYNC_RESULT_OK &&
		sync->incremental && sync->state_printed &&
		reply.state[0] == '\0';
	sync->callback(&reply, sync->context);
}

static void doveadm_sync_connect_failed(struct dovewarden_doveadm_sync *sync)
{
	doveadm_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
			    sync->connect_error, FALSE);
	doveadm_sync_free(sync);
}

static void doveadm_sync_timeout(struct dovewarden_doveadm_sync *sync)
{
	const char *error = t_strdup_printf(
		"Sync timed out after %u secs (%s)",
		sync->timeout_msecs / 1000,
		dovewarden_doveadm_sync_get_state(sync));

	doveadm_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, error,
			    sync->state == DOVEADM_SYNC_STATE_OUTPUT ||
			    sync->state == DOVEADM_SYNC_STATE_STATUS);
	doveadm_sync_free(sync);
}

static void doveadm_sync_destroy(struct connection *conn)
{
	struct dovewarden_doveadm_sync *sync =
		container_of(conn, struct dovewarden_doveadm_sync, conn);
	const char *error;

	if (sync->state != DOVEADM_SYNC_STATE_DONE &&
	    !sync->doveadm->deinitializing) {
		error = t_strdup_printf(
			"doveadm-server disconnected (%s) while %s "
			"(see its log for the reason)",
			connection_disconnect_reason(conn),
			dovewarden_doveadm_sync_get_state(sync));
		doveadm_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
				    error, FALSE);
	}
	doveadm_sync_free(sync);
}

static int
doveadm_sync_input_handshake(struct dovewarden_doveadm_sync *sync,
			     const char *line)
{
	if (strcmp(line, "+") == 0) {
		o_stream_nsend_str(sync->conn.output, sync->command);
		sync->state = DOVEADM_SYNC_STATE_OUTPUT;
		return 1;
	}
	if (line[0] == '-') {
		doveadm_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_CONFIG,
			t_strdup_printf("doveadm-server at %s requires "
				"authentication; its unix_listener must "
				"have mode 0600 to be preauthenticated",
				sync->conn.name), FALSE);
		return -1;
	}
	doveadm_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
		t_strdup_printf("doveadm-server sent an unexpected "
				"handshake: %s",
				str_sanitize(line, DOVEADM_REPLY_QUOTE_MAX)),
			    FALSE);
	return -1;
}

static int doveadm_sync_input_line(struct connection *conn, const char *line)
{
	struct dovewarden_doveadm_sync *sync =
		container_of(conn, struct dovewarden_doveadm_sync, conn);
	enum dovewarden_sync_result result;
	const char *const *args, *error = NULL;

	switch (sync->state) {
	case DOVEADM_SYNC_STATE_HANDSHAKE:
		return doveadm_sync_input_handshake(sync, line);
	case DOVEADM_SYNC_STATE_OUTPUT:
		/* the state is the only field of the output line */
		args = t_strsplit_tabescaped(line);
		sync->new_state = i_strdup(args[0] == NULL ? "" : args[0]);
		sync->state_printed = line[0] != '\0';
		sync->state = DOVEADM_SYNC_STATE_STATUS;
		return 1;
	case DOVEADM_SYNC_STATE_STATUS:
		result = dovewarden_sync_result_from_reply(line, sync->full);
		if (result != DOVEWARDEN_SYNC_RESULT_OK) {
			error = t_strdup_printf(
				"doveadm-server replied %s",
				str_sanitize(line, DOVEADM_REPLY_QUOTE_MAX));
		}
		doveadm_sync_finish(sync, result, error, FALSE);
		return -1;
	case DOVEADM_SYNC_STATE_CONNECT_FAILED:
	case DOVEADM_SYNC_STATE_DONE:
		break;
	}
	i_unreached();
}

static const struct connection_settings doveadm_conn_set = {
	.service_name_in = "doveadm-server",
	.service_name_out = "doveadm-server",
	.major_version = 1,
	.minor_version = 0,
	.input_max_size = DOVEADM_INPUT_MAX_SIZE,
	.output_max_size = DOVEADM_OUTPUT_MAX_SIZE,
	.client = TRUE,
};

static const struct connection_vfuncs doveadm_conn_vfuncs = {
	.destroy = doveadm_sync_destroy,
	.input_line = doveadm_sync_input_line,
};

struct dovewarden_doveadm *dovewarden_doveadm_init(void)
{
	struct dovewarden_doveadm *doveadm;

	doveadm = i_new(struct dovewarden_doveadm, 1);
	doveadm->conns = connection_list_init(&doveadm_conn_set,
					      &doveadm_conn_vfuncs);
	return doveadm;
}

void dovewarden_doveadm_deinit(struct dovewarden_doveadm **_doveadm)
{
	struct dovewarden_doveadm *doveadm = *_doveadm;

	if (doveadm == NULL)
		return;
	*_doveadm = NULL;

	/* closes and frees the running syncs through their destroy() */
	doveadm->deinitializing = TRUE;
	connection_list_deinit(&doveadm->conns);
	i_free(doveadm);
}

static char *
doveadm_sync_command(const struct dovewarden_doveadm_sync_settings *set)
{
	string_t *cmd = t_str_new(256);

	/* <flags>\t<user>\tsync\t<args...> with empty flags */
	str_append_c(cmd, '\t');
	str_append_tabescaped(cmd, set->username);
	str_printfa(cmd, "\tsync\t-N\t-l\t%u\t", set->lock_timeout_secs);
	if (set->io_timeout_secs > 0)
		str_printfa(cmd, "-T\t%u\t", set->io_timeout_secs);
	if (set->full)
		str_append(cmd, "-f\t");
	str_append(cmd, "-s\t");
	str_append_tabescaped(cmd, set->state);
	str_append_c(cmd, '\t');
	str_append_tabescaped(cmd, set->destination);
	str_append_c(cmd, '\n');
	return i_strdup(str_c(cmd));
}

struct dovewarden_doveadm_sync *
dovewarden_doveadm_sync_start(
	struct dovewarden_doveadm *doveadm,
	const struct dovewarden_doveadm_sync_settings *set,
	struct event *event_parent,
	dovewarden_doveadm_sync_callback_t *callback, void *context)
{
	struct dovewarden_doveadm_sync *sync;

	i_assert(set->socket_path[0] == '/');

	sync = i_new(struct dovewarden_doveadm_sync, 1);
	sync->doveadm = doveadm;
	sync->callback = callback;
	sync->context = context;
	sync->timeout_msecs = set->timeout_msecs;
	sync->full = set->full;
	sync->command = doveadm_sync_command(set);
	sync->incremental = set->state[0] != '\0' && !set->full;

	sync->conn.event_parent = event_parent;
	connection_init_client_unix(doveadm->conns, &sync->conn,
				    set->socket_path);
	if (connection_client_connect(&sync->conn) < 0) {
		sync->state = DOVEADM_SYNC_STATE_CONNECT_FAILED;
		sync->connect_error = i_strdup_printf(
			"net_connect_unix(%s) failed: %m", set->socket_path);
		sync->to = timeout_add_short(0, doveadm_sync_connect_failed,
					     sync);
		return sync;
	}
	sync->state = DOVEADM_SYNC_STATE_HANDSHAKE;
	if (sync->timeout_msecs > 0) {
		sync->to = timeout_add(sync->timeout_msecs,
				       doveadm_sync_timeout, sync);
	}
	return sync;
}

void dovewarden_doveadm_sync_abort(struct dovewarden_doveadm_sync **_sync)
{
	struct dovewarden_doveadm_sync *sync = *_sync;

	if (sync == NULL)
		return;
	*_sync = NULL;
	sync->state = DOVEADM_SYNC_STATE_DONE;
	doveadm_sync_free(sync);
}

const char *
dovewarden_doveadm_sync_get_state(const struct dovewarden_doveadm_sync *sync)
{
	switch (sync->state) {
	case DOVEADM_SYNC_STATE_CONNECT_FAILED:
		return "connecting";
	case DOVEADM_SYNC_STATE_HANDSHAKE:
		return "waiting for handshake";
	case DOVEADM_SYNC_STATE_OUTPUT:
		return "waiting for dsync to finish";
	case DOVEADM_SYNC_STATE_STATUS:
		return "waiting for dsync's status";
	case DOVEADM_SYNC_STATE_DONE:
		return "finished";
	}
	i_unreached();
}
