/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "ioloop.h"
#include "unlink-directory.h"
#include "dovewarden-compat.h"
#include "dovewarden-config.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"

#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

/* the header that this build writes */
#define HEADER_WRITTEN "dovewarden-db\t2\tdovewarden "DOVEWARDEN_VERSION \
	" on Dovecot "DOVECOT_VERSION"\n"

#define T0 ((time_t)1700000000)
#define NONE DOVEWARDEN_PRIORITY_NONE
#define LOW DOVEWARDEN_PRIORITY_LOW
#define HIGH DOVEWARDEN_PRIORITY_HIGH
#define SYNC DOVEWARDEN_PRIORITY_SYNC

#define FULL_INTERVAL (24 * 3600)

static char tmpdir[] = "/tmp/dw-store-test.XXXXXX";
static char *db_path, *journal_path, *tmp_path, *corrupt_path;
static char *journal_old_path, *quarantine_path;
static struct ioloop *ioloop;
static struct dovewarden_queue *queue;
static struct dovewarden_store *store;
/* settle delay of the queues queue_new() makes (0 = off) */
static unsigned int settle_delay_secs;

static struct dovewarden_queue *queue_new(void)
{
	struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = FULL_INTERVAL,
		.retry_min_secs = 60,
		.retry_max_secs = 3600,
		.settle_delay_secs = settle_delay_secs,
		.settle_max_secs = 300,
	};

	return dovewarden_queue_init(&set);
}

static void test_init(void)
{
	lib_init();
	settle_delay_secs = 0;
	cr_assert_not_null(mkdtemp(tmpdir));
	db_path = i_strconcat(tmpdir, "/state/dovewarden.db", NULL);
	journal_path = i_strconcat(db_path, ".journal", NULL);
	tmp_path = i_strconcat(db_path, ".tmp", NULL);
	corrupt_path = i_strconcat(db_path, ".corrupt", NULL);
	journal_old_path = i_strconcat(db_path, ".journal.old", NULL);
	quarantine_path = i_strconcat(db_path, ".quarantine", NULL);
	ioloop = io_loop_create();
	queue = queue_new();
	store = dovewarden_store_init(db_path);
}

static void test_fini(void)
{
	const char *error;

	dovewarden_store_deinit(&store);
	if (queue != NULL)
		dovewarden_queue_deinit(&queue);
	io_loop_destroy(&ioloop);
	if (unlink_directory(tmpdir, UNLINK_DIRECTORY_FLAG_RMDIR,
			     &error) < 0)
		i_error("%s", error);
	i_free_and_null(db_path);
	i_free_and_null(journal_path);
	i_free_and_null(tmp_path);
	i_free_and_null(corrupt_path);
	i_free_and_null(journal_old_path);
	i_free_and_null(quarantine_path);
	lib_deinit();
}

TestSuite(store, .init = test_init, .fini = test_fini);

static void write_file(const char *path, const void *data, size_t size)
{
	char *dir = i_strdup(path);
	FILE *f;

	*strrchr(dir, '/') = '\0';
	(void)mkdir(dir, 0700);
	i_free(dir);
	f = fopen(path, "w");
	cr_assert_not_null(f, "fopen(%s): %m", path);
	cr_assert_eq(fwrite(data, 1, size, f), size);
	cr_assert_eq(fclose(f), 0);
}

static void write_str(const char *path, const char *str)
{
	write_file(path, str, strlen(str));
}

static const char *read_str(const char *path)
{
	string_t *str = t_str_new(1024);
	char buf[4096];
	size_t n;
	FILE *f;

	f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		str_append_data(str, buf, n);
	fclose(f);
	return str_c(str);
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static off_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat(%s): %m", path);
	return st.st_size;
}

/* Drop everything in memory and load again, as after a restart */
static void restart(struct dovewarden_store_load_result *result_r,
		    time_t now)
{
	const char *error = NULL;

	dovewarden_store_deinit(&store);
	dovewarden_queue_deinit(&queue);
	queue = queue_new();
	store = dovewarden_store_init(db_path);
	cr_assert_eq(dovewarden_store_load(store, queue, now, result_r,
					   &error), 0, "load: %s", error);
}

static void save(void)
{
	const char *error = NULL;

	cr_assert_eq(dovewarden_store_save(store, queue, &error), 0,
		     "save: %s", error);
}

static void journal_notify(const char *username,
			   enum dovewarden_priority priority, time_t now)
{
	const char *error = NULL;

	cr_assert_eq(dovewarden_store_journal_notify(store, queue, username,
						     priority, &error), 0,
		     "journal: %s", error);
	(void)dovewarden_queue_notify(queue, username, priority, now);
}

static unsigned int queue_count(void)
{
	struct dovewarden_queue_stats stats;

	dovewarden_queue_get_stats(queue, T0, &stats);
	return stats.users;
}

static const char *const hostile_names[] = {
	"space here",
	"quote\"here",
	"percent%s",
	"back\\slash",
	"\xc3\xbcml\xc3\xa4ut-\xe7\x94\xa8\xe6\x88\xb7@example.com",
	"trailing ",
	" ",
	"a",
};

static void make_fields(unsigned int i, const char *username,
			struct dovewarden_user *fields_r)
{
	i_zero(fields_r);
	fields_r->username = (char *)username;
	fields_r->priority = i % DOVEWARDEN_PRIORITY_COUNT;
	fields_r->last_update = fields_r->priority == NONE ? 0 : T0 - i;
	fields_r->last_fast_sync = T0 - 1000 - i;
	fields_r->last_full_sync = i % 5 == 0 ? 0 : T0 - 2000 - i;
	fields_r->last_successful_sync = i % 7 == 0 ? 0 : T0 - 3000 - i;
	fields_r->consecutive_failures = i % 3;
	fields_r->next_try = fields_r->consecutive_failures == 0 ? 0 :
		T0 + 100 + i;
	fields_r->force_full_sync = i % 4 == 1 &&
		fields_r->priority != NONE;
	fields_r->state = i % 6 == 0 ? (char *)"" :
		(char *)t_strdup_printf("st\t\n\001\r%u\\x", i);
	fields_r->last_error = fields_r->consecutive_failures == 0 ? NULL :
		(char *)t_strdup_printf("err\t%u\nline2\001", i);
	fields_r->last_verified = i % 3 == 0 ? 0 : T0 - 4000 - i;
	fields_r->last_repaired = i % 9 == 0 ? 0 : T0 - 5000 - i;
}

