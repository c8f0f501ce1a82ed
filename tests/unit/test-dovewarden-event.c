/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "dovewarden-event.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <unistd.h>

/* EVENT_DATA_DIR comes from meson: tests/unit/data/events */

static pool_t pool;

static const char *fill_str(size_t len, char c)
{
	char *str = t_malloc_no0(len + 1);

	memset(str, c, len);
	str[len] = '\0';
	return str;
}

static void suite_init(void)
{
	lib_init();
	pool = pool_alloconly_create("test event", 1024);
}

static void suite_fini(void)
{
	pool_unref(&pool);
	lib_deinit();
}

TestSuite(event, .init = suite_init, .fini = suite_fini);

static buffer_t *read_sample(const char *name)
{
	const char *path = t_strconcat(EVENT_DATA_DIR, "/", name, NULL);
	buffer_t *buf = t_buffer_create(4096);
	unsigned char data[4096];
	ssize_t ret;
	int fd;

	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0, "open(%s) failed: %m", path);
	while ((ret = read(fd, data, sizeof(data))) > 0)
		buffer_append(buf, data, ret);
	cr_assert_eq(ret, 0);
	i_close_fd(&fd);
	return buf;
}

/* Parse and expect exactly one event */
static int
parse_one(const void *data, size_t size,
	  struct dovewarden_event_change *change_r, const char **error_r)
{
	ARRAY_TYPE(dovewarden_event_change) changes;

	t_array_init(&changes, 4);
	if (dovewarden_event_parse(data, size, pool, &changes, error_r) < 0) {
		cr_assert_eq(array_count(&changes), 0);
		return -1;
	}
	cr_assert_eq(array_count(&changes), 1);
	*change_r = *array_idx(&changes, 0);
	return 0;
}

static int
parse_str(const char *str, struct dovewarden_event_change *change_r,
	  const char **error_r)
{
	return parse_one(str, strlen(str), change_r, error_r);
}

static void expect_error(const char *str)
{
	struct dovewarden_event_change change;
	const char *error = NULL;

	cr_assert_eq(parse_str(str, &change, &error), -1,
		     "accepted: %.200s", str);
	cr_assert_not_null(error);
}

static void
expect_change(const char *str, const char *username,
	      enum dovewarden_priority priority)
{
	struct dovewarden_event_change change;
	const char *error = NULL;

	cr_assert_eq(parse_str(str, &change, &error), 0,
		     "rejected: %s: %.200s", error, str);
	cr_assert_eq(change.priority, priority, "%.200s", str);
	if (username == NULL) {
		cr_assert_null(change.username);
		cr_assert_not_null(change.ignore_reason);
	} else {
		cr_assert_str_eq(change.username, username);
		cr_assert_null(change.ignore_reason);
	}
}

static const char *imap_event(const char *user_json, const char *cmd_name,
			      const char *state)
{
	return t_strdup_printf(
		"{\"event\":\"imap_command_finished\",\"hostname\":\"h\","
		"\"categories\":[\"imap\"],\"fields\":{\"user\":%s,"
		"\"cmd_name\":\"%s\",\"tagged_reply_state\":\"%s\"}}",
		user_json, cmd_name, state);
}

/* Every sample: captured from Dovecot 2.4.1 (the test pair, an IMAP
   session and an LMTP delivery through a loopback sink) and the two
   reference samples (2.3 and 2.4). */
static const struct {
	const char *file;
	const char *username;
	enum dovewarden_priority priority;
} samples[] = {
	{ "2.3-append.json", "alice", DOVEWARDEN_PRIORITY_HIGH },
	{ "2.4-append.json", "alice", DOVEWARDEN_PRIORITY_HIGH },
	{ "2.4.1-append.json", "erin", DOVEWARDEN_PRIORITY_HIGH },
	{ "2.4.1-close.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-copy.json", "erin", DOVEWARDEN_PRIORITY_HIGH },
	{ "2.4.1-create-no.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-create.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-delete.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-expunge.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-fetch-body.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-fetch-peek.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-fetch-rfc822.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-list.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-lmtp-delivery.json", "frank", DOVEWARDEN_PRIORITY_HIGH },
	{ "2.4.1-logout.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-noop.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-rename.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-select-no.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-select.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-status.json", NULL, DOVEWARDEN_PRIORITY_NONE },
	{ "2.4.1-store-deleted.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-store.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-subscribe.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-uid-move.json", "erin", DOVEWARDEN_PRIORITY_HIGH },
	{ "2.4.1-uid-store.json", "erin", DOVEWARDEN_PRIORITY_LOW },
	{ "2.4.1-unsubscribe.json", "erin", DOVEWARDEN_PRIORITY_LOW },
};

