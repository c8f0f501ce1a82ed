/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "strescape.h"
#include "strnum.h"
#include "unichar.h"
#include "dovewarden-compat.h"
#include "dovewarden-admin-protocol.h"

const char *const dovewarden_admin_status_keys[] = {
	[DOVEWARDEN_ADMIN_STATUS_PENDING_SYNC] = "pending_sync",
	[DOVEWARDEN_ADMIN_STATUS_PENDING_HIGH] = "pending_high",
	[DOVEWARDEN_ADMIN_STATUS_PENDING_LOW] = "pending_low",
	[DOVEWARDEN_ADMIN_STATUS_FULL_SYNC_DUE] = "full_sync_due",
	[DOVEWARDEN_ADMIN_STATUS_FAILED] = "failed",
	[DOVEWARDEN_ADMIN_STATUS_FAILED_WAITING] = "failed_waiting",
	[DOVEWARDEN_ADMIN_STATUS_SYNCING] = "syncing",
	[DOVEWARDEN_ADMIN_STATUS_USERS] = "users",
};
static_assert_array_size(dovewarden_admin_status_keys,
			 DOVEWARDEN_ADMIN_STATUS_COUNT);

bool dovewarden_admin_is_mask(const char *str)
{
	return strpbrk(str, "*?") != NULL;
}

static int parse_user_or_mask(const char *str, const char **error_r)
{
	if (dovewarden_admin_is_mask(str)) {
		if (strlen(str) > DOVEWARDEN_USERNAME_MAX_LENGTH ||
		    !uni_utf8_str_is_valid(str)) {
			*error_r = "Invalid user mask (too long or not UTF-8)";
			return -1;
		}
		return 0;
	}
	if (!dovewarden_username_is_valid(str)) {
		*error_r = str[0] == '\0' ? "Empty username" :
			"Invalid username (too long or not UTF-8)";
		return -1;
	}
	return 0;
}

static int
parse_replicate(const char *const *args, unsigned int count,
		struct dovewarden_admin_request *req, const char **error_r)
{
	const char *p;

	if (count != 4) {
		*error_r = "REPLICATE: Expected 4 fields";
		return -1;
	}
	if (!dovewarden_priority_parse(args[1], &req->priority) ||
	    req->priority == DOVEWARDEN_PRIORITY_NONE) {
		*error_r = "REPLICATE: Invalid priority "
			"(expected low, high or sync)";
		return -1;
	}
	for (p = args[2]; *p != '\0'; p++) {
		if (*p != DOVEWARDEN_ADMIN_FLAG_FULL) {
			*error_r = "REPLICATE: Unknown flag";
			return -1;
		}
		req->full_sync = TRUE;
	}
	if (parse_user_or_mask(args[3], error_r) < 0)
		return -1;
	req->cmd = DOVEWARDEN_ADMIN_CMD_REPLICATE;
	req->mask = args[3];
	return 0;
}