static const char *user_name(unsigned int i)
{
	if (i < N_ELEMENTS(hostile_names))
		return hostile_names[i];
	return t_strdup_printf("user%u \\%u", i, i);
}

static void check_fields(const struct dovewarden_user *user,
			 const struct dovewarden_user *fields)
{
	cr_assert_str_eq(user->username, fields->username);
	cr_assert_eq(user->priority, fields->priority, "%s",
		     fields->username);
	cr_assert_eq(user->last_update, fields->last_update);
	cr_assert_eq(user->last_fast_sync, fields->last_fast_sync);
	cr_assert_eq(user->last_full_sync, fields->last_full_sync);
	cr_assert_eq(user->last_successful_sync,
		     fields->last_successful_sync);
	cr_assert_eq(user->consecutive_failures,
		     fields->consecutive_failures);
	cr_assert_eq(user->next_try, fields->next_try);
	cr_assert_eq(user->force_full_sync, fields->force_full_sync);
	cr_assert_eq(user->last_verified, fields->last_verified);
	cr_assert_eq(user->last_repaired, fields->last_repaired);
	cr_assert_str_eq(user->state, fields->state);
	if (fields->last_error == NULL)
		cr_assert(user->last_error == NULL ||
			  user->last_error[0] == '\0');
	else
		cr_assert_str_eq(user->last_error, fields->last_error);
}

Test(store, round_trip_all_fields)
{
	const unsigned int count = 2000;
	struct dovewarden_store_load_result result;
	struct dovewarden_user fields, *user;
	struct dovewarden_queue_stats stats;
	unsigned int i, due = 0, failed = 0;
	unsigned int pending[DOVEWARDEN_PRIORITY_COUNT] = { 0 };

	T_BEGIN {
		for (i = 0; i < count; i++) {
			make_fields(i, user_name(i), &fields);
			(void)dovewarden_queue_restore(queue, &fields, T0);
		}
	} T_END;
	save();
	cr_assert(!file_exists(tmp_path));

	restart(&result, T0);
	cr_assert_eq(result.users_loaded, count);
	cr_assert_eq(result.snapshot_lines_skipped, 0);
	cr_assert_eq(result.journal_lines_replayed, 0);
	cr_assert_null(result.snapshot_corrupt_error);
	cr_assert_eq(queue_count(), count);

	T_BEGIN {
		for (i = 0; i < count; i++) {
			make_fields(i, user_name(i), &fields);
			user = dovewarden_queue_lookup(queue, fields.username);
			cr_assert_not_null(user, "lost user %u", i);
			check_fields(user, &fields);
			if (fields.priority != NONE &&
			    fields.consecutive_failures == 0)
				due++;
			if (fields.consecutive_failures > 0)
				failed++;
			pending[fields.priority]++;
		}
	} T_END;
	/* the queue's counters know the restored users */
	dovewarden_queue_get_stats(queue, T0, &stats);
	cr_assert_eq(stats.failed, failed);
	for (i = 0; i < DOVEWARDEN_PRIORITY_COUNT; i++)
		cr_assert_eq(stats.pending[i], pending[i]);

	/* every pending user that is not in back-off is due at once */
	for (i = 0; i < due; i++) {
		user = dovewarden_queue_pop(queue, T0);
		cr_assert_not_null(user, "only %u of %u due", i, due);
		cr_assert_eq(user->consecutive_failures, 0);
		dovewarden_queue_sync_finished(queue, user,
					       DOVEWARDEN_SYNC_RESULT_OK,
					       NULL, NULL, T0);
	}
	user = dovewarden_queue_pop(queue, T0);
	cr_assert_null(user, "%s is due too",
		       user == NULL ? "" : user->username);
}

Test(store, settle_and_verification_round_trip)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;

	settle_delay_secs = 10;
	dovewarden_queue_deinit(&queue);
	queue = queue_new();
	/* the first sync is a full one: it ends the settle */
	(void)dovewarden_queue_notify(queue, "alice", LOW, T0 - 100);
	user = dovewarden_queue_pop(queue, T0 - 100);
	cr_assert(user->syncing_full);
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "st0", NULL, T0 - 99);
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(user->last_verified, T0 - 100);
	/* an incremental sync leaves it pending */
	(void)dovewarden_queue_notify(queue, "alice", LOW, T0);
	(void)dovewarden_queue_notify(queue, "alice", LOW, T0 + 5);
	user = dovewarden_queue_pop(queue, T0 + 5);
	cr_assert_not_null(user);
	cr_assert(!user->syncing_full);
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "st", NULL, T0 + 6);
	user->last_repaired = T0 - 200;
	save();
	cr_assert_str_eq(read_str(db_path), HEADER_WRITTEN
			 "alice\tnone\t1700000000\t1700000005\t1699999900\t"
			 "1700000005\t0\t0\t0\tst\t\t1700000000\t"
			 "1700000005\t1699999900\t1699999800\n");

	restart(&result, T0 + 6);
	cr_assert_eq(result.users_loaded, 1);
	user = dovewarden_queue_lookup(queue, "alice");
	cr_assert_not_null(user);
	cr_assert_eq(user->settle_first_change, T0);
	cr_assert_eq(user->settle_last_change, T0 + 5);
	cr_assert_eq(user->last_verified, T0 - 100);
	cr_assert_eq(user->last_repaired, T0 - 200);
	/* the settle is still due after the restart */
	cr_assert_eq(dovewarden_queue_user_get_next_sync(user), T0 + 15);
	cr_assert_null(dovewarden_queue_pop(queue, T0 + 14));
	user = dovewarden_queue_pop(queue, T0 + 15);
	cr_assert_not_null(user);
	cr_assert(user->syncing_full);
	cr_assert(user->syncing_settle);
}

Test(store, long_username_and_state)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user fields, *user;
	string_t *name = t_str_new(2048), *state = t_str_new(300000);
	unsigned int i;

	for (i = 0; i < DOVEWARDEN_USERNAME_MAX_LENGTH; i++)
		str_append_c(name, i % 2 == 0 ? ' ' : 'x');
	for (i = 0; i < 100000; i++)
		str_append(state, "\t\n");
	make_fields(2, str_c(name), &fields);
	fields.state = str_c_modifiable(state);
	(void)dovewarden_queue_restore(queue, &fields, T0);
	save();
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 1);
	user = dovewarden_queue_lookup(queue, str_c(name));
	cr_assert_not_null(user);
	check_fields(user, &fields);
}

