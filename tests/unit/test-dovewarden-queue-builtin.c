/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "ioloop.h"
#include "unlink-directory.h"
#include "dovewarden-queue-backend-private.h"

#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

/* The built-in backend journals every change, whoever makes it: a
   service killed before its next save loses none of them. */

static char tmpdir[] = "/tmp/dw-builtin-test.XXXXXX";
static char *db_path;
/* backend_init()'s replicator_db_path (NULL: none) */
static char *replicator_db_path;
static struct ioloop *ioloop;

static void test_init(void)
{
	lib_init();
	cr_assert_not_null(mkdtemp(tmpdir));
	db_path = i_strconcat(tmpdir, "/dovewarden.db", NULL);
	ioloop = io_loop_create();
	dovewarden_queue_backend_driver_register(
		&dovewarden_queue_backend_builtin);
}

static void test_deinit(void)
{
	const char *error;

	dovewarden_queue_backend_driver_unregister(
		&dovewarden_queue_backend_builtin);
	io_loop_destroy(&ioloop);
	(void)unlink_directory(tmpdir, UNLINK_DIRECTORY_FLAG_RMDIR, &error);
	i_free(db_path);
	i_free(replicator_db_path);
	lib_deinit();
}

TestSuite(queue_builtin, .init = test_init, .fini = test_deinit);

static struct dovewarden_queue_backend *backend_init(void)
{
	struct dovewarden_queue_backend_settings set;
	struct dovewarden_queue_backend *backend;
	const char *error;

	i_zero(&set);
	set.queue.full_sync_interval_secs = 3600;
	set.queue.retry_min_secs = 60;
	set.queue.retry_max_secs = 3600;
	set.state_path = db_path;
	set.replicator_db_path = replicator_db_path;
	set.server = "test";
	backend = dovewarden_queue_backend_init("builtin", &set, NULL, NULL,
						NULL, &error);
	cr_assert_not_null(backend, "%s", error);
	return backend;
}

static void remove_callback(int ret, const char *error ATTR_UNUSED,
			    void *context)
{
	*(int *)context = ret;
}

static int backend_remove(struct dovewarden_queue_backend *backend,
			  const char *username)
{
	int ret = -2;

	dovewarden_queue_backend_remove(backend, username, remove_callback,
					&ret);
	/* the built-in backend answers at once */
	cr_assert_neq(ret, -2);
	return ret;
}

