/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "net.h"
#include "time-util.h"
#include "str.h"
#include "unlink-directory.h"
#include "write-full.h"
#include "dovewarden-compat.h"
#include "dovewarden-config.h"
#include "dovewarden-store.h"
#include "dovewarden-redis-queue.h"

#include <hiredis/hiredis.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The Redis queue against a real redis-server (on a unix socket in a
   temporary directory, one per test, with its append-only file synced
   at every write, so that a kill and restart keeps the data); skipped
   when it is not installed. */

#define REDIS_SERVER_BIN "/usr/bin/redis-server"

static char test_dir[] = "/tmp/dw-redis-test.XXXXXX";
static const char *socket_path;
static pid_t redis_pid = -1;
static struct ioloop *ioloop;

static void redis_start(void)
{
	const char *conf_dir = test_dir;
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
		      "--unixsocket", socket_path, "--dir", conf_dir,
		      "--save", "", "--appendonly", "yes",
		      "--appendfsync", "always", (char *)NULL);
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
	/* the TLS suite's redis-server has no unix socket */
	if (socket_path != NULL)
		(void)unlink(socket_path);
}

static void suite_init(void)
{
	if (access(REDIS_SERVER_BIN, X_OK) < 0)
		cr_skip_test("%s is not installed", REDIS_SERVER_BIN);
	lib_init();
	ioloop = io_loop_create();
	cr_assert_not_null(mkdtemp(test_dir));
	socket_path = i_strconcat(test_dir, "/redis.sock", NULL);
	redis_start();
}

