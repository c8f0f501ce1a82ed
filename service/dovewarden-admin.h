/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_ADMIN_H
#define DOVEWARDEN_ADMIN_H

#include "dovewarden-queue.h"
#include "dovewarden-replicator.h"
#include "dovewarden-sweep.h"

/* The server side of the admin protocol (see dovewarden-admin-protocol.h)
   on the service's "dovewarden-admin" listener. It reads and changes the
   queue directly and tells the service through callbacks. The reply to
   STATUS <mask> is made and sent in small steps from the ioloop (each
   line shows the user as it is when the line is made; users removed
   before that are left out), and STATUS-DSYNC walks only the syncing
   users, so neither stops the service for long however many users it
   knows.

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
	/* ADD or REMOVE changed the queue: re-check
	   dovewarden_queue_next_due() and start syncs that are due. Called
	   after the reply was queued for sending. Must not be NULL. */
	void (*queue_changed)(void *context);
	/* STATUS-DSYNC: add the users of this instance's running syncs.
	   Must not be NULL. */
	void (*get_syncing_users)(ARRAY_TYPE(dovewarden_user_p) *users,
				  void *context);
	/* ADD of one user: make it known (e.g.
	   dovewarden_replicator_add_user()). Must not be NULL. */
	bool (*add_user)(const char *username, void *context);
	/* REPLICATE for one user (called once per matching user): queue a
	   change at priority, or with full_sync a full sync (the next sync
	   sends -f), making the user known if needed; e.g.
	   dovewarden_replicator_notify() or
	   dovewarden_replicator_force_full_sync(), which journal the
	   request and start the sync. Must not be NULL. */
	void (*replicate)(const char *username,
			  enum dovewarden_priority priority, bool full_sync,
			  void *context);
	/* ADD <mask>: start making every userdb user matching mask known,
	   e.g. with dovewarden_sweep_start(); the admin code aborts the
	   sweep with dovewarden_sweep_abort() if the client disconnects
	   first. The reply is sent from the callback, and the client's
	   further commands wait for it. NULL: masks are answered with an
	   error. */
	struct dovewarden_sweep *
	(*add_users)(const char *mask, dovewarden_sweep_callback_t *callback,
		     void *callback_context, void *context);
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
/* With the Redis backend: STATUS, STATUS <mask>, REPLICATE <mask> and
   REMOVE read and change the shared queue in Redis instead of queue
   (the replies to the first three come when Redis answers). */
void dovewarden_admin_server_set_redis(struct dovewarden_redis_queue *rqueue);
/* Close all admin connections and free the server. */
void dovewarden_admin_server_deinit(void);

/* Serve an accepted admin connection; takes ownership of fd. */
void dovewarden_admin_client_create(int fd);

#endif
