/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "strescape.h"
#include "dovewarden-compat.h"
#include "dovewarden-queue.h"
#include "dovewarden-admin-protocol.h"

#include <criterion/criterion.h>

static void suite_init(void)
{
	lib_init();
}

static void suite_fini(void)
{
	lib_deinit();
}

TestSuite(admin_protocol, .init = suite_init, .fini = suite_fini);

/* Strip the one trailing LF, check there is no other one, and split. */
static const char *const *split_line(const char *data, size_t len)
{
	cr_assert_gt(len, 0);
	cr_assert_eq(data[len - 1], '\n');
	cr_assert_null(memchr(data, '\n', len - 1),
		       "unescaped LF inside the line");
	return t_strsplit_tabescaped(t_strndup(data, len - 1));
}

static const char *const *split_str(string_t *str)
{
	return split_line(str_c(str), str_len(str));
}

static const char *const odd_names[] = {
	"alice",
	"space here",
	"quote\"here",
	"j\xc3\xbcrgen@example.com",
	"trailing\\",
};

Test(admin_protocol, replicate_round_trip)
{
	struct dovewarden_admin_request req;
	enum dovewarden_priority p;
	const char *error;
	unsigned int i;
	string_t *str = t_str_new(128);

	for (i = 0; i < N_ELEMENTS(odd_names); i++) {
		for (p = DOVEWARDEN_PRIORITY_LOW;
		     p < DOVEWARDEN_PRIORITY_COUNT; p++) {
			str_truncate(str, 0);
			dovewarden_admin_append_replicate(str, p, (p % 2) == 0,
							  odd_names[i]);
			cr_assert_eq(dovewarden_admin_parse_request(
				split_str(str), &req, &error), 0, "%s", error);
			cr_assert_eq(req.cmd, DOVEWARDEN_ADMIN_CMD_REPLICATE);
			cr_assert_eq(req.priority, p);
			cr_assert_eq(req.full_sync, (p % 2) == 0);
			cr_assert_str_eq(req.mask, odd_names[i]);
		}
	}
}

Test(admin_protocol, other_requests_round_trip)
{
	struct dovewarden_admin_request req;
	const char *error;
	unsigned int i;
	string_t *str = t_str_new(128);

	dovewarden_admin_append_status(str, NULL);
	cr_assert_str_eq(str_c(str), "STATUS\n");
	cr_assert_eq(dovewarden_admin_parse_request(split_str(str), &req,
						    &error), 0);
	cr_assert_eq(req.cmd, DOVEWARDEN_ADMIN_CMD_STATUS);
	cr_assert_null(req.mask);

	str_truncate(str, 0);
	dovewarden_admin_append_status_dsync(str);
	cr_assert_eq(dovewarden_admin_parse_request(split_str(str), &req,
						    &error), 0);
	cr_assert_eq(req.cmd, DOVEWARDEN_ADMIN_CMD_STATUS_DSYNC);

	for (i = 0; i < N_ELEMENTS(odd_names); i++) {
		str_truncate(str, 0);
		dovewarden_admin_append_status(str, odd_names[i]);
		cr_assert_eq(dovewarden_admin_parse_request(split_str(str),
							    &req, &error), 0);
		cr_assert_eq(req.cmd, DOVEWARDEN_ADMIN_CMD_STATUS_USERS);
		cr_assert_str_eq(req.mask, odd_names[i]);

		str_truncate(str, 0);
		dovewarden_admin_append_add(str, odd_names[i]);
		cr_assert_eq(dovewarden_admin_parse_request(split_str(str),
							    &req, &error), 0);
		cr_assert_eq(req.cmd, DOVEWARDEN_ADMIN_CMD_ADD);
		cr_assert_str_eq(req.mask, odd_names[i]);

		str_truncate(str, 0);
		dovewarden_admin_append_remove(str, odd_names[i]);
		cr_assert_eq(dovewarden_admin_parse_request(split_str(str),
							    &req, &error), 0);
		cr_assert_eq(req.cmd, DOVEWARDEN_ADMIN_CMD_REMOVE);
		cr_assert_str_eq(req.mask, odd_names[i]);
	}
}

Test(admin_protocol, masks)
{
	struct dovewarden_admin_request req;
	const char *error;
	const char *const args[] = { "STATUS", "user*@example.?om", NULL };

	cr_assert(dovewarden_admin_is_mask("*"));
	cr_assert(dovewarden_admin_is_mask("a?c"));
	cr_assert(!dovewarden_admin_is_mask("alice"));
	cr_assert_eq(dovewarden_admin_parse_request(args, &req, &error), 0);
	cr_assert_str_eq(req.mask, "user*@example.?om");
}

