/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Loaded by Dovecot 2.4's config process from <moduledir>/settings/. It
   makes the dovewarden_* settings known to doveconf and to every process,
   and adds "service dovewarden" with its default listeners. The symbol
   names are derived from the file name libdovewarden_settings.so. */

#include "lib.h"
#include "array.h"
#include "settings-parser.h"
#include "service-settings.h"
#include "dovewarden-settings.h"

#define EXPORT __attribute__((visibility("default")))

extern EXPORT const char *dovewarden_settings_version;
extern EXPORT const struct setting_parser_info *dovewarden_settings_set_infos[];
extern EXPORT struct service_settings dovewarden_settings_service_settings;
extern EXPORT const struct setting_keyvalue
	dovewarden_settings_service_settings_defaults[];

const char *dovewarden_settings_version = DOVECOT_ABI_VERSION;

const struct setting_parser_info *dovewarden_settings_set_infos[] = {
	&dovewarden_setting_parser_info,
	NULL
};

struct service_settings dovewarden_settings_service_settings = {
	.name = "dovewarden",
	.protocol = "",
	.type = "",
	.executable = "dovewarden",
	/* root: it talks to the 0600 doveadm-server socket and auth-userdb,
	   and keeps its state under state_dir */
	.user = "",
	.group = "",
	.privileged_group = "",
	.extra_groups = ARRAY_INIT,
	.chroot = "",

	.drop_priv_before_exec = FALSE,

	/* started with Dovecot, and only ever one: the queue lives in it */
	.process_min_avail = 1,
	.process_limit = 1,
	.idle_kill_interval = SET_TIME_INFINITE,

	.unix_listeners = ARRAY_INIT,
	.fifo_listeners = ARRAY_INIT,
	.inet_listeners = ARRAY_INIT,

	.process_limit_1 = TRUE,
};

const struct setting_keyvalue dovewarden_settings_service_settings_defaults[] = {
	/* the queue keeps every known user in memory, about 450 bytes
	   each: 256M (default_vsz_limit) holds only about 600,000 users */
	{ "vsz_limit", "2G" },
	/* every mail process that changed something in the last few
	   seconds holds a notify connection (idle ones close): a server
	   with tens of thousands of sessions needs more than
	   default_client_limit */
	{ "client_limit", "10000" },

	{ "unix_listener", "dovewarden-notify dovewarden-admin" },

	/* mail processes of any uid notify through it */
	{ "unix_listener/dovewarden-notify/path", "dovewarden-notify" },
	{ "unix_listener/dovewarden-notify/type", "notify" },
	{ "unix_listener/dovewarden-notify/mode", "0666" },

	/* doveadm dovewarden ..., run as root */
	{ "unix_listener/dovewarden-admin/path", "dovewarden-admin" },
	{ "unix_listener/dovewarden-admin/type", "admin" },
	{ "unix_listener/dovewarden-admin/mode", "0600" },

	/* Dovecot's event exporter (http-post) and Prometheus: off until
	   a port is set, then on loopback. A global listen setting in
	   dovecot.conf overrides this default (defaults rank below any
	   configured setting); one inside the listener overrides both. */
	{ "inet_listener", "dovewarden-http" },
	{ "inet_listener/dovewarden-http/name", "dovewarden-http" },
	{ "inet_listener/dovewarden-http/type", "http" },
	{ "inet_listener/dovewarden-http/port", "0" },
	{ "inet_listener/dovewarden-http/listen", "127.0.0.1" },

	{ NULL, NULL }
};
