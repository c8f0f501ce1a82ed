/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_HTTP_H
#define DOVEWARDEN_HTTP_H

struct master_service_connection;
struct dovewarden_settings;
struct dovewarden_queue_backend;
struct dovewarden_replicator;
struct ip_addr;

/* The HTTP listener (type "http") of the service:

     POST /events   one body of Dovecot's event exporter (driver =
		    http-post, format = json), mapped by dovewarden-event.h;
		    its users are queued like plugin notifications.
		    202 some user queued, 204 nothing to do (ignored events),
		    400 malformed, 401 credentials missing, 403 wrong,
		    413 larger than DOVEWARDEN_EVENT_MAX_BODY_SIZE.
     GET /metrics   Prometheus text format (dovewarden-metrics.h)
     GET /healthz   200 "ok" while the service runs
     GET /readyz    200 "ready" when doveadm-server answers its handshake
		    on its unix socket, else 503 (probed at most every
		    DOVEWARDEN_HTTP_READY_CACHE_MSECS, each probe waits at
		    most DOVEWARDEN_HTTP_READY_TIMEOUT_MSECS)

   Other paths get 404, other methods 405. With dovewarden_http_secret
   set, POST /events needs "Authorization: Basic" with that secret as the
   password (any user name), which is what Dovecot's http-post exporter
   sends for http://user:secret@host:port/events, or
   "Authorization: Bearer <secret>". The comparison takes as long
   whatever the credentials' bytes and length.

   Without dovewarden_http_secret, POST /events is accepted only on a
   listener bound to a loopback address (127.0.0.0/8, ::1). On any other
   one, a wildcard such as "*" or "::" included, the service logs an error
   at start and answers POST /events with 403, unless
   dovewarden_http_allow_insecure is set. /metrics, /healthz and /readyz
   are served on every listener: they change nothing. Rejected requests are logged at most
   DOVEWARDEN_HTTP_LOG_MAX_PER_MINUTE times a minute, never with any of
   the body. */

#define DOVEWARDEN_HTTP_READY_CACHE_MSECS 5000
#define DOVEWARDEN_HTTP_READY_TIMEOUT_MSECS 2000
#define DOVEWARDEN_HTTP_LOG_MAX_PER_MINUTE 10
/* An idle keep-alive connection is closed after this long */
#define DOVEWARDEN_HTTP_IDLE_TIMEOUT_MSECS (5 * 60 * 1000)

/* set and replicator must outlive the server. doveadm_socket_path is the
   absolute path of doveadm-server's unix socket (copied). */
struct dovewarden_http_server *
dovewarden_http_server_init(const struct dovewarden_settings *set,
			    struct dovewarden_queue_backend *queue,
			    struct dovewarden_replicator *replicator,
			    const char *doveadm_socket_path,
			    struct event *event_parent);
/* Closes all connections; pending /readyz requests get 503. */
void dovewarden_http_server_deinit(struct dovewarden_http_server **server);

/* Take over an accepted master service connection. */
void
dovewarden_http_server_accept(struct dovewarden_http_server *server,
			      const struct master_service_connection *conn);

#endif
