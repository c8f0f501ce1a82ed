/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "md5.h"
#include "dovewarden-compat.h"
#include "dovewarden-queue-rules.h"

bool dovewarden_queue_settle_concurrent(const struct dovewarden_queue_settings *set,
					time_t other_time, bool other_pending,
					time_t now)
{
	if (set->settle_delay_secs == 0)
		return FALSE;
	if (other_pending)
		return TRUE;
	/* a time in the future (the clock went back) counts as now */
	return other_time != 0 &&
		now - other_time <= (time_t)set->settle_delay_secs;
}

time_t dovewarden_queue_priority_boost(enum dovewarden_priority priority)
{
	switch (priority) {
	case DOVEWARDEN_PRIORITY_NONE:
		return 0;
	case DOVEWARDEN_PRIORITY_LOW:
		return DOVEWARDEN_QUEUE_LOW_BOOST_SECS;
	case DOVEWARDEN_PRIORITY_HIGH:
		return DOVEWARDEN_QUEUE_HIGH_BOOST_SECS;
	case DOVEWARDEN_PRIORITY_SYNC:
		return DOVEWARDEN_QUEUE_SYNC_BOOST_SECS;
	}
	i_unreached();
}

unsigned int dovewarden_queue_background_slots(unsigned int max_syncs)
{
	return max_syncs <= 1 ? max_syncs :
		max_syncs - I_MAX(1U, max_syncs / 4);
}

/* A user's slot is a fixed phase of the wall clock within the interval,
   picked by a hash of its name: users spread evenly, and a restart
   neither moves the slot nor postpones it. Returns the first time after
   now in the slot. */
time_t dovewarden_queue_full_sync_slot(const char *username,
				       unsigned int interval, time_t now)
{
	unsigned char digest[MD5_RESULTLEN];
	uint32_t hash;
	time_t phase, first = now + 1;

	if (interval == 0)
		return 0;
	/* not str_hash(): it is keyed randomly per process. MD5 also
	   spreads similar names (user1, user2, ...) well. */
	md5_get_digest(username, strlen(username), digest);
	hash = ((uint32_t)digest[0] << 24) | ((uint32_t)digest[1] << 16) |
		((uint32_t)digest[2] << 8) | digest[3];
	phase = hash % interval;

	return first + (phase - first % interval + interval) % interval;
}

unsigned int
dovewarden_queue_retry_secs(const struct dovewarden_queue_settings *set,
			    unsigned int failures, bool config)
{
	unsigned long long secs = I_MAX(set->retry_min_secs, 1U);
	unsigned int max = I_MAX(set->retry_max_secs, secs);
	unsigned int i;

	if (config)
		return max;
	for (i = 1; i < failures && secs < max; i++)
		secs *= 2;
	return I_MIN(secs, max);
}

unsigned int dovewarden_queue_retry_jitter(unsigned int secs)
{
	return i_rand_limit(secs / 4 + 1);
}

unsigned int
dovewarden_queue_changed_retry_secs(const struct dovewarden_queue_settings *set,
				    unsigned int changed, bool busy)
{
	unsigned int secs = DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS;
	unsigned int max = I_MAX(I_MIN(set->retry_max_secs,
				       DOVEWARDEN_QUEUE_CHANGED_RETRY_MAX_SECS),
				 secs);
	unsigned int i;

	if (busy)
		return secs;
	for (i = DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT;
	     i < changed && secs <= max / 2; i++)
		secs *= 2;
	return i < changed ? max : secs;
}

long long
dovewarden_queue_next_sync_secs(const struct dovewarden_queue_next_sync *next,
				unsigned int full_sync_interval_secs,
				time_t now)
{
	time_t due = next->due;

	if (next->syncing)
		return 0;
	if (due == 0) {
		if (next->waiting)
			due = next->next_try;
		else if (full_sync_interval_secs == 0 ||
			 next->last_full_sync == 0) {
			/* never, or at its slot, which only the queue
			   knows */
			return -1;
		}
		else {
			due = I_MAX(next->last_full_sync +
				    (time_t)full_sync_interval_secs,
				    next->next_try);
		}
	}
	return due <= now ? 0 : (long long)(due - now);
}

enum dovewarden_sync_result
dovewarden_sync_result_from_reply(const char *line, bool full_sync)
{
	const char *code;

	if (line == NULL)
		return DOVEWARDEN_SYNC_RESULT_TEMPFAIL;
	if (line[0] == '+' && (line[1] == '\0' || line[1] == '\t'))
		return DOVEWARDEN_SYNC_RESULT_OK;
	if (line[0] != '-')
		return DOVEWARDEN_SYNC_RESULT_TEMPFAIL;

	code = t_strcut(line + 1, '\t');
	if (strcmp(code, "CHANGED") == 0)
		return DOVEWARDEN_SYNC_RESULT_CHANGED;
	if (!DOVEWARDEN_DOVEADM_HAS_CHANGED && strcmp(code, "UNKNOWN") == 0) {
		/* 2.3 answers UNKNOWN for dsync's "changed during the sync"
		   but for other exit codes too. The second CHANGED in a row
		   makes the next sync full: when that one fails too, back
		   off instead of retrying every few seconds. */
		return full_sync ? DOVEWARDEN_SYNC_RESULT_TEMPFAIL :
			DOVEWARDEN_SYNC_RESULT_CHANGED;
	}
	if (strcmp(code, "NOUSER") == 0 || strcmp(code, "NOREPLICATE") == 0)
		return DOVEWARDEN_SYNC_RESULT_NOUSER;
	/* retrying these soon cannot help: the setup is wrong. Not
	   NOTFOUND: dsync answers it also when a mailbox is deleted during
	   the sync ("Mailbox was deleted under us"), which the next sync
	   gets right. */
	if (strcmp(code, "USAGE") == 0 || strcmp(code, "NOPERM") == 0 ||
	    strcmp(code, "REFERRAL") == 0)
		return DOVEWARDEN_SYNC_RESULT_CONFIG;
	return DOVEWARDEN_SYNC_RESULT_TEMPFAIL;
}

const char *dovewarden_sync_result_to_str(enum dovewarden_sync_result result)
{
	switch (result) {
	case DOVEWARDEN_SYNC_RESULT_OK:
		return "ok";
	case DOVEWARDEN_SYNC_RESULT_CHANGED:
		return "changed";
	case DOVEWARDEN_SYNC_RESULT_TEMPFAIL:
		return "tempfail";
	case DOVEWARDEN_SYNC_RESULT_NOUSER:
		return "nouser";
	case DOVEWARDEN_SYNC_RESULT_CONFIG:
		return "config";
	}
	i_unreached();
}