int dovewarden_admin_parse_request(const char *const *args,
				   struct dovewarden_admin_request *req_r,
				   const char **error_r)
{
	unsigned int count = str_array_length(args);

	i_zero(req_r);
	if (count == 0 || args[0][0] == '\0') {
		*error_r = "Empty request line";
		return -1;
	}
	if (strcmp(args[0], "STATUS") == 0) {
		if (count == 1) {
			req_r->cmd = DOVEWARDEN_ADMIN_CMD_STATUS;
			return 0;
		}
		if (count != 2) {
			*error_r = "STATUS: Expected at most 2 fields";
			return -1;
		}
		if (parse_user_or_mask(args[1], error_r) < 0)
			return -1;
		req_r->cmd = DOVEWARDEN_ADMIN_CMD_STATUS_USERS;
		req_r->mask = args[1];
		return 0;
	}
	if (strcmp(args[0], "STATUS-DSYNC") == 0) {
		if (count != 1) {
			*error_r = "STATUS-DSYNC: Expected 1 field";
			return -1;
		}
		req_r->cmd = DOVEWARDEN_ADMIN_CMD_STATUS_DSYNC;
		return 0;
	}
	if (strcmp(args[0], "REPLICATE") == 0)
		return parse_replicate(args, count, req_r, error_r);
	if (strcmp(args[0], "ADD") == 0) {
		if (count != 2) {
			*error_r = "ADD: Expected 2 fields";
			return -1;
		}
		if (parse_user_or_mask(args[1], error_r) < 0)
			return -1;
		req_r->cmd = DOVEWARDEN_ADMIN_CMD_ADD;
		req_r->mask = args[1];
		return 0;
	}
	if (strcmp(args[0], "REMOVE") == 0) {
		if (count != 2) {
			*error_r = "REMOVE: Expected 2 fields";
			return -1;
		}
		if (!dovewarden_username_is_valid(args[1])) {
			*error_r = "REMOVE: Invalid username";
			return -1;
		}
		req_r->cmd = DOVEWARDEN_ADMIN_CMD_REMOVE;
		req_r->mask = args[1];
		return 0;
	}
	*error_r = "Unknown command";
	return -1;
}

void dovewarden_admin_append_status(string_t *dest, const char *mask)
{
	str_append(dest, "STATUS");
	if (mask != NULL) {
		str_append_c(dest, '\t');
		str_append_tabescaped(dest, mask);
	}
	str_append_c(dest, '\n');
}

void dovewarden_admin_append_status_dsync(string_t *dest)
{
	str_append(dest, "STATUS-DSYNC\n");
}

void dovewarden_admin_append_replicate(string_t *dest,
				       enum dovewarden_priority priority,
				       bool full_sync, const char *mask)
{
	str_printfa(dest, "REPLICATE\t%s\t",
		    dovewarden_priority_to_str(priority));
	if (full_sync)
		str_append_c(dest, DOVEWARDEN_ADMIN_FLAG_FULL);
	str_append_c(dest, '\t');
	str_append_tabescaped(dest, mask);
	str_append_c(dest, '\n');
}

void dovewarden_admin_append_add(string_t *dest, const char *mask)
{
	str_append(dest, "ADD\t");
	str_append_tabescaped(dest, mask);
	str_append_c(dest, '\n');
}

void dovewarden_admin_append_remove(string_t *dest, const char *username)
{
	str_append(dest, "REMOVE\t");
	str_append_tabescaped(dest, username);
	str_append_c(dest, '\n');
}

void dovewarden_admin_append_stats(string_t *dest,
		const unsigned int values[DOVEWARDEN_ADMIN_STATUS_COUNT])
{
	unsigned int i;

	for (i = 0; i < DOVEWARDEN_ADMIN_STATUS_COUNT; i++) {
		str_printfa(dest, "%s\t%u\n", dovewarden_admin_status_keys[i],
			    values[i]);
	}
	str_append_c(dest, '\n');
}

void dovewarden_admin_append_user_status(string_t *dest,
		const struct dovewarden_admin_user_status *status)
{
	str_append_tabescaped(dest, status->username);
	str_printfa(dest, "\t%s\t%lld\t%lld\t%lld\t%u\t",
		    dovewarden_priority_to_str(status->priority),
		    (long long)status->last_fast_sync,
		    (long long)status->last_full_sync,
		    (long long)status->last_successful_sync,
		    status->consecutive_failures);
	if (status->next_sync_secs >= 0)
		str_printfa(dest, "%lld", status->next_sync_secs);
	str_append_c(dest, '\t');
	str_append_tabescaped(dest, status->last_error);
	str_printfa(dest, "\t%lld\t%lld\n", (long long)status->last_verified,
		    (long long)status->last_repaired);
}

