/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "istream.h"
#include "ostream.h"
#include "str.h"
#include "str-sanitize.h"
#include "strnum.h"
#include "connection.h"
#include "ipwd.h"
#include "master-service.h"
#include "dovewarden-protocol.h"
#include "dovewarden-replicator.h"
#include "dovewarden-sync-wait.h"
#include "dovewarden-metrics.h"
#include "dovewarden-log-limit.h"
#include "dovewarden-settings.h"
#include "dovewarden-userdb.h"
#include "dovewarden-notify-server.h"

#define NOTIFY_OUTPUT_MAX_SIZE (128 * 1024)
/* Pending wait requests per client, and over all clients: a wait beyond
   either is refused (its user is not queued at sync priority; the mail
   process's own notification still queues the change) */
#define NOTIFY_MAX_WAITS_PER_CLIENT 1000
#define NOTIFY_MAX_WAITS_TOTAL 20000
/* A client that sends nothing this long and has no wait running is
   disconnected (the mail plugin closes its idle connections after a few
   seconds itself) */
#define NOTIFY_IDLE_TIMEOUT_SECS 60
/* A client whose requests were refused this many times (a peer that may
   not notify for those users) is disconnected */
#define NOTIFY_MAX_REFUSED_PER_CLIENT 10
/* userdb lookups for peers that are neither root nor mail_uid, per second
   over all clients: each may block the service for a moment, so a local
   user can't make it do them without bound */
#define NOTIFY_PEER_LOOKUPS_PER_SEC 100
/* A client that sends more requests than this within a second (a mail
   process sends one per user per change burst; an LMTP delivery to a big
   list of known users is far below) gets the rest of them checked in the
   userdb, and the names the userdb does not know are dropped: a flood of
   junk names queues nothing and does not hold up the real users' syncs */
#define NOTIFY_UNVERIFIED_PER_SEC 1000
/* userdb lookups of the peer check: as the replicator's */
#define NOTIFY_USERDB_TIMEOUT_MSECS (3 * 1000)
#define NOTIFY_USERDB_CACHE_SECS 60
/* Longest wait a client may ask for */
#define NOTIFY_MAX_WAIT_MSECS (60 * 60 * 1000)
/* How much of a bad line is quoted (escaped) in the log */
#define NOTIFY_LOG_PREFIX_MAX 16
/* At most this many protocol errors are logged per window */
#define NOTIFY_ERROR_LOG_WINDOW_SECS 60
#define NOTIFY_ERROR_LOG_MAX_PER_WINDOW 10

struct notify_client;

struct notify_wait {
	struct notify_client *client;
	unsigned int id;
	struct dovewarden_sync_wait *wait;
};

struct notify_client {
	struct connection conn;
	struct dovewarden_notify_server *server;
	ARRAY(struct notify_wait *) waits;
	struct timeout *to_idle;
	unsigned int refused;
	/* requests within the current second */
	time_t rate_second;
	unsigned int rate_count;
};

struct dovewarden_notify_server {
	struct connection_list *clients;
	struct dovewarden_replicator *replicator;
	struct dovewarden_sync_waits *waits;
	struct event *event;
	/* waits of all clients */
	unsigned int wait_count;

	/* the peer check and the flood check */
	struct dovewarden_userdb *userdb;
	bool check_peer;
	uid_t mail_uid;
	bool mail_uid_set;
	time_t peer_lookup_second;
	unsigned int peer_lookups;
	struct dovewarden_log_limit refused_log_limit;
	struct dovewarden_log_limit unknown_log_limit;

	struct dovewarden_log_limit error_limit;
	struct dovewarden_log_limit limit_log_limit;
};

static void ATTR_FORMAT(3, 4)
notify_client_error(struct notify_client *client, const char *what,
		    const char *fmt, ...)
{
	struct dovewarden_notify_server *server = client->server;
	unsigned int suppressed;
	va_list args;

	dovewarden_metrics_rejected(DOVEWARDEN_METRICS_SOURCE_PLUGIN);
	if (!dovewarden_log_limit_allow(&server->error_limit, ioloop_time,
					&suppressed))
		return;
	if (suppressed > 0) {
		e_error(server->event, "%u more notify protocol "
			"errors were not logged", suppressed);
	}
	va_start(args, fmt);
	e_error(client->conn.event, "%s: %s - disconnecting client", what,
		t_strdup_vprintf(fmt, args));
	va_end(args);
}

