/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "hash.h"
#include "strnum.h"
#include "auth-master.h"
#include "dovewarden-compat.h"
#include "dovewarden-userdb.h"

/* Past this many cached users the whole cache is dropped: simpler than an
   LRU, and a cache miss costs only one userdb lookup. */
#define USERDB_CACHE_MAX_USERS 10000

struct userdb_cache_entry {
	char *username;
	time_t expires;
	/* 1 = found, 0 = no such user */
	int ret;
	char *replica, *canonical;
	uid_t uid;
	bool uid_set;
	bool noreplicate;
};

struct dovewarden_userdb {
	struct auth_master_connection *auth_conn;
	struct event *event;
	unsigned int cache_secs;
	HASH_TABLE(char *, struct userdb_cache_entry *) cache;
};

/* Like 2.3: a field that is present counts as true unless it says
   otherwise; an empty value (also what a bare key becomes) is true. */
static bool userdb_field_bool(const char *value)
{
	if (value == NULL)
		return TRUE;
	return !(strcasecmp(value, "no") == 0 || strcasecmp(value, "n") == 0 ||
		 strcmp(value, "0") == 0 || strcasecmp(value, "false") == 0);
}

void dovewarden_userdb_fields_apply(const char *const *fields,
				    struct dovewarden_userdb_info *info)
{
	const char *key, *value, *mail_replica = NULL;

	for (; *fields != NULL; fields++) {
		value = strchr(*fields, '=');
		if (value == NULL)
			key = *fields;
		else {
			key = t_strdup_until(*fields, value);
			value++;
		}
		if (strcmp(key, "uid") == 0 && value != NULL &&
		    str_to_uid(value, &info->uid) == 0)
			info->uid_set = TRUE;
		else if (strcmp(key, "dovewarden_replica") == 0 &&
			 value != NULL &&
		    value[0] != '\0')
			info->replica = value;
		else if (strcmp(key, "mail_replica") == 0 && value != NULL &&
			 value[0] != '\0')
			mail_replica = value;
		else if (strcmp(key, "dovewarden_noreplicate") == 0 ||
			 strcmp(key, "noreplicate") == 0) {
			if (userdb_field_bool(value))
				info->noreplicate = TRUE;
		}
	}
	if (info->replica == NULL)
		info->replica = mail_replica;
}

struct dovewarden_userdb *
dovewarden_userdb_init(const char *socket_path, unsigned int timeout_msecs,
		       unsigned int cache_secs, struct event *event_parent)
{
	struct dovewarden_userdb *userdb;

	userdb = i_new(struct dovewarden_userdb, 1);
	userdb->event = event_create(event_parent);
	userdb->cache_secs = cache_secs;
	userdb->auth_conn = auth_master_init(socket_path, 0);
	auth_master_set_timeout(userdb->auth_conn, timeout_msecs);
	hash_table_create(&userdb->cache, default_pool, 0, str_hash, strcmp);
	return userdb;
}

static void userdb_cache_entry_free(struct userdb_cache_entry *entry)
{
	i_free(entry->username);
	i_free(entry->replica);
	i_free(entry->canonical);
	i_free(entry);
}

static void userdb_cache_clear(struct dovewarden_userdb *userdb)
{
	struct hash_iterate_context *iter;
	struct userdb_cache_entry *entry;
	char *username;

	iter = hash_table_iterate_init(userdb->cache);
	while (hash_table_iterate(iter, userdb->cache, &username, &entry))
		userdb_cache_entry_free(entry);
	hash_table_iterate_deinit(&iter);
	hash_table_clear(userdb->cache, TRUE);
}

void dovewarden_userdb_deinit(struct dovewarden_userdb **_userdb)
{
	struct dovewarden_userdb *userdb = *_userdb;

	if (userdb == NULL)
		return;
	*_userdb = NULL;

	userdb_cache_clear(userdb);
	hash_table_destroy(&userdb->cache);
	auth_master_deinit(&userdb->auth_conn);
	event_unref(&userdb->event);
	i_free(userdb);
}

static void
userdb_cache_add(struct dovewarden_userdb *userdb, const char *username,
		 int ret, const struct dovewarden_userdb_info *info)
{
	struct userdb_cache_entry *entry;

	if (userdb->cache_secs == 0)
		return;
	if (hash_table_count(userdb->cache) >= USERDB_CACHE_MAX_USERS)
		userdb_cache_clear(userdb);

	entry = i_new(struct userdb_cache_entry, 1);
	entry->username = i_strdup(username);
	entry->expires = ioloop_time + userdb->cache_secs;
	entry->ret = ret;
	entry->replica = i_strdup(info->replica);
	entry->canonical = i_strdup(info->canonical);
	entry->uid = info->uid;
	entry->uid_set = info->uid_set;
	entry->noreplicate = info->noreplicate;
	hash_table_insert(userdb->cache, entry->username, entry);
}

int dovewarden_userdb_lookup(struct dovewarden_userdb *userdb,
			     const char *username,
			     struct dovewarden_userdb_info *info_r,
			     const char **error_r)
{
	struct userdb_cache_entry *entry;
	struct auth_user_info auth_info;
	const char *const *fields, *username_r;
	pool_t pool;
	int ret;

	i_zero(info_r);
	entry = hash_table_lookup(userdb->cache, username);
	if (entry != NULL) {
		if (entry->expires > ioloop_time) {
			info_r->replica = t_strdup(entry->replica);
			info_r->canonical = t_strdup(entry->canonical);
			info_r->uid = entry->uid;
			info_r->uid_set = entry->uid_set;
			info_r->noreplicate = entry->noreplicate;
			return entry->ret;
		}
		hash_table_remove(userdb->cache, username);
		userdb_cache_entry_free(entry);
	}

	i_zero(&auth_info);
	DOVEWARDEN_AUTH_INFO_SET_PROTOCOL(&auth_info, "dovewarden");
	pool = pool_alloconly_create("dovewarden userdb lookup", 1024);
	ret = auth_master_user_lookup(userdb->auth_conn, username, &auth_info,
				      pool, &username_r, &fields);
	if (ret < 0) {
		*error_r = t_strdup_printf("userdb lookup failed: %s",
			fields != NULL && fields[0] != NULL ?
			t_strdup(fields[0]) : "internal error (see auth log)");
		ret = -1;
	} else if (ret > 0) {
		dovewarden_userdb_fields_apply(fields, info_r);
		/* the fields live in the pool freed below */
		info_r->replica = t_strdup(info_r->replica);
		if (username_r != NULL && strcmp(username_r, username) != 0)
			info_r->canonical = t_strdup(username_r);
		userdb_cache_add(userdb, username, 1, info_r);
	} else {
		userdb_cache_add(userdb, username, 0, info_r);
	}
	pool_unref(&pool);
	return ret;
}
