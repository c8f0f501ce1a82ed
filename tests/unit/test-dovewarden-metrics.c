/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "dovewarden-compat.h"
#include "dovewarden-queue.h"
#include "dovewarden-metrics.h"

#include <criterion/criterion.h>
#include <ctype.h>

static void suite_init(void)
{
	lib_init();
	dovewarden_metrics_reset();
}

static void suite_fini(void)
{
	lib_deinit();
}

TestSuite(metrics, .init = suite_init, .fini = suite_fini);

static const struct dovewarden_queue_settings queue_set = {
	.full_sync_interval_secs = 0,
	.retry_min_secs = 10,
	.retry_max_secs = 100,
};

/* The built-in queue's counts, as its backend gives them */
static void gauges_from_queue(struct dovewarden_queue *queue,
			      struct dovewarden_metrics_gauges *gauges_r)
{
	struct dovewarden_queue_stats stats;
	struct dovewarden_queue_counts counts;

	dovewarden_queue_get_counts(queue, &stats);
	i_zero(&counts);
	counts.users = stats.users;
	memcpy(counts.pending, stats.pending, sizeof(counts.pending));
	counts.failed = stats.failed;
	counts.oldest_pending = dovewarden_queue_get_oldest_pending(queue);
	dovewarden_metrics_gauges_init(gauges_r, &counts);
	gauges_r->syncs_running = stats.syncing;
}

static bool has_line(const char *text, const char *line)
{
	const char *p = text;
	size_t len = strlen(line);

	while ((p = strstr(p, line)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[len] == '\n')
			return TRUE;
		p++;
	}
	return FALSE;
}

#define assert_line(text, line) \
	cr_assert(has_line(text, line), "missing line: %s\n%s", line, text)

/* Every sample line: name{labels} value, with its family declared by
   # HELP and # TYPE before it */
static void assert_format(const char *text)
{
	const char *const *lines = t_strsplit(text, "\n");
	const char *declared = "", *name, *p;
	unsigned int i;

	cr_assert(str_ends_with(text, "\n"));
	for (i = 0; lines[i] != NULL && lines[i][0] != '\0'; i++) {
		if (str_begins(lines[i], "# HELP ", &p)) {
			cr_assert(str_begins(lines[i + 1], t_strdup_printf(
				"# TYPE %s ", t_strcut(p, ' ')), &p));
			cr_assert(strcmp(p, "gauge") == 0 ||
				  strcmp(p, "counter") == 0 ||
				  strcmp(p, "histogram") == 0, "%s", p);
			declared = t_strcut(lines[i + 1] + 7, ' ');
			i++;
			continue;
		}
		cr_assert_neq(lines[i][0], '#', "%s", lines[i]);
		name = t_strcut(t_strcut(lines[i], ' '), '{');
		cr_assert(str_begins_with(name, declared), "%s undeclared",
			  lines[i]);
		for (p = name; *p != '\0'; p++)
			cr_assert(i_isalnum(*p) || *p == '_', "%s", name);
		p = strrchr(lines[i], ' ');
		cr_assert_not_null(p);
		cr_assert(p[1] == '-' || i_isdigit(p[1]), "%s", lines[i]);
	}
	/* one LF at the end, no empty lines */
	cr_assert_not_null(lines[i]);
	cr_assert_null(lines[i + 1]);
}

Test(metrics, empty)
{
	struct dovewarden_metrics_gauges gauges;
	string_t *str = t_str_new(4096);

	i_zero(&gauges);
	dovewarden_metrics_render(str, &gauges, 1000);
	assert_format(str_c(str));
	assert_line(str_c(str), "dovewarden_queue_users{priority=\"sync\"} 0");
	assert_line(str_c(str), "dovewarden_queue_users{priority=\"high\"} 0");
	assert_line(str_c(str), "dovewarden_queue_users{priority=\"low\"} 0");
	assert_line(str_c(str), "dovewarden_oldest_pending_change_seconds 0");
	assert_line(str_c(str), "dovewarden_syncs_total{result=\"ok\"} 0");
	assert_line(str_c(str),
		    "dovewarden_sync_duration_seconds_bucket{le=\"+Inf\"} 0");
	assert_line(str_c(str), "dovewarden_sync_duration_seconds_count 0");
	assert_line(str_c(str),
		    "dovewarden_last_successful_sync_timestamp_seconds 0");
	assert_line(str_c(str),
		    "dovewarden_seconds_since_last_successful_sync -1");
	assert_line(str_c(str),
		    "dovewarden_rejected_inputs_total{source=\"admin\"} 0");
	assert_line(str_c(str), "dovewarden_verifications_total 0");
	assert_line(str_c(str), "dovewarden_repairs_total 0");
	assert_line(str_c(str), "dovewarden_outage_retries_total 0");
	assert_line(str_c(str), "dovewarden_userdb_sweeps_skipped_total 0");
	cr_assert_null(strstr(str_c(str), "# EOF"));
}

