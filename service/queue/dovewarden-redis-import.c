/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "dovewarden-replicator-db.h"
#include "dovewarden-redis-queue.h"
#include "dovewarden-redis-import.h"

#include <stdio.h>
#include <sys/stat.h>

struct dovewarden_redis_import {
	struct event *event;
	struct dovewarden_queue *queue;
	char *path;
	unsigned int pending, imported_new, failed;
	/* path is Dovecot 2.3's replicator.db, not the built-in queue's
	   state */
	bool replicator_db:1;
	bool done:1;
	bool deinitialized:1;
};

struct dovewarden_redis_import *
dovewarden_redis_import_init(const char *path,
			     const struct dovewarden_queue_settings *set,
			     struct event *event, const char **error_r)
{
	struct dovewarden_redis_import *import;
	struct dovewarden_store_load_result result;
	struct dovewarden_store *store;
	struct stat st;
	const char *error;

	*error_r = NULL;
	if (stat(path, &st) < 0) {
		if (errno != ENOENT)
			*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		return NULL;
	}
	import = i_new(struct dovewarden_redis_import, 1);
	import->event = event;
	import->queue = dovewarden_queue_init(set);
	store = dovewarden_store_init(path);
	if (dovewarden_store_load(store, import->queue, ioloop_time, &result,
				  &error) < 0) {
		*error_r = t_strdup_printf(
			"Couldn't load %s to import it into Redis: %s",
			path, error);
		dovewarden_store_deinit(&store);
		dovewarden_queue_deinit(&import->queue);
		i_free(import);
		return NULL;
	}
	dovewarden_store_deinit(&store);
	import->path = i_strdup(path);
	e_info(event, "Found the built-in queue's state (%u users) in %s: "
	       "importing it into Redis", result.users_loaded, path);
	return import;
}

struct dovewarden_redis_import *
dovewarden_redis_import_init_replicator_db(const char *path,
					   const char *state_path,
					   const struct dovewarden_queue_settings *set,
					   struct event *event,
					   const char **error_r)
{
	struct dovewarden_redis_import *import;
	struct dovewarden_store_load_result result;
	struct dovewarden_store *store;
	const char *error;
	int ret;

	import = i_new(struct dovewarden_redis_import, 1);
	import->event = event;
	import->queue = dovewarden_queue_init(set);
	/* the built-in queue's files, for the quarantine: they exist only
	   when that state is imported instead */
	store = dovewarden_store_init(state_path);
	if ((ret = dovewarden_store_exists(store, &error)) == 0) {
		ret = dovewarden_replicator_db_import(store, path,
						      import->queue,
						      ioloop_time, &result,
						      &error);
	} else if (ret > 0) {
		ret = 0;
	}
	*error_r = NULL;
	if (ret < 0) {
		*error_r = t_strdup_printf("Couldn't import Dovecot 2.3's "
					   "replicator state into Redis: %s",
					   error);
	} else if (ret > 0) {
		dovewarden_replicator_db_log_skipped(event, path, &result);
	}
	dovewarden_store_deinit(&store);
	if (ret <= 0) {
		dovewarden_queue_deinit(&import->queue);
		i_free(import);
		return NULL;
	}
	import->path = i_strdup(path);
	import->replicator_db = TRUE;
	e_info(event, "Found Dovecot 2.3's replicator state (%u users) in %s: "
	       "importing it into Redis", result.users_loaded, path);
	return import;
}

static void redis_import_free(struct dovewarden_redis_import *import)
{
	if (import->queue != NULL)
		dovewarden_queue_deinit(&import->queue);
	i_free(import->path);
	i_free(import);
}

void dovewarden_redis_import_deinit(struct dovewarden_redis_import **_import)
{
	struct dovewarden_redis_import *import = *_import;

	if (import == NULL)
		return;
	*_import = NULL;
	if (import->pending > 0) {
		/* freed by the last pending callback */
		import->deinitialized = TRUE;
		return;
	}
	redis_import_free(import);
}

