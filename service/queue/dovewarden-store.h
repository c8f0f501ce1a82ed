/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_STORE_H
#define DOVEWARDEN_STORE_H

#include "dovewarden-queue-rules.h"

struct dovewarden_queue;
struct dovewarden_user;

/* Persistence of the queue: every known user with its pending priority,
   sync times, failure count, dsync state and last error survives a
   restart of the service. Two files, both under the caller's path:

   <path> (the snapshot) holds the whole queue. It is rewritten by
   dovewarden_store_save(): written to <path>.tmp, fsync()ed, renamed over
   <path>, and the directory fsync()ed, so a reader sees either the old
   or the new snapshot, never a mix. Format: lines ending in LF, fields
   separated by TAB and escaped with str_append_tabescaped() (so a
   username or error may contain TAB, LF or any byte). The first line is
   the header

     dovewarden-db\t2\t<writer>

   with <writer> naming the program that wrote it ("dovewarden 0.1.0 on
   Dovecot 2.4.1"; snapshots of versions before it have no third field)
   and every further line is one user:

     <username>\t<priority>\t<last_update>\t<last_fast_sync>\t
     <last_full_sync>\t<last_successful_sync>\t<consecutive_failures>\t
     <next_try>\t<force_full_sync>\t<state>\t<last_error>\t
     <settle_first_change>\t<settle_last_change>\t<last_verified>\t
     <last_repaired>

   (one line; wrapped here) with <priority> as dovewarden_priority_to_str()
   names it, the times as decimal UNIX times (0 = never),
   <force_full_sync> 0 or 1, <state> the dsync state ("" = none) and
   <last_error> "" after a success. Version 1 files (header
   "dovewarden-db\t1", user lines without the last four fields) load
   with those times 0. A user that was syncing when the
   snapshot was taken is saved with at least LOW priority (and, if its
   sync was a full one, with force_full_sync), because nobody knows
   whether that sync finished.

   <path>.journal is the write-ahead part: one line per accepted change
   that the snapshot does not cover yet,

     N\t<username>\t<priority>		a notification
     C\t<username>\t<priority>		a client change (settled only
					when it overlaps an import)
     I\t<username>\t<priority>		a change dsync made (an import)
     F\t<username>\t<priority>		an admin's forced full sync
     R\t<username>\tnone		the user was removed (or forgotten
					after NOUSER)
     U\t<user line>			a user's fields after a sync, in
					the snapshot's user line format

   appended with a single write() on an O_APPEND descriptor, before the
   change is applied to the queue. Appends are not fsync()ed: after a
   kill -9 (or a crash) of the service the kernel still has them, which is
   the case this journal is for. A power loss or kernel crash can lose the
   last seconds of appends; the periodic full sync of every user covers
   those. A save truncates the journal only after the new snapshot has
   been renamed into place; a crash between the two makes the next start
   replay changes that the snapshot already has as pending, which is
   harmless.

   <path>.journal.old is the journal of a background save (see
   dovewarden_store_save_background()): when it starts, the journal is
   renamed to <path>.journal.old and appends go on in a new
   <path>.journal, so the snapshot the child process writes covers
   exactly the old journal. <path>.journal.old is deleted once that
   snapshot is in place. If it already exists when a save starts (an
   earlier background save failed or the service was killed during one),
   the journal is not rotated: the snapshot then covers the old journal
   and the start of the current one, and the next save rotates again.

   Changes are journaled only when they raise what the snapshot would
   save (a new user, a higher pending priority, a new forced full sync),
   so a busy user costs one line per change that arrived while it was
   not pending, not one per message. Every sync's result is journaled
   too (a U line: its new dsync state, sync times, back-off and settle),
   so a restart (kill -9, doveadm reload) resumes where the service was
   instead of redoing every sync since the last snapshot: a new user's
   first full sync, the settle full syncs and the changes they covered.
   A sync still running at the kill is not recorded and runs again.

   Loading reads the snapshot, then replays <path>.journal.old (if any)
   and <path>.journal as notifications. A corrupt snapshot or journal
   line (wrong field count, bad number, invalid username, unknown
   priority, a time before 1970 or after DOVEWARDEN_STORE_MAX_TIME, a
   duplicate user, a line longer than DOVEWARDEN_STORE_MAX_LINE_LENGTH, a
   last line without LF) is skipped and counted; the rest loads. A
   skipped line is not lost: it is appended to <path>.quarantine, for an
   admin to read, as one line

     <file>\t<line number>\t<reason>\t<the line>

   (fields escaped like the snapshot's, so the line's TABs are \001t;
   <the line> is "" when it could
   not be read: too long, or without LF). The quarantine only grows: an
   admin deletes it. Once it would exceed
   DOVEWARDEN_STORE_QUARANTINE_MAX_SIZE (or cannot be written), further
   lines are counted but not kept. A snapshot with a missing or
   unknown header is unusable: it is renamed to <path>.corrupt (so no
   later save overwrites it) and loading goes on as if there were no
   snapshot.

   The store keeps no pointer to the queue or its users between calls
   (a background save's child works on its own copy-on-write copy). It is
   not thread safe. */

