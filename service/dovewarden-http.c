/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "str.h"
#include "strnum.h"
#include "str-sanitize.h"
#include "llist.h"
#include "ioloop.h"
#include "istream.h"
#include "net.h"
#include "time-util.h"
#include "http-auth.h"
#include "http-url.h"
#include "http-server.h"
#include "master-interface.h"
#include "master-service.h"
#include "dovewarden-compat.h"
#include "dovewarden-settings.h"
#include "dovewarden-event.h"
#include "dovewarden-log-limit.h"
#include "dovewarden-replicator.h"
#include "dovewarden-queue-backend.h"
#include "dovewarden-metrics.h"
#include "dovewarden-http.h"
#include "dovewarden-http-auth.h"

#define HTTP_LOG_WINDOW_SECS 60
#define HTTP_AUTH_REALM "dovewarden"
/* The longest doveadm-server handshake line we read */
#define HTTP_READY_MAX_LINE 256

struct dovewarden_http_client {
	struct dovewarden_http_client *prev, *next;
	struct dovewarden_http_server *server;
	struct http_server_connection *http_conn;
	struct ip_addr remote_ip;
	/* the listener is open to the network and has no secret */
	bool events_refused:1;
};

struct http_ready_probe {
	struct dovewarden_http_server *server;
	int fd;
	struct io *io;
	struct istream *input;
	struct timeout *to;
};

struct dovewarden_http_server {
	const struct dovewarden_settings *set;
	struct dovewarden_replicator *replicator;
	struct dovewarden_queue_backend *queue;
	struct event *event;
	char *doveadm_socket_path;
	struct http_server *http_server;
	struct dovewarden_http_client *clients;

	/* /readyz: the last probe's result and the requests that wait for
	   the running probe */
	struct http_ready_probe *probe;
	ARRAY(struct http_server_request *) ready_waiters;
	struct timeval ready_checked;
	char *ready_error;
	bool ready:1;

	struct dovewarden_log_limit log_limit;
};

/* Rate-limited warning about a rejected request; never quotes the body */
static void
http_log_rejected(struct dovewarden_http_client *client, const char *fmt, ...)
	ATTR_FORMAT(2, 3);
static void
http_log_rejected(struct dovewarden_http_client *client, const char *fmt, ...)
{
	struct dovewarden_http_server *server = client->server;
	unsigned int suppressed;
	va_list args;

	if (!dovewarden_log_limit_allow(&server->log_limit, ioloop_time,
					&suppressed))
		return;
	if (suppressed > 0) {
		e_warning(server->event, "%u more rejected requests "
			  "were not logged in the last %u secs",
			  suppressed, HTTP_LOG_WINDOW_SECS);
	}

	va_start(args, fmt);
	T_BEGIN {
		e_warning(server->event, "Rejected request from %s: %s",
			  net_ip2addr(&client->remote_ip),
			  t_strdup_vprintf(fmt, args));
	} T_END;
	va_end(args);
}

static void
http_reject(struct dovewarden_http_client *client, struct http_server_request *req,
	    unsigned int status, const char *reason, const char *error)
{
	dovewarden_metrics_rejected(DOVEWARDEN_METRICS_SOURCE_HTTP);
	http_log_rejected(client, "%u %s: %s", status, reason, error);
	http_server_request_fail_text(req, status, reason, "%s\n", error);
}

/*
 * POST /events
 */

/* Returns 1 if the request may post events, 0 if it has no credentials
   and -1 if they are wrong. */
static int http_check_auth(struct dovewarden_http_client *client,
			   struct http_server_request *req)
{
	const char *secret = client->server->set->dovewarden_http_secret;
	struct http_auth_credentials creds;
	int ret;

	if (secret[0] == '\0')
		return 1;
	ret = http_server_request_get_auth(req, &creds);
	if (ret <= 0)
		return ret < 0 ? -1 : 0;
	return dovewarden_http_auth_check(&creds, secret);
}

struct http_events_request {
	struct dovewarden_http_client *client;
	struct http_server_request *req;
	struct istream *input;
	buffer_t *body;
	uoff_t body_size;
	bool finished:1;
};

