/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "dovewarden-queue-backend-private.h"

static ARRAY(const struct dovewarden_queue_backend_driver *) drivers;

void dovewarden_queue_backend_driver_register(
	const struct dovewarden_queue_backend_driver *driver)
{
	if (!array_is_created(&drivers))
		i_array_init(&drivers, 4);
	array_push_back(&drivers, &driver);
}

void dovewarden_queue_backend_driver_unregister(
	const struct dovewarden_queue_backend_driver *driver)
{
	const struct dovewarden_queue_backend_driver *const *driverp;

	array_foreach(&drivers, driverp) {
		if (*driverp == driver) {
			array_delete(&drivers,
				     array_foreach_idx(&drivers, driverp), 1);
			break;
		}
	}
	if (array_count(&drivers) == 0)
		array_free(&drivers);
}

static const struct dovewarden_queue_backend_driver *
queue_backend_driver_lookup(const char *name)
{
	const struct dovewarden_queue_backend_driver *driver;

	if (!array_is_created(&drivers))
		return NULL;
	array_foreach_elem(&drivers, driver) {
		if (strcmp(driver->name, name) == 0)
			return driver;
	}
	return NULL;
}

struct dovewarden_queue_backend *
dovewarden_queue_backend_init(const char *name,
			      const struct dovewarden_queue_backend_settings *set,
			      struct event *event_parent,
			      const struct dovewarden_queue_backend_callbacks *callbacks,
			      void *context, const char **error_r)
{
	const struct dovewarden_queue_backend_driver *driver;
	struct dovewarden_queue_backend *backend;
	struct event *event;

	driver = queue_backend_driver_lookup(name);
	if (driver == NULL) {
		*error_r = t_strdup_printf("Unknown queue backend: %s", name);
		return NULL;
	}
	event = event_create(event_parent);
	backend = driver->v.init(set, event, error_r);
	if (backend == NULL) {
		event_unref(&event);
		return NULL;
	}
	backend->driver = driver;
	backend->event = event;
	backend->callbacks = callbacks;
	backend->context = context;
	return backend;
}

void dovewarden_queue_backend_deinit(struct dovewarden_queue_backend **_backend)
{
	struct dovewarden_queue_backend *backend = *_backend;
	struct event *event;

	if (backend == NULL)
		return;
	*_backend = NULL;
	event = backend->event;
	backend->driver->v.deinit(backend);
	event_unref(&event);
}

const char *
dovewarden_queue_backend_get_name(struct dovewarden_queue_backend *backend)
{
	return backend->driver->name;
}

bool dovewarden_queue_backend_is_ready(struct dovewarden_queue_backend *backend,
				       const char **reason_r)
{
	return backend->driver->v.is_ready(backend, reason_r);
}

void dovewarden_queue_backend_notify(struct dovewarden_queue_backend *backend,
				     const char *username,
				     enum dovewarden_priority priority,
				     enum dovewarden_queue_notify_flags flags)
{
	i_assert(dovewarden_username_is_valid(username));
	backend->driver->v.notify(backend, username, priority, flags);
}

bool dovewarden_queue_backend_add(struct dovewarden_queue_backend *backend,
				  const char *username)
{
	i_assert(dovewarden_username_is_valid(username));
	return backend->driver->v.add(backend, username);
}

void
dovewarden_queue_backend_notify_wait(struct dovewarden_queue_backend *backend,
				     const char *username,
				     enum dovewarden_queue_notify_flags flags,
				     dovewarden_queue_backend_wait_callback_t *callback,
				     void *context)
{
	i_assert(dovewarden_username_is_valid(username));
	backend->driver->v.notify_wait(backend, username, flags, callback,
				       context);
}

void dovewarden_queue_backend_remove(struct dovewarden_queue_backend *backend,
				     const char *username,
				     dovewarden_queue_backend_remove_callback_t *callback,
				     void *context)
{
	backend->driver->v.remove(backend, username, callback, context);
}

void dovewarden_queue_backend_pop(struct dovewarden_queue_backend *backend,
				  bool allow_background,
				  dovewarden_queue_backend_pop_callback_t *callback,
				  void *context)
{
	backend->driver->v.pop(backend, allow_background, callback, context);
}

bool dovewarden_queue_backend_job_changed(struct dovewarden_queue_job *job)
{
	return job->backend->driver->v.job_changed(job->backend, job);
}

