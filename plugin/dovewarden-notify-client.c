/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "llist.h"
#include "str.h"
#include "str-sanitize.h"
#include "strescape.h"
#include "time-util.h"
#include "ioloop.h"
#include "istream.h"
#include "ostream.h"
#include "connection.h"
#include "dovewarden-notify-client.h"

#include <errno.h>
#include <poll.h>
#include <sys/ioctl.h>
#ifdef __linux__
#  include <linux/sockios.h>
#endif

/* New mail is sent as soon as the running ioloop callback (the command
   that saved it) returns: the mails of one command still make one line,
   and the service hears of it at once. Other changes wait this long, so
   that an APPEND that creates the INBOX first sends one line, not a low
   one for the INBOX while the message is still being read and a high one
   after it. */
#define DOVEWARDEN_NOTIFY_LOW_FLUSH_MSECS 30
/* After a notification was sent, the next one waits until this long has
   passed, and covers whatever changed meanwhile. A session that changes
   mail all the time so sends two lines a second instead of one per
   command: each costs the process and the service a wakeup, and the
   service syncs such a user again and again anyway. New mail is held
   back only by a notification of new mail. */
#define DOVEWARDEN_NOTIFY_HOLDOFF_MSECS 500
#define DOVEWARDEN_NOTIFY_RECONNECT_MIN_MSECS 1000
#define DOVEWARDEN_NOTIFY_RECONNECT_MAX_MSECS 5000
#define DOVEWARDEN_NOTIFY_OUTPUT_MAX_SIZE (64 * 1024)
/* A connection with nothing to send and no wait running is closed after
   this long, so that the service holds connections only for recently
   active sessions, not for every idle IMAP client (a server may have
   50,000 of them); the next change connects again */
#define DOVEWARDEN_NOTIFY_IDLE_DISCONNECT_MSECS 5000
/* The longest wait the service accepts */
#define DOVEWARDEN_NOTIFY_WAIT_MAX_MSECS (60 * 60 * 1000)

enum client_wait_result {
	CLIENT_WAIT_RESULT_OK,
	CLIENT_WAIT_RESULT_FAILED,
	CLIENT_WAIT_RESULT_TIMEOUT,
	CLIENT_WAIT_RESULT_LOST,
};

struct dovewarden_notify_wait {
	struct dovewarden_notify_wait *prev, *next;
	unsigned int id;
	/* Copies: the wait may outlive the user's session */
	char *username;
	struct event *event;
	/* NULL once the user's session has ended */
	struct dovewarden_notify_user *user;
	unsigned int timeout_msecs;
	struct timeval start, deadline;
	/* Called when the wait ends (NULL: the caller runs
	   dovewarden_notify_client_wait_run()) */
	dovewarden_notify_wait_callback_t *callback;
	void *context;
};

struct dovewarden_notify_conn {
	struct connection conn;
	struct dovewarden_notify_client *client;
};

struct dovewarden_notify_client {
	char *path;
	struct event *event;

	struct connection_list *conn_list;
	/* NULL while disconnected */
	struct dovewarden_notify_conn *conn;
	/* The ioloop that conn and the timeouts were added to */
	struct ioloop *ioloop;
	/* Sends the pending users (see DOVEWARDEN_NOTIFY_HOLDOFF_MSECS) */
	struct timeout *to_flush;
	/* When notifications were last sent, and of new mail (high or
	   sync priority) (zero: never) */
	struct timeval last_sent, last_sent_high;
	/* Set while waiting before the next connect attempt */
	struct timeout *to_reconnect;
	/* When the connection was made */
	struct timeval connected_time;
	unsigned int reconnect_msecs;

	/* Users with a pending notification, oldest first */
	struct dovewarden_notify_user *pending_head, *pending_tail;

	/* Sent wait requests that have not ended, oldest first */
	struct dovewarden_notify_wait *waits_head, *waits_tail;
	unsigned int last_wait_id;
	/* Set while dovewarden_notify_client_wait_run() runs */
	struct ioloop *wait_ioloop;
	/* Ends the waits with a callback at their deadline */
	struct timeout *to_waits;
	/* Closes the connection once it has been idle for a while */
	struct timeout *to_idle;
	/* The lines sent on the connection that the service may not have
	   read yet (see client_unread_trim()), and those to send again on
	   the next connection because a service went away without reading
	   them (a kill -9: the lines in its socket are lost with it) */
	string_t *unread, *resend;

	/* A connection failure was logged; the next success is logged too */
	bool failure_logged:1;
	/* A pending user has high or sync priority */
	bool pending_high:1;
};

/* Only one client exists per process; the ioloop destroy callback needs
   to find it. */
static struct dovewarden_notify_client *dovewarden_notify_client_global;

static const char *const reason_names[] = {
	"save", "copy", "expunge", "flags", "keywords", "changes",
	"mailbox-create", "mailbox-delete", "mailbox-rename",
	"mailbox-update", "subscribe", "unsubscribe",
};

static void client_flush(struct dovewarden_notify_client *client);
static int client_send_resend(struct dovewarden_notify_client *client);
static void client_waits_lost(struct dovewarden_notify_client *client,
			      const char *error);

