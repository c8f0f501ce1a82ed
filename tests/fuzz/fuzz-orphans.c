/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the lines of the started dsyncs' record,
   dovewarden_orphans_parse_line() in dovewarden-orphans.h: every line of
   the input. See fuzz-target.h. */

#include "lib.h"
#include "dovewarden-protocol.h"
#include "dovewarden-orphans.h"
#include "fuzz-target.h"

static void fuzz_line(const char *line, void *context ATTR_UNUSED)
{
	const char *username, *reason = NULL;
	time_t started;
	pid_t master_pid;

	switch (dovewarden_orphans_parse_line(line, &started, &master_pid,
					      &username, &reason)) {
	case 1:
		i_assert(started > 0 && master_pid > 0);
		i_assert(dovewarden_username_is_valid(username));
		break;
	case 0:
		i_assert(started == 0 && master_pid == 0);
		i_assert(dovewarden_username_is_valid(username));
		break;
	default:
		i_assert(reason != NULL && username == NULL);
		i_assert(started == 0 && master_pid == 0);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	fuzz_foreach_line(data, size, fuzz_line, NULL);
	return 0;
}
