/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "dovewarden-compat.h"
#include "dovewarden-metrics.h"

#define SYNC_RESULT_COUNT (DOVEWARDEN_SYNC_RESULT_CONFIG + 1)

/* Upper bounds of the duration histogram's buckets, in microseconds;
   the last bucket (+Inf) has none */
static const long long duration_buckets_usecs[] = {
	50000, 100000, 250000, 500000, 1000000, 2500000, 5000000,
	10000000, 30000000, 60000000, 300000000,
};
static const char *const duration_bucket_labels[] = {
	"0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
	"10", "30", "60", "300",
};
#define DURATION_BUCKET_COUNT (N_ELEMENTS(duration_buckets_usecs) + 1)

struct metrics {
	uint64_t syncs[SYNC_RESULT_COUNT];
	/* not cumulative; the last one is +Inf */
	uint64_t duration_buckets[DURATION_BUCKET_COUNT];
	uint64_t duration_sum_usecs;
	uint64_t notifications[DOVEWARDEN_METRICS_SOURCE_COUNT];
	uint64_t rejected[DOVEWARDEN_METRICS_SOURCE_COUNT];
	uint64_t verifications, repairs;
	uint64_t followups;
	uint64_t waits_refused, refused_peers, unknown_dropped;
	uint64_t imports;
	uint64_t peer_lookups_limited;
	uint64_t outage_retries, outage_held, sweeps_skipped;
	time_t last_successful_sync;
};

static struct metrics metrics;

static const char *const source_names[] = {
	"plugin", "http", "admin",
};
static_assert_array_size(source_names, DOVEWARDEN_METRICS_SOURCE_COUNT);

void dovewarden_metrics_notification(enum dovewarden_metrics_source source)
{
	i_assert(source < DOVEWARDEN_METRICS_SOURCE_COUNT);
	metrics.notifications[source]++;
}

void dovewarden_metrics_import(void)
{
	metrics.imports++;
}

void dovewarden_metrics_rejected(enum dovewarden_metrics_source source)
{
	i_assert(source < DOVEWARDEN_METRICS_SOURCE_COUNT);
	metrics.rejected[source]++;
}

void dovewarden_metrics_wait_refused(void)
{
	metrics.waits_refused++;
}

void dovewarden_metrics_refused_peer(void)
{
	metrics.refused_peers++;
}

void dovewarden_metrics_unknown_user_dropped(void)
{
	metrics.unknown_dropped++;
}

void dovewarden_metrics_peer_lookup_limited(void)
{
	metrics.peer_lookups_limited++;
}

void dovewarden_metrics_sync_finished(enum dovewarden_sync_result result,
				      long long duration_usecs, time_t now)
{
	unsigned int i;

	i_assert(result < SYNC_RESULT_COUNT);
	metrics.syncs[result]++;
	if (duration_usecs < 0)
		duration_usecs = 0;
	for (i = 0; i < N_ELEMENTS(duration_buckets_usecs); i++) {
		if (duration_usecs <= duration_buckets_usecs[i])
			break;
	}
	metrics.duration_buckets[i]++;
	metrics.duration_sum_usecs += duration_usecs;
	if (result == DOVEWARDEN_SYNC_RESULT_OK &&
	    now > metrics.last_successful_sync)
		metrics.last_successful_sync = now;
}

void dovewarden_metrics_verification(bool repaired)
{
	metrics.verifications++;
	if (repaired)
		metrics.repairs++;
}

void dovewarden_metrics_followup(void)
{
	metrics.followups++;
}

void dovewarden_metrics_outage_retries(unsigned int users)
{
	metrics.outage_retries += users;
}

void dovewarden_metrics_outage_held(void)
{
	metrics.outage_held++;
}

void dovewarden_metrics_sweep_skipped(void)
{
	metrics.sweeps_skipped++;
}

void dovewarden_metrics_reset(void)
{
	i_zero(&metrics);
}

void dovewarden_metrics_gauges_init(struct dovewarden_metrics_gauges *gauges_r,
				    const struct dovewarden_queue_counts *counts)
{
	i_zero(gauges_r);
	memcpy(gauges_r->queue_users, counts->pending,
	       sizeof(gauges_r->queue_users));
	gauges_r->oldest_pending = counts->oldest_pending;
	gauges_r->users = counts->users;
	gauges_r->users_failing = counts->failed;
	gauges_r->last_successful_sync = counts->last_successful_sync;
}