void dovewarden_admin_append_dsync_status(string_t *dest,
		const struct dovewarden_admin_dsync_status *status)
{
	str_append_tabescaped(dest, status->username);
	str_append_c(dest, '\t');
	str_append_tabescaped(dest, status->type);
	str_append_c(dest, '\t');
	str_append_tabescaped(dest, status->state);
	str_printfa(dest, "\t%u\n", status->running_secs);
}

void dovewarden_admin_append_ok(string_t *dest, int count)
{
	if (count < 0)
		str_append(dest, "+\n");
	else
		str_printfa(dest, "+\t%d\n", count);
}

void dovewarden_admin_append_error(string_t *dest, const char *error)
{
	str_append(dest, "-\t");
	str_append_tabescaped(dest, error);
	str_append_c(dest, '\n');
}

static int parse_time(const char *str, time_t *time_r)
{
	long long value;

	if (str_to_llong(str, &value) < 0 || value < 0)
		return -1;
	*time_r = (time_t)value;
	return 0;
}

int dovewarden_admin_parse_stats_line(const char *const *args,
				      const char **key_r, const char **value_r,
				      const char **error_r)
{
	if (str_array_length(args) != 2 || args[0][0] == '\0') {
		*error_r = "Invalid STATUS line";
		return -1;
	}
	*key_r = args[0];
	*value_r = args[1];
	return 0;
}

int dovewarden_admin_parse_user_status(const char *const *args,
		struct dovewarden_admin_user_status *status_r,
		const char **error_r)
{
	unsigned int count = str_array_length(args);

	i_zero(status_r);
	if ((count != 8 && count != 10) ||
	    (count == 10 &&
	     (parse_time(args[8], &status_r->last_verified) < 0 ||
	      parse_time(args[9], &status_r->last_repaired) < 0)) ||
	    !dovewarden_priority_parse(args[1], &status_r->priority) ||
	    parse_time(args[2], &status_r->last_fast_sync) < 0 ||
	    parse_time(args[3], &status_r->last_full_sync) < 0 ||
	    parse_time(args[4], &status_r->last_successful_sync) < 0 ||
	    str_to_uint(args[5], &status_r->consecutive_failures) < 0) {
		*error_r = "Invalid user status line";
		return -1;
	}
	if (args[6][0] == '\0')
		status_r->next_sync_secs = -1;
	else if (str_to_llong(args[6], &status_r->next_sync_secs) < 0 ||
		 status_r->next_sync_secs < 0) {
		*error_r = "Invalid user status line";
		return -1;
	}
	status_r->username = args[0];
	status_r->last_error = args[7];
	return 0;
}

int dovewarden_admin_parse_dsync_status(const char *const *args,
		struct dovewarden_admin_dsync_status *status_r,
		const char **error_r)
{
	i_zero(status_r);
	if (str_array_length(args) != 4 ||
	    str_to_uint(args[3], &status_r->running_secs) < 0) {
		*error_r = "Invalid dsync status line";
		return -1;
	}
	status_r->username = args[0];
	status_r->type = args[1];
	status_r->state = args[2];
	return 0;
}

int dovewarden_admin_parse_reply(const char *const *args, bool *success_r,
				 int *count_r, const char **error_msg_r,
				 const char **error_r)
{
	unsigned int count = str_array_length(args);

	*success_r = FALSE;
	*count_r = -1;
	*error_msg_r = NULL;
	if (count == 1 && strcmp(args[0], "+") == 0) {
		*success_r = TRUE;
		return 0;
	}
	if (count == 2 && strcmp(args[0], "+") == 0) {
		if (str_to_int(args[1], count_r) < 0 || *count_r < 0) {
			*error_r = "Invalid count in reply";
			return -1;
		}
		*success_r = TRUE;
		return 0;
	}
	if (dovewarden_admin_is_error_line(args)) {
		*error_msg_r = args[1];
		return 0;
	}
	*error_r = "Invalid reply line";
	return -1;
}

bool dovewarden_admin_is_error_line(const char *const *args)
{
	return str_array_length(args) == 2 && strcmp(args[0], "-") == 0;
}
