/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "dovewarden-compat.h"
#include "dovewarden-event.h"

#include <json-c/json.h>

struct event_command {
	const char *name;
	enum dovewarden_priority priority;
};

static const struct event_command event_commands[] = {
	/* new mail */
	{ "APPEND", DOVEWARDEN_PRIORITY_HIGH },
	{ "COPY", DOVEWARDEN_PRIORITY_HIGH },
	{ "MOVE", DOVEWARDEN_PRIORITY_HIGH },
	{ "UID COPY", DOVEWARDEN_PRIORITY_HIGH },
	{ "UID MOVE", DOVEWARDEN_PRIORITY_HIGH },
	{ "REPLACE", DOVEWARDEN_PRIORITY_HIGH },
	{ "UID REPLACE", DOVEWARDEN_PRIORITY_HIGH },
	/* flags, expunges, mailbox list and metadata changes */
	{ "STORE", DOVEWARDEN_PRIORITY_LOW },
	{ "UID STORE", DOVEWARDEN_PRIORITY_LOW },
	{ "EXPUNGE", DOVEWARDEN_PRIORITY_LOW },
	{ "UID EXPUNGE", DOVEWARDEN_PRIORITY_LOW },
	/* expunges the \Deleted mails of a read-write mailbox */
	{ "CLOSE", DOVEWARDEN_PRIORITY_LOW },
	{ "CREATE", DOVEWARDEN_PRIORITY_LOW },
	{ "DELETE", DOVEWARDEN_PRIORITY_LOW },
	{ "RENAME", DOVEWARDEN_PRIORITY_LOW },
	{ "SUBSCRIBE", DOVEWARDEN_PRIORITY_LOW },
	{ "UNSUBSCRIBE", DOVEWARDEN_PRIORITY_LOW },
	{ "SETMETADATA", DOVEWARDEN_PRIORITY_LOW },
	{ "SETACL", DOVEWARDEN_PRIORITY_LOW },
	{ "DELETEACL", DOVEWARDEN_PRIORITY_LOW },
};

/* Does a FETCH with these arguments set \Seen? Fetching a body section
   without .PEEK does, and so do RFC822 and RFC822.TEXT. */
static bool event_fetch_sets_seen(const char *args)
{
	const char *p, *upper = t_str_ucase(args);

	if (strstr(upper, "BODY[") != NULL ||
	    strstr(upper, "BINARY[") != NULL)
		return TRUE;
	for (p = upper; (p = strstr(p, "RFC822")) != NULL; p += 6) {
		if (p != upper && p[-1] != ' ' && p[-1] != '(')
			continue;
		if (p[6] != '.' || str_begins_with(p + 6, ".TEXT"))
			return TRUE;
	}
	return FALSE;
}

enum dovewarden_priority
dovewarden_event_imap_command_priority(const char *cmd_name,
				       const char *args)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(event_commands); i++) {
		if (strcasecmp(cmd_name, event_commands[i].name) == 0)
			return event_commands[i].priority;
	}
	if ((strcasecmp(cmd_name, "FETCH") == 0 ||
	     strcasecmp(cmd_name, "UID FETCH") == 0) &&
	    args != NULL && event_fetch_sets_seen(args))
		return DOVEWARDEN_PRIORITY_LOW;
	return DOVEWARDEN_PRIORITY_NONE;
}

/* Returns 1 and the string, 0 when the key is missing (or null), -1 when
   it has another type or contains NUL. */
static int
event_get_string(struct json_object *obj, const char *key,
		 const char **value_r)
{
	struct json_object *value;
	const char *str;

	if (!json_object_object_get_ex(obj, key, &value) || value == NULL)
		return 0;
	if (!json_object_is_type(value, json_type_string))
		return -1;
	str = json_object_get_string(value);
	if (strlen(str) != (size_t)json_object_get_string_len(value))
		return -1;
	*value_r = str;
	return 1;
}