/* A short, escaped prefix of untrusted input for the log: printable
   ASCII as is, everything else as \t, \n or \xNN. */
static const char *notify_log_prefix(const unsigned char *data, size_t size)
{
	string_t *str = t_str_new(NOTIFY_LOG_PREFIX_MAX * 4 + 8);
	size_t i, len = I_MIN(size, NOTIFY_LOG_PREFIX_MAX);

	str_append_c(str, '\'');
	for (i = 0; i < len; i++) {
		if (data[i] == '\t')
			str_append(str, "\\t");
		else if (data[i] == '\n')
			str_append(str, "\\n");
		else if (data[i] < 0x20 || data[i] >= 0x7f ||
			 data[i] == '\\' || data[i] == '\'')
			str_printfa(str, "\\x%02x", data[i]);
		else
			str_append_c(str, data[i]);
	}
	str_append_c(str, '\'');
	if (size > len)
		str_append(str, "...");
	return str_c(str);
}

static void notify_wait_free(struct notify_wait *nwait)
{
	struct notify_client *client = nwait->client;
	struct notify_wait *const *nwaitp;

	array_foreach(&client->waits, nwaitp) {
		if (*nwaitp == nwait) {
			array_delete(&client->waits,
				     array_foreach_idx(&client->waits, nwaitp),
				     1);
			break;
		}
	}
	i_assert(client->server->wait_count > 0);
	client->server->wait_count--;
	i_free(nwait);
}

static void notify_wait_callback(bool success, const char *reason,
				 void *context)
{
	struct notify_wait *nwait = context;
	struct notify_client *client = nwait->client;
	string_t *str = t_str_new(64);

	nwait->wait = NULL;
	dovewarden_notify_append_reply(str, nwait->id, success, reason);
	o_stream_nsend(client->conn.output, str_data(str), str_len(str));
	notify_wait_free(nwait);
}

static void
notify_client_limit_log(struct notify_client *client, const char *which)
{
	struct dovewarden_notify_server *server = client->server;
	unsigned int suppressed;

	if (!dovewarden_log_limit_allow(&server->limit_log_limit,
					ioloop_time, &suppressed))
		return;
	e_warning(client->conn.event, "Refused a sync wait: %u waits pending "
		  "%s (limits: %u per client, %u in total)%s", which[0] == 'p' ?
		  array_count(&client->waits) : server->wait_count, which,
		  NOTIFY_MAX_WAITS_PER_CLIENT, NOTIFY_MAX_WAITS_TOTAL,
		  suppressed == 0 ? "" : t_strdup_printf(
			" (%u more refusals not logged)", suppressed));
}

/* A client that reports dsync's changes (I) gets its own client changes
   settled only where they overlap those; an older one's always */
static enum dovewarden_queue_notify_flags
notify_client_change_flags(struct notify_client *client)
{
	return client->conn.minor_version >=
		DOVEWARDEN_NOTIFY_MINOR_VERSION_IMPORT ?
		DOVEWARDEN_QUEUE_NOTIFY_FLAG_CLIENT : 0;
}

static void
notify_client_wait(struct notify_client *client,
		   const struct dovewarden_notify_request *req)
{
	struct notify_wait *nwait;
	string_t *str;

	if (array_count(&client->waits) >= NOTIFY_MAX_WAITS_PER_CLIENT ||
	    client->server->wait_count >= NOTIFY_MAX_WAITS_TOTAL) {
		dovewarden_metrics_wait_refused();
		notify_client_limit_log(client,
			array_count(&client->waits) >=
			NOTIFY_MAX_WAITS_PER_CLIENT ?
			"per client" : "in total");
		str = t_str_new(64);
		dovewarden_notify_append_reply(str, req->id, FALSE,
					       "Too many pending waits");
		o_stream_nsend(client->conn.output, str_data(str),
			       str_len(str));
		return;
	}
	nwait = i_new(struct notify_wait, 1);
	client->server->wait_count++;
	nwait->client = client;
	nwait->id = req->id;
	array_push_back(&client->waits, &nwait);
	nwait->wait = dovewarden_sync_wait_start(
		client->server->waits, req->username,
		I_MIN(req->timeout_msecs, NOTIFY_MAX_WAIT_MSECS),
		notify_client_change_flags(client),
		notify_wait_callback, nwait);
	dovewarden_replicator_queue_changed(client->server->replicator);
}

/* A mail process notifies only for its own user: the peer is root, runs
   as mail_uid, or as the uid the userdb gives the user. A user the
   userdb does not know is refused the same way, so that the answer does
   not tell whether it exists. */