Test(store, syncing_user_saved_as_pending)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;

	(void)dovewarden_queue_notify(queue, "alice", HIGH, T0);
	user = dovewarden_queue_add(queue, "bob", T0 - 2 * FULL_INTERVAL);
	user->last_full_sync = T0 - 2 * FULL_INTERVAL;
	dovewarden_queue_requeue(queue, user, T0);

	user = dovewarden_queue_pop(queue, T0 + 1);
	cr_assert_not_null(user);
	user = dovewarden_queue_pop(queue, T0 + 1);
	cr_assert_not_null(user);
	cr_assert_null(dovewarden_queue_pop(queue, T0 + 1));
	save();

	restart(&result, T0 + 10);
	cr_assert_eq(result.users_loaded, 2);
	user = dovewarden_queue_lookup(queue, "alice");
	cr_assert_geq(user->priority, LOW);
	user = dovewarden_queue_lookup(queue, "bob");
	cr_assert_geq(user->priority, LOW);
	/* bob's periodic full sync was cut short: it must be full again */
	cr_assert(user->force_full_sync);
	cr_assert_not_null(dovewarden_queue_pop(queue, T0 + 10));
	cr_assert_not_null(dovewarden_queue_pop(queue, T0 + 10));
}

Test(store, missing_file_is_empty)
{
	struct dovewarden_store_load_result result;
	const char *error;

	cr_assert_eq(dovewarden_store_load(store, queue, T0, &result,
					   &error), 0);
	cr_assert_eq(result.users_loaded, 0);
	cr_assert_eq(result.journal_lines_replayed, 0);
	cr_assert_null(result.snapshot_corrupt_error);
	cr_assert_eq(queue_count(), 0);
	/* the first save creates the directory */
	save();
	cr_assert_str_eq(read_str(db_path), HEADER_WRITTEN);
}

#define LINE_ALICE "alice\thigh\t1700000000\t0\t0\t0\t0\t0\t0\tst\t\n"
#define LINE_BOB "bob\tlow\t1700000001\t5\t4\t3\t2\t1700000100\t1\t\terr\n"
#define LINE_CAROL "carol\tnone\t0\t0\t0\t0\t0\t0\t0\t\t\n"

Test(store, corrupt_lines_skipped)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;

	write_str(db_path,
		  "dovewarden-db\t1\n"
		  LINE_ALICE
		  "bad\tline\n"					/* 3 */
		  "x\thigh\tnotanumber\t0\t0\t0\t0\t0\t0\t\t\n"	/* 4 */
		  "x\turgent\t0\t0\t0\t0\t0\t0\t0\t\t\n"	/* 5 */
		  "\thigh\t0\t0\t0\t0\t0\t0\t0\t\t\n"		/* 6 */
		  "\xff\xfe\thigh\t0\t0\t0\t0\t0\t0\t0\t\t\n"	/* 7 */
		  "x\thigh\t0\t0\t0\t0\t-1\t0\t0\t\t\n"		/* 8 */
		  "x\thigh\t0\t0\t0\t0\t0\t0\t2\t\t\n"		/* 9 */
		  "x\thigh\t0\t0\t0\t0\t0\t0\t0\t\t\t\n"	/* 10 */
		  "x\thigh\t-5\t0\t0\t0\t0\t0\t0\t\t\n"		/* 11 */
		  "\n"						/* 12 */
		  LINE_ALICE					/* 13 */
		  LINE_BOB
		  LINE_CAROL);
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 3);
	cr_assert_eq(result.snapshot_lines_skipped, 11);
	cr_assert_eq(result.snapshot_first_skipped_line, 3);
	cr_assert_null(result.snapshot_corrupt_error);
	cr_assert_eq(queue_count(), 3);

	user = dovewarden_queue_lookup(queue, "bob");
	cr_assert_not_null(user);
	cr_assert_eq(user->priority, LOW);
	cr_assert_eq(user->last_update, 1700000001);
	cr_assert_eq(user->last_fast_sync, 5);
	cr_assert_eq(user->last_full_sync, 4);
	cr_assert_eq(user->last_successful_sync, 3);
	cr_assert_eq(user->consecutive_failures, 2);
	cr_assert_eq(user->next_try, 1700000100);
	cr_assert(user->force_full_sync);
	cr_assert_str_eq(user->state, "");
	cr_assert_str_eq(user->last_error, "err");
	user = dovewarden_queue_lookup(queue, "alice");
	cr_assert_str_eq(user->state, "st");
	cr_assert(user->last_error == NULL || user->last_error[0] == '\0');
}

Test(store, corrupt_records_kept_in_quarantine)
{
	struct dovewarden_store_load_result result;
	const char *expected;

	write_str(db_path,
		  "dovewarden-db\t1\n"
		  LINE_ALICE
		  "x\turgent\t0\t0\t0\t0\t0\t0\t0\t\\ttab\t\n"	/* 3 */
		  LINE_BOB);
	write_str(journal_path,
		  "N\tcarol\thigh\n"
		  "N\tdave\turgent\n"				/* 2 */
		  "N\tev");					/* 3 */
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 2);
	cr_assert_eq(result.snapshot_lines_skipped, 1);
	cr_assert_eq(result.journal_lines_skipped, 2);
	cr_assert_eq(result.records_quarantined, 3);
	cr_assert_eq(result.records_not_quarantined, 0);
	cr_assert_null(result.quarantine_error);
	cr_assert_str_eq(result.quarantine_path, quarantine_path);
	expected = t_strconcat(
		db_path, "\t3\tunknown priority\t"
		"x\001turgent\001t0\001t0\001t0\001t0\001t0\001t0\001t0"
		"\001t\\ttab\001t\n",
		journal_path, "\t2\tunknown priority\t"
		"N\001tdave\001turgent\n",
		journal_path, "\t3\tlast line without LF\t\n", NULL);
	cr_assert_str_eq(read_str(quarantine_path), expected);

	/* a save drops them from the state files, not from the
	   quarantine */
	save();
	restart(&result, T0);
	cr_assert_eq(result.snapshot_lines_skipped, 0);
	cr_assert_eq(result.journal_lines_skipped, 0);
	cr_assert_eq(result.records_quarantined, 0);
	cr_assert_null(result.quarantine_path);
	cr_assert_str_eq(read_str(quarantine_path), expected);
}