static int
event_get_required_string(struct json_object *obj, const char *key,
			  const char **value_r, const char **error_r)
{
	switch (event_get_string(obj, key, value_r)) {
	case 1:
		return 0;
	case 0:
		*error_r = t_strdup_printf("fields/%s is missing", key);
		return -1;
	default:
		*error_r = t_strdup_printf("fields/%s is not a string", key);
		return -1;
	}
}

static int
event_get_user(struct json_object *fields, const char *fallback_key,
	       const char **username_r, const char **error_r)
{
	const char *username;
	int ret;

	ret = event_get_string(fields, "user", &username);
	if (ret == 0 && fallback_key != NULL)
		ret = event_get_string(fields, fallback_key, &username);
	if (ret < 0) {
		*error_r = "fields/user is not a string";
		return -1;
	}
	if (ret == 0) {
		*error_r = "fields/user is missing";
		return -1;
	}
	if (!dovewarden_username_is_valid(username)) {
		*error_r = t_strdup_printf(
			"fields/user is not a valid username (empty, longer "
			"than %u bytes or not UTF-8)",
			DOVEWARDEN_USERNAME_MAX_LENGTH);
		return -1;
	}
	*username_r = username;
	return 0;
}

static int
event_map_imap_command(struct json_object *fields,
		       struct dovewarden_event_change *change_r,
		       const char **error_r)
{
	const char *cmd_name, *state, *args = NULL, *username;

	if (event_get_required_string(fields, "cmd_name", &cmd_name,
				      error_r) < 0 ||
	    event_get_required_string(fields, "tagged_reply_state", &state,
				      error_r) < 0)
		return -1;
	change_r->command = cmd_name;
	if (event_get_string(fields, "cmd_args", &args) < 0) {
		*error_r = "fields/cmd_args is not a string";
		return -1;
	}
	if (strcmp(state, "OK") != 0) {
		change_r->ignore_reason = "command did not succeed";
		return 0;
	}
	change_r->priority =
		dovewarden_event_imap_command_priority(cmd_name, args);
	if (change_r->priority == DOVEWARDEN_PRIORITY_NONE) {
		change_r->ignore_reason = "command does not change mail";
		return 0;
	}
	if (event_get_user(fields, NULL, &username, error_r) < 0)
		return -1;
	change_r->username = username;
	return 0;
}

static int
event_map_delivery(struct json_object *fields,
		   struct dovewarden_event_change *change_r,
		   const char **error_r)
{
	const char *username;

	if (json_object_object_get_ex(fields, "error", NULL)) {
		change_r->ignore_reason = "delivery failed";
		return 0;
	}
	if (event_get_user(fields, "rcpt_to", &username, error_r) < 0)
		return -1;
	change_r->username = username;
	change_r->priority = DOVEWARDEN_PRIORITY_HIGH;
	return 0;
}

/* Map one event; the strings of change_r point into obj. */
static int
event_map(struct json_object *obj, struct dovewarden_event_change *change_r,
	  const char **error_r)
{
	struct json_object *fields;
	const char *name;
	bool imap;

	i_zero(change_r);
	change_r->event_name = "";
	if (!json_object_is_type(obj, json_type_object)) {
		*error_r = "event is not a JSON object";
		return -1;
	}
	switch (event_get_string(obj, "event", &name)) {
	case 1:
		break;
	case 0:
		*error_r = "\"event\" is missing";
		return -1;
	default:
		*error_r = "\"event\" is not a string";
		return -1;
	}
	change_r->event_name = name;

	if (strcmp(name, "imap_command_finished") == 0)
		imap = TRUE;
	else if (strcmp(name, "mail_delivery_finished") == 0)
		imap = FALSE;
	else {
		change_r->ignore_reason = "event not relevant";
		return 0;
	}
	if (!json_object_object_get_ex(obj, "fields", &fields) ||
	    fields == NULL) {
		*error_r = "\"fields\" is missing";
		return -1;
	}
	if (!json_object_is_type(fields, json_type_object)) {
		*error_r = "\"fields\" is not an object";
		return -1;
	}
	return imap ? event_map_imap_command(fields, change_r, error_r) :
		event_map_delivery(fields, change_r, error_r);
}

