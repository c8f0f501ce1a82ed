/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "ioloop.h"
#include "net.h"
#include "time-util.h"
#include "unlink-directory.h"
#include "dovewarden-settings.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-queue-backend.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* The queue's rules (dovewarden-queue-rules.h) as every backend must
   follow them, seen only through dovewarden-queue-backend.h: one
   scenario, one test, run against each backend. This file is built
   once per backend with QUEUE_BACKEND set to its name; the Redis run
   starts its own redis-server (on a unix socket in a temporary
   directory, one per test) and is skipped when it is not installed.
   The backends keep time with the ioloop's clock or Redis's TIME, in
   whole seconds, so the tests run in real time with intervals of a few
   seconds, and check times with a second's slack either way. */

#ifndef QUEUE_BACKEND
#  error QUEUE_BACKEND must be the name of the backend to test
#endif

#define REDIS_SERVER_BIN "/usr/bin/redis-server"
/* How long a request to the backend may take */
#define REPLY_TIMEOUT_MSECS 3000

static char test_dir[] = "/tmp/dw-queue-backend-test.XXXXXX";
static char *socket_path, *state_path;
static pid_t redis_pid = -1;
static struct ioloop *ioloop;

static bool backend_is_redis(void)
{
	return strcmp(QUEUE_BACKEND, "redis") == 0;
}

static void redis_start(void)
{
	int fd;

	redis_pid = fork();
	cr_assert(redis_pid >= 0);
	if (redis_pid == 0) {
		/* gone with us, also when we crash */
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		fd = open("/dev/null", O_WRONLY);
		(void)dup2(fd, 1);
		(void)dup2(fd, 2);
		execl(REDIS_SERVER_BIN, REDIS_SERVER_BIN, "--port", "0",
		      "--unixsocket", socket_path, "--dir", test_dir,
		      "--save", "", "--appendonly", "no", (char *)NULL);
		_exit(127);
	}
	for (unsigned int i = 0; i < 500; i++) {
		fd = net_connect_unix(socket_path);
		if (fd != -1) {
			i_close_fd(&fd);
			return;
		}
		usleep(10000);
	}
	cr_assert_fail("redis-server did not start");
}

static void redis_stop(void)
{
	if (redis_pid <= 0)
		return;
	(void)kill(redis_pid, SIGKILL);
	(void)waitpid(redis_pid, NULL, 0);
	redis_pid = -1;
}

/* the backend under test */

struct sync_done {
	char *username;
	uint64_t seq;
	enum dovewarden_sync_result result;
};

static struct dovewarden_queue_backend *backend;
static struct dovewarden_settings service_set;
/* the rules' parameters; a test may change them before backend_start() */
static struct dovewarden_queue_settings queue_set = {
	.full_sync_interval_secs = 86400,
	.retry_min_secs = 2,
	.retry_max_secs = 60,
	.settle_delay_secs = 0,
	.settle_max_secs = 300,
};
static bool backend_ready;
static ARRAY(struct sync_done) syncs_done;

static void syncs_done_clear(void)
{
	struct sync_done *done;

	array_foreach_modifiable(&syncs_done, done)
		i_free(done->username);
	array_clear(&syncs_done);
}

static void suite_init(void)
{
	if (backend_is_redis() && access(REDIS_SERVER_BIN, X_OK) < 0)
		cr_skip_test("%s is not installed", REDIS_SERVER_BIN);
	lib_init();
	ioloop = io_loop_create();
	cr_assert_not_null(mkdtemp(test_dir));
	socket_path = i_strconcat(test_dir, "/redis.sock", NULL);
	state_path = i_strconcat(test_dir, "/state", NULL);
	dovewarden_queue_backends_register_all();
	if (backend_is_redis())
		redis_start();
}

static void suite_fini(void)
{
	const char *error;

	redis_stop();
	if (ioloop == NULL)
		return;
	/* a failed test leaves it */
	dovewarden_queue_backend_deinit(&backend);
	if (array_is_created(&syncs_done)) {
		syncs_done_clear();
		array_free(&syncs_done);
	}
	dovewarden_queue_backends_unregister_all();
	(void)unlink_directory(test_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error);
	i_free(socket_path);
	i_free(state_path);
	io_loop_destroy(&ioloop);
	lib_deinit();
}

TestSuite(queue_backend, .init = suite_init, .fini = suite_fini);

/* running the ioloop until something happened */

static bool timed_out;

static void run_timeout(void *context ATTR_UNUSED)
{
	timed_out = TRUE;
	io_loop_stop(ioloop);
}

/* Run the ioloop until *flag is set (the callbacks stop the loop) or
   msecs passed; returns *flag. */
static bool run_until(const bool *flag, unsigned int msecs)
{
	struct timeout *to;

	if (*flag)
		return TRUE;
	timed_out = FALSE;
	to = timeout_add(msecs, run_timeout, NULL);
	while (!*flag && !timed_out)
		io_loop_run(ioloop);
	timeout_remove(&to);
	return *flag;
}

static void run_for(unsigned int msecs)
{
	bool never = FALSE;

	(void)run_until(&never, msecs);
}

static long long now_msecs(void)
{
	struct timeval tv;

	i_gettimeofday(&tv);
	return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void backend_ready_callback(void *context ATTR_UNUSED)
{
	backend_ready = TRUE;
	io_loop_stop(ioloop);
}

static void
backend_sync_done_callback(const char *username, uint64_t seq,
			   enum dovewarden_sync_result result,
			   const char *error ATTR_UNUSED,
			   void *context ATTR_UNUSED)
{
	struct sync_done *done = array_append_space(&syncs_done);

	done->username = i_strdup(username);
	done->seq = seq;
	done->result = result;
	io_loop_stop(ioloop);
}

static const struct dovewarden_queue_backend_callbacks backend_callbacks = {
	.ready = backend_ready_callback,
	.sync_done = backend_sync_done_callback,
};

static void backend_start(void)
{
	struct dovewarden_queue_backend_settings bset;
	const char *error, *reason;

	i_zero(&service_set);
	service_set.dovewarden_redis_host = socket_path;
	service_set.dovewarden_redis_username = "";
	service_set.dovewarden_redis_password = "";
	service_set.dovewarden_redis_prefix = "t:";
	service_set.dovewarden_redis_timeout = 1000;
	service_set.dovewarden_redis_claim_timeout = 60;
	service_set.dovewarden_redis_buffer_limit = 1000;

	i_zero(&bset);
	bset.set = &service_set;
	bset.queue = queue_set;
	/* Redis would import it: the state is Redis's there */
	bset.state_path = backend_is_redis() ? NULL : state_path;
	bset.server = "a.example.org";

	if (!array_is_created(&syncs_done))
		i_array_init(&syncs_done, 16);
	backend_ready = FALSE;
	backend = dovewarden_queue_backend_init(QUEUE_BACKEND, &bset, NULL,
						&backend_callbacks, NULL,
						&error);
	cr_assert_not_null(backend, "init failed: %s", error);
	cr_assert_str_eq(dovewarden_queue_backend_get_name(backend),
			 QUEUE_BACKEND);
	if (!dovewarden_queue_backend_is_ready(backend, &reason)) {
		cr_assert(run_until(&backend_ready, REPLY_TIMEOUT_MSECS),
			  "backend not ready: %s", reason);
		cr_assert(dovewarden_queue_backend_is_ready(backend, &reason));
		/* let a shared backend's other connections (e.g. Redis's
		   subscriber for sync_done) come up too */
		run_for(200);
	}
}

static void backend_stop(void)
{
	dovewarden_queue_backend_deinit(&backend);
	syncs_done_clear();
}

static void backend_stop_all(void)
{
	backend_stop();
	array_free(&syncs_done);
}

/* pop */

struct pop_result {
	bool called;
	struct dovewarden_queue_job *job;
	int retry_msecs;
	char *error;
};

static void pop_callback(struct dovewarden_queue_job *job, int retry_msecs,
			 const char *error, void *context)
{
	struct pop_result *res = context;

	cr_assert(!res->called, "pop callback called twice");
	res->called = TRUE;
	res->job = job;
	res->retry_msecs = retry_msecs;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

/* Pop once: the job, or NULL when nothing is due now */
static struct dovewarden_queue_job *pop(bool allow_background)
{
	struct pop_result res;

	i_zero(&res);
	dovewarden_queue_backend_pop(backend, allow_background,
				     pop_callback, &res);
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS),
		  "pop got no reply");
	cr_assert_null(res.error, "pop failed: %s", res.error);
	if (res.job == NULL) {
		cr_assert(res.retry_msecs == -1 || res.retry_msecs >= 0,
			  "retry_msecs=%d", res.retry_msecs);
	}
	return res.job;
}

