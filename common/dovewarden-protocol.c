/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "strescape.h"
#include "strnum.h"
#include "unichar.h"
#include "dovewarden-protocol.h"

struct event_category event_category_dovewarden = {
	.name = "dovewarden",
};

static const char *const priority_names[DOVEWARDEN_PRIORITY_COUNT] = {
	[DOVEWARDEN_PRIORITY_NONE] = "none",
	[DOVEWARDEN_PRIORITY_LOW] = "low",
	[DOVEWARDEN_PRIORITY_HIGH] = "high",
	[DOVEWARDEN_PRIORITY_SYNC] = "sync",
};

const char *dovewarden_priority_to_str(enum dovewarden_priority priority)
{
	i_assert(priority < DOVEWARDEN_PRIORITY_COUNT);
	return priority_names[priority];
}

bool dovewarden_priority_parse(const char *str,
			       enum dovewarden_priority *priority_r)
{
	unsigned int i;

	for (i = 0; i < DOVEWARDEN_PRIORITY_COUNT; i++) {
		if (strcmp(str, priority_names[i]) == 0) {
			*priority_r = i;
			return TRUE;
		}
	}
	return FALSE;
}

bool dovewarden_username_is_valid(const char *username)
{
	const unsigned char *p = (const unsigned char *)username;
	size_t len = strlen(username);

	if (len == 0 || len > DOVEWARDEN_USERNAME_MAX_LENGTH)
		return FALSE;
	/* control bytes would forge log lines and mean nothing in a
	   username */
	for (; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return FALSE;
	}
	return uni_utf8_str_is_valid(username);
}

static void
notify_append_change(string_t *dest, const char *cmd, const char *username,
		     enum dovewarden_priority priority)
{
	str_append(dest, cmd);
	str_append_c(dest, '\t');
	str_append_tabescaped(dest, username);
	str_append_c(dest, '\t');
	str_append(dest, dovewarden_priority_to_str(priority));
	str_append_c(dest, '\n');
}

void dovewarden_notify_append_notify(string_t *dest, const char *username,
				     enum dovewarden_priority priority)
{
	notify_append_change(dest, "N", username, priority);
}

void dovewarden_notify_append_import(string_t *dest, const char *username,
				     enum dovewarden_priority priority)
{
	i_assert(priority <= DOVEWARDEN_PRIORITY_LOW);
	notify_append_change(dest, "I", username, priority);
}

void dovewarden_notify_append_wait(string_t *dest, unsigned int id,
				   const char *username,
				   unsigned int timeout_msecs)
{
	str_printfa(dest, "W\t%u\t", id);
	str_append_tabescaped(dest, username);
	str_printfa(dest, "\t%u\n", timeout_msecs);
}

void dovewarden_notify_append_reply(string_t *dest, unsigned int id,
				    bool success, const char *reason)
{
	if (success) {
		str_printfa(dest, "+\t%u\n", id);
		return;
	}
	str_printfa(dest, "-\t%u\t", id);
	str_append_tabescaped(dest, reason == NULL ? "" : reason);
	str_append_c(dest, '\n');
}

static int parse_username(const char *username, const char **error_r)
{
	if (!dovewarden_username_is_valid(username)) {
		*error_r = username[0] == '\0' ? "Empty username" :
			"Invalid username (too long, control characters or "
			"not UTF-8)";
		return -1;
	}
	return 0;
}

int dovewarden_notify_parse_request(const char *const *args,
				    struct dovewarden_notify_request *req_r,
				    const char **error_r)
{
	unsigned int count = str_array_length(args);

	i_zero(req_r);
	if (count == 0) {
		*error_r = "Empty request line";
		return -1;
	}
	if (strcmp(args[0], "N") == 0 || strcmp(args[0], "I") == 0) {
		bool import = args[0][0] == 'I';

		if (count != 3) {
			*error_r = import ? "I: Expected 3 fields" :
				"N: Expected 3 fields";
			return -1;
		}
		if (parse_username(args[1], error_r) < 0)
			return -1;
		if (!dovewarden_priority_parse(args[2], &req_r->priority) ||
		    (import && req_r->priority > DOVEWARDEN_PRIORITY_LOW)) {
			*error_r = import ? "I: Invalid priority" :
				"N: Invalid priority";
			return -1;
		}
		req_r->cmd = import ? DOVEWARDEN_NOTIFY_CMD_IMPORT :
			DOVEWARDEN_NOTIFY_CMD_NOTIFY;
		req_r->username = args[1];
		return 0;
	}
	if (strcmp(args[0], "W") == 0) {
		if (count != 4) {
			*error_r = "W: Expected 4 fields";
			return -1;
		}
		if (str_to_uint(args[1], &req_r->id) < 0 || req_r->id == 0) {
			*error_r = "W: Invalid id";
			return -1;
		}
		if (parse_username(args[2], error_r) < 0)
			return -1;
		if (str_to_uint(args[3], &req_r->timeout_msecs) < 0) {
			*error_r = "W: Invalid timeout";
			return -1;
		}
		req_r->cmd = DOVEWARDEN_NOTIFY_CMD_WAIT;
		req_r->username = args[2];
		req_r->priority = DOVEWARDEN_PRIORITY_SYNC;
		return 0;
	}
	*error_r = "Unknown command";
	return -1;
}

int dovewarden_notify_parse_reply(const char *const *args, unsigned int *id_r,
				  bool *success_r, const char **reason_r,
				  const char **error_r)
{
	unsigned int count = str_array_length(args);

	if (count < 2 || str_to_uint(args[1], id_r) < 0 || *id_r == 0) {
		*error_r = "Invalid reply line";
		return -1;
	}
	if (strcmp(args[0], "+") == 0 && count == 2) {
		*success_r = TRUE;
		*reason_r = NULL;
		return 0;
	}
	if (strcmp(args[0], "-") == 0 && count == 3) {
		*success_r = FALSE;
		*reason_r = args[2];
		return 0;
	}
	*error_r = "Invalid reply line";
	return -1;
}
