/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_REDIS_QUEUE_H
#define DOVEWARDEN_REDIS_QUEUE_H

#include "dovewarden-queue-rules.h"
#include "dovewarden-redis.h"

/* The replication queue in Redis, shared by every service instance that
   uses the same Redis database and key prefix. It keeps the behaviour of
   the built-in queue (dovewarden-queue-rules.h): priorities with the same
   boosts, one entry per user, per-user dsync state, the full sync
   schedule with the same slots, settling, CHANGED retries and failure
   back-off. Every change is one Lua script, so it is atomic however many
   instances run; time is Redis's clock (TIME), so the instances' clocks
   do not matter.

   Keys (<p> = dovewarden_redis_prefix):
     <p>u:<username>  hash: the user's fields (see the scripts), with
                      one dsync state per server (st:<server>)
     <p>users         set: every known username
     <p>ready         sorted set: users due now, by sort key
     <p>wait          sorted set: users due later, by due time; a claimed
                      user is here too, at its claim's expiry
     <p>claims        sorted set: claimed (syncing) users, by expiry
     <p>pending       sorted set: users with changes not replicated yet,
                      by the time of the oldest one
     <p>failed        set: users whose last sync failed
     <p>counts        hash: priority -> users with pending changes at it
     <p>lock:<name>   string: a job that runs on one instance at a time
     <p>done          Pub/Sub channel: "<result> <seq> <username>" after
                      every sync

   A claim is the right to sync a user: dovewarden_redis_queue_pop()
   takes one for the instance, which renews it every third of
   claim_timeout_secs while the sync runs. If the instance dies, the claim
   expires, and the next pop of any instance gives the user's changes
   back to the queue: nothing is lost, and the user is synced by one
   instance at a time.

   Notifications go to a buffer first and are sent from there; one that
   Redis did not confirm goes back to the buffer, so a Redis outage loses
   nothing unless the buffer has buffer_limit users (then further users'
   changes are dropped and counted, and logged). The buffer is also kept
   in a file (buffer_path), so that a restart during an outage loses
   nothing either. */

struct dovewarden_redis_queue_settings {
	struct dovewarden_redis_settings redis;
	struct dovewarden_queue_settings queue;
	const char *prefix;
	/* this instance's name in claims (unique among the instances and
	   across their restarts): "<identity>:<this run>" */
	const char *owner;
	/* what stays the same across restarts of this instance (and differs
	   between instances); NULL if there is none. At the first connect
	   the claims of owners "<identity>:<an earlier run>" are given back
	   at once: that run was killed or replaced. */
	const char *identity;
	/* the Dovecot server this instance syncs from (its host name): a
	   dsync state holds that server's modseqs, so each server keeps its
	   own state of each user (instances of one server share it) */
	const char *server;
	unsigned int claim_timeout_secs;
	unsigned int buffer_limit;
	/* Where the buffer survives restarts (NULL: in memory only). A user
	   entering the buffer (or whose buffered priority or full sync
	   rises, or who is removed) appends a line in the journal's format
	   (dovewarden_store_format_journal(), no fsync: like the journal it
	   survives a kill, not a power loss); a user leaves the buffer only
	   when Redis confirmed it; the file is emptied with the buffer,
	   rewritten with one line per user when it grew past four lines per
	   user, and loaded into the buffer at init. After a write error the
	   buffer is kept in memory only until it is empty again (logged
	   once). */
	const char *buffer_path;
};

/* A claimed user */
struct dovewarden_redis_job {
	char *username;
	/* the dsync state of syncs from this server ("" when none) */
	char *state;
	/* the pending priority the claim took */
	enum dovewarden_priority priority;
	/* the sync is a full one, and the settle */
	bool full, settle;
	/* another server's instance synced the user after the state was
	   saved (see dovewarden_queue_backend_job_take_state_stale()) */
	bool state_stale;
	/* set by the caller before finishing: the sync ran no dsync (it
	   was held or failed before), so it changed neither side */
	bool no_dsync;
	/* the failures in a row before this sync, and the last one's
	   error ("" when none) */
	unsigned int consecutive_failures;
	char *last_error;
	/* the claim's sequence number: a sync with a larger one started
	   after every change recorded when the user's sequence was seq */
	uint64_t seq;

	/* private */
	struct dovewarden_redis_job *prev, *next;
};

struct dovewarden_redis_queue_stats {
	unsigned int users, syncing, pending, failed;
	/* users by pending priority (like dovewarden_queue_stats) */
	unsigned int pending_by_priority[DOVEWARDEN_PRIORITY_COUNT];
	/* time of the oldest change not replicated yet (0 = none) */
	time_t oldest_pending;
};

