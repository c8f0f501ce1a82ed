/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "dovewarden-log-limit.h"

#include <criterion/criterion.h>

#define T0 1700000000

Test(log_limit, allows_max_per_window_then_reports_the_rest)
{
	struct dovewarden_log_limit limit = {
		.window_secs = 60,
		.max_per_window = 3,
	};
	unsigned int i, suppressed;

	for (i = 0; i < 3; i++) {
		cr_assert(dovewarden_log_limit_allow(&limit, T0 + i,
						     &suppressed));
		cr_assert_eq(suppressed, 0);
	}
	for (i = 0; i < 5; i++) {
		cr_assert(!dovewarden_log_limit_allow(&limit, T0 + 59,
						      &suppressed));
		cr_assert_eq(suppressed, 0);
	}
	/* a new window: the first line is allowed and learns of the 5 */
	cr_assert(dovewarden_log_limit_allow(&limit, T0 + 60, &suppressed));
	cr_assert_eq(suppressed, 5);
	cr_assert(dovewarden_log_limit_allow(&limit, T0 + 61, &suppressed));
	cr_assert_eq(suppressed, 0);
}

Test(log_limit, quiet_window_reports_nothing)
{
	struct dovewarden_log_limit limit = {
		.window_secs = 10,
		.max_per_window = 1,
	};
	unsigned int suppressed;

	cr_assert(dovewarden_log_limit_allow(&limit, T0, &suppressed));
	cr_assert(dovewarden_log_limit_allow(&limit, T0 + 100, &suppressed));
	cr_assert_eq(suppressed, 0);
}
