/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_COMPAT_H
#define DOVEWARDEN_COMPAT_H

/* The differences between Dovecot 2.4 and 2.3 (2.3.19 and later) that are
   only names, in one place. Code is written against 2.4's names; on 2.3
   this header supplies them, or a dovewarden_ name works on both.
   Include it after lib.h and the Dovecot headers: the names that belong
   to a Dovecot header (master-service.h, http-server.h, auth-master.h,
   mail-user.h, notify-plugin.h, doveadm-cmd.h) are defined only when that
   header was included before, on both versions alike. What differs in
   more than names, the settings, is in the per-version files
   (<name>-2.3.c, <name>-2.4.c). */

#include "net.h"

#if !DOVECOT_PREREQ(2, 4, 0)
/* 2.3's str_begins(haystack, needle) has no suffix; 2.4's returns it */
#undef str_begins
static inline bool
dovewarden_str_begins(const char *haystack, const char *needle,
		      const char **suffix_r)
{
	size_t len = strlen(needle);

	if (strncmp(haystack, needle, len) != 0)
		return FALSE;
	*suffix_r = haystack + len;
	return TRUE;
}
#define str_begins(haystack, needle, suffix_r) \
	dovewarden_str_begins(haystack, needle, suffix_r)

static inline bool str_begins_with(const char *haystack, const char *needle)
{
	return strncmp(haystack, needle, strlen(needle)) == 0;
}

static inline bool str_ends_with(const char *haystack, const char *needle)
{
	size_t hlen = strlen(haystack), nlen = strlen(needle);

	return hlen >= nlen && strcmp(haystack + hlen - nlen, needle) == 0;
}

#define static_assert_array_size(array, count) \
	_Static_assert(N_ELEMENTS(array) == (count), \
		       "array size does not match " #count)
#endif

/* The field of auth-master's LIST request that names the service (the
   userdb's %{protocol}, 2.3's %s) */
#if DOVECOT_PREREQ(2, 4, 0)
#  define DOVEWARDEN_AUTH_PROTOCOL_FIELD "protocol"
#else
#  define DOVEWARDEN_AUTH_PROTOCOL_FIELD "service"
#endif

/* doveadm-server answers CHANGED for dsync's "changed during the sync"
   (exit code 2); 2.3's has no such code and answers UNKNOWN */
#define DOVEWARDEN_DOVEADM_HAS_CHANGED DOVECOT_PREREQ(2, 4, 0)

/* "ip:port" ("[ip]:port" for IPv6); 2.3's net_ipport2str() returns it
   through a pointer. In the data stack. */
static inline const char *
dovewarden_net_ipport2str(const struct ip_addr *ip, in_port_t port)
{
#if DOVECOT_PREREQ(2, 4, 0)
	return net_ipport2str(ip, port);
#else
	const char *str;

	return net_ipport2str(ip, port, &str) < 0 ? "?" : str;
#endif
}

#ifdef MASTER_SERVICE_H
/* The service's event: 2.3 has none (NULL parents the root) */
static inline struct event *dovewarden_master_service_event(void)
{
#if DOVECOT_PREREQ(2, 4, 0)
	return master_service_get_event(master_service);
#else
	return NULL;
#endif
}

/* The listener type for a listener name: 2.3 has no type setting. Its
   names say it: the suffix after the last '-' ("dovewarden-notify" is a
   notify listener), as 2.4 does for a listener without a type. */
static inline const char *dovewarden_listener_type(const char *name)
{
	const char *p = strrchr(name, '-');

	return p == NULL ? name : p + 1;
}

static inline const char *
dovewarden_master_connection_type(const struct master_service_connection *conn)
{
#if DOVECOT_PREREQ(2, 4, 0)
	return master_service_connection_get_type(conn);
#else
	return dovewarden_listener_type(conn->name);
#endif
}

/* The type of the listener on fd, or NULL */
static inline const char *dovewarden_master_socket_type(int fd)
{
#if DOVECOT_PREREQ(2, 4, 0)
	return master_service_get_socket_type(master_service, fd);
#else
	const char *name = master_service_get_socket_name(master_service, fd);

	return name == NULL ? NULL : dovewarden_listener_type(name);
#endif
}
#endif

#ifdef MASTER_SERVICE_SETTINGS_H
static inline const struct master_service_settings *
dovewarden_master_service_settings(void)
{
#if DOVECOT_PREREQ(2, 4, 0)
	return master_service_get_service_settings(master_service);
#else
	return master_service_settings_get(master_service);
#endif
}
#endif

#ifdef HTTP_SERVER_H
/* An HTTP server with Dovecot's defaults but these, logging through
   event */
static inline struct http_server *
dovewarden_lib_http_server_init(unsigned int max_client_idle_time_msecs,
				uoff_t max_payload_size, struct event *event)
{
	struct http_server_settings *set;
	struct http_server *server;
	pool_t pool;

	pool = pool_alloconly_create("dovewarden http settings", 1024);
	set = p_new(pool, struct http_server_settings, 1);
#if DOVECOT_PREREQ(2, 4, 0)
	http_server_settings_init(pool, set);
	set->max_client_idle_time_msecs = max_client_idle_time_msecs;
	set->request_max_payload_size = max_payload_size;
	server = http_server_init(set, event);
#else
	set->max_client_idle_time_msecs = max_client_idle_time_msecs;
	set->request_limits.max_payload_size = max_payload_size;
	set->event = event;
	server = http_server_init(set);
#endif
	pool_unref(&pool);
	return server;
}
#endif

#ifdef AUTH_MASTER_H
/* The service name auth gets in a userdb lookup: 2.3 calls it service */
#if DOVECOT_PREREQ(2, 4, 0)
#  define DOVEWARDEN_AUTH_INFO_SET_PROTOCOL(info, name) \
	((info)->protocol = (name))
#else
#  define DOVEWARDEN_AUTH_INFO_SET_PROTOCOL(info, name) \
	((info)->service = (name))
#endif
#endif

#ifdef MAIL_USER_H
/* The mail_storage_service_user of a session's user (NULL for one made
   up inside a process, e.g. a shared mailbox's owner) */
#if DOVECOT_PREREQ(2, 4, 0)
#  define DOVEWARDEN_MAIL_USER_SERVICE_USER(user) ((user)->service_user)
#else
#  define DOVEWARDEN_MAIL_USER_SERVICE_USER(user) ((user)->_service_user)
#endif
#endif

#ifdef NOTIFY_PLUGIN_H
static inline void dovewarden_notify_unregister(struct notify_context **ctx)
{
#if DOVECOT_PREREQ(2, 4, 0)
	notify_unregister(ctx);
#else
	notify_unregister(*ctx);
	*ctx = NULL;
#endif
}
#endif

#ifdef DOVEADM_CMD_H
/* A doveadm command's event: 2.3 has none, there the doveadm plugin's own
   (created at its init) stands in */
extern struct event *dovewarden_doveadm_event;
#if DOVECOT_PREREQ(2, 4, 0)
#  define DOVEWARDEN_DOVEADM_CMD_EVENT(cctx) ((cctx)->event)
#else
#  define DOVEWARDEN_DOVEADM_CMD_EVENT(cctx) dovewarden_doveadm_event
#endif
#endif

#endif
