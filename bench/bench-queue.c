/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* In-process benchmark of the pure parts: the queue, the state store and
   the admin STATUS formatting, with N known users (default 1,000,000),
   and the same operations through the queue-backend interface (the
   built-in backend, which journals every change), as the service calls
   them. Prints one table; every rate has a baseline measured in the same
   run (a bare hash lookup, a plain write/read of the same bytes, the
   direct call of the queue) and the ratio against it. Not a test: it
   checks nothing but its own sanity.

     bench-queue [users [directory]]

   The directory (default: a new one under /tmp) gets the snapshot and the
   journal; a directory made by the benchmark is removed at the end. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "strnum.h"
#include "istream.h"
#include "ioloop.h"
#include "unlink-directory.h"
#include "wildcard-match.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-settings.h"
#include "dovewarden-queue-backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <malloc.h>
#include <time.h>
#include <sys/stat.h>

#define BENCH_DEFAULT_USERS 1000000U
#define BENCH_FULL_SYNC_INTERVAL (24 * 60 * 60)
/* A dsync state of a user with a handful of mailboxes is about this
   long (base64 of a few dozen bytes per mailbox) */
#define BENCH_STATE_LENGTH 160

struct bench_row {
	const char *name;
	double secs;
	unsigned int ops;
	/* Row of the baseline, or NULL */
	const char *baseline;
	double baseline_secs;
	const char *note;
};

static ARRAY(struct bench_row) rows;
static char **usernames;
static unsigned int user_count;

static double now_secs(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		i_fatal("clock_gettime() failed: %m");
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* VmRSS of this process in bytes, after giving freed heap back */
static long long rss_bytes(void)
{
	char buf[4096], *p;
	ssize_t ret;
	int fd;

	(void)malloc_trim(0);
	fd = open("/proc/self/status", O_RDONLY);
	if (fd == -1)
		i_fatal("open(/proc/self/status) failed: %m");
	ret = read(fd, buf, sizeof(buf) - 1);
	i_close_fd(&fd);
	if (ret <= 0)
		i_fatal("read(/proc/self/status) failed: %m");
	buf[ret] = '\0';
	p = strstr(buf, "VmRSS:");
	if (p == NULL)
		i_fatal("No VmRSS in /proc/self/status");
	return strtoll(p + 6, NULL, 10) * 1024;
}

static struct bench_row *
row_add(const char *name, double secs, unsigned int ops)
{
	struct bench_row *row = array_append_space(&rows);

	row->name = name;
	row->secs = secs;
	row->ops = ops;
	return row;
}

static void
row_set_baseline(struct bench_row *row, const char *baseline, double secs)
{
	row->baseline = baseline;
	row->baseline_secs = secs;
}

/* Use the row of that name, measured before in this run, as the
   baseline */
static void row_set_baseline_row(struct bench_row *row, const char *name)
{
	const struct bench_row *base;

	array_foreach(&rows, base) {
		if (strcmp(base->name, name) == 0) {
			row_set_baseline(row, name, base->secs);
			return;
		}
	}
	i_unreached();
}

static struct dovewarden_queue *queue_new(void)
{
	struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = BENCH_FULL_SYNC_INTERVAL,
		.retry_min_secs = 60,
		.retry_max_secs = 3600,
	};

	return dovewarden_queue_init(&set);
}

static void usernames_init(void)
{
	unsigned int i;

	usernames = i_new(char *, user_count);
	for (i = 0; i < user_count; i++)
		usernames[i] = i_strdup_printf("user%07u@example.test", i);
}

static void usernames_deinit(void)
{
	unsigned int i;

	for (i = 0; i < user_count; i++)
		i_free(usernames[i]);
	i_free(usernames);
}

static int user_cmp(struct dovewarden_user *const *u1,
		    struct dovewarden_user *const *u2)
{
	return strcmp((*u1)->username, (*u2)->username);
}

/* What the service's STATUS <mask> does before it writes: match, sort and
   format every user; the output only goes to a reused buffer. Returns
   the number of bytes the reply would have. */
