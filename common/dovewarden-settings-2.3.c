/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* The settings on Dovecot 2.3. The config process gives a process only
   the roots of its own modules, so mail processes never see this root:
   they read the per-user settings (USER in DOVEWARDEN_SETTING_DEFINES)
   from plugin { } and userdb fields, as 2.3's replication plugin did.
   The root has the service's settings at the top level, and plugin { }
   for the service's view of the per-user ones (the replica). */

#include "lib.h"
#include "array.h"
#include "str-sanitize.h"
#include "strnum.h"
#include "settings-parser.h"
#include "master-service.h"
#include "master-service-settings.h"
#include "dovewarden-settings-private.h"

#define DOVEWARDEN_SETTING_SKIP(type, name)

static const struct setting_define dovewarden_setting_defines[] = {
	DOVEWARDEN_SETTING_DEFINES(DOVEWARDEN_SETTING_SKIP,
				   DOVEWARDEN_SETTING_DEFINE)
	{ .type = SET_STRLIST, .key = "plugin",
	  .offset = offsetof(struct dovewarden_settings, plugin) },
	/* Dovecot's own setting, which 2.3's config process gives every
	   root that defines it: see dovewarden_settings_builtin_replication() */
	SETTING_DEFINE_STRUCT_STR("mail_plugins", mail_plugins,
				  struct dovewarden_settings),
	/* also the built-in replicator's: the config process gives a line
	   to every root that knows its key */
	DOVEWARDEN_SETTING_DEFINE(TIME, replication_full_sync_interval)
	DOVEWARDEN_SETTING_DEFINE(UINT, replication_max_conns)
	SETTING_DEFINE_LIST_END
};

void dovewarden_settings_apply_replication_names(struct dovewarden_settings *set)
{
	const struct dovewarden_settings *defaults =
		&dovewarden_default_settings;

	if (set->dovewarden_full_sync_interval ==
	    defaults->dovewarden_full_sync_interval)
		set->dovewarden_full_sync_interval =
			set->replication_full_sync_interval;
	if (set->dovewarden_max_syncs == defaults->dovewarden_max_syncs)
		set->dovewarden_max_syncs = set->replication_max_conns;
}

static bool
dovewarden_settings_check_23(void *_set, pool_t pool, const char **error_r)
{
	dovewarden_settings_apply_replication_names(_set);
	return dovewarden_settings_check(_set, pool, error_r);
}

const struct setting_parser_info dovewarden_setting_parser_info = {
	/* master_service_settings_read_simple() asks for the service's
	   name as the module */
	.module_name = "dovewarden",
	.defines = dovewarden_setting_defines,
	.defaults = &dovewarden_default_settings,
	.type_offset = SIZE_MAX,
	.struct_size = sizeof(struct dovewarden_settings),
	.parent_offset = SIZE_MAX,
	.check_func = dovewarden_settings_check_23,
};

const struct setting_parser_info *dovewarden_setting_roots[] = {
	&dovewarden_setting_parser_info,
	NULL
};

static bool dovewarden_env_bool(const char *value, bool default_value)
{
	if (value == NULL)
		return default_value;
	/* as 2.3's mail_user_plugin_getenv_bool(): "" is yes too */
	switch (value[0]) {
	case 'n':
	case 'N':
	case 'f':
	case 'F':
	case '0':
		return FALSE;
	}
	return TRUE;
}