static void
metric_header(string_t *dest, const char *name, const char *type,
	      const char *help)
{
	str_printfa(dest, "# HELP %s %s\n# TYPE %s %s\n",
		    name, help, name, type);
}

static void
metric_value(string_t *dest, const char *name, long long value)
{
	str_printfa(dest, "%s %lld\n", name, value);
}

static void metrics_render_counters(string_t *dest)
{
	uint64_t cumulative = 0;
	unsigned int i;

	metric_header(dest, "dovewarden_syncs_total", "counter",
		      "Syncs finished, by result.");
	for (i = 0; i < SYNC_RESULT_COUNT; i++) {
		str_printfa(dest, "dovewarden_syncs_total{result=\"%s\"} "
			    "%"PRIu64"\n", dovewarden_sync_result_to_str(i),
			    metrics.syncs[i]);
	}

	metric_header(dest, "dovewarden_sync_duration_seconds", "histogram",
		      "How long syncs took, of any result.");
	for (i = 0; i < DURATION_BUCKET_COUNT; i++) {
		cumulative += metrics.duration_buckets[i];
		str_printfa(dest, "dovewarden_sync_duration_seconds_bucket"
			    "{le=\"%s\"} %"PRIu64"\n",
			    i < N_ELEMENTS(duration_bucket_labels) ?
			    duration_bucket_labels[i] : "+Inf", cumulative);
	}
	str_printfa(dest, "dovewarden_sync_duration_seconds_sum "
		    "%"PRIu64".%06"PRIu64"\n",
		    metrics.duration_sum_usecs / 1000000,
		    metrics.duration_sum_usecs % 1000000);
	str_printfa(dest, "dovewarden_sync_duration_seconds_count %"PRIu64"\n",
		    cumulative);

	metric_header(dest, "dovewarden_verifications_total", "counter",
		      "Successful full syncs of users that were synced "
		      "before (settle, periodic or forced).");
	str_printfa(dest, "dovewarden_verifications_total %"PRIu64"\n",
		    metrics.verifications);
	metric_header(dest, "dovewarden_repairs_total", "counter",
		      "Verifications that found the servers different and "
		      "repaired them.");
	str_printfa(dest, "dovewarden_repairs_total %"PRIu64"\n",
		    metrics.repairs);
	metric_header(dest, "dovewarden_followup_syncs_total", "counter",
		      "Successful second incremental syncs, run because the "
		      "first one's dsync state was older than a sync from "
		      "the other server.");
	str_printfa(dest, "dovewarden_followup_syncs_total %"PRIu64"\n",
		    metrics.followups);
	metric_header(dest, "dovewarden_outage_retries_total", "counter",
		      "Users whose failure back-off was ended because the "
		      "replica answered again after an outage.");
	str_printfa(dest, "dovewarden_outage_retries_total %"PRIu64"\n",
		    metrics.outage_retries);
	metric_header(dest, "dovewarden_outage_held_syncs_total", "counter",
		      "Syncs not run during an outage of the replica (the "
		      "user kept its back-off until the outage ended).");
	str_printfa(dest, "dovewarden_outage_held_syncs_total %"PRIu64"\n",
		    metrics.outage_held);
	metric_header(dest, "dovewarden_userdb_sweeps_skipped_total", "counter",
		      "Userdb sweeps not run because one ran within "
		      "dovewarden_userdb_sweep_interval (on another instance, "
		      "or before a restart).");
	str_printfa(dest, "dovewarden_userdb_sweeps_skipped_total %"PRIu64"\n",
		    metrics.sweeps_skipped);

	metric_header(dest, "dovewarden_notifications_total", "counter",
		      "Valid change notifications received, by source.");
	for (i = 0; i <= DOVEWARDEN_METRICS_SOURCE_HTTP; i++) {
		str_printfa(dest, "dovewarden_notifications_total"
			    "{source=\"%s\"} %"PRIu64"\n", source_names[i],
			    metrics.notifications[i]);
	}
	metric_header(dest, "dovewarden_imports_total", "counter",
		      "Changes made by dsync on this server, reported by the "
		      "plugin (evidence for the settle rule).");
	str_printfa(dest, "dovewarden_imports_total %"PRIu64"\n",
		    metrics.imports);
	metric_header(dest, "dovewarden_sync_waits_refused_total", "counter",
		      "Sync waits refused because too many were pending.");
	str_printfa(dest, "dovewarden_sync_waits_refused_total %"PRIu64"\n",
		    metrics.waits_refused);
	metric_header(dest, "dovewarden_notify_refused_total", "counter",
		      "Notify requests refused: the peer's uid may not "
		      "notify for that user.");
	str_printfa(dest, "dovewarden_notify_refused_total %"PRIu64"\n",
		    metrics.refused_peers);
	metric_header(dest, "dovewarden_notify_unknown_dropped_total",
		      "counter", "Notifications of users the userdb does not "
		      "know, dropped from clients that sent more than 1000 "
		      "a second.");
	str_printfa(dest, "dovewarden_notify_unknown_dropped_total %"PRIu64
		    "\n", metrics.unknown_dropped);
	metric_header(dest, "dovewarden_notify_peer_lookups_limited_total",
		      "counter", "Notify requests refused without a userdb "
		      "lookup: more than 100 lookups a second for peers that "
		      "are neither root nor mail_uid.");
	str_printfa(dest, "dovewarden_notify_peer_lookups_limited_total %"
		    PRIu64"\n", metrics.peer_lookups_limited);
	metric_header(dest, "dovewarden_rejected_inputs_total", "counter",
		      "Inputs rejected as malformed, oversized, "
		      "unauthorized or invalid, by source.");
	for (i = 0; i < DOVEWARDEN_METRICS_SOURCE_COUNT; i++) {
		str_printfa(dest, "dovewarden_rejected_inputs_total"
			    "{source=\"%s\"} %"PRIu64"\n", source_names[i],
			    metrics.rejected[i]);
	}
}