Test(store, quarantine_full_drops_records)
{
	struct dovewarden_store_load_result result;

	write_str(db_path, "dovewarden-db\t1\n" LINE_ALICE "bad\tline\n"
		  "worse\n");
	write_str(quarantine_path, "");
	cr_assert_eq(truncate(quarantine_path,
			      DOVEWARDEN_STORE_QUARANTINE_MAX_SIZE - 10), 0);
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 1);
	cr_assert_eq(result.snapshot_lines_skipped, 2);
	cr_assert_eq(result.records_quarantined, 0);
	cr_assert_eq(result.records_not_quarantined, 2);
	cr_assert_not_null(result.quarantine_error);
	cr_assert_eq(file_size(quarantine_path),
		     DOVEWARDEN_STORE_QUARANTINE_MAX_SIZE - 10);
}

/* Times up to INT64_MAX used to load, and the queue's arithmetic on them
   overflowed */
Test(store, times_beyond_year_9999_are_corrupt)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;

	write_str(db_path,
		  "dovewarden-db\t2\n"
		  "max\thigh\t253402300799\t0\t0\t0\t0\t253402300799\t0"
		  "\t\t\t0\t0\t253402300799\t0\n"
		  "a\thigh\t9223372036854775807\t0\t0\t0\t0\t0\t0\t\t\t0\t0"
		  "\t0\t0\n"
		  "b\thigh\t0\t0\t0\t0\t0\t253402300800\t0\t\t\t0\t0\t0\t0\n"
		  "c\thigh\t0\t0\t0\t0\t0\t0\t0\t\t\t0\t0\t0"
		  "\t9223372036854775807\n"
		  "d\thigh\t0\t0\t9223372036854775807\t0\t0\t0\t0\t\t\t0\t0"
		  "\t0\t0\n");
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 1);
	cr_assert_eq(result.snapshot_lines_skipped, 4);
	cr_assert_eq(result.records_quarantined, 4);
	user = dovewarden_queue_lookup(queue, "max");
	cr_assert_not_null(user);
	cr_assert_eq(user->last_verified, DOVEWARDEN_STORE_MAX_TIME);
	/* the queue can schedule it */
	(void)dovewarden_queue_next_due(queue);
	(void)dovewarden_queue_pop(queue, T0);
}

Test(store, version_1_file_loads)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;

	settle_delay_secs = 10;
	write_str(db_path, "dovewarden-db\t1\n" LINE_ALICE LINE_BOB
		  /* a version 2 line does not belong in a version 1 file */
		  "carol\tnone\t0\t0\t0\t0\t0\t0\t0\t\t\t1\t2\t3\t4\n");
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 2);
	cr_assert_eq(result.snapshot_lines_skipped, 1);
	cr_assert_null(result.snapshot_corrupt_error);
	user = dovewarden_queue_lookup(queue, "alice");
	cr_assert_not_null(user);
	cr_assert_str_eq(user->state, "st");
	cr_assert_eq(user->settle_first_change, 0);
	cr_assert_eq(user->last_verified, 0);
	cr_assert_eq(user->last_repaired, 0);
	user = dovewarden_queue_lookup(queue, "bob");
	cr_assert_not_null(user);
	cr_assert_eq(user->consecutive_failures, 2);

	/* the next save writes version 2 */
	save();
	cr_assert(str_begins_with(read_str(db_path), HEADER_WRITTEN));
}

Test(store, version_2_bad_lines_skipped)
{
	struct dovewarden_store_load_result result;

	write_str(db_path, "dovewarden-db\t2\n"
		  /* version 1 field count */
		  LINE_ALICE
		  "bob\tnone\t0\t0\t0\t0\t0\t0\t0\t\t\tx\t0\t0\t0\n"
		  "bob\tnone\t0\t0\t0\t0\t0\t0\t0\t\t\t0\t0\t0\t-1\n"
		  "carol\tnone\t0\t0\t0\t0\t0\t0\t0\t\t\t0\t0\t5\t6\n");
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 1);
	cr_assert_eq(result.snapshot_lines_skipped, 3);
	cr_assert_eq(result.snapshot_first_skipped_line, 2);
	cr_assert_eq(dovewarden_queue_lookup(queue, "carol")->last_verified,
		     5);
	cr_assert_eq(dovewarden_queue_lookup(queue, "carol")->last_repaired,
		     6);
}

Test(store, truncated_last_line)
{
	struct dovewarden_store_load_result result;

	write_str(db_path, "dovewarden-db\t1\n" LINE_ALICE
		  "bob\tlow\t1700000001\t5\t4\t3\t2\t1700000100\t1\t\terr");
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 1);
	cr_assert_eq(result.snapshot_lines_skipped, 1);
	cr_assert_eq(result.snapshot_first_skipped_line, 3);
	cr_assert_null(dovewarden_queue_lookup(queue, "bob"));
}

Test(store, overlong_line_skipped)
{
	size_t long_len = DOVEWARDEN_STORE_MAX_LINE_LENGTH + 1000;
	string_t *data = str_new(default_pool, long_len + 1024);
	struct dovewarden_store_load_result result;

	str_append(data, "dovewarden-db\t1\n" LINE_ALICE "x\thigh");
	while (str_len(data) < long_len)
		str_append_c(data, 'y');
	str_append(data, "\n" LINE_BOB);
	write_file(db_path, str_data(data), str_len(data));
	str_free(&data);

	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 2);
	cr_assert_eq(result.snapshot_lines_skipped, 1);
	cr_assert_eq(result.snapshot_first_skipped_line, 3);
	cr_assert_not_null(dovewarden_queue_lookup(queue, "bob"));
}

