/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "str-sanitize.h"
#include "time-util.h"
#include "dovewarden-settings.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-queue-backend.h"
#include "dovewarden-log-limit.h"
#include "dovewarden-doveadm.h"
#include "dovewarden-userdb.h"
#include "dovewarden-orphans.h"
#include "dovewarden-metrics.h"
#include "dovewarden-replicator.h"

#include <ctype.h>
#include <unistd.h>

/* How much of a username goes into log prefixes */
#define REPLICATOR_LOG_USERNAME_MAX 100
/* One run of the scheduler claims at most this many users, then lets the
   ioloop serve the notifications: users whose sync ends at once (unknown
   to the userdb, noreplicate) would otherwise keep it busy for as long as
   the queue has them */
#define REPLICATOR_FILL_MAX_POPS 100
/* At most this many sync failures are logged per window, whatever the
   users: a dead peer fails every user at once */
#define REPLICATOR_FAILURE_LOG_WINDOW_SECS 60
#define REPLICATOR_FAILURE_LOG_MAX_PER_WINDOW 20
/* An outage: syncs of at least two users failed and none succeeded
   since. While it lasts, one of the users that failed last is tried this
   often regardless of its back-off (see
   REPLICATOR_OUTAGE_PROBE_CANDIDATES), so that the replica's return is noticed
   within seconds; the first success ends the back-off of every user. A
   single user that keeps failing (a broken mailbox) is no outage: it
   keeps its back-off. Only syncs to the global replica count: a user
   whose userdb names another replica says nothing about this one.
   While the outage lasts, syncs to the global replica start at most
   twice per probe interval: the probe, and one other user whose sync is
   due (so that a user whose mailbox is broken, once it is the probe,
   can't keep the others from proving that the replica answers). The
   others are not run but answered as failed at once (their back-off
   grows as if they had run): each would only fail, and each takes a
   doveadm-server process on this server for as long as the replica
   takes to refuse it (a connect timeout when it is silent). */
#define REPLICATOR_OUTAGE_PROBE_MSECS (5 * 1000)
/* The probe is one of the users that failed last, the one probed longest
   ago whose sync is not running: a probe that hangs (e.g. on the user's
   dsync lock, which a process of the replica's previous run still holds
   after a restart) or keeps failing for reasons of its own (a broken
   mailbox) does not keep the others from proving that the replica
   answers. */
#define REPLICATOR_OUTAGE_PROBE_CANDIDATES 8
#define REPLICATOR_OUTAGE_HELD_ERROR \
	"Not tried: the replica is not answering (outage)"

struct replicator_sync {
	struct dovewarden_replicator *replicator;
	struct dovewarden_queue_job *job;
	struct event *event;
	struct dovewarden_doveadm_sync *dsync;
	/* waiting for a previous process's dsync of the user to end */
	struct timeout *to_orphan;

	struct timeval start_time;
	/* dsync destination, kept for the verification pass */
	char *destination;
	/* The state the full sync returned, while its verification pass
	   runs (NULL otherwise) */
	char *full_state;
	/* The state the incremental sync returned, while its follow-up
	   runs (NULL otherwise) */
	char *followup_state;
	bool incremental:1;
	/* the incremental dsync could not use the state: a full one runs
	   instead */
	bool resync:1;
	/* the sync went to the global replica, not to one the userdb set
	   for this user: only these tell whether the replica is down */
	bool global_replica:1;
	/* a dsync of it was started */
	bool dsync_started:1;
};

struct dovewarden_replicator {
	const struct dovewarden_settings *set;
	struct event *event;
	char *doveadm_socket_path;
	char *auth_socket_path;

	struct dovewarden_queue_backend *queue;
	struct dovewarden_doveadm *doveadm;
	struct dovewarden_userdb *userdb;
	struct dovewarden_orphans *orphans;

	/* running syncs, and those waiting for to_orphan (their dsync has
	   not started, but each takes a slot: see dovewarden-orphans.h) */
	ARRAY(struct replicator_sync *) syncs;

	/* username -> when its NOUSER was logged as a warning */
	HASH_TABLE(char *, void *) nouser_logged;

	struct dovewarden_log_limit failure_log_limit;

	struct timeout *to_fill;
	/* the outage's probe, see REPLICATOR_OUTAGE_PROBE_MSECS */
	struct timeout *to_probe;
	/* when the first orphaned dsync stops taking a slot */
	struct timeout *to_orphans;
	/* the user whose sync failed last since the last success (NULL
	   after a success), and when the first of them failed */
	char *last_failed_user;
	time_t failing_since;
	/* the users that failed last since the last success (see
	   REPLICATOR_OUTAGE_PROBE_CANDIDATES), and when each was last
	   probed (0 = not yet); the user the last probe tried */
	struct {
		char *username;
		struct timeval last_probe;
	} probe_candidates[REPLICATOR_OUTAGE_PROBE_CANDIDATES];
	char *probe_user;
	/* during the outage: when the last try of another user than the
	   probe's started */
	struct timeval outage_last_try;
	/* retry_failed() calls waiting for their callback (after deinit the
	   last one frees the replicator) */
	unsigned int retry_requests;
	/* a second user failed since the last success */
	bool outage:1;
	/* to_fill is a 0-ms timeout */
	bool fill_now:1;
	/* a pop is waiting for its callback */
	bool pop_running:1;
	/* replicator_fill() runs: a pop that answers at once is handled by
	   its loop */
	bool filling:1;
	/* the last pop returned a job */
	bool pop_got_job:1;
	/* "No replica configured" was already logged */
	bool no_replica_logged:1;
	bool deinitializing:1;
};

