/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_REDIS_IMPORT_H
#define DOVEWARDEN_REDIS_IMPORT_H

#include "dovewarden-queue-rules.h"

struct dovewarden_redis_queue;

/* Switching from the built-in queue to Redis: the built-in queue's state
   file (with its journals) is copied into Redis once, so that every user
   keeps its dsync state and schedule (no full-sync storm, no lost pending
   work). Users Redis knows already get only this server's dsync state,
   when Redis has none (each server of a pair imports its own). When every user is in,
   the files are renamed to *.imported (a way back to the built-in
   queue). */

/* Load path if it exists; NULL when there is nothing to import, or when
   it could not be read (then with error_r: the service must not start
   without it, or the userdb sweep would put its users into Redis without
   their dsync states, and a later import would keep those). */
struct dovewarden_redis_import *
dovewarden_redis_import_init(const char *path,
			     const struct dovewarden_queue_settings *set,
			     struct event *event, const char **error_r);
/* The same for Dovecot 2.3's replicator.db at path (see
   dovewarden-replicator-db.h), when the built-in queue has no state at
   state_path (its lines that are not valid go to that state's
   quarantine). When every user is in, path is renamed to
   <path>.imported. */
struct dovewarden_redis_import *
dovewarden_redis_import_init_replicator_db(const char *path,
					   const char *state_path,
					   const struct dovewarden_queue_settings *set,
					   struct event *event,
					   const char **error_r);
void dovewarden_redis_import_deinit(struct dovewarden_redis_import **import);
/* Redis is connected: copy the users in (again, if an earlier try
   failed). Returns TRUE when the import is done and can be freed. */
bool dovewarden_redis_import_run(struct dovewarden_redis_import *import,
				 struct dovewarden_redis_queue *rqueue);

#endif