void dovewarden_metrics_render(string_t *dest,
			       const struct dovewarden_metrics_gauges *gauges,
			       time_t now)
{
	static const enum dovewarden_priority priorities[] = {
		DOVEWARDEN_PRIORITY_SYNC,
		DOVEWARDEN_PRIORITY_HIGH,
		DOVEWARDEN_PRIORITY_LOW,
	};
	const struct dovewarden_queue_metric *m;
	time_t last_successful_sync =
		I_MAX(metrics.last_successful_sync,
		      gauges->last_successful_sync);
	unsigned int i;

	metric_header(dest, "dovewarden_queue_users", "gauge",
		      "Users with a pending change, by its priority.");
	for (i = 0; i < N_ELEMENTS(priorities); i++) {
		str_printfa(dest, "dovewarden_queue_users{priority=\"%s\"} "
			    "%u\n", dovewarden_priority_to_str(priorities[i]),
			    gauges->queue_users[priorities[i]]);
	}
	metric_header(dest, "dovewarden_oldest_pending_change_seconds",
		      "gauge", "Age of the oldest change not replicated yet "
		      "(0 if none).");
	metric_value(dest, "dovewarden_oldest_pending_change_seconds",
		     gauges->oldest_pending == 0 ? 0 :
		     I_MAX(now - gauges->oldest_pending, 0));

	metrics_render_counters(dest);

	metric_header(dest, "dovewarden_syncs_running", "gauge",
		      "Syncs running now.");
	metric_value(dest, "dovewarden_syncs_running", gauges->syncs_running);
	metric_header(dest, "dovewarden_users", "gauge", "Known users.");
	metric_value(dest, "dovewarden_users", gauges->users);
	metric_header(dest, "dovewarden_users_failing", "gauge",
		      "Users whose last sync failed (retried with back-off).");
	metric_value(dest, "dovewarden_users_failing", gauges->users_failing);

	metric_header(dest, "dovewarden_last_successful_sync_timestamp_seconds",
		      "gauge", "Unix time of the last successful sync of any "
		      "user (0 if none).");
	metric_value(dest, "dovewarden_last_successful_sync_timestamp_seconds",
		     last_successful_sync);
	metric_header(dest, "dovewarden_seconds_since_last_successful_sync",
		      "gauge", "Seconds since the last successful sync of any "
		      "user (-1 if none).");
	metric_value(dest, "dovewarden_seconds_since_last_successful_sync",
		     last_successful_sync == 0 ? -1 :
		     I_MAX(now - last_successful_sync, 0));

	for (i = 0; i < gauges->backend_metrics_count; i++) {
		m = &gauges->backend_metrics[i];
		metric_header(dest, m->name, m->type, m->help);
		str_printfa(dest, "%s %"PRIu64"\n", m->name, m->value);
	}
}
