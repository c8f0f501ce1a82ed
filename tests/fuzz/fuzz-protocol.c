/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the notify protocol (dovewarden-protocol.h): every
   line of the input through the service's request parser and the
   plugin's reply parser. See fuzz-target.h. */

#include "lib.h"
#include "str.h"
#include "strescape.h"
#include "dovewarden-protocol.h"
#include "fuzz-target.h"

static void fuzz_request(const char *const *args)
{
	struct dovewarden_notify_request req, req2;
	const char *error;
	string_t *line;

	if (dovewarden_notify_parse_request(args, &req, &error) < 0) {
		i_assert(error != NULL && error[0] != '\0');
		return;
	}
	i_assert(dovewarden_username_is_valid(req.username));
	i_assert(req.priority < DOVEWARDEN_PRIORITY_COUNT);

	/* what the plugin would send parses to the same request */
	line = t_str_new(128);
	if (req.cmd == DOVEWARDEN_NOTIFY_CMD_NOTIFY)
		dovewarden_notify_append_notify(line, req.username,
						req.priority);
	else if (req.cmd == DOVEWARDEN_NOTIFY_CMD_IMPORT) {
		i_assert(req.priority <= DOVEWARDEN_PRIORITY_LOW);
		dovewarden_notify_append_import(line, req.username,
						req.priority);
	} else {
		dovewarden_notify_append_wait(line, req.id, req.username,
					      req.timeout_msecs);
	}
	i_assert(str_len(line) > 0 && str_c(line)[str_len(line) - 1] == '\n');
	str_truncate(line, str_len(line) - 1);
	i_assert(dovewarden_notify_parse_request(
		t_strsplit_tabescaped(str_c(line)), &req2, &error) == 0);
	i_assert(req2.cmd == req.cmd);
	i_assert(strcmp(req2.username, req.username) == 0);
	if (req.cmd == DOVEWARDEN_NOTIFY_CMD_WAIT) {
		i_assert(req2.id == req.id);
		i_assert(req2.timeout_msecs == req.timeout_msecs);
	} else {
		i_assert(req2.priority == req.priority);
	}
}

static void fuzz_reply(const char *const *args)
{
	const char *reason, *error;
	unsigned int id;
	bool success;

	if (dovewarden_notify_parse_reply(args, &id, &success, &reason,
					  &error) < 0)
		i_assert(error != NULL && error[0] != '\0');
}

static void fuzz_line(const char *line, void *context ATTR_UNUSED)
{
	const char *const *args = t_strsplit_tabescaped(line);

	fuzz_request(args);
	fuzz_reply(args);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	fuzz_foreach_line(data, size, fuzz_line, NULL);
	return 0;
}
