/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "mail-user.h"
#include "dovewarden-settings-private.h"
#include "dovewarden-user-settings.h"

static const char *user_plugin_getenv(const char *key, void *context)
{
	struct mail_user *user = context;

	return mail_user_plugin_getenv(user, key);
}

int dovewarden_user_settings_get(struct mail_user *user,
				 const struct dovewarden_settings **set_r,
				 const char **error_r)
{
	/* 2.3 merges the userdb fields into the plugin environment */
	return dovewarden_settings_from_env(&dovewarden_default_settings,
					    user_plugin_getenv, user,
					    set_r, error_r);
}