static void test_dir_remove(void)
{
	const char *error;

	/* redis-server leaves its appendonlydir there */
	if (unlink_directory(test_dir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("%s", error);
}

static void suite_fini(void)
{
	redis_stop();
	if (ioloop == NULL)
		return;
	test_dir_remove();
	io_loop_destroy(&ioloop);
	lib_deinit();
}

TestSuite(redis_queue, .init = suite_init, .fini = suite_fini);

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

/* a queue instance */

struct instance {
	struct dovewarden_redis_queue *queue;
	bool connected;
	ARRAY(char *) done;
};

static void instance_connected(void *context)
{
	struct instance *inst = context;

	inst->connected = TRUE;
	io_loop_stop(ioloop);
}

static void instance_sync_done(const char *username, uint64_t seq,
			       const char *result, void *context)
{
	struct instance *inst = context;
	char *line = i_strdup_printf("%s %"PRIu64" %s", result, seq, username);

	array_push_back(&inst->done, &line);
	io_loop_stop(ioloop);
}

static const struct dovewarden_redis_queue_callbacks instance_callbacks = {
	.connected = instance_connected,
	.sync_done = instance_sync_done,
};

static const char *instance_username = "", *instance_password = "";
/* with TLS: the host, port and TLS settings (NULL: the unix socket) */
static const struct dovewarden_redis_settings *instance_tls = NULL;
/* the Dovecot server the instances sync from */
static const char *instance_server = "a.example.org";
static unsigned int instance_db = 0;
/* the instances' identity (NULL: none) */
static const char *instance_identity = NULL;
/* dovewarden_settle_delay of the next instances (0 = no settle) */
static unsigned int instance_settle_secs = 0;
/* the instances' buffer file (NULL: none) */
static const char *instance_buffer_path = NULL;

static void instance_init(struct instance *inst, const char *owner,
			  unsigned int claim_secs, unsigned int buffer_limit)
{
	struct dovewarden_redis_queue_settings set;

	i_zero(&set);
	set.redis.host = socket_path;
	set.redis.username = instance_username;
	set.redis.password = instance_password;
	set.redis.db = instance_db;
	set.redis.timeout_msecs = 500;
	if (instance_tls != NULL) {
		set.redis.host = instance_tls->host;
		set.redis.port = instance_tls->port;
		set.redis.ssl = instance_tls->ssl;
		set.redis.ssl_ca_file = instance_tls->ssl_ca_file;
		set.redis.ssl_cert_file = instance_tls->ssl_cert_file;
		set.redis.ssl_key_file = instance_tls->ssl_key_file;
		set.redis.ssl_server_name = instance_tls->ssl_server_name;
	}
	set.queue.full_sync_interval_secs = 86400;
	set.queue.retry_min_secs = 2;
	set.queue.retry_max_secs = 60;
	set.queue.settle_delay_secs = instance_settle_secs;
	set.queue.settle_max_secs = 300;
	set.prefix = "t:";
	set.owner = owner;
	set.identity = instance_identity;
	set.server = instance_server;
	set.claim_timeout_secs = claim_secs;
	set.buffer_limit = buffer_limit;
	set.buffer_path = instance_buffer_path;

	i_zero(inst);
	i_array_init(&inst->done, 8);
	inst->queue = dovewarden_redis_queue_init(&set, NULL,
						  &instance_callbacks, inst);
}

static void instance_init_connected(struct instance *inst, const char *owner)
{
	instance_init(inst, owner, 60, 1000);
	cr_assert(run_until(&inst->connected, 3000), "no connection");
}

static void instance_deinit(struct instance *inst)
{
	char *line;

	dovewarden_redis_queue_deinit(&inst->queue);
	array_foreach_elem(&inst->done, line)
		i_free(line);
	array_free(&inst->done);
}

/* pop */

struct pop_result {
	bool called;
	struct dovewarden_redis_job *job;
	int next_due_secs;
	char *error;
};

static void pop_callback(struct dovewarden_redis_job *job, int next_due_secs,
			 const char *error, void *context)
{
	struct pop_result *res = context;

	res->called = TRUE;
	res->job = job;
	res->next_due_secs = next_due_secs;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

/* Returns the claimed job or NULL; *next_due_r (if not NULL) gets the
   seconds until the next user is due */
static struct dovewarden_redis_job *
pop(struct instance *inst, bool allow_background, int *next_due_r)
{
	struct pop_result res;

	i_zero(&res);
	cr_assert_eq(dovewarden_redis_queue_pop(inst->queue, allow_background,
						pop_callback, &res), 0);
	cr_assert(run_until(&res.called, 3000), "pop got no reply");
	cr_assert_null(res.error, "pop failed: %s", res.error);
	if (next_due_r != NULL)
		*next_due_r = res.next_due_secs;
	return res.job;
}

static void finish(struct instance *inst, struct dovewarden_redis_job *job,
		   enum dovewarden_sync_result result, const char *state)
{
	dovewarden_redis_queue_finish(inst->queue, &job, result, state, NULL,
				      FALSE);
	/* the finish is a fire-and-forget command: let it reach Redis */
	run_for(50);
}

/* notify a change of user and claim it */
static struct dovewarden_redis_job *
notify_and_claim(struct instance *inst, const char *user,
		 enum dovewarden_priority priority)
{
	struct dovewarden_redis_job *job;

	dovewarden_redis_queue_notify(inst->queue, user, priority, FALSE,
				      FALSE);
	job = pop(inst, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, user);
	return job;
}

static struct dovewarden_redis_queue_stats stats(struct instance *inst)
{
	struct dovewarden_redis_queue_stats st;

	run_for(1100);
	dovewarden_redis_queue_get_stats(inst->queue, &st);
	return st;
}

static void notify(struct instance *inst, const char *user,
		   enum dovewarden_priority priority)
{
	dovewarden_redis_queue_notify(inst->queue, user, priority, FALSE,
				      FALSE);
}

Test(redis_queue, two_instances_never_claim_one_user_twice)
{
	struct instance a, b;
	struct dovewarden_redis_job *job, *job2;

	instance_init_connected(&a, "a");
	instance_init_connected(&b, "b");
	notify(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	notify(&b, "bob", DOVEWARDEN_PRIORITY_HIGH);
	run_for(50);
	job = pop(&b, FALSE, NULL);
	cr_assert_not_null(job);
	job2 = pop(&a, FALSE, NULL);
	cr_assert_not_null(job2);
	cr_assert_str_neq(job->username, job2->username);
	notify(&a, job->username, DOVEWARDEN_PRIORITY_SYNC);
	cr_assert_null(pop(&a, FALSE, NULL));
	cr_assert_null(pop(&b, FALSE, NULL));
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "x");
	/* the change made during b's sync: any instance may take it */
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_SYNC);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "y");
	finish(&a, job2, DOVEWARDEN_SYNC_RESULT_OK, "z");
	instance_deinit(&a);
	instance_deinit(&b);
}

/* How long the claims of dying_instance_run() last: long enough that the
   next instance is connected before they expire, also on a loaded machine
   under ASan */
#define DYING_CLAIM_SECS 3

/* Run claims() in an instance (of instance_server, with DYING_CLAIM_SECS
   claims) that dies after it: its exit code is that of claims(), which
   must be 0 */
static void dying_instance_run(int (*claims)(struct instance *inst))
{
	pid_t pid;
	int status;

	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct instance inst;

		instance_init(&inst, "dies", DYING_CLAIM_SECS, 1000);
		/* a loaded machine: only the claims' expiry is timed */
		if (!run_until(&inst.connected, 10000))
			_exit(1);
		_exit(claims(&inst));
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int claim_alice(struct instance *inst)
{
	struct dovewarden_redis_job *job;

	notify(inst, "alice", DOVEWARDEN_PRIORITY_HIGH);
	job = pop(inst, FALSE, NULL);
	return job != NULL && strcmp(job->username, "alice") == 0 ? 0 : 2;
}

Test(redis_queue, claim_of_a_dead_instance_expires_and_is_taken_back)
{
	struct instance b;
	struct dovewarden_redis_job *job;

	/* the instance that dies in the middle of its sync */
	dying_instance_run(claim_alice);
	instance_init_connected(&b, "b");
	/* claimed by the dead one */
	cr_assert_null(pop(&b, FALSE, NULL));
	run_for(DYING_CLAIM_SECS * 1000 + 1100);
	job = pop(&b, FALSE, NULL);
	cr_assert_not_null(job, "the expired claim was not taken back");
	cr_assert_str_eq(job->username, "alice");
	/* the change the dead instance was syncing is still there, and its
	   sync was a full one, so this one is too */
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	cr_assert_null(pop(&b, TRUE, NULL));
	instance_deinit(&b);
}

/* A restarted instance (kill -9, doveadm reload) gives its previous
   run's claims back at once, not after the claim timeout (it did after
   a minute by default); other instances' claims stay */
Test(redis_queue, a_restarted_instance_takes_its_claims_back_at_once)
{
	struct instance a, other;
	struct dovewarden_redis_job *job;
	pid_t pid;
	int status;

	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		instance_identity = "host:1234";
		instance_init(&a, "host:1234:111:aa", 60, 1000);
		if (!run_until(&a.connected, 3000))
			_exit(1);
		notify(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
		notify(&a, "bob", DOVEWARDEN_PRIORITY_LOW);
		if (pop(&a, FALSE, NULL) == NULL ||
		    pop(&a, TRUE, NULL) == NULL)
			_exit(2);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* another instance's claim: "host:12345" is not "host:1234" */
	instance_identity = "host:12345";
	instance_init_connected(&other, "host:12345:222:bb");
	notify(&other, "carol", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_not_null(pop(&other, FALSE, NULL));
	cr_assert_eq(stats(&other).syncing, 3);

	instance_identity = "host:1234";
	instance_init_connected(&a, "host:1234:333:cc");
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job, "the previous run's claims were not taken "
			   "back");
	cr_assert_str_eq(job->username, "alice");
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	job = pop(&a, TRUE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, "bob");
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	cr_assert_null(pop(&a, FALSE, NULL));
	cr_assert_eq(stats(&a).syncing, 1);
	instance_identity = NULL;
	instance_deinit(&a);
	instance_deinit(&other);
}

Test(redis_queue, renewed_claims_do_not_expire)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	instance_init(&a, "a", 3, 1000);
	cr_assert(run_until(&a.connected, 3000));
	instance_init_connected(&b, "b");
	notify(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	/* a renews every second */
	run_for(4500);
	cr_assert_null(pop(&b, FALSE, NULL));
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	instance_deinit(&a);
	instance_deinit(&b);
}

Test(redis_queue, background_work_waits_for_its_slots)
{
	struct instance inst;
	struct dovewarden_redis_job *job;

	instance_init_connected(&inst, "o1");
	dovewarden_redis_queue_notify(inst.queue, "alice",
				      DOVEWARDEN_PRIORITY_NONE, TRUE, FALSE);
	/* a forced full sync is a low change: background work too */
	cr_assert_null(pop(&inst, FALSE, NULL));
	job = pop(&inst, TRUE, NULL);
	cr_assert_not_null(job);
	cr_assert(job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&inst, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	instance_deinit(&inst);
}

Test(redis_queue, sync_results_are_published)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;
	const char *user = "odd user with spaces";
	char *line;

	instance_init_connected(&a, "a");
	instance_init_connected(&b, "b");
	/* the subscriber connection may come up after the command one */
	run_for(200);
	notify(&a, user, DOVEWARDEN_PRIORITY_SYNC);
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, user);
	cr_assert_eq(job->seq, 1);
	dovewarden_redis_queue_finish(a.queue, &job, DOVEWARDEN_SYNC_RESULT_OK,
				      "s", NULL, FALSE);
	for (unsigned int i = 0; i < 20 && array_count(&b.done) == 0; i++)
		run_for(50);
	cr_assert_eq(array_count(&b.done), 1);
	line = array_idx_elem(&b.done, 0);
	cr_assert_str_eq(line, "ok 1 odd user with spaces");
	instance_deinit(&a);
	instance_deinit(&b);
}

Test(redis_queue, notifications_wait_for_redis_and_nothing_is_lost)
{
	struct instance inst, check;
	struct dovewarden_redis_job *job;
	struct dovewarden_redis_queue_stats st;
	unsigned int buffered;
	uint64_t dropped;

	instance_init(&inst, "o1", 60, 3);
	cr_assert(run_until(&inst.connected, 3000));
	redis_stop();
	run_for(100);
	cr_assert(!dovewarden_redis_queue_is_connected(inst.queue));
	notify(&inst, "u1", DOVEWARDEN_PRIORITY_HIGH);
	notify(&inst, "u2", DOVEWARDEN_PRIORITY_LOW);
	notify(&inst, "u3", DOVEWARDEN_PRIORITY_LOW);
	/* beyond buffer_limit = 3 users: dropped and counted */
	notify(&inst, "u4", DOVEWARDEN_PRIORITY_LOW);
	/* a known user's change is merged, not dropped */
	notify(&inst, "u2", DOVEWARDEN_PRIORITY_SYNC);
	dovewarden_redis_queue_get_buffer(inst.queue, &buffered, &dropped);
	cr_assert_eq(buffered, 3);
	cr_assert_eq(dropped, 1);

	inst.connected = FALSE;
	redis_start();
	cr_assert(run_until(&inst.connected, 15000), "no reconnect");
	/* Redis may answer LOADING for a moment: retried a second later */
	for (unsigned int i = 0; i < 30; i++) {
		dovewarden_redis_queue_get_buffer(inst.queue, &buffered,
						  &dropped);
		if (buffered == 0)
			break;
		run_for(100);
	}
	cr_assert_eq(buffered, 0);
	job = pop(&inst, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, "u2");
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_SYNC);
	finish(&inst, job, DOVEWARDEN_SYNC_RESULT_OK, "s");

	/* at deinit, what is still buffered is written synchronously */
	redis_stop();
	run_for(100);
	notify(&inst, "late", DOVEWARDEN_PRIORITY_HIGH);
	redis_start();
	instance_deinit(&inst);
	instance_init_connected(&check, "check");
	st = stats(&check);
	/* u1, u2, u3 and late; u1 and late wait at HIGH, u3 at LOW */
	cr_assert_eq(st.users, 4);
	cr_assert_eq(st.pending_by_priority[DOVEWARDEN_PRIORITY_HIGH], 2);
	cr_assert_eq(st.pending_by_priority[DOVEWARDEN_PRIORITY_LOW], 1);
	instance_deinit(&check);
}

static void wait_buffer_sent(struct instance *inst)
{
	unsigned int buffered;
	uint64_t dropped;

	/* Redis may answer LOADING for a moment: retried a second later */
	for (unsigned int i = 0; i < 30; i++) {
		dovewarden_redis_queue_get_buffer(inst->queue, &buffered,
						  &dropped);
		if (buffered == 0)
			break;
		run_for(100);
	}
	cr_assert_eq(buffered, 0);
}

static off_t file_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		cr_assert_eq(errno, ENOENT, "stat(%s) failed: %m", path);
		return -1;
	}
	return st.st_size;
}