Test(event, samples)
{
	struct dovewarden_event_change change;
	const char *error;
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(samples); i++) T_BEGIN {
		buffer_t *buf = read_sample(samples[i].file);

		error = NULL;
		cr_assert_eq(parse_one(buf->data, buf->used, &change, &error),
			     0, "%s: %s", samples[i].file, error);
		cr_assert_eq(change.priority, samples[i].priority, "%s",
			     samples[i].file);
		if (strstr(samples[i].file, "lmtp") != NULL)
			cr_assert_null(change.command);
		else
			cr_assert_not_null(change.command);
		if (samples[i].username == NULL) {
			cr_assert_null(change.username, "%s",
				       samples[i].file);
			cr_assert_not_null(change.ignore_reason);
		} else {
			cr_assert_str_eq(change.username, samples[i].username,
					 "%s", samples[i].file);
		}
	} T_END;
}

Test(event, samples_as_array)
{
	ARRAY_TYPE(dovewarden_event_change) changes;
	const struct dovewarden_event_change *change;
	string_t *body = t_str_new(65536);
	const char *error;
	unsigned int i;

	str_append_c(body, '[');
	for (i = 0; i < N_ELEMENTS(samples); i++) {
		buffer_t *buf = read_sample(samples[i].file);

		if (i > 0)
			str_append(body, ",\n");
		str_append_data(body, buf->data, buf->used);
	}
	str_append(body, "]\n");
	t_array_init(&changes, N_ELEMENTS(samples));
	cr_assert_eq(dovewarden_event_parse(str_data(body), str_len(body),
					    pool, &changes, &error), 0,
		     "%s", error);
	cr_assert_eq(array_count(&changes), N_ELEMENTS(samples));
	array_foreach(&changes, change) {
		i = array_foreach_idx(&changes, change);
		cr_assert_eq(change->priority, samples[i].priority);
	}
}

