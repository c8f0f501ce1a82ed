/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "str.h"
#include "unlink-directory.h"
#include "dovewarden-orphans.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#define T_MASTER_PID 4242

static char tmpdir[] = "/tmp/dw-orphans-test.XXXXXX";
static char *path;
static struct ioloop *ioloop;
static struct event *event;

static void test_init(void)
{
	lib_init();
	cr_assert_not_null(mkdtemp(tmpdir));
	path = i_strconcat(tmpdir, "/dovewarden.dsyncs", NULL);
	ioloop = io_loop_create();
	event = event_create(NULL);
}

static void test_fini(void)
{
	const char *error;

	event_unref(&event);
	io_loop_destroy(&ioloop);
	if (unlink_directory(tmpdir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("%s", error);
	i_free_and_null(path);
	lib_deinit();
}

TestSuite(orphans, .init = test_init, .fini = test_fini);

static unsigned int count(struct dovewarden_orphans *orphans)
{
	time_t next_end;

	return dovewarden_orphans_count(orphans, &next_end);
}

static void write_str(const char *str)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "fopen(%s): %m", path);
	cr_assert_eq(fwrite(str, 1, strlen(str), f), strlen(str));
	cr_assert_eq(fclose(f), 0);
}

static const char *read_str(void)
{
	string_t *str = t_str_new(256);
	char buf[1024];
	size_t n;
	FILE *f = fopen(path, "r");

	cr_assert_not_null(f, "fopen(%s): %m", path);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		str_append_data(str, buf, n);
	cr_assert_eq(fclose(f), 0);
	return str_c(str);
}

Test(orphans, missing_file_is_empty)
{
	struct dovewarden_orphans *orphans;

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	cr_assert_eq(count(orphans), 0);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "alice"), 0);
	cr_assert_str_eq(read_str(), "");
	dovewarden_orphans_deinit(&orphans);
}

/* A new process finds username's dsync as the only one that may still
   run, waited for until until */
static void assert_one_inherited(const char *username, time_t until)
{
	struct dovewarden_orphans *orphans;

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	cr_assert_eq(count(orphans), 1);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, username), until);
	dovewarden_orphans_deinit(&orphans);
}

Test(orphans, unended_dsyncs_are_waited_for_after_restart)
{
	struct dovewarden_orphans *orphans;
	const char *contents;
	time_t started;

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	started = ioloop_time;
	dovewarden_orphans_started(orphans, "alice");
	dovewarden_orphans_started(orphans, "bob@example.com");
	dovewarden_orphans_started(orphans, "carol");
	dovewarden_orphans_ended(orphans, "carol");
	/* a process never waits for its own dsyncs */
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "alice"), 0);
	dovewarden_orphans_deinit(&orphans);

	/* the next process: alice's and bob's dsyncs may still run */
	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	cr_assert_eq(count(orphans), 2);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "alice"),
		     started + DOVEWARDEN_ORPHAN_GRACE_SECS);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "bob@example.com"),
		     started + DOVEWARDEN_ORPHAN_GRACE_SECS);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "carol"), 0);
	/* the syncs that wait for them take their slots now */
	cr_assert_eq(count(orphans), 0);
	/* the file was compacted to the two records (in any order) */
	contents = read_str();
	cr_assert_not_null(strstr(contents, t_strdup_printf(
		"%lld\t4242\talice\n", (long long)started)), "%s",
		contents);
	cr_assert_not_null(strstr(contents, t_strdup_printf(
		"%lld\t4242\tbob@example.com\n", (long long)started)), "%s",
		contents);
	cr_assert_eq(strlen(contents), 2 * 16 + strlen("alice\n") +
		     strlen("bob@example.com\n"), "%s", contents);

	/* a new dsync of alice replaces the inherited record */
	dovewarden_orphans_started(orphans, "alice");
	cr_assert_eq(count(orphans), 0);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "alice"), 0);
	dovewarden_orphans_ended(orphans, "alice");
	dovewarden_orphans_deinit(&orphans);

	/* bob's record is still there for a third process, with the time
	   it was started */
	assert_one_inherited("bob@example.com",
			     started + DOVEWARDEN_ORPHAN_GRACE_SECS);
}

