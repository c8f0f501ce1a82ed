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
#include "fuzz-queue.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_store ctx;

	fuzz_init();
	i_zero(&ctx);
	ctx.queue = fuzz_queue_get();
	fuzz_foreach_line(data, size, fuzz_line, &ctx);
	T_BEGIN {
		fuzz_queue_run(ctx.queue);
	} T_END;
	fuzz_queue_clear(ctx.queue);
	return 0;
}