/* Run changes in a child that dies without saving, as kill -9 would */
static void run_and_die(void (*changes)(struct dovewarden_queue_backend *))
{
	int status;
	pid_t pid;

	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		changes(backend_init());
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void changes_add(struct dovewarden_queue_backend *backend)
{
	/* an admin's ADD and the userdb sweep */
	(void)dovewarden_queue_backend_add(backend, "added");
	(void)dovewarden_queue_backend_add(backend, "swept");
	dovewarden_queue_backend_notify(backend, "changed",
					DOVEWARDEN_PRIORITY_HIGH, 0);
}

static void changes_remove(struct dovewarden_queue_backend *backend)
{
	cr_assert_eq(backend_remove(backend, "added"), 1);
}

Test(queue_builtin, every_change_survives_a_kill)
{
	struct dovewarden_queue_backend *backend;
	struct dovewarden_queue_counts counts;

	run_and_die(changes_add);
	backend = backend_init();
	dovewarden_queue_backend_get_counts(backend, &counts);
	cr_assert_eq(counts.users, 3);
	cr_assert_eq(counts.pending[DOVEWARDEN_PRIORITY_HIGH], 1);
	/* known: not added again */
	cr_assert(!dovewarden_queue_backend_add(backend, "added"));
	dovewarden_queue_backend_deinit(&backend);

	run_and_die(changes_remove);
	backend = backend_init();
	dovewarden_queue_backend_get_counts(backend, &counts);
	cr_assert_eq(counts.users, 2);
	cr_assert_eq(backend_remove(backend, "added"), 0);
	cr_assert_eq(backend_remove(backend, "swept"), 1);
	dovewarden_queue_backend_deinit(&backend);
}

static void pop_callback(struct dovewarden_queue_job *job,
			 int retry_msecs ATTR_UNUSED,
			 const char *error ATTR_UNUSED, void *context)
{
	*(struct dovewarden_queue_job **)context = job;
}

static void counts_callback(const struct dovewarden_queue_counts *counts,
			    const char *error ATTR_UNUSED, void *context)
{
	*(struct dovewarden_queue_counts *)context = *counts;
}

/* Users in failure back-off, as a restarted service sees them */
static unsigned int failed_waiting_after_restart(void)
{
	struct dovewarden_queue_backend *backend = backend_init();
	struct dovewarden_queue_counts counts;

	counts.failed_waiting = UINT_MAX;
	/* the built-in backend answers at once */
	dovewarden_queue_backend_read_counts(backend, counts_callback,
					     &counts);
	dovewarden_queue_backend_deinit(&backend);
	return counts.failed_waiting;
}

static void changes_retry_one(struct dovewarden_queue_backend *backend)
{
	dovewarden_queue_backend_retry_failed(backend, "a", NULL, NULL);
}

static void changes_retry_all(struct dovewarden_queue_backend *backend)
{
	dovewarden_queue_backend_retry_failed(backend, NULL, NULL, NULL);
}

/* An ended back-off (the replica answers again) must not come back with
   a restart: the users would wait out their back-off once more */
Test(queue_builtin, an_ended_back_off_survives_a_kill)
{
	static const char *const users[] = { "a", "b", "c" };
	struct dovewarden_queue_backend *backend;
	struct dovewarden_queue_job *job;

	backend = backend_init();
	for (unsigned int i = 0; i < N_ELEMENTS(users); i++) {
		dovewarden_queue_backend_notify(backend, users[i],
						DOVEWARDEN_PRIORITY_HIGH, 0);
	}
	for (unsigned int i = 0; i < N_ELEMENTS(users); i++) {
		job = NULL;
		dovewarden_queue_backend_pop(backend, TRUE, pop_callback,
					     &job);
		cr_assert_not_null(job);
		dovewarden_queue_backend_finish(&job,
			DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL,
			"replica down", FALSE);
	}
	/* saved */
	dovewarden_queue_backend_deinit(&backend);
	cr_assert_eq(failed_waiting_after_restart(), 3);

	run_and_die(changes_retry_one);
	cr_assert_eq(failed_waiting_after_restart(), 2);
	run_and_die(changes_retry_all);
	cr_assert_eq(failed_waiting_after_restart(), 0);
}

static void save_wait_timeout(void *context ATTR_UNUSED)
{
	io_loop_stop(ioloop);
}

Test(queue_builtin, a_flood_of_new_names_does_not_grow_the_journal)
{
	struct dovewarden_queue_backend *backend;
	struct timeout *to;
	struct stat st;
	const char *journal = t_strconcat(db_path, ".journal", NULL);
	unsigned int i;

	backend = backend_init();
	/* about 20 MB of journal lines without the early save */
	for (i = 0; i < 170000; i++) T_BEGIN {
		dovewarden_queue_backend_notify(backend, t_strdup_printf(
			"junk-user-%u-with-a-long-name-to-fill-the-journal-"
			"faster@flood.example.com", i),
			DOVEWARDEN_PRIORITY_HIGH, 0);
	} T_END;
	/* let the background saves finish */
	to = timeout_add(2000, save_wait_timeout, NULL);
	io_loop_run(ioloop);
	timeout_remove(&to);
	cr_assert_eq(stat(journal, &st), 0);
	cr_assert_lt(st.st_size, 16 * 1024 * 1024,
		     "journal has %lld bytes", (long long)st.st_size);
	dovewarden_queue_backend_deinit(&backend);
}

static uint64_t
metric_value(struct dovewarden_queue_backend *backend, const char *name)
{
	ARRAY_TYPE(dovewarden_queue_metric) metrics;
	const struct dovewarden_queue_metric *m;
	uint64_t value = UINT64_MAX;

	t_array_init(&metrics, 8);
	dovewarden_queue_backend_get_metrics(backend, &metrics);
	array_foreach(&metrics, m) {
		if (strcmp(m->name, name) == 0)
			value = m->value;
	}
	cr_assert_neq(value, UINT64_MAX, "no metric %s", name);
	return value;
}

Test(queue_builtin, corrupt_records_are_counted_in_metrics)
{
	struct dovewarden_queue_backend *backend;
	FILE *f;

	f = fopen(db_path, "w");
	cr_assert_not_null(f);
	fputs("dovewarden-db\t1\n"
	      "alice\thigh\t1700000000\t0\t0\t0\t0\t0\t0\t\t\n"
	      "bad\tline\n", f);
	cr_assert_eq(fclose(f), 0);
	f = fopen(t_strconcat(db_path, ".journal", NULL), "w");
	cr_assert_not_null(f);
	fputs("N\tbob\turgent\n", f);
	cr_assert_eq(fclose(f), 0);

	backend = backend_init();
	cr_assert_eq(metric_value(backend, "dovewarden_state_corrupt_records"),
		     2);
	cr_assert_eq(metric_value(backend,
				  "dovewarden_state_quarantined_records"), 2);
	dovewarden_queue_backend_deinit(&backend);
}

static void write_str(const char *path, const char *str)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "fopen(%s): %m", path);
	cr_assert_geq(fputs(str, f), 0);
	cr_assert_eq(fclose(f), 0);
}

