/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_ADMIN_PROTOCOL_H
#define DOVEWARDEN_ADMIN_PROTOCOL_H

#include "dovewarden-protocol.h"


/* The admin protocol, spoken by "doveadm dovewarden ..." (client) to the
   service's "dovewarden-admin" unix socket (mode 0600: root only). It is
   line based; every field is tab-escaped, so usernames and errors may
   contain TAB, LF or any UTF-8. Both sides send the handshake first:

     VERSION\tdovewarden-admin-server\t1\t0	(service)
     VERSION\tdovewarden-admin-client\t1\t0	(client)

   A client may send any number of commands on one connection; each is
   answered in order.

     STATUS
	queue totals, one "<key>\t<number>" line per key of
	dovewarden_admin_status_keys[] (in that order; a client should
	show keys it does not know as they are), then an empty line
     STATUS\t<mask>
	one line per known user matching mask ('*' and '?' wildcards),
	sorted by username (priority: of the pending changes, for a user
	being synced at least that of the running sync):
	<user>\t<priority>\t<last fast sync>\t<last full sync>\t
	<last successful sync>\t<consecutive failures>\t<next sync secs>\t
	<last error>\t<last verified>\t<last repaired>
	then an empty line. Times are UNIX timestamps, 0 = never. next sync
	secs is "" when unknown or never; the last error is "" after a
	success. last verified is the start of the last successful full
	sync, last repaired of the last one that found the servers
	different. A client accepts lines without the last two fields
	(older services) and shows those times as never.
     STATUS-DSYNC
	one line per running sync:
	<user>\t<full|incremental|normal>\t<state text>\t<running secs>
	then an empty line
     REPLICATE\t<priority>\t<flags>\t<user or mask>
	priority is low, high or sync; flags is "" or "f" (full sync: dsync
	runs with -f). An exact username is made known if it is not yet;
	a mask selects the matching known users. Reply: +\t<count>
     ADD\t<user or mask>
	make the user known, or every userdb user matching the mask (if the
	service supports masks; the reply then comes after the userdb
	listing ended, and later commands on the connection wait for it).
	Reply: +\t<count>, for a mask the number of users that were not
	known before (1 for a username)
     REMOVE\t<user>
	forget the user (exact name). Reply: +

   Any command may instead be answered with one error line, which never
   quotes the raw input:

     -\t<error>

   For the list commands, an error line is the whole reply (no empty line
   follows); it cannot be mistaken for a data line, which always has more
   than two fields (STATUS-DSYNC, STATUS <mask>) or a key that is never
   "-" (STATUS). */

#define DOVEWARDEN_ADMIN_SERVER_NAME "dovewarden-admin-server"
#define DOVEWARDEN_ADMIN_CLIENT_NAME "dovewarden-admin-client"
#define DOVEWARDEN_ADMIN_MAJOR_VERSION 1
#define DOVEWARDEN_ADMIN_MINOR_VERSION 0
/* Default socket path, relative to base_dir */
#define DOVEWARDEN_ADMIN_SOCKET_NAME "dovewarden-admin"
/* Longest request line the service accepts */
#define DOVEWARDEN_ADMIN_MAX_LINE_LENGTH 4096
/* The REMOVE error for an unknown user (clients may compare it) */
#define DOVEWARDEN_ADMIN_ERROR_USER_NOT_FOUND "User not found"
/* The REPLICATE flag that asks for a full sync */
#define DOVEWARDEN_ADMIN_FLAG_FULL 'f'

enum dovewarden_admin_cmd {
	DOVEWARDEN_ADMIN_CMD_STATUS,
	DOVEWARDEN_ADMIN_CMD_STATUS_USERS,
	DOVEWARDEN_ADMIN_CMD_STATUS_DSYNC,
	DOVEWARDEN_ADMIN_CMD_REPLICATE,
	DOVEWARDEN_ADMIN_CMD_ADD,
	DOVEWARDEN_ADMIN_CMD_REMOVE,
};

/* A parsed request. The strings point into the parsed fields. */
struct dovewarden_admin_request {
	enum dovewarden_admin_cmd cmd;
	/* STATUS_USERS, REPLICATE, ADD: a username or a mask;
	   REMOVE: a username; NULL otherwise */
	const char *mask;
	/* REPLICATE only: LOW, HIGH or SYNC */
	enum dovewarden_priority priority;
	/* REPLICATE only: flag 'f' */
	bool full_sync;
};