struct dovewarden_redis_queue_callbacks {
	/* Redis is reachable again (or for the first time) */
	void (*connected)(void *context);
	/* A sync finished (on any instance): result is "ok", "changed",
	   "tempfail", "config" or "nouser" */
	void (*sync_done)(const char *username, uint64_t seq,
			  const char *result, void *context);
};

struct dovewarden_redis_queue *
dovewarden_redis_queue_init(const struct dovewarden_redis_queue_settings *set,
			    struct event *event_parent,
			    const struct dovewarden_redis_queue_callbacks *callbacks,
			    void *context);
/* Notifications still in the buffer are written to Redis with a blocking
   connection (bounded by the timeout); the claims of running jobs are
   given back. The jobs are freed. */
void dovewarden_redis_queue_deinit(struct dovewarden_redis_queue **queue);

bool dovewarden_redis_queue_is_connected(struct dovewarden_redis_queue *queue);

/* Record a change (priority NONE only makes the user known; force_full
   asks for a full sync). The change was made on this instance's server,
   so only its instances sync it incrementally, unless any_server (an
   admin's request). Never fails: what can't be sent now is sent later
   (from the buffer as made on this server). */
void dovewarden_redis_queue_notify(struct dovewarden_redis_queue *queue,
				   const char *username,
				   enum dovewarden_priority priority,
				   bool force_full, bool any_server);
/* Like notify, with the kind of change for the settle rule (notify():
   DOVEWARDEN_QUEUE_SETTLE_ALWAYS). Imports of NONE priority are not
   sent: the queue sees every server's client changes itself. */
void dovewarden_redis_queue_notify_kind(struct dovewarden_redis_queue *queue,
					const char *username,
					enum dovewarden_priority priority,
					bool force_full, bool any_server,
					enum dovewarden_queue_settle_kind kind);
/* Like notify at SYNC priority, and call the callback with the user's
   claim sequence once Redis recorded the change (success=FALSE if it
   could not be sent now; it is then buffered like any notification). */
typedef void dovewarden_redis_queue_seq_callback_t(bool success, uint64_t seq,
						   void *context);
void dovewarden_redis_queue_notify_seq(struct dovewarden_redis_queue *queue,
				       const char *username,
				       enum dovewarden_queue_settle_kind kind,
				       dovewarden_redis_queue_seq_callback_t *callback,
				       void *context);

/* Claim the user whose sync is due first. With allow_background=FALSE
   background work (see DOVEWARDEN_QUEUE_BACKGROUND_MAX_PRIORITY) is not
   claimed. The callback gets the job, or job=NULL and the seconds until
   the next user is due (-1: unknown or only background work), or
   job=NULL and an error. Returns -1 when Redis is not connected. */
typedef void dovewarden_redis_queue_pop_callback_t(
	struct dovewarden_redis_job *job, int next_due_secs,
	const char *error, void *context);
int dovewarden_redis_queue_pop(struct dovewarden_redis_queue *queue,
			       bool allow_background,
			       dovewarden_redis_queue_pop_callback_t *callback,
			       void *context);
/* Finish a claimed job like dovewarden_queue_sync_finished() (repaired:
   the full sync changed something, see last_repaired) and free it. If
   the claim was lost meanwhile (expired, user removed), nothing is
   changed. If Redis is unreachable, the claim expires and the changes
   are synced again. */
void dovewarden_redis_queue_finish(struct dovewarden_redis_queue *queue,
				   struct dovewarden_redis_job **job,
				   enum dovewarden_sync_result result,
				   const char *new_state, const char *error,
				   bool repaired);

/* Give a claimed job back unfinished: its changes are due again at once,
   without back-off. Frees the job. */
void dovewarden_redis_queue_release(struct dovewarden_redis_queue *queue,
				    struct dovewarden_redis_job **job);
/* Forget a user (a running claim of it is then lost). The callback gets
   1 when it was known, 0 when not, -1 with an error. Returns -1 when
   not connected. */
typedef void dovewarden_redis_queue_remove_callback_t(int ret,
						      const char *error,
						      void *context);
int dovewarden_redis_queue_remove(struct dovewarden_redis_queue *queue,
				  const char *username,
				  dovewarden_redis_queue_remove_callback_t *callback,
				  void *context);

/* Take the named lock for secs seconds if nobody has it; the callback
   says whether this instance got it, or gives the error (then acquired
   is FALSE and nobody is known to have it). Returns -1 when not
   connected. */
typedef void dovewarden_redis_queue_lock_callback_t(bool acquired,
						    const char *error,
						    void *context);