static void file_copy(const char *src, const char *dest)
{
	char buf[65536];
	ssize_t ret;
	int in, out;

	in = open(src, O_RDONLY);
	cr_assert(in != -1);
	out = open(dest, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(out != -1);
	while ((ret = read(in, buf, sizeof(buf))) > 0)
		cr_assert_eq(write_full(out, buf, ret), 0);
	cr_assert_eq(ret, 0);
	i_close_fd(&in);
	i_close_fd(&out);
}

Test(redis_queue, buffered_notifications_survive_a_kill_while_redis_is_down)
{
	struct instance inst, check;
	struct dovewarden_redis_job *job;
	struct dovewarden_redis_queue_stats st;
	const char *path = t_strconcat(test_dir, "/buffer", NULL);
	const char *killed = t_strconcat(test_dir, "/buffer.at-kill", NULL);
	unsigned int buffered;
	uint64_t dropped;

	instance_buffer_path = path;
	instance_init(&inst, "o1", 60, 100);
	cr_assert(run_until(&inst.connected, 3000));
	/* while Redis answers, nothing is written */
	notify(&inst, "early", DOVEWARDEN_PRIORITY_LOW);
	run_for(100);
	cr_assert_leq(file_size(path), 0);

	redis_stop();
	run_for(100);
	notify(&inst, "u1", DOVEWARDEN_PRIORITY_LOW);
	dovewarden_redis_queue_notify(inst.queue, "u1",
				      DOVEWARDEN_PRIORITY_HIGH, TRUE, FALSE);
	notify(&inst, "u2", DOVEWARDEN_PRIORITY_LOW);
	notify(&inst, "u2", DOVEWARDEN_PRIORITY_SYNC);
	/* a repeated change adds nothing */
	notify(&inst, "u2", DOVEWARDEN_PRIORITY_HIGH);
	dovewarden_redis_queue_get_buffer(inst.queue, &buffered, &dropped);
	cr_assert_eq(buffered, 2);
	/* what a kill -9 leaves behind: the file as it is now (deinit
	   could not write to Redis either, and keeps it) */
	cr_assert_gt(file_size(path), 0);
	file_copy(path, killed);
	instance_deinit(&inst);
	cr_assert_gt(file_size(path), 0);
	cr_assert_eq(rename(killed, path), 0);

	/* the next process loads it, and sends it once Redis is back */
	instance_init(&inst, "o2", 60, 100);
	dovewarden_redis_queue_get_buffer(inst.queue, &buffered, &dropped);
	cr_assert_eq(buffered, 2);
	redis_start();
	cr_assert(run_until(&inst.connected, 15000), "no connection");
	wait_buffer_sent(&inst);
	run_for(100);
	cr_assert_leq(file_size(path), 0, "the file was not emptied");

	instance_buffer_path = NULL;
	instance_init_connected(&check, "check");
	st = stats(&check);
	cr_assert_eq(st.users, 3);
	cr_assert_eq(st.pending_by_priority[DOVEWARDEN_PRIORITY_SYNC], 1);
	cr_assert_eq(st.pending_by_priority[DOVEWARDEN_PRIORITY_HIGH], 1);
	cr_assert_eq(st.pending_by_priority[DOVEWARDEN_PRIORITY_LOW], 1);
	job = pop(&check, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, "u2");
	finish(&check, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	job = pop(&check, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, "u1");
	cr_assert(job->full, "the forced full sync was lost");
	finish(&check, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	instance_deinit(&check);
	instance_deinit(&inst);
	/* a clean stop with Redis up leaves no file */
	cr_assert_eq(file_size(path), -1);
}

static void remove_callback(int ret ATTR_UNUSED, const char *error ATTR_UNUSED,
			    void *context ATTR_UNUSED)
{
}

Test(redis_queue, a_removed_user_stays_removed_after_a_kill)
{
	struct instance inst;
	const char *path = t_strconcat(test_dir, "/buffer", NULL);
	const char *killed = t_strconcat(test_dir, "/buffer.at-kill", NULL);
	unsigned int buffered;
	uint64_t dropped;

	redis_stop();
	instance_buffer_path = path;
	instance_init(&inst, "o1", 60, 100);
	notify(&inst, "u1", DOVEWARDEN_PRIORITY_HIGH);
	notify(&inst, "u2", DOVEWARDEN_PRIORITY_HIGH);
	notify(&inst, "u3", DOVEWARDEN_PRIORITY_HIGH);
	/* doveadm dovewarden remove u1 while Redis is down */
	(void)dovewarden_redis_queue_remove(inst.queue, "u1",
					    remove_callback, NULL);
	dovewarden_redis_queue_get_buffer(inst.queue, &buffered, &dropped);
	cr_assert_eq(buffered, 2);
	file_copy(path, killed);
	instance_deinit(&inst);
	cr_assert_eq(rename(killed, path), 0);

	instance_init(&inst, "o2", 60, 100);
	dovewarden_redis_queue_get_buffer(inst.queue, &buffered, &dropped);
	cr_assert_eq(buffered, 2, "u1 came back");
	instance_deinit(&inst);
	instance_buffer_path = NULL;
}

Test(redis_queue, a_corrupt_buffer_file_is_kept_aside)
{
	struct instance inst;
	const char *path = t_strconcat(test_dir, "/buffer", NULL);
	const char *corrupt = t_strconcat(path, ".corrupt", NULL);
	string_t *str = t_str_new(256);
	unsigned int buffered;
	uint64_t dropped;
	int fd;

	dovewarden_store_format_journal(str, DOVEWARDEN_STORE_JOURNAL_NOTIFY,
					"good", DOVEWARDEN_PRIORITY_HIGH);
	str_append(str, "\nN\tbad\x01name\thigh\nnonsense\n"
		   "R\tgone\tnone\n");
	dovewarden_store_format_journal(str,
		DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC, "good2",
		DOVEWARDEN_PRIORITY_LOW);
	/* a last line without LF is still read */
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd != -1);
	cr_assert_eq(write_full(fd, str_data(str), str_len(str)), 0);
	i_close_fd(&fd);

	redis_stop();
	instance_buffer_path = path;
	instance_init(&inst, "o1", 60, 100);
	dovewarden_redis_queue_get_buffer(inst.queue, &buffered, &dropped);
	cr_assert_eq(buffered, 2);
	cr_assert_eq(file_size(corrupt), (off_t)str_len(str),
		     "the corrupt file was not kept aside");
	cr_assert_gt(file_size(path), 0);
	redis_start();
	cr_assert(run_until(&inst.connected, 15000), "no connection");
	wait_buffer_sent(&inst);
	instance_deinit(&inst);
	(void)unlink(corrupt);
	instance_buffer_path = NULL;
}

Test(redis_queue, results_wait_for_redis)
{
	struct instance inst;
	struct dovewarden_redis_job *job;

	instance_init_connected(&inst, "o1");
	job = notify_and_claim(&inst, "alice", DOVEWARDEN_PRIORITY_HIGH);
	/* Redis hangs: the finish times out and waits for it */
	cr_assert_eq(kill(redis_pid, SIGSTOP), 0);
	dovewarden_redis_queue_finish(inst.queue, &job,
				      DOVEWARDEN_SYNC_RESULT_OK, "new", NULL,
				      FALSE);
	run_for(800);
	cr_assert_eq(kill(redis_pid, SIGCONT), 0);
	/* the connection is made anew and the result sent (the one sent
	   before the timeout may be applied too: the second finds the claim
	   gone and is ignored) */
	run_for(1500);
	notify(&inst, "alice", DOVEWARDEN_PRIORITY_LOW);
	job = pop(&inst, TRUE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->state, "new");
	finish(&inst, job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	instance_deinit(&inst);
}

struct stuck_result {
	bool called;
	char *error;
};

static void stuck_callback(struct dovewarden_redis_job *job ATTR_UNUSED,
			   int next_due_secs ATTR_UNUSED, const char *error,
			   void *context)
{
	struct stuck_result *res = context;

	res->called = TRUE;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

Test(redis_queue, a_hung_redis_times_out)
{
	struct instance inst;
	struct stuck_result res;
	struct timeval start, end;

	instance_init_connected(&inst, "o1");
	i_zero(&res);
	cr_assert_eq(kill(redis_pid, SIGSTOP), 0);
	i_gettimeofday(&start);
	cr_assert_eq(dovewarden_redis_queue_pop(inst.queue, TRUE,
						stuck_callback, &res), 0);
	cr_assert(run_until(&res.called, 5000), "no timeout");
	i_gettimeofday(&end);
	(void)kill(redis_pid, SIGCONT);
	cr_assert_not_null(res.error);
	cr_assert_not_null(strstr(res.error, "Timeout"), "%s", res.error);
	i_free(res.error);
	/* timeout_msecs = 500 */
	cr_assert(timeval_diff_msecs(&end, &start) < 2000);
	/* and it reconnects */
	inst.connected = FALSE;
	cr_assert(run_until(&inst.connected, 15000), "no reconnect");
	instance_deinit(&inst);
}

struct lock_result {
	bool called, acquired;
	char *error;
};

static void lock_callback(bool acquired, const char *error, void *context)
{
	struct lock_result *res = context;

	res->called = TRUE;
	res->acquired = acquired;
	res->error = i_strdup(error);
	io_loop_stop(ioloop);
}

Test(redis_queue, a_lock_is_taken_once)
{
	struct instance a, b;
	struct lock_result ra, rb;

	instance_init_connected(&a, "a");
	instance_init_connected(&b, "b");
	i_zero(&ra);
	i_zero(&rb);
	cr_assert_eq(dovewarden_redis_queue_try_lock(a.queue, "sweep", 60,
						     lock_callback, &ra), 0);
	cr_assert(run_until(&ra.called, 3000));
	cr_assert_eq(dovewarden_redis_queue_try_lock(b.queue, "sweep", 60,
						     lock_callback, &rb), 0);
	cr_assert(run_until(&rb.called, 3000));
	cr_assert_null(ra.error, "%s", ra.error);
	cr_assert_null(rb.error, "%s", rb.error);
	cr_assert(ra.acquired);
	cr_assert(!rb.acquired);
	instance_deinit(&a);
	instance_deinit(&b);
}

/* A lock that Redis did not answer for is an error, not "someone else
   has it": the sweep then tries again soon instead of an interval
   later */
Test(redis_queue, a_lock_redis_did_not_answer_is_an_error)
{
	struct instance inst;
	struct lock_result res;

	instance_init_connected(&inst, "o1");
	i_zero(&res);
	cr_assert_eq(kill(redis_pid, SIGSTOP), 0);
	cr_assert_eq(dovewarden_redis_queue_try_lock(inst.queue, "sweep", 60,
						     lock_callback, &res), 0);
	cr_assert(run_until(&res.called, 5000), "no timeout");
	(void)kill(redis_pid, SIGCONT);
	cr_assert(!res.acquired);
	cr_assert_not_null(res.error);
	i_free(res.error);
	instance_deinit(&inst);
}

struct scan_result {
	bool done;
	ARRAY(char *) names;
	struct instance *inst;
};

static void scan_callback(const char *const *usernames, unsigned int count,
			  const char *next_cursor, const char *error,
			  void *context)
{
	struct scan_result *res = context;

	cr_assert_null(error);
	for (unsigned int i = 0; i < count; i++) {
		char *name = i_strdup(usernames[i]);

		array_push_back(&res->names, &name);
	}
	if (strcmp(next_cursor, "0") == 0 ||
	    dovewarden_redis_queue_scan(res->inst->queue, next_cursor,
					scan_callback, res) < 0) {
		res->done = TRUE;
		io_loop_stop(ioloop);
	}
}

struct get_result {
	bool done;
	unsigned int count, known;
	enum dovewarden_priority priority;
	bool syncing;
};

static void get_callback(const struct dovewarden_redis_user *const *users,
			 unsigned int count, const char *error, void *context)
{
	struct get_result *res = context;

	cr_assert_null(error);
	res->count = count;
	for (unsigned int i = 0; i < count; i++) {
		if (users[i] == NULL)
			continue;
		res->known++;
		res->priority = users[i]->priority;
		res->syncing = users[i]->syncing;
	}
	res->done = TRUE;
	io_loop_stop(ioloop);
}

Test(redis_queue, users_are_listed_and_read)
{
	struct instance inst;
	struct scan_result scan;
	struct get_result get;
	const char *names[] = { "ünï", "nobody" };
	char *name;

	instance_init_connected(&inst, "o1");
	for (unsigned int i = 0; i < 2500; i++)
		notify(&inst, t_strdup_printf("user%u", i),
		       DOVEWARDEN_PRIORITY_NONE);
	notify(&inst, names[0], DOVEWARDEN_PRIORITY_HIGH);
	run_for(300);

	i_zero(&scan);
	scan.inst = &inst;
	i_array_init(&scan.names, 64);
	cr_assert_eq(dovewarden_redis_queue_scan(inst.queue, "0",
						 scan_callback, &scan), 0);
	cr_assert(run_until(&scan.done, 5000));
	/* SSCAN may return a name twice; all must be there */
	cr_assert_geq(array_count(&scan.names), 2501);
	array_foreach_elem(&scan.names, name)
		i_free(name);
	array_free(&scan.names);

	i_zero(&get);
	cr_assert_eq(dovewarden_redis_queue_get_users(inst.queue, names, 2,
						      get_callback, &get), 0);
	cr_assert(run_until(&get.done, 3000));
	cr_assert_eq(get.count, 2);
	cr_assert_eq(get.known, 1);
	cr_assert_eq(get.priority, DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!get.syncing);
	instance_deinit(&inst);
}

/* a blocking command of the test itself; returns the reply's integer or
   string as text */
static const char *raw_command(redisContext *ctx, const char *const *argv,
			       unsigned int argc)
{
	redisReply *reply;
	const char *ret;

	reply = redisCommandArgv(ctx, argc, (const char **)argv, NULL);
	cr_assert_not_null(reply);
	if (reply->type == REDIS_REPLY_INTEGER)
		ret = t_strdup_printf("%lld", reply->integer);
	else if (reply->str != NULL)
		ret = t_strdup(reply->str);
	else
		ret = "";
	freeReplyObject(reply);
	return ret;
}

struct import_ctx {
	int ret;
	bool done;
};

static void import_callback(int ret, const char *error ATTR_UNUSED,
			    void *context)
{
	struct import_ctx *ctx = context;

	ctx->ret = ret;
	ctx->done = TRUE;
}

static int import_user(struct instance *inst, const char *username,
		       const char *state)
{
	struct dovewarden_redis_import_user user;
	struct import_ctx ctx;

	i_zero(&user);
	i_zero(&ctx);
	user.username = username;
	user.state = state;
	user.last_error = "";
	user.last_full_sync = 1700000000;
	cr_assert_eq(dovewarden_redis_queue_import(inst->queue, &user,
						   import_callback, &ctx), 0);
	cr_assert(run_until(&ctx.done, 3000));
	return ctx.ret;
}

/* Both servers of a pair import their own state (built-in queue or 2.3's
   replicator.db) into the shared Redis: the second one's dsync states are
   kept too (a state is of the server it was made from), but a state Redis
   has already is not replaced */
Test(redis_queue, a_second_server_imports_its_states_too)
{
	struct instance a, b;
	redisContext *ctx = redisConnectUnix(socket_path);
	const char *get_a[] = { "HGET", "t:u:alice", "st:a.example.org" };
	const char *get_b[] = { "HGET", "t:u:alice", "st:b.example.org" };

	cr_assert_not_null(ctx);
	instance_init_connected(&a, "a");
	instance_server = "b.example.org";
	instance_init_connected(&b, "b");
	cr_assert_eq(import_user(&a, "alice", "sa"), 1);
	cr_assert_eq(import_user(&b, "alice", "sb"), 0);
	cr_assert_eq(import_user(&a, "alice", "sa2"), 0);
	cr_assert_str_eq(raw_command(ctx, get_a, 3), "sa");
	cr_assert_str_eq(raw_command(ctx, get_b, 3), "sb");
	instance_deinit(&a);
	instance_deinit(&b);
	redisFree(ctx);
}

/* Redis says which version writes into the queue: every instance records
   itself in <prefix>writers at its first connect */
Test(redis_queue, instances_record_their_version)
{
	struct instance a, b;
	redisContext *ctx = redisConnectUnix(socket_path);
	const char *get_a[] = { "HGET", "t:writers",
				"a.example.org/host:1234" };
	const char *get_b[] = { "HGET", "t:writers", "a.example.org" };
	const char *expected = "dovewarden "DOVEWARDEN_VERSION" on Dovecot "
		DOVECOT_VERSION" since ";

	cr_assert_not_null(ctx);
	instance_identity = "host:1234";
	instance_init_connected(&a, "host:1234:111:aa");
	/* without an identity, the server's name (an owner differs at
	   every run) */
	instance_identity = NULL;
	instance_init_connected(&b, "host:9:222:bb");
	(void)stats(&a);
	(void)stats(&b);
	cr_assert(str_begins_with(raw_command(ctx, get_a, 3), expected),
		  "%s", raw_command(ctx, get_a, 3));
	cr_assert(str_begins_with(raw_command(ctx, get_b, 3), expected));
	instance_deinit(&a);
	instance_deinit(&b);
	redisFree(ctx);
}

Test(redis_queue, password_acl_user_and_database)
{
	struct instance inst, bad;
	struct dovewarden_redis_job *job;
	redisContext *ctx = redisConnectUnix(socket_path);
	const char *acl[] = { "ACL", "SETUSER", "dw", "on", ">pw2", "~*",
			      "&*", "+@all" };
	const char *pass[] = { "CONFIG", "SET", "requirepass", "pw1" };
	const char *auth[] = { "AUTH", "pw1" };
	const char *sel5[] = { "SELECT", "5" };
	const char *sel0[] = { "SELECT", "0" };
	const char *member[] = { "SISMEMBER", "t:users", "alice" };
	unsigned int buffered;
	uint64_t dropped;

	cr_assert(ctx != NULL && ctx->err == 0);
	cr_assert_str_eq(raw_command(ctx, acl, N_ELEMENTS(acl)), "OK");
	cr_assert_str_eq(raw_command(ctx, pass, N_ELEMENTS(pass)), "OK");

	/* the default user with its password, database 5 */
	instance_password = "pw1";
	instance_db = 5;
	instance_init_connected(&inst, "o1");
	job = notify_and_claim(&inst, "alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&inst, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	instance_deinit(&inst);

	cr_assert_str_eq(raw_command(ctx, auth, N_ELEMENTS(auth)), "OK");
	cr_assert_str_eq(raw_command(ctx, sel5, N_ELEMENTS(sel5)), "OK");
	cr_assert_str_eq(raw_command(ctx, member, N_ELEMENTS(member)), "1");
	cr_assert_str_eq(raw_command(ctx, sel0, N_ELEMENTS(sel0)), "OK");
	cr_assert_str_eq(raw_command(ctx, member, N_ELEMENTS(member)), "0");
	redisFree(ctx);

	/* an ACL user */
	instance_username = "dw";
	instance_password = "pw2";
	instance_init_connected(&inst, "o2");
	cr_assert_eq(stats(&inst).users, 1);
	instance_deinit(&inst);

	/* a wrong password: never connected, the notification waits */
	instance_password = "wrong";
	instance_init(&bad, "o3", 60, 1000);
	cr_assert(!run_until(&bad.connected, 1000));
	notify(&bad, "bob", DOVEWARDEN_PRIORITY_HIGH);
	run_for(300);
	dovewarden_redis_queue_get_buffer(bad.queue, &buffered, &dropped);
	cr_assert_eq(buffered, 1);
	instance_deinit(&bad);
}

/* the shutdown flush's connection: set up like the asynchronous one */
Test(redis_queue, a_blocking_connection_authenticates_and_selects)
{
	static struct dovewarden_redis_script echo =
		DOVEWARDEN_REDIS_SCRIPT_INIT("echo", "return ARGV[1]");
	struct dovewarden_redis_settings set;
	struct dovewarden_redis_blocking *redis;
	redisContext *ctx = redisConnectUnix(socket_path);
	const char *acl[] = { "ACL", "SETUSER", "dw", "on", ">pw2", "~*",
			      "&*", "+@all" };
	const char *pass[] = { "CONFIG", "SET", "requirepass", "pw1" };
	const char *auth[] = { "AUTH", "pw1" };
	const char *sel5[] = { "SELECT", "5" };
	const char *get[] = { "GET", "k" };
	const char *set_k[] = { "SET", "k", "v" };
	const char *bad[] = { "NOSUCHCOMMAND" };
	const char *args[] = { "x" };
	const char *error;

	cr_assert(ctx != NULL && ctx->err == 0);
	cr_assert_str_eq(raw_command(ctx, acl, N_ELEMENTS(acl)), "OK");
	cr_assert_str_eq(raw_command(ctx, pass, N_ELEMENTS(pass)), "OK");

	i_zero(&set);
	set.host = socket_path;
	set.username = "";
	set.password = "pw1";
	set.db = 5;
	set.timeout_msecs = 500;
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     0, "connect failed: %s", error);
	cr_assert_eq(dovewarden_redis_blocking_command(redis, N_ELEMENTS(set_k),
						       set_k, &error), 0);
	cr_assert_eq(dovewarden_redis_blocking_eval(redis, &echo, 1, args,
						    &error), 0);
	cr_assert_eq(dovewarden_redis_blocking_command(redis, N_ELEMENTS(bad),
						       bad, &error), -1);
	cr_assert(str_begins_with(error, "ERR"), "%s", error);
	dovewarden_redis_blocking_disconnect(&redis);
	cr_assert_null(redis);
	cr_assert_str_eq(raw_command(ctx, auth, N_ELEMENTS(auth)), "OK");
	cr_assert_str_eq(raw_command(ctx, sel5, N_ELEMENTS(sel5)), "OK");
	cr_assert_str_eq(raw_command(ctx, get, N_ELEMENTS(get)), "v");
	redisFree(ctx);

	/* an ACL user */
	set.username = "dw";
	set.password = "pw2";
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     0, "connect failed: %s", error);
	dovewarden_redis_blocking_disconnect(&redis);

	/* a wrong password, a database that does not exist, no server */
	set.password = "wrong";
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     -1);
	cr_assert_null(redis);
	cr_assert(str_begins_with(error, "WRONGPASS"), "%s", error);
	set.password = "pw2";
	set.db = 100000;
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     -1);
	cr_assert(str_begins_with(error, "ERR"), "%s", error);
	redis_stop();
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     -1);
	cr_assert_null(redis);
}