Test(metrics, counters)
{
	struct dovewarden_metrics_gauges gauges;
	string_t *str = t_str_new(4096);

	dovewarden_metrics_sync_finished(DOVEWARDEN_SYNC_RESULT_OK, 50000, 900);
	dovewarden_metrics_sync_finished(DOVEWARDEN_SYNC_RESULT_OK, 50001, 950);
	dovewarden_metrics_sync_finished(DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
					 2000000, 990);
	dovewarden_metrics_sync_finished(DOVEWARDEN_SYNC_RESULT_CONFIG,
					 400000000, 995);
	dovewarden_metrics_sync_finished(DOVEWARDEN_SYNC_RESULT_CHANGED, -5,
					 996);
	dovewarden_metrics_notification(DOVEWARDEN_METRICS_SOURCE_HTTP);
	dovewarden_metrics_notification(DOVEWARDEN_METRICS_SOURCE_HTTP);
	dovewarden_metrics_notification(DOVEWARDEN_METRICS_SOURCE_PLUGIN);
	dovewarden_metrics_rejected(DOVEWARDEN_METRICS_SOURCE_ADMIN);
	dovewarden_metrics_verification(FALSE);
	dovewarden_metrics_verification(TRUE);
	dovewarden_metrics_verification(FALSE);
	dovewarden_metrics_outage_retries(7);
	dovewarden_metrics_outage_retries(3);
	dovewarden_metrics_sweep_skipped();
	i_zero(&gauges);
	/* the queue's, older than what was counted: ignored */
	gauges.last_successful_sync = 100;
	gauges.queue_users[DOVEWARDEN_PRIORITY_HIGH] = 3;
	gauges.queue_users[DOVEWARDEN_PRIORITY_NONE] = 99;
	gauges.oldest_pending = 970;
	gauges.syncs_running = 2;
	gauges.users = 1000000;
	gauges.users_failing = 4;
	dovewarden_metrics_render(str, &gauges, 1000);
	assert_format(str_c(str));

	assert_line(str_c(str), "dovewarden_queue_users{priority=\"high\"} 3");
	cr_assert_null(strstr(str_c(str), "priority=\"none\""));
	assert_line(str_c(str), "dovewarden_oldest_pending_change_seconds 30");
	assert_line(str_c(str), "dovewarden_syncs_total{result=\"ok\"} 2");
	assert_line(str_c(str), "dovewarden_syncs_total{result=\"changed\"} 1");
	assert_line(str_c(str), "dovewarden_verifications_total 3");
	assert_line(str_c(str), "dovewarden_repairs_total 1");
	assert_line(str_c(str), "dovewarden_outage_retries_total 10");
	assert_line(str_c(str), "dovewarden_userdb_sweeps_skipped_total 1");
	assert_line(str_c(str),
		    "dovewarden_syncs_total{result=\"tempfail\"} 1");
	assert_line(str_c(str), "dovewarden_syncs_total{result=\"nouser\"} 0");
	assert_line(str_c(str), "dovewarden_syncs_total{result=\"config\"} 1");
	/* le is inclusive; buckets are cumulative */
	assert_line(str_c(str),
		    "dovewarden_sync_duration_seconds_bucket{le=\"0.05\"} 2");
	assert_line(str_c(str),
		    "dovewarden_sync_duration_seconds_bucket{le=\"0.1\"} 3");
	assert_line(str_c(str),
		    "dovewarden_sync_duration_seconds_bucket{le=\"2.5\"} 4");
	assert_line(str_c(str),
		    "dovewarden_sync_duration_seconds_bucket{le=\"300\"} 4");
	assert_line(str_c(str),
		    "dovewarden_sync_duration_seconds_bucket{le=\"+Inf\"} 5");
	assert_line(str_c(str), "dovewarden_sync_duration_seconds_count 5");
	assert_line(str_c(str),
		    "dovewarden_sync_duration_seconds_sum 402.100001");
	assert_line(str_c(str), "dovewarden_syncs_running 2");
	assert_line(str_c(str), "dovewarden_users 1000000");
	assert_line(str_c(str), "dovewarden_users_failing 4");
	assert_line(str_c(str),
		    "dovewarden_notifications_total{source=\"http\"} 2");
	assert_line(str_c(str),
		    "dovewarden_notifications_total{source=\"plugin\"} 1");
	cr_assert_null(strstr(str_c(str),
			      "notifications_total{source=\"admin\"}"));
	assert_line(str_c(str),
		    "dovewarden_rejected_inputs_total{source=\"admin\"} 1");
	assert_line(str_c(str),
		    "dovewarden_rejected_inputs_total{source=\"http\"} 0");
	assert_line(str_c(str),
		    "dovewarden_last_successful_sync_timestamp_seconds 950");
	assert_line(str_c(str),
		    "dovewarden_seconds_since_last_successful_sync 50");
}