static void check_corrupt_file(const char *contents)
{
	struct dovewarden_store_load_result result;

	write_str(db_path, contents);
	write_str(journal_path, "N\tdave\thigh\n");
	restart(&result, T0);
	cr_assert_not_null(result.snapshot_corrupt_error);
	cr_assert_str_eq(result.snapshot_corrupt_path, corrupt_path);
	cr_assert_eq(result.users_loaded, 0);
	/* the journal still counts */
	cr_assert_eq(result.journal_lines_replayed, 1);
	cr_assert_eq(queue_count(), 1);
	cr_assert(!file_exists(db_path));
	cr_assert_str_eq(read_str(corrupt_path), contents);

	/* a save does not touch the corrupt copy */
	save();
	cr_assert_str_eq(read_str(corrupt_path), contents);
	restart(&result, T0);
	cr_assert_null(result.snapshot_corrupt_error);
	cr_assert_eq(result.users_loaded, 1);
	cr_assert_not_null(dovewarden_queue_lookup(queue, "dave"));
}

Test(store, bad_header)
{
	check_corrupt_file("garbage\n" LINE_ALICE);
}

Test(store, future_version)
{
	check_corrupt_file("dovewarden-db\t3\n" LINE_ALICE);
}

Test(store, header_with_writer_loads_and_names_it)
{
	struct dovewarden_store_load_result result;

	write_str(db_path, "dovewarden-db\t1\tdovewarden 9.9 on\001 "
		  "Dovecot 2.5\n" LINE_ALICE);
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 1);
	/* sanitized: it goes into a log line */
	cr_assert(str_begins_with(result.snapshot_writer, "dovewarden 9.9 on"));
	cr_assert_null(strchr(result.snapshot_writer, '\001'));
	/* saved again with this build's header */
	save();
	cr_assert(str_begins_with(read_str(db_path), HEADER_WRITTEN));
	/* a header before the writer field names none */
	write_str(db_path, "dovewarden-db\t2\n");
	restart(&result, T0);
	cr_assert_null(result.snapshot_writer);
}

Test(store, header_with_unknown_fields)
{
	check_corrupt_file("dovewarden-db\t2\twriter\tmore\n" LINE_ALICE);
}

Test(store, empty_file)
{
	check_corrupt_file("");
}

Test(store, header_without_lf)
{
	check_corrupt_file("dovewarden-db\t1");
}

Test(store, journal_replay_after_kill)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;
	const char *error;

	/* an old snapshot, then changes that only the journal has */
	(void)dovewarden_queue_add(queue, "alice", T0);
	(void)dovewarden_queue_add(queue, "bob", T0);
	save();
	journal_notify("alice", HIGH, T0 + 1);
	journal_notify("new user ", LOW, T0 + 2);
	journal_notify("new user ", SYNC, T0 + 3);
	cr_assert_eq(dovewarden_store_journal_force_full_sync(
			     store, queue, "bob", LOW, &error), 0);
	dovewarden_queue_force_full_sync(
		queue, dovewarden_queue_lookup(queue, "bob"), LOW, T0 + 4);

	/* kill -9: nothing saved since */
	restart(&result, T0 + 100);
	cr_assert_eq(result.users_loaded, 2);
	cr_assert_eq(result.journal_lines_replayed, 4);
	cr_assert_eq(result.journal_lines_skipped, 0);
	cr_assert_eq(queue_count(), 3);
	cr_assert_eq(dovewarden_queue_lookup(queue, "alice")->priority, HIGH);
	cr_assert_eq(dovewarden_queue_lookup(queue, "new user ")->priority,
		     SYNC);
	user = dovewarden_queue_lookup(queue, "bob");
	cr_assert_eq(user->priority, LOW);
	cr_assert(user->force_full_sync);

	/* all three are due now, the most urgent first */
	user = dovewarden_queue_pop(queue, T0 + 100);
	cr_assert_str_eq(user->username, "new user ");
	user = dovewarden_queue_pop(queue, T0 + 100);
	cr_assert_str_eq(user->username, "alice");
	user = dovewarden_queue_pop(queue, T0 + 100);
	cr_assert_str_eq(user->username, "bob");
	cr_assert(user->syncing_full);
}

/* A restart resumes from the last sync results: a new user's first full
   sync, a settle full sync and the state they returned are not redone
   (they were, before sync results were journaled) */
Test(store, sync_results_survive_kill)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;
	const char *error = NULL;

	settle_delay_secs = 10;
	dovewarden_queue_deinit(&queue);
	queue = queue_new();
	(void)dovewarden_queue_add(queue, "bob", T0);
	save();
	/* new user: first sync is full */
	journal_notify("new user", HIGH, T0 + 1);
	user = dovewarden_queue_pop(queue, T0 + 1);
	cr_assert_str_eq(user->username, "new user");
	cr_assert(user->syncing_full);
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "state\t1", NULL, T0 + 2);
	cr_assert_eq(dovewarden_store_journal_user(store, queue, "new user",
						   &error), 0, "%s", error);
	/* bob fails: its back-off survives */
	journal_notify("bob", LOW, T0 + 3);
	user = dovewarden_queue_pop(queue, T0 + 3);
	cr_assert_str_eq(user->username, "bob");
	dovewarden_queue_sync_finished(queue, user,
				       DOVEWARDEN_SYNC_RESULT_TEMPFAIL, NULL,
				       "peer down", T0 + 4);
	cr_assert_eq(dovewarden_store_journal_user(store, queue, "bob",
						   &error), 0, "%s", error);
	/* and a change after the result is replayed on top of it */
	journal_notify("new user", LOW, T0 + 5);

	restart(&result, T0 + 6);
	cr_assert_eq(result.journal_lines_replayed, 5);
	user = dovewarden_queue_lookup(queue, "new user");
	cr_assert_not_null(user);
	cr_assert_str_eq(user->state, "state\t1");
	cr_assert_eq(user->last_full_sync, T0 + 1);
	cr_assert_eq(user->last_verified, T0 + 1);
	cr_assert_eq(user->priority, LOW);
	cr_assert(!user->force_full_sync);
	user = dovewarden_queue_pop(queue, T0 + 6);
	cr_assert_str_eq(user->username, "new user");
	cr_assert(!user->syncing_full, "the first full sync was redone");
	user = dovewarden_queue_lookup(queue, "bob");
	cr_assert_eq(user->consecutive_failures, 1);
	cr_assert_str_eq(user->last_error, "peer down");
	cr_assert_gt(user->next_try, T0 + 4);

	/* a user forgotten after its sync (NOUSER) stays forgotten */
	user = dovewarden_queue_pop(queue, user->next_try);
	cr_assert_str_eq(user->username, "bob");
	dovewarden_queue_sync_finished(queue, user,
				       DOVEWARDEN_SYNC_RESULT_NOUSER, NULL,
				       NULL, user->next_try);
	cr_assert_eq(dovewarden_store_journal_user(store, queue, "bob",
						   &error), 0, "%s", error);
	restart(&result, T0 + 3600);
	cr_assert_null(dovewarden_queue_lookup(queue, "bob"));
}

