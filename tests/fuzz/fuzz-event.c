/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the event exporter mapping (dovewarden-event.h); see
   fuzz-target.h. The unit suite runs it over tests/unit/data/events. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "dovewarden-event.h"
#include "fuzz-target.h"

static void fuzz_one(const uint8_t *data, size_t size)
{
	ARRAY_TYPE(dovewarden_event_change) changes;
	const struct dovewarden_event_change *change;
	const char *error;
	pool_t pool;

	pool = pool_alloconly_create("fuzz event", 1024);
	T_BEGIN {
		t_array_init(&changes, 4);
		if (dovewarden_event_parse(data, size, pool, &changes,
					   &error) < 0) {
			i_assert(error != NULL && error[0] != '\0');
			i_assert(array_count(&changes) == 0);
		} else {
			i_assert(size <= DOVEWARDEN_EVENT_MAX_BODY_SIZE);
			array_foreach(&changes, change) {
				i_assert(change->event_name != NULL);
				if (change->username == NULL) {
					i_assert(change->priority ==
						 DOVEWARDEN_PRIORITY_NONE);
					i_assert(change->ignore_reason != NULL);
				} else {
					i_assert(dovewarden_username_is_valid(
						change->username));
					i_assert(change->priority !=
						 DOVEWARDEN_PRIORITY_NONE);
				}
			}
		}
	} T_END;
	pool_unref(&pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	fuzz_one(data, size);
	return 0;
}