static struct json_object *
event_parse_json(const void *data, size_t size, const char **error_r)
{
	struct json_tokener *tok;
	struct json_object *root;
	enum json_tokener_error jerr;
	const unsigned char *p = data;
	size_t offset;

	tok = json_tokener_new_ex(DOVEWARDEN_EVENT_MAX_DEPTH);
	if (tok == NULL)
		i_fatal_status(FATAL_OUTOFMEM, "json_tokener_new_ex() failed");
	/* not JSON_TOKENER_STRICT: json-c 0.18 rejects every non-ASCII
	   byte in strings with it. Trailing data is checked below. */
	json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
	root = json_tokener_parse_ex(tok, data, (int)size);
	jerr = json_tokener_get_error(tok);
	offset = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);

	if (jerr == json_tokener_continue) {
		*error_r = "Truncated JSON";
		json_object_put(root);
		return NULL;
	}
	if (jerr != json_tokener_success) {
		*error_r = t_strdup_printf(
			"Invalid JSON at byte %zu: %s", offset,
			json_tokener_error_desc(jerr));
		json_object_put(root);
		return NULL;
	}
	for (; offset < size; offset++) {
		if (p[offset] != ' ' && p[offset] != '\t' &&
		    p[offset] != '\r' && p[offset] != '\n') {
			*error_r = t_strdup_printf(
				"Invalid JSON: trailing data at byte %zu",
				offset);
			json_object_put(root);
			return NULL;
		}
	}
	if (root == NULL) {
		/* the literal null */
		*error_r = "Body is not a JSON object or array";
	}
	return root;
}

/* Move the strings out of the JSON tree */
static void
event_change_copy(pool_t pool, struct dovewarden_event_change *change)
{
	change->username = p_strdup(pool, change->username);
	change->event_name = p_strdup(pool, change->event_name);
	change->command = p_strdup(pool, change->command);
}

static int
event_parse_root(struct json_object *root, pool_t pool,
		 ARRAY_TYPE(dovewarden_event_change) *changes,
		 const char **error_r)
{
	struct dovewarden_event_change change;
	size_t i, count;

	if (json_object_is_type(root, json_type_object)) {
		if (event_map(root, &change, error_r) < 0)
			return -1;
		event_change_copy(pool, &change);
		array_push_back(changes, &change);
		return 0;
	}
	if (!json_object_is_type(root, json_type_array)) {
		*error_r = "Body is not a JSON object or array";
		return -1;
	}
	count = json_object_array_length(root);
	if (count > DOVEWARDEN_EVENT_MAX_EVENTS) {
		*error_r = t_strdup_printf("More than %u events in one body",
					   DOVEWARDEN_EVENT_MAX_EVENTS);
		return -1;
	}
	/* map all first: an error leaves changes as it was */
	for (i = 0; i < count; i++) {
		if (event_map(json_object_array_get_idx(root, i), &change,
			      error_r) < 0) {
			*error_r = t_strdup_printf("Event %zu: %s", i + 1,
						   *error_r);
			return -1;
		}
	}
	for (i = 0; i < count; i++) {
		(void)event_map(json_object_array_get_idx(root, i), &change,
				error_r);
		event_change_copy(pool, &change);
		array_push_back(changes, &change);
	}
	return 0;
}

int dovewarden_event_parse(const void *data, size_t size, pool_t pool,
			   ARRAY_TYPE(dovewarden_event_change) *changes,
			   const char **error_r)
{
	struct json_object *root;
	int ret;

	if (size > DOVEWARDEN_EVENT_MAX_BODY_SIZE) {
		*error_r = t_strdup_printf("Body larger than %u bytes",
					   DOVEWARDEN_EVENT_MAX_BODY_SIZE);
		return -1;
	}
	if (size == 0) {
		*error_r = "Empty body";
		return -1;
	}
	root = event_parse_json(data, size, error_r);
	if (root == NULL)
		return -1;
	ret = event_parse_root(root, pool, changes, error_r);
	json_object_put(root);
	return ret;
}
