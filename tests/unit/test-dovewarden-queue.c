/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "dovewarden-queue.h"

#include <criterion/criterion.h>

#define T0 ((time_t)1700000000)
#define LOW DOVEWARDEN_PRIORITY_LOW
#define HIGH DOVEWARDEN_PRIORITY_HIGH
#define SYNC DOVEWARDEN_PRIORITY_SYNC
#define NONE DOVEWARDEN_PRIORITY_NONE

static struct dovewarden_queue *queue;

static void suite_init(void)
{
	lib_init();
}

static void suite_fini(void)
{
	if (queue != NULL)
		dovewarden_queue_deinit(&queue);
	lib_deinit();
}

TestSuite(queue, .init = suite_init, .fini = suite_fini);

static void
queue_new(unsigned int full_interval, unsigned int retry_min,
	  unsigned int retry_max)
{
	struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = full_interval,
		.retry_min_secs = retry_min,
		.retry_max_secs = retry_max,
	};

	if (queue != NULL)
		dovewarden_queue_deinit(&queue);
	queue = dovewarden_queue_init(&set);
}

static struct dovewarden_user *pop_name(time_t now, const char *expected)
{
	struct dovewarden_user *user = dovewarden_queue_pop(queue, now);

	cr_assert_not_null(user, "expected %s, got nothing", expected);
	cr_assert_str_eq(user->username, expected);
	cr_assert(user->syncing);
	cr_assert_eq(user->priority, NONE);
	return user;
}

static void pop_none(time_t now)
{
	struct dovewarden_user *user = dovewarden_queue_pop(queue, now);

	cr_assert_null(user, "unexpected pop of %s",
		       user == NULL ? "" : user->username);
}

static void finish_ok(struct dovewarden_user *user, time_t now)
{
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       NULL, NULL, now);
}

Test(queue, notify_twice_pops_once)
{
	struct dovewarden_user *user;

	queue_new(0, 10, 3600);
	user = dovewarden_queue_notify(queue, "alice", HIGH, T0);
	cr_assert_eq(dovewarden_queue_notify(queue, "alice", HIGH, T0 + 1),
		     user);
	cr_assert_eq(dovewarden_queue_notify(queue, "alice", LOW, T0 + 2),
		     user);
	cr_assert_eq(user->priority, HIGH);
	cr_assert_eq(user->last_update, T0);
	cr_assert_eq(dovewarden_queue_lookup(queue, "alice"), user);
	cr_assert_null(dovewarden_queue_lookup(queue, "bob"));

	user = pop_name(T0 + 3, "alice");
	pop_none(T0 + 3);
	finish_ok(user, T0 + 4);
	pop_none(T0 + 4);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
}

Test(queue, peek_returns_what_pop_would_without_popping)
{
	const struct dovewarden_user *next;

	queue_new(0, 10, 3600);
	cr_assert_null(dovewarden_queue_peek(queue, T0));
	dovewarden_queue_notify(queue, "low", LOW, T0);
	dovewarden_queue_notify(queue, "high", HIGH, T0);
	next = dovewarden_queue_peek(queue, T0 + 1);
	cr_assert_str_eq(next->username, "high");
	cr_assert_eq(dovewarden_queue_peek(queue, T0 + 1), next);
	cr_assert(!next->syncing);
	cr_assert_eq(pop_name(T0 + 1, "high"), next);
	cr_assert_str_eq(dovewarden_queue_peek(queue, T0 + 1)->username,
			 "low");
}

Test(queue, priority_order)
{
	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "low", LOW, T0);
	dovewarden_queue_notify(queue, "high", HIGH, T0);
	dovewarden_queue_notify(queue, "sync", SYNC, T0);
	dovewarden_queue_notify(queue, "low2", LOW, T0 + 1);
	pop_name(T0 + 5, "sync");
	pop_name(T0 + 5, "high");
	pop_name(T0 + 5, "low");
	pop_name(T0 + 5, "low2");
	pop_none(T0 + 5);
}

Test(queue, raised_priority_moves_forward)
{
	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	dovewarden_queue_notify(queue, "bob", HIGH, T0 + 10);
	/* raised to HIGH later than bob's change: goes after bob */
	dovewarden_queue_notify(queue, "alice", HIGH, T0 + 20);
	cr_assert_eq(dovewarden_queue_lookup(queue, "alice")->last_update,
		     T0 + 20);
	pop_name(T0 + 30, "bob");
	pop_name(T0 + 30, "alice");
}

Test(queue, raising_never_moves_back)
{
	queue_new(0, 10, 3600);
	/* alice's LOW change is so old that its key beats a fresh HIGH */
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	dovewarden_queue_notify(queue, "bob", HIGH, T0 + 1000);
	dovewarden_queue_notify(queue, "alice", HIGH, T0 + 1000);
	pop_name(T0 + 1000, "alice");
	pop_name(T0 + 1000, "bob");
}

Test(queue, old_low_goes_before_fresh_high)
{
	const time_t diff = DOVEWARDEN_QUEUE_HIGH_BOOST_SECS -
		DOVEWARDEN_QUEUE_LOW_BOOST_SECS;

	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "low", LOW, T0);
	dovewarden_queue_notify(queue, "high", HIGH, T0 + diff + 1);
	pop_name(T0 + diff + 1, "low");
	pop_name(T0 + diff + 1, "high");

	/* younger than the boost difference: HIGH first */
	dovewarden_queue_notify(queue, "low2", LOW, T0 + 10000);
	dovewarden_queue_notify(queue, "high2", HIGH, T0 + 10000 + diff - 1);
	pop_name(T0 + 20000, "high2");
	pop_name(T0 + 20000, "low2");

	/* the same for HIGH against SYNC */
	dovewarden_queue_notify(queue, "high3", HIGH, T0 + 30000);
	dovewarden_queue_notify(queue, "sync3", SYNC,
		T0 + 30000 + DOVEWARDEN_QUEUE_SYNC_BOOST_SECS -
		DOVEWARDEN_QUEUE_HIGH_BOOST_SECS + 1);
	pop_name(T0 + 40000, "high3");
	pop_name(T0 + 40000, "sync3");
}

/* Here and not in test-dovewarden-queue-backend.c: it needs a clock that
   runs for hours, which only the built-in queue takes from its caller */
Test(queue, low_not_starved_by_high_stream)
{
	struct dovewarden_user *user;
	unsigned int n = 0;
	time_t now;
	bool low_done = FALSE;

	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "low", LOW, T0);
	/* two new HIGH users per second, one sync per second: the backlog
	   grows without end, but LOW must get its turn */
	for (now = T0; now < T0 + 3 * 3600 && !low_done; now++) {
		dovewarden_queue_notify(queue, t_strdup_printf("h%u", n++),
					HIGH, now);
		dovewarden_queue_notify(queue, t_strdup_printf("h%u", n++),
					HIGH, now);
		user = dovewarden_queue_pop(queue, now);
		cr_assert_not_null(user);
		if (strcmp(user->username, "low") == 0)
			low_done = TRUE;
		finish_ok(user, now);
	}
	cr_assert(low_done, "LOW starved");
	/* it waited for the HIGH changes up to 15 minutes younger than it:
	   1800 of them at one per second */
	cr_assert_leq(now - T0, 2 * (DOVEWARDEN_QUEUE_HIGH_BOOST_SECS -
				     DOVEWARDEN_QUEUE_LOW_BOOST_SECS) + 5);
}