Test(event, commands)
{
	static const struct {
		const char *name;
		enum dovewarden_priority priority;
	} cmds[] = {
		{ "APPEND", DOVEWARDEN_PRIORITY_HIGH },
		{ "COPY", DOVEWARDEN_PRIORITY_HIGH },
		{ "MOVE", DOVEWARDEN_PRIORITY_HIGH },
		{ "UID COPY", DOVEWARDEN_PRIORITY_HIGH },
		{ "UID MOVE", DOVEWARDEN_PRIORITY_HIGH },
		{ "REPLACE", DOVEWARDEN_PRIORITY_HIGH },
		{ "UID REPLACE", DOVEWARDEN_PRIORITY_HIGH },
		{ "append", DOVEWARDEN_PRIORITY_HIGH },
		{ "STORE", DOVEWARDEN_PRIORITY_LOW },
		{ "UID STORE", DOVEWARDEN_PRIORITY_LOW },
		{ "EXPUNGE", DOVEWARDEN_PRIORITY_LOW },
		{ "UID EXPUNGE", DOVEWARDEN_PRIORITY_LOW },
		{ "CLOSE", DOVEWARDEN_PRIORITY_LOW },
		{ "CREATE", DOVEWARDEN_PRIORITY_LOW },
		{ "DELETE", DOVEWARDEN_PRIORITY_LOW },
		{ "RENAME", DOVEWARDEN_PRIORITY_LOW },
		{ "SUBSCRIBE", DOVEWARDEN_PRIORITY_LOW },
		{ "UNSUBSCRIBE", DOVEWARDEN_PRIORITY_LOW },
		{ "SETMETADATA", DOVEWARDEN_PRIORITY_LOW },
		{ "SETACL", DOVEWARDEN_PRIORITY_LOW },
		{ "DELETEACL", DOVEWARDEN_PRIORITY_LOW },
		{ "SELECT", DOVEWARDEN_PRIORITY_NONE },
		{ "EXAMINE", DOVEWARDEN_PRIORITY_NONE },
		{ "FETCH", DOVEWARDEN_PRIORITY_NONE },
		{ "UID FETCH", DOVEWARDEN_PRIORITY_NONE },
		{ "STATUS", DOVEWARDEN_PRIORITY_NONE },
		{ "LIST", DOVEWARDEN_PRIORITY_NONE },
		{ "LSUB", DOVEWARDEN_PRIORITY_NONE },
		{ "NOOP", DOVEWARDEN_PRIORITY_NONE },
		{ "IDLE", DOVEWARDEN_PRIORITY_NONE },
		{ "SEARCH", DOVEWARDEN_PRIORITY_NONE },
		{ "UNSELECT", DOVEWARDEN_PRIORITY_NONE },
		{ "LOGOUT", DOVEWARDEN_PRIORITY_NONE },
		{ "GETMETADATA", DOVEWARDEN_PRIORITY_NONE },
		{ "SETQUOTA", DOVEWARDEN_PRIORITY_NONE },
		{ "unknown", DOVEWARDEN_PRIORITY_NONE },
		{ "", DOVEWARDEN_PRIORITY_NONE },
		{ "APPEND ", DOVEWARDEN_PRIORITY_NONE },
	};
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(cmds); i++) T_BEGIN {
		cr_assert_eq(dovewarden_event_imap_command_priority(
				cmds[i].name, NULL), cmds[i].priority,
			     "%s", cmds[i].name);
		expect_change(imap_event("\"u1\"", cmds[i].name, "OK"),
			      cmds[i].priority == DOVEWARDEN_PRIORITY_NONE ?
			      NULL : "u1", cmds[i].priority);
		/* only OK counts */
		expect_change(imap_event("\"u1\"", cmds[i].name, "NO"),
			      NULL, DOVEWARDEN_PRIORITY_NONE);
		expect_change(imap_event("\"u1\"", cmds[i].name, "BAD"),
			      NULL, DOVEWARDEN_PRIORITY_NONE);
	} T_END;
}

Test(event, fetch_args)
{
	static const struct {
		const char *args;
		bool seen;
	} fetches[] = {
		{ "1 (BODY.PEEK[] FLAGS)", FALSE },
		{ "1:* (FLAGS UID)", FALSE },
		{ "1 RFC822.HEADER", FALSE },
		{ "1 (RFC822.SIZE ENVELOPE)", FALSE },
		{ "1 BINARY.PEEK[1]", FALSE },
		{ "1 BINARY.SIZE[1]", FALSE },
		{ "1 FAST", FALSE },
		{ "1 (BODY[TEXT])", TRUE },
		{ "1 body[]", TRUE },
		{ "2 RFC822", TRUE },
		{ "2 (FLAGS RFC822)", TRUE },
		{ "2 rfc822.text", TRUE },
		{ "1 BINARY[1]", TRUE },
	};
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(fetches); i++) {
		cr_assert_eq(dovewarden_event_imap_command_priority(
				"FETCH", fetches[i].args),
			     fetches[i].seen ? DOVEWARDEN_PRIORITY_LOW :
			     DOVEWARDEN_PRIORITY_NONE, "%s", fetches[i].args);
		cr_assert_eq(dovewarden_event_imap_command_priority(
				"UID FETCH", fetches[i].args),
			     fetches[i].seen ? DOVEWARDEN_PRIORITY_LOW :
			     DOVEWARDEN_PRIORITY_NONE, "%s", fetches[i].args);
	}
	expect_change("{\"event\":\"imap_command_finished\",\"fields\":{"
		      "\"user\":\"u\",\"cmd_name\":\"FETCH\",\"cmd_args\":"
		      "\"1 BODY[]\",\"tagged_reply_state\":\"OK\"}}",
		      "u", DOVEWARDEN_PRIORITY_LOW);
	{
		struct dovewarden_event_change change;
		const char *error;

		cr_assert_eq(parse_str(imap_event("\"u\"", "UID MOVE", "OK"),
				       &change, &error), 0);
		cr_assert_str_eq(change.command, "UID MOVE");
		cr_assert_str_eq(change.event_name, "imap_command_finished");
	}
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":{"
		     "\"user\":\"u\",\"cmd_name\":\"FETCH\",\"cmd_args\":1,"
		     "\"tagged_reply_state\":\"OK\"}}");
}

