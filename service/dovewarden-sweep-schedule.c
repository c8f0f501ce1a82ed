/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "dovewarden-protocol.h"
#include "dovewarden-queue-backend.h"
#include "dovewarden-sweep.h"
#include "dovewarden-sweep-schedule.h"
#include "dovewarden-metrics.h"

/* The longest timer; a longer wait is made in steps */
#define SWEEP_SCHEDULE_TIMER_MAX_SECS (60 * 60)

struct dovewarden_sweep_schedule {
	unsigned int interval_secs;
	char *auth_socket_path;
	struct dovewarden_queue_backend *queue;
	struct event *event;
	void (*users_added)(void *context);
	void *context;

	/* the running sweep, or the timer of the next one */
	struct dovewarden_sweep *sweep;
	struct timeout *to;
	time_t next_sweep;
	/* asking for the lock */
	bool locking:1;
	/* the lock could not be asked for: try again when the queue is
	   ready */
	bool waiting_ready:1;
	bool deinitialized:1;
};

static void sweep_schedule_start(struct dovewarden_sweep_schedule *sched);

static void sweep_schedule_timeout(struct dovewarden_sweep_schedule *sched)
{
	timeout_remove(&sched->to);
	if (sched->next_sweep > ioloop_time) {
		sched->to = timeout_add(I_MIN(sched->next_sweep - ioloop_time,
					      SWEEP_SCHEDULE_TIMER_MAX_SECS) *
					1000, sweep_schedule_timeout, sched);
		return;
	}
	sweep_schedule_start(sched);
}

static void
sweep_schedule_after(struct dovewarden_sweep_schedule *sched,
		     unsigned int secs)
{
	timeout_remove(&sched->to);
	sched->next_sweep = ioloop_time + secs;
	sched->to = timeout_add(I_MIN(secs, SWEEP_SCHEDULE_TIMER_MAX_SECS) *
				1000, sweep_schedule_timeout, sched);
}

static bool sweep_schedule_add(const char *username, void *context)
{
	struct dovewarden_sweep_schedule *sched = context;

	return dovewarden_queue_backend_add(sched->queue, username);
}

static void
sweep_schedule_finished(const struct dovewarden_sweep_result *result,
			void *context)
{
	struct dovewarden_sweep_schedule *sched = context;
	unsigned int retry_secs = I_MIN(sched->interval_secs,
					DOVEWARDEN_SWEEP_SCHEDULE_RETRY_SECS);

	sched->sweep = NULL;
	if (result->invalid > 0) {
		e_warning(sched->event, "Userdb sweep: Skipped %u users with "
			  "invalid names (longer than %u bytes or not UTF-8)",
			  result->invalid, DOVEWARDEN_USERNAME_MAX_LENGTH);
	}
	if (result->error != NULL) {
		e_error(sched->event, "Userdb sweep failed after %lld.%03lld "
			"secs (%u users listed, %u new): %s - retrying in %u "
			"secs (dovewarden_userdb_sweep_interval=0 turns "
			"sweeps off)", result->duration_msecs / 1000,
			result->duration_msecs % 1000, result->listed,
			result->added, result->error, retry_secs);
		dovewarden_queue_backend_unlock(sched->queue, "sweep");
		sweep_schedule_after(sched, retry_secs);
	} else {
		e_info(sched->event, "Userdb sweep finished in %lld.%03lld "
		       "secs: %u users listed, %u of them added",
		       result->duration_msecs / 1000,
		       result->duration_msecs % 1000, result->listed,
		       result->added);
		sweep_schedule_after(sched, sched->interval_secs);
	}
	if (result->added > 0)
		sched->users_added(sched->context);
}

static void
sweep_schedule_lock_callback(bool acquired, const char *error, void *context)
{
	struct dovewarden_sweep_schedule *sched = context;

	sched->locking = FALSE;
	if (sched->deinitialized) {
		i_free(sched);
		return;
	}
	if (error != NULL) {
		/* e.g. Redis is not connected: when it is, or later */
		e_debug(sched->event, "Userdb sweep: Couldn't take the lock: "
			"%s", error);
		sched->waiting_ready = TRUE;
		sweep_schedule_after(sched,
			DOVEWARDEN_SWEEP_SCHEDULE_LOCK_RETRY_SECS);
		return;
	}
	if (!acquired) {
		e_debug(sched->event, "Userdb sweep: it ran within "
			"dovewarden_userdb_sweep_interval (on another "
			"instance, or before a restart)");
		dovewarden_metrics_sweep_skipped();
		sweep_schedule_after(sched, sched->interval_secs);
		return;
	}
	e_debug(sched->event, "Userdb sweep started");
	sched->sweep = dovewarden_sweep_start(sweep_schedule_add, sched,
					      sched->auth_socket_path, "*",
					      sched->event,
					      sweep_schedule_finished, sched);
}

static void sweep_schedule_start(struct dovewarden_sweep_schedule *sched)
{
	timeout_remove(&sched->to);
	if (sched->sweep != NULL || sched->locking)
		return;
	sched->waiting_ready = FALSE;
	sched->locking = TRUE;
	/* the lock expires when the next sweep is due */
	dovewarden_queue_backend_try_lock(sched->queue, "sweep",
					  sched->interval_secs,
					  sweep_schedule_lock_callback, sched);
}

struct dovewarden_sweep_schedule *
dovewarden_sweep_schedule_init(unsigned int interval_secs,
			       const char *auth_socket_path,
			       struct dovewarden_queue_backend *queue,
			       struct event *event,
			       void (*users_added)(void *context),
			       void *context)
{
	struct dovewarden_sweep_schedule *sched;

	sched = i_new(struct dovewarden_sweep_schedule, 1);
	sched->interval_secs = interval_secs;
	sched->auth_socket_path = i_strdup(auth_socket_path);
	sched->queue = queue;
	sched->event = event;
	sched->users_added = users_added;
	sched->context = context;
	if (interval_secs > 0) {
		sched->to = timeout_add_short(0, sweep_schedule_timeout,
					      sched);
	}
	return sched;
}

void dovewarden_sweep_schedule_deinit(struct dovewarden_sweep_schedule **_sched)
{
	struct dovewarden_sweep_schedule *sched = *_sched;

	if (sched == NULL)
		return;
	*_sched = NULL;
	if (sched->sweep != NULL) {
		/* cut off: the next start sweeps again */
		dovewarden_sweep_abort(&sched->sweep);
		dovewarden_queue_backend_unlock(sched->queue, "sweep");
	}
	timeout_remove(&sched->to);
	i_free(sched->auth_socket_path);
	if (sched->locking) {
		/* freed by the lock's callback */
		sched->deinitialized = TRUE;
		return;
	}
	i_free(sched);
}

void dovewarden_sweep_schedule_queue_ready(struct dovewarden_sweep_schedule *sched)
{
	if (sched->waiting_ready)
		sweep_schedule_start(sched);
}