/* A real kill -9: a child accepts notifications (saving a snapshot half
   way), tells the parent how many, and is killed without any cleanup. */
Test(store, kill_9_loses_nothing)
{
	const unsigned int count = 1000;
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;
	unsigned int i, accepted = 0;
	int fds[2], status;
	pid_t pid;

	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		i_close_fd(&fds[0]);
		for (i = 0; i < count; i++) T_BEGIN {
			journal_notify(t_strdup_printf("u%u ", i),
				       i % 2 == 0 ? LOW : HIGH, T0 + i);
			if (i == count / 2)
				save();
		} T_END;
		if (write(fds[1], &i, sizeof(i)) != sizeof(i))
			_exit(1);
		for (;;)
			pause();
	}
	i_close_fd(&fds[1]);
	cr_assert_eq(read(fds[0], &accepted, sizeof(accepted)),
		     sizeof(accepted));
	cr_assert_eq(accepted, count);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	i_close_fd(&fds[0]);

	restart(&result, T0 + count);
	cr_assert_eq(result.users_loaded, count / 2 + 1);
	cr_assert_eq(result.journal_lines_replayed, count / 2 - 1);
	cr_assert_eq(queue_count(), count);
	for (i = 0; i < count; i++) T_BEGIN {
		user = dovewarden_queue_lookup(queue,
					       t_strdup_printf("u%u ", i));
		cr_assert_not_null(user, "u%u lost", i);
		cr_assert_eq(user->priority, i % 2 == 0 ? LOW : HIGH);
	} T_END;
	for (i = 0; i < count; i++)
		cr_assert_not_null(dovewarden_queue_pop(queue, T0 + count));
}

Test(store, journal_dedupes)
{
	struct dovewarden_user *user;
	const char *error;
	const char *expected = "N\talice\tlow\nN\talice\thigh\n";

	journal_notify("alice", LOW, T0);
	journal_notify("alice", LOW, T0 + 1);
	journal_notify("alice", HIGH, T0 + 2);
	journal_notify("alice", LOW, T0 + 3);
	journal_notify("alice", HIGH, T0 + 4);
	cr_assert_str_eq(read_str(journal_path), expected);

	/* a sync started: the next change is not covered any more */
	user = dovewarden_queue_pop(queue, T0 + 5);
	cr_assert_not_null(user);
	journal_notify("alice", LOW, T0 + 6);
	cr_assert_str_eq(read_str(journal_path),
			 t_strconcat(expected, "N\talice\tlow\n", NULL));
	dovewarden_queue_sync_finished(queue, user, DOVEWARDEN_SYNC_RESULT_OK,
				       "s", NULL, T0 + 7);

	/* force full sync: once, until it is done */
	cr_assert_eq(dovewarden_store_journal_force_full_sync(
			     store, queue, "alice", LOW, &error), 0);
	dovewarden_queue_force_full_sync(queue, user, LOW, T0 + 8);
	cr_assert_eq(dovewarden_store_journal_force_full_sync(
			     store, queue, "alice", LOW, &error), 0);
	cr_assert_str_eq(read_str(journal_path),
			 t_strconcat(expected, "N\talice\tlow\n",
				     "F\talice\tlow\n", NULL));
}

Test(store, save_truncates_journal)
{
	struct dovewarden_store_load_result result;

	journal_notify("alice", HIGH, T0);
	journal_notify("bob", LOW, T0);
	cr_assert_gt(file_size(journal_path), 0);
	save();
	cr_assert_eq(file_size(journal_path), 0);

	/* appending goes on at the start of the emptied file */
	journal_notify("carol", SYNC, T0);
	cr_assert_str_eq(read_str(journal_path), "N\tcarol\tsync\n");

	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 2);
	cr_assert_eq(result.journal_lines_replayed, 1);
	cr_assert_eq(dovewarden_queue_lookup(queue, "alice")->priority, HIGH);
	cr_assert_eq(dovewarden_queue_lookup(queue, "bob")->priority, LOW);
	cr_assert_eq(dovewarden_queue_lookup(queue, "carol")->priority, SYNC);
}

Test(store, journal_corrupt_and_partial_lines)
{
	struct dovewarden_store_load_result result;

	write_str(journal_path,
		  "N\tbob\thigh\n"
		  "X\tbob\thigh\n"
		  "N\t\thigh\n"
		  "N\tbob\turgent\n"
		  "N\tbob\n"
		  "N\tdave\tlow\n"
		  "N\tal");
	restart(&result, T0);
	cr_assert_eq(result.journal_lines_replayed, 2);
	cr_assert_eq(result.journal_lines_skipped, 5);
	cr_assert_eq(result.journal_first_skipped_line, 2);
	cr_assert_eq(queue_count(), 2);

	/* a new append must not be glued to the partial line */
	journal_notify("carol", LOW, T0);
	restart(&result, T0);
	cr_assert_eq(result.journal_lines_replayed, 3);
	cr_assert_eq(result.journal_lines_skipped, 5);
	cr_assert_not_null(dovewarden_queue_lookup(queue, "carol"));
}

Test(store, journal_write_error)
{
	const char *error = NULL;

	cr_assert_eq(mkdir(t_strconcat(tmpdir, "/state", NULL), 0700), 0);
	cr_assert_eq(symlink("/dev/full", journal_path), 0);
	cr_assert_eq(dovewarden_store_journal_notify(store, queue, "alice",
						     HIGH, &error), -1);
	cr_assert_not_null(error);
	/* the same change is tried again: it is still not covered */
	(void)dovewarden_queue_notify(queue, "alice", HIGH, T0);
	cr_assert_eq(dovewarden_store_journal_notify(store, queue, "bob",
						     HIGH, &error), -1);
}

