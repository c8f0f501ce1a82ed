/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_NOTIFY_SERVER_H
#define DOVEWARDEN_NOTIFY_SERVER_H

struct master_service_connection;
struct dovewarden_settings;
struct dovewarden_replicator;
struct dovewarden_sync_waits;

/* The service side of the notify protocol (dovewarden-protocol.h): each
   "N" line queues a user in the replicator; each "W" line queues it at
   sync priority and is answered when a sync that started after it has
   finished or the request timed out. A malformed line is logged
   (rate-limited, never quoting more than a short escaped prefix) and
   disconnects that client only. */

/* The replicator and waits must outlive the server. */
struct dovewarden_notify_server *
dovewarden_notify_server_init(const struct dovewarden_settings *set,
			      const char *auth_socket_path,
			      struct dovewarden_replicator *replicator,
			      struct dovewarden_sync_waits *waits,
			      struct event *event_parent);
/* Disconnects all clients and cancels their waits. */
void dovewarden_notify_server_deinit(struct dovewarden_notify_server **server);

/* Take over an accepted master service connection. */
void dovewarden_notify_server_accept(
	struct dovewarden_notify_server *server,
	const struct master_service_connection *conn);

#endif
