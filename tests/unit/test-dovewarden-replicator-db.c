/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "unlink-directory.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"
#include "dovewarden-replicator-db.h"

#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

#include <criterion/criterion.h>

/* Dovecot 2.3's replicator.db: its lines as users, and the import of a
   whole file. REPLICATOR_DB_SAMPLE is a file written by 2.3.19.1's
   replicator (bob and alice synced, carol with an empty state). */

#define NONE DOVEWARDEN_PRIORITY_NONE
#define LOW DOVEWARDEN_PRIORITY_LOW
#define HIGH DOVEWARDEN_PRIORITY_HIGH

#define T0 ((time_t)1796503552)
#define BOB_STATE "AQAAAELs0zkDeBRrGBUAAIPsw3UDeBRrAQAAAAEAAAAAAAAAAAAAAAAAAAABAAAAdqXxyg=="
#define CAROL_STATE "AQAAAHm4+Jk="

static char tmpdir[] = "/tmp/dw-replicator-db-test.XXXXXX";
static char *db_path, *state_path, *quarantine_path;

static void test_init(void)
{
	lib_init();
	cr_assert_not_null(mkdtemp(tmpdir));
	db_path = i_strconcat(tmpdir, "/replicator.db", NULL);
	state_path = i_strconcat(tmpdir, "/dovewarden.db", NULL);
	quarantine_path = i_strconcat(state_path, ".quarantine", NULL);
}

static void test_fini(void)
{
	const char *error;

	if (unlink_directory(tmpdir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("%s", error);
	i_free(db_path);
	i_free(state_path);
	i_free(quarantine_path);
	lib_deinit();
}

TestSuite(replicator_db, .init = test_init, .fini = test_fini);

static int parse(const char *line, struct dovewarden_user *fields_r,
		 const char **reason_r)
{
	*reason_r = NULL;
	return dovewarden_replicator_db_parse_line(line, fields_r, reason_r);
}

static void parse_ok(const char *line, struct dovewarden_user *fields_r)
{
	const char *reason;

	cr_assert_eq(parse(line, fields_r, &reason), 0, "%s: %s", line,
		     reason);
}

static void parse_fails(const char *line, const char *reason)
{
	struct dovewarden_user fields;
	const char *got;

	cr_assert_eq(parse(line, &fields, &got), -1, "parsed: %s", line);
	cr_assert_str_eq(got, reason, "%s", line);
}

static const char *read_sample(void)
{
	string_t *str = t_str_new(1024);
	char buf[1024];
	size_t n;
	FILE *f;

	f = fopen(REPLICATOR_DB_SAMPLE, "r");
	cr_assert_not_null(f, "fopen(%s): %m", REPLICATOR_DB_SAMPLE);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		str_append_data(str, buf, n);
	fclose(f);
	return str_c(str);
}

static void write_str(const char *path, const char *str)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "fopen(%s): %m", path);
	cr_assert_eq(fwrite(str, 1, strlen(str), f), strlen(str));
	cr_assert_eq(fclose(f), 0);
}

Test(replicator_db, sample_lines)
{
	const char *const *lines = t_strsplit(read_sample(), "\n");
	struct dovewarden_user fields;

	cr_assert_eq(str_array_length(lines), 4);
	cr_assert_str_eq(lines[3], "");

	parse_ok(lines[0], &fields);
	cr_assert_str_eq(fields.username, "bob");
	cr_assert_eq(fields.priority, NONE);
	cr_assert_eq(fields.last_update, T0 + 4);
	cr_assert_eq(fields.last_fast_sync, T0 + 4);
	cr_assert_eq(fields.last_full_sync, T0);
	cr_assert_eq(fields.last_successful_sync, T0 + 4);
	cr_assert_eq(fields.consecutive_failures, 0);
	cr_assert_null(fields.last_error);
	cr_assert_str_eq(fields.state, BOB_STATE);
	cr_assert(!dovewarden_replicator_db_state_is_empty(fields.state));
	cr_assert_eq(fields.next_try, 0);
	cr_assert(!fields.force_full_sync);

	/* iterated but never changed: last_update 0 */
	parse_ok(lines[1], &fields);
	cr_assert_str_eq(fields.username, "alice");
	cr_assert_eq(fields.last_update, 0);
	cr_assert_eq(fields.last_full_sync, T0);

	/* an empty state: only the version and the CRC */
	parse_ok(lines[2], &fields);
	cr_assert_str_eq(fields.username, "carol");
	cr_assert_str_eq(fields.state, CAROL_STATE);
	cr_assert(dovewarden_replicator_db_state_is_empty(fields.state));
	cr_assert_eq(fields.last_successful_sync, T0 + 1);
}