int dovewarden_redis_queue_try_lock(struct dovewarden_redis_queue *queue,
				    const char *name, unsigned int secs,
				    dovewarden_redis_queue_lock_callback_t *callback,
				    void *context);
/* End the failure back-off of username (NULL: of every failed user),
   see dovewarden_queue_retry_failed(). The callback gets how many users
   were in back-off, or an error. Returns -1 when not connected. */
typedef void dovewarden_redis_queue_retry_callback_t(long long count,
						     const char *error,
						     void *context);
int dovewarden_redis_queue_retry_failed(struct dovewarden_redis_queue *queue,
					const char *username,
					dovewarden_redis_queue_retry_callback_t *callback,
					void *context);
/* Claims of earlier runs given back at start so far */
uint64_t
dovewarden_redis_queue_get_claims_taken_back(struct dovewarden_redis_queue *queue);
/* Delete the named lock, whoever has it. Returns -1 when not
   connected. */
int dovewarden_redis_queue_unlock(struct dovewarden_redis_queue *queue,
				  const char *name);

/* A user's fields in Redis, for status output */
struct dovewarden_redis_user {
	enum dovewarden_priority priority;
	time_t last_fast_sync, last_full_sync, last_successful_sync;
	time_t last_verified, last_repaired;
	unsigned int consecutive_failures;
	const char *last_error;
	/* when the user is due, in our clock (0 = not queued) */
	time_t due;
	/* an instance claimed the user */
	bool syncing;
};

/* Read the users' fields (HGETALL-like, for status output). The callback
   gets a user per username (NULL when unknown), in the same order. */
typedef void dovewarden_redis_queue_get_callback_t(
	const struct dovewarden_redis_user *const *users, unsigned int count,
	const char *error, void *context);
int dovewarden_redis_queue_get_users(struct dovewarden_redis_queue *queue,
				     const char *const *usernames,
				     unsigned int count,
				     dovewarden_redis_queue_get_callback_t *callback,
				     void *context);
/* List known usernames: a SSCAN step from cursor ("0" to begin). The
   callback gets a batch and the next cursor ("0" at the end). */
typedef void dovewarden_redis_queue_scan_callback_t(
	const char *const *usernames, unsigned int count,
	const char *next_cursor, const char *error, void *context);
int dovewarden_redis_queue_scan(struct dovewarden_redis_queue *queue,
				const char *cursor,
				dovewarden_redis_queue_scan_callback_t *callback,
				void *context);

/* Read the counts now; the callback gets them or an error. Returns -1
   when not connected. */
typedef void dovewarden_redis_queue_stats_callback_t(
	const struct dovewarden_redis_queue_stats *stats, const char *error,
	void *context);
int dovewarden_redis_queue_read_stats(struct dovewarden_redis_queue *queue,
				      dovewarden_redis_queue_stats_callback_t *callback,
				      void *context);
/* A user of the built-in queue (e.g. restored from its state file), as
   import.lua takes it: the fields of struct dovewarden_user of the same
   names (pending_key is 0 without a pending change) */
struct dovewarden_redis_import_user {
	const char *username, *state, *last_error;
	enum dovewarden_priority priority;
	time_t pending_key, pending_since, last_update;
	time_t last_fast_sync, last_full_sync, last_successful_sync;
	unsigned int consecutive_failures;
	time_t next_try;
	bool force_full_sync;
	time_t settle_first_change, settle_last_change;
	time_t last_verified, last_repaired, first_full_sync;
};

/* Copy a user of the built-in queue into Redis, unless Redis knows the
   user already (then only the user's dsync state of this server is
   added, when Redis has none). The callback gets 1 (imported), 0 (known)
   or -1 with an error. Returns -1 when not connected. */
typedef void dovewarden_redis_queue_import_callback_t(int ret,
						      const char *error,
						      void *context);
int dovewarden_redis_queue_import(struct dovewarden_redis_queue *queue,
				  const struct dovewarden_redis_import_user *user,
				  dovewarden_redis_queue_import_callback_t *callback,
				  void *context);

/* The counts as last read from Redis (refreshed every second) */
void dovewarden_redis_queue_get_stats(struct dovewarden_redis_queue *queue,
				      struct dovewarden_redis_queue_stats *stats_r);
/* Notifications not in Redis yet: users in the buffer, and changes
   dropped because it was full (since start) */
void dovewarden_redis_queue_get_buffer(struct dovewarden_redis_queue *queue,
				       unsigned int *buffered_r,
				       uint64_t *dropped_r);

/* Names and dsync states read from Redis that were invalid and skipped
   (a claimed user with an invalid name is removed from Redis) */
uint64_t
dovewarden_redis_queue_get_invalid_count(struct dovewarden_redis_queue *queue);

#endif