static void redis_import_finished(struct dovewarden_redis_import *import)
{
	const char *suffixes[] = { "", ".journal", ".journal.old" };
	unsigned int suffix_count = import->replicator_db ? 1 :
		N_ELEMENTS(suffixes);
	unsigned int total = import->imported_new + import->failed;
	struct dovewarden_queue_stats counts;
	const char *from, *to;

	if (import->failed > 0) {
		e_error(import->event, "Importing %s into Redis: %u of %u "
			"users failed - trying again at the next connect",
			import->path, import->failed, total);
		import->failed = 0;
		import->imported_new = 0;
		return;
	}
	/* the files stay, renamed, for a way back to the built-in queue */
	for (unsigned int i = 0; i < suffix_count; i++) {
		from = t_strconcat(import->path, suffixes[i], NULL);
		to = t_strconcat(from, ".imported", NULL);
		if (rename(from, to) < 0 && errno != ENOENT) {
			e_error(import->event, "rename(%s, %s) failed: %m",
				from, to);
		}
	}
	dovewarden_queue_get_counts(import->queue, &counts);
	if (import->replicator_db) {
		e_info(import->event, "Imported %u users from %s into Redis "
		       "(%u of them new to Redis); renamed it to %s.imported",
		       counts.users, import->path, import->imported_new,
		       import->path);
	} else {
		e_info(import->event, "Imported the built-in queue's state "
		       "(%u users, %u of them new to Redis) from %s; renamed "
		       "it to %s.imported", counts.users,
		       import->imported_new, import->path, import->path);
	}
	import->done = TRUE;
	/* the old queue is not needed any more: free its memory now */
	dovewarden_queue_deinit(&import->queue);
}

static void redis_import_callback(int ret, const char *error, void *context)
{
	struct dovewarden_redis_import *import = context;

	if (ret < 0) {
		if (import->failed++ == 0 && !import->deinitialized) {
			e_error(import->event, "Importing a user into Redis "
				"failed: %s", error);
		}
	} else if (ret > 0) {
		import->imported_new++;
	}
	i_assert(import->pending > 0);
	if (--import->pending > 0)
		return;
	if (import->deinitialized)
		redis_import_free(import);
	else T_BEGIN {
		redis_import_finished(import);
	} T_END;
}

static int
redis_import_user(struct dovewarden_redis_import *import,
		  struct dovewarden_redis_queue *rqueue,
		  const struct dovewarden_user *user)
{
	struct dovewarden_redis_import_user iuser = {
		.username = user->username,
		.state = user->state == NULL ? "" : user->state,
		.last_error = user->last_error == NULL ? "" :
			user->last_error,
		.priority = user->priority,
		.pending_key = user->priority == DOVEWARDEN_PRIORITY_NONE ?
			0 : user->pending_key,
		.pending_since = user->pending_since,
		.last_update = user->last_update,
		.last_fast_sync = user->last_fast_sync,
		.last_full_sync = user->last_full_sync,
		.last_successful_sync = user->last_successful_sync,
		.consecutive_failures = user->consecutive_failures,
		.next_try = user->next_try,
		.force_full_sync = user->force_full_sync,
		.settle_first_change = user->settle_first_change,
		.settle_last_change = user->settle_last_change,
		.last_verified = user->last_verified,
		.last_repaired = user->last_repaired,
		.first_full_sync = user->first_full_sync,
	};

	return dovewarden_redis_queue_import(rqueue, &iuser,
					     redis_import_callback, import);
}

bool dovewarden_redis_import_run(struct dovewarden_redis_import *import,
				 struct dovewarden_redis_queue *rqueue)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	int ret;

	if (import->done)
		return TRUE;
	if (import->pending > 0)
		return FALSE;
	iter = dovewarden_queue_iter_init(import->queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		T_BEGIN {
			ret = redis_import_user(import, rqueue, user);
		} T_END;
		if (ret < 0) {
			import->failed++;
			break;
		}
		import->pending++;
	}
	dovewarden_queue_iter_deinit(&iter);
	if (import->pending == 0) T_BEGIN {
		redis_import_finished(import);
	} T_END;
	return import->done;
}
