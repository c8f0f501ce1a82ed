/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_PROTOCOL_H
#define DOVEWARDEN_PROTOCOL_H

/* The notify protocol, spoken by the mail plugin (client) to the service's
   "dovewarden-notify" unix socket. It is line based; every field is
   tab-escaped (str_append_tabescaped()), so usernames may contain TAB, LF
   or any UTF-8. Both sides send the handshake line first
   (lib-dovecot's connection API does this):

     VERSION\tdovewarden-notify\t1\t0

   Client to service:

     N\t<user>\t<priority>
	A change of <user>'s mail made by a client of this server. No
	reply.
     I\t<user>\t<priority>
	(Since minor version 1.) dsync changed <user>'s mail on this
	server: it imported changes made on another one. <priority> is
	"none" (nothing to sync: the sync that made it carries it) or
	"low" (a mailbox list change that only a sync back from this
	server makes equal, e.g. a \\Noselect parent that dsync created
	as a real mailbox). No reply. A service that knows this command
	settles only users changed on two servers at about the same
	time; a client that sends it (and only such a client) reports
	dsync's changes, which a service may rely on for N lines of the
	same connection.
     W\t<id>\t<user>\t<timeout msecs>
	New mail that the client waits for: reply after a sync that began
	after this line was received has succeeded (a temporary failure
	is not an answer: the retry is), after a failure that retrying
	won't fix, or after the timeout.
	<id> is a client-chosen nonzero number, unique per connection.

   Service to client:

     +\t<id>		the wait request <id> ended with a successful sync
     -\t<id>\t<reason>	it did not (timeout, permanent failure,
			replication off)

   Unknown commands are an error that closes the connection; a client must
   not send them before the version's minor number says the service knows
   them, and a service relies on a client's behaviour only as far as the
   client's minor number says. */

#define DOVEWARDEN_NOTIFY_SERVICE_NAME "dovewarden-notify"
#define DOVEWARDEN_NOTIFY_MAJOR_VERSION 1
#define DOVEWARDEN_NOTIFY_MINOR_VERSION 1
/* The first minor version with the I command */
#define DOVEWARDEN_NOTIFY_MINOR_VERSION_IMPORT 1
/* Default socket path, relative to base_dir */
#define DOVEWARDEN_NOTIFY_SOCKET_NAME "dovewarden-notify"
/* Longest line either side accepts, including the escaped username */
#define DOVEWARDEN_NOTIFY_MAX_LINE_LENGTH 4096
/* Longest username accepted (after unescaping) */
#define DOVEWARDEN_USERNAME_MAX_LENGTH 1024

/* How urgently a user needs a sync. Ordered: a higher value wins when
   pending changes are merged. */
enum dovewarden_priority {
	/* Nothing pending; background or periodic full sync */
	DOVEWARDEN_PRIORITY_NONE = 0,
	/* Flag and keyword changes, expunges, mailbox operations */
	DOVEWARDEN_PRIORITY_LOW,
	/* New mail (save, copy from another storage, delivery) */
	DOVEWARDEN_PRIORITY_HIGH,
	/* New mail that a client waits for */
	DOVEWARDEN_PRIORITY_SYNC,
};
#define DOVEWARDEN_PRIORITY_COUNT (DOVEWARDEN_PRIORITY_SYNC + 1)

enum dovewarden_notify_cmd {
	DOVEWARDEN_NOTIFY_CMD_NOTIFY,
	DOVEWARDEN_NOTIFY_CMD_WAIT,
	DOVEWARDEN_NOTIFY_CMD_IMPORT,
};

/* A parsed client request. The strings point into the memory of the
   parsed line (data stack or the caller's pool). */
struct dovewarden_notify_request {
	enum dovewarden_notify_cmd cmd;
	const char *username;
	enum dovewarden_priority priority;
	/* Only for DOVEWARDEN_NOTIFY_CMD_WAIT */
	unsigned int id;
	unsigned int timeout_msecs;
};

/* "none", "low", "high" or "sync" */
const char *dovewarden_priority_to_str(enum dovewarden_priority priority);
/* Parse the strings above. Returns FALSE on anything else. */
bool dovewarden_priority_parse(const char *str,
			       enum dovewarden_priority *priority_r);

/* Returns TRUE when the username may be queued: not empty, not longer than
   DOVEWARDEN_USERNAME_MAX_LENGTH, valid UTF-8 and without control bytes
   (below 0x20, 0x7f). */
bool dovewarden_username_is_valid(const char *username);

/* Append a complete request line, with its trailing LF, to dest. */
void dovewarden_notify_append_notify(string_t *dest, const char *username,
				     enum dovewarden_priority priority);
/* priority is NONE or LOW */
void dovewarden_notify_append_import(string_t *dest, const char *username,
				     enum dovewarden_priority priority);
void dovewarden_notify_append_wait(string_t *dest, unsigned int id,
				   const char *username,
				   unsigned int timeout_msecs);
/* Append a reply line to a wait request, with its trailing LF. reason is
   ignored on success and may be NULL. */
void dovewarden_notify_append_reply(string_t *dest, unsigned int id,
				    bool success, const char *reason);

/* Parse the already-split (unescaped) fields of one request line.
   Returns 0 and fills req_r, or -1 with a human-readable error_r that
   never quotes the raw input. */
int dovewarden_notify_parse_request(const char *const *args,
				    struct dovewarden_notify_request *req_r,
				    const char **error_r);
/* Parse the fields of a reply line. Returns 0 or -1 with error_r. */
int dovewarden_notify_parse_reply(const char *const *args, unsigned int *id_r,
				  bool *success_r, const char **reason_r,
				  const char **error_r);

/* The "dovewarden" event category of every event the plugins and the
   service log or export */
extern struct event_category event_category_dovewarden;

#endif