/* Lines longer than this are skipped when loading. A user whose snapshot
   line would be longer is saved without its dsync state (its next sync
   is then a normal one without state). */
#define DOVEWARDEN_STORE_MAX_LINE_LENGTH (16 * 1024 * 1024)

/* The latest time a state file may hold (9999-12-31 23:59:59 UTC): the
   queue's arithmetic on later ones could overflow. */
#define DOVEWARDEN_STORE_MAX_TIME ((time_t)253402300799LL)
/* <path>.quarantine keeps no more than this */
#define DOVEWARDEN_STORE_QUARANTINE_MAX_SIZE (64 * 1024 * 1024)

struct dovewarden_store_load_result {
	/* Users restored from the snapshot */
	unsigned int users_loaded;
	/* What wrote the snapshot (its header's writer, sanitized), NULL
	   when no snapshot was read or its header has none; allocated from
	   the data stack */
	const char *snapshot_writer;
	/* Snapshot lines skipped as corrupt, and the line number (the
	   header is line 1) of the first one, 0 if none */
	unsigned int snapshot_lines_skipped;
	unsigned int snapshot_first_skipped_line;
	/* Journal lines replayed, and skipped as corrupt (with the line
	   number of the first one, 0 if none) */
	unsigned int journal_lines_replayed;
	unsigned int journal_lines_skipped;
	unsigned int journal_first_skipped_line;
	/* The journal file of that line (<path>.journal.old or
	   <path>.journal), NULL if none; valid until the store is
	   deinitialized */
	const char *journal_first_skipped_path;
	/* Skipped lines (snapshot and journals) appended to the
	   quarantine, and those that were not (it was full or could not be
	   written: quarantine_error says why) */
	unsigned int records_quarantined;
	unsigned int records_not_quarantined;
	/* <path>.quarantine when records_quarantined > 0, else NULL; valid
	   until the store is deinitialized */
	const char *quarantine_path;
	/* The first error of the quarantine, allocated from the data
	   stack; NULL if none */
	const char *quarantine_error;
	/* Non-NULL when the snapshot was unusable: why, and where it was
	   moved to. Allocated from the data stack. */
	const char *snapshot_corrupt_error;
	const char *snapshot_corrupt_path;
};

/* path is the snapshot's file name; its directory is created (0700) by
   the first save if it does not exist. No I/O happens here. */
struct dovewarden_store *dovewarden_store_init(const char *path);
/* Closes the journal. Does not save, but waits for a running background
   save to finish and calls its callback. */
void dovewarden_store_deinit(struct dovewarden_store **store);

/* Load the snapshot and replay the journals into queue (normally empty:
   users it already knows are skipped as duplicates). now is passed to
   the queue: users with a pending priority are due at once, or at
   next_try while in failure back-off. A missing snapshot or journal is
   not an error. Fills result_r (also on failure) and returns 0, also
   when lines were skipped or the snapshot was moved aside as corrupt;
   the caller logs those from result_r. Returns -1 with error_r when a
   file could not be read or the corrupt snapshot could not be moved
   aside: the queue may then be partly loaded, and the caller must not
   save over the file it could not read (the service should fail to
   start). */