static size_t
status_all_users(struct dovewarden_queue *queue, const char *mask, time_t now)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	struct dovewarden_admin_user_status status;
	ARRAY(struct dovewarden_user *) users;
	string_t *str = str_new(default_pool, 256);
	size_t total = 0;

	i_array_init(&users, 1024);
	iter = dovewarden_queue_iter_init(queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		if (wildcard_match(user->username, mask))
			array_push_back(&users, &user);
	}
	dovewarden_queue_iter_deinit(&iter);
	array_sort(&users, user_cmp);
	array_foreach_elem(&users, user) {
		dovewarden_queue_user_status_init(&status, user,
			BENCH_FULL_SYNC_INTERVAL, now);
		str_truncate(str, 0);
		dovewarden_admin_append_user_status(str, &status);
		total += str_len(str);
	}
	array_free(&users);
	str_free(&str);
	return total;
}

/* Baseline for save: write size bytes in 64 KiB blocks, fsync, close */
static double plain_write(const char *path, size_t size)
{
	char buf[65536];
	double start = now_secs();
	size_t n;
	int fd;

	memset(buf, 'x', sizeof(buf));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd == -1)
		i_fatal("open(%s) failed: %m", path);
	while (size > 0) {
		n = I_MIN(size, sizeof(buf));
		if (write(fd, buf, n) != (ssize_t)n)
			i_fatal("write(%s) failed: %m", path);
		size -= n;
	}
	if (fsync(fd) < 0)
		i_fatal("fsync(%s) failed: %m", path);
	i_close_fd(&fd);
	return now_secs() - start;
}

/* Baseline for load: read the file line by line, parse nothing */
static double plain_read_lines(const char *path, unsigned int *lines_r)
{
	struct istream *input;
	double start = now_secs();
	unsigned int lines = 0;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd == -1)
		i_fatal("open(%s) failed: %m", path);
	input = i_stream_create_fd_autoclose(&fd, 65536);
	while (i_stream_read_next_line(input) != NULL)
		lines++;
	if (input->stream_errno != 0)
		i_fatal("read(%s) failed: %s", path, i_stream_get_error(input));
	i_stream_destroy(&input);
	*lines_r = lines;
	return now_secs() - start;
}

/* Baseline for journal appends: one write() per line on O_APPEND */
static double plain_appends(const char *path, unsigned int count)
{
	static const char line[] = "N\tnew0000000@example.test\thigh\n";
	double start = now_secs();
	unsigned int i;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
	if (fd == -1)
		i_fatal("open(%s) failed: %m", path);
	for (i = 0; i < count; i++) {
		if (write(fd, line, sizeof(line) - 1) !=
		    (ssize_t)sizeof(line) - 1)
			i_fatal("write(%s) failed: %m", path);
	}
	i_close_fd(&fd);
	return now_secs() - start;
}

static void print_table(void)
{
	const struct bench_row *row;
	char rate[32], base[32];

	printf("\n%-34s %10s %14s %12s %8s  %s\n", "measurement", "secs",
	       "ops/s", "baseline s", "ratio", "baseline / note");
	array_foreach(&rows, row) {
		if (row->ops > 0)
			i_snprintf(rate, sizeof(rate), "%.0f",
				   row->ops / row->secs);
		else
			i_snprintf(rate, sizeof(rate), "-");
		if (row->baseline != NULL)
			i_snprintf(base, sizeof(base), "%.3f",
				   row->baseline_secs);
		else
			i_snprintf(base, sizeof(base), "-");
		printf("%-34s %10.3f %14s %12s ", row->name, row->secs,
		       rate, base);
		if (row->baseline != NULL && row->baseline_secs > 0)
			printf("%7.1fx", row->secs / row->baseline_secs);
		else
			printf("%8s", "-");
		printf("  %s\n", row->baseline != NULL ? row->baseline :
		       (row->note != NULL ? row->note : ""));
	}
}