static const char *reasons_to_str(enum dovewarden_notify_reason reasons)
{
	string_t *str = t_str_new(64);
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(reason_names); i++) {
		if ((reasons & (1U << i)) == 0)
			continue;
		if (str_len(str) > 0)
			str_append_c(str, ',');
		str_append(str, reason_names[i]);
	}
	return str_len(str) == 0 ? "none" : str_c(str);
}

static void client_dequeue(struct dovewarden_notify_client *client,
			   struct dovewarden_notify_user *user)
{
	i_assert(user->queued);

	DLLIST2_REMOVE(&client->pending_head, &client->pending_tail, user);
	user->queued = FALSE;
	user->priority = DOVEWARDEN_PRIORITY_NONE;
	user->reasons = 0;
	user->import_priority = DOVEWARDEN_PRIORITY_NONE;
	user->imported = FALSE;
	if (client->pending_head == NULL) {
		client->pending_high = FALSE;
		timeout_remove(&client->to_flush);
		timeout_remove(&client->to_reconnect);
	}
}

static void client_conn_free(struct dovewarden_notify_client *client)
{
	struct dovewarden_notify_conn *conn = client->conn;
	struct istream *input = conn->conn.input;

	/* Closing a unix socket with unread input resets the service's
	   side of it; its VERSION line may still be unread. */
	if (input != NULL && i_stream_read(input) > 0)
		i_stream_skip(input, i_stream_get_data_size(input));

	client->conn = NULL;
	connection_deinit(&conn->conn);
	i_free(conn);
	/* a service that is not killed reads what is left in its socket
	   also after this side closed it */
	str_truncate(client->unread, 0);
}

/* The connection and the timeouts all live in client->ioloop: the first
   ioloop that needed them, normally the process's main one. Writes work
   from any ioloop; only the callbacks wait for it to run. */
static struct ioloop *client_ioloop(struct dovewarden_notify_client *client)
{
	if (client->ioloop == NULL)
		client->ioloop = current_ioloop;
	return client->ioloop;
}

static bool client_is_idle(struct dovewarden_notify_client *client)
{
	return client->conn != NULL && client->pending_head == NULL &&
		client->waits_head == NULL &&
		o_stream_get_buffer_used_size(client->conn->conn.output) == 0;
}

static void client_idle_timeout(struct dovewarden_notify_client *client)
{
	timeout_remove(&client->to_idle);
	if (!client_is_idle(client))
		return;
	e_debug(client->event, "Closing the idle connection to %s",
		client->path);
	client_conn_free(client);
}

/* (Re)start the idle timer when the connection has nothing to do */
static void client_idle_check(struct dovewarden_notify_client *client)
{
	timeout_remove(&client->to_idle);
	if (client_is_idle(client)) {
		client->to_idle = timeout_add_to(client_ioloop(client),
			DOVEWARDEN_NOTIFY_IDLE_DISCONNECT_MSECS,
			client_idle_timeout, client);
	}
}

static void client_reconnect_timeout(struct dovewarden_notify_client *client)
{
	timeout_remove(&client->to_reconnect);
	client_flush(client);
}

static void client_schedule_reconnect(struct dovewarden_notify_client *client)
{
	if ((client->pending_head == NULL && str_len(client->resend) == 0) ||
	    client->to_reconnect != NULL)
		return;
	timeout_remove(&client->to_flush);
	client->to_reconnect = timeout_add_to(client_ioloop(client),
					      client->reconnect_msecs,
					      client_reconnect_timeout, client);
	client->reconnect_msecs = I_MIN(client->reconnect_msecs * 2,
					DOVEWARDEN_NOTIFY_RECONNECT_MAX_MSECS);
}

/* How long an ending dsync process waits for the service's version
   before its last imports are dropped */
#define DOVEWARDEN_NOTIFY_IMPORT_VERSION_WAIT_MSECS 100

/* The most kept of what the service may not have read (older lines are
   forgotten): half the output buffer, so that it always fits into a new
   connection's */
#define DOVEWARDEN_NOTIFY_UNREAD_MAX_SIZE (DOVEWARDEN_NOTIFY_OUTPUT_MAX_SIZE / 2)

/* Drop whole lines from the start of str until it is at most max_size
   long (a line cut by that point is kept) */
static void str_keep_last_lines(string_t *str, size_t max_size)
{
	const unsigned char *data = str_data(str);
	size_t len = str_len(str), start;

	if (len <= max_size)
		return;
	for (start = len - max_size; start > 0 && data[start - 1] != '\n';
	     start--) ;
	str_delete(str, 0, start);
}

/* Drop from client->unread what the service has surely read: all that was
   written to the socket once the kernel says that nothing written is
   unread (SIOCOUTQ of a unix socket; it counts buffers, not bytes, so
   only 0 is exact), but not what the output stream still holds. Without
   that information everything is kept, up to a bound. */
static void client_unread_trim(struct dovewarden_notify_client *client)
{
	size_t keep = DOVEWARDEN_NOTIFY_UNREAD_MAX_SIZE;
	int queued;

#ifdef SIOCOUTQ
	if (client->conn != NULL &&
	    ioctl(client->conn->conn.fd_out, SIOCOUTQ, &queued) == 0 &&
	    queued == 0) {
		keep = o_stream_get_buffer_used_size(
			client->conn->conn.output);
	}
#else
	(void)queued;
#endif
	str_keep_last_lines(client->unread, keep);
}

