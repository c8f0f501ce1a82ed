/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_METRICS_H
#define DOVEWARDEN_METRICS_H

#include "dovewarden-queue-backend.h"

/* The service's counters, kept for the whole process (there is one
   service process), and their rendering in the Prometheus text
   exposition format (version 0.0.4), which OpenMetrics parsers accept
   too. Updating a counter is O(1); rendering is O(1) in the number of
   users (the gauges come from the queue's running counts). */

#define DOVEWARDEN_METRICS_CONTENT_TYPE \
	"text/plain; version=0.0.4; charset=utf-8"

/* Where a notification or a rejected input came from */
enum dovewarden_metrics_source {
	/* the mail plugin, over the notify socket */
	DOVEWARDEN_METRICS_SOURCE_PLUGIN,
	/* Dovecot's event exporter, over the HTTP listener */
	DOVEWARDEN_METRICS_SOURCE_HTTP,
	/* doveadm dovewarden, over the admin socket */
	DOVEWARDEN_METRICS_SOURCE_ADMIN,
};
#define DOVEWARDEN_METRICS_SOURCE_COUNT \
	(DOVEWARDEN_METRICS_SOURCE_ADMIN + 1)

/* The gauges, read from the queue and the replicator when rendering */
struct dovewarden_metrics_gauges {
	/* users with pending changes, by priority (NONE is not shown) */
	unsigned int queue_users[DOVEWARDEN_PRIORITY_COUNT];
	/* time of the oldest unreplicated change, 0 if none */
	time_t oldest_pending;
	unsigned int syncs_running;
	unsigned int users;
	unsigned int users_failing;
	/* the newest successful sync the queue knows of (e.g. from its
	   saved state), 0 if none */
	time_t last_successful_sync;
	/* the queue backend's own gauges */
	const struct dovewarden_queue_metric *backend_metrics;
	unsigned int backend_metrics_count;
};

/* A valid notification was queued */
void dovewarden_metrics_notification(enum dovewarden_metrics_source source);
/* A plugin reported changes that dsync made (an import) */
void dovewarden_metrics_import(void);
/* An input was rejected: malformed, oversized, unauthorized, invalid
   username */
void dovewarden_metrics_rejected(enum dovewarden_metrics_source source);
/* A sync wait was refused: too many were pending */
void dovewarden_metrics_wait_refused(void);
/* A notify request was refused: its peer may not notify for the user */
void dovewarden_metrics_refused_peer(void);
/* A flooding client's notification of a user the userdb does not know
   was dropped */
void dovewarden_metrics_unknown_user_dropped(void);
/* A notify request was refused without a userdb lookup: the lookups for
   peers that are neither root nor mail_uid reached their rate limit */
void dovewarden_metrics_peer_lookup_limited(void);
/* A sync ended with result after duration_usecs; now is when. */
void dovewarden_metrics_sync_finished(enum dovewarden_sync_result result,
				      long long duration_usecs, time_t now);
/* A successful full sync of a user that had a dsync state finished;
   repaired tells whether it changed something. */
void dovewarden_metrics_verification(bool repaired);
/* A follow-up incremental sync (after one that started with a stale
   dsync state) succeeded */
void dovewarden_metrics_followup(void);
/* The back-off of users was ended: the replica answers again */
void dovewarden_metrics_outage_retries(unsigned int users);
/* A sync was held back during an outage of the replica */
void dovewarden_metrics_outage_held(void);
/* A userdb sweep was due but ran within the interval already (on another
   instance, or before a restart) */
void dovewarden_metrics_sweep_skipped(void);
/* Forget all counters (for tests). */
void dovewarden_metrics_reset(void);

/* Fill gauges from the queue's counts; the rest is zero. */
void dovewarden_metrics_gauges_init(struct dovewarden_metrics_gauges *gauges_r,
				    const struct dovewarden_queue_counts *counts);

/* Append all metrics at time now to dest. */
void dovewarden_metrics_render(string_t *dest,
			       const struct dovewarden_metrics_gauges *gauges,
			       time_t now);

#endif
