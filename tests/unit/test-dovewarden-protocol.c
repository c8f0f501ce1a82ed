/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "strescape.h"
#include "dovewarden-protocol.h"

#include <criterion/criterion.h>

static void suite_init(void)
{
	lib_init();
}

static void suite_fini(void)
{
	lib_deinit();
}

TestSuite(protocol, .init = suite_init, .fini = suite_fini);

/* Strip the one trailing LF, check there is no other one, and split. */
static const char *const *split_line(string_t *line)
{
	const char *data = str_c(line);
	size_t len = str_len(line);

	cr_assert_gt(len, 0);
	cr_assert_eq(data[len - 1], '\n');
	cr_assert_null(memchr(data, '\n', len - 1),
		       "unescaped LF inside the line");
	cr_assert_null(memchr(data, '\r', len), "unescaped CR in the line");
	cr_assert_leq(len, DOVEWARDEN_NOTIFY_MAX_LINE_LENGTH);
	return t_strsplit_tabescaped(t_strndup(data, len - 1));
}

static const char *repeat_char(char c, size_t count)
{
	char *str = t_malloc0(count + 1);

	memset(str, c, count);
	return str;
}

static const char *good_usernames(unsigned int i)
{
	switch (i) {
	case 0:
		return "alice";
	case 1:
		return "user@example.com";
	case 2:
		return "space here";
	case 3:
		return "j\xc3\xbcrgen@\xe6\x97\xa5\xe6\x9c\xac.example";
	case 4:
		return "emoji\xf0\x9f\x93\xa7";
	case 5:
		return repeat_char('a', DOVEWARDEN_USERNAME_MAX_LENGTH);
	case 6:
		return "trailing\\backslash\\";
	}
	return NULL;
}

/* Control bytes would forge log lines: refused at every input */
static const char *control_usernames(unsigned int i)
{
	switch (i) {
	case 0:
		return "tab\there";
	case 1:
		return "lf\nhere";
	case 2:
		return "cr\rhere";
	case 3:
		return "\001escape\001t";
	case 4:
		return "\t\n\r\001";
	case 5:
		return "del\x7f";
	case 6:
		return repeat_char('\t', DOVEWARDEN_USERNAME_MAX_LENGTH);
	}
	return NULL;
}

Test(protocol, control_bytes_are_refused)
{
	unsigned int i;

	for (i = 0; control_usernames(i) != NULL; i++) T_BEGIN {
		const char *username = control_usernames(i);
		string_t *line = t_str_new(128);
		struct dovewarden_notify_request req;
		const char *error;

		cr_assert(!dovewarden_username_is_valid(username), "name %u",
			  i);
		dovewarden_notify_append_notify(line, username,
						DOVEWARDEN_PRIORITY_HIGH);
		cr_assert_eq(dovewarden_notify_parse_request(
				split_line(line), &req, &error), -1,
			     "name %u", i);
		str_truncate(line, 0);
		dovewarden_notify_append_wait(line, 1, username, 1000);
		cr_assert_eq(dovewarden_notify_parse_request(
				split_line(line), &req, &error), -1,
			     "name %u", i);
	} T_END;
}

Test(protocol, notify_round_trip)
{
	unsigned int i, p;

	for (i = 0; good_usernames(i) != NULL; i++) T_BEGIN {
		const char *username = good_usernames(i);

		cr_assert(dovewarden_username_is_valid(username), "name %u", i);
		for (p = 0; p < DOVEWARDEN_PRIORITY_COUNT; p++) {
			string_t *line = t_str_new(128);
			struct dovewarden_notify_request req;
			const char *error;

			dovewarden_notify_append_notify(line, username, p);
			cr_assert_eq(dovewarden_notify_parse_request(
					split_line(line), &req, &error), 0,
				     "name %u: %s", i, error);
			cr_assert_eq(req.cmd, DOVEWARDEN_NOTIFY_CMD_NOTIFY);
			cr_assert_str_eq(req.username, username);
			cr_assert_eq(req.priority, p);
		}
	} T_END;
}

Test(protocol, import_round_trip)
{
	unsigned int i, p;

	for (i = 0; good_usernames(i) != NULL; i++) T_BEGIN {
		const char *username = good_usernames(i);

		for (p = 0; p <= DOVEWARDEN_PRIORITY_LOW; p++) {
			string_t *line = t_str_new(128);
			struct dovewarden_notify_request req;
			const char *error;

			dovewarden_notify_append_import(line, username, p);
			cr_assert_eq(dovewarden_notify_parse_request(
					split_line(line), &req, &error), 0,
				     "name %u: %s", i, error);
			cr_assert_eq(req.cmd, DOVEWARDEN_NOTIFY_CMD_IMPORT);
			cr_assert_str_eq(req.username, username);
			cr_assert_eq(req.priority, p);
		}
	} T_END;
}