/* A line was handed to the connection's output. The caller trimmed
   client->unread just before (client_unread_trim()), while the kernel
   could still tell whether the service had read everything before it. */
static void client_unread_add(struct dovewarden_notify_client *client,
			      const string_t *line)
{
	str_append_str(client->unread, line);
	str_keep_last_lines(client->unread, DOVEWARDEN_NOTIFY_UNREAD_MAX_SIZE);
}

static void client_disconnect(struct dovewarden_notify_client *client,
			      const char *error)
{
	struct ostream *output = client->conn->conn.output;
	struct istream *input = client->conn->conn.input;
	size_t unsent = output == NULL ? 0 :
		o_stream_get_buffer_used_size(output);
	/* a unix socket's peer that goes away without reading what it got
	   resets the connection (EPIPE only says that it went away) */
	bool reset = (input != NULL && input->stream_errno == ECONNRESET) ||
		(output != NULL && output->stream_errno == ECONNRESET);

	if ((reset || unsent > 0) && str_len(client->unread) > 0) {
		e_debug(client->event, "%s: the service may not have read "
			"%zu bytes of notifications - sending them again",
			client->path, str_len(client->unread));
		str_append_str(client->resend, client->unread);
		str_keep_last_lines(client->resend,
				    DOVEWARDEN_NOTIFY_UNREAD_MAX_SIZE);
		unsent = 0;
	}
	str_truncate(client->unread, 0);
	client_conn_free(client);
	client_waits_lost(client, error);
	if (unsent > 0) {
		e_warning(client->event, "Lost connection to %s: %s - "
			  "%zu bytes of notifications were lost",
			  client->path, error, unsent);
		client->failure_logged = TRUE;
	} else if (client->pending_head != NULL && !client->failure_logged) {
		e_warning(client->event, "Lost connection to %s: %s - "
			  "keeping notifications pending and reconnecting",
			  client->path, error);
		client->failure_logged = TRUE;
	} else {
		e_debug(client->event, "Disconnected from %s: %s",
			client->path, error);
	}
	client_schedule_reconnect(client);
}

static void client_conn_destroy(struct connection *_conn)
{
	struct dovewarden_notify_conn *conn =
		container_of(_conn, struct dovewarden_notify_conn, conn);

	client_disconnect(conn->client, connection_disconnect_reason(_conn));
}

static void client_conn_handshake_ready(struct connection *_conn)
{
	struct dovewarden_notify_conn *conn =
		container_of(_conn, struct dovewarden_notify_conn, conn);
	struct dovewarden_notify_client *client = conn->client;

	/* Only a service that answered counts as recovered; one that
	   accepts and closes at once keeps backing off quietly. */
	client->reconnect_msecs = DOVEWARDEN_NOTIFY_RECONNECT_MIN_MSECS;
	if (client->failure_logged) {
		e_info(client->event, "Reconnected to %s", client->path);
		client->failure_logged = FALSE;
	}
	/* imports and lines sent again wait for the service's version */
	if ((client->pending_head != NULL || str_len(client->resend) > 0) &&
	    client->to_flush == NULL && client->to_reconnect == NULL)
		client_flush(client);
}

static const char *const client_wait_result_names[] = {
	"ok", "failed", "timeout", "lost",
};

static void client_wait_free(struct dovewarden_notify_client *client,
			     struct dovewarden_notify_wait *wait)
{
	DLLIST2_REMOVE(&client->waits_head, &client->waits_tail, wait);
	event_unref(&wait->event);
	i_free(wait->username);
	i_free(wait);
}

static void client_wait_log(struct dovewarden_notify_wait *wait,
			    enum client_wait_result result, const char *reason)
{
	const char *username = str_sanitize(wait->username, 256);
	long long msecs = timeval_diff_msecs(&ioloop_timeval, &wait->start);
	struct event_passthrough *e;
	const char *msg = NULL;

	e = event_create_passthrough(wait->event)->
		set_name("dovewarden_sync_wait_finished")->
		add_str("result", client_wait_result_names[result])->
		add_int("duration_msecs", msecs);
	if (reason != NULL)
		e->add_str("error", reason);

	switch (result) {
	case CLIENT_WAIT_RESULT_OK:
		e_debug(e->event(), "Sync wait for user %s: replicated after "
			"%lld ms", username, msecs);
		return;
	case CLIENT_WAIT_RESULT_TIMEOUT:
		msg = t_strdup_printf("Sync wait for user %s timed out after "
				      "%u ms - replicating in the background",
				      username, wait->timeout_msecs);
		break;
	case CLIENT_WAIT_RESULT_FAILED:
	case CLIENT_WAIT_RESULT_LOST:
		msg = t_strdup_printf("Sync wait for user %s failed after "
				      "%lld ms: %s - replicating in the "
				      "background", username, msecs,
				      str_sanitize(reason, 256));
		break;
	}
	/* Once per session: a dead peer would otherwise log every mail */
	if (wait->user != NULL && wait->user->sync_wait_logged) {
		e_debug(e->event(), "%s", msg);
		return;
	}
	e_warning(e->event(), "%s", msg);
	if (wait->user != NULL)
		wait->user->sync_wait_logged = TRUE;
}

static void client_waits_schedule(struct dovewarden_notify_client *client);