#ifndef DOVEWARDEN_HAVE_REDIS_TLS
/* the settings check refuses TLS without hiredis_ssl; if it came this
   far anyway, the connection fails rather than talk in clear */
Test(redis_queue, tls_without_hiredis_ssl_never_connects_in_clear)
{
	struct dovewarden_redis_settings set;
	struct dovewarden_redis_blocking *redis;
	const char *error;

	i_zero(&set);
	set.host = socket_path;
	set.username = "";
	set.password = "";
	set.timeout_msecs = 500;
	set.ssl = TRUE;
	set.ssl_ca_file = "";
	set.ssl_cert_file = "";
	set.ssl_key_file = "";
	set.ssl_server_name = "localhost";
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     -1);
	cr_assert_null(redis);
	cr_assert_not_null(strstr(error, "no TLS to Redis"), "%s", error);
}
#endif

Test(redis_queue, dsync_states_are_kept_per_server)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	instance_init_connected(&a, "a");
	instance_server = "b.example.org";
	instance_init_connected(&b, "b");

	job = notify_and_claim(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-a");
	/* b's syncs run from the other server: a's state means nothing to
	   it (it holds a's modseqs) */
	job = notify_and_claim(&b, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_str_eq(job->state, "");
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b");
	job = notify_and_claim(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_str_eq(job->state, "state-of-a");
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-a2");
	job = notify_and_claim(&b, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_str_eq(job->state, "state-of-b");
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, NULL);
	instance_deinit(&a);
	instance_deinit(&b);
}

/* A server's two instances on one Redis: the instance of A and that of
   B, and alice's first (full) sync done */
static void two_servers_init(struct instance *a, struct instance *b,
			     unsigned int b_claim_secs)
{
	struct dovewarden_redis_job *job;

	instance_init_connected(a, "a");
	instance_server = "b.example.org";
	instance_init(b, "b", b_claim_secs, 1000);
	cr_assert(run_until(&b->connected, 3000), "no connection");
	instance_server = "a.example.org";
	job = notify_and_claim(a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->full);
	finish(a, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-a");
}

/* inst claims alice for a full sync, which succeeds */
static void full_sync_of_alice(struct instance *inst, const char *why)
{
	struct dovewarden_redis_job *job;

	job = pop(inst, FALSE, NULL);
	cr_assert_not_null(job, "%s", why);
	cr_assert_str_eq(job->username, "alice");
	cr_assert(job->full, "%s: not a full sync", why);
	finish(inst, job, DOVEWARDEN_SYNC_RESULT_OK, "state");
}

/* An incremental sync carries only the changes of the side it runs from
   (it skips a mailbox unchanged there since its state): a change made on
   A is synced by A's instance, not by B's */
Test(redis_queue, a_change_is_synced_from_the_server_it_was_made_on)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	two_servers_init(&a, &b, 60);
	notify(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_null(pop(&b, TRUE, NULL), "B's instance took A's change");
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert(!job->full);
	cr_assert_str_eq(job->state, "state-of-a");
	/* a change on B during A's sync: B's instance syncs it next */
	notify(&b, "alice", DOVEWARDEN_PRIORITY_LOW);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-a2");
	cr_assert_null(pop(&a, TRUE, NULL), "A's instance took B's change");
	job = pop(&b, TRUE, NULL);
	cr_assert_not_null(job);
	cr_assert(!job->full);
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_LOW);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b");
	cr_assert_null(pop(&a, TRUE, NULL));
	cr_assert_null(pop(&b, TRUE, NULL));
	instance_deinit(&a);
	instance_deinit(&b);
}

/* Changes on both servers: only a full sync carries both sides' */
Test(redis_queue, changes_on_both_servers_are_synced_by_a_full_sync)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	two_servers_init(&a, &b, 60);
	notify(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	notify(&b, "alice", DOVEWARDEN_PRIORITY_LOW);
	job = pop(&b, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert(job->full, "changes on both servers were "
		  "synced incrementally");
	cr_assert_eq(job->priority, DOVEWARDEN_PRIORITY_HIGH);
	/* one on each side during the sync: the same again once given
	   back */
	notify(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b");
	notify(&b, "alice", DOVEWARDEN_PRIORITY_HIGH);
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert(job->full);
	dovewarden_redis_queue_release(a.queue, &job);
	run_for(50);
	full_sync_of_alice(&b, "a released claim lost its changes");
	cr_assert_null(pop(&a, TRUE, NULL));
	instance_deinit(&a);
	instance_deinit(&b);
}

/* alice's first (full) sync, then claims of a change of alice (an
   incremental sync) and of bob (his first sync: a full one) */
static int claim_alice_and_bob(struct instance *inst)
{
	struct dovewarden_redis_job *job;

	for (unsigned int i = 0; i < 3; i++) {
		notify(inst, i < 2 ? "alice" : "bob", DOVEWARDEN_PRIORITY_HIGH);
		job = pop(inst, FALSE, NULL);
		if (job == NULL || job->full != (i != 1))
			return 2;
		if (i == 0)
			finish(inst, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	}
	return 0;
}

/* An expired claim gives its changes back with the server they were made
   on */
Test(redis_queue, an_expired_claim_keeps_the_server_of_its_changes)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	/* A's instance that dies in the middle of its syncs */
	dying_instance_run(claim_alice_and_bob);
	instance_init_connected(&a, "a");
	instance_server = "b.example.org";
	instance_init_connected(&b, "b");
	/* bob's first sync was full: any server may sync it; alice's
	   change was made on A */
	notify(&b, "bob", DOVEWARDEN_PRIORITY_LOW);
	run_for(DYING_CLAIM_SECS * 1000 + 1100);
	job = pop(&b, TRUE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, "bob");
	cr_assert(job->full);
	cr_assert_null(pop(&b, TRUE, NULL), "B's instance took A's change "
		       "back from an expired claim");
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, "alice");
	cr_assert(!job->full);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	cr_assert_null(pop(&a, TRUE, NULL));
	instance_deinit(&a);
	instance_deinit(&b);
}

/* An admin's request names no server: either instance syncs it; a
   forced full sync carries every change */
Test(redis_queue, admin_requests_and_full_syncs_go_to_any_server)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	two_servers_init(&a, &b, 60);
	dovewarden_redis_queue_notify(a.queue, "alice",
				      DOVEWARDEN_PRIORITY_HIGH, FALSE, TRUE);
	job = pop(&b, FALSE, NULL);
	cr_assert_not_null(job, "B's instance did not take an admin's "
			   "request made to A");
	cr_assert(!job->full);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b");
	/* it does not hide a change made on A */
	notify(&a, "alice", DOVEWARDEN_PRIORITY_LOW);
	dovewarden_redis_queue_notify(b.queue, "alice",
				      DOVEWARDEN_PRIORITY_HIGH, FALSE, TRUE);
	cr_assert_null(pop(&b, TRUE, NULL));
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-a2");
	/* a forced full sync asked on A with a change made there */
	notify(&a, "alice", DOVEWARDEN_PRIORITY_LOW);
	dovewarden_redis_queue_notify(a.queue, "alice",
				      DOVEWARDEN_PRIORITY_NONE, TRUE, TRUE);
	job = pop(&b, TRUE, NULL);
	cr_assert_not_null(job);
	cr_assert(job->full);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b2");
	instance_deinit(&a);
	instance_deinit(&b);
}

static void client_change(struct instance *inst, const char *user,
			  enum dovewarden_priority priority)
{
	dovewarden_redis_queue_notify_kind(inst->queue, user, priority,
					   FALSE, FALSE,
					   DOVEWARDEN_QUEUE_SETTLE_CLIENT);
}

/* Client changes from plugins that report imports are settled only when
   two servers' come at about the same time */
Test(redis_queue, only_client_changes_on_two_servers_are_settled)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	/* 2 s: Redis counts whole seconds, and a claim that comes only
	   just after the change must not find the settle due */
	instance_settle_secs = 2;
	two_servers_init(&a, &b, 60);
	/* one server's changes, also a while apart: no settle */
	client_change(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	cr_assert(!job->full);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "s2");
	run_for(3100);
	client_change(&a, "alice", DOVEWARDEN_PRIORITY_LOW);
	job = pop(&a, TRUE, NULL);
	cr_assert_not_null(job);
	cr_assert(!job->settle);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "s3");
	run_for(3100);
	cr_assert_null(pop(&a, TRUE, NULL), "a one-sided change was settled");
	cr_assert_null(pop(&b, TRUE, NULL), "a one-sided change was settled");
	/* an import of NONE priority is not even sent */
	dovewarden_redis_queue_notify_kind(b.queue, "alice",
					   DOVEWARDEN_PRIORITY_NONE, FALSE,
					   FALSE, DOVEWARDEN_QUEUE_SETTLE_IMPORT);
	run_for(1100);
	cr_assert_null(pop(&b, TRUE, NULL));

	/* B's client changes the user while A's change is being synced */
	client_change(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	job = pop(&a, FALSE, NULL);
	cr_assert_not_null(job);
	client_change(&b, "alice", DOVEWARDEN_PRIORITY_LOW);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "s4");
	job = pop(&b, TRUE, NULL);
	cr_assert_not_null(job, "B's change is not synced from B");
	cr_assert(!job->settle);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "s5");
	/* then settled, by either instance */
	run_for(3100);
	job = pop(&a, TRUE, NULL);
	if (job == NULL)
		job = pop(&b, TRUE, NULL);
	cr_assert_not_null(job, "changes on two servers were not settled");
	cr_assert(job->settle);
	cr_assert(job->full);
	instance_settle_secs = 0;
	instance_deinit(&a);
	instance_deinit(&b);
}

