/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_COMPAT_H
#define DOVEWARDEN_COMPAT_H

/* The lib-level differences between Dovecot 2.4 and 2.3 (2.3.19 and
   later), in one place: include it after lib.h wherever one of these
   names is used. Code is written against 2.4's names; on 2.3 this header
   supplies them. The differences of the settings, the master service and
   the plugins' glue live in the per-version files (<file>-2.3.c,
   <file>-2.4.c) instead. */

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

#endif