static void replicator_fill_soon(struct dovewarden_replicator *replicator);
static void
replicator_dsync_start(struct replicator_sync *sync, const char *state,
		       bool full);

static const char *
replicator_socket_path(const char *base_dir, const char *path)
{
	if (path[0] == '/')
		return path;
	return t_strconcat(base_dir, "/", path, NULL);
}

static void replicator_nouser_clear(struct dovewarden_replicator *replicator)
{
	struct hash_iterate_context *iter;
	char *username;
	void *value;

	iter = hash_table_iterate_init(replicator->nouser_logged);
	while (hash_table_iterate(iter, replicator->nouser_logged,
				  &username, &value))
		i_free(username);
	hash_table_iterate_deinit(&iter);
	hash_table_clear(replicator->nouser_logged, FALSE);
}

static bool
replicator_failure_log_allowed(struct dovewarden_replicator *replicator)
{
	unsigned int suppressed;

	if (!dovewarden_log_limit_allow(&replicator->failure_log_limit,
					ioloop_time, &suppressed))
		return FALSE;
	if (suppressed > 0) {
		e_warning(replicator->event, "%u more sync failures "
			  "were logged only at debug level", suppressed);
	}
	return TRUE;
}

/* NOUSER makes the queue forget the user, so a user that exists here but
   not in the replica would be warned about at every notification */
static bool
replicator_nouser_log_allowed(struct dovewarden_replicator *replicator,
			      const char *username)
{
	char *key;
	void *value;
	time_t logged;

	if (hash_table_lookup_full(replicator->nouser_logged, username,
				   &key, &value)) {
		logged = (time_t)POINTER_CAST_TO(value, uintptr_t);
		if (logged + DOVEWARDEN_REPLICATOR_NOUSER_LOG_SECS >
		    ioloop_time)
			return FALSE;
		hash_table_update(replicator->nouser_logged, key,
				  POINTER_CAST(ioloop_time));
		return TRUE;
	}
	if (hash_table_count(replicator->nouser_logged) >=
	    DOVEWARDEN_REPLICATOR_NOUSER_LOG_MAX_USERS)
		replicator_nouser_clear(replicator);
	hash_table_insert(replicator->nouser_logged, i_strdup(username),
			  POINTER_CAST(ioloop_time));
	return TRUE;
}

/* Log the first failure of a user, a change of its reason, and every
   Nth repetition, within the global limit */
static bool
replicator_sync_should_log_failure(struct replicator_sync *sync,
				   const char *error)
{
	const struct dovewarden_queue_job *job = sync->job;

	if (job->last_error[0] != '\0' && job->consecutive_failures > 0 &&
	    strcmp(job->last_error, error) == 0 &&
	    (job->consecutive_failures + 1) %
	    DOVEWARDEN_REPLICATOR_FAILURE_LOG_INTERVAL != 0)
		return FALSE;
	return replicator_failure_log_allowed(sync->replicator);
}

/* The kind with its first letter in upper case */
static const char *t_str_ucase_first(const char *str)
{
	char *dup = t_strdup_noconst(str);

	dup[0] = i_toupper(dup[0]);
	return dup;
}

static const char *replicator_sync_kind(struct replicator_sync *sync)
{
	if (sync->job->settle)
		return "settle full";
	if (sync->job->full || sync->resync)
		return "full";
	return sync->incremental ? "incremental" : "normal";
}

static void
replicator_sync_log(struct replicator_sync *sync,
		    enum dovewarden_sync_result result, const char *error,
		    long long duration_usecs)
{
	const struct dovewarden_queue_job *job = sync->job;
	const char *what, *kind = replicator_sync_kind(sync);
	unsigned int failures = job->consecutive_failures + 1;

	struct event_passthrough *e = event_create_passthrough(sync->event)->
		set_name("dovewarden_sync_finished")->
		add_str("priority", dovewarden_priority_to_str(job->priority))->
		add_str("full", job->full || sync->resync ? "yes" : "no")->
		add_str("incremental", sync->incremental ? "yes" : "no")->
		add_str("settle", job->settle ? "yes" : "no")->
		add_str("followup", sync->followup_state != NULL ? "yes" : "no")->
		add_int("duration_usecs", duration_usecs)->
		add_str("result", dovewarden_sync_result_to_str(result));
	if (error != NULL)
		e->add_str("error", error);

	what = t_strdup_printf(
		"%s sync (priority %s) %s after %lld.%03lld secs",
		t_str_ucase_first(kind),
		dovewarden_priority_to_str(job->priority),
		result == DOVEWARDEN_SYNC_RESULT_OK ? "finished" :
		(result == DOVEWARDEN_SYNC_RESULT_CHANGED ?
		 "finished with changes during the sync" : "failed"),
		duration_usecs / 1000000, (duration_usecs / 1000) % 1000);
	if (sync->followup_state != NULL && result != DOVEWARDEN_SYNC_RESULT_OK)
		what = t_strconcat(what, " in its follow-up", NULL);

	switch (result) {
	case DOVEWARDEN_SYNC_RESULT_OK:
	case DOVEWARDEN_SYNC_RESULT_CHANGED:
		e_debug(e->event(), "%s", what);
		break;
	case DOVEWARDEN_SYNC_RESULT_TEMPFAIL:
		if (replicator_sync_should_log_failure(sync, error)) {
			e_warning(e->event(), "%s: %s (%u failures in a row, "
				  "retrying with back-off)",
				  what, error, failures);
		} else {
			e_debug(e->event(), "%s: %s", what, error);
		}
		break;
	case DOVEWARDEN_SYNC_RESULT_NOUSER:
		if (replicator_nouser_log_allowed(sync->replicator,
						  job->username) &&
		    replicator_failure_log_allowed(sync->replicator)) {
			e_warning(e->event(), "%s: %s (forgetting the user)",
				  what, error);
		} else {
			e_debug(e->event(), "%s: %s", what, error);
		}
		break;
	case DOVEWARDEN_SYNC_RESULT_CONFIG:
		if (replicator_sync_should_log_failure(sync, error)) {
			e_error(e->event(), "%s: %s (%u failures in a row)",
				what, error, failures);
		} else {
			e_debug(e->event(), "%s: %s", what, error);
		}
		break;
	}
}