/* A's instance is down or busy: once A's change waited longer than a
   claim lasts, B's instance syncs it with a full sync */
Test(redis_queue, a_change_left_waiting_is_synced_fully_by_another_server)
{
	struct instance a, b;

	two_servers_init(&a, &b, 1);
	notify(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_null(pop(&b, FALSE, NULL));
	run_for(2100);
	full_sync_of_alice(&b, "A's change waits for A's instance forever");
	cr_assert_null(pop(&a, TRUE, NULL));
	instance_deinit(&a);
	instance_deinit(&b);
}

/* TLS: a redis-server that speaks only TLS (on a TCP port), with a CA,
   server and client certificates made by openssl at suite start */

#define OPENSSL_BIN "/usr/bin/openssl"

static in_port_t tls_port;
static ARRAY(char *) logged_errors;

static void tls_run(const char *cmd)
{
	cr_assert_eq(system(t_strdup_printf("cd %s && (%s) >/dev/null 2>&1",
					    test_dir, cmd)), 0, "%s", cmd);
}

/* a key and a certificate signed by ca (or self-signed as a CA) */
static void tls_make_cert(const char *name, const char *ca, const char *san)
{
	const char *key = t_strdup_printf(
		"-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		"-keyout %s.key -subj /CN=%s", name, name);

	if (ca == NULL) {
		tls_run(t_strdup_printf("%s req -x509 %s -days 2 -out %s.crt",
					OPENSSL_BIN, key, name));
		return;
	}
	tls_run(t_strdup_printf("%s req %s -out %s.csr", OPENSSL_BIN, key,
				name));
	tls_run(t_strdup_printf("printf 'subjectAltName=%s\\n' > %s.ext",
				san, name));
	tls_run(t_strdup_printf("%s x509 -req -in %s.csr -CA %s.crt "
				"-CAkey %s.key -CAcreateserial -days 2 "
				"-extfile %s.ext -out %s.crt", OPENSSL_BIN,
				name, ca, ca, name, name));
}

static void tls_loopback(struct ip_addr *ip_r)
{
	cr_assert_eq(net_addr2ip("127.0.0.1", ip_r), 0);
}

static in_port_t tls_free_port(void)
{
	struct ip_addr ip;
	in_port_t port = 0;
	int fd;

	tls_loopback(&ip);
	fd = net_listen(&ip, &port, 1);
	cr_assert(fd >= 0);
	i_close_fd(&fd);
	return port;
}

static bool tls_port_open(void)
{
	struct ip_addr ip;
	int fd;

	tls_loopback(&ip);
	fd = net_connect_ip_blocking(&ip, tls_port, NULL);
	if (fd < 0)
		return FALSE;
	i_close_fd(&fd);
	return TRUE;
}

static void tls_redis_start(void)
{
	const char *path;
	int fd;

	tls_port = tls_free_port();
	redis_pid = fork();
	cr_assert(redis_pid >= 0);
	if (redis_pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		fd = open("/dev/null", O_WRONLY);
		(void)dup2(fd, 1);
		(void)dup2(fd, 2);
		path = test_dir;
		execl(REDIS_SERVER_BIN, REDIS_SERVER_BIN, "--port", "0",
		      "--tls-port", dec2str(tls_port), "--dir", path,
		      "--save", "", "--tls-cert-file",
		      t_strconcat(path, "/server.crt", NULL),
		      "--tls-key-file", t_strconcat(path, "/server.key", NULL),
		      "--tls-ca-cert-file", t_strconcat(path, "/ca.crt", NULL),
		      "--tls-auth-clients", "optional", (char *)NULL);
		_exit(127);
	}
	for (unsigned int i = 0; i < 500; i++) {
		if (tls_port_open())
			return;
		usleep(10000);
	}
	cr_assert_fail("redis-server with TLS did not start");
}

static void tls_error_handler(const struct failure_context *ctx,
			      const char *format, va_list args)
{
	char *line = i_strdup_vprintf(format, args);

	array_push_back(&logged_errors, &line);
	(void)ctx;
}

static void tls_suite_init(void)
{
#ifndef DOVEWARDEN_HAVE_REDIS_TLS
	cr_skip_test("this build has no TLS to Redis (hiredis < 1.0)");
#endif
	if (access(REDIS_SERVER_BIN, X_OK) < 0 ||
	    access(OPENSSL_BIN, X_OK) < 0)
		cr_skip_test("redis-server or openssl is not installed");
	lib_init();
	ioloop = io_loop_create();
	cr_assert_not_null(mkdtemp(test_dir));
	i_array_init(&logged_errors, 8);
	i_set_error_handler(tls_error_handler);
	T_BEGIN {
		tls_make_cert("ca", NULL, NULL);
		tls_make_cert("otherca", NULL, NULL);
		tls_make_cert("server", "ca", "IP:127.0.0.1,DNS:localhost");
		tls_make_cert("client", "ca", "DNS:client");
		tls_redis_start();
	} T_END;
}

static void tls_suite_fini(void)
{
	char *line;

	redis_stop();
	if (ioloop == NULL)
		return;
	array_foreach_elem(&logged_errors, line)
		i_free(line);
	array_free(&logged_errors);
	test_dir_remove();
	io_loop_destroy(&ioloop);
	lib_deinit();
}

TestSuite(redis_tls, .init = tls_suite_init, .fini = tls_suite_fini);

static void tls_settings(struct dovewarden_redis_settings *set,
			 const char *ca)
{
	i_zero(set);
	set->host = "127.0.0.1";
	set->port = tls_port;
	set->username = "";
	set->password = "";
	set->timeout_msecs = 500;
	set->ssl = TRUE;
	set->ssl_ca_file = t_strdup_printf("%s/%s.crt", test_dir, ca);
	set->ssl_cert_file = "";
	set->ssl_key_file = "";
	set->ssl_server_name = "";
}

static bool tls_logged(const char *text)
{
	char *line;

	array_foreach_elem(&logged_errors, line) {
		if (strstr(line, text) != NULL)
			return TRUE;
	}
	return FALSE;
}

Test(redis_tls, a_round_over_tls_with_a_client_certificate)
{
	const char *config[] = { "CONFIG", "SET", "tls-auth-clients", "yes" };
	const char *set_k[] = { "SET", "k", "v" };
	struct dovewarden_redis_settings set;
	struct dovewarden_redis_blocking *redis;
	struct dovewarden_redis_job *job;
	struct instance inst;
	const char *error;

	/* the server name checked is the host: 127.0.0.1 */
	tls_settings(&set, "ca");
	set.ssl_cert_file = t_strdup_printf("%s/client.crt", test_dir);
	set.ssl_key_file = t_strdup_printf("%s/client.key", test_dir);
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     0, "connect failed: %s", error);
	cr_assert_eq(dovewarden_redis_blocking_command(redis, N_ELEMENTS(config),
						       config, &error), 0,
		     "%s", error);
	dovewarden_redis_blocking_disconnect(&redis);

	instance_tls = &set;
	instance_init_connected(&inst, "tls");
	/* the Pub/Sub connection (over TLS too) may come up later */
	run_for(200);
	job = notify_and_claim(&inst, "alice", DOVEWARDEN_PRIORITY_HIGH);
	finish(&inst, job, DOVEWARDEN_SYNC_RESULT_OK, "s");
	for (unsigned int i = 0; i < 20 && array_count(&inst.done) == 0; i++)
		run_for(50);
	cr_assert_eq(array_count(&inst.done), 1);
	cr_assert_str_eq(array_idx_elem(&inst.done, 0), "ok 1 alice");
	instance_deinit(&inst);

	/* the blocking connection, also with the server name given */
	set.ssl_server_name = "localhost";
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     0, "connect failed: %s", error);
	cr_assert_eq(dovewarden_redis_blocking_command(redis, N_ELEMENTS(set_k),
						       set_k, &error), 0,
		     "%s", error);
	dovewarden_redis_blocking_disconnect(&redis);

	/* without the client certificate Redis refuses us now */
	set.ssl_cert_file = set.ssl_key_file = "";
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     -1);
	cr_assert_null(redis);
	instance_tls = NULL;
}

