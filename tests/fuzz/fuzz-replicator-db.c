/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for Dovecot 2.3's replicator.db lines
   (dovewarden-replicator-db.h): every line of the input parsed and its
   user restored into a queue, as the import does, then the queue
   schedules, syncs and reports them. See fuzz-target.h. */

#include "lib.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "dovewarden-replicator-db.h"
#include "fuzz-target.h"
#include "fuzz-queue.h"

static void fuzz_line(const char *line, void *context)
{
	struct dovewarden_queue *queue = context;
	struct dovewarden_user fields;
	const char *reason;

	if (dovewarden_replicator_db_parse_line(line, &fields, &reason) < 0) {
		i_assert(reason != NULL && reason[0] != '\0');
		return;
	}
	i_assert(dovewarden_username_is_valid(fields.username));
	i_assert(fields.priority < DOVEWARDEN_PRIORITY_SYNC);
	i_assert(fields.state != NULL);
	i_assert(fields.last_update <= DOVEWARDEN_STORE_MAX_TIME &&
		 fields.last_fast_sync <= DOVEWARDEN_STORE_MAX_TIME &&
		 fields.last_full_sync <= DOVEWARDEN_STORE_MAX_TIME &&
		 fields.last_successful_sync <= DOVEWARDEN_STORE_MAX_TIME);
	i_assert(fields.consecutive_failures <= 1);
	i_assert(fields.next_try == 0 && !fields.force_full_sync);
	if (dovewarden_queue_lookup(queue, fields.username) == NULL)
		(void)dovewarden_queue_restore(queue, &fields, FUZZ_NOW);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dovewarden_queue *queue;

	fuzz_init();
	queue = fuzz_queue_get();
	fuzz_foreach_line(data, size, fuzz_line, queue);
	T_BEGIN {
		fuzz_queue_run(queue);
	} T_END;
	fuzz_queue_clear(queue);
	return 0;
}