#define IMPORT_STATE "AQAAAELs0zkDeBRrGBUAAIPsw3UDeBRrAQAAAAEAAAAAAAAAAAAAAAAAAAABAAAAdqXxyg=="

/* Dovecot 2.3's replicator.db is imported at the first start, once */
Test(queue_builtin, replicator_db_is_imported_once)
{
	struct dovewarden_queue_backend *backend;
	struct dovewarden_queue_counts counts;
	struct dovewarden_queue_job *job;
	const char *imported_path;
	string_t *str = t_str_new(256);
	struct stat st;

	replicator_db_path = i_strconcat(tmpdir, "/replicator.db", NULL);
	imported_path = t_strconcat(replicator_db_path, ".imported", NULL);
	/* a change synced a minute ago, one waiting, and a corrupt line */
	str_printfa(str, "bob\t0\t%ld\t%ld\t%ld\t0\t"IMPORT_STATE"\t%ld\n",
		    (long)ioloop_time - 60, (long)ioloop_time - 60,
		    (long)ioloop_time - 120, (long)ioloop_time - 60);
	str_printfa(str, "dave\t2\t%ld\t%ld\t%ld\t0\t"IMPORT_STATE"\t%ld\n",
		    (long)ioloop_time, (long)ioloop_time - 60,
		    (long)ioloop_time - 120, (long)ioloop_time - 60);
	str_append(str, "corrupt\n");
	write_str(replicator_db_path, str_c(str));

	backend = backend_init();
	dovewarden_queue_backend_get_counts(backend, &counts);
	cr_assert_eq(counts.users, 2);
	cr_assert_eq(counts.pending[DOVEWARDEN_PRIORITY_HIGH], 1);
	cr_assert_eq(stat(replicator_db_path, &st), -1);
	cr_assert_eq(stat(imported_path, &st), 0);
	/* saved at once */
	cr_assert_eq(stat(db_path, &st), 0);
	cr_assert_eq(metric_value(backend,
				  "dovewarden_state_corrupt_records"), 1);

	/* the first sync after the migration is incremental, with the
	   state 2.3 kept */
	job = NULL;
	dovewarden_queue_backend_pop(backend, TRUE, pop_callback, &job);
	cr_assert_not_null(job);
	cr_assert_str_eq(job->username, "dave");
	cr_assert_str_eq(job->state, IMPORT_STATE);
	cr_assert(!job->full);
	dovewarden_queue_backend_finish(&job, DOVEWARDEN_SYNC_RESULT_OK,
					"newstate", NULL, FALSE);
	dovewarden_queue_backend_deinit(&backend);

	/* a replicator.db that appears later is not imported */
	write_str(replicator_db_path, "erin\t2\t1\t1\t1\t0\t\t1\n");
	backend = backend_init();
	dovewarden_queue_backend_get_counts(backend, &counts);
	cr_assert_eq(counts.users, 2, "users %u", counts.users);
	cr_assert_eq(counts.pending[DOVEWARDEN_PRIORITY_HIGH], 0);
	cr_assert_eq(stat(replicator_db_path, &st), 0);
	dovewarden_queue_backend_deinit(&backend);
}