Test(store, stale_tmp_file)
{
	struct dovewarden_store_load_result result;
	const char *victim = t_strconcat(tmpdir, "/victim", NULL);

	write_str(victim, "keep");
	write_str(tmp_path, "stale half-written snapshot");
	(void)dovewarden_queue_notify(queue, "alice", HIGH, T0);
	save();
	cr_assert(!file_exists(tmp_path));

	/* a planted symlink is replaced, not written through */
	cr_assert_eq(symlink(victim, tmp_path), 0);
	save();
	cr_assert(!file_exists(tmp_path));
	cr_assert_str_eq(read_str(victim), "keep");

	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 1);
	cr_assert_not_null(dovewarden_queue_lookup(queue, "alice"));
}

Test(store, save_error_keeps_old_snapshot)
{
	const char *error = NULL;

	(void)dovewarden_queue_notify(queue, "alice", HIGH, T0);
	save();
	/* a directory in the way of the temporary file */
	cr_assert_eq(mkdir(tmp_path, 0700), 0);
	cr_assert_eq(mkdir(t_strconcat(tmp_path, "/x", NULL), 0700), 0);
	(void)dovewarden_queue_notify(queue, "bob", HIGH, T0);
	cr_assert_eq(dovewarden_store_save(store, queue, &error), -1);
	cr_assert_not_null(error);
	cr_assert_str_eq(read_str(db_path), HEADER_WRITTEN
			 "alice\thigh\t1700000000\t0\t0\t0\t0\t0\t0\t\t"
			 "\t0\t0\t0\t0\n");
}

Test(store, unreadable_snapshot_fails)
{
	struct dovewarden_store_load_result result;
	const char *error = NULL;

	/* a directory where the snapshot should be: read fails */
	cr_assert_eq(mkdir(t_strconcat(tmpdir, "/state", NULL), 0700), 0);
	cr_assert_eq(mkdir(db_path, 0700), 0);
	cr_assert_eq(dovewarden_store_load(store, queue, T0, &result,
					   &error), -1);
	cr_assert_not_null(error);
	cr_assert(file_exists(db_path));
}

/* Make count users pending, half LOW and half HIGH */
static void notify_many_users(unsigned int count)
{
	unsigned int i;

	T_BEGIN {
		for (i = 0; i < count; i++) {
			(void)dovewarden_queue_notify(
				queue, t_strdup_printf("user%u@example.com", i),
				i % 2 == 0 ? LOW : HIGH, T0 + i);
		}
	} T_END;
}

Test(store, many_users)
{
	const unsigned int count = 100000;
	struct dovewarden_store_load_result result;

	notify_many_users(count);
	save();
	restart(&result, T0 + count);
	cr_assert_eq(result.users_loaded, count);
	cr_assert_eq(queue_count(), count);
}

/* Background saves */

static unsigned int bg_calls;
static int bg_ret;
static char *bg_error;

static void bg_callback(int ret, const char *error, void *context)
{
	cr_assert_null(context);
	bg_calls++;
	bg_ret = ret;
	i_free(bg_error);
	bg_error = i_strdup(error);
	io_loop_stop(ioloop);
}

static void bg_timeout(void *context ATTR_UNUSED)
{
	cr_assert_fail("background save did not finish");
}

static void bg_start(void)
{
	const char *error = NULL;

	cr_assert(!dovewarden_store_save_is_running(store));
	cr_assert_eq(dovewarden_store_save_background(store, queue,
						      bg_callback, NULL,
						      &error), 0,
		     "background save: %s", error);
	cr_assert(dovewarden_store_save_is_running(store));
}

/* Run the ioloop until the running background save is done; returns
   its result */
static int bg_finish(void)
{
	unsigned int calls = bg_calls;
	struct timeout *to;

	to = timeout_add(30 * 1000, bg_timeout, NULL);
	io_loop_run(ioloop);
	timeout_remove(&to);
	cr_assert_eq(bg_calls, calls + 1);
	cr_assert(!dovewarden_store_save_is_running(store));
	return bg_ret;
}

static void bg_save(void)
{
	bg_start();
	cr_assert_eq(bg_finish(), 0, "background save: %s", bg_error);
}

/* Load the files into a new queue, as a restarted service would, while
   this one goes on; returns the number of users */
static unsigned int load_copy(const char *const *usernames)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_store *store2;
	struct dovewarden_queue *queue2;
	struct dovewarden_queue_stats stats;
	const char *error = NULL;
	unsigned int i;

	queue2 = queue_new();
	store2 = dovewarden_store_init(db_path);
	cr_assert_eq(dovewarden_store_load(store2, queue2, T0, &result,
					   &error), 0, "load: %s", error);
	cr_assert_eq(result.snapshot_lines_skipped, 0);
	cr_assert_eq(result.journal_lines_skipped, 0);
	for (i = 0; usernames[i] != NULL; i++) {
		cr_assert_not_null(dovewarden_queue_lookup(queue2,
							   usernames[i]),
				   "%s lost", usernames[i]);
	}
	dovewarden_queue_get_stats(queue2, T0, &stats);
	dovewarden_store_deinit(&store2);
	dovewarden_queue_deinit(&queue2);
	return stats.users;
}

static void bg_fini(void)
{
	i_free_and_null(bg_error);
}

Test(store, background_round_trip, .fini = bg_fini)
{
	struct dovewarden_store_load_result result;
	struct dovewarden_user *user;
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(hostile_names); i++)
		journal_notify(hostile_names[i], i % 2 == 0 ? LOW : SYNC,
			       T0 + i);
	bg_save();
	cr_assert(!file_exists(journal_old_path));
	cr_assert(!file_exists(tmp_path));
	cr_assert(!file_exists(journal_path));

	restart(&result, T0 + 100);
	cr_assert_eq(result.users_loaded, N_ELEMENTS(hostile_names));
	cr_assert_eq(result.journal_lines_replayed, 0);
	for (i = 0; i < N_ELEMENTS(hostile_names); i++) {
		user = dovewarden_queue_lookup(queue, hostile_names[i]);
		cr_assert_not_null(user);
		cr_assert_eq(user->priority, i % 2 == 0 ? LOW : SYNC);
	}
}

/* Changes made while the child writes survive a kill -9 at any point:
   before the child is done, and after it but before the parent noticed */
