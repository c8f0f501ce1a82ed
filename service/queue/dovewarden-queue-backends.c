/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "dovewarden-config.h"
#include "dovewarden-queue-backend-private.h"

static const struct dovewarden_queue_backend_driver *const
queue_backend_drivers[] = {
	&dovewarden_queue_backend_builtin,
#ifdef DOVEWARDEN_HAVE_REDIS
	&dovewarden_queue_backend_redis,
#endif
};

void dovewarden_queue_backends_register_all(void)
{
	for (unsigned int i = 0; i < N_ELEMENTS(queue_backend_drivers); i++) {
		dovewarden_queue_backend_driver_register(
			queue_backend_drivers[i]);
	}
}

void dovewarden_queue_backends_unregister_all(void)
{
	for (unsigned int i = N_ELEMENTS(queue_backend_drivers); i > 0; i--) {
		dovewarden_queue_backend_driver_unregister(
			queue_backend_drivers[i - 1]);
	}
}
