/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "strescape.h"
#include "dovewarden-protocol.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "dovewarden-replicator-db.h"

/* 2.3's fields; the last one is missing in older files */
#define REPLICATOR_DB_MIN_FIELDS 7
/* A state without mailboxes: version (4 bytes) and CRC32 (4 bytes) */
#define REPLICATOR_DB_EMPTY_STATE_MAX_LEN 12
/* 2.3's replication_priority: none, low, high, sync */
#define REPLICATOR_DB_PRIORITY_MAX 3

struct replicator_db_import {
	struct dovewarden_queue *queue;
	time_t now;
};

bool dovewarden_replicator_db_state_is_empty(const char *state)
{
	return strlen(state) <= REPLICATOR_DB_EMPTY_STATE_MAX_LEN;
}

static enum dovewarden_priority replicator_db_priority(unsigned int priority)
{
	switch (priority) {
	case 0:
		return DOVEWARDEN_PRIORITY_NONE;
	case 1:
		return DOVEWARDEN_PRIORITY_LOW;
	default:
		/* 2 (high) and 3 (a client waited for the sync) */
		return DOVEWARDEN_PRIORITY_HIGH;
	}
}

int dovewarden_replicator_db_parse_line(const char *line,
					struct dovewarden_user *fields_r,
					const char **reason_r)
{
	char **args;
	unsigned int priority;

	i_zero(fields_r);
	/* an escaped NUL would end a field early: "bob\0010x" would become
	   bob (2.3 never writes one) */
	if (strstr(line, "\001""0") != NULL) {
		*reason_r = "escaped NUL";
		return -1;
	}
	args = p_strsplit_tabescaped(pool_datastack_create(), line);
	if (str_array_length((const char *const *)args) <
	    REPLICATOR_DB_MIN_FIELDS) {
		*reason_r = "too few fields";
		return -1;
	}
	if (!dovewarden_username_is_valid(args[0])) {
		*reason_r = "invalid username";
		return -1;
	}
	if (str_to_uint(args[1], &priority) < 0 ||
	    priority > REPLICATOR_DB_PRIORITY_MAX) {
		*reason_r = "invalid priority";
		return -1;
	}
	if (!dovewarden_store_parse_time(args[2], &fields_r->last_update) ||
	    !dovewarden_store_parse_time(args[3], &fields_r->last_fast_sync) ||
	    !dovewarden_store_parse_time(args[4], &fields_r->last_full_sync) ||
	    (args[7] != NULL &&
	     !dovewarden_store_parse_time(args[7],
					  &fields_r->last_successful_sync))) {
		*reason_r = "invalid time";
		return -1;
	}
	if (strcmp(args[5], "1") == 0) {
		fields_r->consecutive_failures = 1;
		fields_r->last_error =
			t_strdup_noconst(DOVEWARDEN_REPLICATOR_DB_FAILED_ERROR);
	} else if (strcmp(args[5], "0") != 0) {
		*reason_r = "invalid last_sync_failed";
		return -1;
	}
	fields_r->username = args[0];
	fields_r->priority = replicator_db_priority(priority);
	fields_r->state = args[6];
	if (fields_r->consecutive_failures > 0 &&
	    fields_r->priority < DOVEWARDEN_PRIORITY_LOW) {
		/* 2.3 retried a failed user after its failure interval */
		fields_r->priority = DOVEWARDEN_PRIORITY_LOW;
	}
	if (fields_r->last_full_sync == 0 &&
	    !dovewarden_replicator_db_state_is_empty(fields_r->state)) {
		/* the state's mailboxes were synced before: no need for the
		   first full sync (0 if there is no time at all) */
		fields_r->last_full_sync =
			I_MAX(fields_r->last_fast_sync,
			      fields_r->last_successful_sync);
	}
	return 0;
}

/* 2.3's rule for a user on two lines: the later change wins, of two at
   the same time the higher priority */
static bool
replicator_db_replaces(const struct dovewarden_user *old,
		       const struct dovewarden_user *fields)
{
	if (old->last_update != fields->last_update)
		return fields->last_update > old->last_update;
	return fields->priority >= old->priority;
}

static bool
replicator_db_import_line(char *line, void *context, const char **reason_r)
{
	struct replicator_db_import *ctx = context;
	struct dovewarden_user fields, *old;

	if (dovewarden_replicator_db_parse_line(line, &fields, reason_r) < 0)
		return FALSE;
	old = dovewarden_queue_lookup(ctx->queue, fields.username);
	if (old != NULL) {
		if (!replicator_db_replaces(old, &fields))
			return TRUE;
		dovewarden_queue_remove(ctx->queue, old);
	}
	(void)dovewarden_queue_restore(ctx->queue, &fields, ctx->now);
	return TRUE;
}

int dovewarden_replicator_db_import(struct dovewarden_store *store,
				    const char *path,
				    struct dovewarden_queue *queue, time_t now,
				    struct dovewarden_store_load_result *result_r,
				    const char **error_r)
{
	struct replicator_db_import ctx = {
		.queue = queue,
		.now = now,
	};
	struct dovewarden_queue_stats before, after;
	int ret;

	i_zero(result_r);
	dovewarden_queue_get_counts(queue, &before);
	ret = dovewarden_store_read_file(store, path,
					 replicator_db_import_line, &ctx,
					 result_r, error_r);
	dovewarden_queue_get_counts(queue, &after);
	result_r->users_loaded = after.users - before.users;
	return ret;
}

void dovewarden_replicator_db_log_skipped(struct event *event,
					  const char *path,
					  const struct dovewarden_store_load_result *result)
{
	if (result->snapshot_lines_skipped == 0)
		return;
	e_warning(event, "%s: Skipped %u lines that are not valid (first at "
		  "line %u)", path, result->snapshot_lines_skipped,
		  result->snapshot_first_skipped_line);
	dovewarden_store_log_quarantine(event, result);
}
