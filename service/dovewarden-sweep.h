/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_SWEEP_H
#define DOVEWARDEN_SWEEP_H

/* Make a listed user known. Returns TRUE when it was not known before
   (it counts as added). */
typedef bool dovewarden_sweep_add_callback_t(const char *username,
					     void *context);

/* A userdb sweep: list the userdb's users matching a mask through the
   auth-userdb socket (the auth-master protocol's LIST, as "doveadm user
   '*'" does) and make every one the queue does not know yet known with
   dovewarden_queue_add(): priority none, its first full sync at its slot.
   Known users are not touched; users that are gone from the userdb stay
   until their next sync answers NOUSER.

   Unlike lib-auth-client's auth_master_user_list_next(), which waits for
   each batch of usernames in a nested ioloop, the sweep reads its own
   connection from the current ioloop: the service keeps serving
   notifications and syncs while a big userdb is listed (each read of the
   socket adds at most a few thousand users). Each sweep has its own
   connection (auth serves one listing per connection).

   Dovecot 2.4.1 and 2.4.2 abort listings of many users in the middle
   (auth logs "auth-worker: Aborted LIST request for *: Shutting down";
   fixed in 2.4.3 by "auth: Fix user iteration when there were many
   users"); "doveadm user '*'" fails the same way. The sweep then fails
   with the users listed so far added. */

/* Auth may take long to send the first username of a big SQL or LDAP
   listing; a sweep that receives nothing for this long fails. */
#define DOVEWARDEN_SWEEP_IDLE_TIMEOUT_SECS 120

struct dovewarden_sweep_result {
	/* usernames the userdb returned that match the mask */
	unsigned int listed;
	/* of those, users the queue did not know and that were added */
	unsigned int added;
	/* usernames skipped as invalid (dovewarden_username_is_valid()) */
	unsigned int invalid;
	/* how long the sweep took */
	long long duration_msecs;
	/* NULL when the whole list was read; else why the sweep failed
	   (the users added before the failure stay) */
	const char *error;
};

/* The result is valid only during the call. The sweep is freed after
   the callback returns. */
typedef void dovewarden_sweep_callback_t(
	const struct dovewarden_sweep_result *result, void *context);

/* Start a sweep of the users matching mask ('*' and '?' wildcards; "*"
   is every user), calling add_callback for each. socket_path is the absolute path of the
   auth-userdb socket. The callback is called exactly once, always later
   from the ioloop, never from within this function, unless the sweep is
   aborted. */
struct dovewarden_sweep *
dovewarden_sweep_start(dovewarden_sweep_add_callback_t *add_callback,
		       void *add_context, const char *socket_path,
		       const char *mask, struct event *event_parent,
		       dovewarden_sweep_callback_t *callback, void *context);
/* Stop the sweep without calling its callback. The users added so far
   stay. NULL is ignored. */
void dovewarden_sweep_abort(struct dovewarden_sweep **sweep);

/* What a line from auth is, for the sweep's connection (the fuzz target
   calls this without one) */
enum dovewarden_sweep_line {
	/* LIST of our request: *username_r is the unescaped name (on the
	   data stack; not validated, not matched against the mask) */
	DOVEWARDEN_SWEEP_LINE_USER,
	/* the handshake's VERSION line of a supported major version */
	DOVEWARDEN_SWEEP_LINE_VERSION,
	/* any other first line */
	DOVEWARDEN_SWEEP_LINE_BAD_HANDSHAKE,
	/* SPID or an empty line */
	DOVEWARDEN_SWEEP_LINE_IGNORE,
	/* the list ended, or it failed */
	DOVEWARDEN_SWEEP_LINE_DONE,
	DOVEWARDEN_SWEEP_LINE_FAILED,
	DOVEWARDEN_SWEEP_LINE_UNEXPECTED,
};
/* Parse one line of auth's reply; version_received tells whether the
   handshake's VERSION line came already. */
enum dovewarden_sweep_line
dovewarden_sweep_parse_line(const char *line, bool version_received,
			    const char **username_r);

#endif