Test(protocol, wait_round_trip)
{
	static const unsigned int ids[] = { 1, 2, 12345, UINT_MAX };
	static const unsigned int timeouts[] = { 0, 1, 10000, UINT_MAX };
	unsigned int i, j;

	for (i = 0; good_usernames(i) != NULL; i++) T_BEGIN {
		const char *username = good_usernames(i);

		for (j = 0; j < N_ELEMENTS(ids); j++) {
			string_t *line = t_str_new(128);
			struct dovewarden_notify_request req;
			const char *error;

			dovewarden_notify_append_wait(line, ids[j], username,
						      timeouts[j]);
			cr_assert_eq(dovewarden_notify_parse_request(
					split_line(line), &req, &error), 0,
				     "name %u: %s", i, error);
			cr_assert_eq(req.cmd, DOVEWARDEN_NOTIFY_CMD_WAIT);
			cr_assert_str_eq(req.username, username);
			cr_assert_eq(req.id, ids[j]);
			cr_assert_eq(req.timeout_msecs, timeouts[j]);
			cr_assert_eq(req.priority, DOVEWARDEN_PRIORITY_SYNC);
		}
	} T_END;
}

Test(protocol, reply_round_trip)
{
	static const char *const reasons[] = {
		"Timeout", "", "with\ttab\nand lf\r\001",
		"\xc3\xbc", NULL,
	};
	unsigned int i, id;
	bool success;
	const char *reason, *error;

	for (i = 0; i < N_ELEMENTS(reasons); i++) T_BEGIN {
		string_t *line = t_str_new(128);

		dovewarden_notify_append_reply(line, 1000 + i, FALSE,
					       reasons[i]);
		cr_assert_eq(dovewarden_notify_parse_reply(split_line(line),
				&id, &success, &reason, &error), 0,
			     "%s", error);
		cr_assert_eq(id, 1000 + i);
		cr_assert(!success);
		cr_assert_str_eq(reason, reasons[i] == NULL ? "" : reasons[i]);

		str_truncate(line, 0);
		dovewarden_notify_append_reply(line, UINT_MAX, TRUE,
					       reasons[i]);
		cr_assert_eq(dovewarden_notify_parse_reply(split_line(line),
				&id, &success, &reason, &error), 0,
			     "%s", error);
		cr_assert_eq(id, UINT_MAX);
		cr_assert(success);
		cr_assert_null(reason);
	} T_END;
}

static void
assert_request_fails(const char *const *args, const char *what)
{
	struct dovewarden_notify_request req;
	const char *error = NULL;

	cr_assert_eq(dovewarden_notify_parse_request(args, &req, &error), -1,
		     "accepted: %s", what);
	cr_assert_not_null(error, "no error for: %s", what);
	cr_assert_neq(error[0], '\0', "empty error for: %s", what);
}

#define REQ_FAILS(...) STMT_START { \
	const char *const args[] = { __VA_ARGS__, NULL }; \
	assert_request_fails(args, #__VA_ARGS__); \
	} STMT_END

Test(protocol, request_malformed)
{
	const char *const empty[] = { NULL };
	const char *long_name =
		t_strdup(repeat_char('a', DOVEWARDEN_USERNAME_MAX_LENGTH + 1));

	assert_request_fails(empty, "no fields");
	REQ_FAILS("");
	/* unknown commands */
	REQ_FAILS("X", "alice", "low");
	REQ_FAILS("n", "alice", "low");
	REQ_FAILS("w", "1", "alice", "10");
	REQ_FAILS("NN", "alice", "low");
	REQ_FAILS("U", "alice", "low");
	/* N: field count */
	REQ_FAILS("N");
	REQ_FAILS("N", "alice");
	REQ_FAILS("N", "alice", "low", "extra");
	REQ_FAILS("N", "alice", "low", "");
	/* N: priority */
	REQ_FAILS("N", "alice", "");
	REQ_FAILS("N", "alice", "urgent");
	REQ_FAILS("N", "alice", "LOW");
	REQ_FAILS("N", "alice", "1");
	REQ_FAILS("N", "alice", "low ");
	/* N: username */
	REQ_FAILS("N", "", "low");
	REQ_FAILS("N", long_name, "low");
	REQ_FAILS("N", "bad\xff", "low");
	REQ_FAILS("N", "\xc3", "low");
	REQ_FAILS("N", "over\xc0\xaflong", "low");
	REQ_FAILS("N", "surrogate\xed\xa0\x80", "low");
	/* I: field count, priority (none or low only), username */
	REQ_FAILS("I");
	REQ_FAILS("I", "alice");
	REQ_FAILS("I", "alice", "none", "extra");
	REQ_FAILS("I", "alice", "high");
	REQ_FAILS("I", "alice", "sync");
	REQ_FAILS("I", "alice", "");
	REQ_FAILS("I", "", "none");
	REQ_FAILS("I", "bad\x01", "none");
	REQ_FAILS("i", "alice", "none");
	/* W: field count */
	REQ_FAILS("W");
	REQ_FAILS("W", "1");
	REQ_FAILS("W", "1", "alice");
	REQ_FAILS("W", "1", "alice", "10", "extra");
	/* W: id */
	REQ_FAILS("W", "0", "alice", "10");
	REQ_FAILS("W", "", "alice", "10");
	REQ_FAILS("W", "x", "alice", "10");
	REQ_FAILS("W", "1x", "alice", "10");
	REQ_FAILS("W", "-1", "alice", "10");
	REQ_FAILS("W", " 1", "alice", "10");
	REQ_FAILS("W", "4294967296", "alice", "10");
	/* W: username */
	REQ_FAILS("W", "1", "", "10");
	REQ_FAILS("W", "1", long_name, "10");
	REQ_FAILS("W", "1", "bad\xff", "10");
	/* W: timeout */
	REQ_FAILS("W", "1", "alice", "");
	REQ_FAILS("W", "1", "alice", "ten");
	REQ_FAILS("W", "1", "alice", "-5");
	REQ_FAILS("W", "1", "alice", "10s");
	REQ_FAILS("W", "1", "alice", "4294967296");
}