static const char *repeat_char(char c, size_t count)
{
	char *str = t_malloc0(count + 1);

	memset(str, c, count);
	return str;
}

Test(admin_protocol, invalid_requests)
{
	const char *long_name = repeat_char('a',
					    DOVEWARDEN_USERNAME_MAX_LENGTH + 1);
	const char *long_mask = t_strconcat("*", long_name, NULL);
	const char *const *const bad[] = {
		(const char *const[]){ NULL },
		(const char *const[]){ "", NULL },
		(const char *const[]){ "NOPE", NULL },
		(const char *const[]){ "status", NULL },
		(const char *const[]){ "STATUS", "a", "b", NULL },
		(const char *const[]){ "STATUS", "", NULL },
		(const char *const[]){ "STATUS", "\xff", NULL },
		(const char *const[]){ "STATUS", long_mask, NULL },
		(const char *const[]){ "STATUS-DSYNC", "x", NULL },
		(const char *const[]){ "REPLICATE", NULL },
		(const char *const[]){ "REPLICATE", "low", "", NULL },
		(const char *const[]){ "REPLICATE", "low", "", "a", "b", NULL },
		(const char *const[]){ "REPLICATE", "none", "", "a", NULL },
		(const char *const[]){ "REPLICATE", "urgent", "", "a", NULL },
		(const char *const[]){ "REPLICATE", "", "", "a", NULL },
		(const char *const[]){ "REPLICATE", "low", "x", "a", NULL },
		(const char *const[]){ "REPLICATE", "low", "fx", "a", NULL },
		(const char *const[]){ "REPLICATE", "low", "", "", NULL },
		(const char *const[]){ "REPLICATE", "low", "", "\xc3", NULL },
		(const char *const[]){ "REPLICATE", "low", "", long_name,
				       NULL },
		(const char *const[]){ "ADD", NULL },
		(const char *const[]){ "ADD", "", NULL },
		(const char *const[]){ "ADD", "a", "b", NULL },
		(const char *const[]){ "REMOVE", NULL },
		(const char *const[]){ "REMOVE", "", NULL },
		(const char *const[]){ "REMOVE", "a", "b", NULL },
		(const char *const[]){ "REMOVE", long_name, NULL },
	};
	struct dovewarden_admin_request req;
	const char *error;
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(bad); i++) {
		error = NULL;
		cr_assert_eq(dovewarden_admin_parse_request(bad[i], &req,
							    &error), -1,
			     "request %u accepted", i);
		cr_assert_not_null(error);
		/* the error never quotes the input */
		cr_assert_null(strstr(error, "\xff"));
		cr_assert_null(strstr(error, "aaaa"));
	}
}

Test(admin_protocol, stats_lines)
{
	const unsigned int values[] = {
		[DOVEWARDEN_ADMIN_STATUS_USERS] = 42,
		[DOVEWARDEN_ADMIN_STATUS_SYNCING] = 2,
		[DOVEWARDEN_ADMIN_STATUS_PENDING_LOW] = 3,
		[DOVEWARDEN_ADMIN_STATUS_PENDING_HIGH] = 4,
		[DOVEWARDEN_ADMIN_STATUS_PENDING_SYNC] = 5,
		[DOVEWARDEN_ADMIN_STATUS_FAILED] = 7,
		[DOVEWARDEN_ADMIN_STATUS_FAILED_WAITING] = 6,
		[DOVEWARDEN_ADMIN_STATUS_FULL_SYNC_DUE] = 8,
	};
	const unsigned int expected[] = { 5, 4, 3, 8, 7, 6, 2, 42 };
	const char *const *lines, *key, *value, *error;
	string_t *str = t_str_new(256);
	unsigned int i;

	static_assert_array_size(expected, DOVEWARDEN_ADMIN_STATUS_COUNT);
	dovewarden_admin_append_stats(str, values);
	/* ends with an empty line */
	cr_assert(str_len(str) > 2);
	cr_assert_str_eq(str_c(str) + str_len(str) - 2, "\n\n");
	lines = t_strsplit(t_strndup(str_c(str), str_len(str) - 2), "\n");
	cr_assert_eq(str_array_length(lines), DOVEWARDEN_ADMIN_STATUS_COUNT);
	for (i = 0; i < DOVEWARDEN_ADMIN_STATUS_COUNT; i++) {
		const char *const *args = t_strsplit_tabescaped(lines[i]);

		cr_assert_eq(dovewarden_admin_parse_stats_line(args, &key,
							       &value, &error),
			     0);
		cr_assert_str_eq(key, dovewarden_admin_status_keys[i]);
		cr_assert_str_eq(value, dec2str(expected[i]));
		cr_assert(!dovewarden_admin_is_error_line(args));
	}
}