Test(queue, change_during_sync_syncs_once_more)
{
	struct dovewarden_user *user;

	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	user = pop_name(T0, "alice");
	dovewarden_queue_notify(queue, "alice", HIGH, T0 + 1);
	dovewarden_queue_notify(queue, "alice", LOW, T0 + 2);
	cr_assert_eq(user->priority, HIGH);
	/* not queued while syncing */
	pop_none(T0 + 3);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	finish_ok(user, T0 + 4);

	user = pop_name(T0 + 4, "alice");
	pop_none(T0 + 4);
	finish_ok(user, T0 + 5);
	pop_none(T0 + 100000);
}

Test(queue, last_successful_sync_is_when_it_started)
{
	struct dovewarden_user *user;

	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "alice", HIGH, T0);
	user = pop_name(T0 + 1, "alice");
	cr_assert_eq(user->syncing_priority, HIGH);
	/* a change during the sync may not have been replicated */
	dovewarden_queue_notify(queue, "alice", LOW, T0 + 2);
	finish_ok(user, T0 + 50);
	cr_assert_eq(user->last_successful_sync, T0 + 1);
	user = pop_name(T0 + 50, "alice");
	cr_assert_eq(user->syncing_priority, LOW);
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0 + 60);
	cr_assert_eq(user->last_successful_sync, T0 + 1);
}

Test(queue, no_change_during_sync_not_requeued)
{
	struct dovewarden_user *user;

	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "alice", SYNC, T0);
	user = pop_name(T0, "alice");
	finish_ok(user, T0 + 1);
	cr_assert(!user->syncing);
	cr_assert_eq(user->priority, NONE);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	pop_none(T0 + 1000000);
}

Test(queue, backoff_jitter_is_bounded)
{
	struct dovewarden_user *user;
	time_t delay, min_delay = LONG_MAX, max_delay = 0;
	unsigned int i;

	queue_new(0, 100, 1000);
	for (i = 0; i < 400; i++) {
		dovewarden_queue_notify(queue, t_strdup_printf("u%u", i),
					LOW, T0);
	}
	while ((user = dovewarden_queue_pop(queue, T0)) != NULL) {
		dovewarden_queue_sync_finished(queue, user,
			DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0);
		delay = user->next_try - T0;
		cr_assert_geq(delay, 100);
		cr_assert_leq(delay, 125);
		min_delay = I_MIN(min_delay, delay);
		max_delay = I_MAX(max_delay, delay);
	}
	/* spread, so that users failing together are not retried together */
	cr_assert_gt(max_delay - min_delay, 10);
}

Test(queue, backoff_zero_min_is_not_a_hot_loop)
{
	struct dovewarden_user *user;

	queue_new(0, 0, 0);
	dovewarden_queue_notify(queue, "alice", HIGH, T0);
	user = pop_name(T0, "alice");
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0);
	cr_assert_gt(user->next_try, T0);
	pop_none(T0);
}

Test(queue, config_error_waits_longest)
{
	struct dovewarden_user *user;

	queue_new(0, 10, 600);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	user = pop_name(T0, "alice");
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_CONFIG, "new", "no replica", T0);
	cr_assert_eq(user->consecutive_failures, 1);
	cr_assert_geq(user->next_try, T0 + 600);
	cr_assert_leq(user->next_try, T0 + 750);
	cr_assert_str_eq(user->last_error, "no replica");
	cr_assert_str_eq(user->state, "");
	pop_none(user->next_try - 1);
	pop_name(user->next_try, "alice");
}

Test(queue, state_replaced_only_on_success)
{
	struct dovewarden_user *user;
	time_t now = T0;

	queue_new(0, 1, 1);
	dovewarden_queue_notify(queue, "alice", HIGH, now);
	user = pop_name(now, "alice");
	cr_assert_str_eq(user->state, "");
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "state1", NULL, now);
	cr_assert_str_eq(user->state, "state1");

	static const enum dovewarden_sync_result failures[] = {
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
		DOVEWARDEN_SYNC_RESULT_CONFIG,
		DOVEWARDEN_SYNC_RESULT_CHANGED,
	};
	for (unsigned int i = 0; i < N_ELEMENTS(failures); i++) {
		dovewarden_queue_notify(queue, "alice", HIGH, now);
		user = pop_name(now, "alice");
		dovewarden_queue_sync_finished(queue, user, failures[i],
					       "bad", "err", now);
		cr_assert_str_eq(user->state, "state1", "%s",
			dovewarden_sync_result_to_str(failures[i]));
		now += 100;
		finish_ok(pop_name(now, "alice"), now);
	}
	/* OK without a new state keeps the old one */
	dovewarden_queue_notify(queue, "alice", HIGH, now);
	user = pop_name(now, "alice");
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "", NULL, now);
	cr_assert_str_eq(user->state, "state1");
	dovewarden_queue_notify(queue, "alice", HIGH, now);
	user = pop_name(now, "alice");
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "state2", NULL, now);
	cr_assert_str_eq(user->state, "state2");
}

Test(queue, repeated_changed_makes_the_next_sync_full)
{
	struct dovewarden_user *user;
	time_t now = T0 + 100000;

	/* no periodic full syncs: only the CHANGED rule can ask for -f */
	queue_new(0, 1, 1);
	dovewarden_queue_notify(queue, "alice", HIGH, now);
	user = pop_name(now, "alice");
	finish_ok(user, now);
	dovewarden_queue_notify(queue, "alice", LOW, now);

	/* one CHANGED retries incrementally */
	user = pop_name(now, "alice");
	cr_assert(!user->syncing_full);
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_CHANGED, NULL, NULL, now);
	now += DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS;
	user = pop_name(now, "alice");
	cr_assert(!user->syncing_full);
	/* the second in a row: dsync can't sync incrementally */
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_CHANGED, NULL, NULL, now);
	now += DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS;
	user = pop_name(now, "alice");
	cr_assert(user->syncing_full);
	finish_ok(user, now);
	cr_assert_eq(user->consecutive_changed, 0);

	dovewarden_queue_notify(queue, "alice", LOW, now);
	user = pop_name(now, "alice");
	cr_assert(!user->syncing_full);
}

Test(queue, changed_retry_backs_off_past_the_full_sync)
{
	struct dovewarden_queue_settings set = { .retry_max_secs = 60 };
	static const unsigned int expected[] = {
		/* 1 and 2 retry soon; the second asks for a full sync */
		0, DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS,
		DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS,
		/* the full syncs answer CHANGED too */
		2 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS,
		4 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS,
		8 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS,
		16 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS,
		60, 60,
	};
	unsigned int i;

	for (i = 1; i < N_ELEMENTS(expected); i++) {
		cr_assert_eq(dovewarden_queue_changed_retry_secs(&set, i, FALSE),
			     expected[i], "CHANGED %u in a row: %u, not %u", i,
			     dovewarden_queue_changed_retry_secs(&set, i, FALSE),
			     expected[i]);
		/* a change notified during the sync: its clients keep the
		   user busy, and the next sync carries their changes */
		cr_assert_eq(dovewarden_queue_changed_retry_secs(&set, i, TRUE),
			     DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS);
	}
	cr_assert_eq(dovewarden_queue_changed_retry_secs(&set, 1000000,
							 FALSE), 60);
	/* never sooner than a single CHANGED's retry */
	set.retry_max_secs = 1;
	cr_assert_eq(dovewarden_queue_changed_retry_secs(&set, 5, FALSE),
		     DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS);
	/* a long failure back-off: a new change waits no longer than
	   DOVEWARDEN_QUEUE_CHANGED_RETRY_MAX_SECS */
	set.retry_max_secs = UINT_MAX;
	cr_assert_eq(dovewarden_queue_changed_retry_secs(&set, 1000, FALSE),
		     DOVEWARDEN_QUEUE_CHANGED_RETRY_MAX_SECS);
}