Test(redis_tls, a_server_certificate_from_another_ca_is_refused_and_logged)
{
	struct dovewarden_redis_settings set;
	struct dovewarden_redis_blocking *redis;
	struct instance inst;
	const char *error;

	tls_settings(&set, "otherca");
	instance_tls = &set;
	instance_init(&inst, "wrongca", 60, 1000);
	cr_assert(!run_until(&inst.connected, 1500));
	instance_deinit(&inst);
	cr_assert(tls_logged("certificate"), "no TLS error logged");
	/* once per outage: not at every reconnect (two connections) */
	cr_assert_leq(array_count(&logged_errors), 2);

	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     -1);
	cr_assert_null(redis);
	cr_assert(strstr(error, "certificate") != NULL, "%s", error);
	instance_tls = NULL;
}

Test(redis_tls, a_server_certificate_for_another_name_is_refused)
{
	struct dovewarden_redis_settings set;
	struct dovewarden_redis_blocking *redis;
	struct instance inst;
	const char *error;

	tls_settings(&set, "ca");
	set.ssl_server_name = "redis.example.org";
	cr_assert_eq(dovewarden_redis_blocking_connect(&set, &redis, &error),
		     -1);
	cr_assert(strstr(error, "hostname mismatch") != NULL, "%s", error);

	instance_tls = &set;
	instance_init(&inst, "wrongname", 60, 1000);
	cr_assert(!run_until(&inst.connected, 1000));
	instance_deinit(&inst);
	cr_assert(tls_logged("hostname mismatch"), "no TLS error logged");
	instance_tls = NULL;
}

