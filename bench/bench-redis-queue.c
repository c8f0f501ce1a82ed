/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Queue operations per second of the built-in queue and of the Redis
   backend, in one run, against a real redis-server that the benchmark
   starts (127.0.0.1, append-only file with fsync every second, as a
   production Redis would run) and stops again. Baselines from the same
   run: a bare PING round trip (sequential) and pipelined PINGs.

     bench-redis-queue [users [redis-server]]

   users defaults to 20,000; redis-server to /usr/bin/redis-server. */

#include "lib.h"
#include "ioloop.h"
#include "net.h"
#include "strnum.h"
#include "unlink-directory.h"
#include "dovewarden-queue.h"
#include "dovewarden-redis-queue.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <signal.h>
#include <sys/prctl.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/wait.h>

#define BENCH_DEFAULT_USERS 20000U
#define BENCH_CONCURRENT_CLAIMS 8

static struct ioloop *ioloop;
static char **usernames;
static unsigned int user_count;
static struct dovewarden_queue_settings queue_set = {
	.full_sync_interval_secs = 24 * 60 * 60,
	.retry_min_secs = 5,
	.retry_max_secs = 600,
};

static double now_secs(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		i_fatal("clock_gettime() failed: %m");
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void print_row(const char *name, double builtin_secs,
		      double redis_secs, unsigned int ops, const char *note)
{
	double b = builtin_secs > 0 ? ops / builtin_secs : 0;
	double r = ops / redis_secs;

	if (builtin_secs > 0) {
		printf("%-34s %12.0f %12.0f %8.1fx  %s\n", name, b, r, b / r,
		       note);
	} else {
		printf("%-34s %12s %12.0f %9s  %s\n", name, "-", r, "-", note);
	}
}

/* redis-server */

static pid_t redis_start(const char *bin, const char *dir, unsigned int port)
{
	pid_t pid;
	int fd;

	pid = fork();
	if (pid < 0)
		i_fatal("fork() failed: %m");
	if (pid == 0) {
		/* gone with us, also when we crash */
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		fd = open("/dev/null", O_WRONLY);
		(void)dup2(fd, 1);
		(void)dup2(fd, 2);
		execl(bin, bin, "--port", dec2str(port), "--bind", "127.0.0.1",
		      "--dir", dir, "--save", "", "--appendonly", "yes",
		      "--appendfsync", "everysec", (char *)NULL);
		_exit(127);
	}
	for (unsigned int i = 0; i < 500; i++) {
		struct ip_addr ip;

		(void)net_addr2ip("127.0.0.1", &ip);
		fd = net_connect_ip_blocking(&ip, port, NULL);
		if (fd != -1) {
			i_close_fd(&fd);
			return pid;
		}
		usleep(10000);
	}
	i_fatal("%s did not start on port %u", bin, port);
}

/* the ioloop side */

static unsigned int pending;

static void count_down(void)
{
	i_assert(pending > 0);
	if (--pending == 0)
		io_loop_stop(ioloop);
}

static void run_until_done(void)
{
	while (pending > 0)
		io_loop_run(ioloop);
}

static bool connected;

static void bench_connected(void *context ATTR_UNUSED)
{
	connected = TRUE;
	io_loop_stop(ioloop);
}

static const struct dovewarden_redis_queue_callbacks bench_callbacks = {
	.connected = bench_connected,
};

static void seq_callback(bool success, uint64_t seq ATTR_UNUSED,
			 void *context ATTR_UNUSED)
{
	if (!success)
		i_fatal("notify failed");
	count_down();
}

static void stats_callback(const struct dovewarden_redis_queue_stats *stats,
			   const char *error, void *context)
{
	struct dovewarden_redis_queue_stats *stats_r = context;

	if (stats == NULL)
		i_fatal("stats failed: %s", error);
	*stats_r = *stats;
	count_down();
}

/* one round trip after everything sent before it */
static struct dovewarden_redis_queue_stats
redis_barrier(struct dovewarden_redis_queue *queue)
{
	struct dovewarden_redis_queue_stats stats;

	pending = 1;
	if (dovewarden_redis_queue_read_stats(queue, stats_callback,
					      &stats) < 0)
		i_fatal("Redis not connected");
	run_until_done();
	return stats;
}

static double redis_notify_all(struct dovewarden_redis_queue *queue)
{
	double start = now_secs();

	pending = user_count;
	for (unsigned int i = 0; i < user_count; i++) {
		dovewarden_redis_queue_notify_seq(queue, usernames[i],
			DOVEWARDEN_QUEUE_SETTLE_ALWAYS, seq_callback, NULL);
	}
	run_until_done();
	return now_secs() - start;
}

static struct dovewarden_redis_queue *claim_queue;
static unsigned int claims_left, claims_done;

static void claim_next(void);

static void claim_callback(struct dovewarden_redis_job *job,
			   int next_due_secs ATTR_UNUSED, const char *error,
			   void *context ATTR_UNUSED)
{
	if (error != NULL)
		i_fatal("pop failed: %s", error);
	if (job == NULL) {
		/* the others took the rest */
		claims_left = 0;
		count_down();
		return;
	}
	dovewarden_redis_queue_finish(claim_queue, &job,
				      DOVEWARDEN_SYNC_RESULT_OK,
				      "AQAAAHm4+Jk=", NULL, FALSE);
	claims_done++;
	count_down();
	claim_next();
}

static void claim_next(void)
{
	if (claims_left == 0)
		return;
	claims_left--;
	pending++;
	if (dovewarden_redis_queue_pop(claim_queue, FALSE, claim_callback,
				       NULL) < 0)
		i_fatal("Redis not connected");
}

/* Claim and finish every user, with this many pops in flight */
static double redis_claim_all(struct dovewarden_redis_queue *queue,
			      unsigned int concurrency)
{
	struct dovewarden_redis_queue_stats stats;
	double start = now_secs();

	claim_queue = queue;
	claims_left = user_count;
	claims_done = 0;
	pending = 0;
	for (unsigned int i = 0; i < concurrency; i++)
		claim_next();
	run_until_done();
	stats = redis_barrier(queue);
	if (claims_done != user_count || stats.pending != 0) {
		i_fatal("claimed %u of %u users, %u still pending",
			claims_done, user_count, stats.pending);
	}
	return now_secs() - start;
}

static double redis_ping(const char *host, unsigned int port, bool pipelined)
{
	redisContext *ctx = redisConnect(host, (int)port);
	redisReply *reply;
	double start;

	if (ctx == NULL || ctx->err != 0)
		i_fatal("redisConnect() failed");
	start = now_secs();
	for (unsigned int i = 0; i < user_count; i++) {
		if (pipelined)
			(void)redisAppendCommand(ctx, "PING");
		else {
			reply = redisCommand(ctx, "PING");
			if (reply == NULL)
				i_fatal("PING failed");
			freeReplyObject(reply);
		}
	}
	for (unsigned int i = 0; pipelined && i < user_count; i++) {
		void *r;

		if (redisGetReply(ctx, &r) != REDIS_OK)
			i_fatal("PING failed");
		freeReplyObject(r);
	}
	start = now_secs() - start;
	redisFree(ctx);
	return start;
}

/* the built-in queue */

static double builtin_notify_all(struct dovewarden_queue *queue)
{
	double start = now_secs();

	for (unsigned int i = 0; i < user_count; i++) {
		(void)dovewarden_queue_notify(queue, usernames[i],
					      DOVEWARDEN_PRIORITY_SYNC,
					      ioloop_time);
	}
	return now_secs() - start;
}

static double builtin_claim_all(struct dovewarden_queue *queue)
{
	struct dovewarden_user *user;
	double start = now_secs();
	unsigned int n = 0;

	while ((user = dovewarden_queue_pop(queue, ioloop_time)) != NULL) {
		dovewarden_queue_sync_finished(queue, user,
					       DOVEWARDEN_SYNC_RESULT_OK,
					       "AQAAAHm4+Jk=", NULL,
					       ioloop_time);
		n++;
	}
	if (n != user_count)
		i_fatal("claimed %u of %u users", n, user_count);
	return now_secs() - start;
}

int main(int argc, char *argv[])
{
	const char *bin = argc > 2 ? argv[2] : "/usr/bin/redis-server";
	struct dovewarden_redis_queue_settings rset;
	struct dovewarden_redis_queue *rqueue;
	struct dovewarden_queue *queue;
	char dir[] = "/tmp/dw-bench-redis.XXXXXX";
	unsigned int port = 16400 + getpid() % 1000;
	double b1, b2, b3, r1, r2, r3, r4, ping, ping_pipe;
	const char *error;
	pid_t pid;

	lib_init();
	user_count = BENCH_DEFAULT_USERS;
	if (argc > 1 && (str_to_uint(argv[1], &user_count) < 0 ||
			 user_count == 0))
		i_fatal("Usage: bench-redis-queue [users [redis-server]]");
	if (access(bin, X_OK) < 0)
		i_fatal("%s: %m", bin);
	if (mkdtemp(dir) == NULL)
		i_fatal("mkdtemp() failed: %m");
	ioloop = io_loop_create();
	usernames = i_new(char *, user_count);
	for (unsigned int i = 0; i < user_count; i++)
		usernames[i] = i_strdup_printf("user%07u@example.org", i);

	pid = redis_start(bin, dir, port);
	i_zero(&rset);
	rset.redis.host = "127.0.0.1";
	rset.redis.port = port;
	rset.redis.username = "";
	rset.redis.password = "";
	rset.redis.timeout_msecs = 30 * 1000;
	rset.queue = queue_set;
	rset.prefix = "bench:";
	rset.owner = "bench";
	rset.server = "bench.example.org";
	rset.claim_timeout_secs = 600;
	rset.buffer_limit = user_count + 1;
	rqueue = dovewarden_redis_queue_init(&rset, NULL, &bench_callbacks,
					     NULL);
	while (!connected)
		io_loop_run(ioloop);
	(void)redis_barrier(rqueue);

	ping = redis_ping("127.0.0.1", port, FALSE);
	ping_pipe = redis_ping("127.0.0.1", port, TRUE);

	queue = dovewarden_queue_init(&queue_set);
	b1 = builtin_notify_all(queue);
	b2 = builtin_notify_all(queue);
	b3 = builtin_claim_all(queue);
	dovewarden_queue_deinit(&queue);

	r1 = redis_notify_all(rqueue);
	r2 = redis_notify_all(rqueue);
	r3 = redis_claim_all(rqueue, 1);
	(void)redis_notify_all(rqueue);
	r4 = redis_claim_all(rqueue, BENCH_CONCURRENT_CLAIMS);

	printf("dovewarden queue: %u users; redis-server on 127.0.0.1 "
	       "(appendonly, fsync every second), hiredis async on the "
	       "ioloop\n\n", user_count);
	printf("%-34s %12s %12s %9s\n", "operation (per second)", "built-in",
	       "Redis", "ratio");
	print_row("notify, new users", b1, r1, user_count,
		  "(pipelined)");
	print_row("notify, known users", b2, r2, user_count,
		  "(pipelined)");
	print_row("claim + finish, 1 at a time", b3, r3, user_count,
		  "(as one service instance runs them)");
	print_row("claim + finish, 8 in flight", b3, r4, user_count,
		  "(e.g. several instances)");
	print_row("baseline: PING round trips", 0, ping, user_count,
		  "(sequential, hiredis blocking)");
	print_row("baseline: PING pipelined", 0, ping_pipe, user_count, "");
	printf("\nclaim + finish (1 at a time) costs %.2f PING round trips\n",
	       r3 / ping);

	dovewarden_redis_queue_deinit(&rqueue);
	(void)kill(pid, SIGTERM);
	(void)waitpid(pid, NULL, 0);
	if (unlink_directory(dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error) < 0)
		i_error("unlink_directory(%s) failed: %s", dir, error);
	for (unsigned int i = 0; i < user_count; i++)
		i_free(usernames[i]);
	i_free(usernames);
	io_loop_destroy(&ioloop);
	lib_deinit();
	return 0;
}