static void bench_run(const char *dir)
{
	struct dovewarden_queue *queue, *queue2;
	struct dovewarden_store *store;
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;
	struct bench_row *row;
	struct stat st;
	const char *db_path, *plain_path, *error;
	char state[BENCH_STATE_LENGTH + 1];
	long long rss0, rss1, rss2, rss3;
	double start, secs, lookup_secs, base;
	size_t status_bytes;
	unsigned int i, n, lines;
	time_t now = time(NULL);

	memset(state, 'S', BENCH_STATE_LENGTH);
	state[BENCH_STATE_LENGTH] = '\0';
	db_path = t_strconcat(dir, "/dovewarden.db", NULL);
	plain_path = t_strconcat(dir, "/plain.bin", NULL);

	/* add */
	rss0 = rss_bytes();
	queue = queue_new();
	start = now_secs();
	for (i = 0; i < user_count; i++)
		(void)dovewarden_queue_add(queue, usernames[i], now);
	row_add("add (new user, idle)", now_secs() - start, user_count);
	rss1 = rss_bytes();

	/* baseline for everything per user: the hash lookup */
	lookup_secs = 0;
	for (n = 0; n < 3; n++) {
		start = now_secs();
		for (i = 0; i < user_count; i++) {
			if (dovewarden_queue_lookup(queue,
						    usernames[i]) == NULL)
				i_unreached();
		}
		secs = now_secs() - start;
		if (n == 0 || secs < lookup_secs)
			lookup_secs = secs;
	}
	row_add("lookup (hash only, best of 3)", lookup_secs,
		user_count);

	/* notify: the first change of an idle user moves it from the
	   waiting to the ready priority queue */
	start = now_secs();
	for (i = 0; i < user_count; i++) {
		(void)dovewarden_queue_notify(queue, usernames[i],
					      DOVEWARDEN_PRIORITY_HIGH, now);
	}
	row = row_add("notify (idle -> pending high)", now_secs() - start,
		      user_count);
	row_set_baseline(row, "lookup (hash only)", lookup_secs);

	/* a repeated change of a pending user: no queue change */
	start = now_secs();
	for (i = 0; i < user_count; i++) {
		(void)dovewarden_queue_notify(queue, usernames[i],
					      DOVEWARDEN_PRIORITY_LOW, now);
	}
	row = row_add("notify (repeat, already pending)", now_secs() - start,
		      user_count);
	row_set_baseline(row, "lookup (hash only)", lookup_secs);

	/* raising the priority re-positions the user */
	start = now_secs();
	for (i = 0; i < user_count; i++) {
		(void)dovewarden_queue_notify(queue, usernames[i],
					      DOVEWARDEN_PRIORITY_SYNC, now);
	}
	row = row_add("notify (raise high -> sync)", now_secs() - start,
		      user_count);
	row_set_baseline(row, "lookup (hash only)", lookup_secs);

	/* the STATUS summary */
	start = now_secs();
	for (i = 0; i < 10; i++) {
		struct dovewarden_queue_stats stats;

		dovewarden_queue_get_stats(queue, now, &stats);
		if (stats.users != user_count)
			i_unreached();
	}
	row = row_add("get_stats (STATUS summary)", (now_secs() - start) / 10,
		      1);
	row->note = "one call";

	/* status over all users, in memory (what blocks the ioloop) */
	start = now_secs();
	status_bytes = status_all_users(queue, "*", now);
	row = row_add("status '*' (match+sort+format)", now_secs() - start,
		      user_count);
	row->note = t_strdup_printf("%zu reply bytes", status_bytes);
	start = now_secs();
	(void)status_all_users(queue, "user0000001@example.test", now);
	row = row_add("status <one user> (full scan)", now_secs() - start,
		      user_count);
	row->note = "the mask is matched against every user";

	/* pop + sync_finished: every user is pending */
	start = now_secs();
	n = 0;
	while ((user = dovewarden_queue_pop(queue, now)) != NULL) {
		dovewarden_queue_sync_finished(queue, user,
					       DOVEWARDEN_SYNC_RESULT_OK,
					       state, NULL, now);
		n++;
	}
	if (n != user_count)
		i_fatal("popped %u users, expected %u", n, user_count);
	row = row_add("pop + sync_finished(OK, state)", now_secs() - start,
		      n);
	row_set_baseline(row, "lookup (hash only)", lookup_secs);
	rss2 = rss_bytes();

	/* save */
	store = dovewarden_store_init(db_path);
	start = now_secs();
	if (dovewarden_store_save(store, queue, &error) < 0)
		i_fatal("save: %s", error);
	secs = now_secs() - start;
	if (stat(db_path, &st) < 0)
		i_fatal("stat(%s) failed: %m", db_path);
	base = plain_write(plain_path, st.st_size);
	row = row_add("store save (snapshot + fsync)", secs, user_count);
	row_set_baseline(row, "write()+fsync of the same bytes", base);

	/* load into a new queue */
	dovewarden_store_deinit(&store);
	dovewarden_queue_deinit(&queue);
	rss3 = rss_bytes();
	queue2 = queue_new();
	store = dovewarden_store_init(db_path);
	start = now_secs();
	if (dovewarden_store_load(store, queue2, now, &result, &error) < 0)
		i_fatal("load: %s", error);
	secs = now_secs() - start;
	if (result.users_loaded != user_count)
		i_fatal("loaded %u users, expected %u", result.users_loaded,
			user_count);
	base = plain_read_lines(db_path, &lines);
	row = row_add("store load (parse + restore)", secs, user_count);
	row_set_baseline(row, "istream line read of the same file", base);
	printf("loaded state: %lld bytes RSS for %u users "
	       "(%.0f bytes/user)\n", rss_bytes() - rss3, user_count,
	       (double)(rss_bytes() - rss3) / user_count);

	/* journal: new users, so every call appends a line */
	start = now_secs();
	for (i = 0; i < user_count; i++) T_BEGIN {
		const char *name = t_strdup_printf("new%07u@example.test", i);

		if (dovewarden_store_journal_notify(store, queue2, name,
				DOVEWARDEN_PRIORITY_HIGH, &error) < 0)
			i_fatal("journal: %s", error);
	} T_END;
	secs = now_secs() - start;
	base = plain_appends(plain_path, user_count);
	row = row_add("journal append (new user)", secs, user_count);
	row_set_baseline(row, "write() of 32 bytes, O_APPEND", base);
	dovewarden_store_deinit(&store);
	dovewarden_queue_deinit(&queue2);

	printf("\nsizeof(struct dovewarden_user) = %zu\n",
	       sizeof(struct dovewarden_user));
	printf("users: %u, state: %d bytes/user, snapshot file: %lld bytes "
	       "(%.0f bytes/user)\n", user_count, BENCH_STATE_LENGTH,
	       (long long)st.st_size, (double)st.st_size / user_count);
	printf("memory (VmRSS delta / users): idle users without state "
	       "%.0f bytes/user; after syncs with a %d-byte state "
	       "%.0f bytes/user\n",
	       (double)(rss1 - rss0) / user_count, BENCH_STATE_LENGTH,
	       (double)(rss2 - rss0) / user_count);
}

