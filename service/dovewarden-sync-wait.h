/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_SYNC_WAIT_H
#define DOVEWARDEN_SYNC_WAIT_H

#include "dovewarden-queue-backend.h"

/* Sync waits (dovewarden_sync_wait): a mail process asks to be told when
   its user's new change is on the replica. A wait records the change at
   SYNC priority (dovewarden_queue_backend_notify_wait()), which gives the
   user's job sequence number at that moment; the wait is answered by the
   first sync of the user with a larger sequence number that ends for
   good (OK, NOUSER, CONFIG: a sync that ends with CHANGED or a temporary
   failure is no answer, its retry is), on whichever instance runs it,
   or when it times out. */

/* success=TRUE only for a successful sync; reason says why not */
typedef void dovewarden_sync_wait_callback_t(bool success, const char *reason,
					     void *context);

struct dovewarden_sync_waits *
dovewarden_sync_waits_init(struct dovewarden_queue_backend *queue);
/* Answers every wait with success=FALSE */
void dovewarden_sync_waits_deinit(struct dovewarden_sync_waits **waits);

/* The backend's sync_done callback goes here */
void dovewarden_sync_waits_sync_done(struct dovewarden_sync_waits *waits,
				     const char *username, uint64_t seq,
				     enum dovewarden_sync_result result,
				     const char *error);

/* Record a change of the user at SYNC priority and call the callback
   once it is replicated, or with success=FALSE when its sync failed for
   good or timeout_msecs passed. The callback is never called from within
   this function. The username must be valid. */
struct dovewarden_sync_wait *
dovewarden_sync_wait_start(struct dovewarden_sync_waits *waits,
			   const char *username, unsigned int timeout_msecs,
			   enum dovewarden_queue_notify_flags flags,
			   dovewarden_sync_wait_callback_t *callback,
			   void *context);
/* Forget a wait without calling its callback. */
void dovewarden_sync_wait_cancel(struct dovewarden_sync_wait **wait);

#endif