static void client_wait_finish(struct dovewarden_notify_client *client,
			       struct dovewarden_notify_wait *wait,
			       enum client_wait_result result,
			       const char *reason)
{
	dovewarden_notify_wait_callback_t *callback = wait->callback;
	void *context = wait->context;

	T_BEGIN {
		client_wait_log(wait, result, reason);
	} T_END;
	if (result == CLIENT_WAIT_RESULT_LOST && wait->user != NULL) {
		/* The service may not have read the request: notify again
		   once it is back */
		dovewarden_notify_client_add(client, wait->user,
					     DOVEWARDEN_PRIORITY_HIGH,
					     DOVEWARDEN_NOTIFY_REASON_SAVE);
	}
	client_wait_free(client, wait);
	client_idle_check(client);
	if (client->wait_ioloop != NULL)
		io_loop_stop(client->wait_ioloop);
	if (callback != NULL) {
		client_waits_schedule(client);
		callback(context);
	}
}

static void client_waits_lost(struct dovewarden_notify_client *client,
			      const char *error)
{
	const char *reason;

	if (client->waits_head == NULL)
		return;
	reason = t_strdup_printf("Lost connection to %s: %s", client->path,
				 error);
	while (client->waits_head != NULL) {
		client_wait_finish(client, client->waits_head,
				   CLIENT_WAIT_RESULT_LOST, reason);
	}
}

static struct dovewarden_notify_wait *
client_wait_find(struct dovewarden_notify_client *client, unsigned int id)
{
	struct dovewarden_notify_wait *wait;

	for (wait = client->waits_head; wait != NULL; wait = wait->next) {
		if (wait->id == id)
			return wait;
	}
	return NULL;
}

static int
client_conn_input_args(struct connection *_conn, const char *const *args)
{
	struct dovewarden_notify_conn *conn =
		container_of(_conn, struct dovewarden_notify_conn, conn);
	struct dovewarden_notify_client *client = conn->client;
	struct dovewarden_notify_wait *wait;
	const char *reason, *error;
	unsigned int id;
	bool success;

	if (dovewarden_notify_parse_reply(args, &id, &success, &reason,
					  &error) < 0) {
		e_error(client->event, "%s: Invalid reply: %s", client->path,
			error);
		return -1;
	}
	wait = client_wait_find(client, id);
	if (wait == NULL) {
		/* it timed out here already */
		e_debug(client->event, "Reply to sync wait %u that ended "
			"already", id);
		return 1;
	}
	client_wait_finish(client, wait, success ? CLIENT_WAIT_RESULT_OK :
			   CLIENT_WAIT_RESULT_FAILED, reason);
	return 1;
}

static int client_output(struct dovewarden_notify_client *client)
{
	struct ostream *output = client->conn->conn.output;
	int ret;

	if ((ret = o_stream_flush(output)) < 0) {
		client_disconnect(client, o_stream_get_error(output));
		return -1;
	}
	if (ret > 0 && (client->pending_head != NULL ||
			str_len(client->resend) > 0))
		client_flush(client);
	else if (ret > 0)
		client_idle_check(client);
	return 1;
}

static int client_connect(struct dovewarden_notify_client *client)
{
	struct dovewarden_notify_conn *conn;
	const char *error;

	i_assert(client->conn == NULL);

	conn = i_new(struct dovewarden_notify_conn, 1);
	conn->client = client;
	conn->conn.event_parent = client->event;
	connection_init_client_unix(client->conn_list, &conn->conn,
				    client->path);
	connection_switch_ioloop_to(&conn->conn, client_ioloop(client));
	if (connection_client_connect(&conn->conn) < 0) {
		error = t_strdup_printf("connect(%s) failed: %m", client->path);
		connection_deinit(&conn->conn);
		i_free(conn);
		if (!client->failure_logged) {
			e_warning(client->event, "%s - keeping notifications "
				  "pending and retrying", error);
			client->failure_logged = TRUE;
		} else {
			e_debug(client->event, "%s", error);
		}
		return -1;
	}
	client->conn = conn;
	io_loop_time_refresh();
	client->connected_time = ioloop_timeval;
	o_stream_set_flush_callback(conn->conn.output, client_output, client);
	timeout_remove(&client->to_reconnect);
	e_debug(client->event, "Connected to %s", client->path);
	return 0;
}

/* Append the user's import line, if any. Returns FALSE when the service's
   version is not known yet, unless last_chance: the process (a short-lived
   doveadm) is ending. Then a sync back is sent as a change, which every
   service knows, and a mere import is lost. */
static bool client_append_import(struct dovewarden_notify_client *client,
				 struct dovewarden_notify_user *user,
				 string_t *line, bool last_chance)
{
	struct connection *conn = &client->conn->conn;

	if (!user->imported)
		return TRUE;
	if (!conn->version_received && !last_chance)
		return FALSE;
	if (conn->version_received &&
	    conn->minor_version >= DOVEWARDEN_NOTIFY_MINOR_VERSION_IMPORT) {
		dovewarden_notify_append_import(line, user->username,
						user->import_priority);
	} else if (user->import_priority > DOVEWARDEN_PRIORITY_NONE &&
		   user->priority == DOVEWARDEN_PRIORITY_NONE) {
		/* an older service: a change to sync back, as before */
		dovewarden_notify_append_notify(line, user->username,
						user->import_priority);
	}
	return TRUE;
}