/* Pop until a job comes or msecs passed */
static struct dovewarden_queue_job *
pop_wait(bool allow_background, unsigned int msecs)
{
	struct dovewarden_queue_job *job;
	long long end = now_msecs() + msecs;

	for (;;) {
		job = pop(allow_background);
		if (job != NULL || now_msecs() >= end)
			return job;
		run_for(100);
	}
}

/* Nothing is claimed during the next msecs */
static void assert_nothing_due(bool allow_background, unsigned int msecs)
{
	struct dovewarden_queue_job *job;

	job = pop_wait(allow_background, msecs);
	cr_assert_null(job, "%s claimed unexpectedly", job->username);
}

static struct dovewarden_queue_job *
pop_user(const char *username, bool allow_background)
{
	struct dovewarden_queue_job *job = pop(allow_background);

	cr_assert_not_null(job, "nothing due, expected %s", username);
	cr_assert_str_eq(job->username, username);
	return job;
}

static void notify(const char *username, enum dovewarden_priority priority)
{
	dovewarden_queue_backend_notify(backend, username, priority, 0);
}

/* Notify, then claim the user in a slot free for any work (pop(TRUE)) */
static struct dovewarden_queue_job *
notify_and_claim(const char *username, enum dovewarden_priority priority)
{
	notify(username, priority);
	return pop_user(username, TRUE);
}

static const struct sync_done *sync_done_find(const char *username,
					      uint64_t seq)
{
	const struct sync_done *done;

	array_foreach(&syncs_done, done) {
		if (strcmp(done->username, username) == 0 && done->seq == seq)
			return done;
	}
	return NULL;
}

/* Finish the job and wait until the backend tells that its sync is
   done (sync_done with its seq) */
static void finish_full(struct dovewarden_queue_job **_job,
			enum dovewarden_sync_result result,
			const char *new_state, const char *error,
			bool repaired)
{
	struct dovewarden_queue_job *job = *_job;
	const char *username = t_strdup(job->username);
	const struct sync_done *done;
	uint64_t seq = job->seq;
	long long end = now_msecs() + REPLY_TIMEOUT_MSECS;

	dovewarden_queue_backend_finish(_job, result, new_state, error,
					repaired);
	cr_assert_null(*_job);
	while ((done = sync_done_find(username, seq)) == NULL &&
	       now_msecs() < end)
		run_for(50);
	cr_assert_not_null(done, "no sync_done for %s seq %"PRIu64,
			   username, seq);
	cr_assert_eq(done->result, result);
}

static void finish(struct dovewarden_queue_job **job,
		   enum dovewarden_sync_result result, const char *new_state)
{
	finish_full(job, result, new_state, NULL, FALSE);
}

/* Let a finish or release whose answer is not awaited reach the
   backend */
static void settle_requests(void)
{
	run_for(100);
}

/* remove */

struct remove_result {
	bool called;
	int ret;
	char *error;
};

static void remove_callback(int ret, const char *error, void *context)
{
	struct remove_result *res = context;

	cr_assert(!res->called, "remove callback called twice");
	res->called = TRUE;
	res->ret = ret;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

static int remove_user(const char *username)
{
	struct remove_result res;

	i_zero(&res);
	dovewarden_queue_backend_remove(backend, username, remove_callback,
					&res);
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS),
		  "remove got no reply");
	cr_assert(res.ret >= 0, "remove failed: %s", res.error);
	cr_assert_null(res.error);
	return res.ret;
}

/* notify_wait */

struct wait_result {
	bool called;
	bool success;
	uint64_t seq;
};

static void wait_callback(bool success, uint64_t seq, void *context)
{
	struct wait_result *res = context;

	cr_assert(!res->called, "notify_wait callback called twice");
	res->called = TRUE;
	res->success = success;
	res->seq = seq;
	io_loop_stop(ioloop);
}

static uint64_t notify_wait(const char *username)
{
	struct wait_result res;

	i_zero(&res);
	dovewarden_queue_backend_notify_wait(backend, username, 0,
					     wait_callback, &res);
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS),
		  "notify_wait got no reply");
	cr_assert(res.success);
	return res.seq;
}

/* counts */

struct counts_result {
	bool called;
	struct dovewarden_queue_counts counts;
	char *error;
};

static void counts_callback(const struct dovewarden_queue_counts *counts,
			    const char *error, void *context)
{
	struct counts_result *res = context;

	cr_assert(!res->called, "counts callback called twice");
	res->called = TRUE;
	if (counts != NULL)
		res->counts = *counts;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

static struct dovewarden_queue_counts read_counts(void)
{
	struct counts_result res;

	i_zero(&res);
	dovewarden_queue_backend_read_counts(backend, counts_callback, &res);
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS),
		  "read_counts got no reply");
	cr_assert_null(res.error, "read_counts failed: %s", res.error);
	return res.counts;
}

/* NONE is unused */
static unsigned int pending_total(const struct dovewarden_queue_counts *c)
{
	unsigned int i, sum = 0;

	for (i = DOVEWARDEN_PRIORITY_LOW; i < DOVEWARDEN_PRIORITY_COUNT; i++)
		sum += c->pending[i];
	return sum;
}

/* status iteration */

static void iter_async_callback(void *context)
{
	bool *more = context;

	*more = TRUE;
	io_loop_stop(ioloop);
}

/* The usernames the status iteration of mask returns, space-separated;
   the status of the last one in *status_r (if not NULL) */
static const char *
iter_usernames(const char *mask, struct dovewarden_admin_user_status *status_r)
{
	struct dovewarden_queue_backend_iter *iter;
	const struct dovewarden_admin_user_status *status;
	string_t *str = t_str_new(64);
	const char *error;
	bool more;

	if (status_r != NULL)
		i_zero(status_r);
	iter = dovewarden_queue_backend_iter_init(backend, mask);
	dovewarden_queue_backend_iter_set_async_callback(
		iter, iter_async_callback, &more);
	for (;;) {
		more = FALSE;
		while (dovewarden_queue_backend_iter_next(iter, &status)) {
			if (str_len(str) > 0)
				str_append_c(str, ' ');
			str_append(str, status->username);
			if (status_r != NULL) {
				*status_r = *status;
				status_r->username =
					t_strdup(status->username);
				status_r->last_error =
					t_strdup(status->last_error);
			}
		}
		if (!dovewarden_queue_backend_iter_has_more(iter))
			break;
		cr_assert(run_until(&more, REPLY_TIMEOUT_MSECS),
			  "status iteration got stuck");
	}
	cr_assert_eq(dovewarden_queue_backend_iter_deinit(&iter, &error), 0,
		     "iteration failed: %s", error);
	return str_c(str);
}

/* The scenarios */