Test(queue, full_sync_that_keeps_changing_backs_off)
{
	const struct dovewarden_queue_settings set = {
		.retry_min_secs = 1, .retry_max_secs = 60,
	};
	struct dovewarden_user *user;
	time_t now = T0 + 100000;
	unsigned int i;

	queue_new(0, 1, 60);
	dovewarden_queue_notify(queue, "alice", HIGH, now);
	user = pop_name(now, "alice");
	finish_ok(user, now);
	dovewarden_queue_notify(queue, "alice", HIGH, now);
	for (i = 1; i <= 6; i++) {
		unsigned int wait =
			dovewarden_queue_changed_retry_secs(&set, i, FALSE);

		user = pop_name(now, "alice");
		cr_assert_eq(user->syncing_full,
			     i > DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT);
		dovewarden_queue_sync_finished(queue, user,
			DOVEWARDEN_SYNC_RESULT_CHANGED, NULL, NULL, now);
		/* not a failure, and not due before its wait */
		cr_assert_eq(user->consecutive_failures, 0);
		pop_none(now + wait - 1);
		now += wait;
	}
	cr_assert_eq(dovewarden_queue_changed_retry_secs(&set, 6, FALSE),
		     16 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS);
	/* a change during the sync: retried soon, still fully */
	user = pop_name(now, "alice");
	cr_assert(user->syncing_full);
	dovewarden_queue_notify(queue, "alice", LOW, now);
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_CHANGED, NULL, NULL, now);
	pop_none(now + DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS - 1);
	now += DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS;
	user = pop_name(now, "alice");
	cr_assert(user->syncing_full);
	finish_ok(user, now);
	cr_assert_eq(user->consecutive_changed, 0);
}

Test(queue, changed_resyncs_soon_without_failure)
{
	struct dovewarden_user *user;

	queue_new(0, 60, 3600);
	dovewarden_queue_notify(queue, "alice", SYNC, T0);
	user = pop_name(T0, "alice");
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_CHANGED, NULL, NULL, T0 + 5);
	cr_assert_eq(user->consecutive_failures, 0);
	cr_assert_null(user->last_error);
	/* the change the sync started with is still pending */
	cr_assert_eq(user->priority, SYNC);
	pop_none(T0 + 5);
	user = pop_name(T0 + 5 + DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS,
			"alice");
	finish_ok(user, T0 + 10);
	pop_none(T0 + 100000);
}

Test(queue, failed_sync_keeps_its_place)
{
	struct dovewarden_user *user;

	queue_new(0, 10, 10);
	dovewarden_queue_notify(queue, "alice", HIGH, T0);
	user = pop_name(T0, "alice");
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0);
	cr_assert_eq(user->last_update, T0);
	/* a fresher HIGH change waits behind alice's older one once the
	   back-off is over */
	dovewarden_queue_notify(queue, "bob", HIGH, T0 + 5);
	pop_name(T0 + 5, "bob");
	dovewarden_queue_notify(queue, "carol", HIGH, T0 + 6);
	pop_name(T0 + 100, "alice");
	pop_name(T0 + 100, "carol");
}

Test(queue, nouser_removes)
{
	struct dovewarden_user *user;
	struct dovewarden_queue_stats stats;

	queue_new(3600, 10, 3600);
	dovewarden_queue_notify(queue, "ghost", HIGH, T0);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	user = pop_name(T0, "ghost");
	dovewarden_queue_notify(queue, "ghost", HIGH, T0);
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_NOUSER, NULL, "no such user", T0);
	cr_assert_null(dovewarden_queue_lookup(queue, "ghost"));
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.users, 1);
	cr_assert_eq(stats.syncing, 0);
	cr_assert_eq(stats.pending[LOW], 1);
	cr_assert_eq(stats.pending[HIGH], 0);
	pop_name(T0, "alice");
	pop_none(T0 + 10);
}

Test(queue, remove_queued_and_idle)
{
	struct dovewarden_user *user;

	queue_new(3600, 10, 3600);
	dovewarden_queue_notify(queue, "alice", HIGH, T0);
	dovewarden_queue_notify(queue, "bob", LOW, T0);
	dovewarden_queue_add(queue, "carol", T0);
	dovewarden_queue_remove(queue, dovewarden_queue_lookup(queue, "alice"));
	dovewarden_queue_remove(queue, dovewarden_queue_lookup(queue, "carol"));
	cr_assert_null(dovewarden_queue_lookup(queue, "alice"));
	user = pop_name(T0, "bob");
	pop_none(T0 + 7200);
	finish_ok(user, T0);
	dovewarden_queue_remove(queue, user);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
}

Test(queue, remove_while_syncing)
{
	static const enum dovewarden_sync_result results[] = {
		DOVEWARDEN_SYNC_RESULT_OK,
		DOVEWARDEN_SYNC_RESULT_CHANGED,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
		DOVEWARDEN_SYNC_RESULT_NOUSER,
		DOVEWARDEN_SYNC_RESULT_CONFIG,
	};
	struct dovewarden_user *user, *user2;
	struct dovewarden_queue_stats stats;
	unsigned int i;

	queue_new(3600, 10, 3600);
	for (i = 0; i < N_ELEMENTS(results); i++) {
		dovewarden_queue_notify(queue, "alice", HIGH, T0);
		user = pop_name(T0, "alice");
		dovewarden_queue_notify(queue, "alice", SYNC, T0);
		dovewarden_queue_remove(queue, user);
		cr_assert_null(dovewarden_queue_lookup(queue, "alice"));
		dovewarden_queue_get_stats(queue, T0, &stats);
		cr_assert_eq(stats.users, 0);
		cr_assert_eq(stats.syncing, 0);

		/* the name is free for a new user meanwhile */
		user2 = dovewarden_queue_notify(queue, "alice", LOW, T0);
		cr_assert_neq(user2, user);
		dovewarden_queue_sync_finished(queue, user, results[i],
					       "state", "err", T0);
		cr_assert_eq(dovewarden_queue_lookup(queue, "alice"), user2);
		user = pop_name(T0, "alice");
		cr_assert_eq(user, user2);
		finish_ok(user, T0);
		dovewarden_queue_remove(queue, user);
		pop_none(T0 + 100000);
	}
}

Test(queue, deinit_frees_syncing_and_removed_users)
{
	struct dovewarden_user *user;

	queue_new(3600, 10, 3600);
	dovewarden_queue_notify(queue, "alice", HIGH, T0);
	dovewarden_queue_notify(queue, "bob", HIGH, T0 + 1);
	dovewarden_queue_notify(queue, "carol", HIGH, T0 + 2);
	dovewarden_queue_add(queue, "dave", T0);
	user = pop_name(T0 + 3, "alice");
	dovewarden_queue_remove(queue, user);
	pop_name(T0 + 3, "bob");
	dovewarden_queue_deinit(&queue);
	cr_assert_null(queue);
}