static int
dovewarden_settings_apply_env(struct dovewarden_settings *set,
			      dovewarden_settings_getenv_t *getenv,
			      void *context, const char **error_r)
{
	const char *value, *dest, *error;
	unsigned int secs;

#define DOVEWARDEN_SETTING_RESET(type, name) \
	set->name = dovewarden_default_settings.name;
	DOVEWARDEN_SETTING_DEFINES(DOVEWARDEN_SETTING_RESET,
				   DOVEWARDEN_SETTING_SKIP)
#undef DOVEWARDEN_SETTING_RESET

	if ((value = getenv("dovewarden_replica", context)) != NULL)
		set->dovewarden_replica = p_strdup(set->pool, value);
	if ((value = getenv("mail_replica", context)) != NULL)
		set->mail_replica = p_strdup(set->pool, value);
	set->dovewarden_noreplicate = dovewarden_env_bool(
		getenv("dovewarden_noreplicate", context),
		set->dovewarden_noreplicate);
	set->noreplicate = dovewarden_env_bool(getenv("noreplicate", context),
					       set->noreplicate);
	if ((value = getenv("dovewarden_notify_socket_path", context)) != NULL)
		set->dovewarden_notify_socket_path = p_strdup(set->pool, value);
	if ((value = getenv("dovewarden_sync_wait", context)) != NULL) {
		if (settings_get_time_msecs(value, &set->dovewarden_sync_wait,
					    &error) < 0) {
			*error_r = t_strdup_printf("dovewarden_sync_wait: %s",
						   error);
			return -1;
		}
	} else if ((value = getenv("replication_sync_timeout",
				   context)) != NULL) {
		/* 2.3's replication plugin: a number of seconds (or, as
		   for dovewarden_sync_wait, a time with a unit). Like that
		   plugin, an invalid value is logged and means no wait:
		   a setting that replicated on 2.3 must not turn
		   replication off. */
		if ((str_to_uint(value, &secs) < 0 &&
		     settings_get_time(value, &secs, &error) < 0) ||
		    secs > UINT_MAX / 1000) {
			i_warning("Invalid replication_sync_timeout %s: "
				  "not waiting for syncs (set "
				  "dovewarden_sync_wait instead)",
				  str_sanitize(value, 64));
			secs = 0;
		}
		set->dovewarden_sync_wait = secs * 1000;
	}
	return dovewarden_replica_parse(dovewarden_settings_get_replica(set),
					&dest, error_r);
}

int dovewarden_settings_from_env(const struct dovewarden_settings *base,
				 dovewarden_settings_getenv_t *getenv,
				 void *context,
				 const struct dovewarden_settings **set_r,
				 const char **error_r)
{
	struct dovewarden_settings *set;
	pool_t pool;

	pool = pool_alloconly_create("dovewarden settings", 256);
	set = p_new(pool, struct dovewarden_settings, 1);
	*set = *base;
	set->pool = pool;
	if (dovewarden_settings_apply_env(set, getenv, context, error_r) < 0) {
		pool_unref(&pool);
		return -1;
	}
	*set_r = set;
	return 0;
}

int dovewarden_settings_read_master(const char **error_r)
{
	return master_service_settings_read_simple(master_service,
		dovewarden_setting_roots, error_r);
}

static const char *plugin_env_get(const char *key, void *context)
{
	const struct dovewarden_settings *set = context;
	const char *const *envs;
	unsigned int i, count;

	if (!array_is_created(&set->plugin))
		return NULL;
	/* key, value, key, value, ... */
	envs = array_get(&set->plugin, &count);
	for (i = 0; i + 1 < count; i += 2) {
		if (strcmp(envs[i], key) == 0)
			return envs[i + 1];
	}
	return NULL;
}

/* Say which of 2.3's names the service follows (the check applied
   them) */
static void
dovewarden_settings_log_replication_names(const struct dovewarden_settings *set,
					  struct event *event)
{
	const struct dovewarden_settings *defaults =
		&dovewarden_default_settings;

	if (set->replication_full_sync_interval !=
	    defaults->replication_full_sync_interval &&
	    set->dovewarden_full_sync_interval ==
	    set->replication_full_sync_interval) {
		e_info(event, "dovewarden_full_sync_interval = %u secs from "
		       "replication_full_sync_interval",
		       set->dovewarden_full_sync_interval);
	}
	if (set->replication_max_conns != defaults->replication_max_conns &&
	    set->dovewarden_max_syncs == set->replication_max_conns) {
		e_info(event, "dovewarden_max_syncs = %u from "
		       "replication_max_conns", set->dovewarden_max_syncs);
	}
}

int dovewarden_settings_get(struct event *event,
			    const struct dovewarden_settings **set_r,
			    const char **error_r)
{
	const struct dovewarden_settings *root =
		master_service_settings_get_others(master_service)[0];

	dovewarden_settings_log_replication_names(root, event);
	return dovewarden_settings_from_env(root, plugin_env_get,
					    (void *)root, set_r, error_r);
}

void dovewarden_settings_free(const struct dovewarden_settings **_set)
{
	const struct dovewarden_settings *set = *_set;
	pool_t pool;

	if (set == NULL)
		return;
	*_set = NULL;
	pool = set->pool;
	pool_unref(&pool);
}

bool dovewarden_settings_builtin_replication(const struct dovewarden_settings *set)
{
	const char *const *plugins;

	if (set->mail_plugins == NULL)
		return FALSE;
	/* Dovecot separates the names with spaces or commas */
	plugins = t_strsplit_spaces(set->mail_plugins, ", ");
	return str_array_find(plugins, "replication") ||
		str_array_find(plugins, "lib20_replication_plugin");
}