static void client_log_sent(struct dovewarden_notify_client *client,
			    struct dovewarden_notify_user *user)
{
	const char *priority = dovewarden_priority_to_str(user->priority);
	const char *reasons = reasons_to_str(user->reasons);

	e_debug(event_create_passthrough(user->event)->
		set_name("dovewarden_notification_sent")->
		add_str("priority", priority)->
		add_str("reason", reasons)->
		add_str("import", !user->imported ? "no" :
			dovewarden_priority_to_str(user->import_priority))->
		event(),
		"Notified %s: user=%s priority=%s reason=%s%s",
		client->path, str_sanitize(user->username, 256),
		priority, reasons, !user->imported ? "" :
		" (changes made by dsync)");
}

/* Returns 1 when the line was queued, 0 when the output buffer has no room
   for it (or an import waits for the service's version), -1 when the
   connection failed (and is gone). */
static int client_send_user(struct dovewarden_notify_client *client,
			    struct dovewarden_notify_user *user,
			    bool last_chance)
{
	struct ostream *output = client->conn->conn.output;
	string_t *line;
	int ret = 1;

	T_BEGIN {
		line = t_str_new(128);
		if (user->priority > DOVEWARDEN_PRIORITY_NONE) {
			dovewarden_notify_append_notify(line, user->username,
							user->priority);
		}
		if (!client_append_import(client, user, line, last_chance))
			ret = 0;
		else if (str_len(line) == 0)
			;
		else if (o_stream_get_buffer_avail_size(output) < str_len(line))
			ret = 0;
		else {
			client_unread_trim(client);
			if (o_stream_send(output, str_data(line),
					  str_len(line)) < 0) {
				client_disconnect(client,
						  o_stream_get_error(output));
				ret = -1;
			} else {
				client_unread_add(client, line);
				client_log_sent(client, user);
			}
		}
	} T_END;
	return ret;
}

static void client_flush(struct dovewarden_notify_client *client)
{
	struct dovewarden_notify_user *user;

	timeout_remove(&client->to_flush);
	if (client->pending_head == NULL && str_len(client->resend) == 0)
		return;
	if (client->conn == NULL) {
		if (client->to_reconnect != NULL)
			return;
		if (client_connect(client) < 0) {
			client_schedule_reconnect(client);
			return;
		}
	}
	if (client_send_resend(client) <= 0)
		return;
	while ((user = client->pending_head) != NULL) {
		/* When the buffer is full, the output's flush callback
		   brings us back here once it drains. */
		if (client_send_user(client, user, FALSE) <= 0)
			break;
		if (user->priority >= DOVEWARDEN_PRIORITY_HIGH)
			client->last_sent_high = ioloop_timeval;
		client_dequeue(client, user);
		client->last_sent = ioloop_timeval;
	}
	client_idle_check(client);
}

/* A service older than imports gets none: a sync back becomes a change,
   as that plugin sent it */
static void client_resend_drop_imports(struct dovewarden_notify_client *client)
{
	const char *const *lines, *const *args;
	string_t *str;

	T_BEGIN {
		lines = t_strsplit(str_c(client->resend), "\n");
		str = t_str_new(str_len(client->resend));
		for (; *lines != NULL; lines++) {
			if ((*lines)[0] != 'I' || (*lines)[1] != '\t') {
				if ((*lines)[0] != '\0') {
					str_append(str, *lines);
					str_append_c(str, '\n');
				}
				continue;
			}
			args = t_strsplit_tabescaped(*lines);
			if (str_array_length(args) == 3 &&
			    strcmp(args[2], "low") == 0) {
				dovewarden_notify_append_notify(str, args[1],
					DOVEWARDEN_PRIORITY_LOW);
			}
		}
		str_truncate(client->resend, 0);
		str_append_str(client->resend, str);
	} T_END;
}

/* Send the lines a service went away without reading. Returns 1 when
   they are sent (or there are none), 0 when the output has no room yet,
   -1 when the connection failed. */
static int client_send_resend(struct dovewarden_notify_client *client)
{
	struct ostream *output = client->conn->conn.output;

	if (str_len(client->resend) == 0)
		return 1;
	if (!client->conn->conn.version_received) {
		/* the handshake flushes again */
		return 0;
	}
	if (client->conn->conn.minor_version <
	    DOVEWARDEN_NOTIFY_MINOR_VERSION_IMPORT)
		client_resend_drop_imports(client);
	if (o_stream_get_buffer_avail_size(output) < str_len(client->resend))
		return 0;
	client_unread_trim(client);
	if (o_stream_send(output, str_data(client->resend),
			  str_len(client->resend)) < 0) {
		client_disconnect(client, o_stream_get_error(output));
		return -1;
	}
	e_debug(client->event, "%s: sent %zu bytes of notifications again",
		client->path, str_len(client->resend));
	client_unread_add(client, client->resend);
	str_truncate(client->resend, 0);
	client_idle_check(client);
	return 1;
}