Test(store, background_rotation_survives_crash, .fini = bg_fini)
{
	static const char *const all[] = { "alice", "bob", "carol", NULL };
	struct dovewarden_store_load_result result;
	siginfo_t info;

	journal_notify("alice", LOW, T0);
	save();
	journal_notify("bob", HIGH, T0 + 1);
	bg_start();
	/* the journal was rotated before the fork */
	cr_assert_str_eq(read_str(journal_old_path), "N\tbob\thigh\n");
	cr_assert(!file_exists(journal_path));
	journal_notify("carol", SYNC, T0 + 2);
	cr_assert_str_eq(read_str(journal_path), "N\tcarol\tsync\n");
	cr_assert_eq(load_copy(all), 3);

	/* the child is done, its exit not yet seen */
	i_zero(&info);
	cr_assert_eq(waitid(P_ALL, 0, &info, WEXITED | WNOWAIT), 0);
	cr_assert_eq(info.si_code, CLD_EXITED);
	cr_assert_eq(info.si_status, 0);
	cr_assert(file_exists(journal_old_path));
	cr_assert_eq(load_copy(all), 3);

	cr_assert_eq(bg_finish(), 0, "background save: %s", bg_error);
	cr_assert(!file_exists(journal_old_path));
	cr_assert_str_eq(read_str(journal_path), "N\tcarol\tsync\n");

	restart(&result, T0 + 10);
	cr_assert_eq(result.users_loaded, 2);
	cr_assert_eq(result.journal_lines_replayed, 1);
	cr_assert_eq(dovewarden_queue_lookup(queue, "bob")->priority, HIGH);
	cr_assert_eq(dovewarden_queue_lookup(queue, "carol")->priority,
		     SYNC);
}

Test(store, background_failed_child_keeps_journal, .fini = bg_fini)
{
	static const char *const all[] = {
		"alice", "bob", "carol", "dave", NULL
	};
	static const char *const first[] = { "alice", "bob", "carol", NULL };
	struct dovewarden_store_load_result result;
	const char *snapshot;

	journal_notify("alice", LOW, T0);
	save();
	snapshot = t_strdup(read_str(db_path));
	journal_notify("bob", HIGH, T0 + 1);

	/* a directory in the way of the temporary file */
	cr_assert_eq(mkdir(tmp_path, 0700), 0);
	cr_assert_eq(mkdir(t_strconcat(tmp_path, "/x", NULL), 0700), 0);
	bg_start();
	journal_notify("carol", LOW, T0 + 2);
	cr_assert_eq(bg_finish(), -1);
	cr_assert_not_null(strstr(bg_error, tmp_path), "error: %s", bg_error);
	cr_assert_str_eq(read_str(db_path), snapshot);
	cr_assert_str_eq(read_str(journal_old_path), "N\tbob\thigh\n");
	cr_assert_eq(load_copy(first), 3);

	/* the next save does not rotate over the kept journal */
	cr_assert_eq(rmdir(t_strconcat(tmp_path, "/x", NULL)), 0);
	cr_assert_eq(rmdir(tmp_path), 0);
	bg_start();
	journal_notify("dave", LOW, T0 + 3);
	cr_assert_str_eq(read_str(journal_old_path), "N\tbob\thigh\n");
	cr_assert_str_eq(read_str(journal_path),
			 "N\tcarol\tlow\nN\tdave\tlow\n");
	cr_assert_eq(load_copy(all), 4);
	cr_assert_eq(bg_finish(), 0, "background save: %s", bg_error);
	cr_assert(!file_exists(journal_old_path));
	cr_assert_eq(load_copy(all), 4);

	/* and the one after that rotates again */
	bg_save();
	cr_assert(!file_exists(journal_old_path));
	cr_assert(!file_exists(journal_path));
	restart(&result, T0 + 10);
	cr_assert_eq(result.users_loaded, 4);
	cr_assert_eq(result.journal_lines_replayed, 0);
}

Test(store, background_journal_old_replayed, .fini = bg_fini)
{
	struct dovewarden_store_load_result result;

	write_str(journal_old_path, "N\tbob\thigh\nN\tcarol\tlow\n");
	write_str(journal_path, "N\tcarol\tsync\nX\n");
	restart(&result, T0);
	cr_assert_eq(result.journal_lines_replayed, 3);
	cr_assert_eq(result.journal_lines_skipped, 1);
	cr_assert_eq(result.journal_first_skipped_line, 2);
	cr_assert_str_eq(result.journal_first_skipped_path, journal_path);
	cr_assert_eq(dovewarden_queue_lookup(queue, "bob")->priority, HIGH);
	cr_assert_eq(dovewarden_queue_lookup(queue, "carol")->priority,
		     SYNC);

	/* a synchronous save covers both journals */
	save();
	cr_assert(!file_exists(journal_old_path));
	cr_assert_eq(file_size(journal_path), 0);
	restart(&result, T0);
	cr_assert_eq(result.users_loaded, 2);
	cr_assert_eq(result.journal_lines_replayed, 0);
}

Test(store, background_waited_for, .fini = bg_fini)
{
	struct dovewarden_store_load_result result;

	journal_notify("alice", LOW, T0);
	bg_start();
	journal_notify("bob", HIGH, T0 + 1);
	/* a synchronous save waits for the running one */
	save();
	cr_assert_eq(bg_calls, 1);
	cr_assert_eq(bg_ret, 0);
	cr_assert(!dovewarden_store_save_is_running(store));
	cr_assert(!file_exists(journal_old_path));
	cr_assert_eq(file_size(journal_path), 0);

	/* and so does deinit */
	journal_notify("carol", LOW, T0 + 2);
	bg_start();
	dovewarden_store_deinit(&store);
	cr_assert_eq(bg_calls, 2);
	cr_assert_eq(bg_ret, 0);
	store = dovewarden_store_init(db_path);
	restart(&result, T0 + 10);
	cr_assert_eq(result.users_loaded, 3);
	cr_assert_eq(result.journal_lines_replayed, 0);
}

Test(store, background_many_users, .fini = bg_fini)
{
	const unsigned int count = 100000;
	struct dovewarden_store_load_result result;
	unsigned int i;

	notify_many_users(count);
	bg_start();
	/* the parent changes its queue while the child writes */
	T_BEGIN {
		for (i = 0; i < 1000; i++) {
			journal_notify(t_strdup_printf("new%u", i), SYNC,
				       T0 + i);
		}
	} T_END;
	cr_assert_eq(bg_finish(), 0, "background save: %s", bg_error);
	restart(&result, T0 + count);
	cr_assert_eq(result.users_loaded + result.journal_lines_replayed,
		     count + 1000);
	cr_assert_eq(queue_count(), count + 1000);
}