Test(queue_backend, higher_priorities_go_first)
{
	struct dovewarden_queue_job *job;
	const char *expected[] = { "s", "h", "l" };

	backend_start();
	notify("l", DOVEWARDEN_PRIORITY_LOW);
	notify("h", DOVEWARDEN_PRIORITY_HIGH);
	notify("s", DOVEWARDEN_PRIORITY_SYNC);
	for (unsigned int i = 0; i < N_ELEMENTS(expected); i++) {
		job = pop_user(expected[i], TRUE);
		cr_assert_eq(job->priority,
			     i == 0 ? DOVEWARDEN_PRIORITY_SYNC :
			     i == 1 ? DOVEWARDEN_PRIORITY_HIGH :
			     DOVEWARDEN_PRIORITY_LOW);
		finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	}
	cr_assert_null(pop(TRUE));
	backend_stop_all();
}

Test(queue_backend, head_starts_order_changes_by_age_and_priority)
{
	struct dovewarden_queue_job *job;

	/* the head starts decide which of two changes a second apart goes
	   first only when they differ by more than that second */
	cr_assert_gt(DOVEWARDEN_QUEUE_SYNC_BOOST_SECS,
		     DOVEWARDEN_QUEUE_HIGH_BOOST_SECS + 2);
	cr_assert_gt(DOVEWARDEN_QUEUE_HIGH_BOOST_SECS,
		     DOVEWARDEN_QUEUE_LOW_BOOST_SECS + 2);
	backend_start();
	/* "old-low" and "old-high" change a second (and more) before the
	   others */
	notify("old-low", DOVEWARDEN_PRIORITY_LOW);
	notify("old-high", DOVEWARDEN_PRIORITY_HIGH);
	notify("old-high2", DOVEWARDEN_PRIORITY_HIGH);
	run_for(1100);
	notify("new-high", DOVEWARDEN_PRIORITY_HIGH);
	notify("new-sync", DOVEWARDEN_PRIORITY_SYNC);
	/* a repeated (or lower) notification does not move a user back */
	notify("old-high", DOVEWARDEN_PRIORITY_HIGH);
	notify("old-high2", DOVEWARDEN_PRIORITY_LOW);

	/* the sync change's head start beats a second's age; among the
	   high ones the older go first (in any order within the second);
	   the low change is older, but its head start is smaller */
	job = pop_user("new-sync", FALSE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop(FALSE);
	cr_assert_not_null(job);
	cr_assert(strcmp(job->username, "old-high") == 0 ||
		  strcmp(job->username, "old-high2") == 0,
		  "%s went before the older high changes", job->username);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop(FALSE);
	cr_assert_not_null(job);
	cr_assert(strcmp(job->username, "old-high") == 0 ||
		  strcmp(job->username, "old-high2") == 0,
		  "%s went before the older high changes", job->username);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop_user("new-high", FALSE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop_user("old-low", TRUE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	cr_assert_null(pop(TRUE));
	backend_stop_all();
}

/* That a low change is not starved by a stream of high ones (it goes
   first once it is HIGH_BOOST - LOW_BOOST = 15 minutes older) is not
   tested here: the backends take their clock from the ioloop and from
   Redis's TIME, not from the caller, so a scenario would have to run for
   15 minutes. test-dovewarden-queue.c tests it on the built-in queue
   with its own clock; the Redis scripts use the same boosts (notify.lua
   gets them from dovewarden_queue_priority_boost()). */

Test(queue_backend, low_changes_are_background_work)
{
	struct dovewarden_queue_job *job;

	backend_start();
	/* a slot kept for new mail (allow_background=FALSE) takes no low
	   change: a full table of them must not delay new mail */
	notify("low", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_null(pop(FALSE), "a low change took a slot kept for "
		       "new mail");
	notify("high", DOVEWARDEN_PRIORITY_HIGH);
	notify("sync", DOVEWARDEN_PRIORITY_SYNC);
	job = pop_user("sync", FALSE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop_user("high", FALSE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	cr_assert_null(pop(FALSE));
	/* any other slot takes it */
	job = pop_user("low", TRUE);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	cr_assert_null(pop(TRUE));
	backend_stop_all();
}

Test(queue_backend, repeated_changes_are_one_job)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_queue_counts c;

	backend_start();
	for (unsigned int i = 0; i < 4; i++)
		notify("alice", DOVEWARDEN_PRIORITY_HIGH);
	notify("alice", DOVEWARDEN_PRIORITY_LOW);
	c = read_counts();
	cr_assert_eq(c.users, 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_HIGH], 1);
	cr_assert_eq(pending_total(&c), 1);
	job = pop_user("alice", FALSE);
	/* the highest priority of the merged changes */
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_null(pop(TRUE));
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	cr_assert_null(pop(TRUE));
	c = read_counts();
	cr_assert_eq(c.users, 1);
	cr_assert_eq(pending_total(&c), 0);
	backend_stop_all();
}

Test(queue_backend, change_during_a_job_is_one_more_job_with_the_new_state)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_queue_counts c;

	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_str_eq(job->state, "");
	cr_assert_eq(job->consecutive_failures, 0);
	cr_assert_str_eq(job->last_error, "");
	cr_assert(!dovewarden_queue_backend_job_removed(job));
	notify("alice", DOVEWARDEN_PRIORITY_SYNC);
	notify("alice", DOVEWARDEN_PRIORITY_HIGH);
	c = read_counts();
	cr_assert_eq(c.syncing, 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_SYNC], 1);
	/* one job per user at a time */
	cr_assert_null(pop(TRUE));
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "state-after-1");
	job = pop_user("alice", FALSE);
	cr_assert_str_eq(job->state, "state-after-1");
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_SYNC);
	/* the first sync was the full one */
	cr_assert(!job->full);
	cr_assert(!dovewarden_queue_backend_job_changed(job));
	/* NULL keeps the state */
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	cr_assert_null(pop(TRUE));
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_str_eq(job->state, "state-after-1");
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "");
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_str_eq(job->state, "state-after-1");
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	backend_stop_all();
}

Test(queue_backend, failures_back_off)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_queue_counts c;
	struct dovewarden_admin_user_status status;
	unsigned int first_backoff_msecs;
	long long start;

	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->full);
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, "not-kept",
		    "peer down", FALSE);
	start = now_msecs();

	c = read_counts();
	cr_assert_eq(c.failed, 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_HIGH], 1);
	cr_assert_neq(c.oldest_pending, 0);
	cr_assert(c.failed_waiting == 0 || c.failed_waiting == 1);
	cr_assert_str_eq(iter_usernames("alice", &status), "alice");
	cr_assert_eq(status.consecutive_failures, 1);
	cr_assert_str_eq(status.last_error, "peer down");
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_HIGH);

	/* retry_min_secs (2 s) plus up to a quarter, in whole seconds */
	job = pop_wait(FALSE, 4000);
	cr_assert_not_null(job, "no retry after the back-off");
	first_backoff_msecs = now_msecs() - start;
	cr_assert_geq(first_backoff_msecs, 1000,
		      "retried after %u ms", first_backoff_msecs);
	cr_assert_str_eq(job->username, "alice");
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_eq(job->consecutive_failures, 1);
	cr_assert_str_eq(job->last_error, "peer down");
	/* the failed sync's new state was not kept */
	cr_assert_str_eq(job->state, "s1");
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL,
		    "peer still down", FALSE);
	start = now_msecs();

	/* the back-off doubles: 4 s, so nothing for 2.5 s */
	assert_nothing_due(TRUE, 2500);
	/* a full sync asked for runs also during the back-off */
	dovewarden_queue_backend_notify(backend, "alice",
					DOVEWARDEN_PRIORITY_NONE,
					DOVEWARDEN_QUEUE_NOTIFY_FLAG_FULL_SYNC);
	job = pop_user("alice", TRUE);
	cr_assert(job->full);
	cr_assert_eq(job->consecutive_failures, 2);
	cr_assert_str_eq(job->last_error, "peer still down");
	cr_assert_lt(now_msecs() - start, 4000);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");

	c = read_counts();
	cr_assert_eq(c.failed, 0);
	cr_assert_eq(c.failed_waiting, 0);
	cr_assert_eq(pending_total(&c), 0);
	cr_assert_eq(c.oldest_pending, 0);
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_eq(job->consecutive_failures, 0);
	cr_assert_str_eq(job->last_error, "");
	cr_assert_str_eq(job->state, "s2");
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	backend_stop_all();
}