Test(replicator_db, seven_fields)
{
	struct dovewarden_user fields;

	/* older 2.3 versions had no last_successful_sync */
	parse_ok("dave\t2\t100\t90\t80\t0\t"BOB_STATE, &fields);
	cr_assert_str_eq(fields.username, "dave");
	cr_assert_eq(fields.priority, HIGH);
	cr_assert_eq(fields.last_update, 100);
	cr_assert_eq(fields.last_fast_sync, 90);
	cr_assert_eq(fields.last_full_sync, 80);
	cr_assert_eq(fields.last_successful_sync, 0);
	/* fields after the 8th are ignored, as 2.3 does */
	parse_ok("dave\t1\t100\t90\t80\t0\t"BOB_STATE"\t95\tmore\tfields",
		 &fields);
	cr_assert_eq(fields.priority, LOW);
	cr_assert_eq(fields.last_successful_sync, 95);
}

Test(replicator_db, priorities_and_failure)
{
	struct dovewarden_user fields;

	parse_ok("u\t0\t1\t1\t1\t0\t\t1", &fields);
	cr_assert_eq(fields.priority, NONE);
	parse_ok("u\t1\t1\t1\t1\t0\t\t1", &fields);
	cr_assert_eq(fields.priority, LOW);
	parse_ok("u\t2\t1\t1\t1\t0\t\t1", &fields);
	cr_assert_eq(fields.priority, HIGH);
	/* a sync a client waited for: nobody waits after the migration */
	parse_ok("u\t3\t1\t1\t1\t0\t\t1", &fields);
	cr_assert_eq(fields.priority, HIGH);

	/* a failed user is retried at once */
	parse_ok("u\t0\t1\t1\t1\t1\t\t1", &fields);
	cr_assert_eq(fields.priority, LOW);
	cr_assert_eq(fields.consecutive_failures, 1);
	cr_assert_str_eq(fields.last_error,
			 DOVEWARDEN_REPLICATOR_DB_FAILED_ERROR);
	cr_assert_eq(fields.next_try, 0);
	parse_ok("u\t2\t1\t1\t1\t1\t\t1", &fields);
	cr_assert_eq(fields.priority, HIGH);
}

Test(replicator_db, first_full_sync_rule)
{
	struct dovewarden_user fields;

	/* no state (or an empty one) and no full sync: the first sync
	   stays a full one */
	parse_ok("u\t2\t100\t90\t0\t0\t\t90", &fields);
	cr_assert_eq(fields.last_full_sync, 0);
	parse_ok("u\t2\t100\t90\t0\t0\t"CAROL_STATE"\t90", &fields);
	cr_assert_eq(fields.last_full_sync, 0);
	/* a state with mailboxes: they were synced before */
	parse_ok("u\t2\t100\t90\t0\t0\t"BOB_STATE"\t95", &fields);
	cr_assert_eq(fields.last_full_sync, 95);
	parse_ok("u\t2\t100\t90\t0\t0\t"BOB_STATE, &fields);
	cr_assert_eq(fields.last_full_sync, 90);
	/* a full sync time is kept */
	parse_ok("u\t2\t100\t90\t50\t0\t"BOB_STATE"\t95", &fields);
	cr_assert_eq(fields.last_full_sync, 50);
}

Test(replicator_db, corrupt_lines)
{
	parse_fails("", "too few fields");
	parse_fails("bob", "too few fields");
	parse_fails("bob\t0\t1\t1\t1\t0", "too few fields");
	parse_fails("\t0\t1\t1\t1\t0\tstate\t1", "invalid username");
	parse_fails("bob\t4\t1\t1\t1\t0\tstate\t1", "invalid priority");
	parse_fails("bob\t-1\t1\t1\t1\t0\tstate\t1", "invalid priority");
	parse_fails("bob\tx\t1\t1\t1\t0\tstate\t1", "invalid priority");
	parse_fails("bob\t\t1\t1\t1\t0\tstate\t1", "invalid priority");
	parse_fails("bob\t0\tx\t1\t1\t0\tstate\t1", "invalid time");
	parse_fails("bob\t0\t1\t-1\t1\t0\tstate\t1", "invalid time");
	parse_fails("bob\t0\t1\t1\t\t0\tstate\t1", "invalid time");
	parse_fails("bob\t0\t1\t1\t1\t0\tstate\tx", "invalid time");
	parse_fails("bob\t0\t1\t1\t1\t2\tstate\t1", "invalid last_sync_failed");
	parse_fails("bob\t0\t1\t1\t1\t\tstate\t1", "invalid last_sync_failed");
	/* not UTF-8 */
	parse_fails("b\xffob\t0\t1\t1\t1\t0\tstate\t1", "invalid username");
}

Test(replicator_db, huge_times)
{
	struct dovewarden_user fields;

	/* 9999-12-31 23:59:59 is the last time a state file may hold */
	parse_ok("bob\t0\t253402300799\t1\t1\t0\tstate\t1", &fields);
	cr_assert_eq(fields.last_update, DOVEWARDEN_STORE_MAX_TIME);
	parse_fails("bob\t0\t253402300800\t1\t1\t0\tstate\t1", "invalid time");
	parse_fails("bob\t0\t1\t9223372036854775807\t1\t0\tstate\t1",
		    "invalid time");
	parse_fails("bob\t0\t1\t1\t99999999999999999999999\t0\tstate\t1",
		    "invalid time");
	parse_fails("bob\t0\t1\t1\t1\t0\tstate\t18446744073709551616",
		    "invalid time");
	parse_fails("bob\t99999999999\t1\t1\t1\t0\tstate\t1",
		    "invalid priority");
}

