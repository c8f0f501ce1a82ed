/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Loaded by Dovecot 2.3's config process from <moduledir>/settings/. It
   adds the dovewarden settings root (module "dovewarden": only the
   service reads it) and "service dovewarden" with its default listeners.
   The symbol names are derived from the file name
   libdovewarden_settings.so. 2.3 has no listener type: the service
   tells its listeners apart by name. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "settings-parser.h"
#include "service-settings.h"
#include "dovewarden-settings.h"

#define EXPORT __attribute__((visibility("default")))

extern EXPORT const char *dovewarden_settings_version;
extern EXPORT const struct setting_parser_info *dovewarden_settings_set_roots[];
extern EXPORT struct service_settings dovewarden_settings_service_settings;

const char *dovewarden_settings_version = DOVECOT_ABI_VERSION;

const struct setting_parser_info *dovewarden_settings_set_roots[] = {
	&dovewarden_setting_parser_info,
	NULL
};

static struct file_listener_settings dovewarden_unix_listeners_array[] = {
	/* mail processes of any uid notify through it */
	{ .path = "dovewarden-notify", .mode = 0666, .user = "", .group = "" },
	/* doveadm dovewarden ..., run as root */
	{ .path = "dovewarden-admin", .mode = 0600, .user = "", .group = "" },
};
static struct file_listener_settings *dovewarden_unix_listeners[] = {
	&dovewarden_unix_listeners_array[0],
	&dovewarden_unix_listeners_array[1],
};
static buffer_t dovewarden_unix_listeners_buf = {
	{ { dovewarden_unix_listeners, sizeof(dovewarden_unix_listeners) } }
};

/* Dovecot's event exporter (http-post) and Prometheus: off until a port
   is set, then on loopback */
static struct inet_listener_settings dovewarden_inet_listeners_array[] = {
	{ .name = "dovewarden-http", .address = "127.0.0.1", .port = 0 },
};
static struct inet_listener_settings *dovewarden_inet_listeners[] = {
	&dovewarden_inet_listeners_array[0],
};
static buffer_t dovewarden_inet_listeners_buf = {
	{ { dovewarden_inet_listeners, sizeof(dovewarden_inet_listeners) } }
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
	.extra_groups = "",
	.chroot = "",

	.drop_priv_before_exec = FALSE,

	/* started with Dovecot, and only ever one: the queue lives in it */
	.process_min_avail = 1,
	.process_limit = 1,
	/* see dovewarden-settings-module-2.4.c */
	.client_limit = 10000,
	.service_count = 0,
	.idle_kill = UINT_MAX,
	.vsz_limit = 2048ULL * 1024 * 1024,

	.unix_listeners = { { &dovewarden_unix_listeners_buf,
			      sizeof(dovewarden_unix_listeners[0]) } },
	.fifo_listeners = ARRAY_INIT,
	.inet_listeners = { { &dovewarden_inet_listeners_buf,
			      sizeof(dovewarden_inet_listeners[0]) } },

	.process_limit_1 = TRUE,
};