static void replicator_sync_free(struct replicator_sync *sync)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	struct replicator_sync *const *syncp;

	array_foreach(&replicator->syncs, syncp) {
		if (*syncp == sync) {
			array_delete(&replicator->syncs,
				     array_foreach_idx(&replicator->syncs,
						       syncp), 1);
			break;
		}
	}
	event_unref(&sync->event);
	i_free(sync->destination);
	i_free(sync->full_state);
	i_free(sync->followup_state);
	i_free(sync);
}

/* Returns FALSE when the replicator was deinitialized (and is freed now
   if this was the last request) */
static bool replicator_retry_done(struct dovewarden_replicator *replicator)
{
	i_assert(replicator->retry_requests > 0);
	replicator->retry_requests--;
	if (!replicator->deinitializing)
		return TRUE;
	if (replicator->retry_requests == 0 && !replicator->pop_running)
		i_free(replicator);
	return FALSE;
}

static void
replicator_retry_callback(unsigned int count, const char *error,
			  void *context)
{
	struct dovewarden_replicator *replicator = context;

	if (!replicator_retry_done(replicator))
		return;
	if (error != NULL) {
		e_warning(replicator->event, "Couldn't end the users' "
			  "back-off after the outage (they are synced when "
			  "it ends): %s", error);
		return;
	}
	if (count > 0) {
		e_info(replicator->event, "The replica answers again: "
		       "syncing the %u users in failure back-off now", count);
		dovewarden_metrics_outage_retries(count);
	}
	replicator_fill_soon(replicator);
}

static void
replicator_probe_callback(unsigned int count, const char *error ATTR_UNUSED,
			  void *context)
{
	struct dovewarden_replicator *replicator = context;

	if (replicator_retry_done(replicator) && count > 0)
		replicator_fill_soon(replicator);
}

static bool
replicator_user_syncing(struct dovewarden_replicator *replicator,
			const char *username)
{
	struct replicator_sync *sync;

	array_foreach_elem(&replicator->syncs, sync) {
		if (strcmp(sync->job->username, username) == 0)
			return TRUE;
	}
	return FALSE;
}

static void
replicator_probe_candidates_clear(struct dovewarden_replicator *replicator)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(replicator->probe_candidates); i++)
		i_free(replicator->probe_candidates[i].username);
	i_zero(&replicator->probe_candidates);
	i_free(replicator->probe_user);
}

/* A sync of username to the global replica failed: it becomes a
   candidate for the probe, in place of the one probed longest ago */
static void
replicator_probe_candidate_add(struct dovewarden_replicator *replicator,
			       const char *username)
{
	unsigned int i, oldest = 0;

	for (i = 0; i < N_ELEMENTS(replicator->probe_candidates); i++) {
		if (replicator->probe_candidates[i].username == NULL) {
			oldest = i;
			break;
		}
		if (strcmp(replicator->probe_candidates[i].username,
			   username) == 0)
			return;
		if (timeval_cmp(&replicator->probe_candidates[i].last_probe,
				&replicator->probe_candidates[oldest].last_probe) < 0)
			oldest = i;
	}
	i_free(replicator->probe_candidates[oldest].username);
	replicator->probe_candidates[oldest].username = i_strdup(username);
	i_zero(&replicator->probe_candidates[oldest].last_probe);
}

static void replicator_probe(struct dovewarden_replicator *replicator)
{
	unsigned int i, best = UINT_MAX;
	const char *username;

	for (i = 0; i < N_ELEMENTS(replicator->probe_candidates); i++) {
		username = replicator->probe_candidates[i].username;
		if (username == NULL ||
		    replicator_user_syncing(replicator, username))
			continue;
		if (best == UINT_MAX ||
		    timeval_cmp(&replicator->probe_candidates[i].last_probe,
				&replicator->probe_candidates[best].last_probe) < 0)
			best = i;
	}
	if (best == UINT_MAX) {
		/* every candidate's sync still runs */
		return;
	}
	username = replicator->probe_candidates[best].username;
	replicator->probe_candidates[best].last_probe = ioloop_timeval;
	i_free(replicator->probe_user);
	replicator->probe_user = i_strdup(username);
	e_debug(replicator->event, "Outage: trying %s despite its back-off",
		str_sanitize(username, REPLICATOR_LOG_USERNAME_MAX));
	replicator->retry_requests++;
	dovewarden_queue_backend_retry_failed(replicator->queue, username,
					      replicator_probe_callback,
					      replicator);
}