static void http_events_payload_finished(struct http_events_request *ereq)
{
	struct dovewarden_http_client *client = ereq->client;
	struct dovewarden_http_server *server = client->server;
	struct http_server_request *req = ereq->req;
	ARRAY_TYPE(dovewarden_event_change) changes;
	const struct dovewarden_event_change *change;
	struct http_server_response *resp;
	unsigned int queued = 0;
	const char *error;

	t_array_init(&changes, 4);
	if (dovewarden_event_parse(ereq->body->data, ereq->body->used,
				   pool_datastack_create(), &changes,
				   &error) < 0) {
		http_reject(client, req, 400, "Bad Request",
			    t_strdup_printf("%s (%zu bytes)", error,
					    ereq->body->used));
		return;
	}
	array_foreach(&changes, change) {
		const char *what = change->command == NULL ?
			change->event_name : t_strdup_printf(
				"%s %s", change->event_name,
				str_sanitize(change->command, 40));

		if (change->username == NULL) {
			e_debug(server->event, "Ignored %s event: %s",
				str_sanitize(what, 100),
				change->ignore_reason);
			continue;
		}
		e_debug(server->event, "%s event: queueing user %s at "
			"priority %s", what,
			str_sanitize(change->username, 100),
			dovewarden_priority_to_str(change->priority));
		dovewarden_metrics_notification(DOVEWARDEN_METRICS_SOURCE_HTTP);
		dovewarden_replicator_notify(server->replicator,
					     change->username,
					     change->priority, 0);
		queued++;
	}
	resp = http_server_response_create(req, queued > 0 ? 202 : 204,
					   queued > 0 ? "Accepted" :
					   "No Content");
	http_server_response_submit(resp);
}

/* Read the body ourselves: 2.4.1's http_server_request_buffer_payload()
   stalls on bodies larger than IO_BLOCK_SIZE. A body over the limit is
   read to its end (the server's request_max_payload_size bounds it) and
   dropped, so that the client gets its 413. */
static void http_events_payload_input(struct http_events_request *ereq)
{
	const unsigned char *data;
	size_t size;
	int ret;

	if (ereq->finished)
		return;
	while ((ret = i_stream_read_more(ereq->input, &data, &size)) > 0) {
		ereq->body_size += size;
		if (ereq->body_size <= DOVEWARDEN_EVENT_MAX_BODY_SIZE)
			buffer_append(ereq->body, data, size);
		i_stream_skip(ereq->input, size);
	}
	if (ret == 0)
		return;
	ereq->finished = TRUE;
	if (ereq->input->stream_errno != 0) {
		/* the server answers 400 (or 413 past its own limit) */
		dovewarden_metrics_rejected(DOVEWARDEN_METRICS_SOURCE_HTTP);
		http_log_rejected(ereq->client, "reading the body failed "
				  "after %"PRIuUOFF_T" bytes: %s",
				  ereq->body_size,
				  i_stream_get_error(ereq->input));
		i_stream_unref(&ereq->input);
		return;
	}
	i_stream_unref(&ereq->input);
	T_BEGIN {
		if (ereq->body_size > DOVEWARDEN_EVENT_MAX_BODY_SIZE) {
			http_server_request_connection_close(ereq->req, TRUE);
			http_reject(ereq->client, ereq->req, 413,
				    "Payload Too Large", t_strdup_printf(
					"body of %"PRIuUOFF_T" bytes is larger "
					"than %u", ereq->body_size,
					DOVEWARDEN_EVENT_MAX_BODY_SIZE));
		} else {
			http_events_payload_finished(ereq);
		}
	} T_END;
}

/* The request ends before its body was read when the client goes away or
   the service shuts down */
static void http_events_request_destroyed(struct http_events_request *ereq)
{
	i_stream_unref(&ereq->input);
}

static void
http_handle_events(struct dovewarden_http_client *client, struct http_server_request *req)
{
	const struct http_request *hreq = http_server_request_get(req);
	struct http_events_request *ereq;
	const char *value;
	uoff_t size;
	pool_t pool;

	if (strcmp(hreq->method, "POST") != 0) {
		http_server_request_fail_bad_method(req, "POST");
		return;
	}
	if (client->events_refused) {
		http_reject(client, req, 403, "Forbidden", "events are not "
			    "accepted on a listener that is not on a loopback "
			    "address without dovewarden_http_secret");
		return;
	}
	switch (http_check_auth(client, req)) {
	case 1:
		break;
	case 0: {
		struct http_auth_challenge chlng;

		dovewarden_metrics_rejected(DOVEWARDEN_METRICS_SOURCE_HTTP);
		http_log_rejected(client, "401 Unauthorized: no credentials "
				  "(dovewarden_http_secret is set)");
		http_auth_basic_challenge_init(&chlng, HTTP_AUTH_REALM);
		http_server_request_fail_auth(req, "Unauthorized", &chlng);
		return;
	}
	default:
		http_reject(client, req, 403, "Forbidden",
			    "wrong credentials");
		return;
	}
	value = http_request_header_get(hreq, "Content-Length");
	if (value != NULL && str_to_uoff(value, &size) == 0 &&
	    size > DOVEWARDEN_EVENT_MAX_BODY_SIZE) {
		/* the body is not read: the connection can't be reused */
		http_server_request_connection_close(req, TRUE);
		http_reject(client, req, 413, "Payload Too Large",
			    t_strdup_printf("body of %"PRIuUOFF_T" bytes is "
					    "larger than %u", size,
					    DOVEWARDEN_EVENT_MAX_BODY_SIZE));
		return;
	}

	pool = http_server_request_get_pool(req);
	ereq = p_new(pool, struct http_events_request, 1);
	ereq->client = client;
	ereq->req = req;
	ereq->body = buffer_create_dynamic(pool, 1024);
	ereq->input = http_server_request_get_payload_input(req, FALSE);
	http_server_request_set_destroy_callback(
		req, http_events_request_destroyed, ereq);
	if (ereq->input == NULL) {
		/* no body at all */
		http_events_payload_finished(ereq);
		return;
	}
	http_server_request_handle_payload(req, http_events_payload_input,
					   ereq);
}

