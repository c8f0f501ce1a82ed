/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_ADMIN_H
#define DOVEWARDEN_ADMIN_H

#include "dovewarden-queue.h"

/* The server side of the admin protocol (see dovewarden-admin-protocol.h)
   on the service's "dovewarden-admin" listener. It reads and changes the
   queue directly and tells the service through callbacks.

   What the service does:

     - after creating the queue, once:
	 dovewarden_admin_server_init(queue, &queue_set, &callbacks,
				      event);
     - in its master_service connection callback, for a connection of
       the "admin" listener type (conn->type, "admin"):
	 master_service_client_connection_accept(conn);
	 dovewarden_admin_client_create(conn->fd);
       The admin code owns the fd from then on and calls
       master_service_client_connection_destroyed() when the connection
       closes.
     - before destroying the queue:
	 dovewarden_admin_server_deinit();
       which closes every admin connection. */

struct dovewarden_admin_callbacks {
	/* STATUS-DSYNC: returns a short text of what the running sync of
	   user (user->syncing is set) is doing, e.g. from
	   dovewarden_doveadm_sync_get_state(); the string must stay valid
	   until the current data stack frame ends. NULL callback, or NULL
	   returned: "syncing". */
	const char *(*sync_state)(const struct dovewarden_user *user,
				  void *context);
	/* REPLICATE, ADD or REMOVE changed the queue: re-check
	   dovewarden_queue_next_due() and start syncs that are due. Called
	   after the reply was queued for sending. Must not be NULL. */
	void (*queue_changed)(void *context);
	/* ADD <mask>: make every userdb user matching mask known with
	   dovewarden_queue_add(). Runs synchronously; returns the number of
	   users, or -1 with error_r. NULL: masks are answered with an
	   error. */
	int (*add_users)(const char *mask, const char **error_r,
			 void *context);
	void *context;
};

/* Set up the admin server. queue, callbacks and event_parent must stay
   valid until dovewarden_admin_server_deinit(); queue_set and callbacks
   are copied. queue_set->full_sync_interval_secs gives the "next sync"
   of idle users in STATUS. Log lines go to a child of event_parent,
   which should carry the "dovewarden" category and log prefix. */
void
dovewarden_admin_server_init(struct dovewarden_queue *queue,
			     const struct dovewarden_queue_settings *queue_set,
			     const struct dovewarden_admin_callbacks *callbacks,
			     struct event *event_parent);
/* Close all admin connections and free the server. */
void dovewarden_admin_server_deinit(void);

/* A ready implementation for the add_users callback: iterate the userdb
   through the auth-userdb socket at auth_socket_path (absolute) and
   dovewarden_queue_add() every valid username matching mask. Blocks
   until the iteration ends (auth-master runs its own ioloop). Returns
   the number of users, or -1 with error_r (users found before the
   failure stay added). Does not call queue_changed. */
int dovewarden_admin_add_userdb_users(struct dovewarden_queue *queue,
				      const char *auth_socket_path,
				      const char *mask, const char **error_r);

/* Serve an accepted admin connection; takes ownership of fd. */
void dovewarden_admin_client_create(int fd);

#endif
