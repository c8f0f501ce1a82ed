/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef FUZZ_QUEUE_H
#define FUZZ_QUEUE_H

/* For the targets that fill a queue from a state file's lines */

struct dovewarden_queue;

/* The time the lines' users are restored at */
#define FUZZ_NOW ((time_t)1700000000)

/* The targets' queue, made at the first call (a new queue for every
   input costs more than most inputs' work: fresh pages for its arrays
   under ASan). Each input leaves it empty with fuzz_queue_clear(). */
struct dovewarden_queue *fuzz_queue_get(void);
/* Schedule, sync and report the queue's users at a time after FUZZ_NOW:
   the queue's arithmetic on the restored times */
void fuzz_queue_run(struct dovewarden_queue *queue);
/* Forget every user: the queue is as new (its arrays keep their size) */
void fuzz_queue_clear(struct dovewarden_queue *queue);

#endif
