/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_ORPHANS_H
#define DOVEWARDEN_ORPHANS_H

/* The dsyncs this service started, kept in a small file in state_dir so
   that the next service process knows which of them may still run.

   doveadm-server runs a sync command in an ioloop of its own and does not
   look at its client connection until the command ends: a dsync goes on
   when the service that asked for it is killed, restarted or reloaded.
   A new service process that synced those users again at once would
   start a second dsync of each, which waits for the first one's user
   lock (up to dovewarden_lock_timeout) while holding a doveadm-server
   process on both servers. Under repeated restarts these waits chain up
   until doveadm's process_limit is reached on both servers, and then
   every dsync waits for the other server to accept its connection.

   So every dsync's start and end are appended to the file (one short
   line each, no fsync: the dsync dies with the machine anyway). Loading
   it gives the users whose dsync a previous process started and did not
   see end; their next sync waits until DOVEWARDEN_ORPHAN_GRACE_SECS after
   that start, when the orphan has most likely ended (a longer one is
   waited for by the new dsync's user lock, once), and until then each
   orphan takes one of the dovewarden_max_syncs slots, so that restarts
   can't multiply the dsyncs running in doveadm-server.

   The wait is what limits how fast restarts start dsyncs. A sync that
   started at once next to the orphan instead (waiting for it in the
   user's lock, with the full lock timeout or a short one) was measured
   in the restart storm: under load a dsync takes longer to connect than
   the time between restarts, so the rounds of dsyncs each restart
   started piled up until doveadm's process_limit was reached. */

/* How long after an orphaned dsync's start its user's next sync waits.
   Syncs of a changed user take a few seconds at most; the wait bounds
   how often a user's dsync can be started again by restarts. */
#define DOVEWARDEN_ORPHAN_GRACE_SECS 10
/* The file is rewritten with only the running dsyncs when its appends
   reach this size */
#define DOVEWARDEN_ORPHANS_COMPACT_SIZE (256 * 1024)

/* Load path (a missing file is empty), keep the records of dsyncs started
   within the grace period under the same Dovecot master (master_pid, and
   not before master_started, the master's start time (0: unknown): in a
   container the master is always pid 1; a stopped master stopped its
   doveadm-server processes), rewrite the file with only those and open
   it for appending. Errors are logged; the
   service goes on without the records then. path NULL: no file (an idle
   service writes nothing in state_dir). */
struct dovewarden_orphans *
dovewarden_orphans_init(const char *path, pid_t master_pid,
			time_t master_started, struct event *event);
/* When process pid started (from /proc), 0 if unknown */
time_t dovewarden_orphans_process_started(pid_t pid);
/* Closes the file; the dsyncs still running stay recorded as started. */
void dovewarden_orphans_deinit(struct dovewarden_orphans **orphans);

/* How many dsyncs of previous processes may still run and take a sync
   slot of their own: loaded records not replaced since, started less
   than DOVEWARDEN_ORPHAN_GRACE_SECS ago, and not waited for by a sync
   (which takes the slot itself, see dovewarden_orphans_wait_until()).
   They hold doveadm-server processes like the service's own dsyncs.
   next_end_r is when the first of them stops counting (0 if none). */
unsigned int dovewarden_orphans_count(struct dovewarden_orphans *orphans,
				      time_t *next_end_r);
/* If a previous process started a dsync of username that may still run,
   return until when its next sync should wait; else 0. The caller's sync
   waits for it: from now on that sync, not the record, takes the slot. */
time_t dovewarden_orphans_wait_until(struct dovewarden_orphans *orphans,
				     const char *username);

/* Record the start and the end of a dsync of username. */
void dovewarden_orphans_started(struct dovewarden_orphans *orphans,
				const char *username);
void dovewarden_orphans_ended(struct dovewarden_orphans *orphans,
			      const char *username);
/* The service stopped waiting for a dsync of username that may still
   run (it timed out): from now on it counts like a dsync of a previous
   process, as if it started now (its user's next sync waits for it, and
   it takes a slot until then). */
void dovewarden_orphans_abandoned(struct dovewarden_orphans *orphans,
				  const char *username);

/* Call callback once for each user whose dsync ended without any service
   process seeing its result, as the load found them (whatever became of
   those dsyncs), and forget them. What such a dsync did on either server
   is unknown to the dsync state the next sync would use: the changes it
   carried look like changes made on both servers, which incremental
   dsync does not always merge (a message's flags changed on both). The
   caller hands them to the queue, which keeps them from then on. */
typedef void dovewarden_orphans_user_callback_t(const char *username,
						void *context);
void dovewarden_orphans_take_interrupted(struct dovewarden_orphans *orphans,
					 dovewarden_orphans_user_callback_t *callback,
					 void *context);
/* The parser of the file's lines, without I/O (the fuzz target calls
   it). "<start time>\t<master pid>\t<username>" is a started dsync
   (returns 1, fills started_r and master_pid_r), "-\t<username>" an ended
   one (returns 0); the username is tab-escaped and allocated from the data
   stack. Returns -1 with a short static reason_r for anything else. */
int dovewarden_orphans_parse_line(const char *line, time_t *started_r,
				  pid_t *master_pid_r,
				  const char **username_r,
				  const char **reason_r);

#endif