int dovewarden_store_load(struct dovewarden_store *store,
			  struct dovewarden_queue *queue, time_t now,
			  struct dovewarden_store_load_result *result_r,
			  const char **error_r);

/* Returns 1 when the store has a file (the snapshot or a journal), 0
   when it has none (it was never saved), -1 with error_r when that could
   not be checked. */
int dovewarden_store_exists(struct dovewarden_store *store,
			    const char **error_r);

/* Log what result says about the quarantine (nothing when no record
   was skipped) */
void dovewarden_store_log_quarantine(struct event *event,
				     const struct dovewarden_store_load_result *result);

/* Write a snapshot of every user in queue, then delete
   <path>.journal.old and empty the journal. Blocks for as long as that
   takes (about a second per million users), and first waits for a
   running background save (calling its callback). Returns 0, or -1 with
   error_r; on failure the previous snapshot and the journals stay as they
   were (nothing is lost, the journal only keeps growing until a save
   succeeds). */
int dovewarden_store_save(struct dovewarden_store *store,
			  struct dovewarden_queue *queue,
			  const char **error_r);

/* ret is 0 when the snapshot was saved, -1 with error otherwise (then the
   previous snapshot and both journals are kept). */
typedef void dovewarden_store_save_callback_t(int ret, const char *error,
					      void *context);

/* Save like dovewarden_store_save() without blocking: rotate the journal
   (see above) and fork() a child process that writes the snapshot from
   its copy of queue and exits. The caller's ioloop (there must be one)
   notices the child's exit; then <path>.journal.old is deleted if the
   snapshot was saved, and callback is called from the ioloop. Changes
   made to queue meanwhile are journaled as usual and go into the next
   save. At most one background save runs at a time: check
   dovewarden_store_save_is_running() first. Returns 0 when the child was
   started, -1 with error_r when not (pipe(), fork() or the journal's
   rename() failed; callback is not called, and the caller should save
   synchronously instead). The child keeps no inherited descriptor but
   stdin, stdout, stderr and its status pipe, resets SIGTERM, SIGINT,
   SIGHUP and SIGQUIT to their default actions and, on Linux, is killed
   when its parent dies, so it never outlives the service. It does not
   log; it reports through its status pipe and exit code. */
int dovewarden_store_save_background(struct dovewarden_store *store,
				     struct dovewarden_queue *queue,
				     dovewarden_store_save_callback_t *callback,
				     void *context, const char **error_r);
#define dovewarden_store_save_background(store, queue, callback, context, \
					 error_r) \
	dovewarden_store_save_background(store, queue, \
		(dovewarden_store_save_callback_t *)(callback), \
		TRUE ? (context) : \
		CALLBACK_TYPECHECK(callback, void (*)( \
			int, const char *, typeof(context))), \
		error_r)
/* TRUE while a background save's child runs (until its callback has
   been called). */
bool dovewarden_store_save_is_running(struct dovewarden_store *store);
/* Block until a running background save is done and its callback has
   been called; returns at once if none runs. */
void dovewarden_store_save_wait(struct dovewarden_store *store);

/* Call for every accepted notification, before
   dovewarden_queue_notify(queue, username, priority, ...). Appends a
   journal line unless the queue already has the user pending at priority
   or higher (then the snapshot or an earlier line covers it). Returns 0,
   or -1 with error_r when the append failed; the notification should be
   queued anyway (log the error, rate-limited). */
int dovewarden_store_journal_notify(struct dovewarden_store *store,
				    struct dovewarden_queue *queue,
				    const char *username,
				    enum dovewarden_priority priority,
				    const char **error_r);
/* Like dovewarden_store_journal_notify(), for
   dovewarden_queue_notify_kind(). An import is appended also without a
   higher priority, at most once a second per user: a restart within the
   settle delay still sees it. */
int dovewarden_store_journal_notify_kind(struct dovewarden_store *store,
					 struct dovewarden_queue *queue,
					 const char *username,
					 enum dovewarden_priority priority,
					 enum dovewarden_queue_settle_kind kind,
					 const char **error_r);