/* Milliseconds until the pending users are sent */
static unsigned int client_flush_delay(struct dovewarden_notify_client *client)
{
	const struct timeval *last = client->pending_high ?
		&client->last_sent_high : &client->last_sent;
	unsigned int delay = client->pending_high ? 0 :
		DOVEWARDEN_NOTIFY_LOW_FLUSH_MSECS;
	long long since;

	if (last->tv_sec == 0)
		return delay;
	since = timeval_diff_msecs(&ioloop_timeval, last);
	if (since < 0 || since >= DOVEWARDEN_NOTIFY_HOLDOFF_MSECS - delay)
		return delay;
	return DOVEWARDEN_NOTIFY_HOLDOFF_MSECS - since;
}

static unsigned int client_waits_expire(struct dovewarden_notify_client *client);

static void client_waits_timeout(struct dovewarden_notify_client *client)
{
	timeout_remove(&client->to_waits);
	(void)client_waits_expire(client);
	client_waits_schedule(client);
}

/* The waits with a callback end at their deadline from the client's
   ioloop; the others in dovewarden_notify_client_wait_run() */
static void client_waits_schedule(struct dovewarden_notify_client *client)
{
	struct dovewarden_notify_wait *wait;
	long long left, min_left = -1;

	timeout_remove(&client->to_waits);
	io_loop_time_refresh();
	for (wait = client->waits_head; wait != NULL; wait = wait->next) {
		if (wait->callback == NULL)
			continue;
		left = timeval_diff_msecs(&wait->deadline, &ioloop_timeval);
		if (min_left < 0 || left < min_left)
			min_left = left;
	}
	if (min_left < 0)
		return;
	client->to_waits = timeout_add_to(client_ioloop(client),
					  I_MAX(min_left, 0) + 1,
					  client_waits_timeout, client);
}

static void client_ioloop_destroyed(struct ioloop *ioloop)
{
	struct dovewarden_notify_client *client =
		dovewarden_notify_client_global;

	if (client == NULL || client->ioloop != ioloop)
		return;
	/* There is no way to move to the outer ioloop from here. Pending
	   users stay pending and are sent by the next change or at their
	   deinit at the latest. */
	timeout_remove(&client->to_flush);
	timeout_remove(&client->to_reconnect);
	timeout_remove(&client->to_waits);
	timeout_remove(&client->to_idle);
	if (client->conn != NULL) {
		struct ostream *output = client->conn->conn.output;
		size_t unsent = 0;

		if (o_stream_flush(output) >= 0)
			unsent = o_stream_get_buffer_used_size(output);
		if (unsent > 0) {
			e_warning(client->event, "%s: %zu bytes of "
				  "notifications were lost", client->path,
				  unsent);
		}
		client_conn_free(client);
	}
	client->ioloop = NULL;
}

static const struct connection_settings client_conn_set = {
	.service_name_in = DOVEWARDEN_NOTIFY_SERVICE_NAME,
	.service_name_out = DOVEWARDEN_NOTIFY_SERVICE_NAME,
	.major_version = DOVEWARDEN_NOTIFY_MAJOR_VERSION,
	.minor_version = DOVEWARDEN_NOTIFY_MINOR_VERSION,
	.input_max_size = DOVEWARDEN_NOTIFY_MAX_LINE_LENGTH,
	.output_max_size = DOVEWARDEN_NOTIFY_OUTPUT_MAX_SIZE,
	.client = TRUE,
};

static const struct connection_vfuncs client_conn_vfuncs = {
	.destroy = client_conn_destroy,
	.handshake_ready = client_conn_handshake_ready,
	.input_args = client_conn_input_args,
};

struct dovewarden_notify_client *
dovewarden_notify_client_init(const char *socket_path)
{
	struct dovewarden_notify_client *client;

	i_assert(dovewarden_notify_client_global == NULL);

	client = i_new(struct dovewarden_notify_client, 1);
	client->path = i_strdup(socket_path);
	client->event = event_create(NULL);
	event_add_category(client->event, &event_category_dovewarden);
	event_set_append_log_prefix(client->event, "dovewarden: ");
	client->conn_list = connection_list_init(&client_conn_set,
						 &client_conn_vfuncs);
	client->reconnect_msecs = DOVEWARDEN_NOTIFY_RECONNECT_MIN_MSECS;
	client->unread = str_new(default_pool, 256);
	client->resend = str_new(default_pool, 64);
	dovewarden_notify_client_global = client;
	io_loop_add_destroy_callback(client_ioloop_destroyed);
	return client;
}

void dovewarden_notify_client_deinit(struct dovewarden_notify_client **_client)
{
	struct dovewarden_notify_client *client = *_client;
	struct dovewarden_notify_user *user;
	size_t unsent;

	*_client = NULL;

	io_loop_remove_destroy_callback(client_ioloop_destroyed);
	dovewarden_notify_client_global = NULL;

	while ((user = client->pending_head) != NULL)
		client_dequeue(client, user);
	while (client->waits_head != NULL)
		client_wait_free(client, client->waits_head);
	timeout_remove(&client->to_waits);
	timeout_remove(&client->to_flush);
	timeout_remove(&client->to_reconnect);
	timeout_remove(&client->to_idle);
	if (client->conn != NULL) {
		struct ostream *output = client->conn->conn.output;

		if (o_stream_flush(output) >= 0 &&
		    (unsent = o_stream_get_buffer_used_size(output)) > 0) {
			e_warning(client->event, "%s: %zu bytes of "
				  "notifications could not be sent and are "
				  "lost", client->path, unsent);
		}
		client_conn_free(client);
	}
	connection_list_deinit(&client->conn_list);
	if (str_len(client->resend) > 0) {
		e_warning(client->event, "%s: %zu bytes of notifications that "
			  "a service went away without reading could not be "
			  "sent again and are lost", client->path,
			  str_len(client->resend));
	}
	str_free(&client->unread);
	str_free(&client->resend);
	event_unref(&client->event);
	i_free(client->path);
	i_free(client);
}

