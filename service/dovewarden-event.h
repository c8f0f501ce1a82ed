/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_EVENT_H
#define DOVEWARDEN_EVENT_H

#include "array.h"
#include "dovewarden-protocol.h"

/* Maps the bodies that Dovecot's event exporter (driver = http-post,
   format = json) sends to changes of users' mail. Pure logic: no I/O and
   no logging.

   A body is one exported event (a JSON object, which is what Dovecot
   sends, one per POST) or a JSON array of such objects. An event is:

     {"event":"<name>", "hostname":..., "categories":[...],
      "fields":{"user":"<user>", ...}}

   The mapping:

     imap_command_finished with fields/tagged_reply_state "OK":
       by fields/cmd_name (upper case, as Dovecot writes it)
	 APPEND, COPY, MOVE, UID COPY, UID MOVE, REPLACE, UID REPLACE
							      -> high
	 STORE, UID STORE, EXPUNGE, UID EXPUNGE, CLOSE, CREATE, DELETE,
	 RENAME, SUBSCRIBE, UNSUBSCRIBE, SETMETADATA, SETACL, DELETEACL
							      -> low
	 FETCH and UID FETCH that fetch a body without .PEEK (BODY[...],
	 BINARY[...], RFC822, RFC822.TEXT: they set \Seen)   -> low
	 any other command (SELECT, FETCH .PEEK, STATUS, ...)  -> ignored
       any other tagged reply state (NO, BAD)		      -> ignored
     mail_delivery_finished without an "error" field:
       user fields/user, or fields/rcpt_to without it	      -> high
     mail_delivery_finished with "error"		      -> ignored
     any other event name				      -> ignored

   An error rejects the whole body: it is larger than
   DOVEWARDEN_EVENT_MAX_BODY_SIZE, not JSON, nested deeper than
   DOVEWARDEN_EVENT_MAX_DEPTH, not an object (or array of objects), an
   array of more than DOVEWARDEN_EVENT_MAX_EVENTS, "event" is missing or
   not a string, or a relevant event lacks "fields", cmd_name,
   tagged_reply_state or a user, has one of them with the wrong type, or
   its user is not valid (dovewarden_username_is_valid()). The body must
   be strict JSON (RFC 8259) and thus valid UTF-8 throughout: Dovecot's
   exporter writes invalid UTF-8 of a field (e.g. a message subject) as
   U+FFFD. Fields that the mapping does not use are not type-checked. */

/* Largest body accepted; Dovecot's events are around 1 KiB */
#define DOVEWARDEN_EVENT_MAX_BODY_SIZE (64 * 1024)
/* Deepest JSON nesting accepted; Dovecot's events have depth 3 */
#define DOVEWARDEN_EVENT_MAX_DEPTH 16
/* Most events in one array body */
#define DOVEWARDEN_EVENT_MAX_EVENTS 1000

/* One event of a body. */
struct dovewarden_event_change {
	/* The user to queue; NULL when the event is ignored */
	const char *username;
	/* NONE when the event is ignored */
	enum dovewarden_priority priority;
	/* The event's name ("" if it was not a string) */
	const char *event_name;
	/* imap_command_finished: the command's name, otherwise NULL */
	const char *command;
	/* Why the event is ignored (a static string), NULL when it is not */
	const char *ignore_reason;
};
ARRAY_DEFINE_TYPE(dovewarden_event_change, struct dovewarden_event_change);

/* Parse a body of size bytes (it need not be NUL-terminated). On success
   returns 0 and appends one entry per event, in order, to changes; its
   strings are allocated from pool. On error returns -1 with a short
   error_r that never quotes the input, and appends nothing. */
int dovewarden_event_parse(const void *data, size_t size, pool_t pool,
			   ARRAY_TYPE(dovewarden_event_change) *changes,
			   const char **error_r);

/* The priority of an IMAP command that finished with OK, NONE for a
   command that does not change mail. args are the command's arguments
   (cmd_args), or NULL when unknown: they matter only for FETCH. */
enum dovewarden_priority
dovewarden_event_imap_command_priority(const char *cmd_name,
				       const char *args);

#endif
