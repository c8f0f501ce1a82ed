/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the replica setting's parser,
   dovewarden_replica_parse() in dovewarden-settings.h: the whole input
   is the setting's value. See fuzz-target.h. */

#include "lib.h"
#include "dovewarden-compat.h"
#include "dovewarden-settings.h"
#include "fuzz-target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dest, *error;

	fuzz_init();
	T_BEGIN {
		if (dovewarden_replica_parse(t_strndup(data, size), &dest,
					     &error) == 0) {
			i_assert(dest != NULL);
			i_assert(dest[0] == '\0' ||
				 str_begins_with(dest, "tcp:") ||
				 str_begins_with(dest, "tcps:"));
		} else {
			i_assert(error != NULL && error[0] != '\0');
		}
	} T_END;
	return 0;
}