Test(event, delivery)
{
	expect_change("{\"event\":\"mail_delivery_finished\",\"fields\":{"
		      "\"user\":\"u\",\"rcpt_to\":\"r@example.org\"}}",
		      "u", DOVEWARDEN_PRIORITY_HIGH);
	expect_change("{\"event\":\"mail_delivery_finished\",\"fields\":{"
		      "\"rcpt_to\":\"r@example.org\"}}",
		      "r@example.org", DOVEWARDEN_PRIORITY_HIGH);
	expect_change("{\"event\":\"mail_delivery_finished\",\"fields\":{"
		      "\"user\":\"u\",\"error\":\"Quota exceeded\"}}",
		      NULL, DOVEWARDEN_PRIORITY_NONE);
	expect_error("{\"event\":\"mail_delivery_finished\",\"fields\":{}}");
	expect_error("{\"event\":\"mail_delivery_finished\",\"fields\":{"
		     "\"user\":7}}");
	expect_error("{\"event\":\"mail_delivery_finished\"}");
}

Test(event, ignored_events)
{
	expect_change("{\"event\":\"mail_opened\",\"fields\":{\"user\":1}}",
		      NULL, DOVEWARDEN_PRIORITY_NONE);
	expect_change("{\"event\":\"imap_command_started\"}",
		      NULL, DOVEWARDEN_PRIORITY_NONE);
	expect_change("{\"event\":\"\",\"fields\":[1,2]}",
		      NULL, DOVEWARDEN_PRIORITY_NONE);
	/* unchecked fields may hold anything */
	expect_change("{\"event\":\"mail_delivery_finished\",\"fields\":{"
		      "\"user\":\"u\",\"message_subject\":\"\xef\xbf\xbd\","
		      "\"x\":[[[{}]]],\"y\":null}}", "u",
		      DOVEWARDEN_PRIORITY_HIGH);
	/* but the body must be UTF-8 */
	expect_error("{\"event\":\"mail_delivery_finished\",\"fields\":{"
		     "\"user\":\"u\",\"message_subject\":\"\xff\xfe\"}}");
	expect_error("{\"event\":\"x\xc3\"}");
}

Test(event, wrong_types)
{
	static const char *const users[] = {
		"1", "1.5", "true", "[\"u\"]", "{\"u\":1}", "null",
	};
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(users); i++) T_BEGIN {
		expect_error(imap_event(users[i], "APPEND", "OK"));
	} T_END;
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":{"
		     "\"user\":\"u\",\"cmd_name\":5,"
		     "\"tagged_reply_state\":\"OK\"}}");
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":{"
		     "\"user\":\"u\",\"cmd_name\":\"APPEND\","
		     "\"tagged_reply_state\":[\"OK\"]}}");
	/* missing fields of a relevant event */
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":{"
		     "\"user\":\"u\",\"tagged_reply_state\":\"OK\"}}");
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":{"
		     "\"user\":\"u\",\"cmd_name\":\"APPEND\"}}");
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":{"
		     "\"cmd_name\":\"APPEND\",\"tagged_reply_state\":\"OK\"}}");
	expect_error("{\"event\":\"imap_command_finished\"}");
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":[]}");
	expect_error("{\"event\":\"imap_command_finished\",\"fields\":\"x\"}");
	/* not an event */
	expect_error("{}");
	expect_error("{\"event\":1}");
	expect_error("{\"event\":null}");
	expect_error("{\"event\":[\"imap_command_finished\"]}");
	expect_error("42");
	expect_error("\"imap_command_finished\"");
	expect_error("null");
	expect_error("true");
	expect_error("[1]");
	expect_error("[{\"event\":\"x\"},\"y\"]");
}

