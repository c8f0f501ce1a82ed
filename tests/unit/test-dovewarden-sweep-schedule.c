/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "str.h"
#include "dovewarden-queue-backend-private.h"
#include "dovewarden-sweep-schedule.h"
#include "dovewarden-metrics.h"

#include <criterion/criterion.h>

/* When the userdb sweep runs, with a queue backend whose lock answers
   what the test says: a lock that could not be asked for (e.g. Redis
   did not answer) is asked for again soon; a lock that someone else has
   means the sweep ran within the interval, and it waits that long. */

static struct ioloop *ioloop;
static struct event *event;
static struct dovewarden_queue_backend *backend;
static unsigned int lock_calls;
static const char *lock_error;

static struct dovewarden_queue_backend *
fake_init(const struct dovewarden_queue_backend_settings *set ATTR_UNUSED,
	  struct event *event ATTR_UNUSED, const char **error_r ATTR_UNUSED)
{
	return i_new(struct dovewarden_queue_backend, 1);
}

static void fake_deinit(struct dovewarden_queue_backend *backend)
{
	i_free(backend);
}

static void
fake_try_lock(struct dovewarden_queue_backend *backend ATTR_UNUSED,
	      const char *name ATTR_UNUSED, unsigned int secs ATTR_UNUSED,
	      dovewarden_queue_backend_lock_callback_t *callback,
	      void *context)
{
	lock_calls++;
	/* never acquired: no sweep starts */
	callback(FALSE, lock_error, context);
	io_loop_stop(ioloop);
}

static void fake_unlock(struct dovewarden_queue_backend *backend ATTR_UNUSED,
			const char *name ATTR_UNUSED)
{
}

/* only what the sweep schedule calls */
static const struct dovewarden_queue_backend_driver fake_driver = {
	.name = "fake",
	.v = {
		.init = fake_init,
		.deinit = fake_deinit,
		.try_lock = fake_try_lock,
		.unlock = fake_unlock,
	},
};

static void suite_init(void)
{
	struct dovewarden_queue_backend_settings set;
	const char *error;

	lib_init();
	ioloop = io_loop_create();
	event = event_create(NULL);
	dovewarden_queue_backend_driver_register(&fake_driver);
	i_zero(&set);
	backend = dovewarden_queue_backend_init("fake", &set, NULL, NULL,
						NULL, &error);
	cr_assert_not_null(backend, "%s", error);
	dovewarden_metrics_reset();
	lock_calls = 0;
}

static void suite_fini(void)
{
	dovewarden_queue_backend_deinit(&backend);
	dovewarden_queue_backend_driver_unregister(&fake_driver);
	event_unref(&event);
	io_loop_destroy(&ioloop);
	lib_deinit();
}

TestSuite(sweep_schedule, .init = suite_init, .fini = suite_fini);

static void users_added(void *context ATTR_UNUSED)
{
	cr_assert_fail("no sweep should run");
}

static void run_timeout(void *context ATTR_UNUSED)
{
	io_loop_stop(ioloop);
}

/* Start the schedule and wait for its first try of the lock */
static struct dovewarden_sweep_schedule *schedule_start(void)
{
	struct dovewarden_sweep_schedule *sched;
	struct timeout *to;

	sched = dovewarden_sweep_schedule_init(3600, "/nonexistent/auth",
					       backend, event, users_added,
					       NULL);
	to = timeout_add(1000, run_timeout, NULL);
	io_loop_run(ioloop);
	timeout_remove(&to);
	cr_assert_eq(lock_calls, 1);
	return sched;
}

static bool sweeps_skipped_is(unsigned int count)
{
	struct dovewarden_metrics_gauges gauges;
	string_t *str = t_str_new(4096);
	const char *line = t_strdup_printf(
		"\ndovewarden_userdb_sweeps_skipped_total %u\n", count);

	i_zero(&gauges);
	dovewarden_metrics_render(str, &gauges, ioloop_time);
	return strstr(str_c(str), line) != NULL;
}

Test(sweep_schedule, a_lock_that_failed_is_tried_again_soon)
{
	struct dovewarden_sweep_schedule *sched;

	lock_error = "Redis is not connected";
	sched = schedule_start();
	cr_assert(sweeps_skipped_is(0));
	/* the queue is back: at once, not an interval later */
	dovewarden_sweep_schedule_queue_ready(sched);
	cr_assert_eq(lock_calls, 2);
	cr_assert(sweeps_skipped_is(0));
	dovewarden_sweep_schedule_deinit(&sched);
}

Test(sweep_schedule, a_lock_held_elsewhere_waits_the_interval)
{
	struct dovewarden_sweep_schedule *sched;

	lock_error = NULL;
	sched = schedule_start();
	cr_assert(sweeps_skipped_is(1));
	dovewarden_sweep_schedule_queue_ready(sched);
	cr_assert_eq(lock_calls, 1);
	dovewarden_sweep_schedule_deinit(&sched);
}