/* Send the pending users after their delay, unless a flush, a reconnect
   or the output's flush callback will */
static void client_schedule_flush(struct dovewarden_notify_client *client)
{
	if (client->to_flush == NULL && client->to_reconnect == NULL &&
	    (client->conn == NULL ||
	     o_stream_get_buffer_used_size(client->conn->conn.output) == 0)) {
		client->to_flush =
			timeout_add_short_to(client_ioloop(client),
					     client_flush_delay(client),
					     client_flush, client);
	}
}

void dovewarden_notify_client_add(struct dovewarden_notify_client *client,
				  struct dovewarden_notify_user *user,
				  enum dovewarden_priority priority,
				  enum dovewarden_notify_reason reasons)
{
	i_assert(priority > DOVEWARDEN_PRIORITY_NONE &&
		 priority < DOVEWARDEN_PRIORITY_COUNT);

	if (!user->queued) {
		DLLIST2_APPEND(&client->pending_head, &client->pending_tail,
			       user);
		user->queued = TRUE;
	}
	user->priority = I_MAX(user->priority, priority);
	user->reasons |= reasons;

	if (priority >= DOVEWARDEN_PRIORITY_HIGH && !client->pending_high) {
		/* new mail doesn't wait for the delay of other changes */
		client->pending_high = TRUE;
		timeout_remove(&client->to_flush);
	}
	client_schedule_flush(client);
}

void dovewarden_notify_client_add_import(struct dovewarden_notify_client *client,
					 struct dovewarden_notify_user *user,
					 enum dovewarden_priority priority,
					 enum dovewarden_notify_reason reasons)
{
	i_assert(priority <= DOVEWARDEN_PRIORITY_LOW);

	if (!user->queued) {
		DLLIST2_APPEND(&client->pending_head, &client->pending_tail,
			       user);
		user->queued = TRUE;
	}
	user->imported = TRUE;
	user->import_priority = I_MAX(user->import_priority, priority);
	user->reasons |= reasons;
	/* a dsync process may end within milliseconds: its first import
	   connects at once, so that the service's version is known by the
	   end (an import waits for it); later ones wait like other
	   changes */
	if (client->last_sent.tv_sec == 0 && client->conn == NULL &&
	    client->to_reconnect == NULL) {
		timeout_remove(&client->to_flush);
		client->to_flush = timeout_add_short_to(client_ioloop(client),
							0, client_flush,
							client);
		return;
	}
	client_schedule_flush(client);
}

void
dovewarden_notify_client_user_deinit(struct dovewarden_notify_client *client,
				     struct dovewarden_notify_user *user)
{
	struct dovewarden_notify_wait *wait;
	const char *priority;

	for (wait = client->waits_head; wait != NULL; wait = wait->next) {
		if (wait->user == user)
			wait->user = NULL;
	}
	if (!user->queued)
		return;

	/* The last chance: connect now even while backing off */
	if (client->conn == NULL) {
		timeout_remove(&client->to_reconnect);
		if (client_connect(client) < 0)
			client_schedule_reconnect(client);
	}
	if (client->conn != NULL && user->imported &&
	    !client->conn->conn.version_received) {
		/* A dsync process is ending (only those report imports):
		   its imports wait for the service's VERSION line, which a
		   running service sends at once. Give a connection made
		   just now a moment: up to
		   DOVEWARDEN_NOTIFY_IMPORT_VERSION_WAIT_MSECS after it was
		   made (a service that has not answered an older one is
		   not running). */
		struct pollfd pfd = {
			.fd = client->conn->conn.fd_in,
			.events = POLLIN,
		};
		long long age;

		io_loop_time_refresh();
		age = timeval_diff_msecs(&ioloop_timeval,
					 &client->connected_time);
		if (age >= DOVEWARDEN_NOTIFY_IMPORT_VERSION_WAIT_MSECS ||
		    (age >= 0 &&
		     poll(&pfd, 1, DOVEWARDEN_NOTIFY_IMPORT_VERSION_WAIT_MSECS -
			  age) > 0))
			client->conn->conn.v.input(&client->conn->conn);
		/* its handshake flushed the pending users */
		if (!user->queued)
			return;
	}
	if (client->conn != NULL &&
	    client_send_user(client, user, TRUE) > 0) {
		client_dequeue(client, user);
		return;
	}
	if (user->priority == DOVEWARDEN_PRIORITY_NONE &&
	    user->import_priority == DOVEWARDEN_PRIORITY_NONE) {
		/* only evidence for the service's settle rule */
		e_debug(user->event, "Couldn't report dsync's changes to %s "
			"before the session ended", client->path);
		client_dequeue(client, user);
		return;
	}
	priority = dovewarden_priority_to_str(
		I_MAX(user->priority, user->import_priority));
	e_warning(user->event, "Couldn't notify %s before the session ended - "
		  "notification lost (priority=%s)", client->path, priority);
	client_dequeue(client, user);
}

