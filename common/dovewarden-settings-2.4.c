/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* The settings on Dovecot 2.4: every setting at the top level, read with
   settings_get() by the service and by mail processes alike. */

#include "lib.h"
#include "settings.h"
#include "master-service.h"
#include "master-service-settings.h"
#include "dovewarden-settings-private.h"

static const struct setting_define dovewarden_setting_defines[] = {
	DOVEWARDEN_SETTING_DEFINES(DOVEWARDEN_SETTING_DEFINE,
				   DOVEWARDEN_SETTING_DEFINE)
	SETTING_DEFINE_LIST_END
};

static bool
dovewarden_settings_check_all(void *_set, pool_t pool, const char **error_r)
{
	const struct dovewarden_settings *set = _set;
	const char *dest;

	if (!dovewarden_settings_check(_set, pool, error_r))
		return FALSE;
	return dovewarden_replica_parse(dovewarden_settings_get_replica(set),
					&dest, error_r) == 0;
}

const struct setting_parser_info dovewarden_setting_parser_info = {
	.name = "dovewarden",
	.defines = dovewarden_setting_defines,
	.defaults = &dovewarden_default_settings,
	.struct_size = sizeof(struct dovewarden_settings),
	.pool_offset1 = 1 + offsetof(struct dovewarden_settings, pool),
	.check_func = dovewarden_settings_check_all,
};

int dovewarden_settings_read_master(const char **error_r)
{
	return master_service_settings_read_simple(master_service, error_r);
}

int dovewarden_settings_get(struct event *event,
			    const struct dovewarden_settings **set_r,
			    const char **error_r)
{
	return settings_get(event, &dovewarden_setting_parser_info, 0,
			    set_r, error_r);
}

void dovewarden_settings_free(const struct dovewarden_settings **set)
{
	settings_free(*set);
}

bool dovewarden_settings_builtin_replication(
	const struct dovewarden_settings *set ATTR_UNUSED)
{
	/* 2.4 has no replication plugin */
	return FALSE;
}