/*
 * GET /readyz
 */

static void http_ready_probe_free(struct http_ready_probe **_probe)
{
	struct http_ready_probe *probe = *_probe;

	*_probe = NULL;
	io_remove(&probe->io);
	timeout_remove(&probe->to);
	i_stream_destroy(&probe->input);
	i_close_fd(&probe->fd);
	i_free(probe);
}

static void
http_ready_respond(struct http_server_request *req, bool ready,
		   const char *error)
{
	struct http_server_response *resp;
	const char *text;

	if (http_server_request_is_finished(req))
		return;
	if (ready) {
		resp = http_server_response_create(req, 200, "OK");
		text = "ready\n";
	} else {
		resp = http_server_response_create(req, 503,
						   "Service Unavailable");
		text = t_strdup_printf("not ready: %s\n", error);
	}
	http_server_response_add_header(resp, "Content-Type",
					"text/plain; charset=utf-8");
	http_server_response_set_payload_data(resp, (const void *)text,
					      strlen(text));
	http_server_response_submit(resp);
}

static void
http_ready_probe_finish(struct dovewarden_http_server *server, bool ready,
			const char *error)
{
	struct http_server_request *req;

	if (server->probe != NULL)
		http_ready_probe_free(&server->probe);
	server->ready = ready;
	i_free(server->ready_error);
	server->ready_error = ready ? NULL : i_strdup(error);
	server->ready_checked = ioloop_timeval;
	if (!ready) {
		e_debug(server->event, "Not ready: %s", error);
	}

	while (array_count(&server->ready_waiters) > 0) {
		req = array_idx_elem(&server->ready_waiters, 0);
		array_delete(&server->ready_waiters, 0, 1);
		http_ready_respond(req, ready, error);
		http_server_request_unref(&req);
	}
}

static void http_ready_probe_input(struct http_ready_probe *probe)
{
	struct dovewarden_http_server *server = probe->server;
	const char *line;

	line = i_stream_read_next_line(probe->input);
	if (line != NULL) {
		if (strcmp(line, "+") == 0)
			http_ready_probe_finish(server, TRUE, NULL);
		else {
			http_ready_probe_finish(server, FALSE,
				"doveadm-server did not accept the handshake");
		}
		return;
	}
	if (probe->input->eof || probe->input->stream_errno != 0) {
		http_ready_probe_finish(server, FALSE, t_strdup_printf(
			"doveadm-server closed the connection: %s",
			probe->input->stream_errno != 0 ?
			i_stream_get_error(probe->input) : "EOF"));
	}
}

static void http_ready_probe_timeout(struct http_ready_probe *probe)
{
	http_ready_probe_finish(probe->server, FALSE, t_strdup_printf(
		"doveadm-server did not answer within %u msecs",
		DOVEWARDEN_HTTP_READY_TIMEOUT_MSECS));
}

static void http_ready_probe_start(struct dovewarden_http_server *server)
{
	static const char handshake[] = "VERSION\tdoveadm-server\t1\t0\n";
	struct http_ready_probe *probe;
	int fd;

	i_assert(server->probe == NULL);

	fd = net_connect_unix(server->doveadm_socket_path);
	if (fd == -1) {
		http_ready_probe_finish(server, FALSE, t_strdup_printf(
			"net_connect_unix(%s) failed: %m",
			server->doveadm_socket_path));
		return;
	}
	/* a few bytes into a fresh unix socket do not block */
	if (write(fd, handshake, sizeof(handshake) - 1) !=
	    (ssize_t)sizeof(handshake) - 1) {
		i_close_fd(&fd);
		http_ready_probe_finish(server, FALSE, t_strdup_printf(
			"write(%s) failed: %m", server->doveadm_socket_path));
		return;
	}
	probe = i_new(struct http_ready_probe, 1);
	probe->server = server;
	probe->fd = fd;
	probe->input = i_stream_create_fd(fd, HTTP_READY_MAX_LINE);
	probe->io = io_add(fd, IO_READ, http_ready_probe_input, probe);
	probe->to = timeout_add(DOVEWARDEN_HTTP_READY_TIMEOUT_MSECS,
				http_ready_probe_timeout, probe);
	server->probe = probe;
}