Test(event, invalid_usernames)
{
	string_t *str;

	expect_error(imap_event("\"\"", "APPEND", "OK"));
	expect_error(imap_event("\"\xff\xfe\"", "APPEND", "OK"));
	expect_error(imap_event("\"a\xc3\"", "APPEND", "OK"));
	/* overlong encoding and a UTF-16 surrogate */
	expect_error(imap_event("\"\xc0\xaf\"", "APPEND", "OK"));
	expect_error(imap_event("\"\xed\xa0\x80\"", "APPEND", "OK"));
	/* escaped NUL inside the name */
	expect_error(imap_event("\"a\\u0000b\"", "APPEND", "OK"));
	/* raw and escaped non-ASCII is fine */
	expect_change(imap_event("\"j\xc3\xbcrgen@\xe4\xbe\x8b.jp\"", "APPEND",
				 "OK"), "j\xc3\xbcrgen@\xe4\xbe\x8b.jp",
		      DOVEWARDEN_PRIORITY_HIGH);
	expect_change(imap_event("\"j\\u00fcrgen\"", "APPEND", "OK"),
		      "j\xc3\xbcrgen", DOVEWARDEN_PRIORITY_HIGH);

	str = t_str_new(DOVEWARDEN_USERNAME_MAX_LENGTH + 8);
	str_append_c(str, '"');
	str_append_max(str, fill_str(DOVEWARDEN_USERNAME_MAX_LENGTH, 'a'),
		       DOVEWARDEN_USERNAME_MAX_LENGTH);
	str_append_c(str, '"');
	expect_change(imap_event(str_c(str), "APPEND", "OK"),
		      fill_str(DOVEWARDEN_USERNAME_MAX_LENGTH, 'a'),
		      DOVEWARDEN_PRIORITY_HIGH);
	str_truncate(str, str_len(str) - 1);
	str_append(str, "a\"");
	expect_error(imap_event(str_c(str), "APPEND", "OK"));
}

Test(event, malformed_json)
{
	static const char *const bodies[] = {
		"", " ", "{", "}", "{\"event\":", "{\"event\":\"x\"",
		"{\"event\":\"x\"}x", "{\"event\":\"x\"} {\"event\":\"x\"}",
		"{\"event\":\"x\"}]", "[{\"event\":\"x\"}", "NaN",
		"{\"event\":\"\\x41\"}",
	};
	/* json-c without its strict mode (which rejects all non-ASCII)
	   takes some of these; whatever it does, nothing may break */
	static const char *const lenient[] = {
		"{\"event\":\"x\",}", "{'event':'x'}", "{event:\"x\"}",
		"{\"event\":\"a\nb\"}", "[{\"event\":\"x\"},]",
		"{\"event\":\"\\ud800\"}",
	};
	ARRAY_TYPE(dovewarden_event_change) changes;
	struct dovewarden_event_change change;
	const char *error;
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(bodies); i++)
		expect_error(bodies[i]);
	t_array_init(&changes, 4);
	for (i = 0; i < N_ELEMENTS(lenient); i++) {
		if (dovewarden_event_parse(lenient[i], strlen(lenient[i]),
					   pool, &changes, &error) == 0) {
			change = *array_back(&changes);
			cr_assert_null(change.username);
		}
	}
	/* NUL bytes in and after the JSON */
	cr_assert_eq(parse_one("{\"event\":\"x\"}\0", 14, &change, &error),
		     -1);
	cr_assert_eq(parse_one("{\"event\":\"x\0\"}", 14, &change, &error),
		     -1);
	/* whitespace around it is fine */
	expect_change(" \r\n{\"event\":\"x\"}\n\t ", NULL,
		      DOVEWARDEN_PRIORITY_NONE);
}

