/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the admin protocol (dovewarden-admin-protocol.h):
   every line of the input through the service's request parser and
   the doveadm plugin's reply parsers. See fuzz-target.h. */

#include "lib.h"
#include "strescape.h"
#include "dovewarden-protocol.h"
#include "dovewarden-admin-protocol.h"
#include "fuzz-target.h"

static void fuzz_request(const char *const *args)
{
	struct dovewarden_admin_request req;
	const char *error;

	if (dovewarden_admin_parse_request(args, &req, &error) < 0) {
		i_assert(error != NULL && error[0] != '\0');
		return;
	}
	switch (req.cmd) {
	case DOVEWARDEN_ADMIN_CMD_STATUS:
	case DOVEWARDEN_ADMIN_CMD_STATUS_DSYNC:
		break;
	case DOVEWARDEN_ADMIN_CMD_REMOVE:
		i_assert(dovewarden_username_is_valid(req.mask));
		break;
	case DOVEWARDEN_ADMIN_CMD_REPLICATE:
		i_assert(req.priority > DOVEWARDEN_PRIORITY_NONE &&
			 req.priority < DOVEWARDEN_PRIORITY_COUNT);
		/* fall through */
	case DOVEWARDEN_ADMIN_CMD_STATUS_USERS:
	case DOVEWARDEN_ADMIN_CMD_ADD:
		i_assert(req.mask != NULL && req.mask[0] != '\0');
		if (!dovewarden_admin_is_mask(req.mask))
			i_assert(dovewarden_username_is_valid(req.mask));
		break;
	}
}

static void fuzz_replies(const char *const *args)
{
	struct dovewarden_admin_user_status user_status;
	struct dovewarden_admin_dsync_status dsync_status;
	const char *key, *value, *error_msg, *error;
	bool success;
	int count;

	if (dovewarden_admin_parse_stats_line(args, &key, &value,
					      &error) == 0)
		i_assert(key != NULL && value != NULL);
	else
		i_assert(error != NULL && error[0] != '\0');
	if (dovewarden_admin_parse_user_status(args, &user_status,
					       &error) == 0) {
		i_assert(user_status.username != NULL);
		i_assert(user_status.last_error != NULL);
		i_assert(user_status.priority < DOVEWARDEN_PRIORITY_COUNT);
	} else {
		i_assert(error != NULL && error[0] != '\0');
	}
	if (dovewarden_admin_parse_dsync_status(args, &dsync_status,
						&error) == 0) {
		i_assert(dsync_status.username != NULL);
		i_assert(dsync_status.type != NULL);
		i_assert(dsync_status.state != NULL);
	} else {
		i_assert(error != NULL && error[0] != '\0');
	}
	if (dovewarden_admin_parse_reply(args, &success, &count, &error_msg,
					 &error) == 0) {
		if (success)
			i_assert(count >= -1);
		else
			i_assert(error_msg != NULL);
	} else {
		i_assert(error != NULL && error[0] != '\0');
	}
	(void)dovewarden_admin_is_error_line(args);
}

static void fuzz_line(const char *line, void *context ATTR_UNUSED)
{
	const char *const *args = t_strsplit_tabescaped(line);

	fuzz_request(args);
	fuzz_replies(args);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	fuzz_foreach_line(data, size, fuzz_line, NULL);
	return 0;
}
