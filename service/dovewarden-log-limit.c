/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "dovewarden-log-limit.h"

bool dovewarden_log_limit_allow(struct dovewarden_log_limit *limit,
				time_t now, unsigned int *suppressed_r)
{
	*suppressed_r = 0;
	if (limit->window_start + (time_t)limit->window_secs <= now) {
		*suppressed_r = limit->suppressed;
		limit->window_start = now;
		limit->count = 0;
		limit->suppressed = 0;
	}
	if (limit->count >= limit->max_per_window) {
		limit->suppressed++;
		return FALSE;
	}
	limit->count++;
	return TRUE;
}