/* The keys of the STATUS reply, in the order the service sends them */
enum dovewarden_admin_status_key {
	/* users with pending changes of each priority (also those in
	   failure back-off) */
	DOVEWARDEN_ADMIN_STATUS_PENDING_SYNC,
	DOVEWARDEN_ADMIN_STATUS_PENDING_HIGH,
	DOVEWARDEN_ADMIN_STATUS_PENDING_LOW,
	/* idle users whose periodic full sync is due now */
	DOVEWARDEN_ADMIN_STATUS_FULL_SYNC_DUE,
	/* users whose last sync failed, and those of them still waiting
	   for their retry */
	DOVEWARDEN_ADMIN_STATUS_FAILED,
	DOVEWARDEN_ADMIN_STATUS_FAILED_WAITING,
	DOVEWARDEN_ADMIN_STATUS_SYNCING,
	DOVEWARDEN_ADMIN_STATUS_USERS,

	DOVEWARDEN_ADMIN_STATUS_COUNT
};
/* "pending_sync", "pending_high", "pending_low", "full_sync_due",
   "failed", "failed_waiting", "syncing", "users" */
extern const char *const dovewarden_admin_status_keys[];

/* A STATUS <mask> line */
struct dovewarden_admin_user_status {
	const char *username;
	enum dovewarden_priority priority;
	time_t last_fast_sync, last_full_sync, last_successful_sync;
	time_t last_verified, last_repaired;
	unsigned int consecutive_failures;
	/* -1 when unknown or never */
	long long next_sync_secs;
	/* "" when none */
	const char *last_error;
};

/* A STATUS-DSYNC line */
struct dovewarden_admin_dsync_status {
	const char *username;
	/* "full", "incremental" or "normal" */
	const char *type;
	const char *state;
	unsigned int running_secs;
};

/* Parse the already-split (unescaped) fields of a request line. Returns
   0 and fills req_r, or -1 with a human-readable error_r that never
   quotes the raw input. A username (REMOVE, or REPLICATE/ADD/STATUS of
   a name without wildcards) must pass dovewarden_username_is_valid();
   a mask must be valid UTF-8 and not longer than a username. */
int dovewarden_admin_parse_request(const char *const *args,
				   struct dovewarden_admin_request *req_r,
				   const char **error_r);
/* Returns TRUE when str contains a '*' or '?' wildcard. */
bool dovewarden_admin_is_mask(const char *str);

/* Append request lines, with their trailing LF. */
void dovewarden_admin_append_status(string_t *dest, const char *mask);
void dovewarden_admin_append_status_dsync(string_t *dest);
void dovewarden_admin_append_replicate(string_t *dest,
				       enum dovewarden_priority priority,
				       bool full_sync, const char *mask);
void dovewarden_admin_append_add(string_t *dest, const char *mask);
void dovewarden_admin_append_remove(string_t *dest, const char *username);

/* Append reply lines, with their trailing LF. */
/* values are indexed by enum dovewarden_admin_status_key */
void dovewarden_admin_append_stats(string_t *dest,
		const unsigned int values[DOVEWARDEN_ADMIN_STATUS_COUNT]);
void dovewarden_admin_append_user_status(string_t *dest,
		const struct dovewarden_admin_user_status *status);
void dovewarden_admin_append_dsync_status(string_t *dest,
		const struct dovewarden_admin_dsync_status *status);
/* "+" without a count when count is -1, else "+\t<count>" */
void dovewarden_admin_append_ok(string_t *dest, int count);
void dovewarden_admin_append_error(string_t *dest, const char *error);

/* Parse the fields of reply lines. All return 0, or -1 with error_r. The
   strings point into args. */
int dovewarden_admin_parse_stats_line(const char *const *args,
				      const char **key_r, const char **value_r,
				      const char **error_r);
int dovewarden_admin_parse_user_status(const char *const *args,
		struct dovewarden_admin_user_status *status_r,
		const char **error_r);
int dovewarden_admin_parse_dsync_status(const char *const *args,
		struct dovewarden_admin_dsync_status *status_r,
		const char **error_r);
/* Parse a "+", "+\t<count>" or "-\t<error>" line. On "+" sets success_r
   and count_r (-1 without a count); on "-" clears success_r and sets
   error_msg_r. */
int dovewarden_admin_parse_reply(const char *const *args, bool *success_r,
				 int *count_r, const char **error_msg_r,
				 const char **error_r);
/* Returns TRUE when the fields are an error line ("-\t<error>"): the whole
   reply to a list command. */
bool dovewarden_admin_is_error_line(const char *const *args);

#endif