Test(admin_protocol, user_status_round_trip)
{
	struct dovewarden_admin_user_status in, out;
	const char *error;
	unsigned int i;
	string_t *str = t_str_new(256);

	for (i = 0; i < N_ELEMENTS(odd_names); i++) {
		i_zero(&in);
		in.username = odd_names[i];
		in.priority = i % DOVEWARDEN_PRIORITY_COUNT;
		in.last_fast_sync = 1700000000 + i;
		in.last_full_sync = i == 0 ? 0 : 1600000000;
		in.last_successful_sync = 1500000000;
		in.last_verified = i == 0 ? 0 : 1400000000 + i;
		in.last_repaired = i == 1 ? 0 : 1300000000 + i;
		in.consecutive_failures = i;
		in.next_sync_secs = i == 1 ? -1 : (long long)i * 100;
		in.last_error = i == 2 ? "" : "Remote\tsaid:\nno";

		str_truncate(str, 0);
		dovewarden_admin_append_user_status(str, &in);
		cr_assert_eq(dovewarden_admin_parse_user_status(split_str(str),
								&out, &error),
			     0, "%s", error);
		cr_assert_str_eq(out.username, in.username);
		cr_assert_eq(out.priority, in.priority);
		cr_assert_eq(out.last_fast_sync, in.last_fast_sync);
		cr_assert_eq(out.last_full_sync, in.last_full_sync);
		cr_assert_eq(out.last_successful_sync,
			     in.last_successful_sync);
		cr_assert_eq(out.consecutive_failures,
			     in.consecutive_failures);
		cr_assert_eq(out.next_sync_secs, in.next_sync_secs);
		cr_assert_str_eq(out.last_error, in.last_error);
		cr_assert_eq(out.last_verified, in.last_verified);
		cr_assert_eq(out.last_repaired, in.last_repaired);
	}
}

Test(admin_protocol, user_status_from_older_service)
{
	struct dovewarden_admin_user_status out;
	const char *error;

	/* without last verified and last repaired */
	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "low", "1", "2", "3", "0", "",
				       "", NULL }, &out, &error), 0);
	cr_assert_eq(out.last_fast_sync, 1);
	cr_assert_eq(out.last_verified, 0);
	cr_assert_eq(out.last_repaired, 0);
	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "low", "1", "2", "3", "0", "",
				       "", "4", "5", NULL }, &out, &error), 0);
	cr_assert_eq(out.last_verified, 4);
	cr_assert_eq(out.last_repaired, 5);
	/* one of them alone, or a bad time */
	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "low", "1", "2", "3", "0", "",
				       "", "4", NULL }, &out, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "low", "1", "2", "3", "0", "",
				       "", "4", "x", NULL }, &out, &error), -1);
}

Test(admin_protocol, dsync_status_round_trip)
{
	struct dovewarden_admin_dsync_status in = {
		.username = "tab\tuser",
		.type = "incremental",
		.state = "waiting for\tdoveadm-server",
		.running_secs = 3661,
	}, out;
	const char *error;
	string_t *str = t_str_new(256);

	dovewarden_admin_append_dsync_status(str, &in);
	cr_assert_eq(dovewarden_admin_parse_dsync_status(split_str(str), &out,
							 &error), 0);
	cr_assert_str_eq(out.username, in.username);
	cr_assert_str_eq(out.type, in.type);
	cr_assert_str_eq(out.state, in.state);
	cr_assert_eq(out.running_secs, in.running_secs);
}

Test(admin_protocol, invalid_reply_lines)
{
	struct dovewarden_admin_user_status user;
	struct dovewarden_admin_dsync_status dsync;
	const char *key, *value, *error;

	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "low", "1", "2", "3", "0", "",
				       NULL }, &user, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "bad", "1", "2", "3", "0", "", "",
				       NULL }, &user, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "low", "x", "2", "3", "0", "", "",
				       NULL }, &user, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_user_status(
		(const char *const[]){ "u", "low", "1", "2", "3", "0", "-5",
				       "", NULL }, &user, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_dsync_status(
		(const char *const[]){ "u", "full", "x", NULL }, &dsync,
		&error), -1);
	cr_assert_eq(dovewarden_admin_parse_dsync_status(
		(const char *const[]){ "u", "full", "x", "-1", NULL }, &dsync,
		&error), -1);
	cr_assert_eq(dovewarden_admin_parse_stats_line(
		(const char *const[]){ "users", NULL }, &key, &value,
		&error), -1);
}