Test(metrics, gauges_from_queue)
{
	struct dovewarden_queue *queue = dovewarden_queue_init(&queue_set);
	struct dovewarden_metrics_gauges gauges;
	struct dovewarden_user *user, *u2;

	gauges_from_queue(queue, &gauges);
	cr_assert_eq(gauges.oldest_pending, 0);
	cr_assert_eq(gauges.users, 0);

	/* oldest change: the first one, until a sync that started after it
	   succeeds */
	(void)dovewarden_queue_notify(queue, "a", DOVEWARDEN_PRIORITY_LOW, 100);
	(void)dovewarden_queue_notify(queue, "a", DOVEWARDEN_PRIORITY_HIGH,
				      105);
	(void)dovewarden_queue_notify(queue, "b", DOVEWARDEN_PRIORITY_SYNC,
				      103);
	(void)dovewarden_queue_add(queue, "c", 104);
	gauges_from_queue(queue, &gauges);
	cr_assert_eq(gauges.oldest_pending, 100);
	cr_assert_eq(gauges.users, 3);
	cr_assert_eq(gauges.queue_users[DOVEWARDEN_PRIORITY_HIGH], 1);
	cr_assert_eq(gauges.queue_users[DOVEWARDEN_PRIORITY_SYNC], 1);
	cr_assert_eq(gauges.queue_users[DOVEWARDEN_PRIORITY_LOW], 0);

	user = dovewarden_queue_pop(queue, 110);
	cr_assert_str_eq(user->username, "b");
	u2 = dovewarden_queue_pop(queue, 110);
	cr_assert_str_eq(u2->username, "a");
	gauges_from_queue(queue, &gauges);
	/* still unreplicated while syncing */
	cr_assert_eq(gauges.oldest_pending, 100);
	cr_assert_eq(gauges.syncs_running, 2);

	/* a change during the sync is not covered by it */
	(void)dovewarden_queue_notify(queue, "a", DOVEWARDEN_PRIORITY_LOW, 112);
	dovewarden_queue_sync_finished(queue, u2, DOVEWARDEN_SYNC_RESULT_OK,
				       "s", NULL, 115);
	gauges_from_queue(queue, &gauges);
	cr_assert_eq(gauges.oldest_pending, 103);

	/* a failed sync keeps its changes' age */
	dovewarden_queue_sync_finished(queue, user,
				       DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL,
				       "boom", 116);
	gauges_from_queue(queue, &gauges);
	cr_assert_eq(gauges.oldest_pending, 103);
	cr_assert_eq(gauges.users_failing, 1);

	/* removing the user drops its changes */
	dovewarden_queue_remove(queue, dovewarden_queue_lookup(queue, "b"));
	gauges_from_queue(queue, &gauges);
	cr_assert_eq(gauges.oldest_pending, 112);
	cr_assert_eq(gauges.users_failing, 0);

	/* removed while syncing, then NOUSER */
	user = dovewarden_queue_pop(queue, 120);
	cr_assert_str_eq(user->username, "a");
	dovewarden_queue_remove(queue, user);
	gauges_from_queue(queue, &gauges);
	cr_assert_eq(gauges.oldest_pending, 0);
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       NULL, NULL, 121);
	gauges_from_queue(queue, &gauges);
	cr_assert_eq(gauges.users, 1);
	cr_assert_eq(gauges.oldest_pending, 0);

	dovewarden_queue_deinit(&queue);
}

Test(metrics, last_sync_from_queue)
{
	struct dovewarden_queue_counts counts;
	string_t *str = t_str_new(4096);
	struct dovewarden_metrics_gauges gauges;

	/* a restored queue's newest successful sync, until a newer one */
	i_zero(&counts);
	counts.last_successful_sync = 550;
	counts.oldest_pending = 540;
	dovewarden_metrics_gauges_init(&gauges, &counts);
	cr_assert_eq(gauges.oldest_pending, 540);
	dovewarden_metrics_render(str, &gauges, 600);
	assert_line(str_c(str),
		    "dovewarden_last_successful_sync_timestamp_seconds 550");
	assert_line(str_c(str),
		    "dovewarden_seconds_since_last_successful_sync 50");

	dovewarden_metrics_sync_finished(DOVEWARDEN_SYNC_RESULT_OK, 1000, 590);
	str_truncate(str, 0);
	dovewarden_metrics_render(str, &gauges, 600);
	assert_line(str_c(str),
		    "dovewarden_last_successful_sync_timestamp_seconds 590");
}

Test(metrics, backend_gauges)
{
	const struct dovewarden_queue_metric backend_metrics[] = {
		{ "dovewarden_redis_connected", "1 when connected.", "gauge",
		  1 },
		{ "dovewarden_redis_dropped_notifications_total",
		  "Changes dropped.", "counter", 12345678901ULL },
	};
	struct dovewarden_metrics_gauges gauges;
	string_t *str = t_str_new(4096);

	i_zero(&gauges);
	gauges.backend_metrics = backend_metrics;
	gauges.backend_metrics_count = N_ELEMENTS(backend_metrics);
	dovewarden_metrics_render(str, &gauges, 600);
	assert_line(str_c(str), "# TYPE dovewarden_redis_connected gauge");
	assert_line(str_c(str), "dovewarden_redis_connected 1");
	assert_line(str_c(str), "# TYPE "
		    "dovewarden_redis_dropped_notifications_total counter");
	assert_line(str_c(str),
		    "dovewarden_redis_dropped_notifications_total 12345678901");
}