Test(orphans, a_timed_out_dsync_is_waited_for)
{
	struct dovewarden_orphans *orphans;

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	dovewarden_orphans_started(orphans, "alice");
	dovewarden_orphans_started(orphans, "bob");
	cr_assert_eq(count(orphans), 0);
	/* the service gave up waiting for alice's dsync: it may go on in
	   doveadm-server, so it takes a slot, and alice's next sync waits
	   for it */
	dovewarden_orphans_abandoned(orphans, "alice");
	dovewarden_orphans_ended(orphans, "bob");
	cr_assert_eq(count(orphans), 1);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "alice"),
		     ioloop_time + DOVEWARDEN_ORPHAN_GRACE_SECS);
	cr_assert_eq(count(orphans), 0);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "bob"), 0);
	dovewarden_orphans_deinit(&orphans);

	/* and so does the next process */
	assert_one_inherited("alice", ioloop_time + DOVEWARDEN_ORPHAN_GRACE_SECS);
}

Test(orphans, records_older_than_the_master_are_dropped)
{
	struct dovewarden_orphans *orphans;
	time_t started, self_started;

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	started = ioloop_time;
	dovewarden_orphans_started(orphans, "alice");
	dovewarden_orphans_deinit(&orphans);
	/* a container's master is pid 1 again after a restart: a master of
	   the same pid that started after the record is another one */
	orphans = dovewarden_orphans_init(path, T_MASTER_PID, started + 1,
					  event);
	cr_assert_eq(count(orphans), 0);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "alice"), 0);
	dovewarden_orphans_deinit(&orphans);

	self_started = dovewarden_orphans_process_started(getpid());
	cr_assert_gt(self_started, 0);
	cr_assert_leq(self_started, time(NULL));
	cr_assert_geq(self_started, time(NULL) - 600);
	cr_assert_eq(dovewarden_orphans_process_started(-1), 0);
}

Test(orphans, old_records_and_bad_lines_are_dropped)
{
	struct dovewarden_orphans *orphans;
	time_t next_end;
	long long now;

	now = (long long)ioloop_time;
	write_str(t_strdup_printf(
		"%lld\t4242\told\n"
		"%lld\t4242\tnew\n"
		"%lld\t4242\tfuture\n"
		"garbage\n"
		"x\t4242\tbadtime\n"
		"-\n"
		"%lld\t4242\tended\n"
		"-\tended\n"
		/* started under another master: Dovecot was restarted */
		"%lld\t4241\trestarted\n"
		"%lld\t4242\tunterminated",
		now - DOVEWARDEN_ORPHAN_GRACE_SECS, now - 1, now + 3600,
		now, now, now));

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	/* they take slots until the first one's grace ends */
	cr_assert_eq(dovewarden_orphans_count(orphans, &next_end), 2);
	cr_assert_eq(next_end, now - 1 + DOVEWARDEN_ORPHAN_GRACE_SECS);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "old"), 0);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "new"),
		     now - 1 + DOVEWARDEN_ORPHAN_GRACE_SECS);
	/* a start in the future (the clock went back) counts as now */
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "future"),
		     now + DOVEWARDEN_ORPHAN_GRACE_SECS);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "ended"), 0);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "restarted"), 0);
	/* an append cut short */
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "unterminated"),
		     0);
	dovewarden_orphans_deinit(&orphans);
}

Test(orphans, appends_are_compacted)
{
	struct dovewarden_orphans *orphans;
	unsigned int i;

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	dovewarden_orphans_started(orphans, "running");
	for (i = 0; i < DOVEWARDEN_ORPHANS_COMPACT_SIZE / 16; i++) {
		dovewarden_orphans_started(orphans, "user");
		dovewarden_orphans_ended(orphans, "user");
	}
	dovewarden_orphans_deinit(&orphans);
	cr_assert_lt(strlen(read_str()), DOVEWARDEN_ORPHANS_COMPACT_SIZE);

	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	cr_assert_eq(count(orphans), 1);
	cr_assert_gt(dovewarden_orphans_wait_until(orphans, "running"), 0);
	cr_assert_eq(dovewarden_orphans_wait_until(orphans, "user"), 0);
	dovewarden_orphans_deinit(&orphans);
}