Test(redis_tls, a_missing_ca_file_is_logged)
{
	struct dovewarden_redis_settings set;
	struct instance inst;

	tls_settings(&set, "nosuchca");
	instance_tls = &set;
	instance_init(&inst, "noca", 60, 1000);
	cr_assert(!run_until(&inst.connected, 500));
	instance_deinit(&inst);
	cr_assert(tls_logged("Can't load the CA file"), "no error logged");
	instance_tls = NULL;
}

/* A claim tells whether another server synced the user after the state
   of this server's syncs was saved: the sync then runs a follow-up */
Test(redis_queue, a_state_older_than_another_servers_sync_is_stale)
{
	struct instance a, b;
	struct dovewarden_redis_job *job;

	two_servers_init(&a, &b, 60);
	/* B's first sync: no state of B's yet, nothing to follow up */
	job = notify_and_claim(&b, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->state_stale);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b");
	/* A's state is older than B's sync */
	job = notify_and_claim(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert_str_eq(job->state, "state-of-a");
	cr_assert(job->state_stale);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-a2");
	/* A synced last: its state is not stale */
	job = notify_and_claim(&a, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->state_stale);
	finish(&a, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-a3");
	/* B's state is older than A's syncs */
	job = notify_and_claim(&b, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(job->state_stale);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b2");
	/* a failure without a dsync (held in an outage) changes nothing */
	job = notify_and_claim(&b, "alice", DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(!job->state_stale);
	job->no_dsync = TRUE;
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL);
	run_for(3100);
	job = pop(&b, FALSE, NULL);
	cr_assert_not_null(job, "the retry was not due");
	cr_assert(!job->state_stale);
	/* one whose dsync ran may have changed both sides */
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL);
	run_for(5100);
	job = pop(&b, FALSE, NULL);
	cr_assert_not_null(job, "the retry was not due");
	cr_assert(job->state_stale);
	finish(&b, job, DOVEWARDEN_SYNC_RESULT_OK, "state-of-b3");
	instance_deinit(&a);
	instance_deinit(&b);
}