static bool
notify_client_allowed(struct notify_client *client, const char *username)
{
	struct dovewarden_notify_server *server = client->server;
	struct dovewarden_userdb_info info;
	uid_t uid = client->conn.remote_uid;
	const char *error;

	if (!server->check_peer || uid == 0)
		return TRUE;
	if (uid == (uid_t)-1)
		return FALSE;
	if (server->mail_uid_set && uid == server->mail_uid)
		return TRUE;
	/* a client refused once is not looked up for again, and the
	   lookups for such peers are limited over all clients */
	if (client->refused > 0)
		return FALSE;
	if (server->peer_lookup_second != ioloop_time) {
		server->peer_lookup_second = ioloop_time;
		server->peer_lookups = 0;
	}
	if (++server->peer_lookups > NOTIFY_PEER_LOOKUPS_PER_SEC) {
		dovewarden_metrics_peer_lookup_limited();
		return FALSE;
	}
	if (dovewarden_userdb_lookup(server->userdb, username, &info,
				     &error) <= 0)
		return FALSE;
	return info.uid_set && info.uid == uid;
}

static void
notify_client_refused(struct notify_client *client,
		      const struct dovewarden_notify_request *req)
{
	struct dovewarden_notify_server *server = client->server;
	unsigned int suppressed;
	string_t *str;

	dovewarden_metrics_refused_peer();
	if (req->cmd == DOVEWARDEN_NOTIFY_CMD_WAIT) {
		str = t_str_new(64);
		dovewarden_notify_append_reply(str, req->id, FALSE,
					       "Permission denied");
		o_stream_nsend(client->conn.output, str_data(str),
			       str_len(str));
	}
	if (dovewarden_log_limit_allow(&server->refused_log_limit,
				       ioloop_time, &suppressed)) {
		e_warning(client->conn.event, "Refused a request for user %s "
			  "from uid %ld: only root, mail_uid and the user's "
			  "own uid may notify (dovewarden_notify_check_peer)%s",
			  str_sanitize(req->username, 100),
			  (long)client->conn.remote_uid, suppressed == 0 ? "" :
			  t_strdup_printf(" (%u more refusals not logged)",
					  suppressed));
	}
	client->refused++;
}

/* Returns FALSE when the client sends so much that the request was
   checked in the userdb, and the userdb does not know the user */
static bool
notify_client_rate_check(struct notify_client *client, const char *username)
{
	struct dovewarden_notify_server *server = client->server;
	struct dovewarden_userdb_info info;
	unsigned int suppressed;
	const char *error;

	if (client->rate_second != ioloop_time) {
		client->rate_second = ioloop_time;
		client->rate_count = 0;
	}
	if (++client->rate_count <= NOTIFY_UNVERIFIED_PER_SEC)
		return TRUE;
	/* a lookup failure is not the user's fault: queue it */
	if (dovewarden_userdb_lookup(server->userdb, username, &info,
				     &error) != 0)
		return TRUE;
	dovewarden_metrics_unknown_user_dropped();
	if (dovewarden_log_limit_allow(&server->unknown_log_limit,
				       ioloop_time, &suppressed)) {
		e_warning(client->conn.event, "More than %u requests a "
			  "second: dropped user %s, which the userdb does not "
			  "know%s", NOTIFY_UNVERIFIED_PER_SEC,
			  str_sanitize(username, 100), suppressed == 0 ? "" :
			  t_strdup_printf(" (%u more not logged)",
					  suppressed));
	}
	return FALSE;
}

static void notify_client_idle_timeout(struct notify_client *client)
{
	if (array_count(&client->waits) > 0) {
		/* waiting for its answers is not idle */
		timeout_reset(client->to_idle);
		return;
	}
	e_debug(client->conn.event, "Disconnecting: idle for %u secs",
		NOTIFY_IDLE_TIMEOUT_SECS);
	client->conn.disconnect_reason = CONNECTION_DISCONNECT_IDLE_TIMEOUT;
	client->conn.v.destroy(&client->conn);
}

