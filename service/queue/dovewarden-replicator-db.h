/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_REPLICATOR_DB_H
#define DOVEWARDEN_REPLICATOR_DB_H

struct dovewarden_queue;
struct dovewarden_store;
struct dovewarden_user;
struct dovewarden_store_load_result;

/* Migration from Dovecot 2.3's built-in replicator: its state file,
   <state_dir>/replicator.db, imported once into an empty queue. One line
   per user, fields separated by TAB, the username and the state escaped
   with str_append_tabescaped(), no header:

     <username>\t<priority>\t<last_update>\t<last_fast_sync>\t
     <last_full_sync>\t<last_sync_failed>\t<state>\t<last_successful_sync>

   (one line; wrapped here) with <priority> 0 (none) to 3 (sync), the
   times UNIX times (0 = never) and <last_sync_failed> 0 or 1. Older 2.3
   versions wrote no <last_successful_sync>; fields after it are ignored,
   as 2.3 does. <state> is dsync's state, the same that dovewarden passes
   to dsync, so an imported user's next sync is an incremental one.

   A line becomes a user as follows: priority 0 none, 1 low, 2 and 3 high
   (3 was a client waiting for the sync; nobody waits after the
   migration); the times as they are; a failed last sync is one failure
   (with DOVEWARDEN_REPLICATOR_DB_FAILED_ERROR as its error), retried at
   once (at least low priority), as 2.3 retried failures. A user with a
   state that holds mailboxes but without a full sync time
   (its syncs were started by the other server) counts its last sync as
   its last full sync: its mailboxes were synced before, so dovewarden's
   rule "a user's first sync is a full one" is not needed for it. A user
   whose state is empty or only the header keeps that rule.

   The file is read as the snapshot is (dovewarden_store_read_file()):
   lines longer than DOVEWARDEN_STORE_MAX_LINE_LENGTH are skipped, times
   must be within DOVEWARDEN_STORE_MAX_TIME, and an escaped NUL (which
   2.3 never writes, and which would cut a field short) makes a line not
   valid. */

/* The last error of an imported user whose last sync had failed */
#define DOVEWARDEN_REPLICATOR_DB_FAILED_ERROR \
	"The last sync failed (imported from replicator.db)"

/* Parse one line (without LF) into fields_r (its strings allocated from
   the data stack). Returns 0, or -1 with reason_r, a short static string
   such as "invalid time". No I/O; any input is safe. */
int dovewarden_replicator_db_parse_line(const char *line,
					struct dovewarden_user *fields_r,
					const char **reason_r);

/* TRUE when a dsync state holds no mailbox: empty, or only the version
   and the CRC (8 bytes, 12 base64 characters). */
bool dovewarden_replicator_db_state_is_empty(const char *state);

/* Add every user of path to queue (normally empty). Lines that fail to
   parse are skipped, counted in result_r (snapshot_lines_skipped and
   snapshot_first_skipped_line) and kept in the store's quarantine file;
   users_loaded counts the users added. A user on several lines is kept
   as 2.3 does: the line with the latest last_update (of those, the
   highest priority) wins. Returns 1 when the file was read, 0 when it
   does not exist, -1 with error_r when it could not be read (the queue
   may then be partly filled). Does not rename the file. */
int dovewarden_replicator_db_import(struct dovewarden_store *store,
				    const char *path,
				    struct dovewarden_queue *queue, time_t now,
				    struct dovewarden_store_load_result *result_r,
				    const char **error_r);
/* Log the lines that the import skipped (nothing if none): one warning,
   and where they were kept */
void dovewarden_replicator_db_log_skipped(struct event *event,
					  const char *path,
					  const struct dovewarden_store_load_result *result);

#endif