struct retry_result {
	bool called;
	unsigned int count;
	char *error;
};

static void retry_callback(unsigned int count, const char *error,
			   void *context)
{
	struct retry_result *res = context;

	cr_assert(!res->called, "retry callback called twice");
	res->called = TRUE;
	res->count = count;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

static unsigned int retry_failed(const char *username)
{
	struct retry_result res;

	i_zero(&res);
	dovewarden_queue_backend_retry_failed(backend, username,
					      retry_callback, &res);
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS));
	cr_assert_null(res.error, "%s", res.error);
	return res.count;
}

/* The peer is back after an outage: users in back-off are due at once,
   one (the probe) or all */
Test(queue_backend, retry_failed_ends_the_back_off)
{
	struct dovewarden_queue_job *job, *job2;

	queue_set.retry_min_secs = 60;
	queue_set.retry_max_secs = 600;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "peer down",
		    FALSE);
	job = notify_and_claim("bob", DOVEWARDEN_PRIORITY_LOW);
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "peer down",
		    FALSE);
	job = notify_and_claim("carol", DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	assert_nothing_due(TRUE, 200);

	/* the probe: one user */
	cr_assert_eq(retry_failed("bob"), 1);
	cr_assert_eq(retry_failed("nobody"), 0);
	job = pop_wait(TRUE, 2000);
	cr_assert_not_null(job, "the probed user is not due");
	cr_assert_str_eq(job->username, "bob");
	cr_assert_eq(job->consecutive_failures, 1);
	/* a claimed user is not touched */
	cr_assert_eq(retry_failed(NULL), 1);
	job2 = pop_wait(FALSE, 2000);
	cr_assert_not_null(job2, "alice is not due");
	cr_assert_str_eq(job2->username, "alice");
	cr_assert_eq(job2->priority, DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	finish_full(&job2, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL,
		    "peer down", FALSE);
	/* a failure goes on backing off */
	assert_nothing_due(TRUE, 200);
	cr_assert_eq(retry_failed(NULL), 1);
	job = pop_wait(FALSE, 2000);
	cr_assert_not_null(job);
	cr_assert_eq(job->consecutive_failures, 2);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	cr_assert_eq(retry_failed(NULL), 0);
	backend_stop_all();
}

/* A long outage leaves many users in back-off: all of them are due again
   (the Redis backend goes through its failed set in batches) */
Test(queue_backend, retry_failed_ends_every_back_off)
{
	struct dovewarden_queue_job *job;
	unsigned int i, failed = 0, n = 600;

	queue_set.retry_min_secs = 60;
	queue_set.retry_max_secs = 600;
	backend_start();
	for (i = 0; i < n; i++)
		notify(t_strdup_printf("user%u", i), DOVEWARDEN_PRIORITY_LOW);
	while ((job = pop_wait(TRUE, 500)) != NULL) {
		if (job->consecutive_failures == 0)
			failed++;
		/* not waiting for each sync_done: the next pop comes after
		   the result on the same connection */
		dovewarden_queue_backend_finish(&job,
						DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
						NULL, "peer down", FALSE);
	}
	cr_assert_eq(failed, n);
	cr_assert_eq(retry_failed(NULL), n);
	cr_assert_eq(retry_failed(NULL), 0);
	backend_stop_all();
}

Test(queue_backend, config_errors_wait_the_longest_back_off)
{
	struct dovewarden_queue_job *job;
	long long start;
	unsigned int msecs;

	queue_set.retry_min_secs = 1;
	queue_set.retry_max_secs = 4;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_CONFIG, NULL,
		    "no replica", FALSE);
	start = now_msecs();
	/* retry_max_secs, not retry_min_secs */
	assert_nothing_due(TRUE, 2500);
	job = pop_wait(FALSE, 4500);
	cr_assert_not_null(job, "no retry after the longest back-off");
	msecs = now_msecs() - start;
	cr_assert_geq(msecs, 3000, "retried after %u ms", msecs);
	cr_assert_eq(job->consecutive_failures, 1);
	cr_assert_str_eq(job->last_error, "no replica");
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	backend_stop_all();
}

Test(queue_backend, changed_retries_soon_and_then_fully)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_queue_counts c;
	long long start;
	unsigned int msecs;

	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");

	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, "not-kept");
	start = now_msecs();
	/* not a failure */
	c = read_counts();
	cr_assert_eq(c.failed, 0);
	cr_assert_eq(pending_total(&c), 1);
	cr_assert_null(pop(TRUE));
	job = pop_wait(FALSE, 1000 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS +
		       1500);
	cr_assert_not_null(job, "no retry after CHANGED");
	msecs = now_msecs() - start;
	cr_assert_geq(msecs, 1000 * (DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS - 1),
		      "retried after %u ms", msecs);
	cr_assert_geq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_eq(job->consecutive_failures, 0);
	cr_assert_str_eq(job->state, "s1");
	/* DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT (2) in a row make the
	   next one full */
	cr_assert(!job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, NULL);
	job = pop_wait(FALSE, 1000 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS +
		       1500);
	cr_assert_not_null(job, "no retry after the second CHANGED");
	cr_assert(job->full, "no full sync after two CHANGED");
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	cr_assert_null(pop(TRUE));

	/* an OK in between starts the count again */
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->full);
	cr_assert_str_eq(job->state, "s2");
	finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, NULL);
	job = pop_wait(FALSE, 1000 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS +
		       1500);
	cr_assert_not_null(job);
	cr_assert(!job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	backend_stop_all();
}

Test(queue_backend, a_full_sync_that_keeps_changing_backs_off)
{
	struct dovewarden_queue_job *job;
	long long start;
	unsigned int i, msecs, wait;

	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	for (i = 1; i <= DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT; i++) {
		finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, NULL);
		job = pop_wait(FALSE, 1000 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS +
			       1500);
		cr_assert_not_null(job, "no retry after CHANGED %u", i);
	}
	cr_assert(job->full, "no full sync after %u CHANGED",
		  DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT);
	/* the full sync answers CHANGED too: the retry waits twice as long,
	   not a failure */
	finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, NULL);
	start = now_msecs();
	wait = dovewarden_queue_changed_retry_secs(&queue_set,
		DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT + 1, FALSE);
	cr_assert_eq(wait, 2 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS);
	job = pop_wait(FALSE, 1000 * wait + 1500);
	cr_assert_not_null(job, "no retry after the full sync's CHANGED");
	msecs = now_msecs() - start;
	cr_assert_geq(msecs, 1000 * (wait - 1), "retried after %u ms, "
		      "not after %u s", msecs, wait);
	cr_assert(job->full);
	cr_assert_eq(job->consecutive_failures, 0);
	/* a change notified during the sync: the user is busy, not dsync
	   stuck, and the retry comes soon again */
	notify("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, NULL);
	job = pop_wait(FALSE, 1000 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS +
		       1500);
	cr_assert_not_null(job, "no soon retry after a busy CHANGED");
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	backend_stop_all();
}

Test(queue_backend, a_change_is_settled_by_a_full_sync)
{
	struct dovewarden_queue_job *job;
	long long start;
	unsigned int msecs;

	queue_set.settle_delay_secs = 2;
	backend_start();
	/* the first sync is full: nothing to settle after it */
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	start = now_msecs();
	cr_assert(!job->full);
	cr_assert(!job->settle);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");

	/* settle_delay_secs after the change, and only as background
	   work */
	cr_assert_null(pop(TRUE));
	job = pop_wait(TRUE, 1000 * 2 + 1500);
	cr_assert_not_null(job, "no settle sync");
	msecs = now_msecs() - start;
	cr_assert_geq(msecs, 1000, "settled after %u ms", msecs);
	cr_assert_str_eq(job->username, "alice");
	cr_assert(job->full);
	cr_assert(job->settle);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_NONE);
	cr_assert_str_eq(job->state, "s2");
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s3");
	/* settled */
	assert_nothing_due(TRUE, 3000);
	backend_stop_all();
}