/* Like dovewarden_store_journal_notify(), for
   dovewarden_queue_force_full_sync() (call it before that). */
int dovewarden_store_journal_force_full_sync(struct dovewarden_store *store,
					     struct dovewarden_queue *queue,
					     const char *username,
					     enum dovewarden_priority priority,
					     const char **error_r);
/* Call after dovewarden_queue_sync_finished() of username: appends the
   user's fields as they are now (or a remove line when the sync made
   the queue forget it), so that loading restores them instead of the
   older snapshot's or journal's. Returns 0, or -1 with error_r. */
int dovewarden_store_journal_user(struct dovewarden_store *store,
				  struct dovewarden_queue *queue,
				  const char *username, const char **error_r);
/* Call before dovewarden_queue_remove() of a known user: appends a
   journal line, so that a restart does not bring the user back. */
int dovewarden_store_journal_remove(struct dovewarden_store *store,
				    struct dovewarden_queue *queue,
				    const char *username, const char **error_r);

/* The size of the current journal (0 when it is not open) */
uoff_t dovewarden_store_journal_get_size(struct dovewarden_store *store);

/* The parsers of the files' lines, without I/O (the fuzz target calls
   them). The header: returns the snapshot's format version (1 or 2), 0
   for an invalid header; writer_r is its writer, NULL if none. */
unsigned int dovewarden_store_parse_header(const char *line,
					   const char **writer_r);
/* A snapshot's user line of a format version: returns 0 and fills
   fields_r (its strings are allocated from the data stack), or -1 with
   reason_r, a short static string such as "invalid time". Does not check
   for duplicates. */
int dovewarden_store_parse_user(char *line, unsigned int version,
				struct dovewarden_user *fields_r,
				const char **reason_r);

/* A time of a state file: a decimal UNIX time from 0 to
   DOVEWARDEN_STORE_MAX_TIME. Returns FALSE for anything else. */
bool dovewarden_store_parse_time(const char *str, time_t *time_r);

/* Returns TRUE for a line it took, FALSE with reason_r for a corrupt
   one. line may be modified. */
typedef bool dovewarden_store_line_callback_t(char *line, void *context,
					      const char **reason_r);
/* Read another file (such as 2.3's replicator.db) with the snapshot's
   limits: every line (without LF) goes to callback, in a data stack
   frame. Lines it rejects, lines longer than
   DOVEWARDEN_STORE_MAX_LINE_LENGTH and a last line without LF are
   counted in result (snapshot_lines_skipped, snapshot_first_skipped_line)
   and appended to the store's quarantine as a snapshot's corrupt lines
   are. Returns 1 when the file was read, 0 when it does not exist, -1
   with error_r when it could not be opened or read. */
int dovewarden_store_read_file(struct dovewarden_store *store,
			       const char *path,
			       dovewarden_store_line_callback_t *callback,
			       void *context,
			       struct dovewarden_store_load_result *result,
			       const char **error_r);

enum dovewarden_store_journal_cmd {
	DOVEWARDEN_STORE_JOURNAL_NOTIFY,
	DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC,
	DOVEWARDEN_STORE_JOURNAL_REMOVE,
	DOVEWARDEN_STORE_JOURNAL_CLIENT,
	DOVEWARDEN_STORE_JOURNAL_IMPORT,
};
struct dovewarden_store_journal_record {
	enum dovewarden_store_journal_cmd cmd;
	const char *username;
	enum dovewarden_priority priority;
};
/* Append a journal line (without LF) to dest. The Redis queue keeps
   its buffered notifications in the same format. */
void dovewarden_store_format_journal(string_t *dest,
				     enum dovewarden_store_journal_cmd cmd,
				     const char *username,
				     enum dovewarden_priority priority);
/* A journal line: returns 0 and fills rec_r (username on the data
   stack), or -1 with reason_r. */
int dovewarden_store_parse_journal(const char *line,
				   struct dovewarden_store_journal_record *rec_r,
				   const char **reason_r);

#endif