static void
assert_reply_fails(const char *const *args, const char *what)
{
	unsigned int id;
	bool success;
	const char *reason, *error = NULL;

	cr_assert_eq(dovewarden_notify_parse_reply(args, &id, &success,
						   &reason, &error), -1,
		     "accepted: %s", what);
	cr_assert_not_null(error, "no error for: %s", what);
}

#define REPLY_FAILS(...) STMT_START { \
	const char *const args[] = { __VA_ARGS__, NULL }; \
	assert_reply_fails(args, #__VA_ARGS__); \
	} STMT_END

Test(protocol, reply_malformed)
{
	const char *const empty[] = { NULL };

	assert_reply_fails(empty, "no fields");
	REPLY_FAILS("+");
	REPLY_FAILS("-");
	REPLY_FAILS("+", "0");
	REPLY_FAILS("-", "0", "reason");
	REPLY_FAILS("+", "x");
	REPLY_FAILS("+", "");
	REPLY_FAILS("+", "1", "extra");
	REPLY_FAILS("-", "1");
	REPLY_FAILS("-", "1", "reason", "extra");
	REPLY_FAILS("?", "1");
	REPLY_FAILS("", "1");
	REPLY_FAILS("++", "1");
}

Test(protocol, priority_names)
{
	static const char *const names[] = { "none", "low", "high", "sync" };
	enum dovewarden_priority priority;
	unsigned int i;

	cr_assert_eq(N_ELEMENTS(names), DOVEWARDEN_PRIORITY_COUNT);
	for (i = 0; i < DOVEWARDEN_PRIORITY_COUNT; i++) {
		cr_assert_str_eq(dovewarden_priority_to_str(i), names[i]);
		cr_assert(dovewarden_priority_parse(names[i], &priority));
		cr_assert_eq(priority, i);
	}
	cr_assert(DOVEWARDEN_PRIORITY_NONE < DOVEWARDEN_PRIORITY_LOW);
	cr_assert(DOVEWARDEN_PRIORITY_LOW < DOVEWARDEN_PRIORITY_HIGH);
	cr_assert(DOVEWARDEN_PRIORITY_HIGH < DOVEWARDEN_PRIORITY_SYNC);

	cr_assert(!dovewarden_priority_parse("", &priority));
	cr_assert(!dovewarden_priority_parse("High", &priority));
	cr_assert(!dovewarden_priority_parse("urgent", &priority));
	cr_assert(!dovewarden_priority_parse("low\t", &priority));
	cr_assert(!dovewarden_priority_parse("2", &priority));
}

Test(protocol, username_validity)
{
	cr_assert(dovewarden_username_is_valid("a"));
	cr_assert(dovewarden_username_is_valid(
		repeat_char('x', DOVEWARDEN_USERNAME_MAX_LENGTH)));
	/* 1024 bytes of two-byte UTF-8 characters */
	cr_assert(dovewarden_username_is_valid(t_strconcat(
		repeat_char('y', DOVEWARDEN_USERNAME_MAX_LENGTH - 2),
		"\xc3\xbc", NULL)));
	cr_assert(!dovewarden_username_is_valid(""));
	cr_assert(!dovewarden_username_is_valid(
		repeat_char('x', DOVEWARDEN_USERNAME_MAX_LENGTH + 1)));
	cr_assert(!dovewarden_username_is_valid("\xff"));
	cr_assert(!dovewarden_username_is_valid("a\xc3"));
	cr_assert(!dovewarden_username_is_valid("\xc0\x80"));
}

Test(protocol, longest_line_fits)
{
	string_t *line = t_str_new(128);
	const char *username =
		repeat_char('\n', DOVEWARDEN_USERNAME_MAX_LENGTH);

	dovewarden_notify_append_wait(line, UINT_MAX, username, UINT_MAX);
	cr_assert_leq(str_len(line), DOVEWARDEN_NOTIFY_MAX_LINE_LENGTH);
	str_truncate(line, 0);
	dovewarden_notify_append_notify(line, username,
					DOVEWARDEN_PRIORITY_SYNC);
	cr_assert_leq(str_len(line), DOVEWARDEN_NOTIFY_MAX_LINE_LENGTH);
}