/* A change synced fully (the user's first sync), then one synced
   incrementally: with a settle delay, a settle follows */
static void sync_twice(const char *username)
{
	struct dovewarden_queue_job *job;

	job = notify_and_claim(username, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	job = notify_and_claim(username, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
}

/* Changes from a plugin that reports dsync's changes are settled only
   where two servers changed the user at about the same time: a client
   change alone is not, and an import alone causes no sync at all */
Test(queue_backend, a_client_change_alone_is_not_settled)
{
	struct dovewarden_queue_job *job;

	queue_set.settle_delay_secs = 1;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	dovewarden_queue_backend_notify(backend, "alice",
					DOVEWARDEN_PRIORITY_HIGH,
					DOVEWARDEN_QUEUE_NOTIFY_FLAG_CLIENT);
	job = pop_user("alice", TRUE);
	cr_assert(!job->full);
	cr_assert(!job->settle);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	assert_nothing_due(TRUE, 2500);

	/* dsync's changes on this server: nothing to sync */
	job = notify_and_claim("bob", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	dovewarden_queue_backend_notify(backend, "bob",
					DOVEWARDEN_PRIORITY_NONE,
					DOVEWARDEN_QUEUE_NOTIFY_FLAG_IMPORT);
	assert_nothing_due(TRUE, 2500);
	/* one that asks for a sync back is synced, and not settled */
	dovewarden_queue_backend_notify(backend, "bob",
					DOVEWARDEN_PRIORITY_LOW,
					DOVEWARDEN_QUEUE_NOTIFY_FLAG_IMPORT);
	job = pop_user("bob", TRUE);
	cr_assert(!job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	assert_nothing_due(TRUE, 2500);
	backend_stop_all();
}

Test(queue_backend, settle_is_background_work_restarted_by_changes)
{
	struct dovewarden_queue_job *job;

	queue_set.settle_delay_secs = 1;
	backend_start();
	sync_twice("alice");
	run_for(2100);
	/* due, but not claimed without allow_background */
	cr_assert_null(pop(FALSE));
	/* a change restarts the delay: its sync is no settle */
	notify("alice", DOVEWARDEN_PRIORITY_LOW);
	job = pop_user("alice", TRUE);
	cr_assert(!job->full);
	cr_assert(!job->settle);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	/* the settle follows a delay after that change */
	job = pop_wait(TRUE, 2500);
	cr_assert_not_null(job, "no settle sync");
	cr_assert(job->full);
	cr_assert(job->settle);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_NONE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	assert_nothing_due(TRUE, 2000);
	backend_stop_all();
}

Test(queue_backend, a_repairing_full_sync_is_followed_by_another)
{
	struct dovewarden_queue_job *job;
	long long start;
	unsigned int msecs;

	queue_set.settle_delay_secs = 2;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1", NULL, TRUE);
	start = now_msecs();
	cr_assert_null(pop(TRUE));
	job = pop_wait(TRUE, 1000 * 2 + 1500);
	cr_assert_not_null(job, "no full sync after the repair");
	msecs = now_msecs() - start;
	cr_assert_geq(msecs, 1000, "after %u ms", msecs);
	cr_assert(job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_NONE);
	/* this one found the servers the same: done */
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	assert_nothing_due(TRUE, 3000);
	backend_stop_all();
}

Test(queue_backend, a_new_user_syncs_fully_first)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_admin_user_status status;
	struct dovewarden_queue_counts c;

	backend_start();
	/* known, idle: its first full sync is at its slot within the
	   interval, not now */
	cr_assert(dovewarden_queue_backend_add(backend, "idle"));
	if (!backend_is_redis()) {
		/* the built-in queue can tell at once */
		cr_assert(!dovewarden_queue_backend_add(backend, "idle"));
	} else {
		(void)dovewarden_queue_backend_add(backend, "idle");
	}
	notify("none", DOVEWARDEN_PRIORITY_NONE);
	c = read_counts();
	cr_assert_eq(c.users, 2);
	cr_assert_eq(pending_total(&c), 0);
	cr_assert_eq(c.full_sync_due, 0);
	cr_assert_null(pop(TRUE));
	cr_assert_str_eq(iter_usernames("idle", &status), "idle");
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_NONE);
	cr_assert_eq(status.last_full_sync, 0);
	cr_assert(status.next_sync_secs > 0 &&
		  status.next_sync_secs <= 86400,
		  "next sync in %lld s", status.next_sync_secs);

	/* a change makes it due at once, and full */
	job = notify_and_claim("idle", DOVEWARDEN_PRIORITY_LOW);
	cr_assert(job->full);
	cr_assert(!job->settle);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	job = notify_and_claim("new", DOVEWARDEN_PRIORITY_SYNC);
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	/* afterwards incremental */
	job = notify_and_claim("new", DOVEWARDEN_PRIORITY_SYNC);
	cr_assert(!job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	/* the next full sync is an interval later */
	cr_assert_str_eq(iter_usernames("new", &status), "new");
	cr_assert_neq(status.last_full_sync, 0);
	cr_assert(status.next_sync_secs > 86400 - 10 &&
		  status.next_sync_secs <= 86400,
		  "next sync in %lld s", status.next_sync_secs);
	cr_assert_null(pop(TRUE));
	backend_stop_all();
}

Test(queue_backend, a_failed_full_sync_stays_full)
{
	struct dovewarden_queue_job *job;

	queue_set.retry_min_secs = 1;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL);
	job = pop_wait(FALSE, 3000);
	cr_assert_not_null(job);
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	backend_stop_all();
}

Test(queue_backend, periodic_full_syncs_are_background_work)
{
	struct dovewarden_queue_job *job;

	queue_set.full_sync_interval_secs = 3;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->full);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	/* an interval after the last full sync started */
	run_for(3100);
	cr_assert_null(pop(FALSE));
	job = pop_wait(TRUE, 1500);
	cr_assert_not_null(job, "no periodic full sync");
	cr_assert_str_eq(job->username, "alice");
	cr_assert(job->full);
	cr_assert(!job->settle);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_NONE);
	cr_assert_str_eq(job->state, "s2");
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	cr_assert_null(pop(TRUE));
	backend_stop_all();
}

/* The user's next sync as its status tells it, in our clock */
static time_t next_sync_time(const char *username)
{
	struct dovewarden_admin_user_status status;

	cr_assert_str_eq(iter_usernames(username, &status), username);
	cr_assert_geq(status.next_sync_secs, 0, "%s: next sync in %lld s",
		      username, status.next_sync_secs);
	return ioloop_time + status.next_sync_secs;
}

/* t is at the user's slot of the interval (a second's slack) */
static void assert_at_slot(const char *username, unsigned int interval,
			   time_t t)
{
	time_t slot = dovewarden_queue_full_sync_slot(username, interval,
						      t - 2);

	cr_assert(t >= slot - 1 && t <= slot + 1,
		  "%s: %ld is not its slot %ld", username, (long)t,
		  (long)slot);
}

