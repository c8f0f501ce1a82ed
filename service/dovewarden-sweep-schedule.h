/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_SWEEP_SCHEDULE_H
#define DOVEWARDEN_SWEEP_SCHEDULE_H

struct dovewarden_queue_backend;

/* The periodic userdb sweep (see dovewarden-sweep.h): unless
   dovewarden_userdb_sweep_interval is 0, a sweep of every user starts
   from the ioloop right away, and again that long after each one ended
   (a failed one after DOVEWARDEN_SWEEP_SCHEDULE_RETRY_SECS, or the
   interval if shorter). With a shared queue one instance sweeps per
   interval: the one that takes the queue's "sweep" lock. */

#define DOVEWARDEN_SWEEP_SCHEDULE_RETRY_SECS (60 * 60)
/* A sweep that could not ask for its lock tries again after this */
#define DOVEWARDEN_SWEEP_SCHEDULE_LOCK_RETRY_SECS 10

/* users_added is called after a sweep that made users known. */
struct dovewarden_sweep_schedule *
dovewarden_sweep_schedule_init(unsigned int interval_secs,
			       const char *auth_socket_path,
			       struct dovewarden_queue_backend *queue,
			       struct event *event,
			       void (*users_added)(void *context),
			       void *context);
void dovewarden_sweep_schedule_deinit(struct dovewarden_sweep_schedule **sched);
/* The queue became ready: a sweep that is waiting for it starts now */
void dovewarden_sweep_schedule_queue_ready(struct dovewarden_sweep_schedule *sched);

#endif