Test(queue, full_sync_after_interval)
{
	struct dovewarden_user *user;

	queue_new(3600, 10, 3600);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	/* never fully synced: the first sync is full */
	user = pop_name(T0, "alice");
	cr_assert(user->syncing_full);
	cr_assert_eq(user->last_full_sync, T0);
	cr_assert_eq(user->last_fast_sync, T0);
	finish_ok(user, T0 + 10);
	cr_assert(!user->syncing_full);
	cr_assert_eq(dovewarden_queue_next_due(queue), T0 + 3600);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 3600);

	/* a change: incremental */
	dovewarden_queue_notify(queue, "alice", HIGH, T0 + 100);
	user = pop_name(T0 + 100, "alice");
	cr_assert(!user->syncing_full);
	cr_assert_eq(user->last_full_sync, T0);
	cr_assert_eq(user->last_fast_sync, T0 + 100);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), 0);
	finish_ok(user, T0 + 110);

	pop_none(T0 + 3599);
	user = pop_name(T0 + 3600, "alice");
	cr_assert(user->syncing_full);
	cr_assert_eq(user->last_full_sync, T0 + 3600);
	finish_ok(user, T0 + 3600);
	cr_assert_eq(dovewarden_queue_next_due(queue), T0 + 7200);
}

static struct dovewarden_user *
restore_user(const char *name, time_t last_full_sync, time_t now)
{
	struct dovewarden_user fields;

	i_zero(&fields);
	fields.username = t_strdup_noconst(name);
	fields.priority = NONE;
	fields.last_update = last_full_sync;
	fields.last_fast_sync = last_full_sync;
	fields.last_full_sync = last_full_sync;
	fields.last_successful_sync = last_full_sync;
	return dovewarden_queue_restore(queue, &fields, now);
}

Test(queue, stats_due_and_waiting)
{
	struct dovewarden_queue_stats stats;
	struct dovewarden_user *user;

	queue_new(3600, 30, 3600);
	restore_user("idle", T0 - 100, T0);
	restore_user("due", T0 - 3000, T0);
	dovewarden_queue_notify(queue, "fails", HIGH, T0);
	user = pop_name(T0, "fails");
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0);
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.failed, 1);
	cr_assert_eq(stats.failed_waiting, 1);
	cr_assert_eq(stats.full_sync_due, 0);
	cr_assert_eq(stats.pending[HIGH], 1);

	dovewarden_queue_get_stats(queue, T0 + 700, &stats);
	cr_assert_eq(stats.full_sync_due, 1);
	dovewarden_queue_get_stats(queue, user->next_try, &stats);
	cr_assert_eq(stats.failed, 1);
	cr_assert_eq(stats.failed_waiting, 0);
	dovewarden_queue_get_stats(queue, T0 + 3600, &stats);
	cr_assert_eq(stats.full_sync_due, 2);
	cr_assert_eq(stats.users, 3);
}

Test(queue, no_full_sync_without_interval)
{
	struct dovewarden_user *user;

	queue_new(0, 10, 3600);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	user = pop_name(T0, "alice");
	cr_assert(!user->syncing_full);
	finish_ok(user, T0);
	dovewarden_queue_add(queue, "bob", T0);
	pop_none(T0 + 10 * 365 * 86400L);
}

Test(queue, force_full_sync)
{
	struct dovewarden_user *user;

	queue_new(86400, 10, 3600);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	finish_ok(pop_name(T0, "alice"), T0);
	user = dovewarden_queue_lookup(queue, "alice");

	dovewarden_queue_force_full_sync(queue, user, NONE, T0 + 10);
	cr_assert(user->force_full_sync);
	cr_assert_geq(user->priority, LOW);
	user = pop_name(T0 + 10, "alice");
	cr_assert(user->syncing_full);
	cr_assert(!user->force_full_sync);

	/* a failed full sync is retried as a full sync */
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0 + 10);
	cr_assert(user->force_full_sync);
	user = pop_name(user->next_try, "alice");
	cr_assert(user->syncing_full);
	finish_ok(user, T0 + 100);
	cr_assert(!user->force_full_sync);

	/* forced while syncing: the next sync is full */
	dovewarden_queue_notify(queue, "alice", HIGH, T0 + 200);
	user = pop_name(T0 + 200, "alice");
	cr_assert(!user->syncing_full);
	dovewarden_queue_force_full_sync(queue, user, HIGH, T0 + 201);
	pop_none(T0 + 202);
	finish_ok(user, T0 + 203);
	user = pop_name(T0 + 203, "alice");
	cr_assert(user->syncing_full);
	finish_ok(user, T0 + 204);

	dovewarden_queue_notify(queue, "alice", HIGH, T0 + 300);
	cr_assert(!pop_name(T0 + 300, "alice")->syncing_full);
}

Test(queue, force_full_sync_ends_back_off)
{
	struct dovewarden_user *user;

	queue_new(86400, 10, 3600);
	dovewarden_queue_notify(queue, "alice", HIGH, T0);
	user = pop_name(T0, "alice");
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_CONFIG, NULL, "x", T0);
	cr_assert_gt(user->next_try, T0 + 3000);
	pop_none(T0 + 1);
	/* the admin's replicate -f runs now */
	dovewarden_queue_force_full_sync(queue, user, LOW, T0 + 1);
	user = pop_name(T0 + 1, "alice");
	cr_assert(user->syncing_full);
	finish_ok(user, T0 + 2);
}

Test(queue, added_user_with_a_change_syncs_fully_at_once)
{
	struct dovewarden_user *user;

	queue_new(86400, 10, 3600);
	user = dovewarden_queue_add(queue, "alice", T0);
	cr_assert_gt(dovewarden_queue_user_get_next_sync(user), T0);
	/* a change before its slot: the first sync runs now, and it is
	   full, because the user was never fully synced */
	dovewarden_queue_notify(queue, "alice", HIGH, T0 + 10);
	user = pop_name(T0 + 10, "alice");
	cr_assert(user->syncing_full);
	finish_ok(user, T0 + 10);
	/* then the periodic full sync follows the last one */
	cr_assert_eq(dovewarden_queue_next_due(queue), T0 + 10 + 86400);
}

Test(queue, next_due)
{
	struct dovewarden_user *user;

	queue_new(3600, 30, 3600);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	dovewarden_queue_notify(queue, "alice", LOW, T0);
	cr_assert_eq(dovewarden_queue_next_due(queue), T0);
	user = pop_name(T0 + 5, "alice");
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0 + 5);
	cr_assert_eq(dovewarden_queue_next_due(queue), user->next_try);
	/* a due user comes first, and stays reported in the past */
	dovewarden_queue_notify(queue, "bob", LOW, T0 + 6);
	cr_assert_eq(dovewarden_queue_next_due(queue), T0 + 6);
	cr_assert_leq(dovewarden_queue_next_due(queue), T0 + 1000);
	finish_ok(pop_name(T0 + 7, "bob"), T0 + 7);
	cr_assert_eq(dovewarden_queue_next_due(queue), user->next_try);
}