static int notify_client_input_args(struct connection *conn,
				    const char *const *args)
{
	struct notify_client *client =
		container_of(conn, struct notify_client, conn);
	struct dovewarden_notify_request req;
	const char *error;

	timeout_reset(client->to_idle);

	if (dovewarden_notify_parse_request(args, &req, &error) < 0) {
		notify_client_error(client, "Invalid request",
			"%s (command %s, %u fields)", error,
			args[0] == NULL ? "''" :
			notify_log_prefix((const void *)args[0],
					  strlen(args[0])),
			str_array_length(args));
		return -1;
	}
	if (!notify_client_allowed(client, req.username)) {
		notify_client_refused(client, &req);
		/* a peer that keeps trying is not a mail process */
		return client->refused >= NOTIFY_MAX_REFUSED_PER_CLIENT ?
			-1 : 1;
	}
	if (!notify_client_rate_check(client, req.username)) {
		if (req.cmd == DOVEWARDEN_NOTIFY_CMD_WAIT) {
			string_t *str = t_str_new(64);

			dovewarden_notify_append_reply(str, req.id, FALSE,
						       "Unknown user");
			o_stream_nsend(client->conn.output, str_data(str),
				       str_len(str));
		}
		return 1;
	}
	switch (req.cmd) {
	case DOVEWARDEN_NOTIFY_CMD_NOTIFY:
	case DOVEWARDEN_NOTIFY_CMD_IMPORT: {
		bool import = req.cmd == DOVEWARDEN_NOTIFY_CMD_IMPORT;

		if (import)
			dovewarden_metrics_import();
		else {
			dovewarden_metrics_notification(
				DOVEWARDEN_METRICS_SOURCE_PLUGIN);
		}
		e_debug(conn->event, "%s: user %s priority %s",
			import ? "Import" : "Notify",
			str_sanitize(req.username, 100),
			dovewarden_priority_to_str(req.priority));
		dovewarden_replicator_notify(client->server->replicator,
			req.username, req.priority, import ?
			DOVEWARDEN_QUEUE_NOTIFY_FLAG_IMPORT :
			notify_client_change_flags(client));
		return 1;
	}
	case DOVEWARDEN_NOTIFY_CMD_WAIT:
		dovewarden_metrics_notification(DOVEWARDEN_METRICS_SOURCE_PLUGIN);
		e_debug(conn->event, "Wait %u: user %s timeout %u ms",
			req.id, str_sanitize(req.username, 100),
			req.timeout_msecs);
		notify_client_wait(client, &req);
		return 1;
	}
	i_unreached();
}

static int notify_client_handshake_args(struct connection *conn,
					const char *const *args)
{
	struct notify_client *client =
		container_of(conn, struct notify_client, conn);
	unsigned int major, minor;

	if (str_array_length(args) != 4 || strcmp(args[0], "VERSION") != 0 ||
	    str_to_uint(args[2], &major) < 0 ||
	    str_to_uint(args[3], &minor) < 0) {
		notify_client_error(client, "Invalid handshake",
			"Expected VERSION\\t%s\\t%u\\t<minor>",
			DOVEWARDEN_NOTIFY_SERVICE_NAME,
			DOVEWARDEN_NOTIFY_MAJOR_VERSION);
		return -1;
	}
	if (strcmp(args[1], DOVEWARDEN_NOTIFY_SERVICE_NAME) != 0) {
		notify_client_error(client, "Invalid handshake",
			"Wrong service name %s (wrong socket?)",
			notify_log_prefix((const void *)args[1],
					  strlen(args[1])));
		return -1;
	}
	if (major != DOVEWARDEN_NOTIFY_MAJOR_VERSION) {
		notify_client_error(client, "Invalid handshake",
			"Client speaks major version %u, we speak %u "
			"(mixed old and new binaries?)", major,
			DOVEWARDEN_NOTIFY_MAJOR_VERSION);
		return -1;
	}
	if (connection_verify_version(conn, args[1], major, minor) < 0)
		return -1;
	return 1;
}

static void notify_client_destroy(struct connection *conn)
{
	struct notify_client *client =
		container_of(conn, struct notify_client, conn);
	struct notify_wait *nwait;
	const unsigned char *data;
	size_t size;

	timeout_remove(&client->to_idle);

	if (conn->disconnect_reason == CONNECTION_DISCONNECT_BUFFER_FULL) {
		data = i_stream_get_data(conn->input, &size);
		notify_client_error(client, "Invalid request",
			"Line longer than %u bytes: %s",
			DOVEWARDEN_NOTIFY_MAX_LINE_LENGTH,
			notify_log_prefix(data, size));
	}

	while (array_count(&client->waits) > 0) {
		nwait = array_idx_elem(&client->waits, 0);
		dovewarden_sync_wait_cancel(&nwait->wait);
		notify_wait_free(nwait);
	}
	array_free(&client->waits);
	connection_deinit(conn);
	i_free(client);
	master_service_client_connection_destroyed(master_service);
}