bool dovewarden_queue_backend_job_removed(struct dovewarden_queue_job *job)
{
	return job->backend->driver->v.job_removed(job->backend, job);
}

bool
dovewarden_queue_backend_job_take_state_stale(struct dovewarden_queue_job *job)
{
	return job->backend->driver->v.job_take_state_stale(job->backend,
							    job);
}

void dovewarden_queue_backend_finish(struct dovewarden_queue_job **_job,
				     enum dovewarden_sync_result result,
				     const char *new_state, const char *error,
				     bool repaired)
{
	struct dovewarden_queue_job *job = *_job;

	*_job = NULL;
	job->backend->driver->v.finish(job->backend, job, result, new_state,
				       error, repaired);
}

void dovewarden_queue_backend_release(struct dovewarden_queue_job **_job)
{
	struct dovewarden_queue_job *job = *_job;

	*_job = NULL;
	job->backend->driver->v.release(job->backend, job);
}

void dovewarden_queue_backend_try_lock(struct dovewarden_queue_backend *backend,
				       const char *name, unsigned int secs,
				       dovewarden_queue_backend_lock_callback_t *callback,
				       void *context)
{
	backend->driver->v.try_lock(backend, name, secs, callback, context);
}

void dovewarden_queue_backend_retry_failed(struct dovewarden_queue_backend *backend,
					   const char *username,
					   dovewarden_queue_backend_retry_callback_t *callback,
					   void *context)
{
	backend->driver->v.retry_failed(backend, username, callback, context);
}

void dovewarden_queue_backend_unlock(struct dovewarden_queue_backend *backend,
				     const char *name)
{
	backend->driver->v.unlock(backend, name);
}

void dovewarden_queue_backend_get_counts(struct dovewarden_queue_backend *backend,
					 struct dovewarden_queue_counts *counts_r)
{
	i_zero(counts_r);
	backend->driver->v.get_counts(backend, counts_r);
}

void
dovewarden_queue_backend_read_counts(struct dovewarden_queue_backend *backend,
				     dovewarden_queue_backend_counts_callback_t *callback,
				     void *context)
{
	backend->driver->v.read_counts(backend, callback, context);
}

void
dovewarden_queue_backend_get_metrics(struct dovewarden_queue_backend *backend,
				     ARRAY_TYPE(dovewarden_queue_metric) *metrics)
{
	if (backend->driver->v.get_metrics != NULL)
		backend->driver->v.get_metrics(backend, metrics);
}

struct dovewarden_queue_backend_iter *
dovewarden_queue_backend_iter_init(struct dovewarden_queue_backend *backend,
				   const char *mask)
{
	struct dovewarden_queue_backend_iter *iter;

	iter = backend->driver->v.iter_init(backend, mask);
	iter->backend = backend;
	return iter;
}

void dovewarden_queue_backend_iter_set_async_callback(
	struct dovewarden_queue_backend_iter *iter,
	void (*callback)(void *context), void *context)
{
	iter->async_callback = callback;
	iter->async_context = context;
}

bool dovewarden_queue_backend_iter_next(struct dovewarden_queue_backend_iter *iter,
		const struct dovewarden_admin_user_status **status_r)
{
	iter->has_more = FALSE;
	return iter->backend->driver->v.iter_next(iter, status_r);
}

bool dovewarden_queue_backend_iter_has_more(struct dovewarden_queue_backend_iter *iter)
{
	return iter->has_more;
}

int dovewarden_queue_backend_iter_deinit(struct dovewarden_queue_backend_iter **_iter,
					 const char **error_r)
{
	struct dovewarden_queue_backend_iter *iter = *_iter;

	*_iter = NULL;
	return iter->backend->driver->v.iter_deinit(iter, error_r);
}

void dovewarden_queue_backend_ready(struct dovewarden_queue_backend *backend)
{
	if (backend->callbacks != NULL && backend->callbacks->ready != NULL)
		backend->callbacks->ready(backend->context);
}

void dovewarden_queue_backend_sync_done(struct dovewarden_queue_backend *backend,
					const char *username, uint64_t seq,
					enum dovewarden_sync_result result,
					const char *error)
{
	if (backend->callbacks != NULL &&
	    backend->callbacks->sync_done != NULL) {
		backend->callbacks->sync_done(username, seq, result, error,
					      backend->context);
	}
}

void dovewarden_queue_backend_iter_more(struct dovewarden_queue_backend_iter *iter)
{
	i_assert(iter->async_callback != NULL);
	iter->async_callback(iter->async_context);
}