static void collect_user(const char *username, void *context)
{
	string_t *str = context;

	str_printfa(str, "%s,", username);
}

/* The users whose dsync ended unseen, as the load found them: handed over
   once, also when that dsync is long over or Dovecot was restarted
   since */
static const char *take_interrupted(struct dovewarden_orphans *orphans)
{
	string_t *str = t_str_new(64);

	dovewarden_orphans_take_interrupted(orphans, collect_user, str);
	return str_c(str);
}

Test(orphans, interrupted_dsyncs_are_handed_over_once)
{
	struct dovewarden_orphans *orphans;
	const char *found;

	write_str(t_strdup_printf("100\t%ld\told\n"
				  "%lld\t99999\tother-master\n"
				  "%lld\t%ld\tended\n-\tended\n",
				  (long)T_MASTER_PID,
				  (long long)ioloop_time,
				  (long long)ioloop_time,
				  (long)T_MASTER_PID));
	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	found = take_interrupted(orphans);
	cr_assert(strstr(found, "old,") != NULL, "%s", found);
	cr_assert(strstr(found, "other-master") != NULL, "%s", found);
	cr_assert(strstr(found, "ended") == NULL, "%s", found);
	cr_assert_str_eq(take_interrupted(orphans), "");
	dovewarden_orphans_started(orphans, "mine");
	dovewarden_orphans_deinit(&orphans);

	/* the next process: only the dsync the last one left */
	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	cr_assert_str_eq(take_interrupted(orphans), "mine,");
	dovewarden_orphans_ended(orphans, "mine");
	dovewarden_orphans_deinit(&orphans);
	orphans = dovewarden_orphans_init(path, T_MASTER_PID, 0, event);
	cr_assert_str_eq(take_interrupted(orphans), "");
	dovewarden_orphans_deinit(&orphans);
}

Test(orphans, parse_line)
{
	const char *username, *reason;
	time_t started;
	pid_t master_pid;

	cr_assert_eq(dovewarden_orphans_parse_line("12\t34\tu@example.com",
						   &started, &master_pid,
						   &username, &reason), 1);
	cr_assert_eq(started, 12);
	cr_assert_eq(master_pid, 34);
	cr_assert_str_eq(username, "u@example.com");
	cr_assert_eq(dovewarden_orphans_parse_line("-\tu", &started,
						   &master_pid, &username,
						   &reason), 0);
	cr_assert_str_eq(username, "u");
	/* escaped control bytes are no username */
	cr_assert_eq(dovewarden_orphans_parse_line("12\t34\tu\001tv",
						   &started, &master_pid,
						   &username, &reason), -1);
	cr_assert_str_eq(reason, "invalid username");
	cr_assert_eq(dovewarden_orphans_parse_line("0\t34\tu", &started,
						   &master_pid, &username,
						   &reason), -1);
	cr_assert_str_eq(reason, "invalid time");
	cr_assert_eq(dovewarden_orphans_parse_line("12\t0\tu", &started,
						   &master_pid, &username,
						   &reason), -1);
	cr_assert_str_eq(reason, "invalid pid");
	cr_assert_eq(dovewarden_orphans_parse_line("12\tu", &started,
						   &master_pid, &username,
						   &reason), -1);
	cr_assert_str_eq(reason, "wrong number of fields");
	cr_assert_eq(dovewarden_orphans_parse_line("-\t1\tu", &started,
						   &master_pid, &username,
						   &reason), -1);
	cr_assert_eq(dovewarden_orphans_parse_line("", &started,
						   &master_pid, &username,
						   &reason), -1);
}