Test(queue_backend, added_users_wait_for_their_slots_spread_over_the_interval)
{
	const unsigned int interval = 86400, count = 200;
	unsigned int i, n = 0, tenths[10] = { 0 };
	const char *names[count];
	const char *name;
	time_t now, slot;

	backend_start();
	io_loop_time_refresh();
	now = ioloop_time;
	/* users whose slot is not during this test */
	for (i = 0; n < count; i++) {
		name = t_strdup_printf("user%05u@example.com", i);
		slot = dovewarden_queue_full_sync_slot(name, interval, now);
		if (slot - now < 60)
			continue;
		names[n++] = name;
		tenths[(slot - now) * 10 / (interval + 1)]++;
		cr_assert(dovewarden_queue_backend_add(backend, name));
	}
	/* a first start does not fully sync every user at once: each at
	   its slot, the same in every process */
	cr_assert_null(pop(TRUE));
	for (i = 0; i < count; i++)
		assert_at_slot(names[i], interval, next_sync_time(names[i]));
	for (i = 0; i < N_ELEMENTS(tenths); i++)
		cr_assert_leq(tenths[i], count / 10 * 2);
	backend_stop_all();
}

Test(queue_backend, an_idle_user_syncs_fully_at_its_slot)
{
	const unsigned int interval = 4;
	struct dovewarden_queue_job *job;
	time_t slot, t;

	queue_set.full_sync_interval_secs = interval;
	backend_start();
	io_loop_time_refresh();
	cr_assert(dovewarden_queue_backend_add(backend, "alice"));
	slot = next_sync_time("alice");
	assert_at_slot("alice", interval, slot);
	if (slot - time(NULL) > 1)
		assert_nothing_due(TRUE, (slot - time(NULL) - 1) * 1000);
	job = pop_wait(TRUE, 3000);
	cr_assert_not_null(job, "no full sync at the slot");
	t = time(NULL);
	cr_assert(t >= slot - 1 && t <= slot + 1, "synced at %ld, slot %ld",
		  (long)t, (long)slot);
	cr_assert_str_eq(job->username, "alice");
	cr_assert(job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_NONE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	/* then an interval after it */
	t = next_sync_time("alice");
	cr_assert(t >= slot + interval - 1 && t <= slot + interval + 1,
		  "next full sync at %ld, slot %ld", (long)t, (long)slot);
	backend_stop_all();
}

/* Frequent restarts do not postpone a user's first full sync */
Test(queue_backend, a_slot_survives_a_restart)
{
	time_t slot, t;

	backend_start();
	cr_assert(dovewarden_queue_backend_add(backend, "alice"));
	slot = next_sync_time("alice");
	assert_at_slot("alice", 86400, slot);
	backend_stop();
	backend_start();
	t = next_sync_time("alice");
	cr_assert(t >= slot - 1 && t <= slot + 1, "slot %ld moved to %ld",
		  (long)slot, (long)t);
	/* neither does a notification without a change */
	notify("alice", DOVEWARDEN_PRIORITY_NONE);
	t = next_sync_time("alice");
	cr_assert(t >= slot - 1 && t <= slot + 1, "slot %ld moved to %ld",
		  (long)slot, (long)t);
	backend_stop_all();
}

/* After a downtime every periodic full sync is overdue: they go at the
   users' slots within the next interval, not all at once */
Test(queue_backend, overdue_full_syncs_spread_after_a_restart)
{
	const unsigned int interval = 3;
	struct dovewarden_queue_job *job;
	const char *names[] = { "a", "b", "c", "d", "e", "f", "g", "h" };
	unsigned int i, due_now = 0;
	time_t t, restart;

	queue_set.full_sync_interval_secs = interval;
	backend_start();
	for (i = 0; i < N_ELEMENTS(names); i++) {
		job = notify_and_claim(names[i], DOVEWARDEN_PRIORITY_HIGH);
		cr_assert(job->full);
		finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	}
	backend_stop();
	/* down for two intervals */
	usleep((2 * interval + 1) * 1000000);
	restart = time(NULL);
	backend_start();
	for (i = 0; i < N_ELEMENTS(names); i++) {
		t = next_sync_time(names[i]);
		if (t > ioloop_time)
			assert_at_slot(names[i], interval, t);
		else if (dovewarden_queue_full_sync_slot(names[i], interval,
							 restart - 1) >
			 ioloop_time) {
			/* due before its slot (not one that came while
			   this test read the statuses) */
			due_now++;
		}
	}
	cr_assert_eq(due_now, 0, "%u of %u full syncs due at once", due_now,
		     (unsigned int)N_ELEMENTS(names));
	backend_stop_all();
}

Test(queue_backend, settle_is_bounded_under_continuous_activity)
{
	struct dovewarden_queue_job *job;
	unsigned int i, settles = 0, first = 0, last = 0;
	long long start;

	queue_set.settle_delay_secs = 2;
	queue_set.settle_max_secs = 4;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	/* a change every second: never quiet for settle_delay_secs */
	start = now_msecs();
	for (i = 1; i <= 12; i++) {
		job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_LOW);
		if (job->full) {
			cr_assert(job->settle);
			/* not at every sync after the maximum delay */
			cr_assert(last == 0 || i > last + 1,
				  "settles at changes %u and %u", last, i);
			if (first == 0)
				first = i;
			last = i;
			settles++;
		}
		finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
		run_for(I_MAX(start + i * 1000 - now_msecs(), 1));
	}
	/* at settle_max_secs after the first change it covers */
	cr_assert(first >= 4 && first <= 6, "first settle at change %u",
		  first);
	cr_assert(settles >= 2 && settles <= 3, "%u settles", settles);
	backend_stop_all();
}

