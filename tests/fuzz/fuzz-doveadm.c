/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for doveadm-server's replies to a sync: every line of the
   input as the output line (the new dsync state) and as the status line,
   dovewarden_sync_result_from_reply() in dovewarden-queue-rules.h, with
   the quote that the error shows. See fuzz-target.h. */

#include "lib.h"
#include "str-sanitize.h"
#include "strescape.h"
#include "dovewarden-queue-rules.h"
#include "fuzz-target.h"

/* as in dovewarden-doveadm.c */
#define DOVEADM_REPLY_QUOTE_MAX 256

static void fuzz_line(const char *line, void *context ATTR_UNUSED)
{
	const char *const *args = t_strsplit_tabescaped(line);
	enum dovewarden_sync_result result;
	const char *quote;

	/* the output line: its first field is the new state */
	i_assert(args != NULL);
	(void)t_strdup(args[0] == NULL ? "" : args[0]);
	result = dovewarden_sync_result_from_reply(line, FALSE);
	i_assert(dovewarden_sync_result_to_str(result) != NULL);
	result = dovewarden_sync_result_from_reply(line, TRUE);
	i_assert(dovewarden_sync_result_to_str(result) != NULL);
	quote = str_sanitize(line, DOVEADM_REPLY_QUOTE_MAX);
	i_assert(strlen(quote) <= DOVEADM_REPLY_QUOTE_MAX + 3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	fuzz_foreach_line(data, size, fuzz_line, NULL);
	return 0;
}