static void
replicator_outage_update(struct dovewarden_replicator *replicator,
			 const char *username,
			 enum dovewarden_sync_result result)
{
	switch (result) {
	case DOVEWARDEN_SYNC_RESULT_OK:
		timeout_remove(&replicator->to_probe);
		if (replicator->outage) {
			e_debug(replicator->event, "Outage of %lld secs "
				"ended", (long long)(ioloop_time -
						     replicator->failing_since));
			replicator->retry_requests++;
			dovewarden_queue_backend_retry_failed(
				replicator->queue, NULL,
				replicator_retry_callback, replicator);
		}
		i_free(replicator->last_failed_user);
		replicator_probe_candidates_clear(replicator);
		replicator->outage = FALSE;
		break;
	case DOVEWARDEN_SYNC_RESULT_TEMPFAIL:
		if (replicator->last_failed_user == NULL)
			replicator->failing_since = ioloop_time;
		else if (strcmp(replicator->last_failed_user, username) != 0)
			replicator->outage = TRUE;
		i_free(replicator->last_failed_user);
		replicator->last_failed_user = i_strdup(username);
		replicator_probe_candidate_add(replicator, username);
		if (replicator->outage && replicator->to_probe == NULL) {
			replicator->to_probe = timeout_add(
				REPLICATOR_OUTAGE_PROBE_MSECS,
				replicator_probe, replicator);
		}
		break;
	case DOVEWARDEN_SYNC_RESULT_CHANGED:
	case DOVEWARDEN_SYNC_RESULT_NOUSER:
	case DOVEWARDEN_SYNC_RESULT_CONFIG:
		/* say nothing about the replica */
		break;
	}
}

/* Finish a sync that was started; frees it. */
static void
replicator_sync_finish(struct replicator_sync *sync,
		       enum dovewarden_sync_result result,
		       const char *new_state, const char *error,
		       bool repaired)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	long long duration_usecs;

	if (result != DOVEWARDEN_SYNC_RESULT_OK && error == NULL)
		error = dovewarden_sync_result_to_str(result);
	duration_usecs = timeval_diff_usecs(&ioloop_timeval, &sync->start_time);
	replicator_sync_log(sync, result, error, duration_usecs);
	dovewarden_metrics_sync_finished(result, duration_usecs, ioloop_time);
	if (sync->global_replica)
		replicator_outage_update(replicator, sync->job->username,
					 result);

	/* the waits are answered from the queue's sync_done */
	sync->job->no_dsync = !sync->dsync_started;
	dovewarden_queue_backend_finish(&sync->job, result, new_state, error,
					repaired);
	replicator_sync_free(sync);
	replicator_fill_soon(replicator);
}

/* The user is dropped without a sync: replication is off for it. */
/* Finish a sync whose dsync never ran; frees it. Unlike
   replicator_sync_finish() it says nothing about the replica. */
static void
replicator_sync_answer(struct replicator_sync *sync,
		       enum dovewarden_sync_result result, const char *error)
{
	struct dovewarden_replicator *replicator = sync->replicator;

	sync->job->no_dsync = !sync->dsync_started;
	dovewarden_queue_backend_finish(&sync->job, result, NULL, error,
					FALSE);
	replicator_sync_free(sync);
	replicator_fill_soon(replicator);
}

static void replicator_sync_skip(struct replicator_sync *sync,
				 const char *reason)
{
	e_debug(sync->event, "Not replicating: %s", reason);
	replicator_sync_answer(sync, DOVEWARDEN_SYNC_RESULT_NOUSER, reason);
}

/* During an outage: whether this sync to the global replica may run as
   one of the outage's tries (see REPLICATOR_OUTAGE_PROBE_MSECS) */
static bool replicator_outage_may_try(struct dovewarden_replicator *replicator,
				      const char *username)
{
	/* the probe: replicator_probe() made its user due, once */
	if (replicator->probe_user != NULL &&
	    strcmp(replicator->probe_user, username) == 0) {
		i_free(replicator->probe_user);
		return TRUE;
	}
	if (timeval_diff_msecs(&ioloop_timeval,
			       &replicator->outage_last_try) <
	    REPLICATOR_OUTAGE_PROBE_MSECS)
		return FALSE;
	replicator->outage_last_try = ioloop_timeval;
	return TRUE;
}

/* The replica is down: the sync is answered as failed without running
   it, and the user stays in back-off until the outage ends */
static void replicator_sync_hold(struct replicator_sync *sync)
{
	struct dovewarden_replicator *replicator = sync->replicator;

	e_debug(sync->event, "Not syncing now: the replica has not answered "
		"for %lld secs", (long long)(ioloop_time -
					     replicator->failing_since));
	dovewarden_metrics_outage_held();
	replicator_sync_answer(sync, DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
			       REPLICATOR_OUTAGE_HELD_ERROR);
}

/* A dsync of username ended without the service seeing what it did
   (dovewarden_orphans_take_interrupted()): the user gets a settle full
   sync once it is quiet, like a user changed on both servers (a full sync
   at once would be repeated at each of many restarts) */