Test(queue_backend, a_change_during_the_settle_is_settled_too)
{
	struct dovewarden_queue_job *job;

	queue_set.settle_delay_secs = 2;
	backend_start();
	sync_twice("alice");
	job = pop_wait(TRUE, 3500);
	cr_assert_not_null(job, "no settle sync");
	cr_assert(job->settle);
	/* not covered by the running settle */
	notify("alice", DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop_user("alice", TRUE);
	cr_assert(!job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop_wait(TRUE, 3500);
	cr_assert_not_null(job, "the change during the settle is not settled");
	cr_assert(job->settle);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	assert_nothing_due(TRUE, 3000);
	backend_stop_all();
}

Test(queue_backend, repairing_settles_are_capped)
{
	struct dovewarden_queue_job *job;
	unsigned int i;

	queue_set.settle_delay_secs = 1;
	backend_start();
	sync_twice("alice");
	/* each settle repairs something: another one follows, at most
	   DOVEWARDEN_QUEUE_REPAIR_SETTLE_MAX times */
	for (i = 0; i <= DOVEWARDEN_QUEUE_REPAIR_SETTLE_MAX; i++) {
		job = pop_wait(TRUE, 3000);
		cr_assert_not_null(job, "no settle %u", i);
		cr_assert(job->full);
		cr_assert(job->settle);
		finish_full(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL, NULL, TRUE);
	}
	assert_nothing_due(TRUE, 2500);
	backend_stop_all();
}

/* A change during a repairing full sync does not hide the repair: it is
   recorded, and a settle follows the change's own sync */
Test(queue_backend, a_repair_counts_also_with_a_change_during_it)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_admin_user_status status;

	/* long enough that the settle is not due before the change's own
	   sync is taken, also on a loaded machine */
	queue_set.settle_delay_secs = 3;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	notify("alice", DOVEWARDEN_PRIORITY_LOW);
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1", NULL, TRUE);
	cr_assert_str_eq(iter_usernames("alice", &status), "alice");
	cr_assert_neq(status.last_repaired, 0, "the repair was not recorded");
	cr_assert_eq(status.last_repaired, status.last_full_sync);
	job = pop_user("alice", TRUE);
	cr_assert(!job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	job = pop_wait(TRUE, 5000);
	cr_assert_not_null(job, "no settle after the repair");
	cr_assert(job->settle);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	assert_nothing_due(TRUE, 2000);
	backend_stop_all();
}

/* A periodic full sync that ends with CHANGED is retried as background
   work (LOW), and fully */
Test(queue_backend, changed_after_a_periodic_full_sync_is_low)
{
	struct dovewarden_queue_job *job;

	queue_set.full_sync_interval_secs = 3;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	job = pop_wait(TRUE, 4500);
	cr_assert_not_null(job, "no periodic full sync");
	cr_assert(job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_NONE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, NULL);
	assert_nothing_due(FALSE, 1000 * DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS +
			   500);
	job = pop_user("alice", TRUE);
	cr_assert(job->full);
	cr_assert(!job->settle);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	backend_stop_all();
}

Test(queue_backend, the_back_off_is_capped)
{
	struct dovewarden_queue_job *job;
	long long start;
	unsigned int i, msecs;

	queue_set.retry_min_secs = 1;
	queue_set.retry_max_secs = 2;
	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	/* 1, 2, 2, 2 s (no jitter below 4 s), not 1, 2, 4, 8 s */
	for (i = 1; i <= 4; i++) {
		finish_full(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL,
			    "lock timeout", FALSE);
		start = now_msecs();
		job = pop_wait(FALSE, 4000);
		cr_assert_not_null(job, "no retry after failure %u", i);
		msecs = now_msecs() - start;
		cr_assert_leq(msecs, 1000 * (I_MIN(i, 2) + 1) + 500,
			      "retry %u after %u ms", i, msecs);
		cr_assert_eq(job->consecutive_failures, i);
		cr_assert_str_eq(job->last_error, "lock timeout");
		cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	}
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	backend_stop_all();
}

Test(queue_backend, remove_forgets_the_user)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_queue_counts c;

	backend_start();
	cr_assert_eq(remove_user("nobody"), 0);
	notify("queued", DOVEWARDEN_PRIORITY_HIGH);
	notify("idle", DOVEWARDEN_PRIORITY_NONE);
	notify("bob", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_eq(remove_user("queued"), 1);
	cr_assert_eq(remove_user("queued"), 0);
	cr_assert_eq(remove_user("idle"), 1);
	cr_assert_str_eq(iter_usernames("*", NULL), "bob");
	cr_assert_str_eq(iter_usernames("queued", NULL), "");
	c = read_counts();
	cr_assert_eq(c.users, 1);
	cr_assert_eq(pending_total(&c), 1);

	/* removed while its job runs: the job's finish changes nothing */
	job = pop_user("bob", TRUE);
	cr_assert_eq(remove_user("bob"), 1);
	if (dovewarden_queue_backend_job_removed(job))
		cr_assert(dovewarden_queue_backend_job_changed(job));
	dovewarden_queue_backend_finish(&job, DOVEWARDEN_SYNC_RESULT_OK,
					"lost-state", NULL, FALSE);
	settle_requests();
	cr_assert_str_eq(iter_usernames("*", NULL), "");
	c = read_counts();
	cr_assert_eq(c.users, 0);
	cr_assert_eq(c.syncing, 0);
	cr_assert_eq(pending_total(&c), 0);
	cr_assert_null(pop(TRUE));
	/* known again: a new user */
	job = notify_and_claim("bob", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_str_eq(job->state, "");
	cr_assert(job->full);
	/* the same with a failure */
	cr_assert_eq(remove_user("bob"), 1);
	dovewarden_queue_backend_finish(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL,
					NULL, "lost", FALSE);
	settle_requests();
	c = read_counts();
	cr_assert_eq(c.users, 0);
	cr_assert_eq(c.failed, 0);
	cr_assert_null(pop(TRUE));
	backend_stop_all();
}

Test(queue_backend, nouser_forgets_the_user)
{
	struct dovewarden_queue_job *job;
	struct dovewarden_queue_counts c;

	backend_start();
	job = notify_and_claim("gone", DOVEWARDEN_PRIORITY_LOW);
	notify("gone", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_NOUSER, NULL);
	c = read_counts();
	cr_assert_eq(c.users, 0);
	cr_assert_eq(pending_total(&c), 0);
	cr_assert_null(pop(TRUE));
	cr_assert_eq(remove_user("gone"), 0);
	backend_stop_all();
}

Test(queue_backend, the_queue_survives_a_restart)
{
	struct dovewarden_queue_job *job, *jobs[3];
	struct dovewarden_queue_counts c;
	struct dovewarden_admin_user_status status;
	unsigned int i;

	backend_start();
	/* synced with a state, then changed again */
	job = notify_and_claim("synced", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "state-1");
	notify("synced", DOVEWARDEN_PRIORITY_LOW);
	/* failed */
	job = notify_and_claim("failed", DOVEWARDEN_PRIORITY_HIGH);
	finish_full(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL, "down",
		    FALSE);
	/* claimed when the service stops, given back */
	job = notify_and_claim("released", DOVEWARDEN_PRIORITY_SYNC);
	dovewarden_queue_backend_release(&job);
	cr_assert_null(job);
	/* only known */
	notify("idle", DOVEWARDEN_PRIORITY_NONE);
	backend_stop();

	backend_start();
	c = read_counts();
	cr_assert_eq(c.users, 4);
	cr_assert_eq(c.syncing, 0);
	cr_assert_eq(c.failed, 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_SYNC], 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_HIGH], 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_LOW], 1);
	cr_assert_neq(c.oldest_pending, 0);
	cr_assert_str_eq(iter_usernames("*", NULL),
			 "failed idle released synced");
	cr_assert_str_eq(iter_usernames("failed", &status), "failed");
	cr_assert_eq(status.consecutive_failures, 1);
	cr_assert_str_eq(status.last_error, "down");

	/* every change is synced again (the released one soon, without a
	   back-off), the failed one after its back-off */
	for (i = 0; i < N_ELEMENTS(jobs); i++) {
		jobs[i] = pop_wait(TRUE, 4000);
		cr_assert_not_null(jobs[i], "only %u jobs after restart", i);
		if (strcmp(jobs[i]->username, "synced") == 0) {
			cr_assert_str_eq(jobs[i]->state, "state-1");
			cr_assert(!jobs[i]->full);
			cr_assert_eq(jobs[i]->priority,
				     DOVEWARDEN_PRIORITY_LOW);
		} else if (strcmp(jobs[i]->username, "released") == 0) {
			cr_assert_eq(jobs[i]->priority,
				     DOVEWARDEN_PRIORITY_SYNC);
			cr_assert_eq(jobs[i]->consecutive_failures, 0);
			/* it never finished its first (full) sync */
			cr_assert(jobs[i]->full);
		} else {
			cr_assert_str_eq(jobs[i]->username, "failed");
			cr_assert_eq(jobs[i]->consecutive_failures, 1);
			cr_assert_str_eq(jobs[i]->last_error, "down");
			cr_assert(jobs[i]->full);
		}
	}
	cr_assert_str_eq(jobs[2]->username, "failed");
	for (i = 0; i < N_ELEMENTS(jobs); i++)
		finish(&jobs[i], DOVEWARDEN_SYNC_RESULT_OK, "state-2");
	cr_assert_null(pop(TRUE));
	c = read_counts();
	cr_assert_eq(c.users, 4);
	cr_assert_eq(pending_total(&c), 0);
	cr_assert_eq(c.failed, 0);
	backend_stop_all();
}

Test(queue_backend, notify_wait_tells_which_sync_replicated_the_change)
{
	struct dovewarden_queue_job *job;
	const struct sync_done *done;
	uint64_t seq, seq2;

	backend_start();
	seq = notify_wait("alice");
	job = pop_user("alice", FALSE);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_SYNC);
	cr_assert_gt(job->seq, seq);
	seq = job->seq;
	/* a change during the job: that job did not replicate it */
	seq2 = notify_wait("alice");
	cr_assert_geq(seq2, job->seq);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	done = sync_done_find("alice", seq);
	cr_assert_leq(done->seq, seq2);
	/* the next one did */
	job = pop_user("alice", FALSE);
	cr_assert_gt(job->seq, seq2);
	seq = job->seq;
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	done = sync_done_find("alice", seq);
	cr_assert_gt(done->seq, seq2);

	/* also a failed or CHANGED sync is done, with its result */
	seq2 = notify_wait("alice");
	job = pop_user("alice", FALSE);
	cr_assert_gt(job->seq, seq2);
	finish(&job, DOVEWARDEN_SYNC_RESULT_CHANGED, NULL);
	/* sync_done() also tells other users' syncs apart */
	job = notify_and_claim("bob", DOVEWARDEN_PRIORITY_HIGH);
	finish(&job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL);
	cr_assert_eq(array_count(&syncs_done), 4);
	backend_stop_all();
}

