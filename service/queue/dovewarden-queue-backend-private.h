/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_QUEUE_BACKEND_PRIVATE_H
#define DOVEWARDEN_QUEUE_BACKEND_PRIVATE_H

#include "dovewarden-queue-backend.h"

/* What a queue backend implements; see dovewarden-queue-backend.h for
   what each call must do. Every vfunc is mandatory unless said. */
struct dovewarden_queue_backend_vfuncs {
	struct dovewarden_queue_backend *
	(*init)(const struct dovewarden_queue_backend_settings *set,
		struct event *event, const char **error_r);
	void (*deinit)(struct dovewarden_queue_backend *backend);

	bool (*is_ready)(struct dovewarden_queue_backend *backend,
			 const char **reason_r);
	void (*notify)(struct dovewarden_queue_backend *backend,
		       const char *username, enum dovewarden_priority priority,
		       enum dovewarden_queue_notify_flags flags);
	bool (*add)(struct dovewarden_queue_backend *backend,
		    const char *username);
	void (*notify_wait)(struct dovewarden_queue_backend *backend,
			    const char *username,
			    enum dovewarden_queue_notify_flags flags,
			    dovewarden_queue_backend_wait_callback_t *callback,
			    void *context);
	void (*remove)(struct dovewarden_queue_backend *backend,
		       const char *username,
		       dovewarden_queue_backend_remove_callback_t *callback,
		       void *context);

	void (*pop)(struct dovewarden_queue_backend *backend,
		    bool allow_background,
		    dovewarden_queue_backend_pop_callback_t *callback,
		    void *context);
	bool (*job_changed)(struct dovewarden_queue_backend *backend,
			    struct dovewarden_queue_job *job);
	bool (*job_removed)(struct dovewarden_queue_backend *backend,
			    struct dovewarden_queue_job *job);
	bool (*job_take_state_stale)(struct dovewarden_queue_backend *backend,
				     struct dovewarden_queue_job *job);
	void (*finish)(struct dovewarden_queue_backend *backend,
		       struct dovewarden_queue_job *job,
		       enum dovewarden_sync_result result,
		       const char *new_state, const char *error,
		       bool repaired);
	void (*release)(struct dovewarden_queue_backend *backend,
			struct dovewarden_queue_job *job);

	void (*try_lock)(struct dovewarden_queue_backend *backend,
			 const char *name, unsigned int secs,
			 dovewarden_queue_backend_lock_callback_t *callback,
			 void *context);
	void (*unlock)(struct dovewarden_queue_backend *backend,
		       const char *name);
	void (*retry_failed)(struct dovewarden_queue_backend *backend,
			     const char *username,
			     dovewarden_queue_backend_retry_callback_t *callback,
			     void *context);
	void (*get_counts)(struct dovewarden_queue_backend *backend,
			   struct dovewarden_queue_counts *counts_r);
	void (*read_counts)(struct dovewarden_queue_backend *backend,
			    dovewarden_queue_backend_counts_callback_t *callback,
			    void *context);
	/* optional */
	void (*get_metrics)(struct dovewarden_queue_backend *backend,
			    ARRAY_TYPE(dovewarden_queue_metric) *metrics);

	struct dovewarden_queue_backend_iter *
	(*iter_init)(struct dovewarden_queue_backend *backend,
		     const char *mask);
	bool (*iter_next)(struct dovewarden_queue_backend_iter *iter,
			  const struct dovewarden_admin_user_status **status_r);
	int (*iter_deinit)(struct dovewarden_queue_backend_iter *iter,
			   const char **error_r);
};

struct dovewarden_queue_backend_driver {
	const char *name;
	struct dovewarden_queue_backend_vfuncs v;
};

/* The common part of every backend; a backend's own struct starts with
   it. */
struct dovewarden_queue_backend {
	const struct dovewarden_queue_backend_driver *driver;
	struct event *event;
	const struct dovewarden_queue_backend_callbacks *callbacks;
	void *context;
};

struct dovewarden_queue_backend_iter {
	struct dovewarden_queue_backend *backend;
	void (*async_callback)(void *context);
	void *async_context;
	/* the backend waits for more and will call async_callback */
	bool has_more:1;
};

extern const struct dovewarden_queue_backend_driver
	dovewarden_queue_backend_builtin;
extern const struct dovewarden_queue_backend_driver
	dovewarden_queue_backend_redis;

void dovewarden_queue_backend_driver_register(
	const struct dovewarden_queue_backend_driver *driver);
void dovewarden_queue_backend_driver_unregister(
	const struct dovewarden_queue_backend_driver *driver);

/* For backends: tell the service */
void dovewarden_queue_backend_ready(struct dovewarden_queue_backend *backend);
void dovewarden_queue_backend_sync_done(struct dovewarden_queue_backend *backend,
					const char *username, uint64_t seq,
					enum dovewarden_sync_result result,
					const char *error);
/* Call the iteration's async callback (from the ioloop) */
void dovewarden_queue_backend_iter_more(struct dovewarden_queue_backend_iter *iter);

#endif