Test(queue, stats)
{
	struct dovewarden_queue_stats stats;
	struct dovewarden_user *user;

	queue_new(3600, 30, 3600);
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.users, 0);

	dovewarden_queue_notify(queue, "a", LOW, T0);
	dovewarden_queue_notify(queue, "b", HIGH, T0);
	dovewarden_queue_notify(queue, "c", SYNC, T0);
	dovewarden_queue_notify(queue, "d", HIGH, T0);
	dovewarden_queue_add(queue, "e", T0);
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.users, 5);
	cr_assert_eq(stats.syncing, 0);
	cr_assert_eq(stats.pending[NONE], 1);
	cr_assert_eq(stats.pending[LOW], 1);
	cr_assert_eq(stats.pending[HIGH], 2);
	cr_assert_eq(stats.pending[SYNC], 1);
	cr_assert_eq(stats.failed, 0);

	user = pop_name(T0, "c");
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.syncing, 1);
	cr_assert_eq(stats.pending[SYNC], 0);
	cr_assert_eq(stats.pending[NONE], 2);
	dovewarden_queue_notify(queue, "c", LOW, T0);
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.pending[LOW], 2);
	dovewarden_queue_sync_finished(queue, user,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "x", T0);
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.syncing, 0);
	cr_assert_eq(stats.failed, 1);
	cr_assert_eq(stats.pending[SYNC], 1);
	cr_assert_eq(stats.pending[LOW], 1);
	cr_assert_eq(stats.users, 5);

	finish_ok(pop_name(user->next_try, "c"), user->next_try);
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.failed, 0);
}

Test(queue, iterate)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	unsigned int i, seen = 0;

	queue_new(3600, 30, 3600);
	for (i = 0; i < 1000; i++) {
		dovewarden_queue_notify(queue, t_strdup_printf("u%u", i),
					i % DOVEWARDEN_PRIORITY_COUNT, T0);
	}
	user = dovewarden_queue_pop(queue, T0);
	cr_assert_not_null(user);
	dovewarden_queue_remove(queue, dovewarden_queue_lookup(queue, "u7"));

	iter = dovewarden_queue_iter_init(queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		cr_assert_str_neq(user->username, "u7");
		seen++;
	}
	dovewarden_queue_iter_deinit(&iter);
	cr_assert_null(iter);
	cr_assert_eq(seen, 999);
}

static unsigned int count_syncing(const char *absent)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	unsigned int seen = 0;

	iter = dovewarden_queue_iter_init_syncing(queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		cr_assert(user->syncing);
		if (absent != NULL)
			cr_assert_str_neq(user->username, absent);
		seen++;
	}
	dovewarden_queue_iter_deinit(&iter);
	cr_assert_null(iter);
	return seen;
}

Test(queue, iterate_syncing)
{
	struct dovewarden_user *users[4];
	unsigned int i;

	queue_new(3600, 30, 3600);
	cr_assert_eq(count_syncing(NULL), 0);
	for (i = 0; i < 100; i++) {
		dovewarden_queue_notify(queue, t_strdup_printf("u%u", i),
					HIGH, T0);
	}
	for (i = 0; i < N_ELEMENTS(users); i++) {
		users[i] = dovewarden_queue_pop(queue, T0);
		cr_assert_not_null(users[i]);
	}
	cr_assert_eq(count_syncing(NULL), 4);

	/* removed while syncing: no longer listed */
	dovewarden_queue_remove(queue, users[1]);
	cr_assert_eq(count_syncing(users[1]->username), 3);
	finish_ok(users[1], T0);
	finish_ok(users[0], T0);
	cr_assert_eq(count_syncing(NULL), 2);
	dovewarden_queue_sync_finished(queue, users[2],
				       DOVEWARDEN_SYNC_RESULT_NOUSER, NULL,
				       NULL, T0);
	cr_assert_eq(count_syncing(NULL), 1);
	dovewarden_queue_sync_finished(queue, users[3],
				       DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL,
				       "failed", T0);
	cr_assert_eq(count_syncing(NULL), 0);
	/* popped again after its back-off */
	users[0] = dovewarden_queue_pop(queue, T0 + 7200);
	cr_assert_not_null(users[0]);
	cr_assert_eq(count_syncing(NULL), 1);
}

Test(queue, hostile_usernames)
{
	static const char *const names[] = {
		"tab\tuser", "lf\nuser", "\001", "\xc3\xbc", "a", "A",
	};
	unsigned int i;

	queue_new(0, 30, 3600);
	for (i = 0; i < N_ELEMENTS(names); i++)
		dovewarden_queue_notify(queue, names[i], LOW, T0 + i);
	for (i = 0; i < N_ELEMENTS(names); i++) {
		cr_assert_str_eq(dovewarden_queue_lookup(queue,
			names[i])->username, names[i]);
		pop_name(T0 + 10, names[i]);
	}
}