static const struct connection_settings notify_conn_set = {
	.service_name_in = DOVEWARDEN_NOTIFY_SERVICE_NAME,
	.service_name_out = DOVEWARDEN_NOTIFY_SERVICE_NAME,
	.major_version = DOVEWARDEN_NOTIFY_MAJOR_VERSION,
	.minor_version = DOVEWARDEN_NOTIFY_MINOR_VERSION,
	.input_max_size = DOVEWARDEN_NOTIFY_MAX_LINE_LENGTH,
	.output_max_size = NOTIFY_OUTPUT_MAX_SIZE,
	.allow_empty_args_input = TRUE,
	.client = FALSE,
};

static const struct connection_vfuncs notify_conn_vfuncs = {
	.destroy = notify_client_destroy,
	.input_args = notify_client_input_args,
	.handshake_args = notify_client_handshake_args,
};

static void
notify_server_mail_uid(struct dovewarden_notify_server *server,
		       const char *mail_uid)
{
	struct passwd pw;

	if (mail_uid[0] == '\0')
		return;
	if (str_to_uid(mail_uid, &server->mail_uid) == 0) {
		server->mail_uid_set = TRUE;
		return;
	}
	switch (i_getpwnam(mail_uid, &pw)) {
	case 1:
		server->mail_uid = pw.pw_uid;
		server->mail_uid_set = TRUE;
		break;
	case 0:
		e_error(server->event, "mail_uid: No such user: %s", mail_uid);
		break;
	default:
		e_error(server->event, "getpwnam(%s) failed: %m", mail_uid);
		break;
	}
}

struct dovewarden_notify_server *
dovewarden_notify_server_init(const struct dovewarden_settings *set,
			      const char *auth_socket_path,
			      struct dovewarden_replicator *replicator,
			      struct dovewarden_sync_waits *waits,
			      struct event *event_parent)
{
	struct dovewarden_notify_server *server;

	server = i_new(struct dovewarden_notify_server, 1);
	server->replicator = replicator;
	server->waits = waits;
	server->event = event_create(event_parent);
	server->error_limit.window_secs = NOTIFY_ERROR_LOG_WINDOW_SECS;
	server->error_limit.max_per_window = NOTIFY_ERROR_LOG_MAX_PER_WINDOW;
	server->limit_log_limit.window_secs = NOTIFY_ERROR_LOG_WINDOW_SECS;
	server->limit_log_limit.max_per_window = 1;
	server->refused_log_limit.window_secs = NOTIFY_ERROR_LOG_WINDOW_SECS;
	server->refused_log_limit.max_per_window =
		NOTIFY_ERROR_LOG_MAX_PER_WINDOW;
	server->unknown_log_limit.window_secs = NOTIFY_ERROR_LOG_WINDOW_SECS;
	server->unknown_log_limit.max_per_window =
		NOTIFY_ERROR_LOG_MAX_PER_WINDOW;
	server->userdb = dovewarden_userdb_init(auth_socket_path,
		NOTIFY_USERDB_TIMEOUT_MSECS, NOTIFY_USERDB_CACHE_SECS,
		server->event);
	server->check_peer = set->dovewarden_notify_check_peer;
	if (server->check_peer)
		notify_server_mail_uid(server, set->mail_uid);
	server->clients = connection_list_init(&notify_conn_set,
					       &notify_conn_vfuncs);
	return server;
}

void dovewarden_notify_server_deinit(struct dovewarden_notify_server **_server)
{
	struct dovewarden_notify_server *server = *_server;

	if (server == NULL)
		return;
	*_server = NULL;

	/* destroys every client through notify_client_destroy() */
	connection_list_deinit(&server->clients);
	dovewarden_userdb_deinit(&server->userdb);
	event_unref(&server->event);
	i_free(server);
}

void dovewarden_notify_server_accept(
	struct dovewarden_notify_server *server,
	const struct master_service_connection *conn)
{
	struct notify_client *client;

	client = i_new(struct notify_client, 1);
	client->server = server;
	i_array_init(&client->waits, 4);
	client->conn.event_parent = server->event;
	connection_init_server(server->clients, &client->conn, conn->name,
			       conn->fd, conn->fd);
	client->to_idle = timeout_add(NOTIFY_IDLE_TIMEOUT_SECS * 1000,
				      notify_client_idle_timeout, client);
}
