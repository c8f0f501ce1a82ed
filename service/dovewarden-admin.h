/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_ADMIN_H
#define DOVEWARDEN_ADMIN_H

struct dovewarden_queue_backend;
struct dovewarden_replicator;

/* The server side of the admin protocol (see dovewarden-admin-protocol.h)
   on the service's "dovewarden-admin" listener. It reads and changes the
   queue through the queue-backend interface and starts syncs through the
   replicator. The reply to STATUS <mask> is made and sent in small steps
   from the ioloop (each line shows the user as it is when the line is
   made; users removed before that are left out), and STATUS-DSYNC lists
   only this instance's running syncs, so neither stops the service for
   long however many users it knows.

   What the service does:

     - once, after creating the queue and the replicator:
	 dovewarden_admin_server_init(queue, replicator, auth_socket_path,
				      event);
     - in its master_service connection callback, for a connection of
       the "admin" listener type:
	 master_service_client_connection_accept(conn);
	 dovewarden_admin_client_create(conn->fd);
       The admin code owns the fd from then on and calls
       master_service_client_connection_destroyed() when the connection
       closes.
     - before destroying the queue or the replicator:
	 dovewarden_admin_server_deinit();
       which closes every admin connection. */

/* queue, replicator and event_parent must stay valid until
   dovewarden_admin_server_deinit(). auth_socket_path (the auth-userdb
   socket) is used for ADD <mask>. */
void dovewarden_admin_server_init(struct dovewarden_queue_backend *queue,
				  struct dovewarden_replicator *replicator,
				  const char *auth_socket_path,
				  struct event *event_parent);
/* Close all admin connections and free the server. */
void dovewarden_admin_server_deinit(void);

/* Serve an accepted admin connection; takes ownership of fd. */
void dovewarden_admin_client_create(int fd);

#endif