Test(queue, sync_result_from_reply)
{
	static const struct {
		const char *line;
		enum dovewarden_sync_result result;
	} tests[] = {
		{ "+", DOVEWARDEN_SYNC_RESULT_OK },
		{ "+\t", DOVEWARDEN_SYNC_RESULT_OK },
		{ "-CHANGED", DOVEWARDEN_SYNC_RESULT_CHANGED },
		{ "-TEMPFAIL", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		/* -UNKNOWN: see sync_result_unknown */
		{ "-NOUSER", DOVEWARDEN_SYNC_RESULT_NOUSER },
		{ "-NOREPLICATE", DOVEWARDEN_SYNC_RESULT_NOUSER },
		{ "-USAGE", DOVEWARDEN_SYNC_RESULT_CONFIG },
		/* also "Mailbox was deleted under us": a race */
		{ "-NOTFOUND", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-NOPERM", DOVEWARDEN_SYNC_RESULT_CONFIG },
		{ "-REFERRAL", DOVEWARDEN_SYNC_RESULT_CONFIG },
		{ "-DATAERR", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-PROTOCOL", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-EXPIRED", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-WHATEVER", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-nouser", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-NOUSERX", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "-NOUSER\textra", DOVEWARDEN_SYNC_RESULT_NOUSER },
		{ "", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "++", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ "OK", DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
		{ NULL, DOVEWARDEN_SYNC_RESULT_TEMPFAIL },
	};
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(tests); i++) {
		cr_assert_eq(dovewarden_sync_result_from_reply(tests[i].line,
							       FALSE),
			     tests[i].result, "line %u", i);
	}
}

Test(queue, sync_result_unknown)
{
	/* 2.3's doveadm-server answers UNKNOWN where 2.4's answers CHANGED;
	   after a full sync it backs off (see the header) */
#if DOVECOT_PREREQ(2, 4, 0)
	cr_assert_eq(dovewarden_sync_result_from_reply("-UNKNOWN", FALSE),
		     DOVEWARDEN_SYNC_RESULT_TEMPFAIL);
#else
	cr_assert_eq(dovewarden_sync_result_from_reply("-UNKNOWN", FALSE),
		     DOVEWARDEN_SYNC_RESULT_CHANGED);
#endif
	cr_assert_eq(dovewarden_sync_result_from_reply("-UNKNOWN", TRUE),
		     DOVEWARDEN_SYNC_RESULT_TEMPFAIL);
	cr_assert_eq(dovewarden_sync_result_from_reply("-CHANGED", TRUE),
		     DOVEWARDEN_SYNC_RESULT_CHANGED);
}

Test(queue, sync_result_to_str)
{
	cr_assert_str_eq(dovewarden_sync_result_to_str(
		DOVEWARDEN_SYNC_RESULT_OK), "ok");
	cr_assert_str_eq(dovewarden_sync_result_to_str(
		DOVEWARDEN_SYNC_RESULT_CHANGED), "changed");
	cr_assert_str_eq(dovewarden_sync_result_to_str(
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL), "tempfail");
	cr_assert_str_eq(dovewarden_sync_result_to_str(
		DOVEWARDEN_SYNC_RESULT_NOUSER), "nouser");
	cr_assert_str_eq(dovewarden_sync_result_to_str(
		DOVEWARDEN_SYNC_RESULT_CONFIG), "config");
}

/* Randomized soak: random operations, with the queue's invariants checked
   against a brute-force view after each one. */

#define SOAK_USERS 150
#define SOAK_OPS 30000

struct soak_user {
	struct dovewarden_user *user;
	/* a change arrived since the last sync started */
	bool dirty;
};

static struct soak_user soak_users[SOAK_USERS];
static uint32_t soak_seed;

/* Reproducible: a failure can be replayed with the same seed */
static unsigned int soak_rand(void)
{
	soak_seed ^= soak_seed << 13;
	soak_seed ^= soak_seed >> 17;
	soak_seed ^= soak_seed << 5;
	return soak_seed;
}
static unsigned int soak_interval;

static time_t
soak_boost(enum dovewarden_priority priority)
{
	switch (priority) {
	case NONE:
		return 0;
	case LOW:
		return DOVEWARDEN_QUEUE_LOW_BOOST_SECS;
	case HIGH:
		return DOVEWARDEN_QUEUE_HIGH_BOOST_SECS;
	case SYNC:
		return DOVEWARDEN_QUEUE_SYNC_BOOST_SECS;
	}
	return 0;
}

/* When the user is due, by the documented rules; 0 = never */
static time_t soak_due(const struct dovewarden_user *user)
{
	if (user->priority != NONE || user->consecutive_failures > 0)
		return user->next_try;
	if (soak_interval == 0)
		return 0;
	if (user->first_full_sync != 0)
		return user->first_full_sync;
	return user->last_full_sync + soak_interval;
}

static void soak_check(time_t now)
{
	struct dovewarden_queue_stats stats;
	unsigned int counts[DOVEWARDEN_PRIORITY_COUNT] = { 0 };
	unsigned int i, known = 0, syncing = 0, failed = 0;

	for (i = 0; i < SOAK_USERS; i++) {
		struct dovewarden_user *user = soak_users[i].user;

		if (user == NULL)
			continue;
		cr_assert_eq(dovewarden_queue_lookup(queue, user->username),
			     user);
		known++;
		counts[user->priority]++;
		if (user->consecutive_failures > 0)
			failed++;
		if (user->syncing) {
			syncing++;
			cr_assert(!user->queued);
			continue;
		}
		/* queued, or idle with nothing to do */
		if (user->priority != NONE) {
			cr_assert(user->queued, "%s pending, not queued",
				  user->username);
			cr_assert_leq(user->pending_key,
				      user->last_update -
				      soak_boost(user->priority));
		} else if (!user->queued) {
			cr_assert_eq(soak_interval, 0);
			cr_assert_eq(user->consecutive_failures, 0);
		}
		if (soak_users[i].dirty) {
			cr_assert_neq(user->priority, NONE,
				      "%s changed, but nothing pending "
				      "(queued=%d failures=%u)",
				      user->username, user->queued,
				      user->consecutive_failures);
		}
		if (user->queued && !user->queued_ready)
			cr_assert_eq(user->queue_due, soak_due(user));
		cr_assert_geq(user->last_fast_sync, user->last_full_sync);
		cr_assert_geq(user->last_fast_sync,
			      user->last_successful_sync);
	}
	dovewarden_queue_get_stats(queue, now, &stats);
	cr_assert_eq(stats.users, known);
	cr_assert_eq(stats.syncing, syncing);
	cr_assert_eq(stats.failed, failed);
	for (i = 0; i < DOVEWARDEN_PRIORITY_COUNT; i++)
		cr_assert_eq(stats.pending[i], counts[i], "priority %u", i);
}

/* The user pop must return: due, and the smallest key among the due */
static void soak_check_pop(struct dovewarden_user *popped, time_t now)
{
	unsigned int i;
	time_t best = 0;
	bool have_best = FALSE;

	for (i = 0; i < SOAK_USERS; i++) {
		struct dovewarden_user *user = soak_users[i].user;
		time_t key, due;

		if (user == NULL || user->syncing || !user->queued)
			continue;
		due = soak_due(user);
		if (due > now)
			continue;
		key = user->priority != NONE ? user->pending_key : due;
		if (!have_best || key < best) {
			best = key;
			have_best = TRUE;
		}
	}
	if (popped == NULL) {
		cr_assert(!have_best, "a user was due, but pop found none");
		return;
	}
	cr_assert_leq(popped->queue_due, now);
	/* popped has already been changed by pop(): use its saved key */
	if (have_best) {
		cr_assert_leq(popped->syncing_priority != NONE ?
			      popped->syncing_pending_key :
			      popped->queue_due, best);
	}
}

static void soak_run(unsigned int interval, unsigned int seed)
{
	static const enum dovewarden_sync_result results[] = {
		DOVEWARDEN_SYNC_RESULT_OK, DOVEWARDEN_SYNC_RESULT_OK,
		DOVEWARDEN_SYNC_RESULT_OK, DOVEWARDEN_SYNC_RESULT_CHANGED,
		DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
		DOVEWARDEN_SYNC_RESULT_CONFIG, DOVEWARDEN_SYNC_RESULT_NOUSER,
	};
	struct dovewarden_user *user;
	time_t now = T0;
	unsigned int op, i, max_failures = 0;

	soak_seed = seed;
	soak_interval = interval;
	queue_new(interval, 5, 600);
	i_zero(&soak_users);

	for (op = 0; op < SOAK_OPS; op++) {
		i = soak_rand() % SOAK_USERS;
		const char *name = t_strdup_printf("user%u\t\n", i);

		switch (soak_rand() % 10) {
		case 0:
		case 1:
		case 2: {
			enum dovewarden_priority prio =
				soak_rand() % DOVEWARDEN_PRIORITY_COUNT;
			soak_users[i].user =
				dovewarden_queue_notify(queue, name, prio, now);
			if (prio != NONE)
				soak_users[i].dirty = TRUE;
			break;
		}
		case 3:
			soak_users[i].user =
				dovewarden_queue_add(queue, name, now);
			break;
		case 4:
		case 5:
			user = dovewarden_queue_pop(queue, now);
			soak_check_pop(user, now);
			if (user != NULL) {
				cr_assert(user->syncing);
				cr_assert_eq(user->priority, NONE);
				for (i = 0; i < SOAK_USERS; i++) {
					if (soak_users[i].user == user)
						soak_users[i].dirty = FALSE;
				}
			}
			break;
		case 6: {
			/* finish a random syncing user */
			struct dovewarden_user *u = soak_users[i].user;
			enum dovewarden_sync_result result =
				results[soak_rand() % N_ELEMENTS(results)];

			if (u == NULL || !u->syncing)
				break;
			dovewarden_queue_sync_finished(queue, u, result,
						       "st", "err", now);
			if (result == DOVEWARDEN_SYNC_RESULT_NOUSER) {
				soak_users[i].user = NULL;
				soak_users[i].dirty = FALSE;
			} else {
				if (result != DOVEWARDEN_SYNC_RESULT_OK)
					soak_users[i].dirty = TRUE;
				max_failures = I_MAX(max_failures,
						     u->consecutive_failures);
			}
			break;
		}
		case 7:
			if (soak_users[i].user == NULL || soak_rand() % 4 != 0)
				break;
			if (soak_users[i].user->syncing) {
				/* removed while syncing, then finished */
				struct dovewarden_user *u = soak_users[i].user;

				dovewarden_queue_remove(queue, u);
				dovewarden_queue_sync_finished(queue, u,
					DOVEWARDEN_SYNC_RESULT_OK, NULL, NULL,
					now);
			} else {
				dovewarden_queue_remove(queue,
							soak_users[i].user);
			}
			soak_users[i].user = NULL;
			soak_users[i].dirty = FALSE;
			break;
		case 8:
			if (soak_users[i].user != NULL &&
			    soak_rand() % 4 == 0) {
				dovewarden_queue_force_full_sync(queue,
					soak_users[i].user,
					soak_rand() % DOVEWARDEN_PRIORITY_COUNT,
					now);
				soak_users[i].dirty = TRUE;
			}
			break;
		case 9:
			now += soak_rand() % 120;
			break;
		}
		soak_check(now);
	}

	/* drain: with every sync succeeding, all changes get replicated */
	for (i = 0; i < SOAK_USERS; i++) {
		user = soak_users[i].user;
		if (user != NULL && user->syncing)
			finish_ok(user, now);
	}
	now += 10000;
	for (op = 0; (user = dovewarden_queue_pop(queue, now)) != NULL; op++) {
		cr_assert_lt(op, 100000);
		finish_ok(user, now);
	}
	for (i = 0; i < SOAK_USERS; i++)
		soak_users[i].dirty = FALSE;
	soak_check(now);
	for (i = 0; i < SOAK_USERS; i++) {
		user = soak_users[i].user;
		if (user == NULL)
			continue;
		cr_assert_eq(user->priority, NONE, "%s", user->username);
		cr_assert(!user->syncing);
	}
	cr_assert_gt(max_failures, 1);
}

Test(queue, soak_without_full_syncs)
{
	soak_run(0, 1);
	soak_run(0, 2);
}

Test(queue, soak_with_full_syncs)
{
	soak_run(3600, 3);
	soak_run(600, 4);
}

static void
queue_new_settle(unsigned int full_interval, unsigned int delay,
		 unsigned int max)
{
	struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = full_interval,
		.retry_min_secs = 10,
		.retry_max_secs = 3600,
		.settle_delay_secs = delay,
		.settle_max_secs = max,
	};

	if (queue != NULL)
		dovewarden_queue_deinit(&queue);
	queue = dovewarden_queue_init(&set);
}

/* a change replicated by an incremental sync at now */
static struct dovewarden_user *
change_and_sync(const char *username, enum dovewarden_priority priority,
		time_t now)
{
	struct dovewarden_user *user;

	(void)dovewarden_queue_notify(queue, username, priority, now);
	user = pop_name(now, username);
	cr_assert(!user->syncing_full);
	finish_ok(user, now);
	return user;
}

Test(queue, settle_after_quiet_delay)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 10, 300);
	user = change_and_sync("alice", LOW, T0);
	cr_assert_eq(user->settle_first_change, T0);
	cr_assert_eq(user->settle_last_change, T0);
	cr_assert_eq(dovewarden_queue_next_due(queue), T0 + 10);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 10);
	pop_none(T0 + 9);

	user = pop_name(T0 + 10, "alice");
	cr_assert(user->syncing_full);
	cr_assert(user->syncing_settle);
	cr_assert_eq(user->syncing_priority, NONE);
	finish_ok(user, T0 + 11);
	cr_assert_eq(user->last_verified, T0 + 10);
	cr_assert_eq(user->last_full_sync, T0 + 10);
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(user->settle_last_change, 0);
	/* verified: nothing more to do */
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	pop_none(T0 + 1000);
}