static void
http_handle_readyz(struct dovewarden_http_server *server,
		   struct http_server_request *req)
{
	const char *reason;

	if (!dovewarden_queue_backend_is_ready(server->queue, &reason)) {
		http_ready_respond(req, FALSE, reason);
		return;
	}
	if (server->ready_checked.tv_sec != 0 &&
	    timeval_diff_msecs(&ioloop_timeval, &server->ready_checked) <
	    DOVEWARDEN_HTTP_READY_CACHE_MSECS) {
		http_ready_respond(req, server->ready, server->ready_error);
		return;
	}
	http_server_request_ref(req);
	array_push_back(&server->ready_waiters, &req);
	if (server->probe == NULL)
		http_ready_probe_start(server);
}

/*
 * Requests
 */

static void
http_respond_text(struct http_server_request *req, const char *content_type,
		  const string_t *text)
{
	struct http_server_response *resp;

	resp = http_server_response_create(req, 200, "OK");
	http_server_response_add_header(resp, "Content-Type", content_type);
	http_server_response_set_payload_data(resp, str_data(text),
					      str_len(text));
	http_server_response_submit(resp);
}

static void
http_handle_get(struct dovewarden_http_client *client, struct http_server_request *req,
		const char *path)
{
	struct dovewarden_http_server *server = client->server;
	const struct http_request *hreq = http_server_request_get(req);
	struct dovewarden_metrics_gauges gauges;
	string_t *str;

	if (strcmp(hreq->method, "GET") != 0 &&
	    strcmp(hreq->method, "HEAD") != 0) {
		http_server_request_fail_bad_method(req, "GET, HEAD");
		return;
	}
	if (strcmp(path, "/metrics") == 0) {
		struct dovewarden_queue_counts counts;
		ARRAY_TYPE(dovewarden_queue_metric) backend_metrics;

		dovewarden_queue_backend_get_counts(server->queue, &counts);
		dovewarden_metrics_gauges_init(&gauges, &counts);
		t_array_init(&backend_metrics, 8);
		dovewarden_queue_backend_get_metrics(server->queue,
						     &backend_metrics);
		gauges.backend_metrics = array_get(&backend_metrics,
			&gauges.backend_metrics_count);
		gauges.syncs_running = dovewarden_replicator_get_running_count(
			server->replicator);
		str = t_str_new(4096);
		dovewarden_metrics_render(str, &gauges, ioloop_time);
		http_respond_text(req, DOVEWARDEN_METRICS_CONTENT_TYPE, str);
	} else if (strcmp(path, "/healthz") == 0) {
		str = t_str_new(8);
		str_append(str, "ok\n");
		http_respond_text(req, "text/plain; charset=utf-8", str);
	} else {
		http_handle_readyz(server, req);
	}
}

static void
http_handle_request_real(struct dovewarden_http_client *client,
			 struct http_server_request *req)
{
	const struct http_request *hreq = http_server_request_get(req);
	const char *path = hreq->target.url == NULL ? NULL :
		hreq->target.url->path;

	if (path == NULL) {
		http_server_request_fail(req, 404, "Not Found");
		return;
	}
	if (strcmp(path, "/events") == 0)
		http_handle_events(client, req);
	else if (strcmp(path, "/metrics") == 0 ||
		 strcmp(path, "/healthz") == 0 ||
		 strcmp(path, "/readyz") == 0)
		http_handle_get(client, req, path);
	else
		http_server_request_fail(req, 404, "Not Found");
}

static void http_handle_request(void *context, struct http_server_request *req)
{
	struct dovewarden_http_client *client = context;

	T_BEGIN {
		http_handle_request_real(client, req);
	} T_END;
}

/*
 * Connections
 */

static void http_connection_destroy(void *context, const char *reason)
{
	struct dovewarden_http_client *client = context;

	e_debug(client->server->event, "Client %s disconnected: %s",
		net_ip2addr(&client->remote_ip), reason);
	DLLIST_REMOVE(&client->server->clients, client);
	i_free(client);
	master_service_client_connection_destroyed(master_service);
}