static void replicator_interrupted(const char *username, void *context)
{
	struct dovewarden_replicator *replicator = context;

	e_debug(replicator->event, "%s: its last dsync was interrupted: "
		"settling it", str_sanitize(username,
					    REPLICATOR_LOG_USERNAME_MAX));
	dovewarden_queue_backend_notify(replicator->queue, username,
					DOVEWARDEN_PRIORITY_LOW, 0);
}

static void
replicator_dsync_ended(struct replicator_sync *sync,
		       const struct dovewarden_doveadm_sync_reply *reply)
{
	if (reply->may_still_run) {
		/* timed out: until it ends, it holds doveadm-server
		   processes and the user's lock like a dsync of a previous
		   service process */
		dovewarden_orphans_abandoned(sync->replicator->orphans,
					     sync->job->username);
		replicator_interrupted(sync->job->username, sync->replicator);
	} else {
		dovewarden_orphans_ended(sync->replicator->orphans,
					 sync->job->username);
	}
}

/* The verification pass after a full sync ended. dsync's state holds
   the modseqs each side had when the sync began, so a full sync that
   changed something returns the same state as before, and only the
   next sync's state shows the change: an incremental sync that returns
   the full sync's state unchanged proves that the full sync changed
   nothing. */
static void
replicator_verify_callback(const struct dovewarden_doveadm_sync_reply *reply,
			   void *context)
{
	struct replicator_sync *sync = context;
	const char *state = sync->full_state;
	bool repaired = FALSE;

	sync->dsync = NULL;
	replicator_dsync_ended(sync, reply);
	if (reply->result == DOVEWARDEN_SYNC_RESULT_OK &&
	    reply->state[0] != '\0') {
		/* a change notified meanwhile would move the state too */
		repaired = strcmp(reply->state, sync->full_state) != 0 &&
			!dovewarden_queue_backend_job_changed(sync->job);
		state = reply->state;
	}
	if (!dovewarden_queue_backend_job_removed(sync->job)) {
		dovewarden_metrics_verification(repaired);
		e_debug(sync->event, "%s: %s",
			sync->job->settle ? "Settle" : "Verification",
			repaired ? "the servers differed and were "
			"repaired" : "the servers were the same");
	}
	replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_OK, state, NULL,
			       repaired);
}

/* The follow-up incremental sync ended (see
   dovewarden_queue_backend_job_take_state_stale()) */
static void
replicator_followup_callback(const struct dovewarden_doveadm_sync_reply *reply,
			     void *context)
{
	struct replicator_sync *sync = context;

	sync->dsync = NULL;
	replicator_dsync_ended(sync, reply);
	/* Whether it carried something can't be told: the first sync's
	   state has the modseqs of its start, so its own changes move the
	   next state anyway. A failed follow-up fails the sync: the user
	   keeps its old state and its changes, and the retry runs both
	   again. */
	if (reply->result == DOVEWARDEN_SYNC_RESULT_OK)
		dovewarden_metrics_followup();
	replicator_sync_finish(sync, reply->result,
			       reply->state[0] != '\0' ? reply->state :
			       sync->followup_state, reply->error, FALSE);
}

static void
replicator_dsync_callback(const struct dovewarden_doveadm_sync_reply *reply,
			  void *context)
{
	struct replicator_sync *sync = context;

	sync->dsync = NULL;
	replicator_dsync_ended(sync, reply);
	if (reply->needs_full_sync && !sync->resync &&
	    !dovewarden_queue_backend_job_removed(sync->job)) {
		/* e.g. the state of a sync whose result a restart lost is
		   older than the transaction logs: retried with it, the sync
		   would only fail again after its back-off */
		e_debug(sync->event, "Incremental sync failed: %s: dsync "
			"can't use the state, running a full sync instead",
			reply->error);
		sync->resync = TRUE;
		replicator_dsync_start(sync, sync->job->state, TRUE);
		return;
	}
	if (sync->job->full && sync->job->settle &&
	    sync->job->priority != DOVEWARDEN_PRIORITY_NONE &&
	    reply->result == DOVEWARDEN_SYNC_RESULT_OK &&
	    !dovewarden_queue_backend_job_removed(sync->job)) {
		/* a settle that also replicated new changes: they move the
		   state as a repair does, so a verification pass can't tell
		   anything. The changes made on both servers at about the
		   same time that it settled are where one dsync pass may
		   leave a difference (e.g. a flag, under a busy load):
		   another settle follows once the user is quiet, as after
		   a repair, and that one is verified. Also when this
		   server has no dsync state of the user yet: with the Redis
		   queue the other server's instance may have run all its
		   syncs before. */
		e_debug(sync->event, "Settle not verified: it carried new "
			"changes too: another settle follows");
		replicator_sync_finish(sync, reply->result, reply->state,
				       reply->error, TRUE);
		return;
	}
	if (sync->job->full && sync->incremental &&
	    reply->result == DOVEWARDEN_SYNC_RESULT_OK &&
	    reply->state[0] != '\0' &&
	    !dovewarden_queue_backend_job_removed(sync->job)) {
		/* a full sync of a user that was synced before: run the
		   verification pass (a first sync always changes things) */
		sync->full_state = i_strdup(reply->state);
		replicator_dsync_start(sync, sync->full_state, FALSE);
		return;
	}
	if (!sync->job->full && !sync->resync && sync->incremental &&
	    reply->result == DOVEWARDEN_SYNC_RESULT_OK &&
	    reply->state[0] != '\0' &&
	    !dovewarden_queue_backend_job_removed(sync->job) &&
	    dovewarden_queue_backend_job_take_state_stale(sync->job)) {
		/* the other server may have synced the user after this
		   server's state was saved: this dsync may have missed
		   changes made here to what that sync brought, and a
		   second one with the new state carries them */
		e_debug(sync->event, "Follow-up incremental sync: the state "
			"may be older than a sync from the other server");
		sync->followup_state = i_strdup(reply->state);
		replicator_dsync_start(sync, sync->followup_state, FALSE);
		return;
	}
	replicator_sync_finish(sync, reply->result, reply->state,
			       reply->error, FALSE);
}