/* The settle rule for a plugin that reports dsync's changes: a client
   change and an import of the same user within the settle delay (or an
   import while a client change is not replicated yet) need a settle;
   either alone does not */
static struct dovewarden_user *
client_change_and_sync(const char *username, time_t now)
{
	struct dovewarden_user *user;

	(void)dovewarden_queue_notify_kind(queue, username, HIGH,
					   DOVEWARDEN_QUEUE_SETTLE_CLIENT,
					   now);
	user = pop_name(now, username);
	finish_ok(user, now);
	return user;
}

static void import(const char *username, time_t now)
{
	(void)dovewarden_queue_notify_kind(queue, username, NONE,
					   DOVEWARDEN_QUEUE_SETTLE_IMPORT,
					   now);
}

Test(queue, settle_only_changes_on_both_servers)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 10, 300);
	user = client_change_and_sync("alice", T0);
	/* client changes alone: no settle */
	user = client_change_and_sync("alice", T0 + 100);
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	/* an import long after them: no settle, and no sync */
	import("alice", T0 + 200);
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(user->priority, NONE);
	pop_none(T0 + 1000);
	/* a client change within the delay after an import: settle */
	import("alice", T0 + 2000);
	user = client_change_and_sync("alice", T0 + 2005);
	cr_assert_eq(user->settle_first_change, T0 + 2005);
	user = pop_name(T0 + 2015, "alice");
	cr_assert(user->syncing_settle && user->syncing_full);
	finish_ok(user, T0 + 2016);
	cr_assert_eq(user->settle_first_change, 0);

	/* an import while a client change waits (here: during its sync,
	   as when the sync imports the other server's changes): settle */
	user = client_change_and_sync("bob", T0);
	(void)dovewarden_queue_notify_kind(queue, "bob", HIGH,
					   DOVEWARDEN_QUEUE_SETTLE_CLIENT,
					   T0 + 500);
	user = pop_name(T0 + 500, "bob");
	import("bob", T0 + 500);
	finish_ok(user, T0 + 501);
	cr_assert_eq(user->settle_first_change, T0 + 500);
	cr_assert_eq(dovewarden_queue_next_due(queue), T0 + 510);
}

Test(queue, settle_import_of_a_waiting_change)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 10, 300);
	user = client_change_and_sync("alice", T0);
	/* a change still waiting (e.g. in back-off) a long time: an
	   import then overlaps it */
	(void)dovewarden_queue_notify_kind(queue, "alice", LOW,
					   DOVEWARDEN_QUEUE_SETTLE_CLIENT,
					   T0 + 100);
	import("alice", T0 + 1000);
	cr_assert_eq(user->settle_first_change, T0 + 1000);
}

Test(queue, settle_restarts_on_change)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 10, 300);
	(void)change_and_sync("alice", LOW, T0);
	user = change_and_sync("alice", HIGH, T0 + 8);
	cr_assert_eq(user->settle_first_change, T0);
	cr_assert_eq(user->settle_last_change, T0 + 8);
	pop_none(T0 + 10);
	pop_none(T0 + 17);
	user = pop_name(T0 + 18, "alice");
	cr_assert(user->syncing_settle && user->syncing_full);
	finish_ok(user, T0 + 19);

	/* a change to an idle user with a pending settle (no sync between)
	   moves it too */
	(void)dovewarden_queue_notify(queue, "bob", LOW, T0 + 20);
	user = pop_name(T0 + 20, "bob");
	finish_ok(user, T0 + 20);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 30);
	user = dovewarden_queue_notify(queue, "bob", LOW, T0 + 25);
	user = pop_name(T0 + 25, "bob");
	cr_assert(!user->syncing_full);
	finish_ok(user, T0 + 25);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 35);
}

