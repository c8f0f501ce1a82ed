/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "mail-user.h"
#include "dovewarden-user-settings.h"

int dovewarden_user_settings_get(struct mail_user *user,
				 const struct dovewarden_settings **set_r,
				 const char **error_r)
{
	/* settings_get() applies the userdb fields */
	return dovewarden_settings_get(user->event, set_r, error_r);
}