Test(admin_protocol, replies)
{
	const char *const *args, *error_msg, *error;
	string_t *str = t_str_new(64);
	bool success;
	int count;

	dovewarden_admin_append_ok(str, -1);
	cr_assert_str_eq(str_c(str), "+\n");
	cr_assert_eq(dovewarden_admin_parse_reply(split_str(str), &success,
						  &count, &error_msg, &error),
		     0);
	cr_assert(success);
	cr_assert_eq(count, -1);

	str_truncate(str, 0);
	dovewarden_admin_append_ok(str, 17);
	cr_assert_str_eq(str_c(str), "+\t17\n");
	cr_assert_eq(dovewarden_admin_parse_reply(split_str(str), &success,
						  &count, &error_msg, &error),
		     0);
	cr_assert(success);
	cr_assert_eq(count, 17);

	str_truncate(str, 0);
	dovewarden_admin_append_error(str, "User\tnot\nfound");
	args = split_str(str);
	cr_assert(dovewarden_admin_is_error_line(args));
	cr_assert_eq(dovewarden_admin_parse_reply(args, &success, &count,
						  &error_msg, &error), 0);
	cr_assert(!success);
	cr_assert_str_eq(error_msg, "User\tnot\nfound");

	cr_assert_eq(dovewarden_admin_parse_reply(
		(const char *const[]){ "+", "x", NULL }, &success, &count,
		&error_msg, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_reply(
		(const char *const[]){ "+", "-1", NULL }, &success, &count,
		&error_msg, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_reply(
		(const char *const[]){ "-", NULL }, &success, &count,
		&error_msg, &error), -1);
	cr_assert_eq(dovewarden_admin_parse_reply(
		(const char *const[]){ "ok", NULL }, &success, &count,
		&error_msg, &error), -1);
}

static struct dovewarden_user *test_user(void)
{
	struct dovewarden_user *user = t_new(struct dovewarden_user, 1);

	user->username = t_strdup_noconst("alice");
	user->state = t_strdup_noconst("");
	return user;
}

Test(admin_protocol, user_status_next_sync)
{
	struct dovewarden_admin_user_status status;
	struct dovewarden_user *user = test_user();
	const time_t now = 1000000;

	/* idle, never fully synced: only the queue knows */
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.next_sync_secs, -1);
	cr_assert_str_eq(status.last_error, "");

	/* idle, full syncs off */
	user->last_full_sync = now - 100;
	dovewarden_queue_user_status_init(&status, user, 0, now);
	cr_assert_eq(status.next_sync_secs, -1);

	/* idle: next full sync */
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.next_sync_secs, 3500);
	user->last_full_sync = now - 7200;
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.next_sync_secs, 0);

	/* pending: now */
	user->priority = DOVEWARDEN_PRIORITY_HIGH;
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.next_sync_secs, 0);
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_HIGH);

	/* pending, in back-off */
	user->next_try = now + 30;
	user->consecutive_failures = 2;
	user->last_error = t_strdup_noconst("timeout");
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.next_sync_secs, 30);
	cr_assert_eq(status.consecutive_failures, 2);
	cr_assert_str_eq(status.last_error, "timeout");

	/* syncing: shows the priority the sync runs for */
	user->syncing = TRUE;
	user->priority = DOVEWARDEN_PRIORITY_NONE;
	user->syncing_priority = DOVEWARDEN_PRIORITY_SYNC;
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.next_sync_secs, 0);
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_SYNC);
	user->priority = DOVEWARDEN_PRIORITY_LOW;
	user->syncing_priority = DOVEWARDEN_PRIORITY_NONE;
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.priority, DOVEWARDEN_PRIORITY_LOW);
}

Test(admin_protocol, user_status_next_sync_from_queue)
{
	const struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = 3600,
		.retry_min_secs = 10,
		.retry_max_secs = 600,
	};
	struct dovewarden_admin_user_status status;
	struct dovewarden_queue *queue;
	struct dovewarden_user *user;
	const time_t now = 1000000;

	/* a user whose first full sync is at its slot: the queue knows
	   when */
	queue = dovewarden_queue_init(&set);
	user = dovewarden_queue_add(queue, "alice", now);
	dovewarden_queue_user_status_init(&status, user, 3600, now);
	cr_assert_eq(status.next_sync_secs,
		     dovewarden_queue_user_get_next_sync(user) - now);
	cr_assert_gt(status.next_sync_secs, 0);
	cr_assert_leq(status.next_sync_secs, 3600);
	dovewarden_queue_user_status_init(&status, user, 3600, now + 7200);
	cr_assert_eq(status.next_sync_secs, 0);

	/* pending: now */
	user = dovewarden_queue_notify(queue, "bob", DOVEWARDEN_PRIORITY_HIGH,
				       now);
	dovewarden_queue_user_status_init(&status, user, 3600, now + 1);
	cr_assert_eq(status.next_sync_secs, 0);
	dovewarden_queue_deinit(&queue);
}