Test(queue, no_settle_after_full_sync)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 10, 300);
	user = change_and_sync("alice", LOW, T0);
	/* a forced full sync after the last change covers it */
	dovewarden_queue_force_full_sync(queue, user, LOW, T0 + 2);
	user = pop_name(T0 + 2, "alice");
	cr_assert(user->syncing_full);
	cr_assert(!user->syncing_settle);
	finish_ok(user, T0 + 3);
	cr_assert_eq(user->last_verified, T0 + 2);
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	pop_none(T0 + 100);

	/* so does a user's first sync, which is a full one */
	queue_new_settle(3600, 10, 300);
	(void)dovewarden_queue_notify(queue, "bob", HIGH, T0);
	user = pop_name(T0, "bob");
	cr_assert(user->syncing_full);
	finish_ok(user, T0 + 1);
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 3600);
}

Test(queue, settle_goes_after_interactive_changes)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 10, 300);
	(void)change_and_sync("alice", LOW, T0);
	/* alice's settle is due at T0 + 10; bob and carol change later */
	(void)dovewarden_queue_notify(queue, "bob", LOW, T0 + 20);
	(void)dovewarden_queue_notify(queue, "carol", HIGH, T0 + 20);
	user = pop_name(T0 + 20, "carol");
	cr_assert(!user->syncing_settle);
	user = pop_name(T0 + 20, "bob");
	cr_assert(!user->syncing_settle);
	user = pop_name(T0 + 20, "alice");
	cr_assert(user->syncing_settle);
}

Test(queue, settle_before_periodic_full_sync)
{
	struct dovewarden_user *user;

	queue_new_settle(3600, 10, 300);
	(void)dovewarden_queue_notify(queue, "alice", LOW, T0);
	user = pop_name(T0, "alice");
	cr_assert(user->syncing_full);
	finish_ok(user, T0);
	user = change_and_sync("alice", LOW, T0 + 100);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 110);
	user = pop_name(T0 + 110, "alice");
	cr_assert(user->syncing_settle);
	finish_ok(user, T0 + 111);
	/* the periodic full sync counts from the settle */
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user),
		     T0 + 110 + 3600);
}

Test(queue, settle_failure_retried_as_full)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 10, 300);
	(void)change_and_sync("alice", LOW, T0);
	user = pop_name(T0 + 10, "alice");
	cr_assert(user->syncing_settle);
	dovewarden_queue_sync_finished(queue, user,
				       DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
				       NULL, "peer down", T0 + 11);
	cr_assert_eq(user->last_verified, 0);
	cr_assert_eq(user->settle_first_change, T0);
	cr_assert(user->force_full_sync);
	user = dovewarden_queue_pop(queue, T0 + 1000);
	cr_assert_not_null(user);
	cr_assert(user->syncing_full);
	finish_ok(user, T0 + 1001);
	cr_assert_eq(user->last_verified, T0 + 1000);
	cr_assert_eq(user->settle_first_change, 0);
}

Test(queue, settle_off)
{
	struct dovewarden_user *user;

	queue_new_settle(0, 0, 300);
	user = change_and_sync("alice", LOW, T0);
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(dovewarden_queue_next_due(queue), 0);
	pop_none(T0 + 1000);
}

Test(queue, settle_restored)
{
	struct dovewarden_user fields, *user;

	queue_new_settle(0, 10, 300);
	i_zero(&fields);
	fields.username = (char *)"alice";
	fields.last_full_sync = T0 - 100;
	fields.settle_first_change = T0;
	fields.settle_last_change = T0 + 5;
	fields.last_verified = T0 - 100;
	fields.last_repaired = T0 - 50;
	user = dovewarden_queue_restore(queue, &fields, T0 + 6);
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 15);
	cr_assert_eq(user->last_repaired, T0 - 50);
	pop_none(T0 + 14);
	user = pop_name(T0 + 15, "alice");
	cr_assert(user->syncing_settle);
}

/* An import marks the user's dsync state stale: the next sync (or the
   one it came during) is told once to run a follow-up; a failed sync
   keeps the mark, since the user keeps its old state; a user restored
   with a state has it */
static struct dovewarden_user *client_change_pop(const char *username,
						 time_t now)
{
	struct dovewarden_user *user;

	(void)dovewarden_queue_notify_kind(queue, username, HIGH,
					   DOVEWARDEN_QUEUE_SETTLE_CLIENT,
					   now);
	user = pop_name(now, username);
	cr_assert(!user->syncing_full);
	return user;
}

Test(queue, import_marks_state_stale)
{
	struct dovewarden_user *user;

	/* no settle: its full syncs would come between */
	queue_new_settle(0, 0, 0);
	/* no import: not stale */
	user = client_change_pop("alice", T0);
	cr_assert(!dovewarden_queue_take_state_stale(user));
	finish_ok(user, T0);

	/* an import before the sync: stale, told once */
	import("alice", T0 + 100);
	user = client_change_pop("alice", T0 + 200);
	cr_assert(dovewarden_queue_take_state_stale(user));
	cr_assert(!dovewarden_queue_take_state_stale(user));
	finish_ok(user, T0 + 200);

	/* an import while the sync runs: stale */
	user = client_change_pop("alice", T0 + 300);
	import("alice", T0 + 300);
	cr_assert(dovewarden_queue_take_state_stale(user));
	finish_ok(user, T0 + 300);
	user = client_change_pop("alice", T0 + 400);
	cr_assert(!dovewarden_queue_take_state_stale(user));
	finish_ok(user, T0 + 400);

	/* a failed sync (here its follow-up) keeps it for the retry */
	import("alice", T0 + 500);
	user = client_change_pop("alice", T0 + 600);
	cr_assert(dovewarden_queue_take_state_stale(user));
	dovewarden_queue_sync_finished(queue, user,
				       DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
				       NULL, "failed", T0 + 600);
	user = pop_name(T0 + 1000, "alice");
	cr_assert(!user->syncing_full);
	cr_assert(dovewarden_queue_take_state_stale(user));
	finish_ok(user, T0 + 1000);
}

Test(queue, a_restored_state_is_stale)
{
	struct dovewarden_user fields, *user;

	queue_new_settle(0, 10, 300);
	i_zero(&fields);
	fields.username = t_strdup_noconst("alice");
	fields.state = t_strdup_noconst("some-state");
	fields.priority = HIGH;
	fields.last_update = T0;
	fields.last_fast_sync = T0 - 100;
	fields.last_successful_sync = T0 - 100;
	(void)dovewarden_queue_restore(queue, &fields, T0);
	user = pop_name(T0, "alice");
	cr_assert(dovewarden_queue_take_state_stale(user));
	finish_ok(user, T0);
	/* without a state, the sync has nothing to follow up */
	fields.username = t_strdup_noconst("bob");
	fields.state = t_strdup_noconst("");
	(void)dovewarden_queue_restore(queue, &fields, T0);
	user = pop_name(T0, "bob");
	cr_assert(!dovewarden_queue_take_state_stale(user));
	finish_ok(user, T0);
}