Test(event, deep_nesting)
{
	string_t *str = t_str_new(200100);
	const char *error;
	struct dovewarden_event_change change;
	unsigned int i;

	/* 100000 levels: rejected by size, and by depth when smaller */
	for (i = 0; i < 100000; i++)
		str_append_c(str, '[');
	cr_assert_eq(parse_one(str_data(str), str_len(str), &change, &error),
		     -1);
	for (i = 0; i < 100000; i++)
		str_append_c(str, ']');
	cr_assert_eq(parse_one(str_data(str), str_len(str), &change, &error),
		     -1);
	cr_assert_eq(parse_one(str_data(str), 30000, &change, &error), -1);
	cr_assert_not_null(strstr(error, "nesting"), "%s", error);

	/* depth inside an event */
	str_truncate(str, 0);
	str_append(str, "{\"event\":\"mail_delivery_finished\",\"fields\":{"
		   "\"user\":\"u\",\"x\":");
	for (i = 0; i < DOVEWARDEN_EVENT_MAX_DEPTH; i++)
		str_append(str, "{\"a\":");
	str_append(str, "1");
	for (i = 0; i < DOVEWARDEN_EVENT_MAX_DEPTH; i++)
		str_append_c(str, '}');
	str_append(str, "}}");
	expect_error(str_c(str));
	/* and just within the limit */
	str_truncate(str, 0);
	str_append(str, "{\"event\":\"mail_delivery_finished\",\"fields\":{"
		   "\"user\":\"u\",\"x\":");
	for (i = 0; i < DOVEWARDEN_EVENT_MAX_DEPTH - 3; i++)
		str_append(str, "[");
	for (i = 0; i < DOVEWARDEN_EVENT_MAX_DEPTH - 3; i++)
		str_append_c(str, ']');
	str_append(str, "}}");
	expect_change(str_c(str), "u", DOVEWARDEN_PRIORITY_HIGH);
}

Test(event, huge_strings)
{
	const size_t big = 10 * 1024 * 1024;
	string_t *str = t_str_new(big + 256);
	struct dovewarden_event_change change;
	const char *error;

	/* a 10 MB user name: over the body limit */
	str_append(str, "{\"event\":\"imap_command_finished\",\"fields\":{"
		   "\"cmd_name\":\"APPEND\",\"tagged_reply_state\":\"OK\","
		   "\"user\":\"");
	str_append_max(str, fill_str(big, 'u'), big);
	str_append(str, "\"}}");
	cr_assert_eq(parse_one(str_data(str), str_len(str), &change, &error),
		     -1);
	cr_assert_not_null(strstr(error, "larger"), "%s", error);

	/* a large, but acceptable body with a long unchecked field */
	str_truncate(str, 0);
	str_append(str, "{\"event\":\"mail_delivery_finished\",\"fields\":{"
		   "\"user\":\"u\",\"message_subject\":\"");
	str_append_max(str, fill_str(60000, 's'), 60000);
	str_append(str, "\"}}");
	expect_change(str_c(str), "u", DOVEWARDEN_PRIORITY_HIGH);

	/* exactly at and one over the limit */
	str_truncate(str, 0);
	str_append(str, "{\"event\":\"x\",\"p\":\"");
	while (str_len(str) < DOVEWARDEN_EVENT_MAX_BODY_SIZE - 2)
		str_append_c(str, 'p');
	str_append(str, "\"}");
	cr_assert_eq(str_len(str), DOVEWARDEN_EVENT_MAX_BODY_SIZE);
	expect_change(str_c(str), NULL, DOVEWARDEN_PRIORITY_NONE);
	str_insert(str, 0, " ");
	expect_error(str_c(str));
}

Test(event, arrays)
{
	ARRAY_TYPE(dovewarden_event_change) changes;
	string_t *str = t_str_new(65536);
	const char *error;
	unsigned int i;

	t_array_init(&changes, 4);
	cr_assert_eq(dovewarden_event_parse("[]", 2, pool, &changes, &error),
		     0);
	cr_assert_eq(array_count(&changes), 0);

	/* one bad event rejects all, and adds nothing */
	str_append(str, "[");
	str_append(str, imap_event("\"a\"", "APPEND", "OK"));
	str_append(str, ",");
	str_append(str, imap_event("7", "APPEND", "OK"));
	str_append(str, "]");
	cr_assert_eq(dovewarden_event_parse(str_data(str), str_len(str), pool,
					    &changes, &error), -1);
	cr_assert_eq(array_count(&changes), 0);

	str_truncate(str, 0);
	str_append_c(str, '[');
	for (i = 0; i <= DOVEWARDEN_EVENT_MAX_EVENTS; i++)
		str_append(str, i == 0 ? "{\"event\":\"x\"}" :
			   ",{\"event\":\"x\"}");
	str_append_c(str, ']');
	cr_assert_eq(dovewarden_event_parse(str_data(str), str_len(str), pool,
					    &changes, &error), -1);
	/* nested arrays are not events */
	expect_error("[[{\"event\":\"x\"}]]");
}