Test(replicator_db, tab_escaped_fields)
{
	struct dovewarden_user fields;

	/* an escaped TAB does not split the line: the name is one field,
	   but a name with a control character is not valid */
	parse_fails("us\001ter\t0\t1\t1\t1\t0\tstate\t1", "invalid username");
	parse_fails("us\001ner\t0\t1\t1\t1\t0\tstate\t1", "invalid username");
	parse_fails("us\0011er\t0\t1\t1\t1\t0\tstate\t1", "invalid username");
	/* an escaped NUL would cut the name short: "bob" is not this */
	parse_fails("bob\0010evil\t0\t1\t1\t1\t0\tstate\t1", "escaped NUL");
	parse_fails("bob\t0\t1\t1\t1\t0\tst\0010ate\t1", "escaped NUL");
	/* \001 before another byte stands for that byte, as in 2.3 */
	parse_ok("user\001x@example.com\t0\t1\t1\t1\t0\tst\001tate\t1",
		 &fields);
	cr_assert_str_eq(fields.username, "userx@example.com");
	cr_assert_str_eq(fields.state, "st\tate");
}

Test(replicator_db, import_file)
{
	struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = 24 * 3600,
		.retry_min_secs = 60,
		.retry_max_secs = 3600,
	};
	struct dovewarden_store_load_result result;
	struct dovewarden_queue *queue;
	struct dovewarden_store *store;
	struct dovewarden_user *user;
	const char *error, *quarantine;
	string_t *str = t_str_new(1024);

	str_append(str, read_sample());
	/* corrupt lines are skipped, the rest goes on */
	str_append(str, "broken line\n");
	str_append(str, "erin\t2\t"BOB_STATE"\t1\t1\t0\tstate\t1\n");
	/* the later change wins, as in 2.3 */
	str_append(str, "dave\t1\t1796503100\t1796503090\t1796503080\t0\t"
		   "old\t1796503090\n");
	str_append(str, "dave\t2\t1796503200\t1796503190\t1796503180\t0\t"
		   "new\t1796503190\n");
	str_append(str, "dave\t1\t1796503150\t1796503090\t1796503080\t0\t"
		   "older\t1796503090\n");
	/* a last line without LF */
	str_append(str, "frank\t0\t1\t1\t1\t0\tstate");
	write_str(db_path, str_c(str));

	queue = dovewarden_queue_init(&set);
	store = dovewarden_store_init(state_path);
	cr_assert_eq(dovewarden_store_exists(store, &error), 0);
	cr_assert_eq(dovewarden_replicator_db_import(store, db_path, queue,
						     T0 + 10, &result,
						     &error), 1, "%s", error);
	cr_assert_eq(result.users_loaded, 4);
	cr_assert_eq(result.snapshot_lines_skipped, 3);
	cr_assert_eq(result.snapshot_first_skipped_line, 4);
	cr_assert_eq(result.records_quarantined, 3);
	cr_assert_null(result.quarantine_error);

	user = dovewarden_queue_lookup(queue, "bob");
	cr_assert_not_null(user);
	cr_assert_str_eq(user->state, BOB_STATE);
	user = dovewarden_queue_lookup(queue, "dave");
	cr_assert_not_null(user);
	cr_assert_str_eq(user->state, "new");
	cr_assert_eq(user->priority, HIGH);
	cr_assert_null(dovewarden_queue_lookup(queue, "erin"));
	cr_assert_null(dovewarden_queue_lookup(queue, "frank"));

	/* kept for an admin, with the file's name and line numbers */
	quarantine = t_strconcat(db_path, "\t4\t", NULL);
	cr_assert_eq(access(quarantine_path, R_OK), 0);
	{
		FILE *f = fopen(quarantine_path, "r");
		char buf[4096];
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);

		fclose(f);
		buf[n] = '\0';
		cr_assert(strncmp(buf, quarantine, strlen(quarantine)) == 0,
			  "%s", buf);
		cr_assert_not_null(strstr(buf, "last line without LF"),
				   "%s", buf);
	}

	/* dave's change is due at once, and incrementally: its last full
	   sync was recent */
	user = dovewarden_queue_pop(queue, T0 + 10);
	cr_assert_not_null(user);
	cr_assert_str_eq(user->username, "dave");
	cr_assert(!user->syncing_full);
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "newer", NULL, T0 + 10);
	cr_assert_null(dovewarden_queue_pop(queue, T0 + 10));

	dovewarden_store_deinit(&store);
	dovewarden_queue_deinit(&queue);

	/* a missing file is nothing to import */
	cr_assert_eq(unlink(db_path), 0);
	queue = dovewarden_queue_init(&set);
	store = dovewarden_store_init(state_path);
	cr_assert_eq(dovewarden_replicator_db_import(store, db_path, queue,
						     T0, &result, &error), 0);
	cr_assert_eq(result.users_loaded, 0);
	dovewarden_store_deinit(&store);
	dovewarden_queue_deinit(&queue);
}
