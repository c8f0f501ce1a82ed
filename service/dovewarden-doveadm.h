/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_DOVEADM_H
#define DOVEWARDEN_DOVEADM_H

#include "dovewarden-queue-rules.h"

/* A client for doveadm-server's unix socket that runs one "sync" command
   per connection (doveadm-server serves each connection in a fresh
   process). Everything runs on the current ioloop; nothing blocks.

   The exchange:
     C: VERSION\tdoveadm-server\t1\t0
     S: +				(preauthenticated unix socket)
     C: \t<user>\tsync\t-N\t-l\t<secs>\t[-T\t<secs>\t][-f\t]-s\t<state>\t
	<destination>					(one line)
     S: <new state>\t		(the command's output line: an empty
				 state when dsync can't use the given one,
				 an empty line when dsync did not run)
     S: + or -<CODE>		(status)
   EOF before the status line is a failure: doveadm-server closes the
   connection on a fatal error (2.4.1 answers an unreachable destination
   with -TEMPFAIL, 2.3 with EOF). */

struct dovewarden_doveadm_sync_settings {
	/* Absolute path of doveadm-server's unix socket */
	const char *socket_path;
	const char *username;
	/* The previous dsync state, "" for none */
	const char *state;
	/* dsync destination, e.g. tcp:host:port */
	const char *destination;
	/* dsync -l */
	unsigned int lock_timeout_secs;
	/* dsync -T: doveadm-server gives up when the destination is silent
	   this long, so that it does not outlive an aborted sync by much
	   (0 = dsync's default) */
	unsigned int io_timeout_secs;
	/* The whole sync is aborted after this long (0 = no limit) */
	unsigned int timeout_msecs;
	/* Send -f */
	bool full;
};

struct dovewarden_doveadm_sync_reply {
	enum dovewarden_sync_result result;
	/* The new dsync state, "" when none was returned */
	const char *state;
	/* Why the sync failed, NULL on success */
	const char *error;
	/* The service stopped waiting for it (dovewarden_sync_timeout):
	   doveadm-server goes on with the dsync until it ends by itself */
	bool may_still_run;
	/* An incremental sync failed because dsync can't use the state
	   (e.g. "Modseq ... no longer in transaction log"): only a full
	   sync gets on */
	bool needs_full_sync;
};

/* The reply and its strings are valid only during the callback. */
typedef void dovewarden_doveadm_sync_callback_t(
	const struct dovewarden_doveadm_sync_reply *reply, void *context);

struct dovewarden_doveadm *dovewarden_doveadm_init(void);
/* Aborts all running syncs without calling their callbacks. */
void dovewarden_doveadm_deinit(struct dovewarden_doveadm **doveadm);

/* Start a sync. The callback is always called later from the ioloop,
   never from within this function, exactly once unless the sync is
   aborted. The settings are copied. */
struct dovewarden_doveadm_sync *
dovewarden_doveadm_sync_start(
	struct dovewarden_doveadm *doveadm,
	const struct dovewarden_doveadm_sync_settings *set,
	struct event *event_parent,
	dovewarden_doveadm_sync_callback_t *callback, void *context);
/* Disconnect and free the sync without calling its callback. */
void dovewarden_doveadm_sync_abort(struct dovewarden_doveadm_sync **sync);

/* A human-readable description of what the sync waits for */
const char *
dovewarden_doveadm_sync_get_state(const struct dovewarden_doveadm_sync *sync);

#endif
