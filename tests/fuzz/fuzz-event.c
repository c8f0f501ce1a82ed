/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the event exporter mapping (dovewarden-event.h); see
   fuzz-target.h. The unit suite runs it over tests/unit/data/events.
   The pool of the changes is made once and cleared after each input: a
   new one per input cost as much as a small input's parsing under
   ASan. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "dovewarden-event.h"
#include "fuzz-target.h"

static void fuzz_one(pool_t pool, const uint8_t *data, size_t size)
{
	ARRAY_TYPE(dovewarden_event_change) changes;
	const struct dovewarden_event_change *change;
	const char *error;

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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static pool_t pool = NULL;

	fuzz_init();
	if (pool == NULL)
		pool = pool_alloconly_create("fuzz event", 1024);
	fuzz_one(pool, data, size);
	p_clear(pool);
	return 0;
}