static void
replicator_dsync_start(struct replicator_sync *sync, const char *state,
		       bool full)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	struct dovewarden_doveadm_sync_settings dset;

	i_zero(&dset);
	dset.socket_path = replicator->doveadm_socket_path;
	dset.username = sync->job->username;
	dset.state = state;
	dset.destination = sync->destination;
	dset.lock_timeout_secs = replicator->set->dovewarden_lock_timeout;
	dset.timeout_msecs = replicator->set->dovewarden_sync_timeout * 1000;
	dset.io_timeout_secs = replicator->set->dovewarden_sync_timeout;
	dset.full = full;
	sync->dsync_started = TRUE;
	dovewarden_orphans_started(replicator->orphans, sync->job->username);
	sync->dsync = dovewarden_doveadm_sync_start(
		replicator->doveadm, &dset, sync->event,
		sync->full_state != NULL ? replicator_verify_callback :
		sync->followup_state != NULL ? replicator_followup_callback :
		replicator_dsync_callback, sync);
}

static void replicator_sync_run(struct replicator_sync *sync)
{
	e_debug(sync->event, "Starting %s sync (priority %s) to %s",
		replicator_sync_kind(sync),
		dovewarden_priority_to_str(sync->job->priority),
		sync->destination);
	replicator_dsync_start(sync, sync->job->state, sync->job->full);
}

static void replicator_sync_orphan_ended(struct replicator_sync *sync)
{
	timeout_remove(&sync->to_orphan);
	replicator_sync_run(sync);
}

/* A previous service process started a dsync of the user that may still
   run in doveadm-server (see dovewarden-orphans.h): wait for it instead
   of starting a second one at once. Returns TRUE when waiting. */
static bool replicator_sync_wait_orphan(struct replicator_sync *sync)
{
	struct dovewarden_replicator *replicator = sync->replicator;
	time_t until;

	until = dovewarden_orphans_wait_until(replicator->orphans,
					      sync->job->username);
	if (until <= ioloop_time)
		return FALSE;
	e_debug(sync->event, "Waiting %lld secs for the dsync a previous "
		"service process started (it may still run in "
		"doveadm-server)", (long long)(until - ioloop_time));
	sync->to_orphan = timeout_add((until - ioloop_time) * 1000,
				      replicator_sync_orphan_ended, sync);
	return TRUE;
}

static void
replicator_sync_begin(struct dovewarden_replicator *replicator,
		      struct replicator_sync *sync)
{
	struct dovewarden_userdb_info info;
	const char *replica, *dest, *error;
	int ret;

	ret = dovewarden_userdb_lookup(replicator->userdb, sync->job->username,
				       &info, &error);
	if (ret < 0) {
		replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
				       NULL, error, FALSE);
		return;
	}
	if (ret == 0) {
		replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_NOUSER,
				       NULL, "User not found in userdb", FALSE);
		return;
	}
	if (info.noreplicate) {
		replicator_sync_skip(sync, "noreplicate set in userdb");
		return;
	}
	if (info.canonical != NULL &&
	    dovewarden_username_is_valid(info.canonical)) {
		/* e.g. ALICE when auth_username_format lowercases: the queue
		   keeps the userdb's name only, so that aliases don't sync
		   the same mailbox separately. A full sync stays full: a
		   shared queue claims changes made on another server (or on
		   both) as one, and only a full sync from here carries
		   them. */
		dovewarden_replicator_notify(replicator, info.canonical,
			sync->job->priority, !sync->job->full ? 0 :
			DOVEWARDEN_QUEUE_NOTIFY_FLAG_FULL_SYNC);
		replicator_sync_skip(sync, t_strdup_printf(
			"the userdb calls the user %s, which is replicated "
			"instead", str_sanitize(info.canonical,
						REPLICATOR_LOG_USERNAME_MAX)));
		return;
	}

	replica = info.replica != NULL ? info.replica :
		dovewarden_settings_get_replica(replicator->set);
	if (replica[0] == '\0') {
		if (!replicator->no_replica_logged) {
			e_error(replicator->event, "No replica configured: "
				"set dovewarden_replica (or mail_replica) "
				"globally or in the userdb");
			replicator->no_replica_logged = TRUE;
		}
		replicator_sync_skip(sync, "No replica configured");
		return;
	}
	if (dovewarden_replica_parse(replica, &dest, &error) < 0) {
		replicator_sync_finish(sync, DOVEWARDEN_SYNC_RESULT_CONFIG,
				       NULL, error, FALSE);
		return;
	}

	sync->destination = i_strdup(dest);
	sync->global_replica = info.replica == NULL;
	if (sync->global_replica && replicator->outage &&
	    !replicator_outage_may_try(replicator, sync->job->username)) {
		replicator_sync_hold(sync);
		return;
	}
	if (replicator_sync_wait_orphan(sync))
		return;
	replicator_sync_run(sync);
}