struct bench_pop_context {
	const char *state;
	unsigned int count;
	bool empty;
};

static void
bench_pop_callback(struct dovewarden_queue_job *job,
		   int retry_msecs ATTR_UNUSED, const char *error,
		   void *context)
{
	struct bench_pop_context *ctx = context;

	if (error != NULL)
		i_fatal("pop: %s", error);
	if (job == NULL) {
		ctx->empty = TRUE;
		return;
	}
	dovewarden_queue_backend_finish(&job, DOVEWARDEN_SYNC_RESULT_OK,
					ctx->state, NULL, FALSE);
	ctx->count++;
}

/* The same operations through the queue-backend interface, as the
   service's scheduler, notify server and sweep call them: the built-in
   backend journals each change before it makes it. The baselines are the
   direct calls of the queue measured before (no journal). */
static void bench_backend(const char *dir)
{
	struct dovewarden_settings set;
	struct dovewarden_queue_backend_settings bset;
	struct dovewarden_queue_backend *backend;
	struct bench_pop_context ctx;
	struct ioloop *ioloop;
	struct bench_row *row;
	char state[BENCH_STATE_LENGTH + 1];
	const char *error;
	double start;
	unsigned int i;

	memset(state, 'S', BENCH_STATE_LENGTH);
	state[BENCH_STATE_LENGTH] = '\0';
	ioloop = io_loop_create();
	i_zero(&set);
	i_zero(&bset);
	bset.set = &set;
	bset.queue.full_sync_interval_secs = BENCH_FULL_SYNC_INTERVAL;
	bset.queue.retry_min_secs = 60;
	bset.queue.retry_max_secs = 3600;
	bset.state_path = t_strconcat(dir, "/backend.db", NULL);
	bset.server = "bench.example.test";
	dovewarden_queue_backends_register_all();
	backend = dovewarden_queue_backend_init(
		DOVEWARDEN_QUEUE_BACKEND_DEFAULT, &bset, NULL, NULL, NULL,
		&error);
	if (backend == NULL)
		i_fatal("backend: %s", error);

	start = now_secs();
	for (i = 0; i < user_count; i++)
		(void)dovewarden_queue_backend_add(backend, usernames[i]);
	row = row_add("backend add (journaled)", now_secs() - start,
		      user_count);
	row_set_baseline_row(row, "add (new user, idle)");

	start = now_secs();
	for (i = 0; i < user_count; i++) {
		dovewarden_queue_backend_notify(backend, usernames[i],
						DOVEWARDEN_PRIORITY_HIGH, 0);
	}
	row = row_add("backend notify (idle -> high)", now_secs() - start,
		      user_count);
	row_set_baseline_row(row, "notify (idle -> pending high)");

	start = now_secs();
	for (i = 0; i < user_count; i++) {
		dovewarden_queue_backend_notify(backend, usernames[i],
						DOVEWARDEN_PRIORITY_LOW, 0);
	}
	row = row_add("backend notify (repeat)", now_secs() - start,
		      user_count);
	row_set_baseline_row(row, "notify (repeat, already pending)");

	/* the built-in backend answers a pop at once */
	i_zero(&ctx);
	ctx.state = state;
	start = now_secs();
	while (!ctx.empty) {
		dovewarden_queue_backend_pop(backend, TRUE,
					     bench_pop_callback, &ctx);
	}
	if (ctx.count != user_count)
		i_fatal("backend popped %u users, expected %u", ctx.count,
			user_count);
	row = row_add("backend pop + finish (journaled)", now_secs() - start,
		      ctx.count);
	row_set_baseline_row(row, "pop + sync_finished(OK, state)");

	dovewarden_queue_backend_deinit(&backend);
	dovewarden_queue_backends_unregister_all();
	io_loop_destroy(&ioloop);
}

int main(int argc, char *argv[])
{
	char tmpdir[] = "/tmp/dw-bench-XXXXXX";
	const char *dir, *error;
	bool own_dir = FALSE;

	lib_init();
	user_count = BENCH_DEFAULT_USERS;
	if (argc > 1 && str_to_uint(argv[1], &user_count) < 0)
		i_fatal("Usage: bench-queue [users [directory]]");
	if (user_count == 0)
		i_fatal("users must be > 0");
	if (argc > 2)
		dir = argv[2];
	else {
		if (mkdtemp(tmpdir) == NULL)
			i_fatal("mkdtemp() failed: %m");
		dir = tmpdir;
		own_dir = TRUE;
	}
	i_array_init(&rows, 16);
	usernames_init();
	T_BEGIN {
		bench_run(dir);
		bench_backend(dir);
		/* the rows' notes are on the data stack */
		print_table();
	} T_END;
	usernames_deinit();
	array_free(&rows);
	if (own_dir && unlink_directory(dir, UNLINK_DIRECTORY_FLAG_RMDIR,
					&error) < 0)
		i_error("%s", error);
	lib_deinit();
	return 0;
}
