/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_LOG_LIMIT_H
#define DOVEWARDEN_LOG_LIMIT_H

/* Limits a kind of log line to max_per_window lines in each window of
   window_secs, so that a flood of bad input or failures can't fill the
   log. Zero-initialize the counters; set the two limits. */
struct dovewarden_log_limit {
	unsigned int window_secs;
	unsigned int max_per_window;

	time_t window_start;
	unsigned int count;
	unsigned int suppressed;
};

/* Returns TRUE when one more line may be logged at now. When a new window
   begins after lines were suppressed in the previous one, *suppressed_r
   is set to how many (else 0), for the caller to log a summary in its own
   words before its line. */
bool dovewarden_log_limit_allow(struct dovewarden_log_limit *limit,
				time_t now, unsigned int *suppressed_r);

#endif
