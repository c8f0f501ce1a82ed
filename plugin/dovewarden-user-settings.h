/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_USER_SETTINGS_H
#define DOVEWARDEN_USER_SETTINGS_H

#include "dovewarden-settings.h"

struct mail_user;

/* A mail user's dovewarden settings: its userdb fields over the
   configured ones (on 2.3 those in plugin { }). Returns 0, or -1 with
   error_r when they are invalid. Free with dovewarden_settings_free(). */
int dovewarden_user_settings_get(struct mail_user *user,
				 const struct dovewarden_settings **set_r,
				 const char **error_r);

#endif
