/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "dovewarden-queue.h"
#include "fuzz-queue.h"

struct dovewarden_queue *fuzz_queue_get(void)
{
	static const struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = 24 * 3600,
		.retry_min_secs = 60,
		.retry_max_secs = 3600,
		.settle_delay_secs = 5,
		.settle_max_secs = 300,
	};
	static struct dovewarden_queue *queue = NULL;

	if (queue == NULL)
		queue = dovewarden_queue_init(&set);
	return queue;
}

void fuzz_queue_run(struct dovewarden_queue *queue)
{
	struct dovewarden_queue_stats stats;
	struct dovewarden_user *user;
	time_t now = FUZZ_NOW + 3600;
	unsigned int i;

	dovewarden_queue_get_stats(queue, now, &stats);
	(void)dovewarden_queue_get_oldest_pending(queue);
	(void)dovewarden_queue_next_due(queue);
	for (i = 0; i < 8; i++) {
		user = dovewarden_queue_pop(queue, now);
		if (user == NULL)
			break;
		(void)dovewarden_queue_user_get_next_sync(user);
		dovewarden_queue_sync_finished(queue, user,
			i % 2 == 0 ? DOVEWARDEN_SYNC_RESULT_OK :
			DOVEWARDEN_SYNC_RESULT_TEMPFAIL, "", "error", now);
	}
	(void)dovewarden_queue_next_due(queue);
	dovewarden_queue_get_stats(queue, now, &stats);
}

void fuzz_queue_clear(struct dovewarden_queue *queue)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_queue_stats stats;
	struct dovewarden_user *user;
	unsigned int i;

	iter = dovewarden_queue_iter_init(queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL)
		dovewarden_queue_remove(queue, user);
	dovewarden_queue_iter_deinit(&iter);
	dovewarden_queue_get_stats(queue, FUZZ_NOW, &stats);
	i_assert(stats.users == 0 && stats.syncing == 0 && stats.failed == 0);
	for (i = 0; i < DOVEWARDEN_PRIORITY_COUNT; i++)
		i_assert(stats.pending[i] == 0);
	i_assert(dovewarden_queue_get_oldest_pending(queue) == 0);
}