bool dovewarden_notify_client_wait_send(struct dovewarden_notify_client *client,
					struct dovewarden_notify_user *user,
					unsigned int timeout_msecs,
					dovewarden_notify_wait_callback_t *callback,
					void *context)
{
	struct dovewarden_notify_wait *wait;
	struct ostream *output;
	unsigned int id;
	bool sent = FALSE;

	i_assert(timeout_msecs > 0);
	timeout_msecs = I_MIN(timeout_msecs, DOVEWARDEN_NOTIFY_WAIT_MAX_MSECS);

	if (client->conn == NULL) {
		/* Try at once even while backing off: a failed connect()
		   to a unix socket costs little, and a service that is
		   back should be waited for. */
		if (client_connect(client) < 0)
			return FALSE;
		if (client->pending_head != NULL)
			client_flush(client);
		if (client->conn == NULL)
			return FALSE;
	}
	output = client->conn->conn.output;
	if (++client->last_wait_id == 0)
		client->last_wait_id++;
	id = client->last_wait_id;

	T_BEGIN {
		string_t *line = t_str_new(128);

		dovewarden_notify_append_wait(line, id, user->username,
					      timeout_msecs);
		client_unread_trim(client);
		if (o_stream_get_buffer_avail_size(output) < str_len(line))
			e_debug(user->event, "%s: Output buffer full - "
				"not waiting for the sync", client->path);
		else if (o_stream_send(output, str_data(line),
				       str_len(line)) < 0)
			client_disconnect(client, o_stream_get_error(output));
		else {
			/* sent again, if need be, as the change it is */
			str_truncate(line, 0);
			dovewarden_notify_append_notify(line, user->username,
				DOVEWARDEN_PRIORITY_SYNC);
			client_unread_add(client, line);
			sent = TRUE;
		}
	} T_END;
	if (!sent)
		return FALSE;

	wait = i_new(struct dovewarden_notify_wait, 1);
	wait->id = id;
	wait->username = i_strdup(user->username);
	wait->event = user->event;
	event_ref(wait->event);
	wait->user = user;
	wait->timeout_msecs = timeout_msecs;
	wait->callback = callback;
	wait->context = context;
	io_loop_time_refresh();
	wait->start = ioloop_timeval;
	wait->deadline = ioloop_timeval;
	timeval_add_msecs(&wait->deadline, timeout_msecs);
	DLLIST2_APPEND(&client->waits_head, &client->waits_tail, wait);

	/* the requested sync covers the pending changes too */
	if (user->queued)
		client_dequeue(client, user);
	e_debug(user->event, "Waiting up to %u ms for a sync of user %s "
		"(request %u)", timeout_msecs,
		str_sanitize(user->username, 256), id);
	if (callback != NULL)
		client_waits_schedule(client);
	return TRUE;
}

void dovewarden_notify_client_waits_detach(struct dovewarden_notify_client *client)
{
	struct dovewarden_notify_wait *wait;

	for (wait = client->waits_head; wait != NULL; wait = wait->next) {
		wait->callback = NULL;
		wait->context = NULL;
	}
	timeout_remove(&client->to_waits);
}

/* Ends the waits whose deadline has passed. Returns the milliseconds
   until the next deadline of a wait without a callback (those that
   dovewarden_notify_client_wait_run() waits for), or 0 when none is
   left. */
static unsigned int client_waits_expire(struct dovewarden_notify_client *client)
{
	struct dovewarden_notify_wait *wait, *next;
	long long left, min_left = -1;

	io_loop_time_refresh();
	for (wait = client->waits_head; wait != NULL; wait = next) {
		next = wait->next;
		left = timeval_diff_msecs(&wait->deadline, &ioloop_timeval);
		if (left <= 0) {
			client_wait_finish(client, wait,
					   CLIENT_WAIT_RESULT_TIMEOUT, NULL);
		} else if (wait->callback == NULL &&
			   (min_left < 0 || left < min_left)) {
			min_left = left;
		}
	}
	return min_left < 0 ? 0 : (unsigned int)min_left;
}

void dovewarden_notify_client_wait_run(struct dovewarden_notify_client *client)
{
	struct ioloop *main_ioloop, *ioloop;
	struct timeout *to;
	unsigned int msecs;

	if (client_waits_expire(client) == 0)
		return;
	i_assert(client->wait_ioloop == NULL);
	/* the waits were sent, so the connection exists and lives here */
	i_assert(client->conn != NULL);
	main_ioloop = client_ioloop(client);

	/* Only the service connection is served meanwhile. The other I/O
	   of the process (the client of the mail command itself, other
	   sessions) waits, which keeps the command's reply back. */
	ioloop = io_loop_create();
	client->wait_ioloop = ioloop;
	connection_switch_ioloop_to(&client->conn->conn, ioloop);
	while ((msecs = client_waits_expire(client)) > 0) {
		to = timeout_add_to(ioloop, msecs, io_loop_stop, ioloop);
		io_loop_run(ioloop);
		timeout_remove(&to);
	}
	/* a lost connection was freed, and failed the waits */
	if (client->conn != NULL)
		connection_switch_ioloop_to(&client->conn->conn, main_ioloop);
	client->wait_ioloop = NULL;
	io_loop_destroy(&ioloop);
}
