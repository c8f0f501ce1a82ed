/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the state files' lines (dovewarden-store.h): the
   first line of the input as a snapshot's header, every further line as
   a user line (of the header's version, 2 if it is invalid) restored into
   a queue and as a journal line replayed into it, as
   dovewarden_store_load() does. Then the queue schedules, syncs and
   reports its users at a time after the restored ones, which exercises
   its arithmetic on the restored times. See fuzz-target.h. */

#include "lib.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "fuzz-target.h"

#define FUZZ_NOW ((time_t)1700000000)

struct fuzz_store {
	struct dovewarden_queue *queue;
	unsigned int version;
	bool header_seen;
};

static void fuzz_user_line(struct fuzz_store *ctx, const char *line)
{
	struct dovewarden_user fields;
	const char *reason;

	if (dovewarden_store_parse_user(t_strdup_noconst(line), ctx->version,
					&fields, &reason) < 0) {
		i_assert(reason != NULL && reason[0] != '\0');
		return;
	}
	i_assert(dovewarden_username_is_valid(fields.username));
	i_assert(fields.priority < DOVEWARDEN_PRIORITY_COUNT);
	if (dovewarden_queue_lookup(ctx->queue, fields.username) == NULL)
		(void)dovewarden_queue_restore(ctx->queue, &fields, FUZZ_NOW);
}

static void fuzz_journal_line(struct fuzz_store *ctx, const char *line)
{
	struct dovewarden_store_journal_record rec;
	struct dovewarden_user *user;
	const char *reason;

	if (dovewarden_store_parse_journal(line, &rec, &reason) < 0) {
		i_assert(reason != NULL && reason[0] != '\0');
		return;
	}
	i_assert(dovewarden_username_is_valid(rec.username));
	switch (rec.cmd) {
	case DOVEWARDEN_STORE_JOURNAL_NOTIFY:
		(void)dovewarden_queue_notify(ctx->queue, rec.username,
					      rec.priority, FUZZ_NOW);
		break;
	case DOVEWARDEN_STORE_JOURNAL_CLIENT:
	case DOVEWARDEN_STORE_JOURNAL_IMPORT:
		(void)dovewarden_queue_notify_kind(ctx->queue, rec.username,
			rec.priority, rec.cmd == DOVEWARDEN_STORE_JOURNAL_CLIENT ?
			DOVEWARDEN_QUEUE_SETTLE_CLIENT :
			DOVEWARDEN_QUEUE_SETTLE_IMPORT, FUZZ_NOW);
		break;
	case DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC:
		user = dovewarden_queue_lookup(ctx->queue, rec.username);
		if (user == NULL) {
			user = dovewarden_queue_add(ctx->queue, rec.username,
						    FUZZ_NOW);
		}
		dovewarden_queue_force_full_sync(ctx->queue, user,
						 rec.priority, FUZZ_NOW);
		break;
	case DOVEWARDEN_STORE_JOURNAL_REMOVE:
		user = dovewarden_queue_lookup(ctx->queue, rec.username);
		if (user != NULL)
			dovewarden_queue_remove(ctx->queue, user);
		break;
	}
}

static void fuzz_line(const char *line, void *context)
{
	struct fuzz_store *ctx = context;
	const char *writer;

	if (!ctx->header_seen) {
		ctx->header_seen = TRUE;
		ctx->version = dovewarden_store_parse_header(line, &writer);
		i_assert(ctx->version <= 2);
		i_assert(writer == NULL || ctx->version != 0);
		if (ctx->version == 0)
			ctx->version = 2;
		return;
	}
	fuzz_user_line(ctx, line);
	fuzz_journal_line(ctx, line);
}

static void fuzz_queue_run(struct dovewarden_queue *queue)
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

/* Forget every user: the queue is as new (its arrays keep their size) */
static void fuzz_queue_clear(struct dovewarden_queue *queue)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = 24 * 3600,
		.retry_min_secs = 60,
		.retry_max_secs = 3600,
		.settle_delay_secs = 5,
		.settle_max_secs = 300,
	};
	/* made once: a new queue for every input costs more than most
	   inputs' work (fresh pages for its arrays under ASan) */
	static struct dovewarden_queue *queue = NULL;
	struct fuzz_store ctx;

	fuzz_init();
	if (queue == NULL)
		queue = dovewarden_queue_init(&set);
	i_zero(&ctx);
	ctx.queue = queue;
	fuzz_foreach_line(data, size, fuzz_line, &ctx);
	T_BEGIN {
		fuzz_queue_run(ctx.queue);
	} T_END;
	fuzz_queue_clear(queue);
	return 0;
}