static const struct http_server_callbacks http_callbacks = {
	.handle_request = http_handle_request,
	.connection_destroy = http_connection_destroy,
};

/* Returns TRUE when POST /events must be refused on the listener: it is
   bound to an address other hosts can reach (a wildcard too) and nothing
   authenticates the events. */
static bool
http_listener_is_insecure(struct dovewarden_http_server *server,
			  int listen_fd, struct ip_addr *ip_r,
			  in_port_t *port_r)
{
	if (server->set->dovewarden_http_secret[0] != '\0' ||
	    server->set->dovewarden_http_allow_insecure)
		return FALSE;
	if (net_getsockname(listen_fd, ip_r, port_r) < 0) {
		/* can't tell: refuse rather than trust */
		i_zero(ip_r);
		*port_r = 0;
		return TRUE;
	}
	/* a unix socket has no family */
	return ip_r->family != 0 && !dovewarden_http_ip_is_loopback(ip_r);
}

static void http_check_listeners(struct dovewarden_http_server *server)
{
	unsigned int i, count = master_service_get_socket_count(master_service);
	struct ip_addr ip;
	in_port_t port;
	const char *type;
	int fd;

	for (i = 0; i < count; i++) {
		fd = MASTER_LISTEN_FD_FIRST + i;
		type = dovewarden_master_socket_type(fd);
		if (type == NULL || strcmp(type, "http") != 0 ||
		    !http_listener_is_insecure(server, fd, &ip, &port))
			continue;
		e_error(server->event, "Listener '%s' on %s is not on a "
			"loopback address and dovewarden_http_secret is not "
			"set: refusing POST /events on it (set "
			"dovewarden_http_secret, listen on 127.0.0.1 or ::1, "
			"or set dovewarden_http_allow_insecure = yes)",
			master_service_get_socket_name(master_service, fd),
			port == 0 ? "an unknown address" :
			dovewarden_net_ipport2str(&ip, port));
	}
}

void
dovewarden_http_server_accept(struct dovewarden_http_server *server,
			      const struct master_service_connection *conn)
{
	struct dovewarden_http_client *client;
	struct ip_addr ip;
	in_port_t port;

	client = i_new(struct dovewarden_http_client, 1);
	client->server = server;
	client->remote_ip = conn->remote_ip;
	client->events_refused = http_listener_is_insecure(
		server, conn->listen_fd, &ip, &port);
	DLLIST_PREPEND(&server->clients, client);
	client->http_conn = http_server_connection_create(
		server->http_server, conn->fd, conn->fd, conn->ssl,
		&http_callbacks, client);
}

struct dovewarden_http_server *
dovewarden_http_server_init(const struct dovewarden_settings *set,
			    struct dovewarden_queue_backend *queue,
			    struct dovewarden_replicator *replicator,
			    const char *doveadm_socket_path,
			    struct event *event_parent)
{
	struct dovewarden_http_server *server;
	struct event *http_event;

	server = i_new(struct dovewarden_http_server, 1);
	server->set = set;
	server->queue = queue;
	server->replicator = replicator;
	server->doveadm_socket_path = i_strdup(doveadm_socket_path);
	server->event = event_create(event_parent);
	server->log_limit.window_secs = HTTP_LOG_WINDOW_SECS;
	server->log_limit.max_per_window = DOVEWARDEN_HTTP_LOG_MAX_PER_MINUTE;
	event_set_append_log_prefix(server->event, "http: ");
	i_array_init(&server->ready_waiters, 4);

	/* lib-http's own per-request debug lines stay out of
	   log_debug = category=dovewarden */
	http_event = event_create(NULL);
	event_set_append_log_prefix(http_event, "http: ");
	/* bodies are limited per request; the payload limit only stops
	   absurd ones before they reach the request handler */
	server->http_server = dovewarden_lib_http_server_init(
		DOVEWARDEN_HTTP_IDLE_TIMEOUT_MSECS,
		DOVEWARDEN_EVENT_MAX_BODY_SIZE * 16, http_event);
	event_unref(&http_event);
	http_check_listeners(server);
	return server;
}

void dovewarden_http_server_deinit(struct dovewarden_http_server **_server)
{
	struct dovewarden_http_server *server = *_server;

	if (server == NULL)
		return;
	*_server = NULL;

	http_ready_probe_finish(server, FALSE, "service shutting down");
	http_server_deinit(&server->http_server);
	i_assert(server->clients == NULL);
	array_free(&server->ready_waiters);
	event_unref(&server->event);
	i_free(server->ready_error);
	i_free(server->doveadm_socket_path);
	i_free(server);
}