static void
replicator_sync_start(struct dovewarden_replicator *replicator,
		      struct dovewarden_queue_job *job)
{
	struct replicator_sync *sync;

	sync = i_new(struct replicator_sync, 1);
	sync->replicator = replicator;
	sync->job = job;
	sync->start_time = ioloop_timeval;
	sync->incremental = job->state[0] != '\0';
	sync->event = event_create(replicator->event);
	event_add_str(sync->event, "user", job->username);
	event_set_append_log_prefix(sync->event, t_strdup_printf(
		"%s: ", str_sanitize(job->username,
				     REPLICATOR_LOG_USERNAME_MAX)));
	array_push_back(&replicator->syncs, &sync);

	replicator_sync_begin(replicator, sync);
}

/* The running syncs that are background work (see
   DOVEWARDEN_QUEUE_BACKGROUND_MAX_PRIORITY) */
static unsigned int
replicator_background_running(struct dovewarden_replicator *replicator)
{
	struct replicator_sync *sync;
	unsigned int count = 0;

	array_foreach_elem(&replicator->syncs, sync) {
		if (dovewarden_queue_priority_is_background(sync->job->priority))
			count++;
	}
	return count;
}

static void replicator_fill(struct dovewarden_replicator *replicator);

static void replicator_orphans_ended(struct dovewarden_replicator *replicator)
{
	timeout_remove(&replicator->to_orphans);
	replicator_fill_soon(replicator);
}

/* The slots taken: running syncs and the dsyncs of previous processes
   that may still run (see dovewarden-orphans.h) */
static unsigned int
replicator_slots_used(struct dovewarden_replicator *replicator)
{
	unsigned int orphans;
	time_t next_end;

	orphans = dovewarden_orphans_count(replicator->orphans, &next_end);
	if (orphans > 0 && replicator->to_orphans == NULL) {
		replicator->to_orphans = timeout_add(
			(next_end - ioloop_time) * 1000,
			replicator_orphans_ended, replicator);
	}
	/* a sync waiting for an orphan counts in syncs: the orphan's
	   record no longer counts */
	return array_count(&replicator->syncs) + orphans;
}

static void
replicator_pop_callback(struct dovewarden_queue_job *job, int retry_msecs,
			const char *error, void *context)
{
	struct dovewarden_replicator *replicator = context;

	replicator->pop_running = FALSE;
	if (replicator->deinitializing) {
		/* the backend's deinit fails the pop that was in flight;
		   everything but this struct is gone already */
		if (job != NULL)
			dovewarden_queue_backend_release(&job);
		if (replicator->retry_requests == 0)
			i_free(replicator);
		return;
	}
	replicator->pop_got_job = job != NULL;
	if (job == NULL) {
		if (error != NULL) {
			e_debug(replicator->event, "Claiming a user failed: "
				"%s", error);
		}
		/* a finished sync's refill (fill_now) goes first */
		if (retry_msecs >= 0 && !replicator->fill_now) {
			timeout_remove(&replicator->to_fill);
			replicator->to_fill = timeout_add(retry_msecs,
				replicator_fill, replicator);
		}
		return;
	}
	T_BEGIN {
		replicator_sync_start(replicator, job);
	} T_END;
	if (!replicator->filling)
		replicator_fill_soon(replicator);
}

static void replicator_fill(struct dovewarden_replicator *replicator)
{
	unsigned int pops = 0;
	bool allow_background;

	timeout_remove(&replicator->to_fill);
	replicator->fill_now = FALSE;

	replicator->filling = TRUE;
	while (!replicator->pop_running &&
	       replicator_slots_used(replicator) <
	       replicator->set->dovewarden_max_syncs) {
		if (++pops > REPLICATOR_FILL_MAX_POPS) {
			replicator->filling = FALSE;
			replicator_fill_soon(replicator);
			return;
		}
		allow_background = replicator_background_running(replicator) <
			dovewarden_queue_background_slots(
				replicator->set->dovewarden_max_syncs);
		replicator->pop_running = TRUE;
		replicator->pop_got_job = FALSE;
		dovewarden_queue_backend_pop(replicator->queue,
					     allow_background,
					     replicator_pop_callback,
					     replicator);
		if (replicator->pop_running || !replicator->pop_got_job) {
			/* the answer comes later, or nothing is due now */
			break;
		}
		if (replicator->fill_now) {
			/* a sync finished at once and asked for a refill:
			   keep going in this loop instead */
			timeout_remove(&replicator->to_fill);
			replicator->fill_now = FALSE;
		}
	}
	replicator->filling = FALSE;
}

static void replicator_fill_soon(struct dovewarden_replicator *replicator)
{
	if (replicator->fill_now || replicator->deinitializing)
		return;
	timeout_remove(&replicator->to_fill);
	replicator->to_fill = timeout_add_short(0, replicator_fill, replicator);
	replicator->fill_now = TRUE;
}