Test(queue_backend, counts_follow_the_queue)
{
	struct dovewarden_queue_counts c;
	struct dovewarden_queue_job *job, *job2;
	time_t before = time(NULL);

	backend_start();
	c = read_counts();
	cr_assert_eq(c.users, 0);
	cr_assert_eq(c.oldest_pending, 0);
	notify("a", DOVEWARDEN_PRIORITY_LOW);
	notify("b", DOVEWARDEN_PRIORITY_HIGH);
	notify("c", DOVEWARDEN_PRIORITY_SYNC);
	notify("d", DOVEWARDEN_PRIORITY_HIGH);
	notify("e", DOVEWARDEN_PRIORITY_NONE);
	job = pop_user("c", FALSE);
	job2 = pop_user("b", FALSE);
	finish(&job2, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL);

	c = read_counts();
	cr_assert_eq(c.users, 5);
	cr_assert_eq(c.syncing, 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_SYNC], 0);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_HIGH], 2);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_LOW], 1);
	cr_assert_eq(c.failed, 1);
	cr_assert(c.failed_waiting == 0 || c.failed_waiting == 1);
	cr_assert(c.oldest_pending >= before - 1 &&
		  c.oldest_pending <= time(NULL) + 1,
		  "oldest_pending %ld", (long)c.oldest_pending);

	/* get_counts(): the same, at most a second later */
	run_for(1100);
	dovewarden_queue_backend_get_counts(backend, &c);
	cr_assert_eq(c.users, 5);
	cr_assert_eq(c.syncing, 1);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_HIGH], 2);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_LOW], 1);
	cr_assert_eq(c.failed, 1);
	cr_assert_eq(c.failed_waiting, 0);
	cr_assert_eq(c.full_sync_due, 0);
	cr_assert_neq(c.oldest_pending, 0);

	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	c = read_counts();
	cr_assert_eq(c.syncing, 0);
	cr_assert_eq(c.pending[DOVEWARDEN_PRIORITY_HIGH], 2);
	backend_stop_all();
}

Test(queue_backend, status_iteration_is_sorted_and_masked)
{
	struct dovewarden_admin_user_status status;
	struct dovewarden_queue_job *job;
	const char *names[] = { "b1", "a2", "c", "a1", "ab@example.org" };

	backend_start();
	cr_assert_str_eq(iter_usernames("*", NULL), "");
	for (unsigned int i = 0; i < N_ELEMENTS(names); i++)
		notify(names[i], DOVEWARDEN_PRIORITY_NONE);
	notify("c", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_str_eq(iter_usernames("*", NULL),
			 "a1 a2 ab@example.org b1 c");
	cr_assert_str_eq(iter_usernames("a*", NULL), "a1 a2 ab@example.org");
	cr_assert_str_eq(iter_usernames("a?", NULL), "a1 a2");
	cr_assert_str_eq(iter_usernames("*@example.org", NULL),
			 "ab@example.org");
	cr_assert_str_eq(iter_usernames("x*", NULL), "");
	cr_assert_str_eq(iter_usernames("nobody", NULL), "");

	cr_assert_str_eq(iter_usernames("c", &status), "c");
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_eq(status.consecutive_failures, 0);
	cr_assert_str_eq(status.last_error, "");
	cr_assert_eq(status.last_fast_sync, 0);
	/* due now */
	cr_assert(status.next_sync_secs <= 0, "next sync in %lld s",
		  status.next_sync_secs);

	job = pop_user("c", FALSE);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	cr_assert_str_eq(iter_usernames("c", &status), "c");
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_NONE);
	cr_assert_neq(status.last_fast_sync, 0);
	cr_assert_neq(status.last_full_sync, 0);
	cr_assert_neq(status.last_successful_sync, 0);
	cr_assert_neq(status.last_verified, 0);
	cr_assert_eq(status.last_repaired, 0);
	backend_stop_all();
}

/* A running sync still works for the priority it claimed */
Test(queue_backend, status_of_a_running_sync_keeps_its_priority)
{
	struct dovewarden_admin_user_status status;
	struct dovewarden_queue_job *job;

	backend_start();
	job = notify_and_claim("alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_str_eq(iter_usernames("alice", &status), "alice");
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_eq(status.next_sync_secs, 0);
	/* a lower change during it does not lower it, a higher one
	   raises it */
	notify("alice", DOVEWARDEN_PRIORITY_LOW);
	cr_assert_str_eq(iter_usernames("alice", &status), "alice");
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_HIGH);
	notify("alice", DOVEWARDEN_PRIORITY_SYNC);
	cr_assert_str_eq(iter_usernames("alice", &status), "alice");
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_SYNC);
	finish(&job, DOVEWARDEN_SYNC_RESULT_OK, "s1");
	backend_stop_all();
}

struct lock_result {
	bool called, acquired;
	char *error;
};

static void lock_callback(bool acquired, const char *error, void *context)
{
	struct lock_result *res = context;

	cr_assert(!res->called, "lock callback called twice");
	res->called = TRUE;
	res->acquired = acquired;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

Test(queue_backend, a_free_lock_is_taken)
{
	struct lock_result res;

	backend_start();
	i_zero(&res);
	dovewarden_queue_backend_try_lock(backend, "sweep", 10,
					  lock_callback, &res);
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS));
	cr_assert_null(res.error, "%s", res.error);
	cr_assert(res.acquired);
	backend_stop_all();
}

static bool try_lock(const char *name, unsigned int secs)
{
	struct lock_result res;

	i_zero(&res);
	dovewarden_queue_backend_try_lock(backend, name, secs, lock_callback,
					  &res);
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS));
	cr_assert_null(res.error, "%s", res.error);
	return res.acquired;
}

/* A restarted service (kill -9, doveadm reload) must not sweep the
   userdb again at once: the lock outlives the process */
Test(queue_backend, a_lock_survives_a_restart)
{
	backend_start();
	cr_assert(try_lock("sweep", 60));
	cr_assert(!try_lock("sweep", 60));
	backend_stop();
	backend_start();
	cr_assert(!try_lock("sweep", 60), "a restart took the lock again");
	cr_assert(try_lock("other", 60));
	/* let go (a failed sweep): the next try gets it */
	dovewarden_queue_backend_unlock(backend, "sweep");
	run_for(100);
	cr_assert(try_lock("sweep", 1));
	/* and it expires */
	run_for(2100);
	cr_assert(try_lock("sweep", 60));
	/* the next test starts without them */
	dovewarden_queue_backend_unlock(backend, "sweep");
	dovewarden_queue_backend_unlock(backend, "other");
	run_for(100);
	backend_stop_all();
}

/* A shared backend that does not answer must not look like "another
   instance has the lock": the sweep would skip an interval */
Test(queue_backend, a_lock_the_backend_did_not_answer_is_an_error)
{
	struct lock_result res;

	if (!backend_is_redis())
		cr_skip_test("the built-in queue always answers");
	backend_start();
	i_zero(&res);
	cr_assert_eq(kill(redis_pid, SIGSTOP), 0);
	dovewarden_queue_backend_try_lock(backend, "sweep", 60,
					  lock_callback, &res);
	/* dovewarden_redis_timeout = 1000 */
	cr_assert(run_until(&res.called, REPLY_TIMEOUT_MSECS * 2));
	(void)kill(redis_pid, SIGCONT);
	cr_assert(!res.acquired);
	cr_assert_not_null(res.error);
	i_free(res.error);
	backend_stop_all();
}
