/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "llist.h"
#include "ioloop.h"
#include "dovewarden-sync-wait.h"

struct dovewarden_sync_wait {
	struct dovewarden_sync_wait *prev, *next;
	struct dovewarden_sync_waits *waits;

	char *username;
	unsigned int id;
	/* answered by a sync whose sequence is higher than seq, once that
	   is known; until then the highest successful one seen */
	uint64_t seq, ok_seq_seen;
	bool seq_known;
	struct timeout *to;
	dovewarden_sync_wait_callback_t *callback;
	void *context;
};

struct dovewarden_sync_waits {
	struct dovewarden_queue_backend *queue;
	struct dovewarden_sync_wait *waits;
	unsigned int id_counter;
};

/* What the backend's notify_wait() callback gets: the wait may be gone
   (answered, timed out, cancelled) when it is called */
struct sync_wait_ref {
	struct dovewarden_sync_waits *waits;
	unsigned int id;
};

struct dovewarden_sync_waits *
dovewarden_sync_waits_init(struct dovewarden_queue_backend *queue)
{
	struct dovewarden_sync_waits *waits;

	waits = i_new(struct dovewarden_sync_waits, 1);
	waits->queue = queue;
	return waits;
}

static void sync_wait_free(struct dovewarden_sync_wait *wait)
{
	DLLIST_REMOVE(&wait->waits->waits, wait);
	timeout_remove(&wait->to);
	i_free(wait->username);
	i_free(wait);
}

static void
sync_wait_answer(struct dovewarden_sync_wait *wait, bool success,
		 const char *reason)
{
	dovewarden_sync_wait_callback_t *callback = wait->callback;
	void *context = wait->context;

	sync_wait_free(wait);
	callback(success, reason, context);
}

void dovewarden_sync_waits_deinit(struct dovewarden_sync_waits **_waits)
{
	struct dovewarden_sync_waits *waits = *_waits;

	if (waits == NULL)
		return;
	*_waits = NULL;
	while (waits->waits != NULL) {
		sync_wait_answer(waits->waits, FALSE,
				 "Replication service shutting down");
	}
	i_free(waits);
}

void dovewarden_sync_waits_sync_done(struct dovewarden_sync_waits *waits,
				     const char *username, uint64_t seq,
				     enum dovewarden_sync_result result,
				     const char *error)
{
	struct dovewarden_sync_wait *wait, *next;
	bool success = FALSE;

	switch (result) {
	case DOVEWARDEN_SYNC_RESULT_OK:
		success = TRUE;
		break;
	case DOVEWARDEN_SYNC_RESULT_CHANGED:
	case DOVEWARDEN_SYNC_RESULT_TEMPFAIL:
		/* no answer: the retry is. New mail is acknowledged only
		   once replicated or after the timeout, also while the peer
		   is down. */
		return;
	case DOVEWARDEN_SYNC_RESULT_NOUSER:
	case DOVEWARDEN_SYNC_RESULT_CONFIG:
		break;
	}
	if (error == NULL && !success) {
		error = t_strdup_printf("Sync failed (%s)",
					dovewarden_sync_result_to_str(result));
	}
	for (wait = waits->waits; wait != NULL; wait = next) {
		next = wait->next;
		if (strcmp(wait->username, username) != 0)
			continue;
		if (!wait->seq_known) {
			if (success && seq > wait->ok_seq_seen)
				wait->ok_seq_seen = seq;
		} else if (seq > wait->seq) {
			sync_wait_answer(wait, success, success ? NULL : error);
		}
	}
}

static void sync_wait_answer_ok(struct dovewarden_sync_wait *wait)
{
	sync_wait_answer(wait, TRUE, NULL);
}

static void sync_wait_seq_callback(bool success, uint64_t seq, void *context)
{
	struct sync_wait_ref *ref = context;
	struct dovewarden_sync_wait *wait;

	for (wait = ref->waits->waits; wait != NULL; wait = wait->next) {
		if (wait->id == ref->id)
			break;
	}
	i_free(ref);
	if (wait == NULL || !success)
		return;
	wait->seq = seq;
	wait->seq_known = TRUE;
	if (wait->ok_seq_seen > seq) {
		/* answered before the seq arrived; never from within
		   dovewarden_sync_wait_start() */
		timeout_remove(&wait->to);
		wait->to = timeout_add_short(0, sync_wait_answer_ok, wait);
	}
}

static void sync_wait_timeout(struct dovewarden_sync_wait *wait)
{
	sync_wait_answer(wait, FALSE, "Timed out waiting for sync");
}

struct dovewarden_sync_wait *
dovewarden_sync_wait_start(struct dovewarden_sync_waits *waits,
			   const char *username, unsigned int timeout_msecs,
			   enum dovewarden_queue_notify_flags flags,
			   dovewarden_sync_wait_callback_t *callback,
			   void *context)
{
	struct dovewarden_sync_wait *wait;
	struct sync_wait_ref *ref;

	wait = i_new(struct dovewarden_sync_wait, 1);
	wait->waits = waits;
	wait->username = i_strdup(username);
	wait->callback = callback;
	wait->context = context;
	wait->to = timeout_add(timeout_msecs, sync_wait_timeout, wait);
	wait->id = ++waits->id_counter;
	DLLIST_PREPEND(&waits->waits, wait);

	ref = i_new(struct sync_wait_ref, 1);
	ref->waits = waits;
	ref->id = wait->id;
	dovewarden_queue_backend_notify_wait(waits->queue, username, flags,
					     sync_wait_seq_callback, ref);
	return wait;
}

void dovewarden_sync_wait_cancel(struct dovewarden_sync_wait **_wait)
{
	struct dovewarden_sync_wait *wait = *_wait;

	if (wait == NULL)
		return;
	*_wait = NULL;
	sync_wait_free(wait);
}