struct dovewarden_replicator *
dovewarden_replicator_init(const struct dovewarden_settings *set,
			   const char *base_dir, const char *orphans_path,
			   struct dovewarden_queue_backend *queue,
			   struct event *event_parent)
{
	struct dovewarden_replicator *replicator;

	replicator = i_new(struct dovewarden_replicator, 1);
	replicator->set = set;
	replicator->queue = queue;
	replicator->event = event_create(event_parent);
	replicator->failure_log_limit.window_secs =
		REPLICATOR_FAILURE_LOG_WINDOW_SECS;
	replicator->failure_log_limit.max_per_window =
		REPLICATOR_FAILURE_LOG_MAX_PER_WINDOW;
	replicator->doveadm_socket_path = i_strdup(replicator_socket_path(
		base_dir, set->dovewarden_doveadm_socket_path));
	replicator->auth_socket_path = i_strdup(replicator_socket_path(
		base_dir, set->dovewarden_auth_socket_path));
	replicator->doveadm = dovewarden_doveadm_init();
	replicator->userdb = dovewarden_userdb_init(
		replicator->auth_socket_path,
		DOVEWARDEN_REPLICATOR_USERDB_TIMEOUT_MSECS,
		DOVEWARDEN_REPLICATOR_USERDB_CACHE_SECS, replicator->event);
	/* the service is a child of the Dovecot master */
	replicator->orphans = dovewarden_orphans_init(orphans_path, getppid(),
		dovewarden_orphans_process_started(getppid()),
		replicator->event);
	dovewarden_orphans_take_interrupted(replicator->orphans,
					    replicator_interrupted,
					    replicator);
	i_array_init(&replicator->syncs, set->dovewarden_max_syncs);
	hash_table_create(&replicator->nouser_logged, default_pool, 0,
			  str_hash, strcmp);
	/* the loaded users may be due already */
	replicator_fill_soon(replicator);
	return replicator;
}

void dovewarden_replicator_deinit(struct dovewarden_replicator **_replicator)
{
	struct dovewarden_replicator *replicator = *_replicator;
	struct replicator_sync *sync;

	if (replicator == NULL)
		return;
	*_replicator = NULL;

	replicator->deinitializing = TRUE;
	timeout_remove(&replicator->to_fill);
	timeout_remove(&replicator->to_probe);
	timeout_remove(&replicator->to_orphans);
	while (array_count(&replicator->syncs) > 0) {
		sync = array_idx_elem(&replicator->syncs, 0);
		e_debug(sync->event, "Aborting sync: shutting down");
		/* its dsync goes on in doveadm-server: it stays recorded
		   as started for the next process */
		dovewarden_doveadm_sync_abort(&sync->dsync);
		timeout_remove(&sync->to_orphan);
		/* not a failure: the user is synced again soon after the
		   restart, without back-off */
		dovewarden_queue_backend_release(&sync->job);
		replicator_sync_free(sync);
	}
	dovewarden_doveadm_deinit(&replicator->doveadm);
	dovewarden_userdb_deinit(&replicator->userdb);
	dovewarden_orphans_deinit(&replicator->orphans);
	array_free(&replicator->syncs);
	replicator_nouser_clear(replicator);
	hash_table_destroy(&replicator->nouser_logged);
	event_unref(&replicator->event);
	i_free(replicator->auth_socket_path);
	i_free(replicator->doveadm_socket_path);
	i_free(replicator->last_failed_user);
	replicator_probe_candidates_clear(replicator);
	/* a pending callback frees it */
	if (replicator->retry_requests == 0 && !replicator->pop_running)
		i_free(replicator);
}

void dovewarden_replicator_notify(struct dovewarden_replicator *replicator,
				  const char *username,
				  enum dovewarden_priority priority,
				  enum dovewarden_queue_notify_flags flags)
{
	dovewarden_queue_backend_notify(replicator->queue, username, priority,
					flags);
	replicator_fill_soon(replicator);
}

void
dovewarden_replicator_queue_changed(struct dovewarden_replicator *replicator)
{
	replicator_fill_soon(replicator);
}

unsigned int
dovewarden_replicator_get_running_count(
	struct dovewarden_replicator *replicator)
{
	return array_count(&replicator->syncs);
}

static int
replicator_dsync_status_cmp(const struct dovewarden_admin_dsync_status *s1,
			    const struct dovewarden_admin_dsync_status *s2)
{
	return strcmp(s1->username, s2->username);
}

void dovewarden_replicator_get_dsync_status(
	struct dovewarden_replicator *replicator,
	ARRAY_TYPE(dovewarden_admin_dsync_status) *statuses)
{
	struct dovewarden_admin_dsync_status *status;
	struct replicator_sync *sync;

	array_foreach_elem(&replicator->syncs, sync) {
		if (dovewarden_queue_backend_job_removed(sync->job))
			continue;
		status = array_append_space(statuses);
		status->username = t_strdup(sync->job->username);
		status->type = sync->job->full ? "full" :
			(sync->incremental ? "incremental" : "normal");
		status->state = sync->to_orphan != NULL ?
			"waiting for a previous process's dsync" :
			(sync->dsync == NULL ? "looking up the user" :
			 dovewarden_doveadm_sync_get_state(sync->dsync));
		status->running_secs =
			ioloop_time <= sync->start_time.tv_sec ? 0 :
			(unsigned int)(ioloop_time - sync->start_time.tv_sec);
	}
	array_sort(statuses, replicator_dsync_status_cmp);
}
